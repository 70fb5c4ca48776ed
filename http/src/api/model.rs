//! The bodies of the operator's API, as Rust types: what the handlers send and receive and
//! what the tests read back. Each type is the schema of the same name in
//! `docs/openapi.yaml`; the end-to-end tests validate served bodies against that file, so
//! the two cannot drift apart unnoticed. Unknown fields are refused when reading, as the
//! file's `additionalProperties: false` says.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamList {
    /// Every stream, live or recently ended, by name.
    pub streams: Vec<Stream>,
}

/// One stream, live or recently ended (`GET /api/v1/streams/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// The public name.
    pub name: String,
    /// Being published now (else ended, kept for `--ended-ttl`, or reconnecting).
    pub live: bool,
    /// Its publisher dropped without stopping: the playlist stays open, without ENDLIST,
    /// for the reconnect window, and players wait.
    pub reconnecting: bool,
    /// Path of the playlist on the HLS address.
    pub playlist: String,
    /// Distinct recent viewers.
    pub viewers: u64,
    /// Segments listed in the playlist.
    pub segments_listed: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: u64,
    /// The latest publish, if the server saw one.
    pub publisher: Option<Publisher>,
    /// Only viewers with a viewer token may watch it; private streams are listed to admins
    /// only.
    pub private: bool,
    /// The video track, once packaged.
    pub video: Option<Video>,
    /// The audio track, once packaged.
    pub audio: Option<Audio>,
    /// In a cluster, the node publishing it (`--server-id`); other nodes' streams show
    /// their lease only: no viewers, publisher or tracks.
    #[serde(default)]
    pub node: Option<String>,
}

/// The latest publish of a stream (live, or ended when `ended_at` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// `ip:port` of the publisher; `None` without admin credentials.
    pub remote_addr: Option<String>,
    /// RTMP application.
    pub app: String,
    /// The key's owner; `None` without admin credentials.
    pub owner: Option<String>,
    /// When the publish was accepted (RFC 3339, UTC, milliseconds).
    pub since: String,
    /// Seconds since then, or until it ended.
    pub duration_seconds: f64,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Why it ended (`client_closed`, `timeout`, ...).
    pub stop_reason: Option<String>,
    /// Bits per second over the last segment or more.
    pub bitrate_bps: u64,
    /// Video frames per second over the last segment or more.
    pub fps: f64,
    /// Time between the last two keyframes.
    pub keyframe_interval_ms: Option<u64>,
    /// Bytes received.
    pub bytes: u64,
    /// Frames packaged.
    pub frames: u64,
    /// Segments produced by this publish.
    pub segments: u64,
}

/// A stream's video track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Video {
    /// RFC 6381 codec string (`avc1.64001f`).
    pub codec: String,
    /// Width in pixels, from the encoder's metadata.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Frames per second, from the encoder's metadata.
    pub fps: Option<f64>,
}

/// A stream's audio track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    /// RFC 6381 codec string (`mp4a.40.2`).
    pub codec: String,
    /// Sampling rate in Hz.
    pub sample_rate: Option<u32>,
    /// Channels.
    pub channels: Option<u8>,
}

/// `GET /api/v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// Every key's stream, never the key.
    pub keys: Vec<KeyInfo>,
}

/// What the API shows of a key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// The stream it publishes.
    pub stream: String,
    /// The platform's user id (MongoDB key store only).
    pub owner: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Revoked keys publish nothing.
    pub revoked: bool,
    /// The stream is private.
    pub private: bool,
    /// Where the stream is pushed on to, each target's key hashed.
    pub push: Vec<String>,
    /// Whether its publishes are recorded; `None`: as the server is configured.
    pub record: Option<bool>,
}

/// `POST /api/v1/keys`: a key for a new stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The stream's name.
    pub stream: String,
    /// The platform's user id (MongoDB key store only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only viewers with a viewer token may watch it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// `PATCH /api/v1/keys/{name}`: a stream's key made private or public, or its push targets
/// set; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    /// Only viewers with a viewer token may watch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// Where the stream is pushed on to: `rtmp://` and `rtmps://` URLs with the targets' keys
    /// (replacing the list; empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Vec<String>>,
    /// Whether its publishes are recorded (`--record-dir`), from its next publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

/// The answer to [`NewKey`]: the key, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedKey {
    /// The stream's name.
    pub stream: String,
    /// The stream key.
    pub key: String,
}

/// Every error body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Error {
    /// What went wrong, for a person.
    pub error: String,
}
