//! RTMP play with real peers: ffmpeg publishes, ffmpeg pulls `rtmp://host/live/<name>` as
//! ffplay and VLC do, and decodes what it gets; a private stream plays only with a viewer
//! token issued by AuthX; a player that stops reading costs the other player and the stream
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::services::backend;
use common::{Publisher, STARTUP, Server, segments};
use testkit::{Clip, clip, http};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// ffmpeg playing `url` for `seconds` of media and decoding it; its output (progress on
/// stdout, errors on stderr).
fn pull(url: &str, seconds: u32) -> Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-progress", "pipe:1"])
        .args(["-rw_timeout", "15000000", "-i", url, "-t", &seconds.to_string()])
        // The input's time base for the null output (see testkit::tools::decode).
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg (the test command installs it)")
}

/// Video frames decoded, from ffmpeg's progress.
fn frames(output: &Output) -> u64 {
    let progress = String::from_utf8_lossy(&output.stdout);
    progress
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[test]
fn ffmpeg_plays_a_live_stream_from_a_keyframe_and_a_stalled_player_costs_nothing() {
    let server = Server::start("play", &[]);
    let key = server.add_key("cam");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("cam", 1);
    let url = format!("{}/cam", server.rtmp_url());

    // A player that stops reading (SIGSTOP) while another plays.
    let mut stalled = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "quiet", "-i", &url, "-f", "null", "-"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_until(STARTUP, "the first player to start", || {
        server.log().contains("player started").then_some(())
    });
    let stalled_pid = stalled.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &stalled_pid]).status().unwrap().success());

    // Started at a keyframe: every frame decodes, without a single decoder error.
    let played = pull(&url, 4);
    let errors = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success(), "ffmpeg failed: {errors}");
    // The null muxer's complaints are about the looping publisher's timestamps where the
    // clip starts again (ffmpeg's -stream_loop repeats one audio timestamp), not decoding.
    let decoder_errors: Vec<&str> = errors.lines().filter(|l| !l.starts_with("[null @")).collect();
    assert!(decoder_errors.is_empty(), "decoder errors: {errors}");
    // At least 3 s of the 25 fps video in a 4 s pull (-t counts from the first packet,
    // audio included).
    assert!(frames(&played) >= 75, "{} frames decoded in a 4 s pull", frames(&played));
    // The stream's own output went on meanwhile.
    let playlist = server.playlist("cam").unwrap();
    assert!(!segments(&playlist).is_empty());
    let metrics = http::get(server.http, "/metrics").text();
    assert!(metrics.lines().any(|l| l == "rtmp_hls_rtmp_players 1"), "{metrics}");
    let _ = Command::new("kill").args(["-CONT", &stalled_pid]).status();
    let _ = stalled.kill();
    let _ = stalled.wait();

    // A stream that is not live is not found.
    let missing = pull(&format!("{}/nobody", server.rtmp_url()), 1);
    assert!(!missing.status.success());
    assert!(server.log().contains("play of \"nobody\" refused: No live stream"));
}

#[test]
fn a_private_stream_plays_over_rtmp_only_with_a_viewer_token() {
    let server = Server::start("play-private", &["--jwt-secret", SECRET]);
    let output = server.keys(&["add", "members", "--private"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned();
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    let login = backend(&["authx-viewer", SECRET, "user-1", "members"]);
    testkit::wait_until(STARTUP, "the private stream to be live", || {
        let path = format!("/hls/members/index.m3u8?token={login}");
        (http::get(server.http, &path).status == 200).then_some(())
    });
    let url = format!("{}/members", server.rtmp_url());
    let refused = pull(&url, 1);
    assert!(!refused.status.success(), "played a private stream without a token");
    assert!(server.log().contains("play of \"members\" refused: private stream"));
    let played = pull(&format!("{url}?token={login}"), 2);
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    assert!(frames(&played) >= 25, "{} frames in 2 s at 25 fps", frames(&played));
    assert!(!server.log().contains(&login), "a viewer token reached the log");
}
