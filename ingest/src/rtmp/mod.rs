//! A sans-IO RTMP server for publishers: bytes in, actions out.
//!
//! Layers, bottom up: [`handshake`] (§5.2), [`chunk`] (§5.3, per-chunk-stream reassembly
//! with limits), [`amf0`] (command encoding), [`session`] (§7: connect, createStream,
//! publish, with the authorisation decision left to the caller). Nothing here touches a
//! socket or a clock; `ingest::listener` drives it. Section numbers refer to the RTMP
//! specification (Adobe, 2012).

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod session;
