//! What a push target is sent, and what it is spared when it cannot keep up: one bounded queue
//! per target, filled by the publisher's connection (which never waits for it) and emptied
//! by the target's task.
//!
//! A target starts, and starts again after a reconnect, with the stream's latest metadata and
//! decoder configurations, then the latest keyframe and what followed it (a decoder can start
//! there). When the queue holds more than its limit (the target is slow, or its connection
//! stalls), new media is dropped up to the next video keyframe that arrives with the queue
//! down to half its limit; the configurations are sent again before that keyframe. Audio-only
//! streams drop single frames (each one is a sync point). Configurations and metadata are
//! never dropped for good: the latest of each is kept aside while dropping, or while a queue
//! without video is over its limit (a publisher sending nothing but configurations must not
//! grow it), and sent before the next frame that is queued.

use std::collections::VecDeque;

use bytes::Bytes;
use rtmp::MediaKind;

use crate::seed::Seed;

/// Bytes a target's queue holds before media is dropped: about 10 s of a 6 Mbit/s stream,
/// room for a reconnect's handshake and a slow link's burst; per target, so 8 targets of
/// 1,000 streams stay bounded.
pub const MAX_QUEUE_BYTES: usize = 8 << 20;

/// What one message is to a decoder starting or resuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A decoder configuration (AVC/HEVC/AV1/VP9 sequence header, AAC AudioSpecificConfig).
    Config,
    /// A video keyframe: a decoder may start here.
    Keyframe,
    /// Any other frame.
    Frame,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `onMetaData`'s AMF0 values (the name and the properties).
    Metadata(Bytes),
    /// An audio or video message: its FLV tag body as the publisher sent it.
    Media {
        /// Audio or video.
        kind: MediaKind,
        /// RTMP timestamp.
        timestamp: u32,
        /// The FLV tag body.
        payload: Bytes,
        /// What it is to a decoder.
        role: Role,
    },
}

impl Item {
    /// Its RTMP timestamp (metadata: 0).
    pub fn timestamp(&self) -> u32 {
        match self {
            Self::Metadata(_) => 0,
            Self::Media { timestamp, .. } => *timestamp,
        }
    }

    /// Bytes sent: what it counts as dropped.
    fn len(&self) -> usize {
        match self {
            Self::Metadata(bytes) => bytes.len(),
            Self::Media { payload, .. } => payload.len(),
        }
    }

    /// Bytes held while queued: what counts against the limit. The queue's slot counts,
    /// so a flood of tiny messages is bounded by memory, not by its payload alone.
    fn cost(&self) -> usize {
        self.len() + ITEM_OVERHEAD
    }
}

/// A queued message's own memory besides its payload: its slot in the queue.
const ITEM_OVERHEAD: usize = size_of::<Item>();

/// Audio a waiting queue keeps for a stream without video (each audio frame is a sync
/// point): a target or player starts about this far behind live, not minutes.
pub const AUDIO_ONLY_BACKLOG_MS: u32 = 1000;
/// FLV codec ids whose second byte is a packet type with 0 for the sequence header: AVC
/// (7), and the HEVC (12) and AV1 (13) ids of pre-Enhanced-RTMP encoders.
const CODECS_WITH_PACKET_TYPE: [u8; 3] = [7, 12, 13];
/// SoundFormat 10 (AAC): its second byte is 0 for the AudioSpecificConfig.
const SOUND_FORMAT_AAC: u8 = 10;
/// SoundFormat 9: an Enhanced RTMP audio header (ExAudioTagHeader), packet type in the low
/// nibble, 0 for SequenceStart.
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// The classification of an FLV tag body for [`Item::Media`], from its header bits alone
/// (the legacy header and Enhanced RTMP's), for codecs the packager reads and those it
/// does not.
pub fn role(kind: MediaKind, payload: &[u8]) -> Role {
    let Some(&first) = payload.first() else { return Role::Frame };
    match kind {
        MediaKind::Video => {
            let frame_type = (first >> 4) & 0x07;
            let config = if first & 0x80 != 0 {
                // ExVideoTagHeader: PacketType 0 is SequenceStart.
                first & 0x0f == 0
            } else {
                CODECS_WITH_PACKET_TYPE.contains(&(first & 0x0f)) && payload.get(1) == Some(&0)
            };
            if config {
                Role::Config
            } else if frame_type == 1 {
                Role::Keyframe
            } else {
                Role::Frame
            }
        }
        MediaKind::Audio => {
            let config = match first >> 4 {
                SOUND_FORMAT_AAC => payload.get(1) == Some(&0),
                SOUND_FORMAT_EX_HEADER => first & 0x0f == 0,
                _ => false,
            };
            if config { Role::Config } else { Role::Frame }
        }
    }
}

/// One target's queue and its drop policy.
#[derive(Debug)]
pub struct PushQueue {
    items: VecDeque<Item>,
    bytes: usize,
    limit: usize,
    /// The target is not publishing: the queue keeps the latest keyframe onwards, for when it
    /// is.
    waiting: bool,
    /// Overflowed: media is dropped up to a keyframe.
    dropping: bool,
    /// Started before any keyframe was queued: it starts at the next one.
    start_pending: bool,
    /// Configurations or metadata were kept aside instead of queued (over the limit
    /// without video): they go before the next frame queued.
    configs_owed: bool,
    /// A video track exists (else audio frames are sync points).
    video: bool,
    /// The latest metadata and configurations, sent first at every (re)start.
    seed: Seed,
    /// Bytes and messages dropped, for metrics and events.
    pub dropped_bytes: u64,
    /// Messages dropped.
    pub dropped_messages: u64,
    /// The publish ended: what is queued is the rest.
    pub ended: bool,
}

impl PushQueue {
    /// An empty queue of at most `limit` bytes, waiting for its target.
    pub fn new(limit: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            limit,
            waiting: true,
            dropping: false,
            start_pending: false,
            configs_owed: false,
            video: false,
            seed: Seed::default(),
            dropped_bytes: 0,
            dropped_messages: 0,
            ended: false,
        }
    }

    /// Bytes queued, with each message's own overhead.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds what the publisher sent.
    pub fn push(&mut self, item: Item) {
        match &item {
            Item::Metadata(bytes) => {
                self.seed.metadata = Some(bytes.clone());
                self.enqueue_config(item);
            }
            Item::Media { role: Role::Config, kind, payload, .. } => {
                // A video configuration says the stream has video: a start waits for its
                // keyframe (and the audio before it is not sent), however the queue began.
                self.video |= *kind == MediaKind::Video;
                let changed = self.seed.keep_config(*kind, payload);
                if self.waiting && changed {
                    // What is queued was coded with the old configuration: a start there
                    // would pair it with the new one.
                    self.clear();
                }
                self.enqueue_config(item);
            }
            Item::Media { role: Role::Keyframe, .. } => {
                self.video = true;
                if self.waiting {
                    // Only the latest keyframe onwards is worth sending to a target that
                    // starts.
                    self.clear();
                    if self.start_pending {
                        self.start_pending = false;
                        self.waiting = false;
                        for config in self.configs_at(item.timestamp()) {
                            self.enqueue(config);
                        }
                    }
                    self.enqueue(item);
                } else if self.dropping && self.bytes > self.limit / 2 {
                    self.drop_item(&item);
                } else {
                    if self.dropping || self.configs_owed {
                        self.dropping = false;
                        self.configs_owed = false;
                        for config in self.configs_at(item.timestamp()) {
                            self.enqueue(config);
                        }
                    }
                    self.enqueue(item);
                }
            }
            Item::Media { kind, .. } => {
                let before_keyframe = (self.video && self.items.is_empty() && self.waiting)
                    || (!self.video && *kind == MediaKind::Video)
                    || (self.start_pending && *kind == MediaKind::Video);
                let audio_only = !self.video && *kind == MediaKind::Audio;
                if self.dropping || before_keyframe || (audio_only && self.bytes > self.limit) {
                    self.drop_item(&item);
                } else {
                    let timestamp = item.timestamp();
                    if std::mem::take(&mut self.configs_owed) {
                        for config in self.configs_at(timestamp) {
                            self.enqueue(config);
                        }
                    }
                    self.enqueue(item);
                    if audio_only && self.waiting {
                        // Only the last second of audio is worth a start.
                        while self.items.front().is_some_and(|first| {
                            timestamp.wrapping_sub(first.timestamp()) > AUDIO_ONLY_BACKLOG_MS
                        }) {
                            self.pop();
                        }
                    }
                }
            }
        }
        if self.bytes > self.limit {
            if self.waiting {
                // A group of pictures longer than the queue: start again at the next keyframe.
                self.clear();
            } else if self.video {
                self.dropping = true;
            }
        }
    }

    /// The target is publishing: what it gets first (metadata, configurations, then the
    /// latest keyframe onwards) comes out of [`pop`](Self::pop) from now on. Without a
    /// keyframe queued yet (a video stream), it all starts with the next keyframe.
    pub fn start(&mut self) {
        if self.video && self.items.is_empty() {
            self.start_pending = true;
            return;
        }
        let at = self.items.front().map_or(0, Item::timestamp);
        let mut first: VecDeque<Item> = self.configs_at(at).into();
        first.extend(self.items.drain(..));
        self.items = first;
        self.bytes = self.items.iter().map(Item::cost).sum();
        self.waiting = false;
        self.dropping = false;
        self.configs_owed = false;
    }

    /// The target's connection ended: wait for the next start.
    pub fn stop(&mut self) {
        self.clear();
        self.waiting = true;
        self.dropping = false;
        self.start_pending = false;
        self.configs_owed = false;
    }

    /// What a queue starting now would send first: the configurations, then the latest
    /// keyframe onwards (a waiting queue's content), without taking it.
    pub fn snapshot(&self) -> Vec<Item> {
        let at = self.items.front().map_or(0, Item::timestamp);
        let mut all = self.configs_at(at);
        all.extend(self.items.iter().cloned());
        all
    }

    /// The metadata and configurations kept, as items (stamped 0: a queue given them keeps
    /// them and sends them at its start's keyframe).
    pub(crate) fn seed(&self) -> Vec<Item> {
        self.configs_at(0)
    }

    /// Changes the limit; a waiting queue over it starts again at the next keyframe.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        if self.waiting && self.bytes > limit {
            self.clear();
        }
    }

    /// The next message to send.
    pub fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        self.bytes -= item.cost();
        Some(item)
    }

    /// The metadata and configurations, sent again before the media at `timestamp` (with
    /// that timestamp: a receiver never sees time go back).
    fn configs_at(&self, timestamp: u32) -> Vec<Item> {
        let metadata = self.seed.metadata.clone().map(Item::Metadata);
        let configs = self.seed.configs().map(|(kind, payload)| Item::Media {
            kind,
            timestamp,
            payload: payload.clone(),
            role: Role::Config,
        });
        metadata.into_iter().chain(configs).collect()
    }

    /// Queues a configuration or metadata, unless the queue waits or drops (the latest of
    /// each is kept aside, sent at the start or the resumption) or is over its limit (then
    /// owed to the next frame queued).
    fn enqueue_config(&mut self, item: Item) {
        if self.waiting || self.dropping {
            return;
        }
        if self.bytes > self.limit {
            self.configs_owed = true;
            self.drop_item(&item);
        } else {
            self.enqueue(item);
        }
    }

    fn enqueue(&mut self, item: Item) {
        self.bytes += item.cost();
        self.items.push_back(item);
    }

    fn drop_item(&mut self, item: &Item) {
        self.dropped_bytes += item.len() as u64;
        self.dropped_messages += 1;
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(kind: MediaKind, role: Role, len: usize) -> Item {
        Item::Media { kind, timestamp: 0, payload: Bytes::from(vec![0; len]), role }
    }

    fn video(role: Role, len: usize) -> Item {
        media(MediaKind::Video, role, len)
    }

    fn roles(queue: &mut PushQueue) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop())
            .map(|item| match item {
                Item::Metadata(_) => "meta",
                Item::Media { kind: MediaKind::Audio, role: Role::Config, .. } => "acfg",
                Item::Media { kind: MediaKind::Video, role: Role::Config, .. } => "vcfg",
                Item::Media { role: Role::Keyframe, .. } => "key",
                Item::Media { kind: MediaKind::Audio, .. } => "audio",
                Item::Media { .. } => "frame",
            })
            .collect()
    }

    #[test]
    fn a_starting_target_gets_configurations_then_the_latest_keyframe_onwards() {
        let mut queue = PushQueue::new(1000);
        queue.push(Item::Metadata(Bytes::from_static(b"m")));
        queue.push(video(Role::Config, 10));
        queue.push(media(MediaKind::Audio, Role::Config, 2));
        queue.push(video(Role::Frame, 10)); // before any keyframe: useless
        queue.push(video(Role::Keyframe, 100));
        queue.push(video(Role::Frame, 10));
        queue.push(video(Role::Keyframe, 100));
        queue.push(media(MediaKind::Audio, Role::Frame, 5));
        queue.start();
        assert_eq!(roles(&mut queue), ["meta", "acfg", "vcfg", "key", "audio"]);
        // Streaming: everything goes through in order.
        queue.push(video(Role::Frame, 10));
        queue.push(video(Role::Config, 10));
        assert_eq!(roles(&mut queue), ["frame", "vcfg"]);
        // Reconnect: the same again from the next keyframe.
        queue.stop();
        queue.push(video(Role::Frame, 10));
        queue.push(video(Role::Keyframe, 100));
        queue.start();
        assert_eq!(roles(&mut queue), ["meta", "acfg", "vcfg", "key"]);
    }

    #[test]
    fn overflow_drops_to_a_keyframe_once_the_queue_drained_and_sends_configurations_again() {
        // Room for ten frames of 100 bytes.
        let frame = 100 + ITEM_OVERHEAD;
        let mut queue = PushQueue::new(10 * frame);
        queue.push(video(Role::Config, 10));
        queue.push(video(Role::Keyframe, 100));
        queue.start();
        roles(&mut queue);
        // The target stops reading: the queue fills past its limit.
        for _ in 0..11 {
            queue.push(video(Role::Frame, 100));
        }
        assert!(queue.bytes() > 10 * frame);
        queue.push(video(Role::Frame, 100));
        queue.push(video(Role::Keyframe, 100)); // the queue is still full: dropped too
        assert_eq!(queue.dropped_messages, 2);
        assert_eq!(queue.dropped_bytes, 200);
        let bytes_before = queue.bytes();
        // Never more than the limit plus one message.
        assert!(bytes_before <= 11 * frame);
        // The target drains; frames keep being dropped until a keyframe.
        while queue.bytes() > 4 * frame {
            queue.pop();
        }
        queue.push(video(Role::Frame, 100));
        assert_eq!(queue.dropped_messages, 3);
        queue.push(video(Role::Config, 12)); // a new configuration while dropping: kept aside
        queue.push(video(Role::Keyframe, 100));
        queue.push(video(Role::Frame, 100));
        let sent = roles(&mut queue);
        assert_eq!(&sent[sent.len() - 3..], ["vcfg", "key", "frame"], "{sent:?}");
    }

    #[test]
    fn audio_only_streams_drop_single_frames() {
        let frame = 10 + ITEM_OVERHEAD;
        let mut queue = PushQueue::new(10 * frame);
        queue.push(media(MediaKind::Audio, Role::Config, 2));
        queue.start();
        for _ in 0..30 {
            queue.push(media(MediaKind::Audio, Role::Frame, 10));
        }
        assert!(queue.bytes() <= 11 * frame, "{}", queue.bytes());
        assert!(queue.dropped_messages > 0);
        queue.pop();
        queue.pop();
        queue.push(media(MediaKind::Audio, Role::Frame, 10));
        assert_eq!(roles(&mut queue).last(), Some(&"audio"));
    }

    /// Configurations or metadata alone (no frame ever) do not grow a queue past its limit;
    /// those kept aside go before the next frame, so a decoder never misses a change.
    #[test]
    fn configurations_alone_stay_within_the_limit_and_are_owed_to_the_next_frame() {
        let limit = 4 * (5 + ITEM_OVERHEAD);
        let mut queue = PushQueue::new(limit);
        queue.start();
        for n in 0..1000u32 {
            queue.push(Item::Metadata(Bytes::from(n.to_be_bytes().to_vec())));
            let payload = Bytes::from([0xaf, 0, 0x12, 0x10, n as u8].to_vec());
            let kind = MediaKind::Audio;
            queue.push(Item::Media { kind, timestamp: n, payload, role: Role::Config });
        }
        assert!(queue.bytes() <= limit + 5 + ITEM_OVERHEAD, "{}", queue.bytes());
        assert!(queue.dropped_messages > 1900, "{}", queue.dropped_messages);
        while queue.bytes() > limit / 2 {
            queue.pop();
        }
        queue.push(media(MediaKind::Audio, Role::Frame, 10));
        let sent: Vec<Item> = std::iter::from_fn(|| queue.pop()).collect();
        let [.., meta, config, frame] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!(meta, &Item::Metadata(Bytes::from(999u32.to_be_bytes().to_vec())));
        assert!(matches!(config, Item::Media { payload, .. } if payload[4] == 999u32 as u8));
        assert!(matches!(frame, Item::Media { role: Role::Frame, .. }));
    }

    #[test]
    fn a_waiting_queue_longer_than_its_limit_starts_again_at_the_next_keyframe() {
        let mut queue = PushQueue::new(250);
        queue.push(video(Role::Keyframe, 100));
        queue.push(video(Role::Frame, 100));
        queue.push(video(Role::Frame, 100));
        assert_eq!(queue.bytes(), 0);
        queue.push(video(Role::Frame, 100));
        queue.push(video(Role::Keyframe, 100));
        queue.start();
        assert_eq!(roles(&mut queue), ["key"]);
    }

    #[test]
    fn a_start_before_any_keyframe_waits_for_the_next_one() {
        let mut queue = PushQueue::new(1000);
        queue.push(video(Role::Config, 10));
        queue.push(video(Role::Keyframe, 100));
        queue.stop(); // reconnect: nothing queued, a keyframe seen before
        queue.start();
        queue.push(video(Role::Frame, 10));
        queue.push(media(MediaKind::Audio, Role::Frame, 5));
        assert_eq!(roles(&mut queue), [] as [&str; 0], "nothing before the keyframe");
        queue.push(video(Role::Keyframe, 100));
        queue.push(video(Role::Frame, 10));
        assert_eq!(roles(&mut queue), ["vcfg", "key", "frame"]);
        // A stream whose video has not started: video before its first keyframe is dropped.
        let mut fresh = PushQueue::new(1000);
        fresh.start();
        fresh.push(video(Role::Frame, 10));
        fresh.push(video(Role::Keyframe, 100));
        assert_eq!(roles(&mut fresh), ["key"]);
    }

    #[test]
    fn a_snapshot_seeds_a_new_queue_from_the_latest_keyframe() {
        let mut cache = PushQueue::new(0);
        cache.push(video(Role::Config, 10));
        cache.push(video(Role::Keyframe, 100));
        assert!(cache.snapshot().len() == 1, "a zero limit keeps configurations only");
        cache.set_limit(1000);
        cache.push(video(Role::Keyframe, 100));
        cache.push(video(Role::Frame, 10));
        let mut player = PushQueue::new(1000);
        for item in cache.snapshot() {
            player.push(item);
        }
        player.start();
        assert_eq!(roles(&mut player), ["vcfg", "key", "frame"]);
        assert_eq!(cache.bytes(), 110 + 2 * ITEM_OVERHEAD, "the snapshot took nothing");
    }

    #[test]
    fn a_waiting_audio_only_queue_keeps_the_last_second() {
        let mut queue = PushQueue::new(1 << 20);
        for n in 0..200u32 {
            let item = Item::Media {
                kind: MediaKind::Audio,
                timestamp: n * 21,
                payload: Bytes::from(vec![0; 10]),
                role: Role::Frame,
            };
            queue.push(item);
        }
        queue.start();
        let first = queue.pop().unwrap().timestamp();
        assert!(199 * 21 - first <= AUDIO_ONLY_BACKLOG_MS, "starts {first} ms in");
    }

    #[test]
    fn a_new_configuration_while_waiting_drops_what_the_old_one_coded() {
        let mut queue = PushQueue::new(1000);
        queue.push(video(Role::Config, 10));
        queue.push(video(Role::Keyframe, 100));
        queue.push(video(Role::Config, 11));
        queue.push(video(Role::Frame, 10));
        queue.start();
        // Nothing queued is decodable with the new configuration: start at the next keyframe.
        queue.push(video(Role::Keyframe, 100));
        assert_eq!(roles(&mut queue), ["vcfg", "key"]);
    }

    #[test]
    fn tags_are_classified_as_a_decoder_needs() {
        assert_eq!(role(MediaKind::Video, &[0x17, 0, 0, 0, 0, 1]), Role::Config);
        assert_eq!(role(MediaKind::Video, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]), Role::Keyframe);
        assert_eq!(role(MediaKind::Video, &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]), Role::Frame);
        assert_eq!(role(MediaKind::Video, &[0x12, 0, 0]), Role::Keyframe); // Sorenson
        assert_eq!(role(MediaKind::Audio, &[0xaf, 0, 0x12, 0x10]), Role::Config);
        assert_eq!(role(MediaKind::Audio, &[0xaf, 1, 0x21]), Role::Frame);
        // Enhanced RTMP: SequenceStart of hvc1, a CodedFrames keyframe, an audio config.
        assert_eq!(role(MediaKind::Video, &[0x90, b'h', b'v', b'c', b'1', 1]), Role::Config);
        assert_eq!(role(MediaKind::Video, &[0x91, b'h', b'v', b'c', b'1', 0]), Role::Keyframe);
        assert_eq!(role(MediaKind::Audio, &[0x90, b'O', b'p', b'u', b's']), Role::Config);
        assert_eq!(role(MediaKind::Video, &[]), Role::Frame);
    }
}
