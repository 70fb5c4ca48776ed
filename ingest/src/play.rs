//! RTMP play: players (ffplay, ffmpeg, VLC, OBS's media source) pulling a live stream from
//! `rtmp://host/app/<name>`, as Nginx-RTMP's `live` application serves them.
//!
//! Each live publish has a [`Broadcast`]: the publisher's connection hands it every message,
//! and it hands them on to its players' [`Outbox`]es, bounded queues with the push targets'
//! drop policy ([`crate::push::queue`]), so a slow player costs the stream and the other
//! players nothing. A player starts with the stream's metadata and decoder configurations
//! and the latest keyframe onwards: the broadcast keeps that group of pictures while it has
//! players (and only its configurations otherwise, so a stream nobody plays over RTMP holds
//! no media for it). A private stream is played with a viewer token in the name's query
//! (`rtmp://host/live/<name>?token=<jwt>`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rtmp::MediaKind;

use crate::push::Outbox;
use crate::push::queue::{self, Item, MAX_QUEUE_BYTES, Role};

/// Bytes of a live stream's latest group of pictures kept for players joining: at least one
/// GOP of a high-bitrate stream (10 s at 6 Mbit/s); a longer one is not cached (a player
/// then starts at the next keyframe).
pub const MAX_GOP_CACHE_BYTES: usize = MAX_QUEUE_BYTES;

/// RTMP players the server takes at once, over all streams: each holds a connection, a
/// task and a queue; publishers keep the other connections ([`player_room`]).
pub const MAX_PLAYERS: usize = 1024;
/// How often a player of a private stream is checked again: a stream made private, or a
/// token that expired, ends it within this.
pub const PLAYER_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether RTMP players are served, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayLimits {
    /// Served at all (`--rtmp-play`).
    pub enabled: bool,
    /// Players at once, all streams (`--max-rtmp-players`).
    pub max_players: usize,
    /// Players of one stream (0: no limit; the HLS viewer limit).
    pub max_per_stream: usize,
}

/// How many players may be served at once with `limits` and the connection limits: at most
/// `max_players`, and never the places live publishers need (`max_streams` of the connection
/// limit, at most half of it). Players are authenticated connections, which a new connection
/// cannot evict: without the reserve, players of one public stream from a few addresses
/// could hold every place and keep every publisher (and every encoder reconnecting) out.
#[must_use]
pub fn player_room(limits: &PlayLimits, connections: &crate::limits::Limits) -> usize {
    let reserved = connections.max_streams.min(connections.max_connections / 2);
    limits.max_players.min(connections.max_connections - reserved)
}

impl Default for PlayLimits {
    fn default() -> Self {
        Self { enabled: true, max_players: MAX_PLAYERS, max_per_stream: 0 }
    }
}

/// One live publish as its players see it.
pub(crate) struct Broadcast {
    /// The latest configurations, and while there are players, the latest keyframe
    /// onwards.
    gop: Mutex<queue::PushQueue>,
    /// What every message needs, under one lock: the players, the end, the clock.
    state: Mutex<Audience>,
}

/// A broadcast's players, whether its publish ended (then nobody joins), and the players'
/// clock across a publisher's reconnect.
#[derive(Default)]
struct Audience {
    players: Vec<Arc<Outbox>>,
    ended: bool,
    rebase: crate::rebase::Rebase,
}

impl Broadcast {
    fn new() -> Self {
        Self { gop: Mutex::new(queue::PushQueue::new(0)), state: Mutex::default() }
    }

    /// The next messages come from a new publisher continuing the stream.
    pub(crate) fn continue_after_break(&self) {
        self.state().rebase.continue_after_break();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Audience> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gop(&self) -> std::sync::MutexGuard<'_, queue::PushQueue> {
        self.gop.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes on an audio or video message: one lock, and with nobody playing nothing more
    /// unless it is a decoder configuration (kept for the players to come).
    pub(crate) fn media(&self, kind: MediaKind, timestamp: u32, payload: &Bytes) {
        let role = queue::role(kind, payload);
        let mut state = self.state();
        let timestamp = state.rebase.apply(timestamp);
        if state.players.is_empty() {
            if role == Role::Config {
                self.gop().push(Item::Media { kind, timestamp, payload: payload.clone(), role });
            }
            return;
        }
        self.hand_on(
            &mut state.players,
            Item::Media { kind, timestamp, payload: payload.clone(), role },
        );
    }

    /// Passes on `onMetaData` (its AMF0 values).
    pub(crate) fn metadata(&self, values: &Bytes) {
        let mut state = self.state();
        if state.players.is_empty() {
            self.gop().push(Item::Metadata(values.clone()));
            return;
        }
        self.hand_on(&mut state.players, Item::Metadata(values.clone()));
    }

    fn hand_on(&self, players: &mut Vec<Arc<Outbox>>, item: Item) {
        // A player that left dropped its handle.
        players.retain(|player| Arc::strong_count(player) > 1);
        if players.is_empty() {
            let mut gop = self.gop();
            gop.set_limit(0);
            gop.push(item);
            return;
        }
        self.gop().push(item.clone());
        for player in players.iter() {
            player.push(item.clone());
        }
    }

    /// The stream's latest metadata and configurations, which the broadcast always keeps.
    pub(crate) fn seed(&self) -> Vec<Item> {
        self.gop().seed()
    }

    /// Players now.
    pub(crate) fn player_count(&self) -> usize {
        let mut state = self.state();
        state.players.retain(|player| Arc::strong_count(player) > 1);
        state.players.len()
    }

    /// A new player's outbox of at most `limit` bytes, seeded with the configurations and
    /// the latest keyframe onwards; `None` once the publish ended.
    pub(crate) fn join(&self, limit: usize) -> Option<Arc<Outbox>> {
        let mut state = self.state();
        if state.ended {
            return None;
        }
        let mut gop = self.gop();
        gop.set_limit(MAX_GOP_CACHE_BYTES);
        let outbox = Arc::new(Outbox::new(limit));
        {
            let mut queue = outbox.lock();
            for item in gop.snapshot() {
                queue.push(item);
            }
            queue.start();
        }
        state.players.push(Arc::clone(&outbox));
        Some(outbox)
    }

    /// The publish ended: every player is told after what it has queued, and nobody joins.
    pub(crate) fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        for player in state.players.drain(..) {
            player.end();
        }
    }
}

/// The broadcasts of the live publishes, by stream name.
#[derive(Default)]
pub(crate) struct Broadcasts {
    streams: Mutex<HashMap<String, Arc<Broadcast>>>,
}

impl Broadcasts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Broadcast>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The broadcast of a publish of `stream` starting now: a new one, or `continued` (an
    /// interrupted publish's, whose players waited) . Any other is replaced, its players
    /// ended.
    pub(crate) fn open(&self, stream: &str, continued: Option<Arc<Broadcast>>) -> Arc<Broadcast> {
        let broadcast = continued.unwrap_or_else(|| Arc::new(Broadcast::new()));
        if let Some(old) = self.lock().insert(stream.to_owned(), Arc::clone(&broadcast))
            && !Arc::ptr_eq(&old, &broadcast)
        {
            old.end();
        }
        broadcast
    }

    /// Ends `broadcast` of `stream`, and forgets it unless a newer publish replaced it.
    pub(crate) fn close(&self, stream: &str, broadcast: &Arc<Broadcast>) {
        broadcast.end();
        let mut streams = self.lock();
        if streams.get(stream).is_some_and(|current| Arc::ptr_eq(current, broadcast)) {
            streams.remove(stream);
        }
    }

    /// The live broadcast of `stream`.
    pub(crate) fn get(&self, stream: &str) -> Option<Arc<Broadcast>> {
        self.lock().get(stream).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_leave_the_publishers_their_places() {
        let limits = PlayLimits::default();
        let mut connections = crate::limits::Limits::default();
        // 1,024 connections, 256 streams: 768 players.
        assert_eq!(player_room(&limits, &connections), 768);
        connections.max_streams = 10_000;
        assert_eq!(player_room(&limits, &connections), 512, "at most half is kept");
        connections.max_connections = 100_000;
        assert_eq!(player_room(&limits, &connections), MAX_PLAYERS);
        connections.max_connections = 1;
        assert_eq!(player_room(&limits, &connections), 1);
    }

    fn video(role: Role) -> Bytes {
        Bytes::from_static(match role {
            Role::Config => &[0x17, 0, 0, 0, 0, 1],
            Role::Keyframe => &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65],
            Role::Frame => &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41],
        })
    }

    fn drain(outbox: &Outbox) -> Vec<Role> {
        let mut queue = outbox.lock();
        std::iter::from_fn(|| queue.pop())
            .filter_map(|item| match item {
                Item::Media { role, .. } => Some(role),
                Item::Metadata(_) => None,
            })
            .collect()
    }

    #[test]
    fn players_start_at_the_latest_keyframe_once_anyone_plays() {
        let broadcast = Broadcast::new();
        broadcast.media(MediaKind::Video, 0, &video(Role::Config));
        broadcast.media(MediaKind::Video, 0, &video(Role::Keyframe));
        broadcast.media(MediaKind::Video, 40, &video(Role::Frame));
        // Nobody played yet: nothing but the configuration is kept.
        assert_eq!(broadcast.gop().bytes(), 0);
        let first = broadcast.join(1 << 20).unwrap();
        broadcast.media(MediaKind::Video, 80, &video(Role::Frame));
        broadcast.media(MediaKind::Audio, 90, &Bytes::from_static(&[0xaf, 1, 0]));
        assert_eq!(drain(&first), [], "the first player waits for a keyframe");
        broadcast.media(MediaKind::Video, 2000, &video(Role::Keyframe));
        broadcast.media(MediaKind::Video, 2040, &video(Role::Frame));
        // Its configuration at the keyframe's time: its clock starts there, at 0.
        let items: Vec<(Role, u32)> = std::iter::from_fn(|| first.lock().pop())
            .filter_map(|item| match item {
                Item::Media { role, timestamp, .. } => Some((role, timestamp)),
                Item::Metadata(_) => None,
            })
            .collect();
        assert_eq!(items, [(Role::Config, 2000), (Role::Keyframe, 2000), (Role::Frame, 2040)]);
        // A second player gets the cached group of pictures at once.
        let second = broadcast.join(1 << 20).unwrap();
        assert_eq!(drain(&second), [Role::Config, Role::Keyframe, Role::Frame]);
        // Players that leave are forgotten; with none left, the cache holds no media.
        drop((first, second));
        broadcast.media(MediaKind::Video, 2080, &video(Role::Frame));
        assert!(broadcast.state().players.is_empty());
        assert_eq!(broadcast.gop().bytes(), 0);
    }

    #[test]
    fn the_end_reaches_every_player_and_a_takeover_replaces_the_broadcast() {
        let broadcasts = Broadcasts::default();
        let old = broadcasts.open("cam", None);
        let player = old.join(1 << 20).unwrap();
        let new = broadcasts.open("cam", None);
        assert!(player.lock().ended, "a takeover ends the old publish's players");
        assert!(old.join(1 << 20).is_none(), "a player joined an ended broadcast");
        broadcasts.close("cam", &old);
        assert!(broadcasts.get("cam").is_some_and(|b| Arc::ptr_eq(&b, &new)));
        broadcasts.close("cam", &new);
        assert!(broadcasts.get("cam").is_none());
    }
}
