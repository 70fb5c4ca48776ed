//! What the tasks of a run share: the current step's statistics and each stream's state.
//! Tasks write; the driver reads at step boundaries. Locks are held for a record, never
//! across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::time::Instant;

use crate::stats::StepStats;

/// One stream: who publishes it and where it is watched.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// The public name (in the playlist URL).
    pub(crate) name: String,
    /// The stream key (the RTMP publishing name).
    pub(crate) key: String,
    /// Host and path of the playlist.
    pub(crate) host: String,
    pub(crate) playlist_path: String,
    /// Timestamp (ms, loops included) of the last media sent: media time published.
    pub(crate) media_ms: AtomicU64,
    /// The publisher's clock: the instant its replay started, when a tag of timestamp `ts`
    /// (ms, loops included) is due at `t0 + ts`. Set once, when the replay starts.
    pub(crate) t0: OnceLock<Instant>,
    pub(crate) status: Mutex<StreamStatus>,
}

/// A stream's health, read by the driver.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamStatus {
    /// New segments the monitor saw in the measurement window.
    pub(crate) window_segments: u64,
    /// Why the stream fell behind, once it has (kept for the rest of the run).
    pub(crate) behind: Option<String>,
}

impl StreamState {
    pub(crate) fn status(&self) -> MutexGuard<'_, StreamStatus> {
        // A panicking task cannot leave the counters inconsistent: keep reading them.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn mark_behind(&self, reason: String) {
        self.status().behind.get_or_insert(reason);
    }

    pub(crate) fn media_ms(&self) -> u64 {
        self.media_ms.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    stats: Mutex<StepStats>,
    pub(crate) streams: Vec<StreamState>,
    /// Blocking playlist reloads the viewers are waiting on now.
    pub(crate) blocked_reloads: AtomicU64,
}

impl Shared {
    pub(crate) fn new(streams: Vec<StreamState>) -> Self {
        Self {
            stats: Mutex::new(StepStats::default()),
            streams,
            blocked_reloads: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, StepStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.stats().error(kind);
    }
}

/// Counts one in `counter` for as long as it lives: a request in flight, also when its task
/// is aborted.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(crate) fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
