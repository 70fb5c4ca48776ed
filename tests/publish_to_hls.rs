//! End to end with real peers: ffmpeg publishes over RTMP to a real `rtmp-hls` process,
//! ffprobe and ffmpeg read the HLS back over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Publisher, Server, durations, metric, publish_fast, segments, tag};
use testkit::{Clip, clip, http, tools};

/// The newcomer's path: start with no keys, paste the printed OBS settings into a
/// publisher, and watch the printed play URL.
#[test]
fn first_start_prints_working_credentials_and_the_stream_plays() {
    let server = Server::start("first-start", &["--playlist-length", "10"]);
    let stdout = server.stdout();
    let field = |label: &str| {
        let line = stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label} in {stdout}"));
        line.split_once(label).unwrap().1.trim().to_owned()
    };
    let obs_server = field("Server:");
    let key = field("Stream Key:");
    let play_url = field("Watch:");
    assert_eq!(obs_server, server.rtmp_url());
    assert!(key.len() >= 22, "a 128-bit key takes at least 22 URL-safe characters: {key}");
    assert_eq!(play_url, server.playlist_url("demo"));
    assert!(stdout.contains(&format!("-f flv {obs_server}/{key}")), "ffmpeg line: {stdout}");

    let publisher = Publisher::start(&clip(Clip::Av720p30), &format!("{obs_server}/{key}"));
    let live = server.wait_for_segments("demo", 2);
    assert!(!live.contains("#EXT-X-ENDLIST"));

    // Headers on real responses.
    let response = http::get(server.http, "/hls/demo/index.m3u8");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let first = segments(&live)[0];
    let segment = http::get(server.http, &format!("/hls/demo/{first}"));
    assert_eq!(segment.status, 200);
    assert_eq!(segment.header("content-type"), Some("video/mp2t"));
    assert!(segment.header("cache-control").unwrap().contains("max-age="));
    assert_eq!(segment.header("access-control-allow-origin"), Some("*"));
    assert_eq!(segment.header("timing-allow-origin"), Some("*"));
    assert_eq!(segment.body.len() % 188, 0);
    assert_eq!(segment.body[0], 0x47);
    let head = http::request(server.http, "HEAD", &format!("/hls/demo/{first}"));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(segment.body.len().to_string().as_str()));
    assert!(head.body.is_empty());
    // MPEG-TS segments are written into the stream's memory file as they are made and sent
    // from it with sendfile: the same bytes every time, and the gauges show where they are
    // (none in the heap).
    let again = http::get(server.http, &format!("/hls/demo/{first}"));
    assert_eq!(again.status, 200);
    assert!(again.body == segment.body, "the segment sent from its memory file differs");
    let metrics = http::get(server.http, "/metrics").text();
    let gauge = |series: &str| metric(&metrics, series);
    let in_files = gauge("rtmp_hls_segment_bytes{storage=\"memory_file\"}");
    let writing = gauge("rtmp_hls_segment_bytes_being_written");
    let at_least = (segment.body.len() as f64) + writing.unwrap_or(0.0);
    assert!(in_files >= Some(at_least), "{metrics}");
    assert_eq!(gauge("rtmp_hls_segment_bytes{storage=\"heap\"}"), Some(0.0), "{metrics}");
    assert_eq!(http::get(server.http, "/hls/demo/nope.ts").status, 404);
    assert_eq!(http::get(server.http, "/hls/nobody/index.m3u8").status, 404);

    // ffprobe on the live playlist URL.
    let probe = tools::ffprobe(&server.playlist_url("demo"));
    let video = tools::stream(&probe, "video").expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(1280), Some(720)));
    let audio = tools::stream(&probe, "audio").expect("an audio stream");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "44100");

    let (ok, messages) = publisher.wait();
    assert!(ok, "ffmpeg publish failed: {messages}");
    let ended = server.wait_for_endlist("demo");
    let total: f64 = durations(&ended).iter().sum();
    assert!((11.5..=12.5).contains(&total), "12 s published, {total} s listed:\n{ended}");
    let target: f64 = tag(&ended, "TARGETDURATION").unwrap().parse().unwrap();
    assert!(durations(&ended).iter().all(|d| d.round() <= target), "{ended}");

    // Every frame decodes, with nothing to complain about.
    let (errors, frames) = tools::decode(&server.playlist_url("demo"));
    assert_eq!(errors, "", "ffmpeg decoding the playlist complained");
    assert_eq!(frames, Clip::Av720p30.video_frames());

    // The key never reaches the log; a hash prefix does.
    let log = server.log();
    assert!(!log.contains(&key), "the stream key appears in the log");
    assert!(log.contains("publish accepted"));
}

/// With `--segment-storage heap`, MPEG-TS segments are the packager's recycled buffers: a
/// segment's first response sends the pieces it was written in, the second and later ones
/// the pieces joined into one buffer; both are its bytes, and ffmpeg decodes the playlist.
#[test]
fn segments_kept_in_the_heap_are_sent_whole_and_decode() {
    let server = Server::start("heap-storage", &["--segment-storage", "heap"]);
    let key = server.add_key("cam");
    let (ok, messages) =
        publish_fast(&clip(Clip::Av720p30), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "ffmpeg publish failed: {messages}");
    let ended = server.wait_for_endlist("cam");
    let listed = segments(&ended);
    assert!(listed.len() >= 5, "{ended}");
    let mut total = 0;
    for segment in listed {
        let first = http::get(server.http, &format!("/hls/cam/{segment}"));
        assert_eq!(first.status, 200);
        assert_eq!((first.body.len() % 188, first.body[0]), (0, 0x47));
        let joined = http::get(server.http, &format!("/hls/cam/{segment}"));
        assert!(joined.body == first.body, "{segment} differs once joined");
        total += first.body.len();
    }
    let metrics = http::get(server.http, "/metrics").text();
    let gauge = |series: &str| metric(&metrics, series);
    // The listed segments, and any kept after the playlist (RFC 8216 §6.2.2).
    assert!(gauge("rtmp_hls_segment_bytes{storage=\"heap\"}") >= Some(total as f64), "{metrics}");
    assert_eq!(gauge("rtmp_hls_segment_bytes_being_written"), Some(0.0), "{metrics}");
    assert_eq!(gauge("rtmp_hls_segment_bytes{storage=\"memory_file\"}"), Some(0.0), "{metrics}");
    let (errors, frames) = tools::decode(&server.playlist_url("cam"));
    assert_eq!(errors, "", "ffmpeg decoding the playlist complained");
    assert_eq!(frames, Clip::Av720p30.video_frames());
}

/// OBS publishes through its fork of librtmp; this drives librtmp itself (python3-librtmp),
/// with its 128-byte chunks and its own command sequence.
#[test]
fn librtmp_publisher_obs_style_plays_and_a_wrong_key_fails() {
    let server = Server::start("librtmp", &["--playlist-length", "10"]);
    let key = server.add_key("obs");
    let media = clip(Clip::Av720p30);
    let script = testkit::media::workspace_root().join("tests").join("librtmp_publish.py");
    let run = |url: String| {
        std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(url)
            .arg(&media)
            .output()
            .expect("running python3 with librtmp (the test command installs python3-librtmp)")
    };
    let wrong = run(format!("{}/wrong", server.rtmp_url()));
    assert!(!wrong.status.success(), "librtmp published with a wrong key");

    let output = run(format!("{}/{key}", server.rtmp_url()));
    assert!(output.status.success(), "librtmp: {}", String::from_utf8_lossy(&output.stderr));
    server.wait_for_endlist("obs");
    let (errors, frames) = tools::decode(&server.playlist_url("obs"));
    assert_eq!(errors, "");
    assert_eq!(frames, Clip::Av720p30.video_frames());
}

#[test]
fn wrong_key_is_refused_and_the_client_is_told_why() {
    let server = Server::start("wrong-key", &[]);
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/not-a-key", server.rtmp_url()));
    assert!(!ok, "ffmpeg should fail to publish with a wrong key");
    assert!(messages.contains("invalid stream key"), "ffmpeg did not show the refusal: {messages}");
    let log = testkit::wait_until(common::STARTUP, "the refusal log line", || {
        let log = server.log();
        log.contains("publish refused").then_some(log)
    });
    assert!(log.contains("reason=invalid_key"), "{log}");
    assert!(!log.contains("not-a-key"), "the key appears in the log");
    assert!(log.contains("key=sha256:"), "no redacted key id in the log");
    assert_eq!(server.playlist("demo"), None);
}

#[test]
fn unknown_application_is_refused() {
    let server = Server::start("unknown-app", &[]);
    let key = server.add_key("cam");
    let url = format!("rtmp://{}/other/{key}", server.rtmp);
    let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(!ok);
    assert!(messages.contains("unknown application"), "{messages}");
    assert_eq!(server.playlist("cam"), None);
}

#[test]
fn two_streams_at_once_both_play_and_a_second_publisher_of_a_live_stream_is_refused() {
    // Connections on the shared work-stealing pool (every other test has one thread per core).
    let server =
        Server::start("two-streams", &["--takeover", "refuse", "--connection-threads", "0"]);
    let (key_a, key_b) = (server.add_key("alpha"), server.add_key("beta"));
    let media = clip(Clip::Av720p30);
    let a = Publisher::start(&media, &format!("{}/{key_a}", server.rtmp_url()));
    let b = Publisher::start(&media, &format!("{}/{key_b}", server.rtmp_url()));
    server.wait_for_segments("alpha", 2);
    server.wait_for_segments("beta", 2);

    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key_a}", server.rtmp_url()));
    assert!(!ok);
    assert!(messages.contains("already being published"), "{messages}");

    for stream in ["alpha", "beta"] {
        let probe = tools::ffprobe(&server.playlist_url(stream));
        assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264");
        assert_eq!(tools::stream(&probe, "audio").unwrap()["codec_name"], "aac");
    }
    let (a_ok, a_messages) = a.wait();
    let (b_ok, b_messages) = b.wait();
    assert!(a_ok && b_ok, "{a_messages} {b_messages}");
    server.wait_for_endlist("alpha");
    server.wait_for_endlist("beta");
}

#[test]
fn keys_changed_by_the_cli_apply_to_the_running_server() {
    let server = Server::start("live-keys", &[]);
    let media = clip(Clip::AvSmall);
    let key = server.add_key("late");
    let list = String::from_utf8(server.keys(&["list"]).stdout).unwrap();
    assert!(list.contains("late") && list.contains("demo"), "{list}");
    assert!(!list.contains(&key), "keys list shows a key");

    let (ok, messages) = publish_fast(&media, &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    let ended = server.wait_for_endlist("late");
    assert!(!segments(&ended).is_empty());

    assert!(server.keys(&["revoke", "late"]).status.success());
    let (ok, messages) = publish_fast(&media, &format!("{}/{key}", server.rtmp_url()));
    assert!(!ok);
    assert!(messages.contains("invalid stream key"), "{messages}");
    assert!(!server.keys(&["revoke", "late"]).status.success());
}

#[test]
fn keys_survive_a_restart_and_the_demo_key_is_printed_only_once() {
    let server = Server::start("restart", &[]);
    let key = server.add_key("kept");
    let data_dir = server.data_dir.clone();
    assert!(server.stdout().contains("Stream Key:"));
    assert!(server.stop().success(), "SIGTERM should end the server cleanly");

    let server = Server::start_in(data_dir, &[]);
    assert!(!server.stdout().contains("Stream Key:"), "a second start printed a new key");
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("kept");
}

/// Kills `keys add` at many points of its run: the store must always stay readable, since
/// every write replaces the file atomically.
#[test]
fn killing_the_keys_cli_at_any_moment_leaves_the_store_readable() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-e2e-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(common::keys_cli(&dir, &["add", "base"]).status.success());
    for i in 0..40u64 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
            .args(["keys", "add", &format!("s{i}"), "--data-dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Fault injection at varying points of the process's life, not a wait.
        std::thread::sleep(std::time::Duration::from_micros(i * 250));
        let _ = child.kill();
        let _ = child.wait();
        let list = common::keys_cli(&dir, &["list"]);
        assert!(
            list.status.success(),
            "store unreadable after a kill: {}",
            String::from_utf8_lossy(&list.stderr)
        );
        assert!(String::from_utf8_lossy(&list.stdout).contains("base"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With --max-viewers-per-stream, a new viewer beyond the limit gets 503; viewers already
/// watching keep their place.
#[test]
fn a_viewer_limit_refuses_new_viewers_and_keeps_the_others() {
    // Three places: the harness's own playlist polls (no user agent) take the first.
    let server = Server::start("viewers", &["--max-viewers-per-stream", "3"]);
    let key = server.add_key("popular");
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("popular");
    let fetch = |agent: &str| {
        http::request_with(server.http, "GET", "/hls/popular/index.m3u8", &[("User-Agent", agent)])
    };
    assert_eq!(fetch("player-1").status, 200);
    assert_eq!(fetch("player-2").status, 200);
    let refused = fetch("player-3");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"));
    assert_eq!(fetch("player-1").status, 200, "a viewer already watching was refused");
}

/// The user agent is the client's to choose: one address counts as at most
/// `MAX_SESSIONS_PER_ADDRESS` sessions without a token, and one more for all its others, so
/// a client varying it cannot fill a stream's viewer limit alone.
#[test]
fn one_client_varying_its_user_agent_cannot_fill_a_viewer_limit() {
    let server = Server::start("viewers-agents", &["--max-viewers-per-stream", "20"]);
    let key = server.add_key("busy");
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("busy");
    for n in 0..100 {
        let agent = format!("agent-{n}");
        let response = http::request_with(
            server.http,
            "GET",
            "/hls/busy/index.m3u8",
            &[("User-Agent", agent.as_str())],
        );
        assert_eq!(response.status, 200, "{agent} was refused");
    }
    let stats = http::request_with(server.http, "GET", "/api/v1/streams/busy", &[]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    // Its share and one more (the harness's own polls are one of the share, unless they
    // are older than the viewer window by now).
    let share = u64::from(stream_store::viewers::MAX_SESSIONS_PER_ADDRESS);
    let counted = stats["viewers"].as_u64().unwrap();
    assert!((share..=share + 1).contains(&counted), "{stats}");
}
