//! The load harness against a real rtmp-hls process: two publishers replay a generated clip
//! (looping, so timestamps are rewritten), two viewers play, and the JSON report must show
//! segments on both streams, segment fetches, packaging delays, CPU and memory figures, and
//! no errors. Timings are read, never compared with thresholds.
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

/// Starts the server on ephemeral ports; returns it and its RTMP and HTTP addresses.
fn start_server(server: &Path, data_dir: &Path) -> (ServerProcess, SocketAddr, SocketAddr) {
    let mut child = Command::new(server)
        .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        // The live window Nginx-RTMP's hls_playlist_length 6s gives, as in BENCHMARKS.md.
        .args(["--playlist-length", "3"])
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

#[test]
fn harness_drives_a_real_server_and_reports_every_figure() {
    let media = clip(Clip::AvSmall);
    let server = server_binary();
    let dir = std::env::temp_dir().join(format!("rtmp-hls-bench-harness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let streams: Vec<(&str, String)> =
        ["bench-a", "bench-b"].into_iter().map(|n| (n, add_key(&server, &dir, n))).collect();
    let streams_file = dir.join("streams");
    let lines: String = streams.iter().map(|(name, key)| format!("{name} {key}\n")).collect();
    std::fs::write(&streams_file, lines).unwrap();
    let (process, rtmp, http) = start_server(&server, &dir);
    let (json, svg) = (dir.join("report.json"), dir.join("report.svg"));

    let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls-bench"))
        .arg("fixed")
        .arg("--flv")
        .arg(&media)
        .args(["--publish-url", &format!("rtmp://{rtmp}/live")])
        .args(["--playlist-url", &format!("http://{http}/hls/{{name}}/index.m3u8")])
        .arg("--streams-file")
        .arg(&streams_file)
        .args(["--server-pid", &process.0.id().to_string(), "--label", "rtmp-hls"])
        .args(["--publishers", "2", "--viewers", "2", "--warmup", "4", "--duration", "5"])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--no-progress")
        .output()
        .expect("running rtmp-hls-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rtmp-hls-bench failed:\n{stderr}");
    // The table and the per-step line, for whoever reads the test log.
    println!("{}{stderr}", String::from_utf8_lossy(&output.stdout));

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
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
    // Two live streams and two viewers for 5 s cost the server more than a clock tick.
    assert!(number(&step["server"]["cpu_s"], "server cpu_s") > 0.0, "{}", step["server"]);
    assert!(number(&step["media_s"], "media_s") > 0.0);
    assert_eq!(step["held"], true);
    assert_eq!(report["max_publishers_held"].as_u64(), Some(2));
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("<svg") && plot.contains("rtmp-hls server"), "not the plot: {plot:.200}");

    drop(process);
    let _ = std::fs::remove_dir_all(&dir);
}
