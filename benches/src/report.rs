//! The JSON report of a run: one entry per step with every figure the issue asks for, and
//! the run's verdict. `plot` reads reports back, so every field is also deserializable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// This tool and its version.
    pub(crate) tool: String,
    /// The server measured (`--label`).
    pub(crate) label: String,
    /// `fixed` or `ramp`.
    pub(crate) mode: String,
    pub(crate) started_unix_s: u64,
    pub(crate) machine: Machine,
    pub(crate) clip: ClipInfo,
    pub(crate) config: RunConfig,
    pub(crate) steps: Vec<StepReport>,
    /// Largest number of publishers whose streams all kept up (ramp: the answer).
    pub(crate) max_publishers_held: Option<usize>,
    /// Why the run ended.
    pub(crate) stopped_because: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu_model: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClipInfo {
    pub(crate) path: String,
    pub(crate) loop_ms: u32,
    pub(crate) tags: usize,
    /// Audio + video payload bitrate.
    pub(crate) kbit_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    pub(crate) publish_url: String,
    pub(crate) playlist_url: String,
    pub(crate) server_pid: Option<u32>,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) threads: usize,
    /// `player` or `low-latency` (`--viewer-mode`).
    #[serde(default = "player")]
    pub(crate) viewer_mode: String,
    /// How publishers wrote (`--traffic`); reports written before there was a choice were
    /// `batched`.
    #[serde(default = "batched")]
    pub(crate) traffic: String,
}

/// The traffic of reports written before there was a choice.
fn batched() -> String {
    "batched".to_owned()
}

/// The viewer mode of reports written before there was a choice.
fn player() -> String {
    "player".to_owned()
}

/// CPU and memory of one process tree over a step's measurement window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProcessFigures {
    /// CPU seconds in the window (user + system, children included).
    pub(crate) cpu_s: f64,
    /// CPU seconds per media second per stream: the share of one core each stream costs.
    pub(crate) cpu_per_stream: Option<f64>,
    /// Cores busy on average in the window.
    pub(crate) cores_busy: f64,
    /// Sum of VmRSS at the end of the window, KiB.
    pub(crate) rss_kib: u64,
    /// Sum of Pss at the end of the window, KiB (shared pages split).
    pub(crate) pss_kib: u64,
    /// Files the server keeps under `--server-files` (tmpfs: memory too), KiB.
    pub(crate) files_kib: Option<u64>,
    /// Pages of the memory files (memfd) the server has open, KiB (rtmp-hls's segments).
    #[serde(default)]
    pub(crate) memfd_kib: u64,
    pub(crate) processes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamReport {
    pub(crate) name: String,
    /// New segments listed during the window.
    pub(crate) segments: u64,
    pub(crate) behind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepReport {
    pub(crate) publishers: usize,
    pub(crate) viewers: usize,
    /// Wall seconds measured (after the warm-up).
    pub(crate) window_s: f64,
    /// Media seconds sent in the window, all streams together.
    pub(crate) media_s: f64,
    pub(crate) server: Option<ProcessFigures>,
    pub(crate) generator: ProcessFigures,
    /// Cores the whole machine kept busy on average in the window.
    pub(crate) machine_busy_cores: Option<f64>,
    /// Of those, cores used by neither the server nor the generator: other processes on a
    /// shared machine, i.e. the noise in this step's figures.
    pub(crate) other_cores: Option<f64>,
    /// Cores the hypervisor gave to other VMs (steal time).
    pub(crate) steal_cores: Option<f64>,
    /// Playlist lists a segment, minus the send of the keyframe that closed it.
    pub(crate) packaging_delay: Summary,
    pub(crate) delay_unmatched: u64,
    pub(crate) playlist_fetch: Summary,
    pub(crate) segment_fetch: Summary,
    pub(crate) playlists_fetched: u64,
    pub(crate) segments_fetched: u64,
    pub(crate) bytes_fetched: u64,
    /// Low-latency viewers: a part's last byte received minus the moment its last video
    /// frame was due by the publisher's clock (the publisher sends up to 10 ms early).
    #[serde(default)]
    pub(crate) part_latency: Summary,
    /// Low-latency viewers' part GETs, request to last byte (a hinted part arrives when it is
    /// complete).
    #[serde(default)]
    pub(crate) part_fetch: Summary,
    /// Low-latency viewers' blocking playlist reloads: how long the server held them.
    #[serde(default)]
    pub(crate) blocked_reload: Summary,
    #[serde(default)]
    pub(crate) parts_fetched: u64,
    #[serde(default)]
    pub(crate) part_bytes_fetched: u64,
    /// Parts received but not timed (no video sample, or no decode time).
    #[serde(default)]
    pub(crate) parts_untimed: u64,
    /// Parts received before their last video frame was due, counted as latency 0.
    #[serde(default)]
    pub(crate) parts_early: u64,
    /// Blocking reloads the viewers had waiting at the end of the window.
    #[serde(default)]
    pub(crate) blocked_reloads_in_flight: u64,
    /// Publisher wake-ups after their scheduled time (generator scheduling).
    pub(crate) wake_late: Summary,
    /// Publisher writes completed after their due time (scheduling plus backpressure).
    pub(crate) send_lag: Summary,
    /// Errors by kind over the whole step, warm-up included.
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) streams_behind: usize,
    /// Every stream kept up.
    pub(crate) held: bool,
    /// The generator itself fell behind its schedule: the step measures the generator.
    pub(crate) generator_late: bool,
    pub(crate) streams: Vec<StreamReport>,
}
