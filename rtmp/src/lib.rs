//! The RTMP protocol, sans-IO: bytes in, actions out.
//!
//! Layers, bottom up: [`handshake`] (§5.2), [`chunk`] (§5.3: per-chunk-stream reassembly
//! with limits, and the chunk writer), [`amf0`] (command encoding), [`session`] (§7: the
//! server side of connect, createStream and publish, with the authorisation decision left to
//! the caller), and [`client`], the publishing side as encoders speak it.
//!
//! This crate owns the wire format and the publish state machine. It never touches a socket
//! or a clock, nor starts a thread (message bodies recycle their buffers per thread,
//! [`message_buffers`]), and knows nothing of keys, media codecs or HLS: `ingest` drives it
//! over tokio, and tests, benchmarks and fuzz targets drive it in memory without pulling in
//! the server's dependencies. Section numbers refer to the RTMP specification (Adobe, 2012).

pub mod amf0;
pub mod chunk;
pub mod client;
pub mod handshake;
pub mod message_buffers;
pub mod session;

pub use session::{Action, MediaKind, Session, SessionError};
