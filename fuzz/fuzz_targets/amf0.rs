//! Fuzz target `amf0`: see the property stated on `rtmp_hls_fuzz::amf0`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::amf0(data));
