//! Fuzz target `avc`: see the property stated on `rtmp_hls_fuzz::avc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::avc(data));
