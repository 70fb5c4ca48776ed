//! A real `rtmp-hls` process for end-to-end tests, and real ffmpeg publishers.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::http;

pub mod browser;
pub mod services;

/// How long a test waits for the server to start or a stream to appear.
pub const STARTUP: Duration = Duration::from_secs(20);

/// A running server on ephemeral ports with its own data directory.
pub struct Server {
    child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `rtmp-hls` with `extra` arguments and waits until both listeners are up.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        let data_dir =
            std::env::temp_dir().join(format!("rtmp-hls-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        Self::start_in(data_dir, extra)
    }

    /// Starts `rtmp-hls` on an existing data directory.
    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// Starts `rtmp-hls` on `data_dir` listening on `rtmp` and `http`.
    pub fn start_at(data_dir: PathBuf, rtmp: &str, http: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
            .args(["--rtmp-addr", rtmp, "--http-addr", http, "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .env("RUST_LOG", std::env::var("RTMP_HLS_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, _) = collect(child.stdout.take().unwrap());
        let (stderr, stderr_reader) = collect(child.stderr.take().unwrap());
        let find = |what: &str| {
            let log = Arc::clone(&stderr);
            let marker = format!("{what} listening addr=");
            testkit::wait_until(STARTUP, "the server to listen", || {
                let log = log.lock().unwrap();
                let at = log.find(&marker)? + marker.len();
                log[at..].split_whitespace().next()?.parse::<SocketAddr>().ok()
            })
        };
        let rtmp = find("RTMP");
        let http = find("HTTP");
        Self { child, rtmp, http, data_dir, stdout, stderr, stderr_reader: Some(stderr_reader) }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// The lifecycle events logged so far (without a broker, each is a log line holding its
    /// JSON document).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| {
                // After the target (the span before it has braces of its own).
                let (_, message) = line.split_once("rtmp_hls::events: ")?;
                let end = message.rfind('}')?;
                serde_json::from_str(&message[..=end]).ok()
            })
            .collect()
    }

    /// Waits until an event of `kind` about `stream` is logged; returns it.
    pub fn wait_for_event(&self, kind: &str, stream: &str) -> serde_json::Value {
        testkit::wait_until(STARTUP, &format!("a {kind} event for {stream}"), || {
            self.events().into_iter().find(|e| e["type"] == kind && e["stream"] == stream)
        })
    }

    /// Waits until the log contains `text`; returns the log.
    pub fn wait_for_log(&self, text: &str) -> String {
        testkit::wait_until(STARTUP, &format!("{text:?} in the log"), || {
            let log = self.log();
            log.contains(text).then_some(log)
        })
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the status if it exited,
    /// and the whole log.
    pub fn terminate_within(
        mut self,
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        terminate(&self.child);
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_some()
            && let Some(reader) = self.stderr_reader.take()
        {
            let _ = reader.join();
        }
        (status, self.log())
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `rtmp://127.0.0.1:<port>/live`, what OBS calls the Server.
    pub fn rtmp_url(&self) -> String {
        format!("rtmp://{}/live", self.rtmp)
    }

    /// The playlist path of `stream`.
    pub fn playlist_path(stream: &str) -> String {
        format!("/hls/{stream}/index.m3u8")
    }

    /// The playlist URL of `stream`.
    pub fn playlist_url(&self, stream: &str) -> String {
        format!("http://{}{}", self.http, Self::playlist_path(stream))
    }

    /// GETs the playlist of `stream` if it exists.
    pub fn playlist(&self, stream: &str) -> Option<String> {
        let response = http::get(self.http, &Self::playlist_path(stream));
        (response.status == 200).then(|| response.text())
    }

    /// Waits until the playlist of `stream` lists at least `n` segments; returns it.
    pub fn wait_for_segments(&self, stream: &str, n: usize) -> String {
        testkit::wait_until(STARTUP, &format!("{n} segments of {stream}"), || {
            self.playlist(stream).filter(|p| segments(p).len() >= n)
        })
    }

    /// Waits until the playlist of `stream` ends with EXT-X-ENDLIST; returns it.
    pub fn wait_for_endlist(&self, stream: &str) -> String {
        testkit::wait_until(STARTUP, &format!("ENDLIST in {stream}"), || {
            self.playlist(stream).filter(|p| p.trim_end().ends_with("#EXT-X-ENDLIST"))
        })
    }

    /// Runs `rtmp-hls keys ...` on this server's data directory.
    pub fn keys(&self, args: &[&str]) -> Output {
        keys_cli(&self.data_dir, args)
    }

    /// Adds a stream with the CLI and returns its key (the last line of stdout).
    pub fn add_key(&self, stream: &str) -> String {
        let output = self.keys(&["add", stream]);
        assert!(output.status.success(), "keys add: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned()
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        self.child.wait().unwrap()
    }
}

/// Lines of a server's log a failing test prints, so that a failure in CI says what the
/// server did.
const LOG_LINES_ON_FAILURE: usize = 80;

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
            eprintln!("--- the last log lines of the server on {} ---", self.rtmp);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// The value of the first sample of `series` (`name{labels}` exactly) in `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the keys CLI on `data_dir`.
pub fn keys_cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn terminate(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
}

fn collect(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (text, reader)
}

/// The segment URIs of a playlist.
pub fn segments(playlist: &str) -> Vec<&str> {
    playlist.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// The EXTINF durations of a playlist, in seconds.
pub fn durations(playlist: &str) -> Vec<f64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().unwrap())
        .collect()
}

/// The value of `#EXT-X-<tag>:` in a playlist.
pub fn tag<'a>(playlist: &'a str, tag: &str) -> Option<&'a str> {
    let prefix = format!("#EXT-X-{tag}:");
    playlist.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// One ffmpeg publishing `clip` as it is to `high` and as a 160x120 transcode with the same
/// keyframes (every 25 frames, as the clip has them) to `low`.
pub fn publish_renditions(server: &Server, high: &str, low: &str) -> Publisher {
    let clip = testkit::clip(testkit::Clip::AvSmall);
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"])
        .arg("-i")
        .arg(&clip)
        .args(["-map", "0:v", "-map", "0:a", "-c", "copy", "-f", "flv"])
        .arg(format!("{}/{high}", server.rtmp_url()))
        .args(["-map", "0:v", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-s", "160x120", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-b:v", "60k", "-maxrate", "80k", "-bufsize", "80k"])
        .args(["-c:a", "copy", "-f", "flv"])
        .arg(format!("{}/{low}", server.rtmp_url()));
    Publisher::from_command(command)
}

/// An ffmpeg publishing `clip` to `url`, in real time (`-re`), without re-encoding.
pub struct Publisher {
    child: Child,
}

impl Publisher {
    pub fn start(clip: &Path, url: &str) -> Self {
        Self::spawn(clip, url, &[])
    }

    /// Runs `command` (a publisher of any kind) until dropped.
    pub fn from_command(mut command: Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running a publisher");
        Self { child }
    }

    /// Publishes `clip` over and over until dropped.
    pub fn start_looping(clip: &Path, url: &str) -> Self {
        Self::spawn(clip, url, &["-stream_loop", "-1"])
    }

    fn spawn(clip: &Path, url: &str, input_options: &[&str]) -> Self {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(input_options)
            .arg("-i")
            .arg(clip)
            .args(["-c", "copy", "-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running ffmpeg (the test command installs it)");
        Self { child }
    }

    /// Waits up to `limit` for ffmpeg to exit on its own; returns whether it succeeded, or
    /// `None` if it is still running (it is killed when dropped).
    pub fn exited_within(&mut self, limit: Duration) -> Option<bool> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.success());
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops ffmpeg as a person pressing Ctrl-C does: it ends its publish cleanly
    /// (`FCUnpublish`, `deleteStream`) and exits; returns whether it exited within 10 s.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        sent.is_ok_and(|s| s.success()) && self.exited_within(Duration::from_secs(10)).is_some()
    }

    /// Waits for ffmpeg to exit; returns whether it succeeded and what it printed.
    pub fn wait(mut self) -> (bool, String) {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = self.child.wait().unwrap();
        (status.success(), stderr)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `clip` to `url` as fast as possible; returns success and ffmpeg's messages.
pub fn publish_fast(clip: &Path, url: &str) -> (bool, String) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg (the test command installs it)");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The static ffmpeg 7 of the test venv (the PyPI wheel `imageio-ffmpeg`, which the test
/// command installs): the Enhanced RTMP publisher, with libx265, libaom and libvpx.
pub fn ffmpeg7() -> PathBuf {
    let venv = std::env::var("RTMP_HLS_TEST_VENV")
        .expect("RTMP_HLS_TEST_VENV (scripts/test.sh sets it and installs imageio-ffmpeg there)");
    let output = Command::new(PathBuf::from(venv).join("bin").join("python"))
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .output()
        .expect("running the test venv's python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// The address a server logged for `what` (`HTTPS`, say) as `<what> listening addr=...`.
pub fn listening(server: &Server, what: &str) -> SocketAddr {
    let marker = format!("{what} listening addr=");
    testkit::wait_until(STARTUP, &format!("{what} to listen"), || {
        let log = server.log();
        let at = log.find(&marker)? + marker.len();
        log[at..].split_whitespace().next()?.parse().ok()
    })
}

/// A server with an RTMPS listener on a self-signed certificate for `localhost` (made in
/// `dir`): the server, its RTMPS address, and the certificate's file (for a client to trust).
pub fn rtmps_server(name: &str, dir: &Path) -> (Server, SocketAddr, PathBuf) {
    let (cert, key) = self_signed(dir, "localhost");
    let server = Server::start(
        name,
        &[
            "--rtmps-addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let rtmps = listening(&server, "RTMPS");
    (server, rtmps, cert)
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (P-256, valid a day) with
/// `common_name`, written to `cert.pem` and `key.pem` in `dir` by openssl.
pub fn self_signed(dir: &Path, common_name: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Written beside, then renamed: the server never reads half a file.
    let (cert_new, key_new) = (dir.join("cert.pem.new"), dir.join("key.pem.new"));
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={common_name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA: a client that trusts it as its own anchor (a
        // push to rtmps://) refuses a CA used as an end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key_new)
        .arg("-out")
        .arg(&cert_new)
        .output()
        .expect("running openssl (the test command installs it)");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::rename(&key_new, &key).unwrap();
    std::fs::rename(&cert_new, &cert).unwrap();
    (cert, key)
}
