//! Enhanced RTMP with a real publisher: the static ffmpeg 7.0 of the pinned PyPI wheel
//! `imageio-ffmpeg` (the test command installs it; Debian's ffmpeg 5.1 cannot write E-RTMP)
//! encodes HEVC (libx265), AV1 (libaom) and VP9 (libvpx) and publishes them; Debian's ffmpeg
//! and ffprobe read every stream back from the HLS output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::{Server, ffmpeg7, segments, tag};

/// A video codec as ffmpeg 7 encodes it for the test: the encoder and its fast settings.
struct Encoding {
    name: &'static str,
    args: &'static [&'static str],
    /// What ffprobe calls it.
    probed: &'static str,
}

const HEVC: Encoding = Encoding {
    name: "hevc",
    args: &["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"],
    probed: "hevc",
};
const AV1: Encoding = Encoding {
    name: "av1",
    args: &["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8", "-row-mt", "1"],
    probed: "av1",
};
const VP9: Encoding = Encoding {
    name: "vp9",
    args: &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
    probed: "vp9",
};
/// Frames published: 4 s at 25 fps, a keyframe every second.
const FRAMES: u64 = 100;

/// Encodes 4 s of test picture and tone with `encoding` and AAC and publishes it to `url`
/// as fast as it encodes; returns whether ffmpeg succeeded and what it said.
fn publish(encoding: &Encoding, url: &str) -> (bool, String) {
    let output = Command::new(ffmpeg7())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "4", "-pix_fmt", "yuv420p", "-g", "25"])
        .args(encoding.args)
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg 7");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn hevc_av1_and_vp9_play_back_from_fmp4_and_low_latency() {
    for variant in ["fmp4", "low-latency"] {
        let server = Server::start(&format!("ertmp-{variant}"), &["--hls-variant", variant]);
        for encoding in [HEVC, AV1, VP9] {
            let name = encoding.name;
            let key = server.add_key(name);
            let (ok, said) = publish(&encoding, &format!("{}/{key}", server.rtmp_url()));
            assert!(ok, "{variant} {name}: ffmpeg 7 said {said}");
            let playlist = server.wait_for_endlist(name);
            assert!(tag(&playlist, "MAP").is_some(), "{variant} {name}: {playlist}");
            let url = server.playlist_url(name);
            let probe = testkit::tools::ffprobe(&url);
            let video = testkit::tools::stream(&probe, "video").expect("a video stream");
            assert_eq!(video["codec_name"], encoding.probed, "{variant}: {probe}");
            assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(320), Some(240)));
            assert_eq!(testkit::tools::stream(&probe, "audio").unwrap()["codec_name"], "aac");
            let (warnings, frames) = testkit::tools::decode(&url);
            assert!(warnings.is_empty(), "{variant} {name}: ffmpeg said {warnings}");
            assert_eq!(frames, FRAMES, "{variant} {name}: frames decoded");
        }
    }
}

/// HDR: ffmpeg 7 sends 10-bit HEVC tagged BT.2020 / PQ with its E-RTMP `colorInfo` metadata;
/// the fMP4 init segment's `hvc1` carries it as an `nclx` colour box, from the first init.
#[test]
fn hdr_colour_information_reaches_the_init_segment() {
    let server = Server::start("ertmp-hdr", &["--hls-variant", "fmp4"]);
    let key = server.add_key("hdr");
    let output = Command::new(ffmpeg7())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2"])
        .args(["-pix_fmt", "yuv420p10le", "-g", "25"])
        .args(HEVC.args)
        .args(["-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc"])
        .args(["-f", "flv", &format!("{}/{key}", server.rtmp_url())])
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg 7");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let playlist = server.wait_for_endlist("hdr");
    let map = tag(&playlist, "MAP").expect("EXT-X-MAP");
    let uri = map.trim_start_matches("URI=\"").trim_end_matches('"');
    let init = testkit::http::get(server.http, &format!("/hls/hdr/{uri}")).body;
    let at = init.windows(8).position(|w| w == b"colrnclx").expect("a colr box in hvc1");
    let fields = &init[at + 8..at + 15];
    // BT.2020 primaries (9), SMPTE ST 2084 transfer (16), BT.2020 non-constant matrix (9).
    assert_eq!(fields, [0, 9, 0, 16, 0, 9, 0], "{map}");
    let hvc1 = init.windows(4).position(|w| w == b"hvc1").unwrap();
    assert!(hvc1 < at, "the colour box is outside the sample entry");
}

/// MPEG-TS cannot carry HEVC here: the video is dropped with one log line, the audio plays.
#[test]
fn hevc_into_mpegts_keeps_the_audio_and_says_why_once() {
    let server = Server::start("ertmp-mpegts", &[]);
    let key = server.add_key("hevc");
    let (ok, said) = publish(&HEVC, &format!("{}/{key}", server.rtmp_url()));
    assert!(ok, "{said}");
    let playlist = server.wait_for_endlist("hevc");
    assert!(!segments(&playlist).is_empty());
    let probe = testkit::tools::ffprobe(&server.playlist_url("hevc"));
    assert!(testkit::tools::stream(&probe, "video").is_none(), "{probe}");
    assert_eq!(testkit::tools::stream(&probe, "audio").unwrap()["codec_name"], "aac");
    let log = server.log();
    assert_eq!(log.matches("HEVC video is not carried in MPEG-TS").count(), 1, "{log}");
}
