//! Fuzz target `hook_response`: see the property stated on `rtmp_hls_fuzz::hook_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::hook_response(data));
