//! Operations end to end: the configuration file and its precedence, the stats and admin
//! APIs, metrics, and Nginx-RTMP-style hooks, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::services::{HookBackend, backend, venv};
use common::{Publisher, STARTUP, Server, metric, publish_fast};
use rtmp_hls_http::api::model::{CreatedKey, KeyList, NewKey, Stream, StreamList};
use serde_json::Value;
use testkit::http;
use testkit::media::{Clip, clip, workspace_root};

/// A static admin token for the tests.
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The HS256 secret of the tests' JWTs.
const JWT_SECRET: &str = "ops-test-jwt-secret-of-32-bytes!";

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rtmp-hls-ops-{name}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `rtmp-hls <args> config check` with `env`; (success, stdout, stderr).
fn config_check(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
        .args(args)
        .args(["config", "check"])
        .env_remove("RTMP_HLS_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// File < environment < flag, for every kind of value; secrets never printed.
#[test]
fn configuration_precedence_is_file_then_environment_then_flag() {
    let file = temp_file(
        "precedence.toml",
        "playlist_length = 8\nsegment_duration = 3\napp = \"file-app\"\n\
         jwt_secret = \"file-secret-value-of-at-least-32-bytes\"\n[kafka_property]\n\"linger.ms\" = 7\n",
    );
    let file_arg = file.display().to_string();
    let (ok, out, err) = config_check(
        &["--config", &file_arg, "--app", "flag-app"],
        &[("RTMP_HLS_SEGMENT_DURATION", "5"), ("RTMP_HLS_APP", "env-app")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("playlist_length = 8  # file"), "{out}");
    assert!(out.contains("segment_duration = 5  # environment"), "{out}");
    assert!(out.contains("app = \"flag-app\"  # flag"), "{out}");
    assert!(out.contains("kafka_property = [\"linger.ms=7\"]  # file"), "{out}");
    assert!(out.contains("jwt_secret = \"********\"  # file"), "{out}");
    assert!(
        !out.contains("file-secret-value-of-at-least-32-bytes")
            && !err.contains("file-secret-value-of-at-least-32-bytes")
    );

    // The file can also be named by the environment.
    let (ok, out, err) = config_check(&[], &[("RTMP_HLS_CONFIG", &file_arg)]);
    assert!(ok, "{err}");
    assert!(out.contains("app = \"file-app\"  # file"), "{out}");
    std::fs::remove_file(file).unwrap();
}

/// An invalid value is refused at startup, naming the option (and the file it came from).
#[test]
fn invalid_configuration_is_refused_at_startup_naming_the_option() {
    let file = temp_file("invalid.toml", "playlist_length = 0\n");
    let file_arg = file.display().to_string();
    for (args, env, needle) in [
        (vec!["--config", file_arg.as_str()], vec![], "`playlist_length`"),
        (vec![], vec![("RTMP_HLS_SEGMENT_DURATION", "soon")], "--segment-duration"),
        (vec!["--takeover", "maybe"], vec![], "--takeover"),
        (vec!["--jwt-public-key", "/nonexistent/key.pem"], vec![], "--jwt-public-key"),
    ] {
        let (ok, _, err) = config_check(&args, &env);
        assert!(!ok, "{args:?} {env:?} was accepted");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
        // The server itself refuses the same way before listening.
        let output = Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
            .args(&args)
            .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args([
                "--data-dir",
                std::env::temp_dir().join("rtmp-hls-ops-invalid").to_str().unwrap(),
            ])
            .env_remove("RTMP_HLS_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: the server started");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening"), "{args:?}: {stderr}");
    }
    std::fs::remove_file(file).unwrap();
}

/// Validates `document` against `schema` of docs/openapi.yaml with Python's `jsonschema`.
fn assert_shape(schema: &str, document: &Value) {
    let openapi = workspace_root().join("docs").join("openapi.yaml");
    let script = workspace_root().join("tests").join("backend.py");
    let mut child = Command::new(venv().join("bin").join("python"))
        .arg(script)
        .args(["validate-api", openapi.to_str().unwrap(), schema])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(document.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{schema} off the OpenAPI file:\n{}\n{document:#}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A request with an optional bearer token and JSON body; (status, headers, JSON or Null).
fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, http::Response, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    let response = http::request_full(addr, method, path, &headers, body.as_bytes());
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, response, json)
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, json) = api(addr, "GET", path, None, None);
    assert_eq!(status, 200, "GET {path}: {json}");
    json
}

/// A body as the API type the handlers send (`rtmp_hls_http::api::model`).
fn typed<T: serde::de::DeserializeOwned>(body: &Value) -> T {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body:#}"))
}

fn metrics(addr: SocketAddr) -> String {
    let response = http::get(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    response.text()
}

/// The stats API and /metrics follow a real publish from start to kick, in the documented
/// shapes; every documented route is one the server has.
#[test]
fn stats_and_metrics_follow_a_real_publish_to_its_kick() {
    let server = Server::start("ops-stats", &["--admin-token", ADMIN_TOKEN, "--ended-ttl", "5"]);
    let key = server.add_key("cam");
    let url = format!("{}/{key}", server.rtmp_url());
    let _publisher = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    server.wait_for_segments("cam", 2);
    let viewer = http::request_with(
        server.http,
        "GET",
        &Server::playlist_path("cam"),
        &[("User-Agent", "stats-test-player")],
    );
    assert_eq!(viewer.status, 200);
    let (ok, _) = publish_fast(&clip(Clip::AvSmall), &format!("{}/wrong-key", server.rtmp_url()));
    assert!(!ok, "a wrong key published");

    let list_body = get_json(server.http, "/api/v1/streams");
    assert_shape("StreamList", &list_body);
    let cam_body = get_json(server.http, "/api/v1/streams/cam");
    assert_shape("Stream", &cam_body);
    assert!(!cam_body.to_string().contains(&key), "the key is in the stats");
    let list: StreamList = typed(&list_body);
    let cam: Stream = typed(&cam_body);
    assert_eq!(list.streams[0].name, cam.name, "list and item disagree");
    let publisher = cam.publisher.as_ref().unwrap();
    assert_eq!(list.streams[0].publisher.as_ref().unwrap().since, publisher.since);
    assert!(cam.live);
    assert_eq!(cam.playlist, "/hls/cam/index.m3u8");
    assert!(cam.viewers >= 1, "{cam:?}");
    // Who publishes is for admins only.
    assert_eq!(publisher.remote_addr, None, "{cam:?}");
    let (status, _, detailed) =
        api(server.http, "GET", "/api/v1/streams/cam", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 200);
    assert_shape("Stream", &detailed);
    let detailed: Stream = typed(&detailed);
    let address = detailed.publisher.unwrap().remote_addr.unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(publisher.app, "live");
    assert_eq!(publisher.ended_at, None);
    assert!(publisher.bitrate_bps > 10_000, "{cam:?}");
    assert!(publisher.fps > 5.0, "{cam:?}");
    // A 1 s GOP (FLV timestamps are whole milliseconds, at 25 fps the GOP is 960-1040 ms).
    let gop = publisher.keyframe_interval_ms.unwrap();
    assert!((900..=1100).contains(&gop), "{cam:?}");
    assert!(publisher.segments >= 2, "{cam:?}");
    let video = cam.video.as_ref().unwrap();
    assert!(video.codec.starts_with("avc1.64"), "{cam:?}");
    assert_eq!((video.width, video.height), (Some(320), Some(240)));
    let audio = cam.audio.as_ref().unwrap();
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("mp4a.40.2", Some(48000)));

    let (status, _, error) = api(server.http, "GET", "/api/v1/streams/nope", None, None);
    assert_eq!(status, 404);
    assert_shape("Error", &error);

    let text = metrics(server.http);
    for (series, at_least) in [
        ("rtmp_hls_publish_accepted_total", 1.0),
        ("rtmp_hls_publish_rejected_total{reason=\"invalid_key\"}", 1.0),
        ("rtmp_hls_ingest_bytes_total{stream=\"cam\"}", 10_000.0),
        ("rtmp_hls_ingest_frames_total{stream=\"cam\"}", 50.0),
        ("rtmp_hls_segments_total", 2.0),
        ("rtmp_hls_key_lookup_seconds_count", 2.0),
        ("rtmp_hls_http_requests_total{kind=\"playlist\",status=\"200\"}", 1.0),
        ("rtmp_hls_http_response_bytes_total{kind=\"playlist\"}", 100.0),
        ("rtmp_hls_live_streams", 1.0),
        ("rtmp_hls_rtmp_connections", 1.0),
        ("rtmp_hls_viewers{stream=\"cam\"}", 1.0),
        ("rtmp_hls_segment_bytes{storage=\"heap\"}", 0.0),
        ("rtmp_hls_segment_bytes{storage=\"memory_file\"}", 0.0),
    ] {
        let value = metric(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
        assert!(value >= at_least, "{series} = {value}, expected at least {at_least}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "not OpenMetrics text");

    // Kick: the publish ends as kicked; its per-stream series go.
    let (status, _, _) =
        api(server.http, "DELETE", "/api/v1/streams/cam/publisher", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 204);
    server.wait_for_endlist("cam");
    let ended = testkit::wait_until(STARTUP, "the kick in the stats", || {
        let cam = get_json(server.http, "/api/v1/streams/cam");
        (cam["publisher"]["stop_reason"] == "kicked").then_some(cam)
    });
    assert_shape("Stream", &ended);
    let ended: Stream = typed(&ended);
    assert!(!ended.live);
    assert!(ended.publisher.unwrap().ended_at.is_some());
    let text = metrics(server.http);
    assert_eq!(metric(&text, "rtmp_hls_live_streams"), Some(0.0), "{text}");
    assert!(!text.contains("rtmp_hls_ingest_bytes_total{stream=\"cam\"}"), "{text}");
    let (status, _, _) =
        api(server.http, "DELETE", "/api/v1/streams/cam/publisher", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 404, "kicked a publisher that is gone");
    // Once the ended stream expires, its stats go too.
    testkit::wait_until(STARTUP, "the ended stream to expire", || {
        let list: StreamList = typed(&get_json(server.http, "/api/v1/streams"));
        list.streams.is_empty().then_some(())
    });
    assert_eq!(api(server.http, "GET", "/api/v1/streams/cam", None, None).0, 404);

    // Every documented operation exists, and every route exists in the documentation.
    let documented: std::collections::BTreeSet<String> = backend(&[
        "openapi-paths",
        workspace_root().join("docs").join("openapi.yaml").to_str().unwrap(),
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    let served: std::collections::BTreeSet<String> = [
        "GET /api/v1/streams",
        "GET /api/v1/streams/{name}",
        "DELETE /api/v1/streams/{name}/publisher",
        "GET /api/v1/keys",
        "POST /api/v1/keys",
        "DELETE /api/v1/keys/{name}",
        "PATCH /api/v1/keys/{name}",
        "DELETE /api/v1/tokens/{jti}",
        "GET /metrics",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(documented, served);
    assert!(!server.log().contains(&key), "a key reached the log");
}

/// Admin routes: 401 without usable credentials, 403 without the admin role; the static
/// token and AuthX-issued admin JWTs work; keys created through the API publish, and revoking
/// one ends its live publish.
#[test]
fn the_admin_api_authenticates_and_manages_keys() {
    let server =
        Server::start("ops-admin", &["--admin-token", ADMIN_TOKEN, "--jwt-secret", JWT_SECRET]);
    let admin_jwt = backend(&["authx-role", JWT_SECRET, "ops-1", "admin"]);
    let viewer_jwt = backend(&["authx-role", JWT_SECRET, "bob", "viewer"]);
    let publish_jwt = backend(&["authx", JWT_SECRET, "bob", "cam"]);
    let other_secret_jwt = backend(&["authx-role", "another-secret", "eve", "admin"]);
    let routes: [(&str, &str, Option<Value>); 5] = [
        ("GET", "/api/v1/keys", None),
        ("POST", "/api/v1/keys", Some(serde_json::json!({"stream": "x-denied"}))),
        ("PATCH", "/api/v1/keys/demo", Some(serde_json::json!({"private": true}))),
        ("DELETE", "/api/v1/keys/demo", None),
        ("DELETE", "/api/v1/streams/demo/publisher", None),
    ];
    for (method, path, body) in &routes {
        let (status, response, error) = api(server.http, method, path, None, body.as_ref());
        assert_eq!(status, 401, "{method} {path} without a token");
        assert!(response.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_shape("Error", &error);
        for token in ["not-the-token-at-all", other_secret_jwt.as_str()] {
            let (status, _, _) = api(server.http, method, path, Some(token), body.as_ref());
            assert_eq!(status, 401, "{method} {path} with a bad token");
        }
        for token in [viewer_jwt.as_str(), publish_jwt.as_str()] {
            let (status, _, error) = api(server.http, method, path, Some(token), body.as_ref());
            assert_eq!(status, 403, "{method} {path} without the admin role");
            assert_shape("Error", &error);
        }
    }

    // Create with the admin JWT; the key publishes.
    let new =
        serde_json::to_value(NewKey { stream: "api-cam".into(), owner: None, private: false })
            .unwrap();
    let (status, response, created) =
        api(server.http, "POST", "/api/v1/keys", Some(&admin_jwt), Some(&new));
    assert_eq!(status, 201, "{created}");
    assert_shape("CreatedKey", &created);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let created: CreatedKey = typed(&created);
    assert_eq!(created.stream, "api-cam");
    let key = created.key;
    let (status, _, _) = api(server.http, "POST", "/api/v1/keys", Some(ADMIN_TOKEN), Some(&new));
    assert_eq!(status, 409, "a second key for one stream");
    let bad = serde_json::json!({"stream": "no spaces/allowed"});
    let (status, _, error) =
        api(server.http, "POST", "/api/v1/keys", Some(ADMIN_TOKEN), Some(&bad));
    assert_eq!(status, 400);
    assert_shape("Error", &error);
    let (status, _, listed) = api(server.http, "GET", "/api/v1/keys", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 200);
    assert_shape("KeyList", &listed);
    assert!(!listed.to_string().contains(&key));
    let listed: KeyList = typed(&listed);
    let streams: Vec<&str> = listed.keys.iter().map(|k| k.stream.as_str()).collect();
    assert!(streams.contains(&"api-cam") && streams.contains(&"demo"), "{listed:?}");
    // The CLI sees the same store.
    let cli = server.keys(&["list"]);
    assert!(String::from_utf8_lossy(&cli.stdout).contains("api-cam"));

    let url = format!("{}/{key}", server.rtmp_url());
    let mut publisher = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    server.wait_for_segments("api-cam", 1);

    // Revoke with the static token: the live publish ends as revoked.
    let (status, _, _) =
        api(server.http, "DELETE", "/api/v1/keys/api-cam", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 204);
    assert_eq!(publisher.exited_within(STARTUP).map(|_| ()), Some(()), "still publishing");
    let ended = testkit::wait_until(STARTUP, "the revocation in the stats", || {
        let cam = get_json(server.http, "/api/v1/streams/api-cam");
        (cam["publisher"]["stop_reason"] == "revoked").then_some(cam)
    });
    assert_shape("Stream", &ended);
    let (status, _, _) =
        api(server.http, "DELETE", "/api/v1/keys/api-cam", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 404, "revoked twice");
    let (ok, _) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(!ok, "a revoked key published");
    let log = server.log();
    assert!(!log.contains(&key) && !log.contains(ADMIN_TOKEN) && !log.contains(&admin_jwt));
}

/// With --admin-addr, the API and /metrics are only on that address, HLS only on the other.
#[test]
fn admin_addr_keeps_the_api_off_the_public_listener() {
    let server = Server::start("ops-addr", &["--admin-addr", "127.0.0.1:0"]);
    let marker = "admin API listening addr=";
    let admin: SocketAddr = testkit::wait_until(STARTUP, "the admin listener", || {
        let log = server.log();
        let at = log.find(marker)? + marker.len();
        log[at..].split_whitespace().next()?.parse().ok()
    });
    assert_eq!(http::get(server.http, "/api/v1/streams").status, 404);
    assert_eq!(http::get(server.http, "/metrics").status, 404);
    assert_eq!(http::get(admin, "/api/v1/streams").status, 200);
    assert_eq!(http::get(admin, "/metrics").status, 200);
    assert_eq!(http::get(admin, "/hls/demo/index.m3u8").status, 404);
    // HLS requests on the public side are counted on the admin side.
    let _ = http::get(server.http, "/hls/nothing/index.m3u8");
    let text = metrics(admin);
    assert!(
        metric(&text, "rtmp_hls_http_requests_total{kind=\"playlist\",status=\"404\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// on_publish alone (Nginx-RTMP's model): 2xx allows under the publishing name, 3xx renames,
/// 4xx refuses, no answer in time refuses; on_publish_done follows each publish; the form
/// carries Nginx-RTMP's fields.
#[test]
fn nginx_rtmp_hooks_decide_alone_rename_refuse_and_report_done() {
    let hooks = HookBackend::start("only");
    let server = Server::start(
        "ops-hooks-only",
        &[
            "--on-publish",
            &hooks.url("/on_publish"),
            "--on-publish-done",
            &hooks.url("/on_publish_done"),
            "--hook-mode",
            "only",
            "--hook-timeout",
            "1",
        ],
    );
    let small = clip(Clip::AvSmall);
    let (ok, messages) = publish_fast(&small, &format!("{}/allowed?user=al", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("allowed");
    let (ok, messages) = publish_fast(&small, &format!("{}/renamed", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("renamed-target");
    assert!(server.playlist("renamed").is_none(), "published under the old name too");
    // A redirect to an rtmp:// URL (Nginx-RTMP relays there) keeps the name.
    let (ok, messages) = publish_fast(&small, &format!("{}/relayed", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("relayed");
    server.wait_for_log("not supported: publishing under the original name");
    let (ok, _) = publish_fast(&small, &format!("{}/denied", server.rtmp_url()));
    assert!(!ok, "a publish the hook refused went through");
    // The publishing name's arguments cannot steer the backend (which keeps the last value
    // of a repeated field, as PHP, Django and Rails do) into allowing another name.
    let (ok, _) = publish_fast(&small, &format!("{}/victim?name=allowed", server.rtmp_url()));
    assert!(!ok, "the client's name= overrode the stream name in on_publish");
    assert!(server.playlist("victim").is_none());
    server.wait_for_log("refused by on_publish (HTTP 403)");
    let (ok, _) = publish_fast(&small, &format!("{}/slow", server.rtmp_url()));
    assert!(!ok, "a publish the hook did not answer went through");
    server.wait_for_log("the on_publish callback could not be asked");
    assert!(server.playlist("denied").is_none() && server.playlist("slow").is_none());

    let call = hooks.wait_for_call("publish", "allowed");
    assert_eq!((&call["_method"], &call["_path"]), (&"POST".into(), &"/on_publish".into()));
    assert_eq!(call["_content_type"], "application/x-www-form-urlencoded");
    assert_eq!(
        (&call["app"], &call["type"], &call["addr"]),
        (&"live".into(), &"live".into(), &"127.0.0.1".into())
    );
    assert_eq!(call["user"], "al", "the publishing name's arguments are fields");
    assert_eq!(call["tcurl"], format!("{}", server.rtmp_url()));
    assert!(call["flashver"].as_str().unwrap().contains("FMLE"), "{call}");
    assert!(call["clientid"].as_str().unwrap().parse::<u64>().is_ok(), "{call}");
    let done = hooks.wait_for_call("publish_done", "allowed");
    assert_eq!(done["_path"], "/on_publish_done");
    assert_eq!(done["clientid"], call["clientid"]);
    hooks.wait_for_call("publish_done", "renamed");
    assert!(
        !hooks.calls().iter().any(|c| c["call"] == "publish_done" && c["name"] == "denied"),
        "publish_done for a refused publish"
    );
}

/// on_publish in addition to the key store: a valid key still needs the hook's yes, and a
/// hook that cannot be reached refuses (fail closed).
#[test]
fn hooks_in_addition_to_keys_fail_closed() {
    let mut hooks = HookBackend::start("also");
    let server = Server::start(
        "ops-hooks-also",
        &["--on-publish", &hooks.url("/on_publish"), "--hook-method", "get"],
    );
    let key = server.add_key("cam");
    let small = clip(Clip::AvSmall);
    let (ok, _) = publish_fast(&small, &format!("{}/wrong-key", server.rtmp_url()));
    assert!(!ok);
    server.wait_for_log("publish refused: invalid stream key");
    assert!(
        !hooks.calls().iter().any(|c| c["name"] == "wrong-key"),
        "the hook was asked about a key the store refused"
    );
    // The backend refuses any name but "allowed", so the valid key is refused by the hook.
    let (ok, _) = publish_fast(&small, &format!("{}/{key}", server.rtmp_url()));
    assert!(!ok, "the hook's refusal was ignored");
    server.wait_for_log("refused by on_publish (HTTP 403)");
    let call = hooks.wait_for_call("publish", &key);
    assert_eq!((&call["_method"], &call["_path"]), (&"GET".into(), &"/on_publish".into()));
    let _ = hooks.child.kill();
    let _ = hooks.child.wait();
    let (ok, _) = publish_fast(&small, &format!("{}/{key}", server.rtmp_url()));
    assert!(!ok, "published with the hook down");
    server.wait_for_log("the on_publish callback could not be asked");
    assert!(server.playlist("cam").is_none());
    assert!(!server.log().contains(&key), "a key reached the log");
}

/// `rtmp-hls healthcheck` (the container health check) succeeds against a running server
/// and fails when nothing answers.
#[test]
fn healthcheck_reports_whether_the_server_answers() {
    let server = Server::start("ops-health", &[]);
    let check = |addr: String| {
        Command::new(env!("CARGO_BIN_EXE_rtmp-hls"))
            .env("RTMP_HLS_HTTP_ADDR", addr)
            .arg("healthcheck")
            .output()
            .unwrap()
    };
    let output = check(server.http.to_string());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let port = server.http.port();
    drop(server);
    let output = check(format!("0.0.0.0:{port}"));
    assert!(!output.status.success(), "healthy with no server");
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1"));
}

/// A client that ends its publish and publishes another stream on the same connection is
/// kicked in the second publish: the listener follows the new publish's kick channel (it
/// waits on one per publish, across reads that rest between messages).
#[test]
fn a_second_publish_on_one_connection_is_the_one_kicked() {
    use rtmp::amf0::Value as Amf;
    use testkit::rtmp::RawClient;
    let server = Server::start("ops-republish", &["--admin-token", ADMIN_TOKEN]);
    let (first, second) = (server.add_key("first"), server.add_key("second"));
    let tags = testkit::flv::media_tags(&clip(Clip::AvSmall));
    let mut client = RawClient::connect(server.rtmp);
    assert_eq!(client.start_publish("live", &first), "NetStream.Publish.Start");
    for tag in &tags {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    server.wait_for_segments("first", 1);
    // Unpublish and publish again in one write, so the server handles both in one read: the
    // publish changes without the connection task ever seeing none.
    let unpublish = [Amf::String("FCUnpublish".into()), Amf::Number(4.0), Amf::Null];
    let publish = [
        Amf::String("publish".into()),
        Amf::Number(5.0),
        Amf::Null,
        Amf::String(second.clone()),
        Amf::String("live".into()),
    ];
    let mut wire = Vec::new();
    for values in [&unpublish[..], &publish[..]] {
        let mut body = Vec::new();
        for value in values {
            rtmp::amf0::encode(value, &mut body);
        }
        client.writer.write(8, 0, 20, 1, &body, &mut wire);
    }
    client.send(&wire).unwrap();
    server.wait_for_endlist("first");
    for tag in &tags {
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
    }
    server.wait_for_segments("second", 1);
    let (status, _, _) =
        api(server.http, "DELETE", "/api/v1/streams/second/publisher", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 204);
    // Well under the 15 s no-media timeout, which would also close it.
    assert!(client.closed_within(std::time::Duration::from_secs(5)), "the kick did not end it");
    server.wait_for_endlist("second");
}

/// Merged reads on a real connection: after a segment closes, a live publisher's socket does
/// not wake the server for what it queues below the receive low-water mark. A small control
/// message sent then, with nothing after it, must still be read (the timer's read at the next
/// tick takes it): here an FCUnpublish on a connection that stays open ends the stream long
/// before the no-media timeout (60 s) would.
#[test]
fn a_message_below_the_low_water_mark_is_still_read() {
    use rtmp::amf0::Value as Amf;
    use testkit::rtmp::RawClient;
    let server = Server::start("ops-low-water", &["--no-media-timeout", "60"]);
    let key = server.add_key("quiet");
    let tags = testkit::flv::media_tags(&clip(Clip::Av720p30));
    let mut client = RawClient::connect(server.rtmp);
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Start");
    // In real time (the server measures the publisher's byte rate over a second before it
    // gathers), up to and including the keyframe at 4 s, which closes the second segment.
    let start = std::time::Instant::now();
    for tag in &tags {
        let due = start + std::time::Duration::from_millis(u64::from(tag.timestamp));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        client.media(tag.tag_type, tag.timestamp, &tag.data).unwrap();
        let keyframe = tag.tag_type == 9 && tag.data.first().is_some_and(|b| b >> 4 == 1);
        if keyframe && tag.timestamp >= 4000 {
            break;
        }
    }
    server.wait_for_segments("quiet", 2);
    // The next segment needs ~2 s more media: the mark is up. Within a tick of it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    client.command(1, &[Amf::String("FCUnpublish".into()), Amf::Number(4.0), Amf::Null]);
    server.wait_for_endlist("quiet");
    assert!(!client.closed_within(std::time::Duration::from_millis(10)), "the server closed it");
}
