//! `rtmp-hls-bench`: a load generator for any RTMP-to-HLS server (rtmp-hls, Nginx-RTMP, ...).
//!
//! One tokio process drives N RTMP publishers replaying an FLV clip in real time (parsed once,
//! shared as `Bytes`, timestamps moved on every loop so streams never end) and M HLS viewers
//! that behave like players: classic ones reloading the playlist and fetching whole segments,
//! or low-latency ones (`--viewer-mode low-latency`) holding blocking reloads and asking for
//! each part while it is written. Per step it reports the server's CPU per stream (from /proc,
//! its whole process tree), its memory, packaging delay p50/p99, viewer fetch times, part
//! latency (low-latency viewers) and errors by kind, beside the generator's own CPU, as JSON
//! and as an SVG plot. `ramp` adds publishers step by step until a stream falls behind and
//! reports the largest number held.

mod flv;
mod fmp4;
mod http;
mod ll_viewer;
mod monitor;
mod playlist;
mod plot;
mod procstat;
mod publisher;
mod report;
mod rtmp;
mod shared;
mod stats;
mod viewer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::flv::Clip;
use crate::ll_viewer::LlViewer;
use crate::monitor::Monitor;
use crate::procstat::{TreeSample, sample_tree};
use crate::publisher::Publisher;
use crate::report::{
    ClipInfo, Machine, ProcessFigures, Report, RunConfig, StepReport, StreamReport,
};
use crate::rtmp::{PublishTarget, Traffic};
use crate::shared::{Shared, StreamState};
use crate::stats::StepStats;
use crate::viewer::Viewer;

/// New publishers of a step start spread over this time, one GOP of the benchmark clip, so
/// their keyframes (and the segment cuts they cause) do not all land at once, as with
/// independent encoders.
const STAGGER: Duration = Duration::from_secs(2);
/// Keyframe events queued from a publisher to its monitor; a monitor drains them at once,
/// so this only absorbs a monitor busy in a slow request.
const KEYFRAME_QUEUE: usize = 64;
/// Wake-up lateness p99 above which the generator itself is the bottleneck: its frames
/// leave late, so the step measures the generator, not the server.
const GENERATOR_LATE: Duration = Duration::from_millis(100);
/// Progress bar refresh.
const PROGRESS_TICK: Duration = Duration::from_millis(500);

#[derive(Parser, Debug)]
#[command(name = "rtmp-hls-bench", version, about = "Load harness for RTMP-to-HLS servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One step: a fixed number of publishers and viewers.
    Fixed(FixedArgs),
    /// Steps of increasing publishers, until a stream falls behind.
    Ramp(RampArgs),
    /// Plots one or more JSON reports into one SVG (one line per report).
    Plot(PlotArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// FLV file the publishers replay (H.264 + AAC, keyframes every segment duration).
    #[arg(long)]
    flv: PathBuf,
    /// RTMP application URL; each publisher appends its key: rtmp://host:port/app.
    #[arg(long)]
    publish_url: String,
    /// Playlist URL template; `{name}` is replaced by the stream's name. Nginx-RTMP:
    /// http://host/hls/{name}.m3u8, rtmp-hls: http://host/hls/{name}/index.m3u8.
    #[arg(long)]
    playlist_url: String,
    /// Streams as `name=key` or `key` (the name is then the key, as with Nginx-RTMP);
    /// repeatable and comma-separated.
    #[arg(long = "stream", value_delimiter = ',')]
    streams: Vec<String>,
    /// File of streams, one per line: `name key`, `name=key` or `key` ('#' starts a comment).
    #[arg(long)]
    streams_file: Option<PathBuf>,
    /// PID of the server: its CPU and memory (with every descendant's) are measured.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Directory where the server writes its HLS files (Nginx-RTMP's hls_path): their size,
    /// on tmpfs memory too, is reported beside the server's.
    #[arg(long)]
    server_files: Option<PathBuf>,
    /// Name of the server in the report and the plot.
    #[arg(long, default_value = "server")]
    label: String,
    /// How viewers play.
    #[arg(long, value_enum, default_value_t = ViewerMode::Player)]
    viewer_mode: ViewerMode,
    /// How publishers write: as ffmpeg does (the default), as librtmp does, or batched (the
    /// generator's own lighter traffic, not what encoders send).
    #[arg(long, value_enum, default_value_t = Traffic::Ffmpeg)]
    traffic: Traffic,
    /// Seconds after a step's new publishers start before measuring.
    #[arg(long, default_value_t = 8.0)]
    warmup: f64,
    /// Seconds measured per step.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Generator threads (1: a current-thread runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug)]
struct FixedArgs {
    #[command(flatten)]
    common: Common,
    /// Publishers.
    #[arg(long)]
    publishers: usize,
    /// Viewers, spread over the streams.
    #[arg(long, default_value_t = 0)]
    viewers: usize,
}

#[derive(Args, Debug)]
struct RampArgs {
    #[command(flatten)]
    common: Common,
    /// Publishers at each step, increasing: 5,10,20,40.
    #[arg(long, value_delimiter = ',', required = true)]
    steps: Vec<usize>,
    /// Viewers per stream.
    #[arg(long, default_value_t = 1)]
    viewers_per_stream: usize,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// JSON reports (one line per report and figure).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Output SVG.
    #[arg(long)]
    svg: PathBuf,
}

/// How viewers play (`--viewer-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ViewerMode {
    /// Reload the playlist every half target duration and fetch each new segment whole, as
    /// a player does (RFC 8216 §6.3.4); works with any HLS server.
    Player,
    /// Play low-latency HLS as hls.js's lowLatencyMode does: ask for the preload-hinted part
    /// while it is written and a blocking reload waits for it; reports part latency (a part's
    /// last byte received, minus the instant its last video frame was due to be sent).
    LowLatency,
}

impl ViewerMode {
    fn name(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::LowLatency => "low-latency",
        }
    }
}

/// What the steps are.
#[derive(Debug, Clone, Copy)]
enum Plan<'a> {
    Fixed { publishers: usize, viewers: usize },
    Ramp { steps: &'a [usize], viewers_per_stream: usize },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Plot(args) => {
            let reports =
                args.reports.iter().map(|p| read_report(p)).collect::<anyhow::Result<Vec<_>>>()?;
            plot::plot(&reports, &args.svg)
        }
        Command::Fixed(args) => {
            run(&args.common, Plan::Fixed { publishers: args.publishers, viewers: args.viewers })
        }
        Command::Ramp(args) => run(
            &args.common,
            Plan::Ramp { steps: &args.steps, viewers_per_stream: args.viewers_per_stream },
        ),
    }
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn run(common: &Common, plan: Plan<'_>) -> anyhow::Result<()> {
    ensure!(common.threads >= 1, "--threads must be at least 1");
    ensure!(common.warmup >= 0.0 && common.duration > 0.0, "bad --warmup or --duration");
    let runtime = if common.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(drive(common, plan))?;
    // Publishers and viewers are aborted; their sockets close with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(path) = &common.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &common.svg {
        plot::plot(std::slice::from_ref(&report), path)?;
    }
    print_summary(&report);
    Ok(())
}

/// Streams from `--stream` and `--streams-file`, as (name, key).
fn stream_list(common: &Common) -> anyhow::Result<Vec<(String, String)>> {
    let mut entries: Vec<String> = common.streams.clone();
    if let Some(path) = &common.streams_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        entries.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    entries
        .iter()
        .map(|entry| {
            let (name, key) = entry
                .split_once('=')
                .or_else(|| entry.split_once(char::is_whitespace))
                .map_or((entry.as_str(), entry.as_str()), |(n, k)| (n.trim(), k.trim()));
            ensure!(!name.is_empty() && !key.is_empty(), "bad stream entry {entry:?}");
            Ok((name.to_owned(), key.to_owned()))
        })
        .collect()
}

/// Steps as (publishers, viewers in total).
fn steps(plan: Plan<'_>) -> anyhow::Result<Vec<(usize, usize)>> {
    Ok(match plan {
        Plan::Fixed { publishers, viewers } => {
            ensure!(publishers >= 1, "--publishers must be at least 1");
            vec![(publishers, viewers)]
        }
        Plan::Ramp { steps, viewers_per_stream } => {
            ensure!(
                !steps.is_empty() && steps[0] >= 1 && steps.windows(2).all(|w| w[0] < w[1]),
                "--steps must increase from at least 1"
            );
            steps.iter().map(|&n| (n, n * viewers_per_stream)).collect()
        }
    })
}

async fn drive(common: &Common, plan: Plan<'_>) -> anyhow::Result<Report> {
    let clip = Arc::new(Clip::load(&common.flv)?);
    let target = Arc::new(PublishTarget::parse(&common.publish_url, common.traffic)?);
    let steps = steps(plan)?;
    let most = steps.iter().map(|s| s.0).max().unwrap_or(0);
    let list = stream_list(common)?;
    if list.len() < most {
        bail!("{most} publishers need {most} streams; {} given", list.len());
    }
    let mut streams = Vec::with_capacity(most);
    for (name, key) in list.into_iter().take(most) {
        let url = common.playlist_url.replace("{name}", &name);
        let (host, path) = http::split_url(&url)
            .with_context(|| format!("--playlist-url: {url} is not http://host/path"))?;
        streams.push(StreamState {
            host: host.to_owned(),
            playlist_path: path.to_owned(),
            name,
            key,
            media_ms: AtomicU64::new(0),
            t0: OnceLock::new(),
            status: Default::default(),
        });
    }
    let shared = Arc::new(Shared::new(streams));
    let mut tasks = JoinSet::new();
    let (mut publishers, mut viewers) = (0, 0);
    let epoch = Instant::now();
    let mut step_reports = Vec::new();
    let mut max_held = None;
    let mut stopped_because = "all steps done".to_owned();
    let ramp = matches!(plan, Plan::Ramp { .. });
    for (number, &(n, v)) in steps.iter().enumerate() {
        *shared.stats() = StepStats::default();
        let now = Instant::now();
        let new_streams = n - publishers;
        for (j, index) in (publishers..n).enumerate() {
            let start_at = now + STAGGER.mul_f64(j as f64 / new_streams as f64);
            let (tx, rx) = mpsc::channel(KEYFRAME_QUEUE);
            let publisher = Publisher {
                index,
                target: target.clone(),
                clip: clip.clone(),
                shared: shared.clone(),
                keyframes: tx,
                start_at,
                epoch,
            };
            tasks.spawn(publisher.run());
            tasks.spawn(Monitor { index, shared: shared.clone(), keyframes: rx }.run());
        }
        let watched: Vec<usize> = match plan {
            Plan::Fixed { .. } => (0..v).map(|k| k % n).collect(),
            Plan::Ramp { viewers_per_stream, .. } => {
                (publishers..n).flat_map(|i| std::iter::repeat_n(i, viewers_per_stream)).collect()
            }
        };
        for &stream in &watched {
            let start_at =
                now + STAGGER.mul_f64((stream - publishers.min(stream)) as f64 / n as f64);
            match common.viewer_mode {
                ViewerMode::Player => {
                    tasks.spawn(Viewer { stream, shared: shared.clone(), start_at }.run())
                }
                ViewerMode::LowLatency => {
                    tasks.spawn(LlViewer { stream, shared: shared.clone(), start_at }.run())
                }
            };
        }
        publishers = n;
        viewers += watched.len();

        let progress = progress_bar(common, number, steps.len(), n, viewers);
        wait(&progress, &shared, n, Duration::from_secs_f64(common.warmup)).await;
        shared.stats().start_window();
        for stream in &shared.streams[..n] {
            stream.status().window_segments = 0;
        }
        let media_start: Vec<u64> = shared.streams[..n].iter().map(StreamState::media_ms).collect();
        let server_start = common.server_pid.and_then(sample_tree);
        let generator_start = sample_tree(std::process::id()).unwrap_or_default();
        let machine_start = procstat::machine_cpu();
        let window_start = Instant::now();
        wait(&progress, &shared, n, Duration::from_secs_f64(common.duration)).await;
        let window_s = window_start.elapsed().as_secs_f64();
        let server_end = common.server_pid.and_then(sample_tree);
        let blocked_reloads_in_flight = shared.blocked_reloads.load(Ordering::Relaxed);
        let generator_end = sample_tree(std::process::id()).unwrap_or_default();
        let machine_end = procstat::machine_cpu();
        let stats = std::mem::take(&mut *shared.stats());
        progress.finish_and_clear();

        let media_ms: u64 = shared.streams[..n]
            .iter()
            .zip(&media_start)
            .map(|(s, &start)| s.media_ms().saturating_sub(start))
            .sum();
        let media_s = media_ms as f64 / 1000.0;
        let files_kib = common.server_files.as_deref().map(procstat::dir_kib);
        let figures = |start: TreeSample, end: TreeSample, files_kib| ProcessFigures {
            cpu_s: end.cpu_s - start.cpu_s,
            cpu_per_stream: (media_s > 0.0).then(|| (end.cpu_s - start.cpu_s) / media_s),
            cores_busy: (end.cpu_s - start.cpu_s) / window_s,
            rss_kib: end.rss_kib,
            pss_kib: end.pss_kib,
            files_kib,
            memfd_kib: end.memfd_kib,
            processes: end.processes,
        };
        let server = match (server_start, server_end) {
            (Some(a), Some(b)) => Some(figures(a, b, files_kib)),
            _ => None,
        };
        let machine_cpu = machine_start.zip(machine_end);
        let machine_busy_cores = machine_cpu.map(|(a, b)| (b.busy_s - a.busy_s) / window_s);
        let steal_cores = machine_cpu.map(|(a, b)| (b.steal_s - a.steal_s) / window_s);
        let ours_cores = server.as_ref().map_or(0.0, |s| s.cores_busy)
            + (generator_end.cpu_s - generator_start.cpu_s) / window_s;
        // Only meaningful when the server's CPU is measured too.
        let other_cores = machine_busy_cores
            .filter(|_| server.is_some())
            .map(|busy| (busy - ours_cores).max(0.0));
        let stream_reports: Vec<StreamReport> = shared.streams[..n]
            .iter()
            .map(|s| {
                let status = s.status().clone();
                StreamReport {
                    name: s.name.clone(),
                    segments: status.window_segments,
                    behind: status.behind,
                }
            })
            .collect();
        let streams_behind = stream_reports.iter().filter(|s| s.behind.is_some()).count();
        let wake_late = stats.wake_late.summary();
        let generator_late = stats
            .wake_late
            .quantile_us(0.99)
            .is_some_and(|us| Duration::from_micros(us) > GENERATOR_LATE);
        let step = StepReport {
            publishers: n,
            viewers,
            window_s,
            media_s,
            server,
            generator: figures(generator_start, generator_end, None),
            machine_busy_cores,
            other_cores,
            steal_cores,
            packaging_delay: stats.packaging_delay.summary(),
            delay_unmatched: stats.delay_unmatched,
            playlist_fetch: stats.playlist_fetch.summary(),
            segment_fetch: stats.segment_fetch.summary(),
            playlists_fetched: stats.playlists_fetched,
            segments_fetched: stats.segments_fetched,
            bytes_fetched: stats.bytes_fetched,
            part_latency: stats.part_latency.summary(),
            part_fetch: stats.part_fetch.summary(),
            blocked_reload: stats.blocked_reload.summary(),
            parts_fetched: stats.parts_fetched,
            part_bytes_fetched: stats.part_bytes_fetched,
            parts_untimed: stats.parts_untimed,
            parts_early: stats.parts_early,
            blocked_reloads_in_flight,
            wake_late,
            send_lag: stats.send_lag.summary(),
            errors: stats.errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            streams_behind,
            held: streams_behind == 0,
            generator_late,
            streams: stream_reports,
        };
        log_step(&common.label, &step);
        let (held, late) = (step.held, step.generator_late);
        step_reports.push(step);
        if common.server_pid.is_some() && server_end.is_none() {
            stopped_because = "the server process exited".to_owned();
            break;
        }
        if held && !late {
            max_held = Some(n);
        }
        if ramp && !held {
            stopped_because = format!("{streams_behind} of {n} streams fell behind");
            break;
        }
        if ramp && late {
            stopped_because = format!(
                "the generator fell behind its schedule (wake-up p99 above {GENERATOR_LATE:?})"
            );
            break;
        }
    }
    tasks.abort_all();
    Ok(Report {
        tool: format!("rtmp-hls-bench {}", env!("CARGO_PKG_VERSION")),
        label: common.label.clone(),
        mode: if ramp { "ramp" } else { "fixed" }.to_owned(),
        started_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        machine: machine(),
        clip: ClipInfo {
            path: common.flv.display().to_string(),
            loop_ms: clip.loop_ms,
            tags: clip.tags.len(),
            kbit_per_s: clip.media_bytes as f64 * 8.0 / f64::from(clip.loop_ms),
        },
        config: RunConfig {
            publish_url: common.publish_url.clone(),
            playlist_url: common.playlist_url.clone(),
            server_pid: common.server_pid,
            warmup_s: common.warmup,
            duration_s: common.duration,
            threads: common.threads,
            viewer_mode: common.viewer_mode.name().to_owned(),
            traffic: common.traffic.name().to_owned(),
        },
        steps: step_reports,
        max_publishers_held: max_held,
        stopped_because,
    })
}

fn progress_bar(common: &Common, number: usize, steps: usize, n: usize, v: usize) -> ProgressBar {
    if common.no_progress {
        return ProgressBar::hidden();
    }
    let total = (common.warmup + common.duration).ceil() as u64;
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!(
        "{} step {}/{steps}: {n} publishers, {v} viewers",
        common.label,
        number + 1
    ));
    bar
}

/// Sleeps `span`, moving the progress bar along.
async fn wait(progress: &ProgressBar, shared: &Shared, n: usize, span: Duration) {
    let end = Instant::now() + span;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        {
            let stats = shared.stats();
            let errors: u64 = stats.errors.values().sum();
            let behind = shared.streams[..n].iter().filter(|s| s.status().behind.is_some()).count();
            let fetched = if stats.parts_fetched > 0 {
                format!("parts fetched {}", stats.parts_fetched)
            } else {
                format!("segments fetched {}", stats.segments_fetched)
            };
            progress.set_message(format!("{fetched}, behind {behind}, errors {errors}"));
        }
        sleep((end - now).min(PROGRESS_TICK)).await;
        progress.set_position(
            progress
                .position()
                .max((progress.length().unwrap_or(0) as f64).min(progress.elapsed().as_secs_f64())
                    as u64),
        );
    }
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Machine { cores, cpu_model }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn cpu_ms(figures: Option<&ProcessFigures>) -> String {
    ms(figures.and_then(|f| f.cpu_per_stream).map(|c| c * 1000.0))
}

/// One line per step on stderr, beside the progress bar.
#[allow(clippy::print_stderr)] // the tool's progress output, by design on stderr
fn log_step(label: &str, s: &StepReport) {
    // Low-latency viewers' figures, when there are any.
    let parts = if s.parts_fetched > 0 {
        format!(
            ", part latency p50 {} p99 {} ms, blocked reload p50 {} ms, {} parts fetched",
            ms(s.part_latency.p50_ms),
            ms(s.part_latency.p99_ms),
            ms(s.blocked_reload.p50_ms),
            s.parts_fetched
        )
    } else {
        String::new()
    };
    eprintln!(
        "{label}: {} publishers, {} viewers: server {} / generator {} CPU ms per stream-second, \
         delay p50 {} p99 {} ms{parts}, {} segments fetched, {} behind, errors {:?}, \
         other processes {} cores",
        s.publishers,
        s.viewers,
        cpu_ms(s.server.as_ref()),
        cpu_ms(Some(&s.generator)),
        ms(s.packaging_delay.p50_ms),
        ms(s.packaging_delay.p99_ms),
        s.segments_fetched,
        s.streams_behind,
        s.errors,
        s.other_cores.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
    );
}

/// Memory a server holds: its RSS, plus its files on tmpfs and its memory files.
fn memory_kib(figures: &ProcessFigures) -> u64 {
    figures.rss_kib + figures.files_kib.unwrap_or(0) + figures.memfd_kib
}

/// The run's table on stdout, the tool's result (the JSON has everything). Low-latency
/// viewers fetch parts, not segments: their table has part latency where segment fetch
/// times would be.
#[allow(clippy::print_stdout)] // the report is this binary's output
fn print_summary(report: &Report) {
    println!(
        "{} ({}; {} cores, {})",
        report.label, report.mode, report.machine.cores, report.machine.cpu_model
    );
    let low_latency = report.config.viewer_mode == ViewerMode::LowLatency.name();
    let (fetch_p50, fetch_p99) =
        if low_latency { ("part lat50", "part lat99") } else { ("seg p50", "seg p99") };
    println!(
        "{:>5} {:>7} | {:>9} {:>9} {:>8} | {:>9} {:>9} | {:>10} {:>10} | {:>6} {:>6}",
        "pubs",
        "viewers",
        "srv ms/s",
        "gen ms/s",
        "srv mem",
        "delay p50",
        "delay p99",
        fetch_p50,
        fetch_p99,
        "behind",
        "errors"
    );
    for s in &report.steps {
        let fetch = if low_latency { &s.part_latency } else { &s.segment_fetch };
        println!(
            "{:>5} {:>7} | {:>9} {:>9} {:>8} | {:>9} {:>9} | {:>10} {:>10} | {:>6} {:>6}",
            s.publishers,
            s.viewers,
            cpu_ms(s.server.as_ref()),
            cpu_ms(Some(&s.generator)),
            s.server.as_ref().map_or_else(
                || "-".to_owned(),
                |f| format!("{:.1}", memory_kib(f) as f64 / 1024.0)
            ),
            ms(s.packaging_delay.p50_ms),
            ms(s.packaging_delay.p99_ms),
            ms(fetch.p50_ms),
            ms(fetch.p99_ms),
            s.streams_behind,
            s.errors.values().sum::<u64>(),
        );
    }
    println!(
        "max publishers held: {}; stopped: {}",
        report.max_publishers_held.map_or_else(|| "none".to_owned(), |n| n.to_string()),
        report.stopped_because
    );
}
