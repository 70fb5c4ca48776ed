//! Fuzz target `api_body`: see the property stated on `rtmp_hls_fuzz::api_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::api_body(data));
