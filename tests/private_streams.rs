//! Private streams with real peers: ffmpeg publishes, AuthX (the platform's login library,
//! run by `tests/backend.py`) issues the viewers' tokens, a plain HTTP/1.1 client plays the
//! player's part (cookie, bearer, `?token=`, signed media URLs), and the stats API and the
//! web page's listing are read back. hls.js plays them in `browser_playback.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::services::backend;
use common::{Publisher, STARTUP, Server, segments};
use testkit::{Clip, clip, http};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const ADMIN: &str = "admin-token-for-the-tests";

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> http::Response {
    http::request_with(server.http, "GET", path, headers)
}

/// Waits until `stream`'s playlist, fetched with `headers`, lists a segment; returns it.
fn wait_for_playlist(server: &Server, stream: &str, headers: &[(&str, &str)]) -> String {
    let path = Server::playlist_path(stream);
    testkit::wait_until(STARTUP, &format!("a segment of {stream}"), || {
        let response = get(server, &path, headers);
        (response.status == 200 && !segments(&response.text()).is_empty()).then(|| response.text())
    })
}

/// Every URI a playlist lists: segment lines and `URI="…"` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut all = Vec::new();
    for line in playlist.lines() {
        if line.starts_with('#') {
            let mut rest = line;
            while let Some(at) = rest.find("URI=\"") {
                let value = &rest[at + 5..];
                let end = value.find('"').unwrap();
                all.push(value[..end].to_owned());
                rest = &value[end..];
            }
        } else if !line.is_empty() {
            all.push(line.to_owned());
        }
    }
    all
}

fn stream_names(server: &Server, headers: &[(&str, &str)]) -> Vec<String> {
    let body: serde_json::Value =
        serde_json::from_slice(&get(server, "/api/v1/streams", headers).body).unwrap();
    body["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().into()).collect()
}

#[test]
fn private_streams_need_the_platform_login_and_list_signed_media() {
    let server = Server::start(
        "private",
        &[
            "--jwt-secret",
            SECRET,
            "--viewer-claim",
            "streams",
            "--admin-token",
            ADMIN,
            "--hls-variant",
            "low-latency",
        ],
    );
    let output = server.keys(&["add", "hidden", "--private"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hidden_key = String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned();
    let listed = String::from_utf8(server.keys(&["list"]).stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("hidden") && l.contains("private")), "{listed}");
    let open_key = server.add_key("open");
    let clip = clip(Clip::AvSmall);
    let _hidden = Publisher::start_looping(&clip, &format!("{}/{hidden_key}", server.rtmp_url()));
    let _open = Publisher::start_looping(&clip, &format!("{}/{open_key}", server.rtmp_url()));
    // A publish token can make its stream private too.
    let token = backend(&["authx-private", SECRET, "user-9", "tokened"]);
    let _tokened = Publisher::start_looping(&clip, &format!("{}/{token}", server.rtmp_url()));

    let viewer = backend(&["authx-viewer", SECRET, "user-1", "hidden,tokened"]);
    let cookie = format!("theme=dark; access_token_cookie={viewer}");
    let playlist = wait_for_playlist(&server, "hidden", &[("Cookie", &cookie)]);
    wait_for_playlist(&server, "open", &[]);
    wait_for_playlist(&server, "tokened", &[("Cookie", &cookie)]);

    // Without a login, with a refresh token, with a login that does not list the stream:
    // refused, and nothing of the stream in the answer.
    let refresh = backend(&["authx-refresh", SECRET, "user-1", "hidden"]);
    let stranger = backend(&["authx-viewer", SECRET, "user-2", "open"]);
    let forged = backend(&["authx-viewer", "another-secret-of-at-least-32-bytes", "u", "hidden"]);
    let path = Server::playlist_path("hidden");
    for (headers, status) in [
        (vec![], 401),
        (vec![("Authorization", format!("Bearer {refresh}"))], 401),
        (vec![("Authorization", format!("Bearer {forged}"))], 401),
        (vec![("Cookie", format!("access_token_cookie={stranger}"))], 403),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = get(&server, &path, &headers);
        assert_eq!(response.status, status, "{headers:?}: {}", response.text());
        assert!(!response.text().contains("#EXT"), "{}", response.text());
        assert_eq!(response.header("cache-control"), Some("no-store"));
        if status == 401 {
            assert!(response.header("www-authenticate").unwrap().starts_with("Bearer"));
        }
    }
    assert_eq!(get(&server, &Server::playlist_path("tokened"), &[]).status, 401);

    // With the login: every URI listed (init, segments, parts, the hint) is signed, and no
    // shared cache keeps the playlist.
    let listed = uris(&playlist);
    assert!(listed.iter().any(|u| u.ends_with(".mp4") || u.contains(".mp4?")), "{playlist}");
    assert!(listed.iter().all(|u| u.contains("?exp=") && u.contains("&sig=")), "{playlist}");
    let answer = get(&server, &path, &[("Cookie", &cookie)]);
    assert!(answer.header("cache-control").unwrap().starts_with("private"), "{:?}", answer.headers);
    let bearer = format!("Bearer {viewer}");
    assert_eq!(get(&server, &path, &[("Authorization", &bearer)]).status, 200);
    assert_eq!(get(&server, &format!("{path}?token={viewer}"), &[]).status, 200);
    // A blocking reload with the token in the query waits and answers signed too.
    let msn = segments(&playlist).len() as u64
        + common::tag(&playlist, "MEDIA-SEQUENCE").unwrap().parse::<u64>().unwrap();
    let blocked = get(&server, &format!("{path}?token={viewer}&_HLS_msn={msn}&_HLS_part=0"), &[]);
    assert_eq!(blocked.status, 200);
    assert!(uris(&blocked.text()).iter().all(|u| u.contains("&sig=")), "{}", blocked.text());

    // Media: signed URLs work without a credential; unsigned need one; a changed signature
    // or another stream's signature is refused.
    let init = listed.iter().find(|u| u.contains(".mp4?")).unwrap().clone();
    let part = playlist.lines().find(|l| l.starts_with("#EXT-X-PART:")).unwrap();
    let part = uris(part).remove(0);
    for uri in [init, segments(&playlist)[0].to_owned(), part] {
        let response = get(&server, &format!("/hls/hidden/{uri}"), &[]);
        assert_eq!(response.status, 200, "{uri}: {}", response.text());
        assert!(!response.body.is_empty());
        // Kept by the viewer's own cache only, never a shared one.
        let cache = response.header("cache-control").unwrap();
        assert!(cache.starts_with("private,") && cache.contains("immutable"), "{uri}: {cache}");
    }
    let segment = segments(&playlist)[0].to_owned();
    let (file, query) = segment.split_once('?').unwrap();
    assert_eq!(get(&server, &format!("/hls/hidden/{segment}"), &[]).status, 200);
    assert_eq!(get(&server, &format!("/hls/hidden/{file}"), &[]).status, 401);
    assert_eq!(get(&server, &format!("/hls/hidden/{file}"), &[("Cookie", &cookie)]).status, 200);
    let tampered = query.replace("exp=", "exp=1");
    assert_eq!(get(&server, &format!("/hls/hidden/{file}?{tampered}"), &[]).status, 403);
    let tokened = wait_for_playlist(&server, "tokened", &[("Cookie", &cookie)]);
    let other_file = segments(&tokened)[0].split_once('?').unwrap().0.to_owned();
    let borrowed = get(&server, &format!("/hls/tokened/{other_file}?{query}"), &[]);
    assert_eq!(borrowed.status, 403, "another stream's signature was accepted");
    // A public stream needs nothing.
    let open = wait_for_playlist(&server, "open", &[]);
    assert!(uris(&open).iter().all(|u| !u.contains('?')), "{open}");

    // Listings: private streams only with admin credentials, and not on the web page.
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(stream_names(&server, &[]), ["open"]);
    let all = stream_names(&server, &[("Authorization", &admin)]);
    assert_eq!(all, ["hidden", "open", "tokened"]);
    assert_eq!(get(&server, "/api/v1/streams/hidden", &[]).status, 404);
    let detail: serde_json::Value = serde_json::from_slice(
        &get(&server, "/api/v1/streams/hidden", &[("Authorization", &admin)]).body,
    )
    .unwrap();
    assert_eq!(detail["private"], true);
    let web = get(&server, "/web/streams.json", &[]).text();
    assert!(web.contains("open") && !web.contains("hidden") && !web.contains("tokened"), "{web}");

    // The operator makes it public, live: open to anyone at once; private again: closed.
    let change = |private: bool| {
        let body = format!("{{\"private\": {private}}}");
        http::request_full(
            server.http,
            "PATCH",
            "/api/v1/keys/hidden",
            &[("Authorization", &admin), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .status
    };
    assert_eq!(change(false), 204);
    let open_now = get(&server, &path, &[]);
    assert_eq!(open_now.status, 200);
    assert!(stream_names(&server, &[]).contains(&"hidden".to_owned()));
    // A reload held while the stream was public is refused if it turns private meanwhile.
    let next = segments(&open_now.text()).len() as u64
        + common::tag(&open_now.text(), "MEDIA-SEQUENCE").unwrap().parse::<u64>().unwrap()
        + 1;
    let held_path = format!("{path}?_HLS_msn={next}");
    let addr = server.http;
    let held = std::thread::spawn(move || http::request_with(addr, "GET", &held_path, &[]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(change(true), 204);
    let held = held.join().unwrap();
    assert_eq!(held.status, 401, "{}", held.text());
    assert_eq!(get(&server, &path, &[]).status, 401);
    // The CLI changes the key; the live publish follows at its next key re-check.
    assert!(server.keys(&["visibility", "hidden", "public"]).status.success());
    testkit::wait_until(STARTUP, "the CLI's change to reach the live stream", || {
        (get(&server, &path, &[]).status == 200).then_some(())
    });
}

/// Viewers are counted by session: one login on two players is one viewer; anonymous
/// players by address and user agent.
#[test]
fn viewers_are_counted_by_login_else_by_address_and_player() {
    let server = Server::start("sessions", &["--jwt-secret", SECRET]);
    let key = server.add_key("counted");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    wait_for_playlist(&server, "counted", &[("User-Agent", "anonymous-a")]);
    let alice = backend(&["authx-viewer", SECRET, "alice", "counted"]);
    let bob = backend(&["authx-viewer", SECRET, "bob", "counted"]);
    let alice_cookie = format!("access_token_cookie={alice}");
    let alice_bearer = format!("Bearer {alice}");
    let path = Server::playlist_path("counted");
    for headers in [
        vec![("Cookie", alice_cookie.as_str()), ("User-Agent", "phone")],
        vec![("Authorization", alice_bearer.as_str()), ("User-Agent", "laptop")],
        vec![("Cookie", &format!("access_token_cookie={bob}")), ("User-Agent", "phone")],
        vec![("User-Agent", "anonymous-a")],
        vec![("User-Agent", "anonymous-b")],
        vec![("User-Agent", "anonymous-a")],
        // A token that does not verify is no session: counted by address and player.
        vec![("Cookie", "access_token_cookie=eyJ.forged.x"), ("User-Agent", "anonymous-a")],
    ] {
        assert_eq!(get(&server, &path, &headers).status, 200, "{headers:?}");
    }
    let stream: serde_json::Value =
        serde_json::from_slice(&get(&server, "/api/v1/streams/counted", &[]).body).unwrap();
    assert_eq!(stream["viewers"], 4, "alice, bob, two anonymous players: {stream}");
    let metrics = get(&server, "/metrics", &[]).text();
    assert!(metrics.lines().any(|l| l == "rtmp_hls_viewers{stream=\"counted\"} 4"), "{metrics}");
}
