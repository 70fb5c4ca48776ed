//! The in-memory stream store: the one piece of state the ingest side writes and the HTTP
//! side reads.
//!
//! Each stream name has a slot holding its playlist (rendered once per change) and its recent
//! segments as shared [`Bytes`], so a response clones a reference count, never the media.
//! MPEG-TS segments arrive whole ([`Publication::push`]); fMP4 arrives as the packager makes
//! it ([`Publication::push_fmp4_all`], once per packager input): init segments, then each
//! segment's fragments and parts, so a low-latency playlist lists a segment while it is
//! written ([`crate::open_segment`]) and waiting requests are woken as it grows
//! ([`crate::blocking`]).
//! With [`SegmentFiles`], MPEG-TS segments are written into their stream's file as the
//! packager makes them ([`FileSink`]), and an fMP4 segment fetched a second time moves there
//! (see [`PROMOTE_AT_FETCH`]). A segment that leaves the retention window is freed when the last
//! response holding it finishes. Time only comes in as an argument ([`StreamStore::reap`]).

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use packager::playlist::{
    Entry as PlaylistEntry, LowLatency, MediaPlaylist, OpenSegment as OpenEntry, Part,
};
use packager::segmenter::STAGING_BYTES;
use packager::segmenter::ticks_to_duration;
use packager::{BufferPool, FragmentOutput, Segment, SegmentSink};
use tokio::sync::watch;
use tracing::warn;

use crate::blocking::{self, BLOCK_TARGETS, Changes, Directives, LiveEdge, Reload};
use crate::memfd::MemfdSegments;
use crate::open_segment::{HeldPart, OpenSegment, PartRead, part_uri};
use crate::segment_files::{Pieces, SegmentBody, SegmentFile, SegmentFileWriter, SegmentFiles};
use crate::viewers::{ViewerSession, Viewers};

/// The fetch of an fMP4 segment at which it moves from the heap to its stream's segment file
/// (when the store has [`SegmentFiles`]; MPEG-TS segments are written there from the start,
/// see [`FileSink`]). Writing it there copies it once, as sending it from the
/// heap to one viewer does; from then on viewers are sent the file without a copy. So a
/// segment nobody or one viewer fetches stays in the heap (no extra copy, no extra pages),
/// and a popular one moves at its second fetch. A segment in pieces (without parts) that
/// stays in the heap (no segment files, or its write failed) is joined into one buffer at
/// this fetch instead.
pub const PROMOTE_AT_FETCH: u32 = 2;
/// Segments a [`FileSink`] or [`ChunkSink`] ended that their [`Publication::push`] has not
/// taken yet: the
/// publisher pushes each as the packager returns it, so one waits at a time; beyond this the
/// oldest goes (its push then finds no file of its id and skips the segment).
const MAX_ENDED_WAITING: usize = 4;
/// A name without a stream this long forgets its media sequence floor, and a new stream
/// of it numbers from 0: its segment names carry a new generation, so no URI is reused, and
/// no player or cache keeps an ended playlist that long. The floors are then the names of a
/// day, not of every stream ever published (the file they are saved in is rewritten each
/// second one changes).
pub const SEQUENCE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);
/// How often [`StreamStore::reap`] looks for floors to forget (a walk over all of them).
const FORGET_INTERVAL: Duration = Duration::from_secs(60);
/// A viewer counts while it fetched the playlist within this many target durations.
const VIEWER_WINDOW_TARGETS: u32 = 3;

/// Settings of a [`StreamStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Segments listed in the live playlist. As many and one more stay available after they
    /// leave it, for players still fetching them: RFC 8216 §6.2.2 keeps a removed segment
    /// for its own duration plus that of the longest playlist that held it (counted in
    /// segments, not time: after a long-GOP segment the count is short), one more than the
    /// playlist lists when it lists more than its window.
    pub window: usize,
    /// The playlist's target duration before any segment is longer.
    pub target_duration: Duration,
    /// Low-latency HLS: playlists list parts of at most this long (fMP4 streams).
    pub part_target: Option<Duration>,
    /// How long the playlist of a publish that was interrupted (not ended by its publisher
    /// or an operator, see [`Publication::interrupted`]) stays open, without EXT-X-ENDLIST,
    /// for the publisher to come back and continue it; zero ends it at once.
    pub reconnect_window: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            window: 6,
            target_duration: Duration::from_secs(2),
            part_target: None,
            reconnect_window: Duration::ZERO,
        }
    }
}

/// What the store knows of one stream, for the stats API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The public name.
    pub name: String,
    /// Being published now.
    pub live: bool,
    /// Not published now, and open for the reconnect window: its publisher dropped without
    /// stopping, and players wait for it.
    pub reconnecting: bool,
    /// Segments listed in the playlist.
    pub segments_listed: usize,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// EXT-X-TARGETDURATION in seconds.
    pub target_duration: u64,
    /// Distinct recent viewers (see [`StreamStore::viewers`]).
    pub viewers: u64,
    /// Only viewers with a credential may watch it.
    pub private: bool,
}

/// What a stream's media is, as a multivariant playlist describes a rendition (the
/// publisher's side knows it; the store keeps it for HTTP).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaFacts {
    /// RFC 6381 codec strings of its tracks.
    pub codecs: Vec<String>,
    /// Width and height in pixels.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// One stream as a rendition of a multivariant playlist: its media, bit rates over the
/// segments it lists, and where its live edge is (for rendition reports).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// What its media is.
    pub media: MediaFacts,
    /// The highest bit rate of a listed segment (BANDWIDTH, RFC 8216 §4.3.4.2).
    pub peak_bps: u64,
    /// The bit rate over the listed segments (AVERAGE-BANDWIDTH).
    pub average_bps: u64,
    /// Being published now.
    pub live: bool,
    /// Its playlist has EXT-X-ENDLIST.
    pub ended: bool,
    /// Only viewers with a credential may watch it.
    pub private: bool,
    /// The media sequence number of its last complete segment and, in low latency, the
    /// index of the last complete part of the segment being written after it.
    pub last: Option<(u64, Option<usize>)>,
}

/// Bytes of segments held, by where (see [`StreamStore::segment_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentBytes {
    /// In the heap.
    pub heap: usize,
    /// In segment files (outside the process's RSS, in RAM all the same).
    pub files: usize,
    /// Of `heap` and `files`, the bytes of MPEG-TS segments still being written.
    pub writing: usize,
}

/// Why a publish could not claim its stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeginError {
    /// The name is live already.
    #[error("stream {0:?} is already being published")]
    AlreadyLive(String),
    /// The limit of live streams is reached.
    #[error("{0} streams are live, the limit")]
    TooManyStreams(usize),
}

/// Where a stream's numbering stands, for another node to continue it (RFC 8216 §6.2.1,
/// §6.2.2: media sequence numbers only grow; discontinuity sequence numbers stay consistent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Numbering {
    /// The media sequence number of the next segment.
    pub next_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE once every listed segment has slid out.
    pub discontinuity_sequence: u64,
}

/// A name's media sequence floor.
#[derive(Debug, Default, Clone, Copy)]
struct Floor {
    /// A new stream of the name starts at this sequence number at least.
    next: u64,
    /// Since when the name has had no stream, as [`StreamStore::reap`] saw it.
    unused_since: Option<Instant>,
}

/// All streams, live and recently ended, with popular segments in files of `F` (memory files
/// in the server).
#[derive(Debug)]
pub struct StreamStore<F: SegmentFiles = MemfdSegments> {
    streams: DashMap<String, Arc<Slot<F>>>,
    /// Streams being published now.
    live: Arc<AtomicUsize>,
    /// Per name, the media sequence number a new slot starts at: streams that were reaped, or
    /// known from before a restart, never go back to an older sequence (for
    /// [`SEQUENCE_MEMORY`]).
    next_sequences: DashMap<String, Floor>,
    /// When `reap` last looked for floors to forget.
    forgot: Mutex<Option<Instant>>,
    config: StoreConfig,
    /// Where segments go (MPEG-TS as they are written, fMP4 at their second fetch); `None`:
    /// they stay in the heap.
    files: Option<F>,
    /// Recycled buffers shared with the packagers: low-latency parts are joined into them.
    buffers: Arc<BufferPool>,
    /// Per name, the ended stream a new publish replaced, and since when `reap` has seen it:
    /// its segments stay available for a segment and a playlist's duration (RFC 8216
    /// §6.2.2), to players still fetching the rest of its final playlist.
    superseded: DashMap<String, (Arc<Slot<F>>, Option<Instant>)>,
}

#[derive(Debug)]
struct Slot<F: SegmentFiles> {
    /// Distinguishes this slot's segment names from an earlier stream of the same name, so a
    /// cached segment is never served for a different broadcast.
    generation: u64,
    state: RwLock<SlotState<F::File>>,
    /// This stream's segment file writer, opened at the first segment moved or streamed.
    writer: Mutex<Option<F::Writer>>,
    /// Segments streamed into the file or the heap and ended, waiting for their
    /// [`Publication::push`].
    ended: Mutex<VecDeque<Ended<F::File>>>,
    /// Bytes of the segment a [`ChunkSink`] is writing.
    writing_in_heap: AtomicUsize,
    /// Counts playlist changes, for blocked playlist requests.
    changes: watch::Sender<u64>,
    /// Only viewers with a credential may watch it (HTTP checks; the store only keeps it).
    private: AtomicBool,
}

/// A segment a [`FileSink`] or [`ChunkSink`] ended: the id it gave it, and its bytes
/// (`None`: a segment whose bytes could not be kept).
type Ended<File> = (u64, Option<SegmentBody<File>>);

/// A segment in the store.
#[derive(Debug)]
struct Held<File> {
    sequence: u64,
    body: SegmentBody<File>,
    /// Times it was handed out.
    fetches: AtomicU32,
    /// Its parts (low-latency fMP4): views into the segment's heap bytes.
    parts: Vec<HeldPart>,
    /// Its init segment's number (fMP4).
    init: Option<u32>,
}

#[derive(Debug)]
struct SlotState<File> {
    playlist: MediaPlaylist,
    /// The rendered playlist; `None` until the first segment exists.
    rendered: Option<Bytes>,
    /// The rendered playlist delta update (`_HLS_skip=YES`) of low-latency streams, made at
    /// the first request that wants it after each change.
    rendered_skip: std::sync::OnceLock<Bytes>,
    /// fMP4 init segments by number: the current one and those of segments still held.
    inits: VecDeque<(u32, Bytes)>,
    /// The number the next init segment gets.
    next_init: u32,
    /// The fMP4 segment being written.
    open: Option<OpenSegment>,
    /// Segments by media sequence number, oldest first, contiguous.
    segments: VecDeque<Held<File>>,
    live: bool,
    /// The next segment follows a republish.
    resumed: bool,
    /// Recent playlist fetches, for the viewer estimate and limit.
    viewers: Viewers,
    /// Wall-clock time of a media time, set at the first segment and at each discontinuity,
    /// from which every segment's EXT-X-PROGRAM-DATE-TIME follows.
    anchor: Option<(SystemTime, i64)>,
    /// When [`StreamStore::reap`] first saw the stream ended.
    ended_seen: Option<Instant>,
    /// When [`StreamStore::reap`] first saw the stream interrupted (not live, not ended).
    interrupted_seen: Option<Instant>,
    /// What its media is (set by the publisher's side).
    media: MediaFacts,
    /// Bits and duration of the listed segments, oldest first, for the bit rates.
    rates: VecDeque<(u64, Duration)>,
}

impl<F: SegmentFiles> Slot<F> {
    fn read(&self) -> RwLockReadGuard<'_, SlotState<F::File>> {
        // A panic while holding the lock leaves consistent data (every update is one
        // assignment at a time), so a poisoned lock is still usable.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SlotState<F::File>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes blocked requests (playlists, and parts: a part may have ended).
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Keeps a segment a sink ended as `id` for its [`Publication::push`].
    fn ended(&self, id: u64, body: Option<SegmentBody<F::File>>) {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.push_back((id, body));
        while ended.len() > MAX_ENDED_WAITING {
            ended.pop_front();
        }
    }

    /// Moves segment `sequence` (whose bytes are `pieces`) to this stream's file from
    /// `files`, and returns its body: the file's, or still `pieces` if it could not be
    /// written. The write happens outside the state lock, so viewers of the stream do not
    /// wait on it.
    fn promote(&self, files: &F, sequence: u64, pieces: Pieces) -> SegmentBody<F::File> {
        let file = {
            let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if writer.is_none() {
                *writer = files.open();
            }
            writer.as_mut().and_then(|writer| writer.write(pieces.as_slice()))
        };
        let Some(file) = file else { return SegmentBody::Memory(pieces) };
        self.replace_body(sequence, SegmentBody::File(file))
    }

    /// Makes `body` segment `sequence`'s (if it is still held) and returns it.
    fn replace_body(&self, sequence: u64, body: SegmentBody<F::File>) -> SegmentBody<F::File> {
        let mut state = self.write();
        if let Some(held) = state.segments.iter_mut().find(|held| held.sequence == sequence) {
            held.body = body.clone();
        }
        body
    }

    /// Joins segment `sequence`'s `pieces` into one recycled buffer and returns it as the
    /// segment's body: a segment in the heap fetched a second time is sent in one piece from
    /// then on (hyper writes each piece with a system call of its own, its write queue being
    /// capped by the same `max_buf_size` as our 16 KiB request heads, and in 32 KiB pieces a
    /// wrk segment request cost about 40 % more server CPU than in one buffer). Only a segment without
    /// parts: a low-latency segment's parts keep its pieces, so joining would hold its bytes
    /// twice.
    fn join(&self, pool: &Arc<BufferPool>, sequence: u64, pieces: &Pieces) -> SegmentBody<F::File> {
        let len = pieces.len();
        // A pooled one up to a quarter larger, or a new one of its size class, so that the
        // buffers of joined segments of similar sizes serve each other.
        let mut buffer = pool.take(len, len);
        for piece in pieces.as_slice() {
            buffer.extend_from_slice(piece);
        }
        self.replace_body(sequence, SegmentBody::Memory(Pieces::from(pool.share(buffer))))
    }
}

impl<File> SlotState<File> {
    /// Notes a segment of `bytes` lasting `duration` (just listed) for the bit rates,
    /// keeping as many as the playlist lists.
    fn note_rate(&mut self, bytes: usize, duration: Duration) {
        self.rates.push_back((bytes as u64 * 8, duration));
        while self.rates.len() > self.playlist.window().0.max(1) {
            self.rates.pop_front();
        }
    }

    fn render(&mut self) {
        if !self.playlist.is_empty() {
            self.rendered = Some(Bytes::from(self.playlist.render()));
            self.rendered_skip = std::sync::OnceLock::new();
        }
    }

    /// The wall-clock time of media time `start`, for EXT-X-PROGRAM-DATE-TIME. A segment
    /// after a discontinuity (or the first) anchors media time to `wall`, the wall-clock
    /// time of `start`.
    fn program_date_time(
        &mut self,
        start: i64,
        wall: SystemTime,
        anchor: bool,
    ) -> Option<SystemTime> {
        if anchor || self.anchor.is_none() {
            self.anchor = Some((wall, start));
        }
        self.anchor.map(|(wall, media)| {
            let offset = start - media;
            if offset >= 0 {
                wall + ticks_to_duration(offset)
            } else {
                wall - ticks_to_duration(-offset)
            }
        })
    }

    /// Where a low-latency stream is, for blocked requests.
    fn live_edge(&self, part_target: Duration) -> LiveEdge {
        LiveEdge {
            open_sequence: self.playlist.next_sequence(),
            open_parts: self.open.as_ref().map_or(0, |open| open.parts.len() as u64),
            closed_parts: self.playlist.last_segment_parts() as u64,
            ended: self.playlist.is_ended(),
            part_target,
        }
    }
}

impl StreamStore {
    /// An empty store whose segments stay in the heap; see
    /// [`StreamStore::with_segment_files`].
    pub fn new(config: StoreConfig) -> Self {
        Self::with_files(config, None)
    }
}

impl<F: SegmentFiles> StreamStore<F> {
    /// An empty store that moves segments fetched [`PROMOTE_AT_FETCH`] times to files from
    /// `files` (a stream whose writer cannot be opened, or a segment that cannot be written,
    /// stays in the heap).
    pub fn with_segment_files(config: StoreConfig, files: F) -> Self {
        Self::with_files(config, Some(files))
    }

    /// The sink `publication`'s MPEG-TS segments go to as the packager makes them: its
    /// stream's segment file ([`FileSink`]), or, without segment files or when the stream's
    /// cannot be opened, recycled heap buffers ([`ChunkSink`]).
    pub fn segment_sink(&self, publication: &Publication<F>) -> Box<dyn SegmentSink> {
        let slot = &publication.slot;
        slot.ended.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if let Some(files) = self.files.as_ref() {
            let mut writer = slot.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if writer.is_none() {
                *writer = files.open();
            }
            if let Some(writer) = writer.as_mut() {
                writer.abandon();
                return Box::new(FileSink { slot: Arc::clone(slot), next_id: 0 });
            }
        }
        Box::new(ChunkSink {
            slot: Arc::clone(slot),
            pool: Arc::clone(&self.buffers),
            chunks: Vec::new(),
            len: 0,
            failed: false,
            next_id: 0,
        })
    }

    fn with_files(config: StoreConfig, files: Option<F>) -> Self {
        Self {
            streams: DashMap::new(),
            live: Arc::new(AtomicUsize::new(0)),
            next_sequences: DashMap::new(),
            forgot: Mutex::new(None),
            config,
            files,
            buffers: Arc::default(),
            superseded: DashMap::new(),
        }
    }

    /// The recycled buffers the store keeps heap segments in (MPEG-TS staging buffers,
    /// joined segments and low-latency parts); the packagers of its streams make their
    /// buffers from the same pool, so what one stream lets go serves the others.
    pub fn buffer_pool(&self) -> &Arc<BufferPool> {
        &self.buffers
    }

    /// Claims `name` for a publisher, if fewer than `max_live` streams are live. A name that
    /// ended recently continues its playlist after a discontinuity; a new name starts with
    /// segment names tagged `generation`.
    pub fn begin(
        &self,
        name: &str,
        generation: u64,
        max_live: usize,
    ) -> Result<Publication<F>, BeginError> {
        self.begin_with(name, generation, max_live, false)
    }

    /// [`begin`](Self::begin) for a stream that is `private` from its first moment. A stream
    /// resumed within its reconnect window stays private if it was (an operator may have made
    /// it so while it was live).
    pub fn begin_with(
        &self,
        name: &str,
        generation: u64,
        max_live: usize,
        private: bool,
    ) -> Result<Publication<F>, BeginError> {
        self.begin_continuing(name, generation, max_live, private, None)
    }

    /// [`begin_with`](Self::begin_with) for a stream that another node published last and
    /// whose numbering ended at `from`: unless this store's own slot of it is at least as
    /// far on (nobody published it elsewhere since), the playlist continues `from`'s media
    /// sequence and discontinuity sequence, its first segment after a discontinuity.
    pub fn begin_continuing(
        &self,
        name: &str,
        generation: u64,
        max_live: usize,
        private: bool,
        from: Option<Numbering>,
    ) -> Result<Publication<F>, BeginError> {
        let claimed = self.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
            (live < max_live).then_some(live + 1)
        });
        if let Err(live) = claimed {
            return Err(BeginError::TooManyStreams(live));
        }
        let result = self.claim(name, generation, private, from);
        if result.is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    fn claim(
        &self,
        name: &str,
        generation: u64,
        private: bool,
        from: Option<Numbering>,
    ) -> Result<Publication<F>, BeginError> {
        let (slot, resumed) = match self.streams.entry(name.to_owned()) {
            Entry::Occupied(mut entry) => {
                let slot = Arc::clone(entry.get());
                let mut state = slot.write();
                if state.live {
                    return Err(BeginError::AlreadyLive(name.to_owned()));
                }
                let overtaken =
                    from.is_some_and(|from| from.next_sequence > state.playlist.next_sequence());
                if overtaken {
                    // Published on another node since: this slot's playlist is history.
                    state.playlist.end();
                    state.render();
                    drop(state);
                    slot.changed();
                    let fresh = self.new_slot(name, generation, private, from);
                    let old = entry.insert(Arc::clone(&fresh));
                    self.superseded.insert(name.to_owned(), (old, None));
                    (fresh, false)
                } else if state.playlist.is_ended() {
                    // EXT-X-ENDLIST is never taken back (RFC 8216 §6.2.1): a new presentation
                    // at the same URL, numbered on from the old one so no URI is reused.
                    let next = state.playlist.next_sequence();
                    drop(state);
                    self.raise_floor(name, next);
                    let fresh = self.new_slot(name, generation, private, None);
                    let old = entry.insert(Arc::clone(&fresh));
                    self.superseded.insert(name.to_owned(), (old, None));
                    (fresh, false)
                } else {
                    // Interrupted: the publisher is back within the reconnect window and the
                    // playlist goes on after a discontinuity.
                    state.live = true;
                    slot.private.fetch_or(private, Ordering::AcqRel);
                    state.resumed = !state.playlist.is_empty();
                    state.interrupted_seen = None;
                    state.open = None;
                    state.playlist.set_open(None);
                    state.render();
                    drop(state);
                    slot.changed();
                    (slot, true)
                }
            }
            Entry::Vacant(entry) => {
                let fresh = self.new_slot(name, generation, private, from);
                (Arc::clone(entry.insert(fresh).value()), false)
            }
        };
        Ok(Publication {
            name: name.to_owned(),
            slot,
            live: Arc::clone(&self.live),
            resumed,
            reconnect_window: self.config.reconnect_window,
            interrupted: AtomicBool::new(false),
            buffers: Arc::clone(&self.buffers),
        })
    }

    /// A new live stream's slot: its playlist starts at the name's sequence floor, or after
    /// `from` (another node's numbering of it), then after a discontinuity.
    fn new_slot(
        &self,
        name: &str,
        generation: u64,
        private: bool,
        from: Option<Numbering>,
    ) -> Arc<Slot<F>> {
        let floor = self.next_sequences.get(name).map_or(0, |floor| floor.next);
        let first = from.map_or(floor, |from| floor.max(from.next_sequence));
        let mut playlist =
            MediaPlaylist::starting_at(self.config.window, self.config.target_duration, first);
        if let Some(from) = from {
            playlist.set_discontinuity_sequence(from.discontinuity_sequence);
        }
        if let Some(part_target) = self.config.part_target {
            playlist.set_low_latency(LowLatency { part_target });
        }
        Arc::new(Slot {
            generation,
            state: RwLock::new(SlotState {
                playlist,
                rendered: None,
                rendered_skip: std::sync::OnceLock::new(),
                inits: VecDeque::new(),
                next_init: 0,
                open: None,
                segments: VecDeque::new(),
                live: true,
                // A continued stream's first segment follows a discontinuity.
                resumed: from.is_some_and(|from| from.next_sequence > 0),
                viewers: Viewers::default(),
                anchor: None,
                ended_seen: None,
                interrupted_seen: None,
                media: MediaFacts::default(),
                rates: VecDeque::new(),
            }),
            writer: Mutex::new(None),
            ended: Mutex::new(VecDeque::new()),
            writing_in_heap: AtomicUsize::new(0),
            changes: watch::Sender::new(0),
            private: AtomicBool::new(private),
        })
    }

    /// How long an interrupted publish's stream stays open (see
    /// [`StoreConfig::reconnect_window`]).
    pub fn reconnect_window(&self) -> Duration {
        self.config.reconnect_window
    }

    /// Whether streams are served as low-latency HLS (parts).
    pub fn is_low_latency(&self) -> bool {
        self.config.part_target.is_some()
    }

    /// Streams being published now.
    pub fn live_count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Sets the media sequence number new slots of these names start at (at least), e.g.
    /// from before a restart.
    pub fn restore_sequences(&self, sequences: impl IntoIterator<Item = (String, u64)>) {
        for (name, next) in sequences {
            self.raise_floor(&name, next);
        }
    }

    /// Whether `name` is open for its publisher to come back (interrupted within its reconnect
    /// window: not live, not ended).
    pub fn is_open(&self, name: &str) -> bool {
        self.slot(name).is_some_and(|slot| {
            let state = slot.read();
            !state.live && !state.playlist.is_ended()
        })
    }

    /// Where `name`'s numbering stands: what a node continuing it starts from.
    pub fn numbering(&self, name: &str) -> Option<Numbering> {
        let slot = self.slot(name)?;
        let state = slot.read();
        Some(Numbering {
            next_sequence: state.playlist.next_sequence(),
            discontinuity_sequence: state.playlist.discontinuities(),
        })
    }

    /// The next media sequence number of every stream known, to persist.
    pub fn sequences(&self) -> Vec<(String, u64)> {
        let mut all: std::collections::BTreeMap<String, u64> =
            self.next_sequences.iter().map(|e| (e.key().clone(), e.value().next)).collect();
        for slot in &self.streams {
            let next = slot.value().read().playlist.next_sequence();
            let entry = all.entry(slot.key().clone()).or_insert(0);
            *entry = (*entry).max(next);
        }
        all.into_iter().collect()
    }

    /// The current playlist of `name`, once it has a segment.
    pub fn playlist(&self, name: &str) -> Option<Bytes> {
        let slot = self.slot(name)?;
        let state = slot.read();
        state.rendered.clone()
    }

    /// The playlist of `name` for a request with `directives` (see [`crate::blocking`]);
    /// `None` for a stream unknown or without a segment yet. A stream that is not
    /// low-latency ignores the directives.
    pub fn reload(&self, name: &str, directives: Directives) -> Option<Reload> {
        let slot = self.slot(name)?;
        let state = slot.read();
        let rendered = state.rendered.clone()?;
        let Some(LowLatency { part_target }) = state.playlist.low_latency() else {
            return Some(Reload::Ready(rendered));
        };
        Some(match blocking::satisfied(state.live_edge(part_target), directives) {
            None => Reload::TooFarAhead,
            Some(false) => Reload::Wait {
                timeout: Duration::from_secs(state.playlist.target_duration()) * BLOCK_TARGETS,
            },
            // RFC 8216bis §6.2.5.1: `_HLS_skip` is ignored once the playlist has ENDLIST.
            Some(true) if directives.skip && !state.playlist.is_ended() => Reload::Ready(
                state
                    .rendered_skip
                    .get_or_init(|| Bytes::from(state.playlist.render_with(true)))
                    .clone(),
            ),
            Some(true) => Reload::Ready(rendered),
        })
    }

    /// EXT-X-TARGETDURATION of `name`.
    pub fn target_duration(&self, name: &str) -> Option<Duration> {
        Some(Duration::from_secs(self.slot(name)?.read().playlist.target_duration()))
    }

    /// How long a request for `name` waits for a part or a playlist at most (three target
    /// durations).
    pub fn block_timeout(&self, name: &str) -> Option<Duration> {
        Some(self.target_duration(name)? * BLOCK_TARGETS)
    }

    /// Wakes on every change of the playlist of `name` (take it before [`Self::reload`], so
    /// no change between the two is missed); `None` for a stream unknown.
    pub fn changes(&self, name: &str) -> Option<Changes> {
        Some(Changes(self.slot(name)?.changes.subscribe()))
    }

    /// An fMP4 init segment of `name` by its file name (`<generation>-init<n>.mp4`).
    pub fn init(&self, name: &str, file: &str) -> Option<Bytes> {
        let (generation, number) = file.strip_suffix(".mp4")?.split_once("-init")?;
        let (generation, number): (u64, u32) = (generation.parse().ok()?, number.parse().ok()?);
        let slot = self.slot_of(name, generation)?;
        let state = slot.read();
        state.inits.iter().find(|(n, _)| *n == number).map(|(_, init)| init.clone())
    }

    /// Part `<generation>-<sequence>.<part>.m4s` of `name`: complete, or pending (being
    /// written, or about to start); `None` when it is gone, too far ahead, or the name is
    /// not a part's.
    pub fn part(&self, name: &str, file: &str) -> Option<PartRead> {
        let (generation, rest) = file.strip_suffix(".m4s")?.split_once('-')?;
        let (sequence, index) = rest.split_once('.')?;
        let generation: u64 = generation.parse().ok()?;
        let (sequence, index): (u64, usize) = (sequence.parse().ok()?, index.parse().ok()?);
        let slot = self.slot_of(name, generation)?;
        let state = slot.read();
        if let Some(open) = state.open.as_ref().filter(|open| open.sequence == sequence) {
            return open.read_part(index);
        }
        let next = state.playlist.next_sequence();
        if sequence == next && index == 0 && !state.playlist.is_ended() {
            // The segment after the last one, which the next keyframe starts.
            return Some(PartRead::Pending);
        }
        let first = state.segments.front()?.sequence;
        let held = state.segments.get(usize::try_from(sequence.checked_sub(first)?).ok()?)?;
        Some(PartRead::Complete(held.parts.get(index)?.pieces.clone()))
    }

    /// A segment of `name` by its file name (`<generation>-<sequence>.ts`, or `.m4s` for
    /// fMP4).
    pub fn segment(&self, name: &str, file: &str) -> Option<SegmentBody<F::File>> {
        let stem = file.strip_suffix(".ts").or_else(|| file.strip_suffix(".m4s"))?;
        let (generation, sequence) = stem.split_once('-')?;
        let (generation, sequence): (u64, u64) = (generation.parse().ok()?, sequence.parse().ok()?);
        let slot = self.slot_of(name, generation)?;
        let (body, fetches, parts) = {
            let state = slot.read();
            let first = state.segments.front()?.sequence;
            let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
            let held = state.segments.get(index)?;
            let fetches = held.fetches.fetch_add(1, Ordering::Relaxed) + 1;
            (held.body.clone(), fetches, !held.parts.is_empty())
        };
        // Exactly one fetch promotes or joins, so a segment is written once.
        if fetches != PROMOTE_AT_FETCH {
            return Some(body);
        }
        let body = match (body, &self.files) {
            (SegmentBody::Memory(pieces), Some(files)) => slot.promote(files, sequence, pieces),
            (body, _) => body,
        };
        Some(match body {
            SegmentBody::Memory(pieces) if !parts && pieces.as_slice().len() > 1 => {
                slot.join(&self.buffers, sequence, &pieces)
            }
            body => body,
        })
    }

    /// Notes that `session` fetched the playlist of `name` at `now`. With `limit` > 0, a
    /// session not seen recently is refused (false) once `limit` viewers are counted; known
    /// viewers always pass (see [`crate::viewers`]).
    pub fn admit_viewer(
        &self,
        name: &str,
        session: ViewerSession,
        now: Instant,
        limit: usize,
    ) -> bool {
        let Some(slot) = self.slot(name) else { return true };
        let mut state = slot.write();
        let window = self.viewer_window(&state);
        state.viewers.admit(session, now, limit, window)
    }

    /// Distinct clients that fetched the playlist of `name` within the last three target
    /// durations (players reload it every target duration or more often).
    pub fn viewers(&self, name: &str, now: Instant) -> u64 {
        let Some(slot) = self.slot(name) else { return 0 };
        let mut state = slot.write();
        let window = self.viewer_window(&state);
        state.viewers.count(now, window) as u64
    }

    /// Three target durations of the stream as its playlist says it (segments follow the
    /// publisher's keyframes, so 8 s GOPs make an 8 s target whatever was configured, and
    /// players reload that seldom), at least three of the configured one.
    fn viewer_window<File>(&self, state: &SlotState<File>) -> Duration {
        let target = Duration::from_secs(state.playlist.target_duration());
        self.config.target_duration.max(target) * VIEWER_WINDOW_TARGETS
    }

    /// The summary of `name`, live or recently ended.
    pub fn summary(&self, name: &str, now: Instant) -> Option<StreamSummary> {
        let slot = self.slot(name)?;
        let viewers = self.viewers(name, now);
        let state = slot.read();
        let (segments_listed, media_sequence) = state.playlist.window();
        Some(StreamSummary {
            name: name.to_owned(),
            live: state.live,
            reconnecting: !state.live && !state.playlist.is_ended(),
            segments_listed,
            media_sequence,
            target_duration: state.playlist.target_duration(),
            viewers,
            private: slot.private.load(Ordering::Acquire),
        })
    }

    /// The summaries of every stream, live or recently ended, by name.
    pub fn summaries(&self, now: Instant) -> Vec<StreamSummary> {
        let mut names: Vec<String> = self.streams.iter().map(|e| e.key().clone()).collect();
        names.sort_unstable();
        names.iter().filter_map(|name| self.summary(name, now)).collect()
    }

    /// Bytes of the segments the store holds, in the heap and in files.
    pub fn segment_bytes(&self) -> SegmentBytes {
        let mut bytes = SegmentBytes::default();
        for slot in &self.streams {
            let writer = slot.value().writer.lock().unwrap_or_else(PoisonError::into_inner);
            let writing = writer.as_ref().map_or(0, SegmentFileWriter::open_len);
            bytes.files += writing;
            drop(writer);
            let writing_in_heap = slot.value().writing_in_heap.load(Ordering::Relaxed);
            bytes.heap += writing_in_heap;
            bytes.writing += writing + writing_in_heap;
            let state = slot.value().read();
            for held in &state.segments {
                match &held.body {
                    SegmentBody::Memory(data) => bytes.heap += data.len(),
                    SegmentBody::File(file) => bytes.files += file.len(),
                }
            }
            bytes.heap += state.open.as_ref().map_or(0, OpenSegment::len);
            bytes.heap += state.inits.iter().map(|(_, init)| init.len()).sum::<usize>();
        }
        bytes
    }

    /// Whether the store knows `name` (live or recently ended).
    pub fn contains(&self, name: &str) -> bool {
        self.streams.contains_key(name)
    }

    /// Whether `name` is private: only viewers with a credential may watch it. Unknown
    /// streams are not.
    pub fn is_private(&self, name: &str) -> bool {
        self.streams.get(name).is_some_and(|slot| slot.private.load(Ordering::Acquire))
    }

    /// Makes `name` private or public at once (an operator's change while it is live or
    /// recently ended); whether the store knows it.
    pub fn set_private(&self, name: &str, private: bool) -> bool {
        self.slot(name).map(|slot| slot.private.store(private, Ordering::Release)).is_some()
    }

    /// Stream `name` as a rendition of a multivariant playlist, once it has a segment.
    pub fn rendition(&self, name: &str) -> Option<Rendition> {
        let slot = self.slot(name)?;
        let state = slot.read();
        if state.playlist.is_empty() {
            return None;
        }
        let rate = |bits: u64, duration: Duration| {
            let seconds = duration.as_secs_f64();
            if seconds > 0.0 { (bits as f64 / seconds).round() as u64 } else { 0 }
        };
        let peak = state.rates.iter().map(|(bits, duration)| rate(*bits, *duration)).max();
        let (bits, duration) = state
            .rates
            .iter()
            .fold((0, Duration::ZERO), |(bits, time), (b, d)| (bits + b, time + *d));
        // The live edge: the last part of the segment being written, else the last segment.
        let open_part = state.open.as_ref().and_then(|open| {
            open.parts.len().checked_sub(1).map(|part| (open.sequence, Some(part)))
        });
        let last = open_part.or_else(|| {
            let msn = state.playlist.next_sequence().checked_sub(1)?;
            let parts = state.segments.back().map_or(0, |held| held.parts.len());
            Some((msn, parts.checked_sub(1)))
        });
        Some(Rendition {
            media: state.media.clone(),
            peak_bps: peak.unwrap_or(0),
            average_bps: rate(bits, duration),
            live: state.live,
            ended: state.playlist.is_ended(),
            private: slot.private.load(Ordering::Acquire),
            last,
        })
    }

    /// Whether `name` is being published now.
    pub fn is_live(&self, name: &str) -> bool {
        self.slot(name).is_some_and(|slot| slot.read().live)
    }

    /// Ends interrupted streams whose reconnect window has passed, and forgets streams that
    /// ended at least `keep_ended` before `now`; returns the names forgotten. Call it
    /// periodically: the windows count from the first call that sees a stream interrupted,
    /// or ended.
    pub fn reap(&self, now: Instant, keep_ended: Duration) -> Vec<String> {
        let mut removed = Vec::new();
        let mut closed = Vec::new();
        self.streams.retain(|name, slot| {
            let mut state = slot.write();
            if state.live {
                return true;
            }
            if !state.playlist.is_ended() {
                // Interrupted: open until the reconnect window ends, then ended.
                let since = *state.interrupted_seen.get_or_insert(now);
                if now.saturating_duration_since(since) < self.config.reconnect_window {
                    return true;
                }
                state.playlist.end();
                state.render();
                closed.push(Arc::clone(slot));
            }
            let ended = *state.ended_seen.get_or_insert(now);
            let keep = now.saturating_duration_since(ended) < keep_ended;
            if !keep {
                removed.push(name.clone());
                self.raise_floor(name, state.playlist.next_sequence());
            }
            keep
        });
        for slot in closed {
            slot.changed();
        }
        self.superseded.retain(|_, (slot, seen)| {
            let state = slot.read();
            let segment = Duration::from_secs(state.playlist.target_duration());
            let listed = u32::try_from(state.playlist.window().0).unwrap_or(u32::MAX);
            let kept_for = segment.saturating_mul(listed.saturating_add(1));
            now.saturating_duration_since(*seen.get_or_insert(now)) < kept_for
        });
        self.forget_floors(now);
        removed
    }

    /// Sets `name`'s sequence floor to `next` unless it is higher already.
    fn raise_floor(&self, name: &str, next: u64) {
        let mut floor = self.next_sequences.entry(name.to_owned()).or_default();
        floor.next = floor.next.max(next);
    }

    /// Forgets the floors of names without a stream for [`SEQUENCE_MEMORY`], once every
    /// [`FORGET_INTERVAL`]: a floor's time starts at the first look that finds no stream.
    fn forget_floors(&self, now: Instant) {
        {
            let mut forgot = self.forgot.lock().unwrap_or_else(PoisonError::into_inner);
            if forgot.is_some_and(|at| now.saturating_duration_since(at) < FORGET_INTERVAL) {
                return;
            }
            *forgot = Some(now);
        }
        // The names with a stream, before the floors are walked: `retain` holds a shard of
        // the floors while it walks, and `begin` holds a stream's entry while it raises a
        // floor, so looking streams up from inside would take the two in the other order.
        let named: std::collections::HashSet<String> =
            self.streams.iter().map(|entry| entry.key().clone()).collect();
        self.next_sequences.retain(|name, floor| {
            if named.contains(name) {
                floor.unused_since = None;
                return true;
            }
            let since = *floor.unused_since.get_or_insert(now);
            now.saturating_duration_since(since) < SEQUENCE_MEMORY
        });
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot<F>>> {
        self.streams.get(name).map(|slot| Arc::clone(slot.value()))
    }

    /// The slot of `name` whose segment names carry `generation`: the stream's, or the ended
    /// one it replaced while that one's segments are still kept, if it was as private as the
    /// stream is (who may fetch is decided by the stream's visibility now: a private stream's
    /// media must not go out under a public one's name, nor a public one's be refused).
    fn slot_of(&self, name: &str, generation: u64) -> Option<Arc<Slot<F>>> {
        let slot = self.slot(name)?;
        if slot.generation == generation {
            return Some(slot);
        }
        let superseded = self.superseded.get(name)?;
        let private = |slot: &Slot<F>| slot.private.load(Ordering::Acquire);
        (superseded.0.generation == generation && private(&superseded.0) == private(&slot))
            .then(|| Arc::clone(&superseded.0))
    }
}

/// The publisher's handle on its stream. Dropping it ends the stream (the playlist gets
/// EXT-X-ENDLIST), whatever way the publish ends, unless it was marked
/// [`interrupted`](Self::interrupted) first: then the playlist stays open for the reconnect
/// window.
#[derive(Debug)]
pub struct Publication<F: SegmentFiles = MemfdSegments> {
    name: String,
    slot: Arc<Slot<F>>,
    live: Arc<AtomicUsize>,
    /// It continues a stream whose publisher was interrupted.
    resumed: bool,
    reconnect_window: Duration,
    interrupted: AtomicBool,
    buffers: Arc<BufferPool>,
}

impl<F: SegmentFiles> Publication<F> {
    /// The public stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this publish continues a stream whose publisher was interrupted within the
    /// reconnect window (its next segment follows a discontinuity).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Whether the stream is private now (it may change while it is live).
    pub fn is_private(&self) -> bool {
        self.slot.private.load(Ordering::Acquire)
    }

    /// Records what the stream's media is, for multivariant playlists.
    pub fn set_media(&self, media: MediaFacts) {
        self.slot.write().media = media;
    }

    /// Marks the publish interrupted rather than ended (the connection failed, the client
    /// closed it without unpublishing, it was taken over): when dropped, the playlist stays
    /// open, without EXT-X-ENDLIST, for the reconnect window.
    pub fn interrupted(&self) {
        self.interrupted.store(true, Ordering::Release);
    }

    /// Publishes a finished segment, completed at wall-clock time `now`; returns its media
    /// sequence number. `None` when its bytes went to a sink that could not keep them: the
    /// segment is skipped (logged) and the next follows a discontinuity.
    pub fn push(&self, segment: Segment, now: SystemTime) -> Option<u64> {
        let len = segment.len();
        let body = if segment.sink_len > 0 {
            let file = {
                let mut ended = self.slot.ended.lock().unwrap_or_else(PoisonError::into_inner);
                // Older ones belong to segments the packager never returned (an error after
                // their end): nobody will take them.
                while ended.front().is_some_and(|(id, _)| *id < segment.sink_id) {
                    ended.pop_front();
                }
                match ended.front() {
                    Some((id, _)) if *id == segment.sink_id => ended.pop_front().and_then(|e| e.1),
                    _ => None,
                }
            };
            match file {
                Some(body) if body.len() == segment.len() => body,
                _ => {
                    warn!(stream = %self.name, bytes = segment.len(), "a segment could not be kept: skipped, the next follows a discontinuity");
                    self.slot.write().resumed = true;
                    return None;
                }
            }
        } else {
            SegmentBody::Memory(segment.data.into())
        };
        let mut state = self.slot.write();
        let discontinuity = segment.discontinuity || std::mem::take(&mut state.resumed);
        // The segment just ended: it started `duration` ago.
        let started = now.checked_sub(segment.duration).unwrap_or(now);
        let program_date_time = state.program_date_time(segment.start, started, discontinuity);
        let sequence = state.playlist.next_sequence();
        state.playlist.push(PlaylistEntry {
            uri: format!("{}-{sequence}.ts", self.slot.generation),
            duration: segment.duration,
            discontinuity,
            independent: segment.independent,
            program_date_time,
            map: None,
            parts: Vec::new(),
        });
        state.note_rate(len, segment.duration);
        let held =
            Held { sequence, body, fetches: AtomicU32::new(0), parts: Vec::new(), init: None };
        self.hold(&mut state, held);
        state.render();
        drop(state);
        self.slot.changed();
        Some(sequence)
    }

    /// Takes the packager's next fMP4 output, made at wall-clock time `now`; returns the
    /// media sequence number of the segment it completed, if it did. Each call is its own
    /// change: a live publish feeds one input's outputs through [`Self::push_fmp4_all`].
    pub fn push_fmp4(&self, output: FragmentOutput, now: SystemTime) -> Option<u64> {
        self.push_fmp4_all(std::iter::once(output), now).map(|done| *done.end())
    }

    /// Takes every output the packager made from one input, at wall-clock time `now`, as one
    /// change: readers see the playlist before them or after all of them. A segment's last
    /// part ends with the segment, so one at a time a woken viewer could be told of a next
    /// part (the preload hint) that the segment's end then cancels, and 404 on it. Returns
    /// the media sequence numbers of the segments completed. `outputs` is drained under the
    /// stream's lock: pass a queue, not work; no outputs take no lock.
    pub fn push_fmp4_all(
        &self,
        outputs: impl IntoIterator<Item = FragmentOutput>,
        now: SystemTime,
    ) -> Option<RangeInclusive<u64>> {
        let generation = self.slot.generation;
        let mut outputs = outputs.into_iter().peekable();
        outputs.peek()?;
        let mut state = self.slot.write();
        let mut completed: Option<RangeInclusive<u64>> = None;
        let mut listed = false;
        for output in outputs {
            match output {
                FragmentOutput::Init(init) => {
                    let number = state.next_init;
                    state.next_init += 1;
                    state.inits.push_back((number, init));
                    // Nothing lists it before a segment starts with it.
                }
                FragmentOutput::SegmentStart { discontinuity, start, part_target } => {
                    // The packager's part target is whole frames of the stream's cadence
                    // near the one configured, announced from the first segment on. A
                    // publisher resuming at another frame rate may choose another: the
                    // playlist keeps the longest, which the parts it still lists keep to.
                    if let Some(chosen) = part_target
                        && let Some(LowLatency { part_target: announced }) =
                            state.playlist.low_latency()
                    {
                        let listed = state.rendered.is_some();
                        let part_target = if listed { announced.max(chosen) } else { chosen };
                        state.playlist.set_low_latency(LowLatency { part_target });
                    }
                    let discontinuity = discontinuity || std::mem::take(&mut state.resumed);
                    let program_date_time = state.program_date_time(start, now, discontinuity);
                    let init = state.inits.back().map(|(number, _)| *number);
                    let sequence = state.playlist.next_sequence();
                    state.open = Some(OpenSegment::new(
                        generation,
                        sequence,
                        init,
                        discontinuity,
                        program_date_time,
                    ));
                    listed = true;
                }
                FragmentOutput::Fragment(fragment) => {
                    if let Some(open) = &mut state.open {
                        open.add_fragment(fragment);
                    }
                }
                FragmentOutput::PartEnd { duration, independent } => {
                    if let Some(open) = &mut state.open {
                        open.end_part(duration, independent, &self.buffers);
                    }
                    listed = true;
                }
                FragmentOutput::SegmentEnd { duration, independent, .. } => {
                    let Some(open) = state.open.take() else { continue };
                    let sequence = open.sequence;
                    let entry = PlaylistEntry {
                        uri: format!("{generation}-{sequence}.m4s"),
                        duration,
                        discontinuity: open.discontinuity,
                        independent,
                        program_date_time: open.program_date_time,
                        map: open.init.map(|number| init_uri(generation, number)),
                        parts: part_entries(&open.parts),
                    };
                    let init = open.init;
                    let (body, parts) = open.close();
                    let bytes = body.len();
                    state.playlist.push(entry);
                    state.note_rate(bytes, duration);
                    let held = Held {
                        sequence,
                        body: SegmentBody::Memory(body),
                        fetches: AtomicU32::new(0),
                        parts,
                        init,
                    };
                    self.hold(&mut state, held);
                    let first = completed.as_ref().map_or(sequence, |done| *done.start());
                    completed = Some(first..=sequence);
                    listed = true;
                }
            }
        }
        if listed {
            let open = state.open.as_ref().map(|open| OpenEntry {
                discontinuity: open.discontinuity,
                program_date_time: open.program_date_time,
                map: open.init.map(|number| init_uri(generation, number)),
                parts: part_entries(&open.parts),
                next_part: part_uri(generation, open.sequence, open.parts.len()),
            });
            state.playlist.set_open(open);
            state.render();
        }
        drop(state);
        if listed {
            self.slot.changed();
        }
        completed
    }

    /// Keeps a segment just listed, and lets the oldest go past the retention (and the init
    /// segments only they used).
    fn hold(&self, state: &mut SlotState<F::File>, held: Held<F::File>) {
        state.segments.push_back(held);
        // Those listed (the playlist may list more than its window, see
        // `MediaPlaylist::push`) and those RFC 8216 §6.2.2 keeps available after them: a
        // segment's own duration plus the playlist's, so one more than are listed.
        let listed = state.playlist.window().0;
        let retained = listed + listed + 1;
        while state.segments.len() > retained {
            state.segments.pop_front();
        }
        let oldest = state.segments.front().and_then(|held| held.init);
        let current = state.inits.back().map(|(number, _)| *number);
        if let Some(oldest) = oldest.or(current) {
            state.inits.retain(|(number, _)| *number >= oldest);
        }
    }
}

/// The URI of init segment `number`.
fn init_uri(generation: u64, number: u32) -> String {
    format!("{generation}-init{number}.mp4")
}

/// The playlist's EXT-X-PART lines of a segment's `parts`.
fn part_entries(parts: &[HeldPart]) -> Vec<Part> {
    parts.iter().map(|part| part.listed.clone()).collect()
}

impl<F: SegmentFiles> Drop for Publication<F> {
    fn drop(&mut self) {
        // The segment being streamed into the file, and ended ones nobody pushed, go first:
        // once `live` is false another publish may claim the slot.
        if let Some(writer) =
            self.slot.writer.lock().unwrap_or_else(PoisonError::into_inner).as_mut()
        {
            writer.abandon();
        }
        self.slot.ended.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let mut state = self.slot.write();
        state.live = false;
        state.resumed = false;
        // A segment never completed (the packager was not finished) is not listed.
        state.open = None;
        state.playlist.set_open(None);
        if !self.interrupted.load(Ordering::Acquire) || self.reconnect_window.is_zero() {
            state.playlist.end();
        }
        state.render();
        drop(state);
        self.slot.changed();
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The packager's [`SegmentSink`] for one publish ([`StreamStore::segment_sink`]): MPEG-TS
/// segments go into the stream's segment file as they are written, so a segment is in
/// memory once, in pages the kernel takes back when it is dropped, and is sent to viewers
/// from the file. [`Publication::push`] takes each with the packager's [`Segment`].
#[derive(Debug)]
pub(crate) struct FileSink<F: SegmentFiles = MemfdSegments> {
    slot: Arc<Slot<F>>,
    /// The id the next segment ended gets.
    next_id: u64,
}

impl<F: SegmentFiles> FileSink<F> {
    fn with_writer<T>(&self, f: impl FnOnce(&mut F::Writer) -> T) -> Option<T> {
        self.slot.writer.lock().unwrap_or_else(PoisonError::into_inner).as_mut().map(f)
    }
}

impl<F: SegmentFiles> SegmentSink for FileSink<F> {
    fn begin(&mut self) {
        self.with_writer(SegmentFileWriter::begin);
    }

    fn append(&mut self, bytes: &[u8]) {
        self.with_writer(|writer| writer.append(bytes));
    }

    fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        self.with_writer(|writer| writer.overwrite(offset, bytes));
    }

    fn end(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let file = self.with_writer(SegmentFileWriter::end).flatten();
        self.slot.ended(id, file.map(SegmentBody::File));
        id
    }
}

/// The packager's [`SegmentSink`] for one publish whose MPEG-TS segments stay in the heap
/// ([`StreamStore::segment_sink`]): a segment is the packager's staging buffers themselves,
/// taken whole as each fills ([`SegmentSink::append_buffer`]) and replaced by recycled ones
/// from the store's pool, to which they return when the segment's last holder drops it.
///
/// A segment then costs no copy beyond the packager's (and its last bytes', see
/// [`TRIM_UNUSED_DIVISOR`]), no page faults once the pool is warm (buffers of one size serve
/// every stream), and memory for what it holds: the open segment grows a staging buffer at a
/// time, not into a buffer sized for a whole segment.
#[derive(Debug)]
pub(crate) struct ChunkSink<F: SegmentFiles = MemfdSegments> {
    slot: Arc<Slot<F>>,
    pool: Arc<BufferPool>,
    /// The buffers of the segment begun, in order.
    chunks: Vec<Vec<u8>>,
    /// Their bytes.
    len: usize,
    /// An overwrite went past the bytes appended: the segment is dropped at its end.
    failed: bool,
    /// The id the next segment ended gets.
    next_id: u64,
}

/// A closed segment's last buffer is copied into one of its own length when it leaves more
/// than this share of its room unused (one in sixteen): retained segments would otherwise
/// hold half a staging buffer each, unused, for as long as they live.
const TRIM_UNUSED_DIVISOR: usize = 16;

impl<F: SegmentFiles> ChunkSink<F> {
    /// Gives the segment's buffers back to the pool.
    fn release(&mut self) {
        for chunk in self.chunks.drain(..) {
            self.pool.give(chunk);
        }
        // Its own bytes only: the next publish's sink may be writing already.
        self.slot.writing_in_heap.fetch_sub(self.len, Ordering::Relaxed);
        self.len = 0;
        self.failed = false;
    }

    /// Adds `chunk`, not empty, to the segment begun.
    fn push(&mut self, chunk: Vec<u8>) {
        self.len += chunk.len();
        self.slot.writing_in_heap.fetch_add(chunk.len(), Ordering::Relaxed);
        self.chunks.push(chunk);
    }

    /// A buffer from the pool for the packager to write the next bytes into.
    fn staging(&self) -> Vec<u8> {
        self.pool.take(STAGING_BYTES, STAGING_BYTES)
    }
}

impl<F: SegmentFiles> SegmentSink for ChunkSink<F> {
    fn begin(&mut self) {
        self.release();
    }

    fn append(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut chunk = self.pool.take(bytes.len(), bytes.len().max(STAGING_BYTES));
            chunk.extend_from_slice(bytes);
            self.push(chunk);
        }
    }

    fn append_buffer(&mut self, buffer: Vec<u8>) -> Vec<u8> {
        if buffer.is_empty() {
            return buffer;
        }
        self.push(buffer);
        self.staging()
    }

    fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        if offset.saturating_add(bytes.len()) > self.len {
            warn!(offset, len = bytes.len(), "a segment rewrite past its end: it is skipped");
            self.failed = true;
            return;
        }
        let end = offset + bytes.len();
        // Where each buffer starts in the segment.
        let mut at = 0;
        for chunk in &mut self.chunks {
            let chunk_end = at + chunk.len();
            let (from, to) = (offset.max(at), end.min(chunk_end));
            if from < to {
                chunk[from - at..to - at].copy_from_slice(&bytes[from - offset..to - offset]);
            }
            if chunk_end >= end {
                break;
            }
            at = chunk_end;
        }
    }

    fn end(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let body = (!self.failed && self.len > 0).then(|| {
            let last = self.chunks.len().saturating_sub(1);
            let pieces: Vec<Bytes> = self
                .chunks
                .drain(..)
                .enumerate()
                .map(|(i, chunk)| {
                    let unused = chunk.capacity() - chunk.len();
                    if i == last && unused > chunk.capacity() / TRIM_UNUSED_DIVISOR {
                        let trimmed = Bytes::copy_from_slice(&chunk);
                        self.pool.give(chunk);
                        trimmed
                    } else {
                        self.pool.share(chunk)
                    }
                })
                .collect();
            SegmentBody::Memory(Pieces::from(pieces))
        });
        self.release();
        self.slot.ended(id, body);
        id
    }
}

impl<F: SegmentFiles> Drop for ChunkSink<F> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(ms: u64, byte: u8) -> Segment {
        Segment {
            data: Bytes::from(vec![byte; 188]),
            sink_len: 0,
            sink_id: 0,
            duration: Duration::from_millis(ms),
            discontinuity: false,
            independent: true,
            start: 0,
        }
    }

    /// A fixed wall clock for the tests: 2025-11-25T22:00:00Z.
    fn wall(offset_ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_108_000_000 + offset_ms)
    }

    fn store() -> StreamStore {
        StreamStore::new(StoreConfig { window: 2, ..StoreConfig::default() })
    }

    #[test]
    fn playlist_appears_with_the_first_segment_and_ends_on_drop() {
        let store = store();
        let publication = store.begin("cam", 7, 10).unwrap();
        assert_eq!(store.playlist("cam"), None);
        assert_eq!(publication.push(segment(2000, 1), wall(0)), Some(0));
        let text = store.playlist("cam").unwrap();
        assert!(text.ends_with(
            b"#EXT-X-PROGRAM-DATE-TIME:2025-11-25T21:59:58.000Z\n#EXTINF:2.000,\n7-0.ts\n"
        ));
        assert_eq!(store.segment("cam", "7-0.ts").unwrap().to_bytes().unwrap()[0], 1);
        drop(publication);
        assert!(store.playlist("cam").unwrap().ends_with(b"#EXT-X-ENDLIST\n"));
        assert!(!store.is_live("cam"));
    }

    #[test]
    fn a_stream_continued_from_another_node_numbers_on_after_a_discontinuity() {
        let (a, b) = (store(), store());
        let first = a.begin("cam", 1, 10).unwrap();
        for n in 0..3 {
            first.push(segment(2000, n), wall(u64::from(n) * 2000));
        }
        first.interrupted();
        drop(first);
        let from = a.numbering("cam").unwrap();
        assert_eq!(from, Numbering { next_sequence: 3, discontinuity_sequence: 0 });

        let moved = b.begin_continuing("cam", 2, 10, false, Some(from)).unwrap();
        assert!(!moved.resumed(), "a new slot here, not a local resume");
        assert_eq!(moved.push(segment(2000, 9), wall(10_000)), Some(3));
        let text = String::from_utf8(b.playlist("cam").unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert_eq!(b.numbering("cam").unwrap().discontinuity_sequence, 1);

        // Back on the first node: its interrupted slot is behind, so it is replaced.
        drop(moved);
        let back = b.numbering("cam").unwrap();
        let again = a.begin_continuing("cam", 3, 10, false, Some(back)).unwrap();
        assert_eq!(again.push(segment(2000, 4), wall(20_000)), Some(4));
        let text = String::from_utf8(a.playlist("cam").unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(text.contains("3-4.ts"), "{text}");
        drop(again);
        // Nobody published elsewhere: the local slot resumes as without a cluster.
        let same = a.numbering("cam");
        let resumed = a.begin_continuing("cam", 4, 10, false, same).unwrap();
        assert!(!resumed.resumed(), "an ended stream starts a new presentation");
    }

    #[test]
    fn second_publisher_of_a_live_name_is_refused() {
        let store = store();
        let _first = store.begin("cam", 1, 10).unwrap();
        assert_eq!(store.begin("cam", 2, 10).unwrap_err(), BeginError::AlreadyLive("cam".into()));
        assert_eq!(store.live_count(), 1);
        assert!(store.begin("other", 3, 10).is_ok());
    }

    #[test]
    fn the_live_stream_limit_holds_and_frees() {
        let store = store();
        let a = store.begin("a", 1, 2).unwrap();
        let _b = store.begin("b", 1, 2).unwrap();
        assert_eq!(store.begin("c", 1, 2).unwrap_err(), BeginError::TooManyStreams(2));
        drop(a);
        assert_eq!(store.live_count(), 1);
        let _c = store.begin("c", 1, 2).unwrap();
        // A refused claim does not leak a place.
        assert!(store.begin("c", 1, 3).is_err());
        assert_eq!(store.live_count(), 2);
    }

    #[test]
    fn sequences_never_go_back_after_a_reap_or_a_restart() {
        let store = store();
        let first = store.begin("cam", 1, 10).unwrap();
        for i in 0..3 {
            first.push(segment(2000, i), wall(0));
        }
        drop(first);
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        store.reap(t0, Duration::ZERO);
        assert_eq!(store.sequences(), [("cam".to_owned(), 3)]);
        let again = store.begin("cam", 2, 10).unwrap();
        assert_eq!(again.push(segment(2000, 0), wall(0)), Some(3));
        drop(again);

        // A new process told what the old one persisted.
        let restarted = StreamStore::new(StoreConfig::default());
        restarted.restore_sequences([("cam".to_owned(), 50)]);
        let publication = restarted.begin("cam", 3, 10).unwrap();
        assert_eq!(publication.push(segment(2000, 0), wall(0)), Some(50));
        let text = String::from_utf8(restarted.playlist("cam").unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:50\n"), "{text}");
        assert_eq!(restarted.sequences(), [("cam".to_owned(), 51)]);
    }

    /// A name without a stream for a day forgets its floor (the file stops listing it); a
    /// name in use, or back within the day, keeps it.
    #[test]
    fn sequence_floors_of_names_unused_for_a_day_are_forgotten() {
        let store = store();
        let restored = [("old".to_owned(), 7), ("back".to_owned(), 9)];
        store.restore_sequences(restored);
        let cam = store.begin("cam", 1, 10).unwrap();
        cam.push(segment(2000, 0), wall(0));
        drop(cam);
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        store.reap(t0, Duration::ZERO);
        assert_eq!(store.sequences().len(), 3);
        // "back" is published again within the day.
        let back = store.begin("back", 2, 10).unwrap();
        assert_eq!(back.push(segment(2000, 0), wall(0)), Some(9));
        let day = t0 + SEQUENCE_MEMORY;
        store.reap(day - FORGET_INTERVAL, Duration::from_secs(3600));
        assert_eq!(store.sequences().len(), 3, "forgotten early");
        store.reap(day, Duration::from_secs(3600));
        assert_eq!(store.sequences(), [("back".to_owned(), 10)]);
        let fresh = store.begin("cam", 3, 10).unwrap();
        assert_eq!(fresh.push(segment(2000, 0), wall(0)), Some(0), "cam numbers from 0");
    }

    #[test]
    fn privacy_is_kept_per_stream_and_can_change_while_live() {
        let config =
            StoreConfig { reconnect_window: Duration::from_secs(10), ..Default::default() };
        let store: StreamStore = StreamStore::new(config);
        assert!(!store.is_private("cam"), "an unknown stream is private");
        let publication = store.begin_with("cam", 1, 10, true).unwrap();
        assert!(store.is_private("cam"));
        assert!(store.summary("cam", Instant::now()).unwrap().private);
        assert!(store.set_private("cam", false));
        assert!(!store.is_private("cam"));
        assert!(!store.set_private("nope", true));
        // Made private while live, it stays so when its publisher comes back within the
        // reconnect window, whatever the new publish says.
        assert!(store.set_private("cam", true));
        publication.interrupted();
        drop(publication);
        let back = store.begin_with("cam", 1, 10, false).unwrap();
        assert!(back.resumed() && store.is_private("cam"));
        // A new presentation after ENDLIST takes the new publish's word.
        drop(back);
        let fresh = store.begin_with("cam", 2, 10, false).unwrap();
        assert!(!fresh.resumed() && !store.is_private("cam"));
    }

    fn viewer(id: u64) -> ViewerSession {
        ViewerSession { id, address: None }
    }

    #[test]
    fn viewers_are_distinct_recent_clients() {
        let store = store();
        let _publication = store.begin("cam", 1, 10).unwrap();
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        for client in [1, 2, 2, 3] {
            assert!(store.admit_viewer("cam", viewer(client), t0, 0));
        }
        assert_eq!(store.viewers("cam", t0), 3);
        store.admit_viewer("cam", viewer(1), t0 + Duration::from_secs(5), 0);
        // The window is three 2 s targets: only client 1 fetched within it.
        assert_eq!(store.viewers("cam", t0 + Duration::from_secs(7)), 1);
        assert_eq!(store.viewers("nobody", t0), 0);
    }

    /// A stream that ended and is published again at once: the ended one's segments stay
    /// available for a segment and a playlist's duration (§6.2.2) to players finishing its
    /// final playlist, then go.
    #[test]
    fn an_ended_streams_segments_outlive_a_new_publish_for_a_while() {
        let store = store();
        let first = store.begin("cam", 1, 10).unwrap();
        for n in 0..3 {
            first.push(segment(2000, n), wall(u64::from(n) * 2000));
        }
        drop(first);
        let second = store.begin("cam", 2, 10).unwrap();
        second.push(segment(2000, 9), wall(10_000));
        let byte = |file: &str| match store.segment("cam", file) {
            Some(SegmentBody::Memory(pieces)) => Some(pieces.as_slice()[0][0]),
            _ => None,
        };
        assert_eq!((byte("1-2.ts"), byte("2-3.ts")), (Some(2), Some(9)));
        // Not under another visibility than the ended stream's.
        store.set_private("cam", true);
        assert_eq!(byte("1-2.ts"), None);
        store.set_private("cam", false);
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        store.reap(t0, Duration::from_secs(60));
        // Three listed (three target durations at least) and one more: 8 s of 2 s segments.
        store.reap(t0 + Duration::from_secs(7), Duration::from_secs(60));
        assert_eq!(byte("1-2.ts"), Some(2));
        store.reap(t0 + Duration::from_secs(8), Duration::from_secs(60));
        assert_eq!((byte("1-2.ts"), byte("2-3.ts")), (None, Some(9)));
    }

    /// Segments as long as the publisher's GOPs (8 s) make an 8 s target, and players reload
    /// that seldom: the window is three of those.
    #[test]
    fn the_viewer_window_follows_the_streams_target_duration() {
        let store = store();
        let publication = store.begin("cam", 1, 10).unwrap();
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        publication.push(segment(8000, 1), wall(0));
        assert!(store.admit_viewer("cam", viewer(1), t0, 0));
        assert_eq!(store.viewers("cam", t0 + Duration::from_secs(20)), 1);
        assert_eq!(store.viewers("cam", t0 + Duration::from_secs(25)), 0);
    }

    #[test]
    fn summaries_list_live_and_ended_streams() {
        let store = store();
        let live = store.begin("b-live", 1, 10).unwrap();
        let ended = store.begin("a-ended", 2, 10).unwrap();
        #[allow(clippy::disallowed_methods)] // any instant will do
        let t0 = Instant::now();
        ended.push(segment(2000, 1), SystemTime::UNIX_EPOCH);
        drop(ended);
        store.admit_viewer("b-live", viewer(7), t0, 0);
        let all = store.summaries(t0);
        assert_eq!(all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a-ended", "b-live"]);
        assert!(!all[0].live && all[1].live);
        assert_eq!((all[0].segments_listed, all[0].media_sequence), (1, 0));
        assert_eq!(all[1].viewers, 1);
        assert!(store.contains("a-ended") && !store.contains("nope"));
        drop(live);
    }

    #[test]
    fn segments_outlive_the_window_by_the_retention_then_go() {
        let store = store();
        let publication = store.begin("cam", 1, 10).unwrap();
        for i in 0..9 {
            publication.push(segment(2000, i), wall(0));
        }
        // Window 2, but three listed (6 to 8: three target durations, RFC 8216 §6.2.2), and
        // four kept after them (one more than are listed):
        // 2 is the oldest fetchable.
        let text = String::from_utf8(store.playlist("cam").unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:6\n"), "{text}");
        assert!(store.segment("cam", "1-2.ts").is_some());
        assert!(store.segment("cam", "1-1.ts").is_none());
        assert!(store.segment("cam", "1-9.ts").is_none());
        // Wrong generation, bad names.
        assert!(store.segment("cam", "2-3.ts").is_none());
        for bad in ["3.ts", "1-3", "1-x.ts", "-3.ts", "1--3.ts", "../1-3.ts"] {
            assert!(store.segment("cam", bad).is_none(), "{bad}");
        }
    }

    /// A store with a 10 s reconnect window, where the publish of "cam" (one segment)
    /// was interrupted.
    fn interrupted_cam() -> StreamStore {
        let store = StreamStore::new(StoreConfig {
            reconnect_window: Duration::from_secs(10),
            ..StoreConfig::default()
        });
        let first = store.begin("cam", 1, 10).unwrap();
        first.push(segment(2000, 0), wall(0));
        first.interrupted();
        drop(first);
        store
    }

    #[test]
    fn a_publisher_back_within_the_window_continues_after_a_discontinuity() {
        let store = interrupted_cam();
        assert!(!store.is_live("cam"));
        assert!(!store.playlist("cam").unwrap().ends_with(b"#EXT-X-ENDLIST\n"));
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        assert!(store.reap(t0, Duration::ZERO).is_empty());
        assert!(store.reap(t0 + Duration::from_secs(9), Duration::ZERO).is_empty());
        let second = store.begin("cam", 99, 10).unwrap();
        assert!(second.resumed());
        assert!(!store.playlist("cam").unwrap().ends_with(b"#EXT-X-ENDLIST\n"));
        assert_eq!(second.push(segment(2000, 1), wall(0)), Some(1));
        let text = String::from_utf8(store.playlist("cam").unwrap().to_vec()).unwrap();
        let without_times: Vec<&str> =
            text.lines().filter(|l| !l.starts_with("#EXT-X-PROGRAM-DATE-TIME")).collect();
        assert_eq!(
            without_times[without_times.len() - 5..],
            ["#EXTINF:2.000,", "1-0.ts", "#EXT-X-DISCONTINUITY", "#EXTINF:2.000,", "1-1.ts"]
        );
    }

    #[test]
    fn an_interrupted_stream_ends_when_its_window_passes_and_endlist_stays() {
        let store = interrupted_cam();
        let changes = store.changes("cam").unwrap();
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        assert!(store.reap(t0, Duration::from_secs(60)).is_empty());
        assert!(store.reap(t0 + Duration::from_secs(10), Duration::from_secs(60)).is_empty());
        let ended = store.playlist("cam").unwrap();
        assert!(ended.ends_with(b"#EXT-X-ENDLIST\n"));
        assert!(changes.0.has_changed().unwrap(), "blocked requests are woken");
        // A publish after ENDLIST is a new presentation: no discontinuity, numbering on.
        let second = store.begin("cam", 2, 10).unwrap();
        assert!(!second.resumed());
        assert_eq!(second.push(segment(2000, 1), wall(0)), Some(1));
        let text = String::from_utf8(store.playlist("cam").unwrap().to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n") && text.contains("2-1.ts"), "{text}");
        assert!(!text.contains("DISCONTINUITY\n") && !text.contains("1-0.ts"), "{text}");
    }

    #[test]
    fn an_ended_or_zero_window_publish_ends_at_once() {
        let store = store();
        let publication = store.begin("cam", 1, 10).unwrap();
        publication.push(segment(2000, 0), wall(0));
        publication.interrupted();
        drop(publication);
        assert!(store.playlist("cam").unwrap().ends_with(b"#EXT-X-ENDLIST\n"), "no window");
    }

    #[test]
    fn program_date_time_follows_media_time_and_reanchors_at_discontinuities() {
        let store = StreamStore::new(StoreConfig::default());
        let publication = store.begin("cam", 1, 10).unwrap();
        // Two 2 s segments at media time 0 and 2 s, completed (a little late) at 2.1 s and 4.3 s.
        publication.push(Segment { start: 0, ..segment(2000, 0) }, wall(2100));
        publication.push(Segment { start: 180_000, ..segment(2000, 1) }, wall(4300));
        // A discontinuity: media time restarts at 0, completed at 10 s.
        publication
            .push(Segment { start: 0, discontinuity: true, ..segment(2000, 2) }, wall(10_000));
        let text = String::from_utf8(store.playlist("cam").unwrap().to_vec()).unwrap();
        let times: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:")).collect();
        assert_eq!(
            times,
            ["2025-11-25T22:00:00.100Z", "2025-11-25T22:00:02.100Z", "2025-11-25T22:00:08.000Z"]
        );
    }

    #[test]
    fn ended_streams_are_reaped_after_the_grace_period_only() {
        let store = store();
        let live = store.begin("live", 1, 10).unwrap();
        live.push(segment(2000, 0), wall(0));
        let ended = store.begin("ended", 2, 10).unwrap();
        ended.push(segment(2000, 0), wall(0));
        drop(ended);
        #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
        let t0 = Instant::now();
        let keep = Duration::from_secs(60);
        assert!(store.reap(t0, keep).is_empty());
        assert!(store.reap(t0 + Duration::from_secs(59), keep).is_empty());
        assert_eq!(store.reap(t0 + Duration::from_secs(60), keep), ["ended"]);
        assert!(store.playlist("ended").is_none());
        assert!(store.playlist("live").is_some());
        // A new stream of that name gets its own generation; its sequence goes on.
        let again = store.begin("ended", 3, 10).unwrap();
        assert_eq!(again.push(segment(2000, 0), wall(0)), Some(1));
        assert!(store.segment("ended", "3-1.ts").is_some());
    }

    /// A low-latency store: 1 s parts, 2 s segments.
    fn low_latency_store(window: usize) -> StreamStore {
        StreamStore::new(StoreConfig {
            window,
            part_target: Some(Duration::from_secs(1)),
            ..StoreConfig::default()
        })
    }

    /// Feeds `outputs` to `publication`; the sequences of the segments completed.
    fn feed(publication: &Publication, outputs: Vec<FragmentOutput>) -> Vec<u64> {
        outputs.into_iter().filter_map(|o| publication.push_fmp4(o, wall(0))).collect()
    }

    /// One segment of two 1 s parts of one fragment each (bytes `byte`, `byte + 1`).
    fn two_part_segment(byte: u8, discontinuity: bool) -> Vec<FragmentOutput> {
        let part = Duration::from_secs(1);
        vec![
            FragmentOutput::SegmentStart { discontinuity, start: 0, part_target: Some(part) },
            FragmentOutput::Fragment(Bytes::from(vec![byte; 10])),
            FragmentOutput::PartEnd { duration: part, independent: true },
            FragmentOutput::Fragment(Bytes::from(vec![byte + 1; 10])),
            FragmentOutput::PartEnd { duration: part, independent: false },
            FragmentOutput::SegmentEnd {
                duration: 2 * part,
                discontinuity,
                independent: true,
                start: 0,
            },
        ]
    }

    fn text(store: &StreamStore, directives: Directives) -> String {
        match store.reload("cam", directives) {
            Some(Reload::Ready(body)) => String::from_utf8(body.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// A segment's last part, its end and the next segment's start, made from one input, are
    /// one change: a viewer woken in between would be hinted a part the segment's end then
    /// cancels (and 404 on it).
    #[test]
    fn what_one_input_made_is_one_change() {
        let store = low_latency_store(3);
        let publication = store.begin("cam", 7, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"init0")), wall(0));
        let first = two_part_segment(1, false);
        assert_eq!(publication.push_fmp4_all(first[..4].to_vec(), wall(0)), None);
        let mut changes = store.changes("cam").unwrap();
        let seen = *changes.0.borrow_and_update();
        // The keyframe that ends the segment: its last part, its end, the next start.
        let boundary = [first[4..].to_vec(), two_part_segment(3, false)[..2].to_vec()].concat();
        assert_eq!(publication.push_fmp4_all(boundary, wall(0)), Some(0..=0));
        assert_eq!(*changes.0.borrow_and_update(), seen + 1, "one wake-up, not three");
        let playlist = text(&store, Directives::default());
        assert!(playlist.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"7-1.0.m4s\""), "{playlist}");
        assert_eq!(store.part("cam", "7-1.0.m4s"), Some(PartRead::Pending));
        // A batch of fragments wakes nobody: nothing waits for less than a part.
        let fragments = vec![FragmentOutput::Fragment(Bytes::from_static(b"more"))];
        assert_eq!(publication.push_fmp4_all(fragments, wall(0)), None);
        assert!(!changes.0.has_changed().unwrap());
        // Two segments in one batch report both.
        let two = [two_part_segment(3, false)[2..].to_vec(), two_part_segment(5, false)].concat();
        assert_eq!(publication.push_fmp4_all(two, wall(0)), Some(1..=2));
        // Nothing, or an init segment nothing lists yet, wakes nobody.
        let seen = *changes.0.borrow_and_update();
        assert_eq!(publication.push_fmp4_all(Vec::new(), wall(0)), None);
        let init = vec![FragmentOutput::Init(Bytes::from_static(b"init1"))];
        assert_eq!(publication.push_fmp4_all(init, wall(0)), None);
        assert_eq!(*changes.0.borrow(), seen);
    }

    #[test]
    fn fmp4_segments_list_their_init_and_parts_and_serve_them() {
        let store = low_latency_store(3);
        let publication = store.begin("cam", 7, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"init0")), wall(0));
        assert_eq!(feed(&publication, two_part_segment(1, false)), [0]);
        // The next segment is being written: its first part is done.
        feed(&publication, two_part_segment(3, false)[..3].to_vec());
        let playlist = text(&store, Directives::default());
        assert!(playlist.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"), "{playlist}");
        assert!(playlist.contains("#EXT-X-MAP:URI=\"7-init0.mp4\"\n"), "{playlist}");
        assert!(playlist.contains("#EXT-X-PART:DURATION=1,URI=\"7-0.0.m4s\",INDEPENDENT=YES\n"));
        assert!(
            playlist
                .contains("#EXT-X-PART:DURATION=1,URI=\"7-0.1.m4s\"\n#EXTINF:2.000,\n7-0.m4s\n")
        );
        assert!(
            playlist.ends_with(
                "#EXT-X-PART:DURATION=1,URI=\"7-1.0.m4s\",INDEPENDENT=YES\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"7-1.1.m4s\"\n"
            ),
            "{playlist}"
        );
        assert_eq!(store.init("cam", "7-init0.mp4").unwrap(), Bytes::from_static(b"init0"));
        assert!(store.init("cam", "7-init1.mp4").is_none());
        assert!(store.init("cam", "6-init0.mp4").is_none());
        let segment = store.segment("cam", "7-0.m4s").unwrap().to_bytes().unwrap();
        assert_eq!(segment, [vec![1; 10], vec![2; 10]].concat());
        let read = |file| store.part("cam", file);
        assert_eq!(read("7-0.1.m4s"), Some(PartRead::Complete(Bytes::from(vec![2; 10]).into())));
        assert_eq!(read("7-1.0.m4s"), Some(PartRead::Complete(Bytes::from(vec![3; 10]).into())));
        assert_eq!(read("7-1.1.m4s"), Some(PartRead::Pending));
        assert_eq!(read("7-1.2.m4s"), Some(PartRead::Pending));
        for bad in ["7-1.3.m4s", "7-0.2.m4s", "8-1.0.m4s", "7-1.m4s", "7-1.x.m4s", "7-1.0.ts"] {
            assert_eq!(read(bad), None, "{bad}");
        }
        assert_eq!(
            store.segment_bytes(),
            SegmentBytes { heap: 20 + 10 + 5, files: 0, writing: 0 },
            "a closed segment's parts are views, not copies"
        );
    }

    #[test]
    fn the_part_target_announced_is_the_packagers_and_never_shrinks_once_listed() {
        let store = low_latency_store(3);
        let publication = store.begin("cam", 1, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"i")), wall(0));
        let with_target = |mut outputs: Vec<FragmentOutput>, ms| {
            if let FragmentOutput::SegmentStart { part_target, .. } = &mut outputs[0] {
                *part_target = Some(Duration::from_millis(ms));
            }
            outputs
        };
        let part_inf = |store: &StreamStore| {
            let playlist = text(store, Directives::default());
            let line = playlist.lines().find(|l| l.starts_with("#EXT-X-PART-INF:"));
            line.unwrap_or_default().to_owned()
        };
        // Not the configured 1 s: what the packager chose.
        feed(&publication, with_target(two_part_segment(1, false), 1_008));
        assert_eq!(part_inf(&store), "#EXT-X-PART-INF:PART-TARGET=1.008");
        // A resumed publisher's shorter target: the parts listed keep to the longer one.
        feed(&publication, with_target(two_part_segment(3, true), 800));
        assert_eq!(part_inf(&store), "#EXT-X-PART-INF:PART-TARGET=1.008");
        feed(&publication, with_target(two_part_segment(5, true), 1_200));
        assert_eq!(part_inf(&store), "#EXT-X-PART-INF:PART-TARGET=1.2");
    }

    #[test]
    fn blocked_requests_are_released_by_the_part_they_wait_for() {
        let store = low_latency_store(3);
        let publication = store.begin("cam", 1, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"i")), wall(0));
        feed(&publication, two_part_segment(1, false));
        let wants = |msn, part| Directives { msn: Some(msn), part, skip: false };
        let changes = store.changes("cam").unwrap();
        assert!(matches!(store.reload("cam", wants(1, Some(0))), Some(Reload::Wait { .. })));
        assert_eq!(store.reload("cam", wants(3, None)), Some(Reload::TooFarAhead));
        let outputs = two_part_segment(3, false);
        feed(&publication, outputs[..2].to_vec());
        assert!(matches!(store.reload("cam", wants(1, Some(0))), Some(Reload::Wait { .. })));
        feed(&publication, outputs[2..3].to_vec());
        // The part's end woke the waiter, and the playlist now satisfies it.
        assert!(changes.0.has_changed().unwrap());
        assert!(text(&store, wants(1, Some(0))).contains("1-1.0.m4s"));
        drop(publication);
        // An ended stream satisfies any request.
        assert!(text(&store, wants(2, Some(5))).ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn a_codec_change_gives_a_new_map_after_a_discontinuity_and_old_inits_go() {
        let store = low_latency_store(3);
        let publication = store.begin("cam", 1, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"a")), wall(0));
        feed(&publication, two_part_segment(1, false));
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"b")), wall(0));
        feed(&publication, two_part_segment(3, true));
        let playlist = text(&store, Directives::default());
        assert!(
            playlist.contains(
                "#EXTINF:2.000,\n1-0.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"1-init1.mp4\"\n"
            ),
            "{playlist}"
        );
        // Window 3, and four kept after it (one more than are listed): after six more,
        // segment 0 and its init are gone.
        for byte in [5, 7, 9, 11, 13, 15] {
            feed(&publication, two_part_segment(byte, false));
        }
        assert!(store.init("cam", "1-init0.mp4").is_none());
        assert!(store.init("cam", "1-init1.mp4").is_some());
        assert!(!text(&store, Directives::default()).contains("init0"));
    }

    #[test]
    fn delta_updates_skip_old_segments_on_request_only() {
        let store = low_latency_store(10);
        let publication = store.begin("cam", 1, 10).unwrap();
        publication.push_fmp4(FragmentOutput::Init(Bytes::from_static(b"i")), wall(0));
        for byte in 0..8 {
            feed(&publication, two_part_segment(byte * 2, false));
        }
        // 8 segments of 2 s; CAN-SKIP-UNTIL is 6 target durations (12 s): 6 are kept.
        let skip = Directives { skip: true, ..Directives::default() };
        let delta = text(&store, skip);
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"), "{delta}");
        assert!(!delta.contains("\n1-1.m4s") && delta.contains("\n1-2.m4s"));
        assert!(delta.contains("#EXT-X-MAP:URI=\"1-init0.mp4\"\n"), "{delta}");
        assert!(!text(&store, Directives::default()).contains("EXT-X-SKIP"));
        // Ended: the request for a delta update gets the whole playlist.
        drop(publication);
        let ended = text(&store, skip);
        assert!(ended.ends_with("#EXT-X-ENDLIST\n") && !ended.contains("EXT-X-SKIP"), "{ended}");
    }

    /// Segment files in a vector; every other write fails, as a full memory would.
    #[derive(Debug, Default)]
    struct FlakyFiles;

    /// Writes made (every other fails), and the segment being streamed.
    #[derive(Debug, Default)]
    struct FlakyWriter(usize, Option<Vec<u8>>);

    #[derive(Debug)]
    struct VecFile(Bytes);

    impl SegmentFiles for FlakyFiles {
        type File = VecFile;
        type Writer = FlakyWriter;

        fn open(&self) -> Option<FlakyWriter> {
            Some(FlakyWriter::default())
        }
    }

    impl SegmentFileWriter for FlakyWriter {
        type File = VecFile;

        fn write(&mut self, pieces: &[Bytes]) -> Option<Arc<VecFile>> {
            self.0 += 1;
            (self.0 % 2 == 1).then(|| Arc::new(VecFile(Bytes::from(pieces.concat()))))
        }

        fn begin(&mut self) {
            self.1 = Some(Vec::new());
        }

        fn append(&mut self, bytes: &[u8]) {
            self.1.as_mut().unwrap().extend_from_slice(bytes);
        }

        fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
            self.1.as_mut().unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
        }

        fn end(&mut self) -> Option<Arc<VecFile>> {
            let streamed = self.1.take()?;
            self.write(&[Bytes::from(streamed)])
        }

        fn abandon(&mut self) {
            self.1 = None;
        }

        fn open_len(&self) -> usize {
            self.1.as_ref().map_or(0, Vec::len)
        }
    }

    impl SegmentFile for VecFile {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn read(&self) -> Option<Bytes> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn segments_go_to_files_and_stay_in_memory_when_a_write_fails() {
        let config = StoreConfig { window: 2, ..StoreConfig::default() };
        let store = StreamStore::with_segment_files(config, FlakyFiles);
        let publication = store.begin("cam", 1, 10).unwrap();
        for byte in 0..3 {
            publication.push(segment(2000, byte), wall(0));
        }
        let fetch = |sequence: u64| store.segment("cam", &format!("1-{sequence}.ts")).unwrap();
        // Once: still in the heap.
        for sequence in 0..3 {
            assert!(matches!(fetch(sequence), SegmentBody::Memory(_)), "{sequence}");
        }
        assert_eq!(store.segment_bytes(), SegmentBytes { heap: 3 * 188, files: 0, writing: 0 });
        // Twice: moved, but for the write that failed; and the file body stays.
        for _ in 0..2 {
            for (sequence, byte) in [(0, 0u8), (1, 1), (2, 2)] {
                let body = fetch(sequence);
                assert_eq!(matches!(body, SegmentBody::File(_)), sequence != 1, "{sequence}");
                assert_eq!(body.len(), 188);
                assert_eq!(body.to_bytes().unwrap(), Bytes::from(vec![byte; 188]));
            }
        }
        assert_eq!(store.segment_bytes(), SegmentBytes { heap: 188, files: 2 * 188, writing: 0 });
    }

    /// Streams a segment of 188 `byte`s through `sink`, as the packager would.
    fn streamed(sink: &mut dyn SegmentSink, byte: u8) -> Segment {
        sink.begin();
        sink.append(&[0; 100]);
        sink.append(&[byte; 88]);
        sink.overwrite(0, &[byte; 100]);
        let sink_id = sink.end();
        Segment { data: Bytes::new(), sink_len: 188, sink_id, ..segment(2000, byte) }
    }

    #[test]
    fn streamed_segments_are_files_and_one_a_file_lost_is_skipped() {
        let store = StreamStore::with_segment_files(StoreConfig::default(), FlakyFiles);
        let publication = store.begin("cam", 1, 10).unwrap();
        let mut sink = store.segment_sink(&publication);
        assert_eq!(publication.push(streamed(&mut *sink, 1), wall(0)), Some(0));
        let body = store.segment("cam", "1-0.ts").unwrap();
        assert!(matches!(body, SegmentBody::File(_)), "a file from its first fetch");
        assert_eq!(body.to_bytes().unwrap(), Bytes::from(vec![1; 188]));
        // The writer fails every other segment: that one is skipped, the next one follows a
        // discontinuity.
        assert_eq!(publication.push(streamed(&mut *sink, 2), wall(2000)), None);
        assert_eq!(publication.push(streamed(&mut *sink, 3), wall(4000)), Some(1));
        let playlist = String::from_utf8(store.playlist("cam").unwrap().to_vec()).unwrap();
        let (before, after) = playlist.split_once("1-0.ts").unwrap();
        assert!(
            !before.contains("DISCONTINUITY\n") && after.contains("DISCONTINUITY"),
            "{playlist}"
        );
        assert_eq!(store.segment("cam", "1-1.ts").unwrap().to_bytes().unwrap(), vec![3; 188]);
        assert_eq!(publication.push(streamed(&mut *sink, 4), wall(6000)), None);
        // A segment whose length is not what the file holds is skipped too.
        let mut short = streamed(&mut *sink, 5);
        short.sink_len = 100;
        assert_eq!(publication.push(short, wall(8000)), None);
        // A segment ended but never returned by the packager (an error after its end) does
        // not shift the next one onto its file.
        let _lost = streamed(&mut *sink, 6);
        let next = streamed(&mut *sink, 7);
        assert_eq!(publication.push(next, wall(10_000)), Some(2));
        assert_eq!(store.segment("cam", "1-2.ts").unwrap().to_bytes().unwrap(), vec![7; 188]);
        // Bytes being written count as file bytes; ending the publish releases them.
        sink.begin();
        sink.append(&[5; 376]);
        let bytes = SegmentBytes { heap: 0, files: 3 * 188 + 376, writing: 376 };
        assert_eq!(store.segment_bytes(), bytes);
        drop(publication);
        assert_eq!(store.segment_bytes(), SegmentBytes { heap: 0, files: 3 * 188, writing: 0 });
    }

    #[test]
    fn without_segment_files_segments_are_the_packagers_buffers_recycled() {
        use packager::segmenter::{AccessUnit, Pushed, Segmenter};
        use packager::ts_mux::Track;
        let store = store();
        let publication = store.begin("cam", 1, 10).unwrap();
        let pool = Arc::clone(store.buffer_pool());
        // The same stream packaged with the sink and with the segmenter's own buffers.
        let mut sunk = Segmenter::with_pool(Duration::from_secs(2), Arc::clone(&pool));
        assert!(sunk.set_sink(store.segment_sink(&publication)));
        let mut own = Segmenter::new(Duration::from_secs(2));
        sunk.set_tracks(true, None);
        own.set_tracks(true, None);
        let frame = vec![9u8; 40_000];
        let (mut pushed, mut fetched) = (Vec::new(), Vec::new());
        for n in 0..130i64 {
            let data: &[&[u8]] = &[&frame];
            let unit = AccessUnit {
                track: Track::Video,
                pts: n * 3000,
                dts: n * 3000,
                duration: 3000,
                keyframe: n % 60 == 0,
                data,
            };
            let (Pushed::Written(a), Pushed::Written(b)) =
                (sunk.push(unit).unwrap(), own.push(unit).unwrap())
            else {
                panic!("written at once");
            };
            if n == 70 {
                let writing = store.segment_bytes().writing;
                assert!(writing > STAGING_BYTES, "the open segment counts: {writing}");
            }
            if let (Some(a), Some(b)) = (a, b) {
                let sequence = publication.push(a, wall(2000)).unwrap();
                let body = store.segment("cam", &format!("1-{sequence}.ts")).unwrap();
                assert_eq!(body.to_bytes(), Some(b.data));
                pushed.push(sequence);
                fetched.push(body);
            }
        }
        assert_eq!(pushed, [0, 1]);
        // Segment 1, fetched once: the staging buffers as they filled, the last one partly.
        let Some(SegmentBody::Memory(second)) = fetched.pop() else { panic!("in the heap") };
        let pieces = second.as_slice();
        assert!(pieces.len() > 1 && pieces.iter().all(|p| p.len() <= STAGING_BYTES));
        assert!(pieces.iter().rev().skip(1).all(|p| p.len() > STAGING_BYTES - 188));
        let buffers = pieces.len();
        // Fetched a second time (the loop fetched segment 0 once), a segment is one buffer.
        let Some(SegmentBody::Memory(joined)) = store.segment("cam", "1-0.ts") else {
            panic!("in the heap");
        };
        assert_eq!(joined.as_slice().len(), 1);
        assert_eq!(Some(joined.to_bytes()), fetched[0].to_bytes());
        let again = store.segment("cam", "1-0.ts").unwrap();
        assert!(matches!(&again, SegmentBody::Memory(p) if p == &joined), "kept joined");
        drop((second, fetched, joined, again, own));
        assert!(store.segment_bytes().writing > 0, "frames after the last cut");
        drop(sunk);
        assert_eq!(store.segment_bytes().writing, 0, "the open segment's buffers went back");
        let before = pool.held().0;
        drop(publication);
        assert_eq!(store.reap(Instant::now(), Duration::ZERO), ["cam"]);
        // Segment 1's buffers, but for its trimmed last one, and segment 0's joined one.
        assert!(pool.held().0 >= before + buffers, "the segments' buffers went back to the pool");
    }

    #[test]
    fn a_heap_sink_rewrites_across_buffers_and_drops_a_segment_rewritten_past_its_end() {
        let store = store();
        let publication = store.begin("cam", 1, 10).unwrap();
        let mut sink = store.segment_sink(&publication);
        sink.begin();
        let mut buffer = sink.append_buffer(vec![1; 100]);
        assert!(buffer.is_empty() && buffer.capacity() >= STAGING_BYTES);
        buffer.extend_from_slice(&[2; 50]);
        let _ = sink.append_buffer(buffer);
        sink.append(&[3; 38]);
        sink.overwrite(90, &[7; 70]);
        let sink_id = sink.end();
        let ended = Segment { data: Bytes::new(), sink_len: 188, sink_id, ..segment(2000, 0) };
        assert_eq!(publication.push(ended, wall(0)), Some(0));
        let expected = [vec![1; 90], vec![7; 70], vec![3; 28]].concat();
        assert_eq!(store.segment("cam", "1-0.ts").unwrap().to_bytes().unwrap(), expected);
        assert_eq!(store.segment_bytes(), SegmentBytes { heap: 188, files: 0, writing: 0 });
        sink.begin();
        sink.append(&[4; 10]);
        assert_eq!(store.segment_bytes().writing, 10);
        sink.overwrite(5, &[4; 6]);
        let sink_id = sink.end();
        let spoiled = Segment { data: Bytes::new(), sink_len: 10, sink_id, ..segment(2000, 0) };
        assert_eq!(publication.push(spoiled, wall(2000)), None, "skipped");
        assert_eq!(store.segment_bytes().writing, 0);
        // A segment ended but never returned by the packager (an error after its end) does
        // not shift the next one onto its bytes.
        let _lost = streamed(&mut *sink, 6);
        let next = streamed(&mut *sink, 7);
        assert_eq!(publication.push(next, wall(4000)), Some(1));
        assert_eq!(store.segment("cam", "1-1.ts").unwrap().to_bytes().unwrap(), vec![7; 188]);
    }
}
