//! Streams published as renditions of one another (Nginx-RTMP's `hls_variant`): one ffmpeg
//! sends the clip as it is and a transcode of it with aligned keyframes, as an operator's
//! transcode does; the multivariant playlist lists both with figures measured from the
//! streams, ffprobe reads it, segment numbering lines up, and in low latency each rendition
//! reports the other's live edge. hls.js switches between them in `browser_playback.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{STARTUP, Server, segments};
use testkit::{http, tools};

/// An attribute of an EXT-X-STREAM-INF line.
fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split(',').next()
}

#[test]
fn renditions_get_a_multivariant_playlist_measured_from_the_streams() {
    let server = Server::start(
        "variants",
        &["--variant", "_hi", "--variant", "_lo", "--hls-variant", "low-latency"],
    );
    let (high, low) = (server.add_key("cam_hi"), server.add_key("cam_lo"));
    let _publisher = common::publish_renditions(&server, &high, &low);
    server.wait_for_segments("cam_hi", 3);
    server.wait_for_segments("cam_lo", 3);

    let master = http::get(server.http, "/hls/cam/index.m3u8");
    assert_eq!(master.status, 200);
    assert_eq!(master.header("content-type"), Some("application/vnd.apple.mpegurl"));
    let text = master.text();
    let inf: Vec<(&str, &str)> = text
        .lines()
        .zip(text.lines().skip(1))
        .filter(|(line, _)| line.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(inf.len(), 2, "{text}");
    assert_eq!(inf[0].1, "../cam_hi/index.m3u8");
    assert_eq!(inf[1].1, "../cam_lo/index.m3u8");
    assert_eq!(attribute(inf[0].0, "RESOLUTION"), Some("320x240"), "{text}");
    assert_eq!(attribute(inf[1].0, "RESOLUTION"), Some("160x120"), "{text}");
    for (line, _) in &inf {
        assert_eq!(attribute(line, "FRAME-RATE"), Some("25.000"), "{text}");
        let codecs = attribute(line, "CODECS").unwrap();
        assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{text}");
        let peak: u64 = attribute(line, "BANDWIDTH").unwrap().parse().unwrap();
        let average: u64 = attribute(line, "AVERAGE-BANDWIDTH").unwrap().parse().unwrap();
        assert!(average > 10_000 && average <= peak, "{text}");
    }
    let bandwidth = |i: usize| attribute(inf[i].0, "BANDWIDTH").unwrap().parse::<u64>().unwrap();
    assert!(bandwidth(0) > bandwidth(1), "{text}");
    // ffprobe reads the multivariant playlist and finds both renditions.
    let probe = tools::ffprobe(&format!("http://{}/hls/cam/index.m3u8", server.http));
    let widths: Vec<u64> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["width"].as_u64()).collect();
    assert!(widths.contains(&320) && widths.contains(&160), "{probe}");

    // Keyframes aligned by the encoder: segments line up, number for number.
    let edge = |stream: &str| {
        let playlist = server.playlist(stream).unwrap();
        let first: u64 = common::tag(&playlist, "MEDIA-SEQUENCE").unwrap().parse().unwrap();
        (first + segments(&playlist).len() as u64, common::durations(&playlist))
    };
    testkit::wait_until(STARTUP, "the renditions' segments to line up", || {
        let ((hi_next, hi_durations), (lo_next, lo_durations)) = (edge("cam_hi"), edge("cam_lo"));
        let same_tail = hi_durations
            .iter()
            .rev()
            .zip(lo_durations.iter().rev())
            .take(2)
            .all(|(a, b)| (a - b).abs() < 0.05);
        (hi_next == lo_next && same_tail).then_some(())
    });

    // Each low-latency rendition reports the other's live edge.
    let playlist = server.playlist("cam_hi").unwrap();
    let report = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-RENDITION-REPORT:"))
        .unwrap_or_else(|| panic!("no rendition report: {playlist}"));
    assert!(report.contains("URI=\"../cam_lo/index.m3u8\""), "{report}");
    assert!(report.contains("LAST-MSN=") && report.contains("LAST-PART="), "{report}");
    // A name with no renditions and no stream is still a 404.
    assert_eq!(http::get(server.http, "/hls/nothing/index.m3u8").status, 404);
}
