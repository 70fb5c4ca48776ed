//! Fuzz target `flv_tag`: see the property stated on `rtmp_hls_fuzz::flv_tag`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtmp_hls_fuzz::flv_tag(data));
