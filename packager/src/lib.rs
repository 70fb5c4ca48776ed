//! Sans-IO packaging of live RTMP media into HLS.
//!
//! ```text
//! FLV tag body ──flv──▶ frame ──avc/adts──▶ access unit ──segmenter+ts_mux──▶ Segment
//!   (RTMP msg 8/9)        (Annex B / ADTS, 90 kHz PTS/DTS)       (MPEG-TS bytes)
//!                                                                     │
//!                        HTTP ◀── StreamStore (playlist + segments) ◀─┘
//! ```
//!
//! [`Remuxer`] runs one publish: push FLV tags, pull finished [`Segment`]s. [`StreamStore`]
//! keeps every stream's sliding-window [`MediaPlaylist`] and segments in memory as shared
//! bytes for the HTTP side.
//!
//! Specifications: FLV v10.1 annex E (tag bodies), ISO/IEC 14496-15 §5.3.3 (AVC decoder
//! configuration), ITU-T H.264 Annex B (byte stream), ISO/IEC 14496-3 §1.6.2.1 and §1.A.2
//! (AudioSpecificConfig, ADTS), ISO/IEC 13818-1 §2.4 (transport stream), RFC 8216 (HLS).
//!
//! This crate does no IO and reads no clock: bytes come in as slices, wall time (where
//! needed) as an argument. The same input always gives the same output.

pub mod adts;
pub mod avc;
pub mod buffer_pool;
mod error;
pub mod flv;
pub mod mpa;
pub mod playlist;
pub mod remuxer;
pub mod segment_files;
pub mod segmenter;
pub mod store;
pub mod timeline;
pub mod ts_mux;

pub use error::{Error, Malformed, Unsupported};
pub use flv::TagKind;
pub use playlist::MediaPlaylist;
pub use remuxer::{AudioConfig, Remuxer, RemuxerConfig, RemuxerStats};
pub use segment_files::{SegmentBody, SegmentFile, SegmentFileWriter, SegmentFiles};
pub use segmenter::{MAX_AUDIO_PES_DURATION, MAX_AUDIO_PES_PAYLOAD, Segment};
pub use store::{BeginError, Publication, SegmentBytes, StoreConfig, StreamStore, StreamSummary};
