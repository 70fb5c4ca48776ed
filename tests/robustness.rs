//! The bad-input catalogue of docs/robustness.md, against a real server, while a healthy
//! ffmpeg publisher streams next to it. Each case asserts a clean close or refusal, a log line
//! naming the fault, and that the healthy stream keeps producing segments; the server's memory
//! is checked after the floods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::STARTUP;
use common::{Publisher, Server, segments};
use testkit::flv::Tag;
use testkit::rtmp::RawClient;
use testkit::{Clip, clip, http, tools};

/// Server settings that make the timeouts quick enough to test.
const FAST_LIMITS: &[&str] = &[
    // Hostile publishers drop without unpublishing: their streams end a second later.
    "--reconnect-window",
    "1",
    "--handshake-timeout",
    "1",
    "--publish-timeout",
    "2",
    "--no-media-timeout",
    "3",
    "--write-timeout",
    "2",
    "--http-header-timeout",
    "2",
    "--http-idle-timeout",
    "2",
    // The per-address failure limiter has its own test (publish_auth.rs); here every wrong
    // key must reach the authoriser so the refusal log's rate limit is exercised.
    "--auth-failure-burst",
    "100000",
    // So is the per-address connection rate: here one address opens a thousand.
    "--new-connections-per-ip-per-minute",
    "0",
];

/// Long enough for any of the quick timeouts above to fire.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

struct Bench {
    server: Server,
    _healthy: Publisher,
}

impl Bench {
    fn start(name: &str) -> Self {
        let server = Server::start(name, FAST_LIMITS);
        let key = server.add_key("healthy");
        let healthy =
            Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
        server.wait_for_segments("healthy", 1);
        Self { server, _healthy: healthy }
    }

    /// Waits until the healthy stream lists a segment it did not list before.
    fn assert_healthy(&self, case: &str) {
        let before = self.server.playlist("healthy").unwrap_or_default();
        let last = segments(&before).last().map(|s| (*s).to_owned());
        testkit::wait_until(
            Duration::from_secs(20),
            &format!("a new healthy segment after {case}"),
            || {
                let now = self.server.playlist("healthy")?;
                (segments(&now).last().map(|s| (*s).to_owned()) != last).then_some(())
            },
        );
    }

    fn raw(&self) -> RawClient {
        RawClient::connect(self.server.rtmp)
    }
}

fn media_tags(clip_name: Clip) -> Vec<Tag> {
    testkit::flv::media_tags(&clip(clip_name))
}

/// Publishes `tags` (after `change` edits them) with the raw client in real time order but
/// without pacing, then unpublishes.
fn publish_tags(bench: &Bench, key: &str, tags: &[Tag]) {
    let mut client = bench.raw();
    assert_eq!(client.start_publish("live", key), "NetStream.Publish.Start");
    for tag in tags {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    drop(client);
}

#[test]
fn hostile_rtmp_input_is_refused_cleanly_and_never_reaches_the_healthy_stream() {
    let bench = Bench::start("hostile");
    let server = &bench.server;
    let rss_before = server.rss_kib();

    // Garbage instead of a handshake.
    let mut client = bench.raw();
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(client.closed_within(CLOSE_WITHIN), "garbage handshake left open");
    server.wait_for_log("only 3 (plain RTMP) is served");
    bench.assert_healthy("garbage handshake");

    // A truncated handshake left open.
    let mut client = bench.raw();
    client.send(&[3; 100]).unwrap();
    assert!(client.closed_within(CLOSE_WITHIN), "truncated handshake left open");
    server.wait_for_log("handshake not completed within");

    // Chunk sizes 0, 1 and 2^31-1.
    for size in [0u32, 1, 0x7fff_ffff] {
        let mut client = bench.raw();
        client.handshake();
        client.message(2, 0, 1, 0, &size.to_be_bytes());
        assert!(client.closed_within(CLOSE_WITHIN), "chunk size {size} left open");
        server.wait_for_log(&format!("chunk size {size} is outside"));
    }
    bench.assert_healthy("bad chunk sizes");

    // A message length of 16 MiB.
    let mut client = bench.raw();
    client.handshake();
    client.send(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 1, 2, 3]).unwrap();
    assert!(client.closed_within(CLOSE_WITHIN));
    server.wait_for_log("exceeds the limit of");

    // A publish with no connect.
    let mut client = bench.raw();
    client.handshake();
    let values = [
        rtmp::amf0::Value::String("publish".into()),
        rtmp::amf0::Value::Number(3.0),
        rtmp::amf0::Value::Null,
        rtmp::amf0::Value::String("whatever".into()),
    ];
    client.command(1, &values);
    assert!(client.closed_within(CLOSE_WITHIN));
    server.wait_for_log("publish before connect");

    // connect to an unknown application: an onStatus refusal, then the close.
    let mut client = bench.raw();
    assert_eq!(client.start_publish("other", "whatever"), "NetStream.Publish.BadName");
    assert!(client.closed_within(CLOSE_WITHIN));
    server.wait_for_log("unknown application");

    // A client that connects and never publishes.
    let mut client = bench.raw();
    client.handshake();
    client.connect_app("live");
    assert!(client.closed_within(CLOSE_WITHIN));
    server.wait_for_log("no publish or play request within");
    bench.assert_healthy("protocol violations");

    let tags = media_tags(Clip::AvSmall);
    let is_header = |t: &Tag| t.data.get(1) == Some(&0) && matches!(t.data[0] & 0x0f, 7 | 10 | 15);

    // Audio and video before any sequence header: dropped until the headers come.
    let key = server.add_key("early-media");
    let mut reordered: Vec<Tag> = tags.iter().filter(|t| !is_header(t)).take(30).cloned().collect();
    reordered.extend(tags.iter().cloned());
    publish_tags(&bench, &key, &reordered);
    server.wait_for_log("dropping frames until a sequence header and a keyframe");
    server.wait_for_endlist("early-media");

    // A malformed AVC decoder configuration: the video track is dropped, audio plays.
    let key = server.add_key("bad-avc");
    let mut broken = tags.clone();
    let header = broken.iter_mut().find(|t| t.tag_type == 9 && is_header(t)).unwrap();
    header.data.truncate(12);
    publish_tags(&bench, &key, &broken);
    server.wait_for_log("AVC decoder configuration record");
    server.wait_for_endlist("bad-avc");
    let probe = tools::ffprobe(&server.playlist_url("bad-avc"));
    assert!(tools::stream(&probe, "video").is_none() && tools::stream(&probe, "audio").is_some());

    // A malformed AAC AudioSpecificConfig: the audio track is dropped, video plays.
    let key = server.add_key("bad-aac");
    let mut broken = tags.clone();
    let header = broken.iter_mut().find(|t| t.tag_type == 8 && is_header(t)).unwrap();
    header.data.truncate(3);
    publish_tags(&bench, &key, &broken);
    server.wait_for_log("AAC AudioSpecificConfig");
    server.wait_for_endlist("bad-aac");
    let probe = tools::ffprobe(&server.playlist_url("bad-aac"));
    assert!(tools::stream(&probe, "audio").is_none() && tools::stream(&probe, "video").is_some());

    // NAL length fields pointing past the tag, and an enormous composition offset.
    let key = server.add_key("bad-nal");
    let mut broken = tags.clone();
    for tag in broken.iter_mut().filter(|t| t.tag_type == 9 && !is_header(t)).step_by(7) {
        patch(tag, 5, &0x00ff_ffffu32.to_be_bytes());
    }
    for tag in broken.iter_mut().filter(|t| t.tag_type == 9 && !is_header(t)).skip(3).step_by(11) {
        patch(tag, 2, &[0x7f, 0xff, 0xff]);
    }
    publish_tags(&bench, &key, &broken);
    server.wait_for_log("overruns the");
    server.wait_for_endlist("bad-nal");
    // Each overrun carries other lengths, and a kind of error is logged once per publish.
    let overruns = server.log().lines().filter(|l| l.contains("overruns the")).count();
    assert_eq!(overruns, 1, "logged once per kind, whatever the values");
    assert!(tools::stream(&tools::ffprobe(&server.playlist_url("bad-nal")), "video").is_some());

    // Timestamps going backwards in the middle.
    let key = server.add_key("backwards");
    let mut twice = tags.clone();
    twice.extend(tags.iter().filter(|t| !is_header(t)).cloned());
    publish_tags(&bench, &key, &twice);
    let ended = server.wait_for_endlist("backwards");
    assert!(ended.contains("#EXT-X-DISCONTINUITY"), "{ended}");
    assert_eq!(tools::decode(&server.playlist_url("backwards")).0, "");
    bench.assert_healthy("malformed media");

    // A publisher that goes silent: dropped after the no-media timeout, stream ended.
    let key = server.add_key("silent");
    let mut client = bench.raw();
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Start");
    for tag in tags.iter().take(80) {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    assert!(client.closed_within(CLOSE_WITHIN));
    server.wait_for_log("no audio or video for");
    server.wait_for_endlist("silent");

    // A wrong key, 1000 times, from 16 clients at once.
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let addr = server.rtmp;
            std::thread::spawn(move || {
                for _ in 0..63 {
                    let mut client = RawClient::connect(addr);
                    assert_eq!(client.start_publish("live", "guess"), "NetStream.Publish.BadName");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let log = server.wait_for_log("publish refused: invalid stream key");
    let refusal_lines =
        log.lines().filter(|l| l.contains("publish refused: invalid stream key")).count();
    assert!(
        refusal_lines < 200,
        "{refusal_lines} refusal lines for 1008 attempts: the log is not rate-limited"
    );
    assert!(!log.contains("guess"), "a key reached the log");
    bench.assert_healthy("wrong keys");

    // A publisher that stops reading while the server has replies to send.
    let key = server.add_key("deaf");
    let mut client = bench.raw();
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Start");
    let mut deaf = client.stream.try_clone().unwrap();
    let spam = std::thread::spawn(move || {
        let mut writer = rtmp::chunk::ChunkWriter::new();
        let mut body = Vec::new();
        for v in [
            rtmp::amf0::Value::String("FCPublish".into()),
            rtmp::amf0::Value::Number(7.0),
            rtmp::amf0::Value::Null,
        ] {
            rtmp::amf0::encode(&v, &mut body);
        }
        let mut batch = Vec::new();
        for _ in 0..2000 {
            writer.write(3, 0, 20, 0, &body, &mut batch);
        }
        while deaf.write_all(&batch).is_ok() {}
    });
    server.wait_for_log("client did not read for");
    spam.join().unwrap();
    bench.assert_healthy("a publisher that stops reading");

    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB over the hostile cases"
    );
}

#[test]
fn idle_connections_and_slow_http_clients_are_bounded() {
    let bench = Bench::start("floods");
    let server = &bench.server;
    let rss_before = server.rss_kib();

    // 5,000 idle TCP connections (Python raises its own file-descriptor limit for them).
    let script = testkit::media::workspace_root().join("tests").join("idle_connections.py");
    let flood = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.rtmp.to_string())
        .args(["5000", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    bench.assert_healthy("5,000 idle connections");
    let output = flood.wait_with_output().unwrap();
    assert!(output.status.success(), "idle_connections.py failed");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let opened = report["opened"].as_u64().unwrap();
    let closed = report["closed_by_server"].as_u64().unwrap();
    assert!(opened + report["refused"].as_u64().unwrap() == 5000, "{report}");
    assert_eq!(closed, opened, "the server left idle connections open: {report}");
    server.wait_for_log("connection from 127.0.0.1");
    assert!(
        server.log().contains("similar lines are counted, not logged"),
        "refusals are not rate-limited"
    );

    // A viewer that sends its request headers one byte a second.
    let mut slow = TcpStream::connect(server.http).unwrap();
    slow.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let request = b"GET /hls/healthy/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut closed_early = false;
    for byte in request.iter().take(8) {
        if slow.write_all(&[*byte]).is_err() {
            closed_early = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut rest = Vec::new();
    let ended = slow.read_to_end(&mut rest);
    // Closed by the server: a failed write above, or end of stream here (not a read timeout).
    assert!(closed_early || ended.is_ok(), "slow headers kept the connection open: {ended:?}");
    assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"), "slow headers were served");

    // A request whose body never comes (the API reads a body before it checks anything):
    // closed at the idle timeout, as any connection that makes no progress.
    let mut stalled = TcpStream::connect(server.http).unwrap();
    stalled.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let head = "POST /api/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    stalled.write_all(format!("{head}Content-Length: 100\r\n\r\n{{").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let ended = stalled.read_to_end(&mut answer);
    let reset = matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(ended.is_ok() || reset, "a stalled body kept the connection open: {ended:?}");

    // A viewer that pipelines segment requests and reads one byte a second.
    let playlist = server.playlist("healthy").unwrap();
    let segment = segments(&playlist).last().unwrap().to_owned();
    let mut reader = TcpStream::connect(server.http).unwrap();
    let request = format!("GET /hls/healthy/{segment} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(400);
    reader.write_all(request.as_bytes()).unwrap();
    reader.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Megabytes sit in the socket buffers, so an orderly close would only show after reading
    // them all; instead each round also sends a byte, which a closed server socket answers
    // with a reset, which fails the write or the read at once.
    let gone =
        testkit::wait_until(CLOSE_WITHIN + CLOSE_WITHIN, "the slow reader to be dropped", || {
            let mut byte = [0u8; 1];
            let wrote = reader.write_all(b"G");
            match (wrote, reader.read(&mut byte)) {
                (Err(_), _) | (_, Ok(0) | Err(_)) => Some(true),
                (Ok(()), Ok(_)) => {
                    std::thread::sleep(Duration::from_secs(1));
                    None
                }
            }
        });
    assert!(gone);
    bench.assert_healthy("slow HTTP clients");

    // Path traversal and absurd names.
    let long_unicode = "é".repeat(512);
    for path in [
        "/hls/../../etc/passwd",
        "/hls/%2e%2e/%2e%2e/etc/passwd",
        "/hls/healthy/..%2f..%2fkeys.json",
        "/hls/healthy/../../data/keys.json",
        "/hls/..%2f/index.m3u8",
        &format!("/hls/{long_unicode}/index.m3u8"),
        &format!("/hls/{}/index.m3u8", "a".repeat(1024)),
        "/hls/healthy/0-0.ts%00.m3u8",
    ] {
        let response = http::get(server.http, path);
        assert!(matches!(response.status, 400 | 404), "{path}: {}", response.status);
    }
    let refused = server.keys(&["add", &long_unicode]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid stream name"));

    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    bench.assert_healthy("absurd URLs");
}

/// Overwrites the bytes of `tag`'s body at `at` with `bytes`.
fn patch(tag: &mut Tag, at: usize, bytes: &[u8]) {
    let mut data = tag.data.to_vec();
    data[at..at + bytes.len()].copy_from_slice(bytes);
    tag.data = data.into();
}

/// Before a publish is granted, a message may be a few KiB (`MAX_MESSAGE_LEN_BEFORE_PUBLISH`)
/// and data messages are not decoded: an 8 MiB AMF0 data message of `null` bytes, which
/// would decode to 32 times its size, from 8 connections at once, closes each of them and
/// costs the server no more than a few MiB; the healthy stream goes on.
#[test]
fn an_amf0_flood_before_publishing_costs_the_server_nothing() {
    let bench = Bench::start("amf0-flood");
    let server = &bench.server;
    let rss_before = server.rss_kib();
    let nulls = vec![0x05u8; 8 << 20];
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, nulls) = (server.rtmp, nulls.clone());
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                client.handshake();
                client.connect_app("live");
                client.set_chunk_size(1 << 20);
                let mut wire = Vec::new();
                client.writer.write(5, 0, 18, 0, &nulls, &mut wire);
                // The server closes the connection as soon as it reads the message's header.
                let _ = client.send(&wire);
                assert!(client.closed_within(CLOSE_WITHIN), "an 8 MiB message left open");
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    server.wait_for_log("exceeds the limit of 16384");
    bench.assert_healthy("AMF0 floods");
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB for 8 refused messages"
    );
}

/// A flood of idle and half-open connections from 20 addresses (127.0.0.2 to .21), each at
/// its per-address limit and reconnecting as soon as it is closed, asks for more places
/// than the server has (320 for 300). A keyed publish still gets in and streams:
/// unauthenticated connections have a cap of their own (64), the least advanced of them
/// give their places up to new ones, and an address cannot reconnect faster than the
/// per-address rate.
#[test]
fn a_connection_flood_from_many_addresses_does_not_keep_a_publisher_out() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let limits = [
        "--max-connections",
        "300",
        "--max-connections-per-ip",
        "16",
        "--max-unauthenticated",
        "64",
        "--handshake-timeout",
        "30",
        "--publish-timeout",
        "30",
    ];
    let server = Server::start("slot-flood", &limits);
    let key = server.add_key("keyed");
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (2..=21u8)
        .map(|host| {
            let (addr, stop) = (server.rtmp, Arc::clone(&stop));
            std::thread::spawn(move || hold_connections(addr, [127, 0, 0, host], 16, &stop))
        })
        .collect();
    // The unauthenticated places are all taken, and evictions have begun.
    testkit::wait_until(Duration::from_secs(20), "the flood to fill the server", || {
        let text = http::get(server.http, "/metrics").text();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let waiting = value("rtmp_hls_rtmp_connections_unauthenticated ")?;
        let evicted = value("rtmp_hls_rtmp_connections_evicted_total ")?;
        (waiting >= 64.0 && evicted > 0.0).then_some(())
    });
    let mut publisher = RawClient::connect(server.rtmp);
    assert_eq!(publisher.start_publish("live", &key), "NetStream.Publish.Start");
    for tag in media_tags(Clip::AvSmall) {
        publisher.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    server.wait_for_segments("keyed", 1);
    stop.store(true, Ordering::Relaxed);
    let opened: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(opened > 300, "the flood opened only {opened} connections: not a flood");
}

/// Keeps `count` connections from `local` to `server` open (half of them idle, half after
/// C0+C1 only), reopening each one the server closes, until `stop`; returns how many it
/// opened.
fn hold_connections(
    server: std::net::SocketAddr,
    local: [u8; 4],
    count: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    use socket2::{Domain, Socket, Type};
    let open = |half_open: bool| -> Option<TcpStream> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        socket.bind(&std::net::SocketAddr::from((local, 0)).into()).ok()?;
        socket.connect(&server.into()).ok()?;
        let mut stream = TcpStream::from(socket);
        if half_open {
            let mut c0c1 = vec![3u8];
            c0c1.resize(1 + 1536, 0);
            stream.write_all(&c0c1).ok()?;
        }
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let mut held: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    let mut opened = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (i, slot) in held.iter_mut().enumerate() {
            let closed = match slot {
                Some(stream) => {
                    let mut buf = [0u8; 4096];
                    match stream.read(&mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    }
                }
                None => true,
            };
            if closed {
                *slot = open(i % 2 == 1);
                opened += usize::from(slot.is_some());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    opened
}

/// Every string a client sends is cut before it is logged, sent in an event or kept: an
/// `app` of 16 KiB - 100 bytes (the most that fits before a publish) reaches the log and the
/// event as 128 bytes; an `app` of 8 MiB closes the connection unread. Refusals from one
/// address are reported (log line and event) ten times a minute, and all counted.
#[test]
fn client_strings_are_cut_and_refusals_reported_within_a_budget() {
    let bench = Bench::start("strings");
    let server = &bench.server;
    let long_app = "A".repeat((16 << 10) - 100);
    let mut client = bench.raw();
    client.handshake();
    client.set_chunk_size(1 << 16);
    client.connect_app(&long_app);
    client.publish("any-key");
    assert_eq!(client.read_status(), "NetStream.Publish.BadName");
    let log = server.wait_for_log("publish refused: unknown application");
    let line = log.lines().find(|l| l.contains("unknown application")).unwrap();
    assert!(line.contains(&"A".repeat(128)) && !line.contains(&"A".repeat(129)), "{line}");
    let event = testkit::wait_until(STARTUP, "the publish_rejected event", || {
        server.events().into_iter().find(|e| e["type"] == "publish_rejected")
    });
    assert_eq!(event["app"].as_str().unwrap().len(), 128, "{event}");

    // The whole URL in OBS's server field: the key comes inside the application.
    let mut client = bench.raw();
    client.handshake();
    client.connect_app("live/obs-key-in-the-url");
    client.publish("");
    assert_eq!(client.read_status(), "NetStream.Publish.BadName");
    let event = testkit::wait_until(STARTUP, "the second publish_rejected event", || {
        server
            .events()
            .into_iter()
            .find(|e| e["type"] == "publish_rejected" && e["app"] == "live/…")
    });
    assert!(!server.log().contains("obs-key-in-the-url"), "a key in the app reached the log");
    assert!(!event.to_string().contains("obs-key"), "{event}");

    let mut client = bench.raw();
    client.handshake();
    client.set_chunk_size(1 << 20);
    let mut connect = Vec::new();
    for value in [
        rtmp::amf0::Value::String("connect".into()),
        rtmp::amf0::Value::Number(1.0),
        rtmp::amf0::Value::Object(vec![(
            "app".into(),
            rtmp::amf0::Value::String("\u{1}".repeat(8 << 20)),
        )]),
    ] {
        rtmp::amf0::encode(&value, &mut connect);
    }
    let mut wire = Vec::new();
    client.writer.write(3, 0, 20, 0, &connect, &mut wire);
    let _ = client.send(&wire);
    assert!(client.closed_within(CLOSE_WITHIN), "an 8 MiB connect left open");

    for _ in 0..30 {
        let mut client = bench.raw();
        assert_eq!(client.start_publish("live", "wrong-key"), "NetStream.Publish.BadName");
    }
    let reported = server.events().iter().filter(|e| e["type"] == "publish_rejected").count();
    assert!(reported <= 10, "{reported} refusals reported for one address in a minute");
    let metrics = http::get(server.http, "/metrics").text();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rtmp_hls_publish_rejected_total{reason=\"invalid_key\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert_eq!(counted, 30.0, "every refusal is counted");
    let log_bytes = server.log().len();
    assert!(log_bytes < 256 << 10, "{log_bytes} bytes of log");
    bench.assert_healthy("long strings and refusals");
}
