//! Faults with real peers: a publisher's TCP reset, SIGTERM with live streams, and a kill -9
//! followed by a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Publisher, Server, segments, tag};
use testkit::flv::media_tags;
use testkit::rtmp::RawClient;
use testkit::{Clip, clip};

#[test]
fn a_publisher_reset_ends_its_stream_with_endlist_and_a_stop_event() {
    let server = Server::start("reset", &[]);
    let key = server.add_key("reset");
    let mut client = RawClient::connect(server.rtmp);
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Start");
    for tag in &media_tags(&clip(Clip::AvSmall)) {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    server.wait_for_segments("reset", 1);
    // SO_LINGER 0: close() sends a reset instead of a FIN.
    let socket = socket2::Socket::from(client.stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
    let ended = server.wait_for_endlist("reset");
    assert!(!segments(&ended).is_empty());
    let stopped = server.wait_for_event("publish_stopped", "reset");
    assert_eq!(stopped["reason"], "error", "{stopped}");
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
    let (ok, messages) = common::publish_fast(&clip(Clip::Av720p30), &url);
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
    let (ok, messages) = common::publish_fast(&clip(Clip::AvSmall), &url);
    assert!(ok, "the key store after kill -9: {messages}");
    let after = server.wait_for_endlist("phoenix");
    let first_after: u64 = tag(&after, "MEDIA-SEQUENCE").unwrap().parse().unwrap();
    assert!(
        first_after > last_before,
        "sequence went back: {last_before} then {first_after}\n{after}"
    );
}
