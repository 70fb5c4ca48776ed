//! Publish authorisation with real peers: keys in a real MongoDB-wire server (SecantusDB),
//! written by the CLI and by the backend's own snippet; publish tokens issued by AuthX; forged
//! tokens; takeover between two real ffmpeg publishers; revocation; the per-address limiter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::services::{MongoServer, backend};
use common::{Publisher, STARTUP, Server, keys_cli, publish_fast, segments};
use testkit::rtmp::RawClient;
use testkit::{Clip, clip, http};

/// Within this, a revoked key's live publish must have ended (docs/keys.md promises 5 s).
const REVOCATION_BOUND: Duration = Duration::from_secs(8);

fn mongo_server(name: &str, mongo: &MongoServer, extra: &[&str]) -> Server {
    let uri = mongo.uri();
    let mut args = vec!["--mongo-uri", uri.as_str(), "--auth-timeout", "2"];
    args.extend_from_slice(extra);
    Server::start(name, &args)
}

fn cli_add(server: &Server, mongo: &MongoServer, stream: &str) -> String {
    let output = keys_cli(
        &server.data_dir,
        &["add", stream, "--owner", "user-7", "--mongo-uri", &mongo.uri()],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned()
}

#[test]
fn keys_in_mongodb_from_the_cli_and_from_the_backend_publish() {
    let mongo = MongoServer::start("keys");
    let server = mongo_server("mongo-keys", &mongo, &[]);
    assert!(
        !server.stdout().contains("Stream Key:"),
        "no demo key is made when MongoDB holds the keys"
    );

    let key = cli_add(&server, &mongo, "from-cli");
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("from-cli");

    let key = backend(&["insert-key", &mongo.uri(), "from-backend", "user-9"]);
    let (ok, messages) =
        publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("from-backend");
    let log = server.wait_for_log("owner=user-9");
    assert!(!log.contains(&key), "a key reached the log");
    // The server notes when a key was last used (in the background).
    testkit::wait_until(STARTUP, "last_used_at set", || {
        let used = backend(&["last-used", &mongo.uri(), "from-backend"]);
        (used.trim() != "never").then_some(())
    });

    let list = String::from_utf8(
        keys_cli(&server.data_dir, &["list", "--mongo-uri", &mongo.uri()]).stdout,
    )
    .unwrap();
    assert!(
        list.contains("from-cli") && list.contains("owner user-7") && list.contains("from-backend"),
        "{list}"
    );
    assert!(!list.contains(&key));
}

#[test]
fn revoking_a_key_ends_its_live_publish_and_refuses_the_next() {
    let mongo = MongoServer::start("revoke");
    let server = mongo_server("mongo-revoke", &mongo, &[]);
    for (stream, revoke_with_cli) in [("revoked-by-cli", true), ("revoked-by-backend", false)] {
        let key = backend(&["insert-key", &mongo.uri(), stream, "user-1"]);
        let url = format!("{}/{key}", server.rtmp_url());
        let publisher = Publisher::start_looping(&clip(Clip::AvSmall), &url);
        server.wait_for_segments(stream, 1);
        if revoke_with_cli {
            let output =
                keys_cli(&server.data_dir, &["revoke", stream, "--mongo-uri", &mongo.uri()]);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        } else {
            backend(&["revoke", &mongo.uri(), stream]);
        }
        let ended = testkit::wait_until(REVOCATION_BOUND, "the revoked publish to end", || {
            server.playlist(stream).filter(|p| p.contains("#EXT-X-ENDLIST"))
        });
        assert!(!segments(&ended).is_empty());
        assert_eq!(server.wait_for_event("publish_stopped", stream)["reason"], "revoked");
        let (ok, messages) = publisher.wait();
        assert!(!ok, "ffmpeg kept publishing with a revoked key: {messages}");
        let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
        assert!(!ok && messages.contains("invalid stream key"), "{messages}");
    }
}

/// With keys in MongoDB, revoked token ids are there too (collection `revoked_tokens`).
#[test]
fn revoked_token_ids_live_in_mongodb() {
    const SECRET: &str = "a-shared-secret-of-32-bytes-min!";
    let mongo = MongoServer::start("tokens");
    let server = mongo_server("mongo-tokens", &mongo, &["--jwt-secret", SECRET]);
    let token = backend(&["authx", SECRET, "user-1", "mongo-token"]);
    let url = format!("{}/{token}", server.rtmp_url());
    let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(ok, "{messages}");
    let claims: serde_json::Value = serde_json::from_str(&backend(&["claims", &token])).unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let output = keys_cli(&server.data_dir, &["revoke-token", jti, "--mongo-uri", &mongo.uri()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(!ok && messages.contains("publish token was revoked"), "{messages}");
}

#[test]
fn mongodb_down_fails_closed_and_recovers_without_a_restart() {
    let mut mongo = MongoServer::start("down");
    let server = mongo_server("mongo-down", &mongo, &[]);
    let key = backend(&["insert-key", &mongo.uri(), "resilient", "user-1"]);
    let url = format!("{}/{key}", server.rtmp_url());

    mongo.stop();
    let (ok, messages) = publish_fast(&clip(Clip::AvSmall), &url);
    assert!(!ok, "a publish was accepted without checking its key");
    assert!(messages.contains("cannot be checked right now"), "{messages}");
    server.wait_for_log("key store unavailable");

    mongo.resume();
    testkit::wait_until(Duration::from_secs(30), "publishing to work again", || {
        let (ok, _) = publish_fast(&clip(Clip::AvSmall), &url);
        ok.then_some(())
    });
    server.wait_for_endlist("resilient");
}

#[test]
fn authx_tokens_publish_their_stream_and_bad_tokens_are_refused() {
    const SECRET: &str = "a-shared-secret-of-32-bytes-min!";
    let server = Server::start("jwt-hs", &["--jwt-secret", SECRET]);
    let url = |key: &str| format!("{}/{key}", server.rtmp_url());
    let media = clip(Clip::AvSmall);

    let token = backend(&["authx", SECRET, "user-42", "tokened"]);
    let (ok, messages) = publish_fast(&media, &url(&token));
    assert!(ok, "{messages}");
    server.wait_for_endlist("tokened");
    server.wait_for_log("owner=user-42");
    let (ok, messages) = publish_fast(&media, &url(&format!("tokened?token={token}")));
    assert!(ok, "{messages}");

    let refusals = [
        (backend(&["authx-expired", SECRET, "user-42", "tokened"]), "publish token expired"),
        (
            backend(&["authx", "another-secret-of-32-bytes-long!", "user-42", "tokened"]),
            "signature is invalid",
        ),
        (backend(&["forge-none", "tokened"]), "publish token"),
        (format!("other?token={token}"), "publish token is for another stream"),
    ];
    for (key, reason) in refusals {
        let (ok, messages) = publish_fast(&media, &url(&key));
        assert!(!ok, "{reason}: accepted");
        assert!(messages.contains(reason), "expected {reason:?}: {messages}");
    }
    assert!(server.playlist("other").is_none());
    let log = server.log();
    assert!(!log.contains(&token), "a token reached the log");
}

/// Tokens scoped to this service (--jwt-audience, --jwt-admin-audience, --jwt-issuer): the
/// publish token docs/keys.md mints publishes; the platform's login token naming the same
/// stream does not, nor does a publish token administer or an admin token publish; revoking
/// a publish token's id (admin API, CLI) ends the live publish it started and refuses it.
#[test]
fn scoped_tokens_publish_and_revoked_token_ids_end_their_publish() {
    const SECRET: &str = "a-shared-secret-of-32-bytes-min!";
    let scope = [
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "rtmp-hls:publish",
        "--jwt-admin-audience",
        "rtmp-hls:admin",
        "--jwt-issuer",
        "platform",
    ];
    let server = Server::start("jwt-scoped", &scope);
    let url = |key: &str| format!("{}/{key}", server.rtmp_url());
    let media = clip(Clip::AvSmall);
    let token = backend(&["authx", SECRET, "user-42", "scoped"]);
    let login = backend(&["authx-login", SECRET, "user-42", "scoped"]);
    let admin = backend(&["authx-role", SECRET, "ops", "admin", "rtmp-hls:admin", "platform"]);
    let admin_for_publishing =
        backend(&["authx-role", SECRET, "ops", "admin", "rtmp-hls:publish", "platform"]);

    let (ok, messages) = publish_fast(&media, &url(&login));
    assert!(
        !ok && messages.contains("publish token has no"),
        "a login token published: {messages}"
    );
    let (ok, _) = publish_fast(&media, &url(&admin));
    assert!(!ok, "an admin token published");
    let keys = |token: &str| {
        let bearer = format!("Bearer {token}");
        http::request_full(server.http, "GET", "/api/v1/keys", &[("Authorization", &bearer)], b"")
            .status
    };
    assert_eq!(keys(&admin), 200);
    assert_eq!(keys(&token), 401, "a publish token administers");
    assert_eq!(keys(&admin_for_publishing), 401, "an admin token for the wrong audience");

    // A live publish with the token; its id revoked through the API ends it.
    let publisher = Publisher::start_looping(&media, &url(&token));
    server.wait_for_segments("scoped", 1);
    let claims: serde_json::Value = serde_json::from_str(&backend(&["claims", &token])).unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let bearer = format!("Bearer {admin}");
    let path = format!("/api/v1/tokens/{jti}");
    let revoked =
        http::request_full(server.http, "DELETE", &path, &[("Authorization", &bearer)], b"");
    assert_eq!(revoked.status, 204);
    let ended = testkit::wait_until(REVOCATION_BOUND, "the revoked token's publish to end", || {
        server.playlist("scoped").filter(|p| p.contains("#EXT-X-ENDLIST"))
    });
    assert!(!segments(&ended).is_empty());
    assert_eq!(server.wait_for_event("publish_stopped", "scoped")["reason"], "revoked");
    let (ok, _) = publisher.wait();
    assert!(!ok, "ffmpeg kept publishing with a revoked token");
    let (ok, messages) = publish_fast(&media, &url(&token));
    assert!(!ok && messages.contains("revoked"), "{messages}");

    // Another token of the stream, revoked with the CLI before it is used.
    let second = backend(&["authx", SECRET, "user-42", "scoped"]);
    let claims: serde_json::Value = serde_json::from_str(&backend(&["claims", &second])).unwrap();
    let output = keys_cli(&server.data_dir, &["revoke-token", claims["jti"].as_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (ok, messages) = publish_fast(&media, &url(&second));
    assert!(!ok && messages.contains("revoked"), "{messages}");
    assert!(!server.log().contains(&token), "a token reached the log");
}

#[test]
fn rs256_tokens_verify_with_the_public_key_and_hs_rs_confusion_fails() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    backend(&["gen-rsa", dir.to_str().unwrap()]);
    let public = dir.join("public.pem");
    let server = Server::start("jwt-rs", &["--jwt-public-key", public.to_str().unwrap()]);
    let media = clip(Clip::AvSmall);
    let token = backend(&["rs256", dir.join("private.pem").to_str().unwrap(), "signed"]);
    let (ok, messages) = publish_fast(&media, &format!("{}/{token}", server.rtmp_url()));
    assert!(ok, "{messages}");
    server.wait_for_endlist("signed");
    // HS256 signed with the public key's bytes as the secret: the classic confusion attack.
    let forged = backend(&["forge-hs256", public.to_str().unwrap(), "signed"]);
    let (ok, messages) = publish_fast(&media, &format!("{}/{forged}", server.rtmp_url()));
    assert!(!ok, "HS/RS confusion accepted");
    assert!(messages.contains("publish token"), "{messages}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_publisher_takes_the_stream_over_and_the_playlist_continues() {
    let server = Server::start("takeover", &[]);
    let key = server.add_key("relay");
    let url = format!("{}/{key}", server.rtmp_url());
    let mut first = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    let before = server.wait_for_segments("relay", 2);
    let second = Publisher::start_looping(&clip(Clip::Av720p30), &url);
    let exited = first.exited_within(Duration::from_secs(20));
    assert_eq!(exited, Some(false), "the first publisher was not disconnected");
    assert_eq!(server.wait_for_event("publish_stopped", "relay")["reason"], "taken_over");
    let after =
        testkit::wait_until(Duration::from_secs(20), "segments of the new publisher", || {
            server.playlist("relay").filter(|p| {
                p.contains("#EXT-X-DISCONTINUITY") && segments(p).len() > segments(&before).len()
            })
        });
    assert!(!after.contains("#EXT-X-ENDLIST"));
    assert_eq!(
        segments(&after)[0],
        segments(&before)[0],
        "the playlist restarted instead of continuing"
    );
    drop(second);
}

#[test]
fn failed_attempts_are_limited_per_address_before_any_lookup() {
    let mut mongo = MongoServer::start("limiter");
    let server = mongo_server(
        "limiter",
        &mongo,
        &["--auth-failure-burst", "5", "--auth-failures-per-minute", "1"],
    );
    let key = backend(&["insert-key", &mongo.uri(), "guarded", "user-1"]);
    for _ in 0..5 {
        let mut client = RawClient::connect(server.rtmp);
        assert_eq!(client.start_publish("live", "wrong-guess"), "NetStream.Publish.BadName");
    }
    // Over the limit: refused without asking the database (which is down, and would say so).
    mongo.stop();
    let mut client = RawClient::connect(server.rtmp);
    assert_eq!(client.start_publish("live", &key), "NetStream.Publish.Failed");
    let log = server.wait_for_log("too many failed publish attempts");
    assert!(!log.contains("key store unavailable"), "the database was asked: {log}");
}
