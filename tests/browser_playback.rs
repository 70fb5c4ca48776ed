//! A real browser: headless Chromium playing rtmp-hls streams with hls.js
//! (`tests/browser/play.mjs`), for each stream shape a web viewer meets. The page is
//! about:blank, so every fetch is cross-origin and the CORS headers are exercised for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::browser::{
    browser, now_ms, only_stalls, only_stalls_and_one_reload_timeout, play, play_in, playhead_at,
};
use common::{Publisher, Server, ffmpeg7, listening, segments, self_signed};
use testkit::{Clip, clip};

#[test]
fn hls_js_plays_every_stream_shape_in_chromium() {
    let server = Server::start("browser", &[]);
    let shapes = [
        ("av", Clip::Av720p30, Some("avc1"), Some("mp4a.40.2")),
        ("audio", Clip::AudioOnlyAac, None, Some("mp4a.40.2")),
        ("video", Clip::VideoOnly, Some("avc1"), None),
        ("mp3", Clip::AvMp3, Some("avc1"), Some("audio/mpeg")),
    ];
    let publishers: Vec<Publisher> = shapes
        .iter()
        .map(|(name, media, ..)| {
            let key = server.add_key(name);
            Publisher::start(&clip(*media), &format!("{}/{key}", server.rtmp_url()))
        })
        .collect();
    for (name, _, video, audio) in shapes {
        server.wait_for_segments(name, 2);
        let report = play(&server.playlist_url(name), 2);
        let tracks = &report["tracks"];
        match video {
            Some(codec) => assert!(
                tracks["video"].as_str().unwrap_or("").starts_with(codec),
                "{name}: {report}"
            ),
            None => assert!(tracks["video"].is_null(), "{name}: phantom video track: {report}"),
        }
        match audio {
            Some(codec) => assert!(
                tracks["audio"].as_str().unwrap_or("").starts_with(codec),
                "{name}: {report}"
            ),
            None => assert!(tracks["audio"].is_null(), "{name}: phantom audio track: {report}"),
        }
        if video.is_some() {
            assert!(report["videoWidth"].as_u64().unwrap_or(0) > 0, "{name}: no picture: {report}");
        }
    }
    drop(publishers);
}

/// A private stream plays in hls.js for a viewer logged in to the platform (AuthX's cookie,
/// page on the server's origin) and for a player given `?token=` (cross-origin, no cookie):
/// the playlist's signed media URLs carry the rest. Without a login, hls.js gets nothing.
#[test]
fn hls_js_plays_a_private_stream_with_the_platform_login() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let server = Server::start("browser-private", &["--jwt-secret", SECRET]);
    let output = server.keys(&["add", "members", "--private"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned();
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    let login = common::services::backend(&["authx-viewer", SECRET, "user-1", "members"]);
    let url = server.playlist_url("members");
    testkit::wait_until(common::STARTUP, "the private stream's first segments", || {
        let response =
            testkit::http::get(server.http, &format!("/hls/members/index.m3u8?token={login}"));
        (response.status == 200 && segments(&response.text()).len() >= 2).then_some(())
    });
    let (ok, with_cookie) = browser("play.mjs", &[&url, "2", "", "--cookie", &login]);
    assert!(
        ok && with_cookie["videoWidth"].as_u64() > Some(0),
        "with the login cookie: {with_cookie}"
    );
    let with_token = play(&format!("{url}?token={login}"), 2);
    assert!(with_token["videoWidth"].as_u64() > Some(0), "with ?token=: {with_token}");
    let (ok, without) = browser("play.mjs", &[&url, "2"]);
    assert!(!ok, "hls.js played a private stream without a login: {without}");
    let errors = without["errors"].to_string();
    assert!(errors.contains("fatal networkError/manifestLoadError"), "{without}");
}

/// A stream published as two renditions (one ffmpeg: the clip as it is and a 160x120
/// transcode with the same keyframes): hls.js reads both from the multivariant playlist with
/// their resolutions and bit rates, and switches from one to the other while playing.
#[test]
fn hls_js_switches_between_renditions_of_a_multivariant_playlist() {
    let server = Server::start("browser-variants", &["--variant", "_hi", "--variant", "_lo"]);
    let (high, low) = (server.add_key("show_hi"), server.add_key("show_lo"));
    let _publisher = common::publish_renditions(&server, &high, &low);
    server.wait_for_segments("show_hi", 2);
    server.wait_for_segments("show_lo", 2);
    let url = format!("http://{}/hls/show/index.m3u8", server.http);
    let report = play_in(&url, 4, "switch");
    let levels = report["levels"].as_array().unwrap();
    // hls.js orders the renditions by bit rate.
    let mut heights: Vec<u64> = levels.iter().map(|l| l["height"].as_u64().unwrap()).collect();
    heights.sort_unstable();
    assert_eq!(heights, [120, 240], "{report}");
    assert!(levels.iter().all(|l| l["bitrate"].as_u64() > Some(10_000)), "{report}");
    let forced = report["forcedTo"].clone();
    assert!(report["switched"].as_array().unwrap().contains(&forced), "{report}");
    assert!(only_stalls(&report), "{report}");
}

/// An encoder killed (kill -9: no unpublish, as when OBS loses its network) and started
/// again 3 s later: hls.js keeps playing through it, with no `ended` and no fatal error, and
/// plays the new frames after a discontinuity; the publisher's clean stop then ends it.
#[test]
fn hls_js_plays_through_an_encoder_restart_and_ends_on_a_clean_stop() {
    let server = Server::start("reconnect", &["--reconnect-window", "15"]);
    let key = server.add_key("blip");
    let url = format!("{}/{key}", server.rtmp_url());
    let first = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    server.wait_for_segments("blip", 2);
    let playlist = server.playlist_url("blip");
    let player = std::thread::spawn(move || play_in(&playlist, 60, "watch"));
    // The player joins and plays a while before the encoder dies.
    std::thread::sleep(Duration::from_secs(6));
    let killed = now_ms();
    drop(first);
    std::thread::sleep(Duration::from_secs(3));
    let second = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    let resumed = now_ms();
    testkit::wait_until(common::STARTUP, "segments after the discontinuity", || {
        let p = server.playlist("blip")?;
        let after = p.split("#EXT-X-DISCONTINUITY").nth(1)?;
        (segments(after).len() >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let stopped = now_ms();
    assert!(second.stop(), "ffmpeg did not stop cleanly");
    server.wait_for_endlist("blip");
    let report = player.join().unwrap();

    let ended = report["endedAt"].as_f64().unwrap();
    assert!(ended > stopped, "the video ended before the clean stop: {report}");
    let errors = report["errors"].as_array().unwrap();
    assert!(!errors.iter().any(|e| e.as_str().unwrap().starts_with("fatal")), "{report}");
    // New frames played: the playhead went well past where it was when the encoder came back.
    let at_resume = playhead_at(&report, resumed);
    let at_end = report["currentTime"].as_f64().unwrap();
    assert!(at_end > at_resume + 4.0, "{at_resume} then {at_end}: {report}");
    assert!(playhead_at(&report, killed) > 0.0, "the player was not playing yet: {report}");
}

/// hls.js in lowLatencyMode plays a low-latency stream for a minute, beside an MPEG-TS stream
/// played the usual way; how far behind the publisher each playhead was is printed (a
/// figure, not a pass mark: it depends on the machine), stalls are counted.
#[test]
fn hls_js_low_latency_mode_plays_and_reports_how_far_behind_it_is() {
    let servers = [
        ("low-latency", Server::start("browser-ll", &["--hls-variant", "low-latency"])),
        ("", Server::start("browser-ts", &[])),
    ];
    let _publishers: Vec<Publisher> = servers
        .iter()
        .map(|(_, server)| {
            let key = server.add_key("live");
            Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()))
        })
        .collect();
    for (_, server) in &servers {
        server.wait_for_segments("live", 2);
    }
    let reports: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let players: Vec<_> = servers
            .iter()
            .map(|(mode, server)| {
                let url = server.playlist_url("live");
                scope.spawn(move || play_in(&url, 60, mode))
            })
            .collect();
        players.into_iter().map(|player| player.join().unwrap()).collect()
    });
    for ((mode, _), report) in servers.iter().zip(&reports) {
        let mode = if mode.is_empty() { "mpegts" } else { mode };
        eprintln!("hls.js behind the publisher, {mode}: {}", report["latency"]);
        assert!(report["latency"]["samples"].as_u64().unwrap_or(0) > 100, "{mode}: {report}");
    }
}

/// hls.js in lowLatencyMode plays low-latency H.264/AAC and AV1/AAC (published live over
/// Enhanced RTMP by ffmpeg 7) over HTTPS, where Chromium negotiates HTTP/2, and over plain
/// HTTP/1.1; hls.js without lowLatencyMode plays the same playlist.
#[test]
fn hls_js_plays_low_latency_h264_and_av1_over_https_http2_and_http1() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-browser-tls-{}", std::process::id()));
    let (cert, key) = self_signed(&dir, "localhost");
    let server = Server::start(
        "browser-https",
        &[
            "--hls-variant",
            "low-latency",
            "--https-addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let https = listening(&server, "HTTPS");
    let h264_key = server.add_key("h264");
    let _h264 = Publisher::start_looping(
        &clip(Clip::AvSmall),
        &format!("{}/{h264_key}", server.rtmp_url()),
    );
    let av1_key = server.add_key("av1");
    let mut av1 = std::process::Command::new(ffmpeg7());
    av1.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-pix_fmt", "yuv420p", "-g", "25", "-c:v", "libaom-av1", "-usage", "realtime"])
        .args(["-cpu-used", "8", "-row-mt", "1", "-c:a", "aac", "-f", "flv"])
        .arg(format!("{}/{av1_key}", server.rtmp_url()));
    let _av1 = Publisher::from_command(av1);
    for (name, codec) in [("h264", "avc1"), ("av1", "av01")] {
        server.wait_for_segments(name, 2);
        let secure = format!("https://localhost:{}/hls/{name}/index.m3u8", https.port());
        for (url, protocol) in [(secure, "h2"), (server.playlist_url(name), "http/1.1")] {
            let report = play_in(&url, 6, "low-latency");
            assert!(
                report["tracks"]["audiovideo"].as_str().unwrap_or("").contains(codec),
                "{url}: {report}"
            );
            let protocols = report["protocols"].as_array().unwrap();
            assert!(protocols.iter().any(|p| p == protocol), "{url}: {report}");
            assert!(only_stalls_and_one_reload_timeout(&report), "{url}: {report}");
        }
    }
    // A player that ignores parts (hls.js without lowLatencyMode) plays the same playlist from
    // its segments.
    let report = play(&server.playlist_url("h264"), 6);
    assert!(only_stalls_and_one_reload_timeout(&report), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The built-in web page: the list shows a live stream (desktop and phone widths, nothing
/// wider than a phone's screen), its link opens the player, which plays it with the pinned
/// hls.js under the page's Subresource Integrity and Content-Security-Policy, with no error
/// in the console. Screenshots are kept in `target/web-page/` for a person to look at.
#[test]
fn the_web_page_lists_a_live_stream_and_its_player_plays_it() {
    let server = Server::start("web-page", &["--hls-variant", "low-latency"]);
    let key = server.add_key("studio");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("studio", 2);
    let out = testkit::media::workspace_root().join("target").join("web-page");
    std::fs::create_dir_all(&out).unwrap();
    let base = format!("http://{}", server.http);
    let (ok, report) = browser("page.mjs", &[&base, "studio", out.to_str().unwrap()]);
    assert!(ok, "the player did not play: {report}");
    assert_eq!(report["listed"], serde_json::json!(["studio"]), "{report}");
    assert_eq!(report["phoneOverflow"], false, "wider than a phone: {report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert!(report["latency"].as_str().is_some_and(|l| l.ends_with(" s")), "{report}");
    for shot in ["list-desktop.png", "list-phone.png", "player.png"] {
        assert!(out.join(shot).metadata().is_ok_and(|m| m.len() > 1000), "{shot} not taken");
    }
    eprintln!("web page screenshots: {}", out.display());

    // Turned off, the page is not there.
    let off = Server::start("web-page-off", &["--web-page", "false"]);
    let response = testkit::http::get(off.http, "/");
    assert_eq!(response.status, 404);
}
