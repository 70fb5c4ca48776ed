//! Fuzz target `video_config`: see the property stated on `rtmp_hls_fuzz::video_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::video_config(data));
