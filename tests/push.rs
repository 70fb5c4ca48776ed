//! Push (relay out) with real peers: ffmpeg publishes to one rtmp-hls, which pushes the stream
//! on to a second rtmp-hls over RTMP and RTMPS and to Debian's Nginx-RTMP (a peer we did not
//! write), while other targets are dead, never answer, or stop reading; ffprobe reads what
//! the targets got.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Publisher, STARTUP, Server, segments};
use testkit::{Clip, clip, http, tools};

/// Where Debian's libnginx-mod-rtmp puts the module.
const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const ADMIN: &str = "admin-token-for-the-tests";

/// The events of `kind` about `stream`.
fn events(server: &Server, kind: &str, stream: &str) -> Vec<serde_json::Value> {
    server.events().into_iter().filter(|e| e["type"] == kind && e["stream"] == stream).collect()
}

/// ffprobe finds H.264 and AAC in `input` (a path or URL), as the clip has.
fn assert_codecs(input: &str) {
    let probe = tools::ffprobe(input);
    assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264", "{probe}");
    assert_eq!(tools::stream(&probe, "audio").unwrap()["codec_name"], "aac", "{probe}");
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A metric's value for `stream` and the target whose label starts with `target`.
fn push_metric(server: &Server, name: &str, stream: &str, target: &str) -> Option<f64> {
    let text = http::get(server.http, "/metrics").text();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains(&format!("stream=\"{stream}\""))
            && labels.contains(&format!("target=\"{target}")))
        .then(|| value.parse().unwrap())
    })
}

#[test]
fn a_stream_is_pushed_on_and_dead_or_stalled_targets_cost_nothing() {
    let mirror = Server::start("push-mirror", &[]);
    let mirror_key = mirror.add_key("mirror");
    let stalled = Server::start("push-stalled", &[]);
    let stalled_key = stalled.add_key("stalled");
    // A TCP server that accepts and never answers the handshake.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dead = dead_port();
    let to_mirror = format!("rtmp://{}/live/{mirror_key}", mirror.rtmp);
    let to_stalled = format!("rtmp://{}/live/{stalled_key}", stalled.rtmp);
    let source = Server::start(
        "push-source",
        &[
            "--push",
            &to_mirror,
            "--push",
            &format!("rtmp://127.0.0.1:{dead}/live/nobody"),
            "--push",
            &format!("rtmp://127.0.0.1:{silent_port}/live/silent"),
            "--push",
            &to_stalled,
        ],
    );
    let key = source.add_key("cam");
    let publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", source.rtmp_url()));
    mirror.wait_for_segments("mirror", 2);
    stalled.wait_for_segments("stalled", 1);

    // What the mirror got decodes, with both tracks.
    assert_codecs(&mirror.playlist_url("mirror"));

    // One target stops reading (SIGSTOP): the source and the other targets go on at pace.
    let stopped_pid = stalled.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &stopped_pid]).status().unwrap().success());
    let count = |server: &Server, stream: &str| {
        let playlist = server.playlist(stream).unwrap_or_default();
        let sequence: u64 =
            common::tag(&playlist, "MEDIA-SEQUENCE").map_or(0, |s| s.parse().unwrap());
        sequence + segments(&playlist).len() as u64
    };
    let (source_before, mirror_before) = (count(&source, "cam"), count(&mirror, "mirror"));
    let stopped_at = Instant::now();
    testkit::wait_until(STARTUP, "3 more segments on the source and the mirror", || {
        (count(&source, "cam") >= source_before + 3
            && count(&mirror, "mirror") >= mirror_before + 3)
            .then_some(())
    });
    // The 4 s clip at 25 fps makes a 1-2 s segment: 3 of them in well under the stall limit.
    assert!(stopped_at.elapsed() < Duration::from_secs(15), "{:?}", stopped_at.elapsed());
    assert!(Command::new("kill").args(["-CONT", &stopped_pid]).status().unwrap().success());

    // The dead and the silent targets were tried again and again, each failure an event.
    let failed = testkit::wait_until(STARTUP, "two failed attempts of the dead target", || {
        let failed: Vec<_> = events(&source, "push_failed", "cam")
            .into_iter()
            .filter(|e| e["target"].as_str().unwrap().contains(&format!(":{dead}/")))
            .collect();
        (failed.len() >= 2).then_some(failed)
    });
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(failed[1]["attempt"], 2);
    assert!(failed[1]["retry_in_ms"].as_u64() > failed[0]["retry_in_ms"].as_u64(), "{failed:?}");
    testkit::wait_until(Duration::from_secs(30), "the silent target to time out", || {
        events(&source, "push_failed", "cam").into_iter().find(|e| {
            e["target"].as_str().unwrap().contains(&format!(":{silent_port}/"))
                && e["error"].as_str().unwrap().contains("NetStream.Publish.Start")
        })
    });
    let label = format!("rtmp://{}/live/sha256:", mirror.rtmp);
    assert_eq!(push_metric(&source, "rtmp_hls_push_connected", "cam", &label), Some(1.0));
    assert!(push_metric(&source, "rtmp_hls_push_bytes_total", "cam", &label).unwrap() > 10_000.0);
    assert!(publisher.stop(), "ffmpeg did not stop cleanly");

    // The publisher stops (unpublishing): every target's push ends with a summary; no key in
    // any of it.
    let stops = testkit::wait_until(STARTUP, "push_stopped for the 4 targets", || {
        let stops = events(&source, "push_stopped", "cam");
        (stops.len() == 4).then_some(stops)
    });
    let to_mirror_stop = stops.iter().find(|e| e["target"].as_str().unwrap().starts_with(&label));
    assert!(to_mirror_stop.unwrap()["bytes"].as_u64().unwrap() > 10_000, "{stops:?}");
    let pushes: Vec<_> = source
        .events()
        .into_iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("push_"))
        .collect();
    common::services::assert_valid_events(&pushes);
    let log = source.log();
    for secret in [&mirror_key, &stalled_key, "nobody", "/silent"] {
        assert!(!log.contains(secret), "a push target's key reached the log: {secret}");
    }
    drop(silent);
}

/// Debian's Nginx-RTMP, recording what it is pushed to an FLV file.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(name: &str) -> Self {
        assert!(
            Path::new(NGINX_RTMP_MODULE).exists(),
            "{NGINX_RTMP_MODULE} is missing: the test command installs libnginx-mod-rtmp"
        );
        let dir =
            std::env::temp_dir().join(format!("rtmp-hls-nginx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("record")).unwrap();
        let port = dead_port();
        let conf = format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\nload_module {NGINX_RTMP_MODULE};\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; ping 10s; ping_timeout 5s;\n\
               application live {{ live on; record all; record_path {dir}/record; record_unique off; }} }} }}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .args(["-c", "nginx.conf", "-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running nginx (the test command installs nginx and libnginx-mod-rtmp)");
        testkit::wait_until(STARTUP, "nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Self { child, port, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per stream (the key's push list, set through the admin API) to Nginx-RTMP, and over
/// RTMPS to another rtmp-hls with a certificate the source was told to trust; Nginx's pings
/// are answered, and what Nginx recorded decodes.
#[test]
fn a_streams_own_targets_get_it_over_rtmp_to_nginx_and_rtmps() {
    let nginx = Nginx::start("push");
    let dir = std::env::temp_dir().join(format!("rtmp-hls-push-tls-{}", std::process::id()));
    let (secure, rtmps, cert) = common::rtmps_server("push-rtmps", &dir);
    let secure_key = secure.add_key("secure");
    let source = Server::start(
        "push-per-stream",
        &["--admin-token", ADMIN, "--push-ca-file", cert.to_str().unwrap()],
    );
    let stream_key = source.add_key("show");
    let targets = serde_json::json!({"push": [
        format!("rtmp://127.0.0.1:{}/live/nginxed", nginx.port),
        format!("rtmps://localhost:{}/live/{secure_key}", rtmps.port()),
    ]});
    let answer = http::request_full(
        source.http,
        "PATCH",
        "/api/v1/keys/show",
        &[("Authorization", &format!("Bearer {ADMIN}")), ("Content-Type", "application/json")],
        targets.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 204, "{}", answer.text());
    let keys = http::request_with(
        source.http,
        "GET",
        "/api/v1/keys",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    )
    .text();
    assert!(keys.contains("rtmps://localhost:") && !keys.contains(&secure_key), "{keys}");

    let publisher = Publisher::start_looping(
        &clip(Clip::AvSmall),
        &format!("{}/{stream_key}", source.rtmp_url()),
    );
    secure.wait_for_segments("secure", 2);
    let recording = nginx.dir.join("record").join("nginxed.flv");
    testkit::wait_until(STARTUP, "Nginx-RTMP to record 200 KB", || {
        (std::fs::metadata(&recording).map_or(0, |m| m.len()) > 200_000).then_some(())
    });
    // Past Nginx's ping interval and timeout: the push answered its pings and is still on.
    std::thread::sleep(Duration::from_secs(16));
    let started = events(&source, "push_started", "show");
    assert_eq!(started.len(), 2, "a target reconnected: {started:?}");
    assert!(events(&source, "push_failed", "show").is_empty());
    drop(publisher);
    assert_codecs(recording.to_str().unwrap());
    let (said, frames) = tools::decode_at(recording.to_str().unwrap(), "error");
    assert!(frames > 50, "{frames} frames decoded: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The encoder is killed (kill -9, as when OBS loses its network) and starts again within
/// the reconnect window: the push to the target goes on as one publish (the target sees no
/// stop and no new start), the target's stream keeps growing, and an RTMP player pulling
/// the stream keeps playing across the break.
#[test]
fn a_push_survives_the_encoder_reconnecting_within_the_window() {
    let mirror = Server::start("push-continuity-mirror", &[]);
    let mirror_key = mirror.add_key("kept");
    let source = Server::start(
        "push-continuity",
        &["--push", &format!("rtmp://{}/live/{mirror_key}", mirror.rtmp)],
    );
    let key = source.add_key("cam");
    let url = format!("{}/{key}", source.rtmp_url());
    let first = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    mirror.wait_for_segments("kept", 2);
    let pull = format!("{}/cam", source.rtmp_url());
    let player = std::thread::spawn(move || {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-progress", "pipe:1"])
            .args(["-rw_timeout", "15000000", "-i", &pull, "-t", "12"])
            .args(["-enc_time_base", "-1", "-f", "null", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    testkit::wait_until(STARTUP, "the player to start", || {
        source.log().contains("player started").then_some(())
    });
    drop(first); // SIGKILL: no unpublish
    source.wait_for_event("publish_stopped", "cam");
    let _second = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    testkit::wait_until(STARTUP, "the source's publish to resume", || {
        events(&source, "publish_started", "cam").into_iter().find(|e| e["resumed"] == true)
    });
    let before = {
        let playlist = mirror.playlist("kept").unwrap();
        let first: u64 = common::tag(&playlist, "MEDIA-SEQUENCE").unwrap().parse().unwrap();
        first + segments(&playlist).len() as u64
    };
    testkit::wait_until(STARTUP, "the mirror to get segments after the restart", || {
        let playlist = mirror.playlist("kept")?;
        let first: u64 = common::tag(&playlist, "MEDIA-SEQUENCE")?.parse().ok()?;
        (first + segments(&playlist).len() as u64 >= before + 2).then_some(())
    });
    assert_eq!(events(&source, "push_started", "cam").len(), 1, "the push started again");
    assert!(events(&source, "push_stopped", "cam").is_empty(), "the push stopped");
    assert_eq!(events(&mirror, "publish_started", "kept").len(), 1, "{}", mirror.log());
    assert!(events(&mirror, "publish_stopped", "kept").is_empty(), "the target saw a stop");
    // 12 s of media, most of it after the restart.
    let played = player.join().unwrap();
    let progress = String::from_utf8_lossy(&played.stdout);
    let frames: u64 = progress
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    assert!(frames >= 250, "{frames} frames: the player did not go on after the restart");
}

/// The server's targets are for public streams: a live stream made private stops being
/// pushed to them, and made public again is pushed again, while its publisher goes on.
#[test]
fn the_servers_targets_follow_a_live_streams_visibility() {
    let mirror = Server::start("push-visibility-mirror", &[]);
    let mirror_key = mirror.add_key("seen");
    let source = Server::start(
        "push-visibility",
        &["--push", &format!("rtmp://{}/live/{mirror_key}", mirror.rtmp)],
    );
    let key = source.add_key("cam");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", source.rtmp_url()));
    mirror.wait_for_segments("seen", 1);
    assert!(source.keys(&["visibility", "cam", "private"]).status.success());
    let stopped = testkit::wait_until(STARTUP, "the push to stop", || {
        events(&source, "push_stopped", "cam").into_iter().next()
    });
    assert!(stopped["target"].as_str().unwrap().starts_with(&format!("rtmp://{}/", mirror.rtmp)));
    mirror.wait_for_event("publish_stopped", "seen");
    assert!(events(&source, "publish_stopped", "cam").is_empty(), "the publisher was cut");
    assert!(source.keys(&["visibility", "cam", "public"]).status.success());
    testkit::wait_until(STARTUP, "the push to start again", || {
        (events(&source, "push_started", "cam").len() == 2).then_some(())
    });
    testkit::wait_until(STARTUP, "the mirror's second publish", || {
        (events(&mirror, "publish_started", "seen").len() == 2).then_some(())
    });
    let log = source.log();
    assert!(!log.contains(&mirror_key), "the target's key reached the log");
}
