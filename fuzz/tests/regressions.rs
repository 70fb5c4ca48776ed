//! Replays every input kept in `regressions/<target>/` (crashes the fuzzers found, once fixed,
//! and hand-made edge cases) through the target's property function.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let data = std::fs::read(entry.path()).unwrap_or_default();
        check(&data);
    }
}

#[test]
fn regressions_still_hold() {
    replay("flv_tag", rtmp_hls_fuzz::flv_tag);
    replay("avc", rtmp_hls_fuzz::avc);
    replay("audio_config", rtmp_hls_fuzz::audio_config);
    replay("amf0", rtmp_hls_fuzz::amf0);
    replay("rtmp_session", rtmp_hls_fuzz::rtmp_session);
    replay("remuxer", rtmp_hls_fuzz::remuxer);
    replay("rtmp_chunks", rtmp_hls_fuzz::rtmp_chunks);
    replay("hook_response", rtmp_hls_fuzz::hook_response);
    replay("api_body", rtmp_hls_fuzz::api_body);
}

/// The properties hold on trivial inputs too (and the test cannot pass vacuously: each
/// target runs at least once here).
#[test]
fn trivial_inputs() {
    for data in [&b""[..], &[0], &[1; 64], &[0xff; 300]] {
        rtmp_hls_fuzz::flv_tag(data);
        rtmp_hls_fuzz::avc(data);
        rtmp_hls_fuzz::audio_config(data);
        rtmp_hls_fuzz::amf0(data);
        rtmp_hls_fuzz::rtmp_session(data);
        rtmp_hls_fuzz::remuxer(data);
        rtmp_hls_fuzz::rtmp_chunks(data);
        rtmp_hls_fuzz::hook_response(data);
        rtmp_hls_fuzz::api_body(data);
    }
}
