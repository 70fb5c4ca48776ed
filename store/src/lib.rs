//! The live stream store: the one piece of state the RTMP side writes and the HTTP side
//! reads.
//!
//! [`StreamStore`] holds, per stream name, the sliding-window playlist (rendered once per
//! change) and the recent segments as shared bytes, the viewer estimate, and what a stream
//! that ended recently needs to continue its numbering when its publisher comes back. A
//! publisher writes through its [`Publication`], whose drop ends the stream. With memory
//! files ([`memfd`]), MPEG-TS segments are written there as they are made and fMP4 segments
//! fetched more than once move there, and the HTTP side sends them with `sendfile`; without,
//! segments stay in recycled heap buffers ([`PROMOTE_AT_FETCH`]).
//!
//! This crate owns concurrency (a `DashMap` of slots, each behind a lock held for one
//! update) and memory: how long segments stay, and where. It never parses media (the
//! `packager` makes the segments and renders playlists), never touches a socket, and never
//! reads a clock: time comes in as arguments.

pub mod blocking;
pub mod memfd;
mod open_segment;
pub mod segment_files;
mod store;
pub mod viewers;

pub use blocking::{Changes, DirectiveError, Directives, Reload};
pub use memfd::{MemfdSegment, MemfdSegments};
pub use open_segment::PartRead;
pub use segment_files::{Pieces, SegmentBody, SegmentFile, SegmentFileWriter, SegmentFiles};
pub use store::{
    BeginError, MediaFacts, Numbering, PROMOTE_AT_FETCH, Publication, Rendition, SEQUENCE_MEMORY,
    SegmentBytes, StoreConfig, StreamStore, StreamSummary,
};
pub use viewers::{MAX_VIEWERS_TRACKED, ViewerSession};
