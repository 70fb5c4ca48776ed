//! Benchmarks for rtmp-hls live in `benches/` of this crate; see BENCHMARKS.md.
