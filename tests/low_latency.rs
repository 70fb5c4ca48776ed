//! fMP4 and low-latency HLS with real peers: ffmpeg publishes; ffmpeg and ffprobe read every
//! variant back; a plain HTTP/1.1 client makes the requests a low-latency player makes
//! (blocking reloads, the preload-hinted part while it is written, delta updates).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Publisher, Server, publish_fast, segments, tag};
use testkit::{Clip, clip, http};

/// The stream shapes a viewer meets, with the video frames each holds.
const SHAPES: [(&str, Clip); 4] = [
    ("av", Clip::Av720p30),
    ("audio", Clip::AudioOnlyAac),
    ("video", Clip::VideoOnly),
    ("mp3", Clip::AvMp3),
];

#[test]
fn every_shape_reads_back_cleanly_in_fmp4_and_low_latency() {
    for variant in ["fmp4", "low-latency"] {
        let server = Server::start(&format!("variant-{variant}"), &["--hls-variant", variant]);
        for (name, shape) in SHAPES {
            let key = server.add_key(name);
            let (ok, messages) =
                publish_fast(&clip(shape), &format!("{}/{key}", server.rtmp_url()));
            assert!(ok, "{variant} {name}: {messages}");
            let playlist = server.wait_for_endlist(name);
            assert!(tag(&playlist, "MAP").is_some(), "{variant} {name}: {playlist}");
            assert!(segments(&playlist).iter().all(|s| s.ends_with(".m4s")), "{playlist}");
            let (warnings, frames) = testkit::tools::decode(&server.playlist_url(name));
            assert!(warnings.is_empty(), "{variant} {name}: ffmpeg said {warnings}");
            assert_eq!(frames, shape.video_frames(), "{variant} {name}: frames decoded");
            let probe = testkit::tools::ffprobe(&server.playlist_url(name));
            let video = testkit::tools::stream(&probe, "video");
            assert_eq!(video.is_some(), shape.video_frames() > 0, "{variant} {name}: {probe}");
            assert!(
                shape == Clip::VideoOnly || testkit::tools::stream(&probe, "audio").is_some(),
                "{variant} {name}: no audio in {probe}"
            );
        }
    }
}

/// The URI of the preload-hinted part, and its media sequence number and part index.
fn hint(playlist: &str) -> (String, u64, u64) {
    let uri = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("no preload hint in {playlist}"))
        .trim_end_matches('"')
        .to_owned();
    let (_, rest) = uri.trim_end_matches(".m4s").split_once('-').unwrap();
    let (msn, part) = rest.split_once('.').unwrap();
    (uri.clone(), msn.parse().unwrap(), part.parse().unwrap())
}

#[test]
fn low_latency_blocks_reloads_and_the_hinted_part() {
    // An idle timeout shorter than a blocked reload may wait (see below).
    let server =
        Server::start("low-latency", &["--hls-variant", "low-latency", "--http-idle-timeout", "1"]);
    let key = server.add_key("ll");
    let _publisher =
        Publisher::start_looping(&clip(Clip::Av720p30), &format!("{}/{key}", server.rtmp_url()));
    let playlist = server.wait_for_segments("ll", 2);
    assert_eq!(tag(&playlist, "VERSION"), Some("9"), "{playlist}");
    // PART-TARGET is whole frames of the clip's 30 fps near --part-duration's 0.25 s: seven
    // counted 34 ms long (RTMP's millisecond timestamps are 33 and 34 ms apart); every part
    // is at most that (rfc8216bis §4.4.4.9) and, but for a segment's last, at least 85 %.
    assert_eq!(
        tag(&playlist, "SERVER-CONTROL"),
        Some("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.714,CAN-SKIP-UNTIL=12.0"),
        "{playlist}"
    );
    assert_eq!(tag(&playlist, "PART-INF"), Some("PART-TARGET=0.238"));
    let (mut parts, mut segment) = (0, Vec::new());
    for line in playlist.lines() {
        if let Some(attributes) = line.strip_prefix("#EXT-X-PART:") {
            let duration = attributes
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .and_then(|d| d.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert!(duration <= 0.238, "{line} in {playlist}");
            segment.push(duration);
            parts += 1;
        } else if line.starts_with("#EXTINF") {
            // A segment's last part may be shorter.
            segment.pop();
            let short = segment.iter().find(|&&d| d < 0.85 * 0.238);
            assert!(short.is_none(), "{short:?} in {playlist}");
            segment.clear();
        }
    }
    assert!(parts >= 8, "{playlist}");
    let init_uri =
        tag(&playlist, "MAP").unwrap().trim_start_matches("URI=\"").trim_end_matches('"');
    let init = http::get(server.http, &format!("/hls/ll/{init_uri}"));
    assert_eq!((init.status, init.header("content-type")), (200, Some("video/mp4")));

    // A blocking reload for the hinted part is answered once that part is complete.
    let (uri, msn, part) = hint(&playlist);
    let blocked =
        http::get(server.http, &format!("/hls/ll/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
    assert_eq!(blocked.status, 200);
    assert_eq!(blocked.header("cache-control"), Some("public, max-age=12"));
    let reloaded = blocked.text();
    assert!(
        reloaded.contains(&format!("URI=\"{uri}\""))
            && !reloaded.contains(&format!("HINT:TYPE=PART,URI=\"{uri}\"")),
        "{reloaded}"
    );

    // The part now hinted, asked for while it is written: sent whole once it ends, with its
    // length (RFC 8216bis §6.2.6: no byte of a part before all of it can go at the link's
    // speed), and with the init segment it is a file ffprobe reads.
    let (next, _, _) = hint(&reloaded);
    let streamed = http::get(server.http, &format!("/hls/ll/{next}"));
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("transfer-encoding"), None, "sent as it was written");
    let length = streamed.header("content-length").unwrap().parse::<usize>().unwrap();
    assert_eq!(length, streamed.body.len());
    let dir = std::env::temp_dir().join(format!("rtmp-hls-ll-part-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("part.mp4");
    std::fs::write(&file, [&init.body[..], &streamed.body[..]].concat()).unwrap();
    let probe = testkit::tools::ffprobe(file.to_str().unwrap());
    assert_eq!(testkit::tools::stream(&probe, "video").unwrap()["codec_name"], "h264", "{probe}");
    // Fetched again, complete: the same bytes, with a length.
    let again = http::get(server.http, &format!("/hls/ll/{next}"));
    assert_eq!(again.body, streamed.body);
    assert!(again.header("content-length").is_some());
    std::fs::remove_dir_all(&dir).unwrap();

    // A complete segment is exactly its parts.
    let playlist = server.playlist("ll").unwrap();
    let (segment, parts) = segments_with_parts(&playlist).pop().expect("a segment with parts");
    let joined: Vec<u8> = parts
        .iter()
        .flat_map(|part| http::get(server.http, &format!("/hls/ll/{part}")).body)
        .collect();
    assert_eq!(http::get(server.http, &format!("/hls/ll/{segment}")).body, joined);

    // A reload blocked until the segment after the one being written completes (2 to 4 s)
    // waits longer than the connection's idle timeout: it is answered, not cut off.
    let (_, open, _) = hint(&server.playlist("ll").unwrap());
    let later = http::get(server.http, &format!("/hls/ll/index.m3u8?_HLS_msn={}", open + 1));
    assert_eq!(later.status, 200);
    assert!(later.text().contains(&format!("-{}.m4s\n", open + 1)), "{}", later.text());
    // The same on a kept-alive connection, which is idle again once answered: the server
    // closes it at the idle timeout (read to its end here within 5 s, under the header
    // timeout's 10 s).
    let (_, open, _) = hint(&server.playlist("ll").unwrap());
    let mut kept = std::net::TcpStream::connect(server.http).unwrap();
    kept.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let request = format!("GET /hls/ll/index.m3u8?_HLS_msn={open} HTTP/1.1\r\nHost: x\r\n\r\n");
    std::io::Write::write_all(&mut kept, request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let ended = std::io::Read::read_to_end(&mut kept, &mut answer);
    assert!(ended.is_ok(), "the kept-alive connection was never closed: {ended:?}");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // Out of reach, malformed, and delta updates.
    let (_, open, _) = hint(&server.playlist("ll").unwrap());
    let ahead = http::get(server.http, &format!("/hls/ll/index.m3u8?_HLS_msn={}", open + 5));
    assert_eq!(ahead.status, 400);
    assert_eq!(http::get(server.http, "/hls/ll/index.m3u8?_HLS_part=1").status, 400);
    let delta = http::get(server.http, &format!("/hls/ll/index.m3u8?_HLS_msn={msn}&_HLS_skip=YES"));
    assert_eq!(delta.status, 200);
    assert!(delta.text().starts_with("#EXTM3U\n"));
}

/// The playlist's complete segments that list parts, with their parts' URIs.
fn segments_with_parts(playlist: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut parts = Vec::new();
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let uri = rest.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
            parts.push(uri.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let parts = std::mem::take(&mut parts);
            if !parts.is_empty() {
                found.push((line.to_owned(), parts));
            }
        }
    }
    found
}
