//! Stream lifecycle events, and the guard that pairs every start with exactly one stop.
//!
//! Sinks must never block the media path: an implementation queues or logs and returns.
//! Without a broker configured, [`LogSink`] writes each event as one structured log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The client unpublished or closed the connection.
    ClientClosed,
    /// The client sent nothing for too long.
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
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Something that happened to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publish was accepted.
    PublishStarted {
        /// Public stream name.
        stream: String,
        /// RTMP application.
        app: String,
        /// Publisher address.
        remote: SocketAddr,
    },
    /// A publish ended.
    PublishStopped {
        /// Public stream name.
        stream: String,
        /// Why.
        reason: StopReason,
        /// How long it lasted.
        duration: Duration,
        /// Media bytes received.
        bytes: u64,
        /// Frames packaged.
        frames: u64,
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
}

/// Where events go. `emit` must return quickly and never block.
pub trait EventSink: Send + Sync + 'static {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// Writes each event as one structured `tracing` line (target `rtmp_hls::events`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl EventSink for LogSink {
    fn emit(&self, event: Event) {
        match event {
            Event::PublishStarted { stream, app, remote } => {
                tracing::info!(target: "rtmp_hls::events", event = "publish_started", %stream, %app, %remote);
            }
            Event::PublishStopped { stream, reason, duration, bytes, frames } => {
                tracing::info!(
                    target: "rtmp_hls::events",
                    event = "publish_stopped",
                    %stream,
                    reason = reason.as_str(),
                    duration_ms = duration.as_millis() as u64,
                    bytes,
                    frames,
                );
            }
            Event::PublishRejected { reason, app, remote } => {
                tracing::info!(
                    target: "rtmp_hls::events",
                    event = "publish_rejected",
                    reason = reason.as_str(),
                    %app,
                    %remote,
                );
            }
        }
    }
}

/// Emits `PublishStarted` when made and exactly one `PublishStopped` when dropped, whatever
/// ends the publish (return, error, panic).
pub struct PublishGuard {
    sink: Arc<dyn EventSink>,
    stream: String,
    started: Instant,
    /// Why the publish ends; stays [`StopReason::Error`] unless set.
    pub reason: StopReason,
    /// Media bytes received.
    pub bytes: u64,
    /// Frames packaged.
    pub frames: u64,
}

impl PublishGuard {
    /// Emits `PublishStarted` and returns the guard that will emit the stop.
    pub fn start(sink: Arc<dyn EventSink>, stream: &str, app: &str, remote: SocketAddr) -> Self {
        sink.emit(Event::PublishStarted { stream: stream.to_owned(), app: app.to_owned(), remote });
        Self {
            sink,
            stream: stream.to_owned(),
            started: Instant::now(),
            reason: StopReason::Error,
            bytes: 0,
            frames: 0,
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        self.sink.emit(Event::PublishStopped {
            stream: std::mem::take(&mut self.stream),
            reason: self.reason,
            duration: self.started.elapsed(),
            bytes: self.bytes,
            frames: self.frames,
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

    #[test]
    fn guard_pairs_start_and_stop_even_on_panic() {
        let recorder = Arc::new(Recorder::default());
        let sink: Arc<dyn EventSink> = recorder.clone();
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = PublishGuard::start(sink.clone(), "cam", "live", remote);
            panic!("connection task bug");
        }));
        assert!(result.is_err());
        {
            let mut guard = PublishGuard::start(sink, "cam", "live", remote);
            guard.reason = StopReason::ClientClosed;
        }
        let events = recorder.0.lock().unwrap();
        let kinds: Vec<_> = events
            .iter()
            .map(|e| match e {
                Event::PublishStarted { .. } => "start".to_owned(),
                Event::PublishStopped { reason, .. } => reason.as_str().to_owned(),
                Event::PublishRejected { .. } => "reject".to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["start", "error", "start", "client_closed"]);
    }
}
