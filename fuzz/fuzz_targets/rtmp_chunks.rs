//! Fuzz target `rtmp_chunks`: see the property stated on `rtmp_hls_fuzz::rtmp_chunks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::rtmp_chunks(data));
