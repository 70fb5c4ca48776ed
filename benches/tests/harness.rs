//! The load harness against a real rtmp-hls process: two publishers replay a generated clip
//! (looping, so timestamps are rewritten), two viewers play, and the JSON report must show
//! segments on both streams, segment fetches, packaging delays, CPU and memory figures, and
//! no errors; low-latency viewers against the server's low-latency variant must time parts
//! without errors; and a ramp against a server that can hold one stream stops at the step
//! where the second one is refused. Timings are read, never compared with thresholds.
// Test code: a failure panics with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use testkit::{Clip, clip, wait_until};

/// How long the server may take to listen.
const STARTUP: Duration = Duration::from_secs(20);

/// The server, killed when the test ends however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `rtmp-hls` binary: the root package's, built beside this package's binary.
fn server_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_rtmp-hls-bench")).with_file_name("rtmp-hls");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo test --workspace` builds every \
         binary before running tests; or `cargo build -p rtmp-hls`)",
        path.display()
    );
    path
}

fn add_key(server: &Path, data_dir: &Path, name: &str) -> String {
    let output = Command::new(server)
        .args(["keys", "add", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("running rtmp-hls keys add");
    assert!(output.status.success(), "keys add: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().expect("a key on the last line").trim().to_owned()
}

/// Starts the server on ephemeral ports with `extra` flags; returns it and its RTMP and HTTP
/// addresses.
fn start_server(
    server: &Path,
    data_dir: &Path,
    extra: &[&str],
) -> (ServerProcess, SocketAddr, SocketAddr) {
    let mut child = Command::new(server)
        .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        // The live window Nginx-RTMP's hls_playlist_length 6s gives, as in BENCHMARKS.md.
        .args(["--playlist-length", "3"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rtmp-hls");
    let stderr = child.stderr.take().unwrap();
    let process = ServerProcess(child);
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let find = |what: &str| {
        let marker = format!("{what} listening addr=");
        wait_until(STARTUP, "the server to listen", || {
            let log = log.lock().unwrap();
            let at = log.find(&marker)? + marker.len();
            log[at..].split_whitespace().next()?.parse::<SocketAddr>().ok()
        })
    };
    let (rtmp, http) = (find("RTMP"), find("HTTP"));
    (process, rtmp, http)
}

fn number(value: &Value, what: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

/// A running server with keys for `names`, and a directory for the bench's files.
struct Setup {
    dir: PathBuf,
    streams_file: PathBuf,
    process: ServerProcess,
    rtmp: SocketAddr,
    http: SocketAddr,
}

impl Setup {
    fn new(test: &str, names: &[&str], server_flags: &[&str]) -> Self {
        let server = server_binary();
        let dir =
            std::env::temp_dir().join(format!("rtmp-hls-bench-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String =
            names.iter().map(|n| format!("{n} {}\n", add_key(&server, &dir, n))).collect();
        let streams_file = dir.join("streams");
        std::fs::write(&streams_file, lines).unwrap();
        let (process, rtmp, http) = start_server(&server, &dir, server_flags);
        Self { dir, streams_file, process, rtmp, http }
    }

    /// Runs `rtmp-hls-bench <mode> <args>` against the server; returns the JSON report and
    /// the SVG plot.
    #[allow(clippy::print_stdout)] // The bench's table, in the test's captured output.
    fn bench(&self, mode: &str, args: &[&str]) -> (Value, String) {
        let (json, svg) =
            (self.dir.join(format!("{mode}.json")), self.dir.join(format!("{mode}.svg")));
        let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls-bench"))
            .arg(mode)
            .arg("--flv")
            .arg(clip(Clip::AvSmall))
            .args(["--publish-url", &format!("rtmp://{}/live", self.rtmp)])
            .args(["--playlist-url", &format!("http://{}/hls/{{name}}/index.m3u8", self.http)])
            .arg("--streams-file")
            .arg(&self.streams_file)
            .args(["--server-pid", &self.process.0.id().to_string(), "--label", "rtmp-hls"])
            .args(args)
            .arg("--json")
            .arg(&json)
            .arg("--svg")
            .arg(&svg)
            .arg("--no-progress")
            .output()
            .expect("running rtmp-hls-bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "rtmp-hls-bench failed:\n{stderr}");
        // The table and the per-step lines, for whoever reads the test log.
        println!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
        let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (report, std::fs::read_to_string(&svg).unwrap())
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn harness_drives_a_real_server_and_reports_every_figure() {
    let setup = Setup::new("fixed", &["bench-a", "bench-b"], &[]);
    let (report, plot) = setup.bench(
        "fixed",
        &["--publishers", "2", "--viewers", "2", "--warmup", "4", "--duration", "5"],
    );
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    assert_eq!((step["publishers"].as_u64(), step["viewers"].as_u64()), (Some(2), Some(2)));
    assert_eq!(step["errors"], serde_json::json!({}), "errors: {}", step["errors"]);
    for stream in step["streams"].as_array().expect("streams") {
        assert!(stream["segments"].as_u64() > Some(0), "no segment on {stream}");
        assert!(stream["behind"].is_null(), "fell behind: {stream}");
    }
    assert!(step["segments_fetched"].as_u64() > Some(0), "viewers fetched no segment");
    assert!(step["playlists_fetched"].as_u64() > Some(0));
    assert!(step["bytes_fetched"].as_u64() > Some(0));
    assert!(step["packaging_delay"]["count"].as_u64() > Some(0), "no delay measured");
    number(&step["packaging_delay"]["p50_ms"], "delay p50");
    number(&step["packaging_delay"]["p99_ms"], "delay p99");
    number(&step["segment_fetch"]["p99_ms"], "segment fetch p99");
    for who in ["server", "generator"] {
        let figures = &step[who];
        assert!(number(&figures["cpu_s"], "cpu_s") >= 0.0, "{who}: {figures}");
        assert!(number(&figures["cpu_per_stream"], "cpu_per_stream") >= 0.0, "{who}: {figures}");
        assert!(figures["rss_kib"].as_u64() > Some(0), "{who}: {figures}");
        assert!(figures["pss_kib"].as_u64() > Some(0), "{who}: {figures}");
    }
    // Memory files (rtmp-hls moves popular segments there) are counted beside RSS.
    assert!(step["server"]["memfd_kib"].is_u64(), "{}", step["server"]);
    assert_eq!(step["generator"]["memfd_kib"].as_u64(), Some(0), "{}", step["generator"]);
    // Two live streams and two viewers for 5 s cost the server more than a clock tick.
    assert!(number(&step["server"]["cpu_s"], "server cpu_s") > 0.0, "{}", step["server"]);
    assert!(number(&step["media_s"], "media_s") > 0.0);
    assert_eq!(step["held"], true);
    assert_eq!(report["max_publishers_held"].as_u64(), Some(2));
    assert!(plot.contains("<svg") && plot.contains("rtmp-hls server"), "not the plot: {plot:.200}");
}

#[test]
fn low_latency_viewers_time_parts_against_the_publishers_clock() {
    let setup = Setup::new("low-latency", &["ll-a", "ll-b"], &["--hls-variant", "low-latency"]);
    let (report, _) = setup.bench(
        "fixed",
        &[
            "--publishers",
            "2",
            "--viewers",
            "2",
            "--viewer-mode",
            "low-latency",
            "--warmup",
            "4",
            "--duration",
            "5",
        ],
    );
    assert_eq!(report["config"]["viewer_mode"], "low-latency");
    let step = &report["steps"][0];
    assert_eq!(step["errors"], serde_json::json!({}), "errors: {}", step["errors"]);
    let parts = step["parts_fetched"].as_u64().expect("parts_fetched");
    assert!(parts > 0, "viewers fetched no part: {step}");
    assert!(step["part_bytes_fetched"].as_u64() > Some(0));
    // Every part of an audio and video stream holds video, so every part is timed.
    assert_eq!(step["parts_untimed"].as_u64(), Some(0), "{step}");
    assert_eq!(step["part_latency"]["count"].as_u64(), Some(parts), "{step}");
    number(&step["part_latency"]["p50_ms"], "part latency p50");
    number(&step["part_latency"]["p99_ms"], "part latency p99");
    number(&step["part_fetch"]["p99_ms"], "part fetch p99");
    assert!(step["blocked_reload"]["count"].as_u64() > Some(0), "{step}");
    assert!(step["blocked_reloads_in_flight"].is_u64(), "{step}");
    assert_eq!(step["segments_fetched"].as_u64(), Some(0), "low-latency viewers fetch parts");
    assert_eq!(step["held"], true, "{step}");
}

#[test]
fn ramp_reports_the_largest_step_held_and_why_it_stopped() {
    // A server that takes one live stream: the second step's new publisher is refused.
    let setup = Setup::new("ramp", &["ramp-a", "ramp-b", "ramp-c"], &["--max-streams", "1"]);
    let (report, plot) = setup.bench(
        "ramp",
        &["--steps", "1,2,3", "--viewers-per-stream", "1", "--warmup", "3", "--duration", "3"],
    );
    assert_eq!(report["mode"], "ramp");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "the ramp goes on after a held step and stops after a failed one");
    assert_eq!(steps[0]["publishers"].as_u64(), Some(1));
    assert_eq!(steps[0]["held"], true, "{}", steps[0]);
    assert!(steps[0]["packaging_delay"]["count"].as_u64() > Some(0), "{}", steps[0]);
    assert_eq!(steps[1]["publishers"].as_u64(), Some(2));
    assert_eq!(steps[1]["held"], false, "{}", steps[1]);
    let behind: Vec<&str> = steps[1]["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["behind"].as_str())
        .collect();
    assert_eq!(behind.len(), 1, "{}", steps[1]);
    assert!(behind[0].contains("publish"), "why the refused stream is behind: {behind:?}");
    assert_eq!(report["max_publishers_held"].as_u64(), Some(1));
    assert_eq!(report["stopped_because"], "1 of 2 streams fell behind");
    assert!(plot.contains("<svg"), "not the plot: {plot:.200}");
}
