//! Lifecycle events through a real Kafka-protocol broker (tansu), read back by a real
//! consumer and validated against docs/events.schema.json with the `jsonschema` package.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::services::{KafkaBroker, assert_valid_events, backend, consume, venv};
use common::{Publisher, Server, publish_fast};
use serde_json::Value;
use testkit::{Clip, clip};

const TOPIC: &str = "stream-events";

fn kafka_server(name: &str, broker: &KafkaBroker, extra: &[&str]) -> Server {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["--kafka-brokers", bootstrap.as_str(), "--server-id", "edge-test"];
    args.extend_from_slice(extra);
    Server::start(name, &args)
}

fn of<'a>(records: &'a [(Option<String>, Value)], kind: &str, stream: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|(_, e)| e["type"] == kind && e["stream"] == stream)
        .map(|(_, e)| e)
        .collect()
}

#[test]
fn a_publish_produces_started_stats_stopped_and_a_bad_key_a_rejection() {
    let broker = KafkaBroker::start();
    let server = kafka_server("kafka-events", &broker, &["--stats-interval", "1"]);
    let key = server.add_key("cam");
    let mut publisher =
        Publisher::start(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert_eq!(publisher.exited_within(Duration::from_secs(30)), Some(true));
    let (ok, _) = publish_fast(&clip(Clip::AvSmall), &format!("{}/not-the-key", server.rtmp_url()));
    assert!(!ok);

    let records = consume(&broker.bootstrap(), TOPIC, Duration::from_secs(30), |records| {
        ["server_started", "publish_rejected", "publish_stopped"]
            .iter()
            .all(|kind| records.iter().any(|(_, e)| e["type"] == *kind))
    });
    let events: Vec<Value> = records.iter().map(|(_, e)| e.clone()).collect();
    assert_valid_events(&events);
    // Server events have no key, so they may sit in any partition: only their presence counts.
    assert!(events.iter().any(|e| e["type"] == "server_started"));
    assert!(events.iter().all(|e| e["server_id"] == "edge-test" && e["version"] == 1));

    let kinds: Vec<&str> = records
        .iter()
        .filter(|(key, _)| key.as_deref() == Some("cam"))
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"publish_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"publish_stopped"), "{kinds:?}");
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "stream_stats") && kinds.len() >= 3,
        "{kinds:?}"
    );

    let started = of(&records, "publish_started", "cam")[0];
    assert_eq!(
        (started["video_codec"].as_str(), started["audio_codec"].as_str()),
        (Some("avc1.64000d"), Some("mp4a.40.2"))
    );
    assert_eq!((started["width"].as_u64(), started["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(started["audio_sample_rate"], 48000);
    let stopped = of(&records, "publish_stopped", "cam")[0];
    assert_eq!(stopped["reason"], "client_closed");
    assert!(stopped["frames"].as_u64().unwrap() >= Clip::AvSmall.video_frames());
    let stats = of(&records, "stream_stats", "cam");
    assert!(
        stats
            .iter()
            .any(|s| s["fps"].as_f64().unwrap() > 10.0
                && s["bitrate_bps"].as_u64().unwrap() > 50_000),
        "{stats:?}"
    );

    let rejected: Vec<&Value> =
        records.iter().filter(|(_, e)| e["type"] == "publish_rejected").map(|(_, e)| e).collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "invalid_key");
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("not-the-key") || e.to_string().contains(&key))
    );

    // SIGTERM while live: the stop and server_stopping are delivered before the exit.
    let _live =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    // Live again, with a segment of the new publish (so it went live: frames were packaged):
    // after the ENDLIST of the first, a new presentation.
    testkit::wait_until(Duration::from_secs(20), "cam to be live again", || {
        server.playlist("cam").filter(|p| !p.contains("#EXT-X-ENDLIST"))
    });
    let (status, _) = server.terminate_within(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()));
    let records = consume(&broker.bootstrap(), TOPIC, Duration::from_secs(20), |records| {
        records.iter().any(|(_, e)| e["type"] == "server_stopping")
            && records
                .iter()
                .any(|(_, e)| e["type"] == "publish_stopped" && e["reason"] == "server_shutdown")
    });
    let last_stop = *of(&records, "publish_stopped", "cam").last().unwrap();
    assert_eq!(last_stop["reason"], "server_shutdown");
    assert!(records.iter().any(|(_, e)| e["type"] == "server_stopping"));
}

#[test]
fn a_broker_outage_loses_no_start_or_stop_and_never_stalls_ingest() {
    let mut broker = KafkaBroker::start();
    let server = kafka_server("kafka-outage", &broker, &[]);
    let streams = ["out-a", "out-b", "out-c"];
    let keys: Vec<String> = streams.iter().map(|s| server.add_key(s)).collect();
    // The producer is connected and the topic exists before the outage.
    consume(&broker.bootstrap(), TOPIC, Duration::from_secs(40), |records| !records.is_empty());

    broker.outage();
    for (stream, key) in streams.iter().zip(&keys) {
        let (ok, messages) =
            publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
        assert!(ok, "ingest stalled while the broker was down: {messages}");
        // HLS keeps being served meanwhile.
        server.wait_for_endlist(stream);
    }
    // Ten seconds down, then the broker is back with its state.
    let down_until = std::time::Instant::now() + Duration::from_secs(10);
    testkit::wait_until(Duration::from_secs(15), "the outage to last 10 s", || {
        (std::time::Instant::now() >= down_until).then_some(())
    });
    broker.recover();
    let records = consume(&broker.bootstrap(), TOPIC, Duration::from_secs(60), |records| {
        streams.iter().all(|s| {
            records.iter().any(|(_, e)| e["type"] == "publish_stopped" && e["stream"] == *s)
        })
    });
    let kafka_log: Vec<String> =
        server.log().lines().filter(|l| l.contains("afka")).map(str::to_owned).collect();
    for stream in streams {
        let kinds: Vec<&str> = records
            .iter()
            .filter(|(key, _)| key.as_deref() == Some(stream))
            .map(|(_, e)| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["publish_started", "publish_stopped"],
            "{stream}: lost, duplicated or reordered; the server said:\n{}",
            kafka_log.join("\n")
        );
    }
}

/// The consumer snippet of docs/events.md, run as it is against the broker.
#[test]
fn the_documented_python_consumer_prints_the_events() {
    let broker = KafkaBroker::start();
    let server = kafka_server("kafka-doc", &broker, &[]);
    let key = server.add_key("doc");
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    let script = testkit::media::workspace_root().join("tests").join("backend.py");
    let mut consumer = Command::new(venv().join("bin").join("python"))
        .arg(script)
        .args(["print-events", &broker.bootstrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    // A consumer-group join takes about 24 s on tansu.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !printed.iter().any(|l: &String| l.contains("publish_stopped doc"))
        && std::time::Instant::now() < deadline
    {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(500)) {
            printed.push(line);
        }
    }
    let _ = consumer.kill();
    let _ = consumer.wait();
    assert!(printed.iter().any(|l| l.contains("publish_started doc")), "{printed:?}");
    assert!(printed.iter().any(|l| l.contains("publish_stopped doc")), "{printed:?}");
    let _ = backend(&["forge-none", "x"]);
}
