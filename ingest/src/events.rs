//! Stream lifecycle events (schema v1, `docs/events.md`, `docs/events.schema.json`), and the
//! guard that pairs every start with exactly one stop.
//!
//! Sinks must never block the media path: an implementation queues or logs and returns.
//! Without a broker configured, [`LogSink`] writes each event as one log line holding the
//! same JSON document a broker would get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::accounting::Rates;

/// The `version` of every event this build emits.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The client unpublished or closed the connection.
    ClientClosed,
    /// The client sent no media for too long.
    Timeout,
    /// The connection failed or the client broke the protocol.
    Error,
    /// The server is shutting down.
    ServerShutdown,
    /// Another publisher with a valid key took the stream over.
    TakenOver,
    /// The key was revoked while publishing.
    Revoked,
    /// An operator ended the publish.
    Kicked,
    /// The node could not renew the stream's lease in the cluster's registry in time.
    LeaseLost,
}

impl StopReason {
    /// The reason as events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::ServerShutdown => "server_shutdown",
            Self::TakenOver => "taken_over",
            Self::Revoked => "revoked",
            Self::Kicked => "kicked",
            Self::LeaseLost => "lease_lost",
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The application in the URL is not served.
    UnknownApp,
    /// No stream has this key.
    InvalidKey,
    /// The stream is already being published.
    AlreadyLive,
    /// The key store did not answer in time or failed.
    KeyStoreUnavailable,
    /// The server is at its limit of live streams.
    TooManyStreams,
    /// The publish token did not verify, or is for another stream.
    InvalidToken,
    /// Too many failed attempts from this address.
    RateLimited,
    /// The `on_publish` callback answered with a refusal.
    HookRefused,
    /// The `on_publish` callback could not be asked (fail closed).
    HookUnavailable,
    /// The cluster's stream registry could not be asked (fail closed).
    RegistryUnavailable,
}

impl RejectReason {
    /// The reason as events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownApp => "unknown_app",
            Self::InvalidKey => "invalid_key",
            Self::AlreadyLive => "already_live",
            Self::KeyStoreUnavailable => "key_store_unavailable",
            Self::TooManyStreams => "too_many_streams",
            Self::InvalidToken => "invalid_token",
            Self::HookRefused => "hook_refused",
            Self::HookUnavailable => "hook_unavailable",
            Self::RateLimited => "rate_limited",
            Self::RegistryUnavailable => "registry_unavailable",
        }
    }
}

/// What a publish carries, as far as it is known when the stream goes live.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaInfo {
    /// RFC 6381 codec string of the video track (`avc1.64001f`).
    pub video_codec: Option<String>,
    /// Width in pixels (from the encoder's metadata).
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Frames per second (from the encoder's metadata).
    pub fps: Option<f64>,
    /// RFC 6381 codec string of the audio track (`mp4a.40.2`, `mp4a.40.34` for MP3).
    pub audio_codec: Option<String>,
    /// Audio sampling rate in Hz.
    pub audio_sample_rate: Option<u32>,
    /// Audio channels.
    pub audio_channels: Option<u8>,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server started.
    ServerStarted,
    /// The server is stopping.
    ServerStopping,
    /// A stream went live (its first frame was packaged).
    PublishStarted {
        /// Public stream name.
        stream: String,
        /// The key's owner, when known.
        owner: Option<String>,
        /// RTMP application.
        app: String,
        /// Publisher address.
        remote: SocketAddr,
        /// Codecs and picture.
        media: MediaInfo,
        /// It continues a stream whose publisher was interrupted within the reconnect window
        /// (the playlist goes on after a discontinuity).
        resumed: bool,
    },
    /// A stream that went live ended.
    PublishStopped {
        /// Public stream name.
        stream: String,
        /// The key's owner, when known.
        owner: Option<String>,
        /// Why.
        reason: StopReason,
        /// How long it was live.
        duration: Duration,
        /// Bytes received from the publisher.
        bytes: u64,
        /// Frames packaged.
        frames: u64,
        /// `None`: the stream ended with the publish (EXT-X-ENDLIST). Otherwise the publish
        /// was interrupted and the stream waits this long for its publisher to come back.
        reconnect_window: Option<Duration>,
    },
    /// A publish was refused. Never carries the key.
    PublishRejected {
        /// Why.
        reason: RejectReason,
        /// RTMP application.
        app: String,
        /// Publisher address.
        remote: SocketAddr,
    },
    /// Periodic figures of a live stream.
    StreamStats {
        /// Public stream name.
        stream: String,
        /// Bits per second received over the last interval.
        bitrate_bps: u64,
        /// Video frames per second over the last interval.
        fps: f64,
        /// Time between the last two keyframes.
        keyframe_interval_ms: Option<u64>,
        /// Segments produced since the stream went live.
        segments: u64,
        /// Distinct viewers that fetched the playlist recently.
        viewers: u64,
    },
    /// A push target accepted the stream (at the first attempt, or again after a failure).
    PushStarted {
        /// Public stream name.
        stream: String,
        /// The target, its key hashed (see [`crate::push::PushTarget::label`]).
        target: String,
        /// Which attempt of this publish's push to the target (1 for the first).
        attempt: u64,
    },
    /// A push target could not be reached, refused, stalled or dropped the connection.
    PushFailed {
        /// Public stream name.
        stream: String,
        /// The target, its key hashed.
        target: String,
        /// Which attempt failed.
        attempt: u64,
        /// What happened.
        error: String,
        /// When the next attempt is.
        retry_in: Duration,
    },
    /// A recording was finished (its publish ended).
    RecordDone {
        /// Public stream name.
        stream: String,
        /// The MP4 files, relative to the recording directory.
        files: Vec<String>,
        /// Bytes written.
        bytes: u64,
        /// Media recorded.
        duration: Duration,
        /// Writes that failed (the recording has gaps).
        failures: u64,
    },
    /// A recording could not be written (disk full, permissions); it resumes in a new file
    /// at the next segment it can write.
    RecordFailed {
        /// Public stream name.
        stream: String,
        /// What happened.
        error: String,
    },
    /// The push of a publish to a target ended (with the publish).
    PushStopped {
        /// Public stream name.
        stream: String,
        /// The target, its key hashed.
        target: String,
        /// Bytes sent to the target.
        bytes: u64,
        /// Bytes of media the target was spared because it could not keep up or was down.
        dropped_bytes: u64,
        /// Connection attempts.
        attempts: u64,
    },
}

impl Event {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ServerStarted => "server_started",
            Self::ServerStopping => "server_stopping",
            Self::PublishStarted { .. } => "publish_started",
            Self::PublishStopped { .. } => "publish_stopped",
            Self::PublishRejected { .. } => "publish_rejected",
            Self::StreamStats { .. } => "stream_stats",
            Self::PushStarted { .. } => "push_started",
            Self::PushFailed { .. } => "push_failed",
            Self::PushStopped { .. } => "push_stopped",
            Self::RecordDone { .. } => "record_done",
            Self::RecordFailed { .. } => "record_failed",
        }
    }

    /// The stream it is about: the record key, so one stream's events stay in order.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Self::PublishStarted { stream, .. }
            | Self::PublishStopped { stream, .. }
            | Self::StreamStats { stream, .. }
            | Self::PushStarted { stream, .. }
            | Self::PushFailed { stream, .. }
            | Self::PushStopped { stream, .. }
            | Self::RecordDone { stream, .. }
            | Self::RecordFailed { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Periodic figures, which a full queue may drop; every other event is kept.
    pub fn is_droppable(&self) -> bool {
        matches!(self, Self::StreamStats { .. })
    }

    /// The event's own fields.
    fn fields(&self) -> Value {
        match self {
            Self::ServerStarted | Self::ServerStopping => json!({}),
            Self::PublishStarted { stream, owner, app, remote, media, resumed } => json!({
                "stream": stream, "owner": owner, "app": app, "remote_addr": remote.to_string(),
                "video_codec": media.video_codec, "width": media.width, "height": media.height,
                "fps": media.fps, "audio_codec": media.audio_codec,
                "audio_sample_rate": media.audio_sample_rate, "audio_channels": media.audio_channels,
                "resumed": resumed,
            }),
            Self::PublishStopped {
                stream,
                owner,
                reason,
                duration,
                bytes,
                frames,
                reconnect_window,
            } => {
                let bitrate = Rates::over(*bytes, 0, *duration).bitrate_bps;
                json!({
                    "stream": stream, "owner": owner, "reason": reason.as_str(),
                    "duration_ms": duration.as_millis() as u64, "bytes": bytes, "frames": frames,
                    "avg_bitrate_bps": bitrate, "stream_ended": reconnect_window.is_none(),
                    "reconnect_window_ms": reconnect_window.map(|w| w.as_millis() as u64),
                })
            }
            Self::PublishRejected { reason, app, remote } => {
                json!({ "reason": reason.as_str(), "app": app, "remote_addr": remote.to_string() })
            }
            Self::StreamStats {
                stream,
                bitrate_bps,
                fps,
                keyframe_interval_ms,
                segments,
                viewers,
            } => json!({
                "stream": stream, "bitrate_bps": bitrate_bps, "fps": fps,
                "keyframe_interval_ms": keyframe_interval_ms, "segments": segments, "viewers": viewers,
            }),
            Self::PushStarted { stream, target, attempt } => {
                json!({ "stream": stream, "target": target, "attempt": attempt })
            }
            Self::PushFailed { stream, target, attempt, error, retry_in } => json!({
                "stream": stream, "target": target, "attempt": attempt, "error": error,
                "retry_in_ms": retry_in.as_millis() as u64,
            }),
            Self::RecordDone { stream, files, bytes, duration, failures } => json!({
                "stream": stream, "files": files, "bytes": bytes,
                "duration_ms": duration.as_millis() as u64, "failures": failures,
            }),
            Self::RecordFailed { stream, error } => json!({ "stream": stream, "error": error }),
            Self::PushStopped { stream, target, bytes, dropped_bytes, attempts } => json!({
                "stream": stream, "target": target, "bytes": bytes,
                "dropped_bytes": dropped_bytes, "attempts": attempts,
            }),
        }
    }
}

/// The fields every event carries: `event_id`, `type`, `version`, `occurred_at`, `server_id`.
#[derive(Debug, Clone)]
pub struct Envelope {
    server_id: String,
}

impl Envelope {
    /// Events of the server `server_id`.
    pub fn new(server_id: impl Into<String>) -> Self {
        Self { server_id: server_id.into() }
    }

    /// The JSON document of `event`, which happened at `now`.
    pub fn wrap(&self, event: &Event, now: SystemTime) -> Value {
        let mut document = Map::new();
        document.insert("event_id".into(), uuid_v7(now).into());
        document.insert("type".into(), event.kind().into());
        document.insert("version".into(), SCHEMA_VERSION.into());
        document
            .insert("occurred_at".into(), humantime::format_rfc3339_millis(now).to_string().into());
        document.insert("server_id".into(), self.server_id.clone().into());
        if let Value::Object(fields) = event.fields() {
            document.extend(fields);
        }
        Value::Object(document)
    }
}

/// A UUID version 7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then random bits, so ids
/// sort by time.
pub fn uuid_v7(now: SystemTime) -> String {
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut bytes = [0u8; 16];
    // Without randomness the id is still unique per millisecond and process only by chance;
    // the zeros left on failure keep it well-formed.
    let _ = getrandom::fill(&mut bytes[6..]);
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Where events go. `emit` must return quickly and never block.
pub trait EventSink: Send + Sync + 'static {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// Writes each event as one log line (target `rtmp_hls::events`) holding its JSON document.
#[derive(Debug, Clone)]
pub struct LogSink {
    envelope: Envelope,
}

impl LogSink {
    /// A sink logging events of the server `envelope` describes.
    pub fn new(envelope: Envelope) -> Self {
        Self { envelope }
    }
}

impl EventSink for LogSink {
    fn emit(&self, event: Event) {
        let document = self.envelope.wrap(&event, SystemTime::now());
        tracing::info!(target: "rtmp_hls::events", event = event.kind(), "{document}");
    }
}

/// Emits `PublishStarted` when made and exactly one `PublishStopped` when dropped, whatever
/// ends the publish (return, error, panic).
pub struct PublishGuard {
    sink: Arc<dyn EventSink>,
    stream: String,
    owner: Option<String>,
    started: Instant,
    /// Why the publish ends; stays [`StopReason::Error`] unless set.
    pub reason: StopReason,
    /// Bytes received.
    pub bytes: u64,
    /// Frames packaged.
    pub frames: u64,
    /// Set when the publish was interrupted: how long the stream waits for its publisher.
    pub reconnect_window: Option<Duration>,
}

impl PublishGuard {
    /// Emits `PublishStarted` and returns the guard that will emit the stop.
    pub fn start(
        sink: Arc<dyn EventSink>,
        stream: &str,
        owner: Option<String>,
        app: &str,
        remote: SocketAddr,
        media: MediaInfo,
        resumed: bool,
    ) -> Self {
        sink.emit(Event::PublishStarted {
            stream: stream.to_owned(),
            owner: owner.clone(),
            app: app.to_owned(),
            remote,
            media,
            resumed,
        });
        Self {
            sink,
            stream: stream.to_owned(),
            owner,
            started: Instant::now(),
            reason: StopReason::Error,
            bytes: 0,
            frames: 0,
            reconnect_window: None,
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        self.sink.emit(Event::PublishStopped {
            stream: std::mem::take(&mut self.stream),
            owner: self.owner.take(),
            reason: self.reason,
            duration: self.started.elapsed(),
            bytes: self.bytes,
            frames: self.frames,
            reconnect_window: self.reconnect_window,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl EventSink for Recorder {
        fn emit(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn remote() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn guard_pairs_start_and_stop_even_on_panic() {
        let recorder = Arc::new(Recorder::default());
        let sink: Arc<dyn EventSink> = recorder.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = PublishGuard::start(
                sink.clone(),
                "cam",
                None,
                "live",
                remote(),
                MediaInfo::default(),
                false,
            );
            panic!("connection task bug");
        }));
        assert!(result.is_err());
        {
            let mut guard = PublishGuard::start(
                sink,
                "cam",
                None,
                "live",
                remote(),
                MediaInfo::default(),
                false,
            );
            guard.reason = StopReason::ClientClosed;
        }
        let events = recorder.0.lock().unwrap();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::PublishStopped { reason, .. } => reason.as_str().to_owned(),
                other => other.kind().to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["publish_started", "error", "publish_started", "client_closed"]);
    }

    #[test]
    fn envelope_and_fields() {
        let envelope = Envelope::new("edge-1");
        let now = UNIX_EPOCH + Duration::from_millis(1_764_108_000_123);
        let event = Event::PublishStopped {
            stream: "cam".into(),
            owner: Some("u1".into()),
            reason: StopReason::TakenOver,
            duration: Duration::from_secs(10),
            bytes: 1_250_000,
            frames: 300,
            reconnect_window: Some(Duration::from_secs(20)),
        };
        let document = envelope.wrap(&event, now);
        assert_eq!(document["type"], "publish_stopped");
        assert_eq!(document["version"], 1);
        assert_eq!(document["server_id"], "edge-1");
        assert_eq!(document["occurred_at"], "2025-11-25T22:00:00.123Z");
        assert_eq!(document["reason"], "taken_over");
        assert_eq!(document["avg_bitrate_bps"], 1_000_000);
        assert_eq!(document["stream_ended"], false);
        assert_eq!(document["reconnect_window_ms"], 20_000);
        assert_eq!(event.stream(), Some("cam"));
        assert!(!event.is_droppable());
    }

    #[test]
    fn uuid_v7_layout_and_order() {
        let early = uuid_v7(UNIX_EPOCH + Duration::from_millis(1_000));
        let late = uuid_v7(UNIX_EPOCH + Duration::from_millis(2_000));
        assert_eq!(early.len(), 36);
        assert_eq!(&early[14..15], "7", "version nibble");
        assert!(matches!(&early[19..20], "8" | "9" | "a" | "b"), "variant bits");
        assert!(early < late);
        assert_ne!(uuid_v7(UNIX_EPOCH), uuid_v7(UNIX_EPOCH));
    }
}
