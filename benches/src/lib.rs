//! Benchmarks of rtmp-hls: the criterion remux benchmark (`benches/remux.rs`) and the load
//! harness `rtmp-hls-bench` (`src/main.rs`); BENCHMARKS.md says what they measure.
