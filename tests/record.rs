//! Recording with real peers: ffmpeg publishes, ffprobe reads the fragmented MP4 on disk (a
//! finished one, and one cut by kill -9 of the server) and the VOD playlist over HTTP (byte
//! ranges), the Nginx-RTMP `on_record_done` callback reaches a real HTTP backend, and a
//! directory that cannot be written costs the live stream nothing and is written again once
//! it can be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::services::HookBackend;
use common::{Publisher, STARTUP, Server};
use testkit::{Clip, clip, http, tools};

fn record_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtmp-hls-rec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The MP4 recordings of `stream` under `dir`.
fn recordings(dir: &Path, stream: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(stream))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "mp4"));
    files.sort();
    files
}

fn duration_of(probe: &serde_json::Value) -> f64 {
    probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_publish_is_recorded_as_fragmented_mp4_with_a_vod_playlist() {
    let dir = record_dir("done");
    let hooks = HookBackend::start("record");
    let on_done = hooks.url("/record_done");
    let server = Server::start(
        "record",
        &["--record-dir", dir.to_str().unwrap(), "--on-record-done", &on_done],
    );
    let key = server.add_key("cam");
    // The 4 s clip, published in real time; ffmpeg unpublishes at its end.
    let (ok, said) =
        Publisher::start(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url())).wait();
    assert!(ok, "{said}");
    let done = server.wait_for_event("record_done", "cam");
    assert!(done["bytes"].as_u64().unwrap() > 50_000, "{done}");
    assert!(done["duration_ms"].as_u64().unwrap() >= 3000, "{done}");
    assert_eq!(done["failures"], 0);
    let file = &recordings(&dir, "cam")[0];
    assert_eq!(done["files"][0], format!("cam/{}", file.file_name().unwrap().to_str().unwrap()));

    // On disk: one fragmented MP4 with both tracks, the clip's length.
    let probe = tools::ffprobe(file.to_str().unwrap());
    assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264");
    assert_eq!(tools::stream(&probe, "audio").unwrap()["codec_name"], "aac");
    assert!((duration_of(&probe) - 4.0).abs() < 0.5, "{probe}");
    // Over HTTP: the VOD playlist lists it by byte ranges, and players read it so.
    let name = file.file_stem().unwrap().to_str().unwrap();
    let playlist = http::get(server.http, &format!("/recordings/cam/{name}.m3u8")).text();
    assert!(
        playlist.contains("#EXT-X-BYTERANGE:") && playlist.ends_with("#EXT-X-ENDLIST\n"),
        "{playlist}"
    );
    let url = format!("http://{}/recordings/cam/{name}.m3u8", server.http);
    let (errors, frames) = tools::decode_at(&url, "error");
    assert!(errors.trim().is_empty(), "{errors}");
    assert!(frames >= 90, "{frames} frames of the 4 s clip at 25 fps");
    let ranged = http::request_with(
        server.http,
        "GET",
        &format!("/recordings/cam/{name}.mp4"),
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body.len(), 100);
    assert!(ranged.header("content-range").unwrap().starts_with("bytes 0-99/"));
    assert_eq!(http::get(server.http, "/recordings/cam/..%2Fkeys.json").status, 404);

    // The Nginx-RTMP callback, with the file's path.
    let records: Vec<_> = server
        .events()
        .into_iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("record_"))
        .collect();
    common::services::assert_valid_events(&records);
    let call = hooks.wait_for_call("record_done", "cam");
    assert_eq!(call["path"], file.to_str().unwrap(), "{call}");
    assert_eq!(call["app"], "live");
}

#[test]
fn a_recording_cut_by_kill_9_is_readable() {
    let dir = record_dir("killed");
    let server = Server::start("record-kill", &["--record-dir", dir.to_str().unwrap()]);
    let key = server.add_key("cam");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("cam", 3);
    server.kill9();
    let file = &recordings(&dir, "cam")[0];
    let probe = tools::ffprobe(file.to_str().unwrap());
    assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264");
    assert!(duration_of(&probe) >= 2.0, "{probe}");
    let (errors, frames) = tools::decode_at(file.to_str().unwrap(), "error");
    assert!(frames >= 50, "{frames} frames: {errors}");
}

#[test]
fn an_unwritable_directory_costs_the_stream_nothing_and_recording_resumes() {
    let dir = record_dir("blocked");
    std::fs::create_dir_all(&dir).unwrap();
    // The stream's directory cannot be made: a file stands where it would be.
    std::fs::write(dir.join("cam"), b"in the way").unwrap();
    let server = Server::start("record-blocked", &["--record-dir", dir.to_str().unwrap()]);
    let key = server.add_key("cam");
    let _publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    let failed = server.wait_for_event("record_failed", "cam");
    assert!(!failed["error"].as_str().unwrap().is_empty(), "{failed}");
    common::services::assert_valid_events(&[failed]);
    server.wait_for_segments("cam", 3);
    assert_eq!(
        server.log().matches("recording failed").count(),
        1,
        "one line, not one per segment"
    );
    let metrics = http::get(server.http, "/metrics").text();
    assert!(metrics.lines().any(|l| l.starts_with("rtmp_hls_record_failures_total ")), "{metrics}");
    // The way is cleared: the recording resumes at a next segment, in a file of its own.
    std::fs::remove_file(dir.join("cam")).unwrap();
    let file = testkit::wait_until(STARTUP, "the recording to resume", || {
        recordings(&dir, "cam")
            .into_iter()
            .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 10_000))
    });
    assert!(file.exists());
}

/// `--record-format flv`: the tags as the encoder sent them, as Nginx-RTMP records.
#[test]
fn flv_recordings_are_what_the_encoder_sent() {
    let dir = record_dir("flv");
    let server = Server::start(
        "record-flv",
        &["--record-dir", dir.to_str().unwrap(), "--record-format", "flv"],
    );
    let key = server.add_key("cam");
    let (ok, said) =
        Publisher::start(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url())).wait();
    assert!(ok, "{said}");
    let done = server.wait_for_event("record_done", "cam");
    let file = PathBuf::from(&dir).join(done["files"][0].as_str().unwrap());
    assert_eq!(file.extension().unwrap(), "flv");
    let probe = tools::ffprobe(file.to_str().unwrap());
    assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264");
    assert_eq!(tools::stream(&probe, "audio").unwrap()["codec_name"], "aac");
    assert!((duration_of(&probe) - 4.0).abs() < 0.5, "{probe}");
    let (errors, frames) = tools::decode_at(file.to_str().unwrap(), "error");
    assert!(errors.trim().is_empty() && frames >= 90, "{frames} frames: {errors}");
    let name = file.file_name().unwrap().to_str().unwrap();
    let served = http::get(server.http, &format!("/recordings/cam/{name}"));
    assert_eq!((served.status, served.header("content-type")), (200, Some("video/x-flv")));
    assert_eq!(served.body.len() as u64, std::fs::metadata(&file).unwrap().len());
}

/// `--record-streams marked`: only streams whose key says `record: true` are recorded.
#[test]
fn only_marked_streams_are_recorded_when_asked() {
    let dir = record_dir("marked");
    let server = Server::start(
        "record-marked",
        &["--record-dir", dir.to_str().unwrap(), "--record-streams", "marked"],
    );
    let (marked, plain) = (server.add_key("marked"), server.add_key("plain"));
    assert!(server.keys(&["record", "marked", "on"]).status.success());
    for key in [&marked, &plain] {
        let (ok, said) =
            common::publish_fast(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
        assert!(ok, "{said}");
    }
    server.wait_for_event("record_done", "marked");
    server.wait_for_event("publish_stopped", "plain");
    assert_eq!(recordings(&dir, "marked").len(), 1);
    assert!(recordings(&dir, "plain").is_empty());
    let listed = String::from_utf8(server.keys(&["list"]).stdout).unwrap();
    assert!(listed.contains("marked"), "{listed}");
}

/// A recorded stream made private while it is live goes on in a new file marked private,
/// from its next keyframe: what was recorded while it was public stays served, what was
/// recorded after never is, even once the server has forgotten the stream.
#[test]
fn a_stream_made_private_while_recorded_goes_on_in_a_private_file() {
    let dir = record_dir("private");
    let server = Server::start(
        "record-private",
        &["--record-dir", dir.to_str().unwrap(), "--ended-ttl", "1", "--reconnect-window", "0"],
    );
    let key = server.add_key("cam");
    let publisher =
        Publisher::start_looping(&clip(Clip::AvSmall), &format!("{}/{key}", server.rtmp_url()));
    server.wait_for_segments("cam", 2);
    assert!(server.keys(&["visibility", "cam", "private"]).status.success());
    // The public part ends when the publish sees the change (its next key re-check).
    let public = server.wait_for_event("record_done", "cam");
    server.wait_for_log("its recording goes on in a new file");
    // Private now: its playlist is not open to the test; the private file shows progress.
    testkit::wait_until(STARTUP, "two segments recorded in private", || {
        let files = std::fs::read_dir(dir.join("cam")).ok()?;
        let playlist = files
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".private.m3u8"))?;
        let text = std::fs::read_to_string(playlist).ok()?;
        (text.matches("#EXTINF").count() >= 2).then_some(())
    });
    assert!(publisher.stop());
    testkit::wait_until(STARTUP, "the private part's record_done", || {
        let done = server.events().into_iter().filter(|e| e["type"] == "record_done").count();
        (done == 2).then_some(())
    });
    let files = recordings(&dir, "cam");
    let name = |file: &Path| file.file_stem().unwrap().to_str().unwrap().to_owned();
    let [first, second] = files.as_slice() else { panic!("{files:?}") };
    let (open, marked) =
        if name(first).ends_with(".private") { (second, first) } else { (first, second) };
    assert!(!name(open).contains(".private") && name(marked).ends_with(".private"), "{files:?}");
    assert_eq!(public["files"][0], format!("cam/{}.mp4", name(open)));
    // Both decode: the private file starts at a keyframe, with the configurations.
    for file in [open, marked] {
        let (errors, frames) = tools::decode_at(file.to_str().unwrap(), "error");
        assert!(errors.trim().is_empty() && frames >= 25, "{file:?}: {frames} frames, {errors}");
    }
    // Once the server has forgotten the stream (a private stream's recordings are not
    // served while it knows it), the public part is served and the private one never.
    let get = |file: &Path| {
        http::get(server.http, &format!("/recordings/cam/{}.m3u8", name(file))).status
    };
    testkit::wait_until(STARTUP, "the public part served", || (get(open) == 200).then_some(()));
    assert_eq!(get(marked), 404);
}

/// A server stopped (SIGTERM) while it records finishes the recording before it exits: the
/// playlist gets its EXT-X-ENDLIST and `record_done` goes out.
#[test]
fn a_server_stopped_while_recording_finishes_the_recording() {
    let dir = record_dir("stopped");
    let server = Server::start("record-stop", &["--record-dir", dir.to_str().unwrap()]);
    let key = server.add_key("cam");
    let url = format!("{}/{key}", server.rtmp_url());
    let _publisher = Publisher::start_looping(&clip(Clip::AvSmall), &url);
    server.wait_for_segments("cam", 2);
    let (status, log) = server.terminate_within(std::time::Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{log}");
    assert!(log.contains("\"type\":\"record_done\""), "{log}");
    let files = recordings(&dir, "cam");
    let playlist = std::fs::read_to_string(files[0].with_extension("m3u8")).unwrap();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
}
