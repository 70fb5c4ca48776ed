//! Sans-IO packaging of live RTMP media into HLS.
//!
//! ```text
//! FLV tag body ──flv──▶ frame ──avc/adts──▶ access unit ──segmenter+ts_mux──▶ Segment
//!   (RTMP msg 8/9)        (Annex B / ADTS, 90 kHz PTS/DTS)       (MPEG-TS bytes)
//!                  └────▶ frame ──(as sent)──▶ access unit ──fragmenter+fmp4──▶ FragmentOutput
//!                      (H.264, HEVC, AV1, VP9; AAC, MP3)        (init, fragments, parts)
//! ```
//!
//! [`Remuxer`] runs one publish: push FLV tags, pull finished [`Segment`]s. [`MediaPlaylist`]
//! renders a stream's sliding-window playlist. Segment buffers come from a [`BufferPool`]
//! the caller passes in (a server shares one between all streams), or MPEG-TS segments go to
//! a [`SegmentSink`] as they are written.
//!
//! Specifications: FLV v10.1 annex E (tag bodies), Enhanced RTMP v1 (extended video tag
//! header), ISO/IEC 14496-15 §5.3.3 and §8.3.3 (AVC and HEVC decoder configuration),
//! AV1-ISOBMFF, VP-ISOBMFF, ITU-T H.264 Annex B (byte stream), ISO/IEC 14496-3 §1.6.2.1 and
//! §1.A.2 (AudioSpecificConfig, ADTS), ISO/IEC 13818-1 §2.4 (transport stream), ISO/IEC
//! 14496-12 (fragmented MP4), RFC 8216 and draft-pantos-hls-rfc8216bis (HLS, low-latency).
//!
//! This crate owns the media formats. It does no IO, reads no clock, spawns nothing and has
//! no global state: bytes come in as slices, wall time (where needed) as an argument, and
//! the same input always gives the same output. Keeping segments for viewers is the
//! `stream-store` crate's job.

pub mod adts;
pub mod av1;
pub mod avc;
mod bits;
pub mod buffer_pool;
mod error;
pub mod flv;
pub mod fmp4;
pub mod fragmenter;
pub mod hevc;
pub mod mpa;
pub mod multivariant;
pub mod playlist;
pub mod remuxer;
pub mod segmenter;
pub mod timeline;
pub mod ts_mux;
pub mod video;
pub mod vp9;

pub use buffer_pool::BufferPool;
pub use error::{Error, Malformed, Unsupported};
pub use flv::{TagKind, VideoCodec};
pub use fragmenter::Output as FragmentOutput;
pub use playlist::MediaPlaylist;
pub use remuxer::{AudioConfig, Container, NextCut, Remuxer, RemuxerConfig, RemuxerStats};
pub use segmenter::{MAX_AUDIO_PES_DURATION, MAX_AUDIO_PES_PAYLOAD, Segment, SegmentSink};
pub use video::VideoConfig;
