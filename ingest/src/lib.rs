//! RTMP ingest: accepts publishers, authorises them against a key store, and feeds their
//! media to the packager.
//!
//! [`rtmp`] is the protocol, sans-IO; [`listener`] is the tokio side; [`key_store`] and
//! [`file_key_store`] decide who may publish; [`events`] reports what happened.

pub mod atomic_file;
pub mod authorizer;
pub mod events;
pub mod failure_limiter;
pub mod file_key_store;
pub mod hooks;
pub mod jwt;
pub mod key_store;
pub mod limits;
pub mod listener;
pub mod low_water;
pub mod merged_read;
pub mod metrics;
pub mod status;

pub use authorizer::Authorizer;
pub use events::{Event, EventSink, LogSink};
pub use file_key_store::FileKeyStore;
pub use key_store::KeyStore;
pub use limits::Limits;
pub use listener::{Ingest, IngestConfig, TakeoverPolicy, serve};
pub use status::{PublishStatus, StatusBoard};
