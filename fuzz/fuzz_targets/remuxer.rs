//! Fuzz target `remuxer`: see the property stated on `rtmp_hls_fuzz::remuxer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::remuxer(data));
