//! RTMP ingest: the tokio side of publishing. Accepts connections, drives each one's sans-IO
//! [`rtmp::Session`], asks [`auth`] whether a publish may go ahead, feeds the media to the
//! [`packager`] inline and hands finished segments to the [`stream_store`], and reports the
//! publish lifecycle as [`events`], metrics and callbacks. Live streams are pushed on to
//! other RTMP servers as they arrive ([`push`]).
//!
//! It owns connections, their limits and timeouts, the registry of live publishers
//! (takeover, kick, revocation), per-stream accounting and the push targets' connections. It never parses RTMP itself (the
//! `rtmp` crate does), never decides who may publish (the `auth` crate does), and never
//! serves HTTP.

pub mod accounting;
pub mod admission;
pub mod cluster;
mod connection;
mod continuity;
mod decision;
pub mod events;
pub mod hooks;
pub mod limits;
pub mod listener;
pub mod low_water;
pub mod merged_read;
pub mod metadata;
pub mod metrics;
pub mod play;
pub mod publish;
pub mod push;
mod rebase;
pub mod record;
mod registry;
mod seed;
mod socket;
pub mod status;

pub use events::{Event, EventSink, LogSink};
pub use limits::Limits;
pub use listener::{Ingest, IngestConfig, TakeoverPolicy, serve, serve_tls};
pub use status::{PublishStatus, StatusBoard};
