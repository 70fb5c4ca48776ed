//! RTMPS ingest: Debian's ffmpeg (GnuTLS) publishes over `rtmps://` with a certificate the
//! test makes, and its stream plays back frame for frame; a client speaking plain RTMP to the
//! RTMPS port is closed without harm to a publish in progress on the RTMP port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Publisher, publish_fast, segments};
use testkit::{Clip, clip};

#[test]
fn ffmpeg_publishes_over_rtmps_and_plain_rtmp_on_that_port_is_closed() {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-rtmps-{}", std::process::id()));
    let (server, rtmps, _) = common::rtmps_server("rtmps", &dir);

    // A publish over plain RTMP runs throughout.
    let plain_key = server.add_key("plain");
    let _plain = Publisher::start_looping(
        &clip(Clip::AvSmall),
        &format!("{}/{plain_key}", server.rtmp_url()),
    );
    server.wait_for_segments("plain", 1);

    // RTMP's C0+C1 where a TLS ClientHello belongs: the server closes the connection.
    let mut wrong = TcpStream::connect(rtmps).unwrap();
    wrong.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    wrong.write_all(&c0c1).unwrap();
    let mut answer = Vec::new();
    let closed = wrong.read_to_end(&mut answer);
    assert!(closed.is_ok() || answer.is_empty(), "{closed:?}");
    assert!(
        !answer.starts_with(&[3]),
        "the RTMPS port answered an RTMP handshake: {:?}",
        &answer[..answer.len().min(16)]
    );
    server.wait_for_log("TLS handshake failed");

    // ffmpeg over rtmps:// (it does not verify the certificate by default).
    let shape = Clip::Av720p30;
    let key_tls = server.add_key("secure");
    let url = format!("rtmps://localhost:{}/live/{key_tls}", rtmps.port());
    let (ok, said) = publish_fast(&clip(shape), &url);
    assert!(ok, "ffmpeg over RTMPS: {said}");
    server.wait_for_endlist("secure");
    let (warnings, frames) = testkit::tools::decode(&server.playlist_url("secure"));
    assert!(warnings.is_empty(), "ffmpeg said {warnings}");
    assert_eq!(frames, shape.video_frames(), "frames decoded from the RTMPS publish");

    // The RTMP publish was not disturbed.
    let last = |playlist: &str| segments(playlist).last().map(|s| (*s).to_owned());
    let before = last(&server.playlist("plain").unwrap());
    testkit::wait_until(Duration::from_secs(20), "a new segment of plain", || {
        server.playlist("plain").filter(|p| last(p) != before)
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
