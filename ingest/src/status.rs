//! What the stats API shows of each publish: a snapshot its connection refreshes at every
//! segment, kept after the publish ends (with the end time and reason) until the stream is
//! forgotten. The figures Nginx-RTMP's `/stat` gives, per stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::events::{MediaInfo, StopReason};

/// The snapshot of one publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishStatus {
    /// The publisher's address.
    pub remote: SocketAddr,
    /// RTMP application.
    pub app: String,
    /// The key's owner, when known.
    pub owner: Option<String>,
    /// When the publish was accepted.
    pub since: SystemTime,
    /// When it ended, and why; `None` while live.
    pub ended: Option<(SystemTime, StopReason)>,
    /// Codecs and picture, once the first frame is packaged.
    pub media: MediaInfo,
    /// Bits per second received between the last two refreshes.
    pub bitrate_bps: u64,
    /// Video frames per second between the last two refreshes.
    pub fps: f64,
    /// Time between the last two keyframes.
    pub keyframe_interval_ms: Option<u64>,
    /// Bytes received.
    pub bytes: u64,
    /// Frames packaged.
    pub frames: u64,
    /// Segments produced.
    pub segments: u64,
}

impl PublishStatus {
    /// A publish accepted now, before any media.
    pub fn accepted(remote: SocketAddr, app: &str, owner: Option<String>, now: SystemTime) -> Self {
        Self {
            remote,
            app: app.to_owned(),
            owner,
            since: now,
            ended: None,
            media: MediaInfo::default(),
            bitrate_bps: 0,
            fps: 0.0,
            keyframe_interval_ms: None,
            bytes: 0,
            frames: 0,
            segments: 0,
        }
    }
}

/// The latest status of every stream's latest publish, by stream name, with the id of the
/// connection that owns it (a takeover's old connection cannot overwrite the new one's).
#[derive(Debug, Default)]
pub struct StatusBoard {
    entries: Mutex<HashMap<String, (u64, PublishStatus)>>,
}

impl StatusBoard {
    /// Records the status of `stream` as published by connection `id`; an update from a
    /// connection that no longer owns the stream is ignored.
    pub fn set(&self, stream: &str, id: u64, status: PublishStatus, fresh: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(stream) {
            Some(entry) if entry.0 == id || fresh => *entry = (id, status),
            Some(_) => {}
            None => {
                entries.insert(stream.to_owned(), (id, status));
            }
        }
    }

    /// The status of `stream`.
    pub fn get(&self, stream: &str) -> Option<PublishStatus> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(stream).map(|(_, status)| status.clone())
    }

    /// Forgets the streams `keep` says no.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|name, _| keep(name));
    }

    /// Streams with a status.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no stream has a status.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(app: &str) -> PublishStatus {
        PublishStatus::accepted("10.0.0.1:5000".parse().unwrap(), app, None, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn only_the_owner_updates_and_a_new_publish_takes_over() {
        let board = StatusBoard::default();
        board.set("cam", 1, status("a"), true);
        board.set("cam", 2, status("b"), false);
        assert_eq!(board.get("cam").unwrap().app, "a", "a stranger overwrote the status");
        board.set("cam", 2, status("c"), true);
        board.set("cam", 1, status("d"), false);
        assert_eq!(board.get("cam").unwrap().app, "c", "the old publisher overwrote the new");
        board.retain(|name| name != "cam");
        assert!(board.is_empty());
    }
}
