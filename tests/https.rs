//! HTTPS with HTTP/2: curl (with nghttp2) negotiates h2 by ALPN and gets the low-latency
//! playlist, a blocked reload and a part; HTTP/1.1 still works over TLS; a certificate
//! renewed on disk is served without a restart. MPEG-TS segments, kept in memory files and
//! sent with `sendfile` over plain HTTP, reach TLS viewers as the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Publisher, Server, listening, self_signed};
use testkit::{Clip, clip};

/// `curl` over TLS (the test's own certificate not verified): the HTTP version, the status,
/// and the body.
fn curl(version: &str, addr: SocketAddr, path: &str) -> (String, u16, String) {
    let (http, status, body) = curl_bytes(version, addr, path);
    (http, status, String::from_utf8_lossy(&body).into_owned())
}

/// [`curl`] with the body as bytes.
fn curl_bytes(version: &str, addr: SocketAddr, path: &str) -> (String, u16, Vec<u8>) {
    // One file per call: the tests of this binary run at the same time.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let body = std::env::temp_dir().join(format!("rtmp-hls-curl-{}-{call}", std::process::id()));
    let output = Command::new("curl")
        .args(["-sk", version, "--max-time", "20", "-o"])
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .output()
        .expect("running curl (the test command installs it)");
    let said = String::from_utf8(output.stdout).unwrap();
    let (http, status) = said.split_once(' ').unwrap_or_else(|| panic!("curl said {said:?}"));
    let bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (http.to_owned(), status.parse().unwrap_or(0), bytes)
}

/// MPEG-TS segments are written into memory files and sent with `sendfile` over plain HTTP;
/// over TLS, HTTP/2 and HTTP/1.1 alike, they are read from the file as the connection takes
/// them (64 KiB at a time): the same bytes either way.
#[test]
fn mpegts_segments_over_https_are_the_bytes_plain_http_sends() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-https-ts-{}", std::process::id()));
    let (cert, key) = self_signed(&dir, "ts");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let server = Server::start(
        "https-ts",
        &["--https-addr", "127.0.0.1:0", "--tls-cert", &path(&cert), "--tls-key", &path(&key)],
    );
    let https = listening(&server, "HTTPS");
    let key = server.add_key("plain");
    let _publisher =
        Publisher::start_looping(&clip(Clip::Av720p30), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("plain", 1);
    let playlist = testkit::http::get(server.http, "/hls/plain/index.m3u8").text();
    let first = playlist.lines().find(|l| l.ends_with(".ts")).unwrap().to_owned();
    let sent = testkit::http::get(server.http, &format!("/hls/plain/{first}"));
    assert_eq!(sent.status, 200);
    assert!(sent.body.len() > 3 * (64 << 10), "several reads: {} bytes", sent.body.len());
    for version in ["--http2", "--http1.1"] {
        let (http, status, body) = curl_bytes(version, https, &format!("/hls/plain/{first}"));
        assert_eq!(status, 200, "{version}");
        assert_eq!(http, version.trim_start_matches("--http"));
        assert!(
            body == sent.body,
            "{version}: {} bytes, {} over plain HTTP",
            body.len(),
            sent.body.len()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The subject of the certificate the server presents.
fn presented_subject(addr: SocketAddr) -> String {
    let output = Command::new("curl")
        .args(["-vsk", "-o", "/dev/null", &format!("https://127.0.0.1:{}/healthz", addr.port())])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&output.stderr);
    verbose
        .lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn low_latency_over_https_speaks_http2_and_takes_a_renewed_certificate() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-https-{}", std::process::id()));
    let (cert, key) = self_signed(&dir, "first");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let server = Server::start(
        "https",
        &[
            "--hls-variant",
            "low-latency",
            "--https-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &path(&cert),
            "--tls-key",
            &path(&key),
        ],
    );
    let https = listening(&server, "HTTPS");
    let key = server.add_key("secure");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("secure", 1);

    let (version, status, playlist) = curl("--http2", https, "/hls/secure/index.m3u8");
    assert_eq!((version.as_str(), status), ("2", 200), "{playlist}");
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let (msn, part) =
        hint.trim_end_matches(".m4s").split_once('-').unwrap().1.split_once('.').unwrap();
    let blocked = format!("/hls/secure/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let (version, status, reloaded) = curl("--http2", https, &blocked);
    assert_eq!((version.as_str(), status), ("2", 200));
    assert!(reloaded.contains(&format!("URI=\"{hint}\"")), "{reloaded}");
    let (version, status, _) = curl("--http2", https, &format!("/hls/secure/{hint}"));
    assert_eq!((version.as_str(), status), ("2", 200));
    let (version, status, _) = curl("--http1.1", https, "/hls/secure/index.m3u8");
    assert_eq!((version.as_str(), status), ("1.1", 200));

    // Renewed on disk: served within the reload interval, no restart.
    assert!(presented_subject(https).contains("CN=first"), "{}", presented_subject(https));
    self_signed(&dir, "renewed");
    testkit::wait_until(Duration::from_secs(30), "the renewed certificate", || {
        presented_subject(https).contains("CN=renewed").then_some(())
    });
    // A broken renewal keeps the certificate in use.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    server.wait_for_log("do not load; keeping the current certificate");
    assert!(presented_subject(https).contains("CN=renewed"));
    std::fs::remove_dir_all(&dir).unwrap();
}
