//! Several rtmp-hls nodes as one service, on one machine: nodes on 127.0.0.2-4 sharing a
//! stream registry in a real MongoDB-wire server (SecantusDB), Debian's nginx with
//! `proxy_cache` as the CDN in front, ffmpeg publishing and reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{now_ms, only_stalls, play, play_in, playhead_at};
use common::services::{KafkaBroker, MongoServer, Relay, assert_valid_events, consume, free_port};
use common::{Publisher, STARTUP, Server, segments, tag};
use testkit::http;

/// The nodes' admin token (the same on every node).
const ADMIN_TOKEN: &str = "cluster-admin-token-for-the-tests";
/// Lease time of the test nodes: short, so a dead node's streams move within seconds.
const LEASE_SECONDS: &str = "3";

/// One node: its server, id, and address.
struct Node {
    server: Server,
    id: &'static str,
}

impl Node {
    /// Node `id` on `ip`, in the cluster whose registry is at `mongo`.
    fn start(test: &str, id: &'static str, ip: &'static str, mongo: &str, extra: &[&str]) -> Self {
        let port = free_port_on(ip);
        let http = format!("{ip}:{port}");
        let url = format!("http://{http}");
        let dir = std::env::temp_dir().join(format!("rtmp-hls-{test}-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut args = vec![
            "--mongo-uri",
            mongo,
            "--cluster-url",
            &url,
            "--server-id",
            id,
            "--lease-time",
            LEASE_SECONDS,
            "--reconnect-window",
            "20",
        ];
        args.extend_from_slice(extra);
        let server = Server::start_at(dir, &format!("{ip}:0"), &http, &args);
        Self { server, id }
    }

    fn playlist(&self, stream: &str) -> Option<http::Response> {
        let response = http::get(self.server.http, &Server::playlist_path(stream));
        (response.status == 200).then_some(response)
    }

    /// Waits until `stream`'s playlist on this node lists `n` segments.
    fn wait_for_segments(&self, stream: &str, n: usize) -> String {
        testkit::wait_until(STARTUP, &format!("{n} segments of {stream} on {}", self.id), || {
            self.playlist(stream).map(|r| r.text()).filter(|p| segments(p).len() >= n)
        })
    }
}

fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Adds `stream`'s key to the registry's MongoDB (any node's CLI would do).
fn add_key(mongo: &str, stream: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-cluster-keys-{}", std::process::id()));
    let output = common::keys_cli(&dir, &["add", stream, "--mongo-uri", mongo]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned()
}

fn media_sequence(playlist: &str) -> u64 {
    tag(playlist, "MEDIA-SEQUENCE").unwrap().parse().unwrap()
}

/// The media sequence number of the last segment listed.
fn last_sequence(playlist: &str) -> u64 {
    media_sequence(playlist) + segments(playlist).len() as u64 - 1
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = http::get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Debian's nginx as the CDN: `proxy_cache` with `proxy_cache_lock` in front of `origins`,
/// as docs/cluster.md configures it, with an access log of cache outcomes.
struct Cache {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Cache {
    fn start(origins: &[SocketAddr]) -> Self {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-cdn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let template = std::fs::read_to_string(
            testkit::media::workspace_root().join("deploy").join("nginx-cache.conf"),
        )
        .unwrap();
        let upstreams: String = origins.iter().map(|o| format!("server {o};\n")).collect();
        // The documented configuration, wrapped with what a test run needs (paths, port).
        let conf = format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nevents {{ worker_connections 2048; }}\n\
             http {{\n client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
             log_format cache '$uri $upstream_cache_status $upstream_addr';\n\
             access_log {dir}/access.log cache;\n\
             proxy_cache_path {dir}/cache levels=1:2 keys_zone=hls:10m max_size=256m inactive=2m use_temp_path=off;\n\
             upstream rtmp_hls {{ {upstreams} keepalive 16; }}\n\
             server {{ listen 127.0.0.1:{port};\n{template}\n}}\n}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .args(["-c", "nginx.conf", "-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running nginx (the test command installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        testkit::wait_until(STARTUP, "nginx to listen", || std::net::TcpStream::connect(addr).ok());
        Self { child, addr, dir }
    }

    /// (uri, whether it went to a node) of every request so far.
    fn log(&self) -> Vec<(String, bool)> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut words = l.split(' ');
                let (uri, _status, upstream) = (words.next()?, words.next()?, words.next()?);
                Some((uri.to_owned(), upstream != "-"))
            })
            .collect()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publish on A; watch through B, C and the cache; 200 viewers on the cache cause about one
/// fetch per segment; A dies, the publisher reconnects to B, numbering continues and a viewer
/// on C keeps decoding.
#[test]
fn one_stream_served_by_every_node_and_moved_when_its_node_dies() {
    let mongo = MongoServer::start("cluster-move");
    let uri = mongo.uri();
    let key = add_key(&uri, "cam");
    let a = Node::start("move", "node-a", "127.0.0.2", &uri, &[]);
    let b = Node::start("move", "node-b", "127.0.0.3", &uri, &[]);
    let c = Node::start("move", "node-c", "127.0.0.4", &uri, &[]);
    let clip = testkit::clip(testkit::Clip::AvSmall);
    let publisher = Publisher::start_looping(&clip, &format!("{}/{key}", a.server.rtmp_url()));
    let on_a = a.wait_for_segments("cam", 3);

    // Any node serves it, from the node that publishes it.
    for node in [&b, &c] {
        node.wait_for_segments("cam", 3);
        let response = node.playlist("cam").unwrap();
        assert_eq!(response.header("x-rtmp-hls-origin"), Some("node-a"), "via {}", node.id);
        let text = response.text();
        assert!(
            media_sequence(&text).abs_diff(media_sequence(&on_a)) <= 2,
            "{} serves another playlist:\n{text}\nA:\n{on_a}",
            node.id
        );
        let segment = segments(&text)[0];
        let body = http::get(node.server.http, &format!("/hls/cam/{segment}"));
        assert_eq!(body.status, 200);
        assert_eq!(body.body[0], 0x47, "a TS segment through {}", node.id);
    }
    // The cluster-wide list, on a node that does not publish it.
    let list: serde_json::Value =
        serde_json::from_slice(&http::get(c.server.http, "/api/v1/streams").body).unwrap();
    let cam = list["streams"].as_array().unwrap().iter().find(|s| s["name"] == "cam").unwrap();
    assert_eq!(cam["node"], "node-a", "{list:#}");
    assert_eq!(cam["live"], true);
    // Made private while live, it leaves the other nodes' public list; public, it is back.
    let listed = |node: &Node| {
        let list: serde_json::Value =
            serde_json::from_slice(&http::get(node.server.http, "/api/v1/streams").body).unwrap();
        list["streams"].as_array().unwrap().iter().any(|s| s["name"] == "cam")
    };
    for (visibility, shown) in [("private", false), ("public", true)] {
        let dir =
            std::env::temp_dir().join(format!("rtmp-hls-cluster-keys-{}", std::process::id()));
        let output =
            common::keys_cli(&dir, &["visibility", "cam", visibility, "--mongo-uri", &uri]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        testkit::wait_until(STARTUP, &format!("node C to list cam as {visibility}"), || {
            (listed(&c) == shown).then_some(())
        });
    }

    // The CDN in front of B and C: 200 viewers, about one origin fetch per segment.
    let cache = Cache::start(&[b.server.http, c.server.http]);
    let fetched_before =
        metric(b.server.http, "rtmp_hls_fetch_through_requests_total{outcome=\"fetched\"}")
            + metric(c.server.http, "rtmp_hls_fetch_through_requests_total{outcome=\"fetched\"}");
    let viewers: Vec<_> = (0..200)
        .map(|_| {
            let addr = cache.addr;
            std::thread::spawn(move || watch_for(addr, "cam", Duration::from_secs(8)))
        })
        .collect();
    let mut played = 0;
    for viewer in viewers {
        played += viewer.join().unwrap();
    }
    assert!(played >= 200, "every viewer fetched a segment ({played} segments in all)");
    let log = cache.log();
    let mut misses: HashMap<&str, u32> = HashMap::new();
    let mut requests: HashMap<&str, u32> = HashMap::new();
    for (uri, upstream) in &log {
        if uri.ends_with(".ts") {
            *requests.entry(uri).or_default() += 1;
            if *upstream {
                *misses.entry(uri).or_default() += 1;
            }
        }
    }
    let fetched =
        metric(b.server.http, "rtmp_hls_fetch_through_requests_total{outcome=\"fetched\"}")
            + metric(c.server.http, "rtmp_hls_fetch_through_requests_total{outcome=\"fetched\"}")
            - fetched_before;
    let playlist_misses =
        log.iter().filter(|(u, upstream)| u.ends_with(".m3u8") && *upstream).count();
    eprintln!(
        "200 viewers through the cache: {} segment requests for {} segments, {} went to the \
         cluster ({:.2} per segment); {} playlist requests, {playlist_misses} to the cluster; \
         the edges made {fetched} fetches from node-a",
        requests.values().sum::<u32>(),
        requests.len(),
        misses.values().sum::<u32>(),
        f64::from(misses.values().sum::<u32>()) / requests.len() as f64,
        log.iter().filter(|(u, _)| u.ends_with(".m3u8")).count(),
    );
    assert!(!requests.is_empty());
    for (uri, n) in &misses {
        assert!(*n <= 2, "{uri} went to the cluster {n} times");
    }
    // Real players: hls.js in Chromium through the cache, ffmpeg through C.
    let report = play(&format!("http://{}/hls/cam/index.m3u8", cache.addr), 3);
    assert!(only_stalls(&report), "hls.js through the cache: {report}");
    let (clean, messages) = read_live(&format!("http://{}/hls/cam/index.m3u8", c.server.http), 4);
    assert!(clean, "ffmpeg through node-c: {messages}");

    // hls.js on C, from before A dies until the stream ends on B.
    let viewer_url = format!("http://{}/hls/cam/index.m3u8", c.server.http);
    let player = std::thread::spawn(move || play_in(&viewer_url, 90, "watch"));
    std::thread::sleep(Duration::from_secs(6));
    let last_on_a = last_sequence(&a.wait_for_segments("cam", 4));
    let killed = now_ms();
    a.server.kill9();
    drop(publisher);
    // The encoder reconnects through the "load balancer" to B.
    let started = Instant::now();
    let publisher = Publisher::start_looping(&clip, &format!("{}/{key}", b.server.rtmp_url()));
    let on_b = testkit::wait_until(STARTUP, "the stream on B", || {
        b.playlist("cam")
            .filter(|r| r.header("x-rtmp-hls-origin").is_none())
            .map(|r| r.text())
            .filter(|p| p.contains("#EXT-X-DISCONTINUITY\n"))
    });
    let resumed = now_ms();
    eprintln!("moved to node-b {:?} after node-a died", started.elapsed());
    let first_on_b = media_sequence(&on_b);
    assert!(first_on_b > last_on_a, "numbering went back: {first_on_b} after {last_on_a}\n{on_b}");
    // Through C now too, and on after the discontinuity.
    testkit::wait_until(STARTUP, "C to serve B's stream", || {
        let response = c.playlist("cam")?;
        let after = response.text().split("#EXT-X-DISCONTINUITY").nth(1).map(str::to_owned)?;
        let from_b = response.header("x-rtmp-hls-origin") == Some("node-b");
        (from_b && segments(&after).len() >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    // A clean stop on B: C's viewers get the final playlist from B, as on one node.
    let stopped = now_ms();
    assert!(publisher.stop(), "ffmpeg did not stop cleanly");
    testkit::wait_until(STARTUP, "ENDLIST through C", || {
        c.playlist("cam").filter(|r| r.text().trim_end().ends_with("#EXT-X-ENDLIST"))
    });
    let report = player.join().unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert!(!errors.iter().any(|e| e.as_str().unwrap().starts_with("fatal")), "{report}");
    assert!(playhead_at(&report, killed) > 0.0, "hls.js was not playing yet: {report}");
    let (at_resume, at_end) =
        (playhead_at(&report, resumed), report["currentTime"].as_f64().unwrap());
    assert!(at_end > at_resume + 4.0, "no new frames after the move: {at_resume} then {at_end}");
    assert!(report["endedAt"].as_f64().unwrap() > stopped, "ended before the stop: {report}");
    // The move is visible in the events: stopped on A (killed: nothing), started on B.
    b.server.wait_for_event("publish_started", "cam");
}

/// Reads `seconds` of a live playlist with ffmpeg, decoding; whether it decoded without an
/// error, and what it printed.
fn read_live(url: &str, seconds: u32) -> (bool, String) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", &seconds.to_string()])
        // The input's time base for the null output (see testkit::decode).
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("running ffmpeg");
    // The publisher loops its clip (`-stream_loop`), whose audio overlaps the next loop's
    // by a frame: the null muxer's complaint about that is what ffmpeg also prints reading
    // the origin node directly, not a decoding error.
    let messages: String = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.contains("non monotonically increasing dts to muxer"))
        .map(|l| format!("{l}\n"))
        .collect();
    (output.status.success() && messages.trim().is_empty(), messages)
}

/// A viewer of `stream` at `addr` for `time`: reloads the playlist every second and fetches
/// every new segment; returns how many segments it got.
fn watch_for(addr: SocketAddr, stream: &str, time: Duration) -> u32 {
    let deadline = Instant::now() + time;
    let mut seen = std::collections::HashSet::new();
    let mut got = 0;
    while Instant::now() < deadline {
        let playlist = http::get(addr, &Server::playlist_path(stream));
        if playlist.status == 200 {
            for segment in segments(&playlist.text()) {
                if seen.insert(segment.to_owned()) {
                    let body = http::get(addr, &format!("/hls/{stream}/{segment}"));
                    if body.status == 200 && body.body.first() == Some(&0x47) {
                        got += 1;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    got
}

/// The same stream published on two nodes at once (takeover refused): one wins, the other
/// encoder is refused, and only one node lists segments.
#[test]
fn the_same_stream_on_two_nodes_at_once_has_one_winner() {
    let mongo = MongoServer::start("cluster-race");
    let uri = mongo.uri();
    let key = add_key(&uri, "race");
    let a = Node::start("race", "node-a", "127.0.0.2", &uri, &["--takeover", "refuse"]);
    let c = Node::start("race", "node-c", "127.0.0.4", &uri, &["--takeover", "refuse"]);
    let clip = testkit::clip(testkit::Clip::AvSmall);
    let mut on_a = Publisher::start_looping(&clip, &format!("{}/{key}", a.server.rtmp_url()));
    let mut on_c = Publisher::start_looping(&clip, &format!("{}/{key}", c.server.rtmp_url()));
    // The loser is refused (within the lease time it watches the winner renew).
    let limit = Duration::from_secs(15);
    let (a_ended, c_ended) = (on_a.exited_within(limit), on_c.exited_within(Duration::ZERO));
    let refused = [a_ended, c_ended].iter().filter(|e| **e == Some(false)).count();
    assert_eq!(refused, 1, "exactly one encoder refused: A {a_ended:?}, C {c_ended:?}");
    let (winner, loser) = if a_ended.is_none() { (&a, &c) } else { (&c, &a) };
    winner.wait_for_segments("race", 2);
    let through = loser.playlist("race").expect("the loser's node serves the winner's stream");
    assert_eq!(through.header("x-rtmp-hls-origin"), Some(winner.id));
    assert!(loser.server.log().contains("publish refused: live on another node"));
}

/// A node cut off from MongoDB stops its publisher before its lease runs out, and another
/// node can then take the stream, numbering on.
#[test]
fn a_node_cut_off_from_the_registry_stops_and_another_takes_the_stream() {
    let mongo = MongoServer::start("cluster-cut");
    let uri = mongo.uri();
    let key = add_key(&uri, "cut");
    let relay = Relay::start();
    relay.set_target(Some(mongo.port));
    // A direct connection: the driver would otherwise find the server's own address in its
    // answers and go around the relay.
    let through_relay = format!("mongodb://127.0.0.1:{}/?directConnection=true", relay.port);
    let a = Node::start("cut", "node-a", "127.0.0.2", &through_relay, &[]);
    let b = Node::start("cut", "node-b", "127.0.0.3", &uri, &[]);
    let clip = testkit::clip(testkit::Clip::AvSmall);
    let mut publisher = Publisher::start_looping(&clip, &format!("{}/{key}", a.server.rtmp_url()));
    a.wait_for_segments("cut", 2);

    let cut = Instant::now();
    relay.set_target(None);
    let log = a.server.wait_for_log("stream stopped: its lease could not be renewed");
    let fenced = cut.elapsed();
    eprintln!("node-a stopped its publisher {fenced:?} after losing MongoDB");
    assert!(log.contains("\"reason\":\"lease_lost\""), "the stop event says why");
    assert!(publisher.exited_within(Duration::from_secs(5)).is_some(), "the encoder was dropped");
    let last_on_a = last_sequence(&a.server.playlist("cut").unwrap());
    // A lists nothing new from now on.
    let frozen = a.server.playlist("cut").unwrap();

    let publisher = Publisher::start_looping(&clip, &format!("{}/{key}", b.server.rtmp_url()));
    let on_b = testkit::wait_until(STARTUP, "B's own playlist", || {
        let response = b.playlist("cut")?;
        let own = response.header("x-rtmp-hls-origin").is_none();
        own.then(|| response.text()).filter(|p| segments(p).len() >= 2)
    });
    assert!(media_sequence(&on_b) > last_on_a, "numbering went back:\n{on_b}");
    assert_eq!(a.server.playlist("cut").unwrap(), frozen, "A listed a segment after its fence");
    drop(publisher);
}

/// A publish on another node takes a live stream over: the old node drops its publisher at
/// its next renewal and hands the numbering over exactly; Kafka shows the move (stopped on
/// one node as `taken_over`, started on the other).
#[test]
fn a_takeover_between_live_nodes_hands_the_numbering_over() {
    let mongo = MongoServer::start("cluster-takeover");
    let broker = KafkaBroker::start();
    let uri = mongo.uri();
    let bootstrap = broker.bootstrap();
    let key = add_key(&uri, "moving");
    let kafka = [
        "--kafka-brokers",
        bootstrap.as_str(),
        "--kafka-topic",
        "cluster-events",
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let a = Node::start("takeover", "node-a", "127.0.0.2", &uri, &kafka);
    let b = Node::start("takeover", "node-b", "127.0.0.3", &uri, &kafka);
    let clip = testkit::clip(testkit::Clip::AvSmall);
    let mut first = Publisher::start_looping(&clip, &format!("{}/{key}", a.server.rtmp_url()));
    let last_on_a = last_sequence(&a.wait_for_segments("moving", 3));

    let started = Instant::now();
    let mut second = Publisher::start_looping(&clip, &format!("{}/{key}", b.server.rtmp_url()));
    if first.exited_within(Duration::from_secs(10)).is_none() {
        let b_side = match second.exited_within(Duration::ZERO) {
            None => "still publishing",
            Some(_) => "exited (refused?)",
        };
        panic!("node-a kept its publisher after node-b took the stream; node-b's is {b_side}");
    }
    eprintln!("node-a dropped its publisher {:?} after the publish on node-b", started.elapsed());
    let on_b = testkit::wait_until(STARTUP, "B's own playlist", || {
        let response = b.playlist("moving")?;
        let own = response.header("x-rtmp-hls-origin").is_none();
        own.then(|| response.text()).filter(|p| !segments(p).is_empty())
    });
    let first_on_b = media_sequence(&on_b);
    // Handed over: on from A's last segment, not past a dead node's margin.
    assert!(
        first_on_b > last_on_a && first_on_b <= last_on_a + 4,
        "B starts at {first_on_b} after A's {last_on_a}:\n{on_b}"
    );
    assert!(on_b.contains("#EXT-X-DISCONTINUITY\n"), "{on_b}");
    // A now serves B's stream.
    testkit::wait_until(STARTUP, "A to serve B's stream", || {
        let response = a.playlist("moving")?;
        (response.header("x-rtmp-hls-origin") == Some("node-b")).then_some(())
    });

    // The admin API of any node: kicking on A ends the publish on B.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let kicked = http::request_with(
        a.server.http,
        "DELETE",
        "/api/v1/streams/moving/publisher",
        &[("Authorization", &bearer)],
    );
    assert_eq!(kicked.status, 204, "{}", kicked.text());
    assert!(second.exited_within(Duration::from_secs(10)).is_some(), "B kept the kicked publisher");

    let is = |e: &serde_json::Value, kind: &str, node: &str| {
        e["type"] == kind && e["stream"] == "moving" && e["server_id"] == node
    };
    let records = consume(&bootstrap, "cluster-events", Duration::from_secs(40), |records| {
        records.iter().any(|(_, e)| is(e, "publish_stopped", "node-a"))
            && records.iter().any(|(_, e)| is(e, "publish_stopped", "node-b"))
    });
    let events: Vec<serde_json::Value> = records.into_iter().map(|(_, e)| e).collect();
    let stopped = events.iter().find(|e| is(e, "publish_stopped", "node-a")).expect("A's stop");
    assert_eq!(stopped["reason"], "taken_over", "{stopped:#}");
    assert!(events.iter().any(|e| is(e, "publish_started", "node-b")), "B's start");
    let kicked = events.iter().find(|e| is(e, "publish_stopped", "node-b")).expect("B's stop");
    assert_eq!(kicked["reason"], "kicked", "{kicked:#}");
    assert_valid_events(&events);
}
