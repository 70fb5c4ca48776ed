//! Fuzz target `rtmp_session`: see the property stated on `rtmp_hls_fuzz::rtmp_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::rtmp_session(data));
