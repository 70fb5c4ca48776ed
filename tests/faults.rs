//! Faults with real peers: a publisher's TCP reset, SIGTERM with live streams, and a kill -9
//! followed by a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Publisher, Server, publish_fast, segments, tag};
use testkit::flv::media_tags;
use testkit::rtmp::RawClient;
use testkit::{Clip, clip};

/// Publishes the small clip as `stream` with a raw client, then resets the connection
/// (SO_LINGER 0: close() sends a reset instead of a FIN, and no unpublish); returns the key.
fn publish_then_reset(server: &Server, stream: &str) -> String {
    let key = server.add_key(stream);
    let mut client = RawClient::connect(server.rtmp);
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Start");
    for tag in &media_tags(&clip(Clip::AvSmall)) {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    server.wait_for_segments(stream, 1);
    let socket = socket2::Socket::from(client.stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
    key
}

/// The events of `kind` about `stream`, oldest first.
fn events(server: &Server, kind: &str, stream: &str) -> Vec<serde_json::Value> {
    let all = server.events().into_iter();
    all.filter(|e| e["type"] == kind && e["stream"] == stream).collect()
}

#[test]
fn a_publisher_reset_leaves_its_stream_open_for_the_reconnect_window() {
    let server = Server::start("reset", &["--reconnect-window", "4"]);

    // Reset, then back within the window: the playlist goes on after a discontinuity.
    let key = publish_then_reset(&server, "back");
    let stopped = server.wait_for_event("publish_stopped", "back");
    assert_eq!(stopped["reason"], "error", "{stopped}");
    assert_eq!(stopped["stream_ended"], false, "{stopped}");
    assert_eq!(stopped["reconnect_window_ms"], 4000, "{stopped}");
    let open = server.playlist("back").unwrap();
    assert!(!open.contains("#EXT-X-ENDLIST"), "{open}");
    let stats: serde_json::Value =
        serde_json::from_slice(&testkit::http::get(server.http, "/api/v1/streams/back").body)
            .unwrap();
    assert_eq!((&stats["live"], &stats["reconnecting"]), (&false.into(), &true.into()), "{stats}");
    // ffmpeg publishes the rest and stops as OBS's "Stop Streaming" does (FCUnpublish,
    // deleteStream): the stream ends at once.
    let (ok, said) = publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{said}");
    let ended = server.wait_for_endlist("back");
    assert!(ended.contains("#EXT-X-DISCONTINUITY"), "{ended}");
    let stats = testkit::http::get(server.http, "/api/v1/streams/back").text();
    assert!(stats.contains(r#""live":false,"reconnecting":false"#), "{stats}");
    let started = events(&server, "publish_started", "back");
    let resumed: Vec<_> = started.iter().map(|e| e["resumed"].clone()).collect();
    assert_eq!(resumed, [false, true], "{started:?}");
    let stopped = events(&server, "publish_stopped", "back");
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    assert_eq!(stopped[1]["reason"], "client_closed", "{stopped:?}");
    assert_eq!(stopped[1]["stream_ended"], true, "{stopped:?}");
    assert!(stopped[1]["reconnect_window_ms"].is_null(), "{stopped:?}");

    // Reset and not back: ENDLIST once the window has passed, not before.
    publish_then_reset(&server, "gone");
    server.wait_for_event("publish_stopped", "gone");
    let at_stop = std::time::Instant::now();
    let ended = server.wait_for_endlist("gone");
    assert!(at_stop.elapsed() >= Duration::from_secs(2), "ENDLIST came within the window");
    assert!(!segments(&ended).is_empty());
}

#[test]
fn sigterm_ends_live_streams_and_exits_within_the_grace_period() {
    let server = Server::start("sigterm", &["--shutdown-grace", "3"]);
    let key = server.add_key("live");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("live", 1);
    server.wait_for_event("publish_started", "live");
    let (status, log) = server.terminate_within(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "no clean exit after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("publish ended stream=live reason=\"server_shutdown\""), "{log}");
    assert!(
        log.contains(r#""reason":"server_shutdown""#)
            && log.contains(r#""type":"publish_stopped""#),
        "{log}"
    );
    assert!(log.contains(r#""type":"server_stopping""#), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn after_kill_9_keys_still_work_and_sequence_numbers_never_go_back() {
    let server = Server::start("kill9", &[]);
    let key = server.add_key("phoenix");
    let data_dir = server.data_dir.clone();
    let url = format!("{}/{key}", server.rtmp_url());
    let (ok, messages) = publish_fast(&clip(Clip::Av720p30), &url);
    assert!(ok, "{messages}");
    let before = server.wait_for_endlist("phoenix");
    let last_before: u64 = tag(&before, "MEDIA-SEQUENCE").unwrap().parse::<u64>().unwrap()
        + segments(&before).len() as u64
        - 1;
    // Wait for the once-a-second save to record it, then kill without warning.
    let saved = data_dir.join("sequences.json");
    testkit::wait_until(Duration::from_secs(10), "the sequence save", || {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).ok()?).ok()?;
        (json["phoenix"].as_u64()? > last_before).then_some(())
    });
    server.kill9();

    let server = Server::start_in(data_dir, &[]);
    let url = format!("{}/{key}", server.rtmp_url());
    let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(ok, "the key store after kill -9: {messages}");
    let after = server.wait_for_endlist("phoenix");
    let first_after: u64 = tag(&after, "MEDIA-SEQUENCE").unwrap().parse().unwrap();
    assert!(
        first_after > last_before,
        "sequence went back: {last_before} then {first_after}\n{after}"
    );
}
