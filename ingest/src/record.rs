//! Recording (Nginx-RTMP's `record`): each publish written to disk as one fragmented MP4
//! file as it goes, beside a VOD playlist that lists its segments by byte range (RFC 8216
//! §4.3.2.2, EXT-X-BYTERANGE; §4.3.2.5, EXT-X-MAP with BYTERANGE), so the recording plays
//! over HTTP while it is written and after.
//!
//! The publisher's connection remuxes for the recording (its own fMP4 packager, whatever the
//! HLS variant) and hands the bytes to the recording's writer thread through a bounded
//! channel: a slow or full disk never slows the stream. A write that fails (disk full,
//! permissions) is logged once, counted and reported, the recording skips to the next
//! segment and tries again there, in a new file. A disk slower than the stream (the queue
//! full) is reported the same way, and the recording skips to the next segment (FLV: the
//! next keyframe) in the same file. A crash loses at most what the writer had not written
//! (the file is appended fragment by fragment; the playlist gains a line per segment). A
//! codec change starts a new file (a new init segment), and so does a change of the
//! stream's visibility ([`Recorder::split`]: what is recorded while it is private is marked
//! so and never served).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SendError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use packager::{FragmentOutput, Remuxer, RemuxerConfig};
use tracing::{info, warn};

use crate::seed::Seed;

/// Messages a recording's writer may fall behind by (init segments, fragments, segment
/// ends; FLV tags): a few seconds of frames; past it the recording skips to the next
/// segment (FLV: keyframe).
pub const WRITER_QUEUE: usize = 512;
/// Bytes of media a recording's writer may fall behind by, whatever the message count: a
/// publisher's messages may be up to 8 MiB each (4K keyframes), so 512 FLV tags could hold
/// 4 GiB per recording while a disk stalls, and an MP4 recording's commands are whole
/// segments. 16 MiB is 20 s at 6 Mbit/s; one command larger than that (a segment of a very
/// high bit rate) is taken when nothing else is queued.
pub const WRITER_QUEUE_BYTES: usize = 16 << 20;
/// The least EXT-X-TARGETDURATION of a recording's playlist, written before any segment
/// exists: the packager's forced cut (20 s without a keyframe) stays within it; a longer
/// `--segment-duration` (audio-only streams are cut at it) raises it.
pub const RECORDING_TARGET_DURATION: u64 = 21;
/// Suffix of the recordings of private streams: never served over HTTP.
pub const PRIVATE_MARK: &str = ".private";

/// What a recording is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RecordFormat {
    /// Fragmented MP4 with a VOD playlist by byte range (plays over HTTP).
    #[default]
    Mp4,
    /// FLV, the tags as the encoder sent them (what Nginx-RTMP records; no playlist).
    Flv,
}

/// Where recordings go and how long they stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordConfig {
    /// `--record-dir`: each stream records into `<dir>/<stream>/`; `None`: no recording.
    pub dir: Option<PathBuf>,
    /// `--record-format`.
    pub format: RecordFormat,
    /// `--record-streams marked`: only streams whose key says `record: true` (else every
    /// stream whose key does not say `record: false`).
    pub only_marked: bool,
}

impl RecordConfig {
    /// Where a publish whose key says `record` (if anything) is recorded, if it is.
    pub fn dir_for(&self, record: Option<bool>) -> Option<&Path> {
        let wanted = record.unwrap_or(!self.only_marked);
        self.dir.as_deref().filter(|_| wanted)
    }
}

/// FLV tag types (FLV specification, E.4.1).
const FLV_AUDIO: u8 = 8;
const FLV_VIDEO: u8 = 9;
const FLV_SCRIPT: u8 = 18;

/// The FLV tag type of `media`.
fn flv_kind(media: rtmp::MediaKind) -> u8 {
    match media {
        rtmp::MediaKind::Audio => FLV_AUDIO,
        rtmp::MediaKind::Video => FLV_VIDEO,
    }
}
/// The FLV file header with audio and video flags, then PreviousTagSize0 (E.2, E.3).
const FLV_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

/// What the writer thread is told.
enum Command {
    /// A new file starts with this init segment.
    Init(Bytes),
    /// A segment starts here.
    SegmentStart,
    /// More of the open segment.
    Fragment(Bytes),
    /// The open segment ended.
    SegmentEnd(Duration),
    /// An FLV tag (FLV recordings).
    Tag {
        /// [`FLV_AUDIO`], [`FLV_VIDEO`] or [`FLV_SCRIPT`].
        kind: u8,
        timestamp: u32,
        body: Bytes,
        /// A decoder may start here (a new file after a failure starts at one).
        keyframe: bool,
    },
}

impl Command {
    /// Bytes of media it holds.
    fn len(&self) -> usize {
        match self {
            Self::Init(bytes) | Self::Fragment(bytes) | Self::Tag { body: bytes, .. } => {
                bytes.len()
            }
            Self::SegmentStart | Self::SegmentEnd(_) => 0,
        }
    }
}

/// The publisher's side of a writer's queue: bounded by [`WRITER_QUEUE`] commands and
/// [`WRITER_QUEUE_BYTES`].
struct WriterQueue {
    commands: SyncSender<Command>,
    /// Bytes sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
}

impl WriterQueue {
    /// A queue and the writer's side of it.
    fn new() -> (Self, impl Iterator<Item = Command> + Send) {
        let (commands, taken) = sync_channel(WRITER_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&queued);
        let taken = taken.into_iter().inspect(move |command: &Command| {
            counted.fetch_sub(command.len(), Ordering::Relaxed);
        });
        (Self { commands, queued }, taken)
    }

    /// Queues `command` unless the queue is full (in commands or bytes).
    fn try_send(&self, command: Command) -> Result<(), TrySendError<Command>> {
        let (len, queued) = (command.len(), self.queued.load(Ordering::Relaxed));
        if queued > 0 && queued + len > WRITER_QUEUE_BYTES {
            return Err(TrySendError::Full(command));
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.commands.try_send(command).inspect_err(|_| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        })
    }

    /// Queues `command`, waiting for room (in commands; the bytes of a finishing
    /// recording's last segment are not held back).
    fn send(&self, command: Command) -> Result<(), SendError<Command>> {
        self.queued.fetch_add(command.len(), Ordering::Relaxed);
        self.commands.send(command)
    }
}

/// A finished recording, for the `record_done` event and callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The stream.
    pub stream: String,
    /// The MP4 files written (one per codec configuration).
    pub files: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
    /// Media recorded.
    pub duration: Duration,
    /// Write failures (the recording has gaps).
    pub failures: u64,
}

impl Recorded {
    fn empty(stream: String) -> Self {
        Self { stream, files: Vec::new(), bytes: 0, duration: Duration::ZERO, failures: 0 }
    }
}

/// The file of attempt `part` of a recording named `base` (the first has no number), and its
/// name without the extension.
fn part_file(base: &Path, part: u32, extension: &str) -> (PathBuf, String) {
    let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = if part == 0 { name } else { format!("{name}-{part}") };
    (base.with_file_name(format!("{name}.{extension}")), name)
}

/// How a publish's recording is made, kept to start its next file.
struct Settings {
    dir: PathBuf,
    stream: String,
    remuxer: RemuxerConfig,
    format: RecordFormat,
    on_error: Arc<dyn Fn(&std::io::Error) + Send + Sync>,
}

/// One publish's recording.
pub(crate) struct Recorder {
    settings: Arc<Settings>,
    /// The file is marked private ([`PRIVATE_MARK`]).
    private: bool,
    seed: Seed,
    /// The latest media timestamp, which a new file's seed is given.
    timestamp: u32,
    /// A video track exists (else each audio frame is a place to resume).
    video: bool,
    /// The recording's packager (MP4); `None` for FLV.
    remuxer: Option<Remuxer>,
    to_writer: Option<WriterQueue>,
    writer: Option<std::thread::JoinHandle<Recorded>>,
    /// Messages are dropped because the writer fell behind: until the next segment (MP4)
    /// or keyframe (FLV).
    skipping: bool,
    /// The writer fell behind and has taken nothing since: the gap was reported.
    behind: bool,
    /// Times the writer fell behind: gaps in the recording.
    gaps: u64,
    /// An init segment the writer's queue had no room for: sent before the next segment.
    pending_init: Option<Bytes>,
    /// Once finishing: what the writer's queue had no room for, in order, handed to the
    /// writer by [`Finishing::join`] (which may wait) rather than skipped. At most the last
    /// segment's fragments.
    tail: Option<Vec<Command>>,
}

/// A recording being finished: its writer, what is left to hand it, and the gaps the
/// publisher's side left.
pub(crate) struct Finishing {
    writer: std::thread::JoinHandle<Recorded>,
    to_writer: Option<WriterQueue>,
    tail: Vec<Command>,
    gaps: u64,
}

impl Finishing {
    /// What was recorded, once the writer has taken the rest and is done (it may wait for
    /// the disk: call it where blocking is fine); `None` if the writer panicked.
    pub(crate) fn join(self) -> Option<Recorded> {
        if let Some(to_writer) = self.to_writer {
            for command in self.tail {
                if to_writer.send(command).is_err() {
                    break;
                }
            }
        }
        let mut recorded = self.writer.join().ok()?;
        recorded.failures += self.gaps;
        Some(recorded)
    }
}

impl Recorder {
    /// Starts recording `stream` (published at `started`) under `dir`, remuxing with
    /// `remuxer` settings (fMP4, no parts); `private` marks the file.
    pub(crate) fn start(
        dir: &Path,
        stream: &str,
        private: bool,
        started: SystemTime,
        remuxer: RemuxerConfig,
        format: RecordFormat,
        on_error: impl Fn(&std::io::Error) + Send + Sync + 'static,
    ) -> Self {
        let settings = Settings {
            dir: dir.to_owned(),
            stream: stream.to_owned(),
            remuxer,
            format,
            on_error: Arc::new(on_error),
        };
        Self::open(Arc::new(settings), private, started)
    }

    fn open(settings: Arc<Settings>, private: bool, started: SystemTime) -> Self {
        let config = RemuxerConfig {
            container: packager::Container::Fmp4 { part_target: None },
            ..settings.remuxer
        };
        let format = settings.format;
        let remuxer = (format == RecordFormat::Mp4).then(|| Remuxer::new(config));
        let (to_writer, from_publisher) = WriterQueue::new();
        let target = RECORDING_TARGET_DURATION.max(config.target_duration.as_secs() + 1);
        // Milliseconds: two publishes of a stream within a second get two names.
        let stamp = humantime::format_rfc3339_millis(started).to_string().replace(':', "-");
        let mark = if private { PRIVATE_MARK } else { "" };
        let stream = settings.stream.clone();
        let base = settings.dir.join(&stream).join(format!("{stream}-{stamp}{mark}"));
        let on_error = Arc::clone(&settings.on_error);
        let spawned = std::thread::Builder::new().name(format!("record {stream}")).spawn(
            move || match format {
                RecordFormat::Mp4 => write(&base, target, stream, from_publisher, &*on_error),
                RecordFormat::Flv => write_flv(&base, stream, from_publisher, &*on_error),
            },
        );
        let (to_writer, writer) = match spawned {
            Ok(writer) => (Some(to_writer), Some(writer)),
            Err(error) => {
                // No thread to write with (a thread limit): reported, nothing recorded.
                (settings.on_error)(&error);
                (None, None)
            }
        };
        Self {
            settings,
            private,
            seed: Seed::default(),
            timestamp: 0,
            video: false,
            remuxer,
            to_writer,
            writer,
            skipping: false,
            behind: false,
            gaps: 0,
            pending_init: None,
            tail: None,
        }
    }

    /// Whether the file is marked private.
    pub(crate) fn private(&self) -> bool {
        self.private
    }

    /// Ends this file where the stream's visibility changed to `private`, and goes on in
    /// a new one marked so (started at `now`, from the next keyframe, with the latest
    /// metadata and configurations): what was recorded while the stream was public stays
    /// public, and nothing recorded while it was private is ever served. Returns this
    /// file's recorder, to finish.
    pub(crate) fn split(&mut self, private: bool, now: SystemTime) -> Self {
        let mut next = Self::open(Arc::clone(&self.settings), private, now);
        next.seed = self.seed.clone();
        next.timestamp = self.timestamp;
        next.video = self.video;
        match &mut next.remuxer {
            Some(remuxer) => {
                // The packager waits for a keyframe after the configurations.
                let configs = [
                    (packager::TagKind::Video, &next.seed.video),
                    (packager::TagKind::Audio, &next.seed.audio),
                ];
                for (kind, config) in configs {
                    if let Some(config) = config {
                        let _ = remuxer.push(kind, next.timestamp, config);
                    }
                }
            }
            // Metadata and configurations go before the first keyframe.
            None => next.skipping = true,
        }
        std::mem::replace(self, next)
    }

    /// Records one media message.
    pub(crate) fn media(&mut self, kind: packager::TagKind, timestamp: u32, payload: &Bytes) {
        self.timestamp = timestamp;
        let media = match kind {
            packager::TagKind::Audio => rtmp::MediaKind::Audio,
            packager::TagKind::Video => {
                self.video = true;
                rtmp::MediaKind::Video
            }
        };
        let role = crate::push::queue::role(media, payload);
        if role == crate::push::Role::Config {
            self.seed.keep_config(media, payload);
        }
        match &mut self.remuxer {
            Some(remuxer) => {
                // A frame the recording's packager refuses is refused by the live one too,
                // which logs.
                let _ = remuxer.push(kind, timestamp, payload);
                self.forward();
            }
            None => {
                // A decoder resumes at a keyframe, at any audio frame without video: where
                // the writer may start a new file after a failure too.
                let keyframe = role == crate::push::Role::Keyframe
                    || (kind == packager::TagKind::Audio && !self.video);
                if self.skipping {
                    // With the configurations first; those seen meanwhile are in the seed.
                    if !keyframe || !self.send_seed() {
                        return;
                    }
                    self.skipping = false;
                }
                let (kind, body) = (flv_kind(media), payload.clone());
                let tag = Command::Tag { kind, timestamp, body, keyframe };
                if self.send(tag).is_err() {
                    self.skipping = true;
                }
            }
        }
    }

    /// Records `onMetaData` (its AMF0 values), FLV only (MP4 carries its own).
    pub(crate) fn metadata(&mut self, values: &Bytes) {
        self.seed.metadata = Some(values.clone());
        if self.remuxer.is_none() && !self.skipping {
            let tag = Command::Tag {
                kind: FLV_SCRIPT,
                timestamp: 0,
                body: values.clone(),
                keyframe: false,
            };
            if self.send(tag).is_err() {
                self.skipping = true;
            }
        }
    }

    /// The seed's metadata and configurations as FLV tags; whether the writer took them.
    fn send_seed(&mut self) -> bool {
        let seed = self.seed.clone();
        let tags = [(FLV_SCRIPT, seed.metadata), (FLV_AUDIO, seed.audio), (FLV_VIDEO, seed.video)];
        for (kind, body) in tags {
            let Some(body) = body else { continue };
            let timestamp = if kind == FLV_SCRIPT { 0 } else { self.timestamp };
            if self.send(Command::Tag { kind, timestamp, body, keyframe: false }).is_err() {
                return false;
            }
        }
        true
    }

    /// Hands `command` to the writer (nothing to do without one); gives it back when the
    /// writer's queue is full (a gap, counted and reported once until the writer takes
    /// something again).
    fn send(&mut self, command: Command) -> Result<(), Command> {
        let Some(to_writer) = &self.to_writer else { return Ok(()) };
        if let Some(tail) = self.tail.as_mut().filter(|tail| !tail.is_empty()) {
            tail.push(command);
            return Ok(());
        }
        match to_writer.try_send(command) {
            Ok(()) => {
                self.behind = false;
                Ok(())
            }
            Err(TrySendError::Full(command)) if self.tail.is_some() => {
                self.tail.get_or_insert_default().push(command);
                Ok(())
            }
            Err(TrySendError::Full(command)) => {
                if !std::mem::replace(&mut self.behind, true) {
                    self.gaps += 1;
                    let error = "the disk fell behind the stream; part of it is skipped";
                    (self.settings.on_error)(&std::io::Error::other(error));
                }
                Err(command)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.to_writer = None;
                Ok(())
            }
        }
    }

    fn forward(&mut self) {
        while let Some(output) = self.remuxer.as_mut().and_then(Remuxer::pull_fmp4) {
            let command = match output {
                FragmentOutput::Init(init) => Command::Init(init),
                FragmentOutput::SegmentStart { .. } => {
                    self.skipping = false;
                    if let Some(init) = self.pending_init.take()
                        && let Err(Command::Init(init)) = self.send(Command::Init(init))
                    {
                        // Still no room: this segment is skipped too, the init kept.
                        self.pending_init = Some(init);
                        self.skipping = true;
                        continue;
                    }
                    Command::SegmentStart
                }
                FragmentOutput::Fragment(bytes) => Command::Fragment(bytes),
                FragmentOutput::PartEnd { .. } => continue,
                FragmentOutput::SegmentEnd { duration, .. } => Command::SegmentEnd(duration),
            };
            if self.skipping && !matches!(command, Command::Init(_)) {
                continue;
            }
            let init = matches!(command, Command::Init(_));
            match self.send(command) {
                // A newer init went: one held for lack of room is stale.
                Ok(()) if init => self.pending_init = None,
                Ok(()) => {}
                Err(command) => {
                    // The disk is slower than the stream: skip to the next segment (a new
                    // init is kept for it: fragments are never written under the old one).
                    if let Command::Init(init) = command {
                        self.pending_init = Some(init);
                    }
                    self.skipping = true;
                }
            }
        }
    }

    /// Ends the recording: the last segment, then the writer finishes the playlist; what
    /// was recorded comes from [`Finishing::join`].
    pub(crate) fn finish(mut self) -> Option<Finishing> {
        // What is left is handed over whole, waiting for the writer if it must.
        self.tail = Some(Vec::new());
        if let Some(remuxer) = &mut self.remuxer {
            remuxer.finish();
        }
        self.forward();
        let writer = self.writer.take()?;
        let tail = self.tail.take().unwrap_or_default();
        Some(Finishing { writer, to_writer: self.to_writer.take(), tail, gaps: self.gaps })
    }
}

/// The file a recording writes, with its playlist.
struct Output {
    mp4: File,
    playlist: File,
    path: PathBuf,
    /// Bytes in the MP4 file.
    len: u64,
    /// Where the open segment starts in it.
    segment_start: u64,
}

impl Output {
    fn create(base: &Path, part: u32, target: u64, init: &[u8]) -> std::io::Result<Self> {
        if let Some(parent) = base.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (path, name) = part_file(base, part, "mp4");
        let mut mp4 = OpenOptions::new().create_new(true).append(true).open(&path)?;
        let playlist_path = path.with_extension("m3u8");
        let created = mp4
            .write_all(init)
            .and_then(|()| OpenOptions::new().create_new(true).append(true).open(&playlist_path));
        // A file that failed (a full disk) is not left behind for each attempt.
        let mut playlist = created.inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        let head = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"{name}.mp4\",BYTERANGE=\"{}@0\"\n",
            init.len()
        );
        // One write per entry: a reader never sees half of one.
        playlist.write_all(head.as_bytes()).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&playlist_path);
        })?;
        let len = init.len() as u64;
        Ok(Self { mp4, playlist, path, len, segment_start: len })
    }

    fn segment_end(&mut self, duration: Duration) -> std::io::Result<()> {
        let name =
            self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let millis = duration.as_millis();
        let entry = format!(
            "#EXTINF:{}.{:03},\n#EXT-X-BYTERANGE:{}@{}\n{name}\n",
            millis / 1000,
            millis % 1000,
            self.len - self.segment_start,
            self.segment_start
        );
        self.playlist.write_all(entry.as_bytes())
    }

    fn close(mut self) -> std::io::Result<()> {
        self.playlist.write_all(b"#EXT-X-ENDLIST\n")?;
        self.mp4.sync_data()?;
        self.playlist.sync_data()
    }
}

/// Whether the writer is skipping to the next segment after a failure, and whether that
/// failure was reported.
#[derive(Default)]
struct Breakage {
    broken: bool,
    reported: bool,
}

/// Counts a failure; reports the first of a streak.
fn fail(
    error: std::io::Error,
    recorded: &mut Recorded,
    state: &mut Breakage,
    on_error: &dyn Fn(&std::io::Error),
) {
    if !state.reported {
        on_error(&error);
        state.reported = true;
    }
    recorded.failures += 1;
    state.broken = true;
}

/// The writer thread: files under `base`, until the publisher hangs up.
fn write(
    base: &Path,
    target: u64,
    stream: String,
    commands: impl Iterator<Item = Command>,
    on_error: &dyn Fn(&std::io::Error),
) -> Recorded {
    let mut recorded = Recorded::empty(stream);
    let mut output: Option<Output> = None;
    let mut init: Option<Bytes> = None;
    let mut part = 0;
    // After a failure, nothing is written until the next segment starts in a new file; the
    // failure is reported once, until a file is written again.
    let mut state = Breakage::default();
    for command in commands {
        match command {
            Command::Init(bytes) => {
                if let Some(done) = output.take() {
                    let _ = done.close();
                }
                init = Some(bytes);
            }
            Command::SegmentStart => {
                if state.broken {
                    if let Some(done) = output.take() {
                        let _ = done.close();
                    }
                    state.broken = false;
                }
                if output.is_none() {
                    let Some(init) = &init else { continue };
                    // Every attempt takes a new name: a failed one may have left its file.
                    let attempt = part;
                    part += 1;
                    match Output::create(base, attempt, target, init) {
                        Ok(created) => {
                            info!(path = %created.path.display(), "recording");
                            state.reported = false;
                            recorded.files.push(created.path.clone());
                            recorded.bytes += created.len;
                            output = Some(created);
                        }
                        Err(error) => {
                            fail(error, &mut recorded, &mut state, on_error);
                            continue;
                        }
                    }
                }
                if let Some(output) = &mut output {
                    output.segment_start = output.len;
                }
            }
            Command::Fragment(bytes) if !state.broken => {
                if let Some(out) = &mut output {
                    match out.mp4.write_all(&bytes) {
                        Ok(()) => {
                            out.len += bytes.len() as u64;
                            recorded.bytes += bytes.len() as u64;
                        }
                        Err(error) => fail(error, &mut recorded, &mut state, on_error),
                    }
                }
            }
            Command::SegmentEnd(duration) if !state.broken => {
                if let Some(out) = &mut output {
                    match out.segment_end(duration) {
                        Ok(()) => recorded.duration += duration,
                        Err(error) => fail(error, &mut recorded, &mut state, on_error),
                    }
                }
            }
            Command::Fragment(_) | Command::SegmentEnd(_) | Command::Tag { .. } => {}
        }
    }
    if let Some(done) = output.take()
        && let Err(error) = done.close()
    {
        warn!(%error, "recording not closed cleanly");
    }
    recorded
}

/// The FLV writer thread: `<base>.flv`, the tags as they come, their clock from the file's
/// first audio or video frame (as Nginx-RTMP's recordings: each file starts at 0, whatever the
/// publisher's clock, after a split or a relay's); after a failure, a new file at the next
/// keyframe.
fn write_flv(
    base: &Path,
    stream: String,
    commands: impl Iterator<Item = Command>,
    on_error: &dyn Fn(&std::io::Error),
) -> Recorded {
    let mut recorded = Recorded::empty(stream);
    let mut state = Breakage::default();
    let mut file: Option<File> = None;
    // The latest metadata and decoder configurations, which a new file starts with.
    let mut seed = Seed::default();
    let (mut first, mut last) = (None, 0u32);
    // The current file's first audio or video timestamp.
    let mut epoch: Option<u32> = None;
    let mut part = 0;
    for command in commands {
        let Command::Tag { kind, timestamp, body, keyframe } = command else { continue };
        let media = match kind {
            FLV_AUDIO => Some(rtmp::MediaKind::Audio),
            FLV_VIDEO => Some(rtmp::MediaKind::Video),
            _ => None,
        };
        let config =
            media.is_some_and(|m| crate::push::queue::role(m, &body) == crate::push::Role::Config);
        match media {
            Some(media) if config => {
                seed.keep_config(media, &body);
            }
            None if kind == FLV_SCRIPT => seed.metadata = Some(body.clone()),
            _ => {}
        }
        if state.broken && !keyframe {
            continue;
        }
        if file.is_none() || state.broken {
            let (path, _) = part_file(base, part, "flv");
            part += 1;
            let created = base
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| OpenOptions::new().create_new(true).append(true).open(&path));
            match created {
                Ok(mut created) => {
                    epoch = None;
                    let mut head = FLV_HEADER.to_vec();
                    // A new file starts with the metadata the stream had.
                    if let Some(script) = seed.metadata.as_ref().filter(|_| kind != FLV_SCRIPT) {
                        flv_tag(&mut head, FLV_SCRIPT, 0, script);
                    }
                    // And the decoder configurations, unless this tag is one.
                    if !config {
                        for (media, body) in seed.configs() {
                            flv_tag(&mut head, flv_kind(media), 0, body);
                        }
                    }
                    if let Err(error) = created.write_all(&head) {
                        // Not left behind for each attempt (a full disk).
                        let _ = std::fs::remove_file(&path);
                        fail(error, &mut recorded, &mut state, on_error);
                        continue;
                    }
                    info!(path = %path.display(), "recording");
                    recorded.bytes += head.len() as u64;
                    recorded.files.push(path);
                    file = Some(created);
                    state = Breakage::default();
                }
                Err(error) => {
                    fail(error, &mut recorded, &mut state, on_error);
                    continue;
                }
            }
        }
        let at = match epoch {
            // Metadata and configurations before the first frame (a relay may stamp them 0)
            // are at 0; the first frame sets the file's clock.
            None if media.is_none() || config => 0,
            _ => {
                let since = timestamp.wrapping_sub(*epoch.get_or_insert(timestamp));
                // A tag a little before the first frame (audio interleaved ahead of the
                // keyframe that began the file, metadata stamped 0) is at 0, not 49 days on.
                if since > i32::MAX as u32 { 0 } else { since }
            }
        };
        let mut tag = Vec::with_capacity(15 + body.len());
        flv_tag(&mut tag, kind, at, &body);
        if let Some(out) = &mut file {
            match out.write_all(&tag) {
                Ok(()) => {
                    recorded.bytes += tag.len() as u64;
                    if kind != FLV_SCRIPT {
                        let start = *first.get_or_insert(timestamp);
                        last = last.max(timestamp.wrapping_sub(start));
                    }
                }
                Err(error) => fail(error, &mut recorded, &mut state, on_error),
            }
        }
    }
    recorded.duration = Duration::from_millis(u64::from(last));
    if let Some(file) = file {
        let _ = file.sync_data();
    }
    recorded
}

/// Appends one FLV tag and its PreviousTagSize (FLV specification E.4.1).
fn flv_tag(out: &mut Vec<u8>, kind: u8, timestamp: u32, body: &[u8]) {
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX) & 0x00ff_ffff;
    out.push(kind);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    out.push(timestamp.to_be_bytes()[0]);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&body[..size as usize]);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

/// Files a recording is still being written to are never deleted: a file modified within
/// this long is in use.
pub const IN_USE: Duration = Duration::from_secs(120);

/// Deletes recordings under `dir` older than `max_age` (if any), then the oldest while they
/// take more than `max_bytes` (if any), never one modified within [`IN_USE`]; each
/// recording's MP4 and playlist go together. Returns the MP4 files deleted.
pub fn sweep(
    dir: &Path,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
    now: SystemTime,
) -> Vec<PathBuf> {
    let mut recordings: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let Ok(streams) = std::fs::read_dir(dir) else { return Vec::new() };
    for stream in streams.flatten() {
        let Ok(files) = std::fs::read_dir(stream.path()) else { continue };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "mp4" && e != "flv") {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            let playlist = std::fs::metadata(path.with_extension("m3u8")).map_or(0, |m| m.len());
            recordings.push((modified, meta.len() + playlist, path));
        }
    }
    recordings.sort();
    let in_use = |modified: SystemTime| now.duration_since(modified).unwrap_or_default() < IN_USE;
    let mut total: u64 = recordings.iter().map(|(_, len, _)| len).sum();
    let mut deleted = Vec::new();
    for (modified, len, path) in recordings {
        let too_old =
            max_age.is_some_and(|age| now.duration_since(modified).unwrap_or_default() > age);
        let too_big = max_bytes.is_some_and(|max| total > max);
        if (too_old || too_big) && !in_use(modified) {
            let _ = std::fs::remove_file(path.with_extension("m3u8"));
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                deleted.push(path);
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes nothing (a stalled disk): the recording skips (to the next
    /// segment, or FLV keyframe) and the gap is reported once however many segments it
    /// lasts; once the writer takes again, the next stall is a second gap.
    #[test]
    fn a_stalled_writer_is_one_gap_however_long_it_lasts() {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        use testkit::{Clip, clip, flv::read_tags};
        let tags = read_tags(&clip(Clip::AvSmall));
        let config = RemuxerConfig {
            target_duration: Duration::from_secs(1),
            container: packager::Container::Ts,
        };
        for format in [RecordFormat::Mp4, RecordFormat::Flv] {
            let reports = Arc::new(AtomicU32::new(0));
            let seen = Arc::clone(&reports);
            let dir = Path::new("/nonexistent-rtmp-hls");
            let on_error = move |_: &std::io::Error| {
                seen.fetch_add(1, Relaxed);
            };
            let mut recorder =
                Recorder::start(dir, "cam", false, SystemTime::now(), config, format, on_error);
            // Its writer replaced by a queue nobody reads.
            let (stalled, queue) = sync_channel(4);
            recorder.to_writer = Some(WriterQueue { commands: stalled, queued: Arc::default() });
            let feed = |recorder: &mut Recorder| {
                for tag in &tags {
                    let kind = match tag.tag_type {
                        8 => packager::TagKind::Audio,
                        9 => packager::TagKind::Video,
                        _ => continue,
                    };
                    recorder.media(kind, tag.timestamp, &tag.data);
                }
            };
            feed(&mut recorder);
            assert_eq!((reports.load(Relaxed), recorder.gaps), (1, 1), "{format:?}");
            while queue.try_recv().is_ok() {}
            feed(&mut recorder);
            assert_eq!((reports.load(Relaxed), recorder.gaps), (2, 2), "{format:?}");
        }
    }

    /// Feeds every audio and video tag of `clip` to `recorder`.
    fn feed(recorder: &mut Recorder, clip: testkit::Clip) {
        for tag in &testkit::flv::read_tags(&testkit::clip(clip)) {
            let kind = match tag.tag_type {
                8 => packager::TagKind::Audio,
                9 => packager::TagKind::Video,
                _ => continue,
            };
            recorder.media(kind, tag.timestamp, &tag.data);
        }
    }

    /// A recorder of `clip` whose writer is a queue of `capacity` nobody reads yet.
    fn queued(
        format: RecordFormat,
        capacity: usize,
    ) -> (Recorder, std::sync::mpsc::Receiver<Command>) {
        let config = RemuxerConfig {
            target_duration: Duration::from_secs(1),
            container: packager::Container::Ts,
        };
        let dir = Path::new("/nonexistent-rtmp-hls");
        let mut recorder =
            Recorder::start(dir, "cam", false, SystemTime::now(), config, format, |_| {});
        let (commands, queue) = sync_channel(capacity);
        recorder.to_writer = Some(WriterQueue { commands, queued: Arc::default() });
        (recorder, queue)
    }

    /// At the end of a publish the writer's queue may be full: the last segment waits for
    /// room rather than being skipped.
    #[test]
    fn the_last_segment_waits_for_a_full_writer() {
        // How many commands the clip makes before the end.
        let (mut recorder, queue) = queued(RecordFormat::Mp4, 10_000);
        feed(&mut recorder, testkit::Clip::AvSmall);
        let before_end = queue.try_iter().count();
        // A queue exactly that long, full when the recording ends.
        let (mut recorder, queue) = queued(RecordFormat::Mp4, before_end);
        feed(&mut recorder, testkit::Clip::AvSmall);
        assert_eq!(recorder.gaps, 0);
        let (go, wait) = sync_channel::<()>(1);
        let writer = std::thread::spawn(move || {
            let _ = wait.recv();
            let mut recorded = Recorded::empty("cam".into());
            for command in queue {
                if let Command::SegmentEnd(duration) = command {
                    recorded.duration += duration;
                }
            }
            recorded
        });
        recorder.writer = Some(writer);
        let finishing = recorder.finish().unwrap();
        assert!(!finishing.tail.is_empty(), "the queue was full at the end");
        go.send(()).unwrap();
        let recorded = finishing.join().unwrap();
        assert_eq!(recorded.failures, 0);
        // AvSmall: 4 s of media, every segment's end written.
        let expected = Duration::from_secs(4);
        let off = recorded.duration.abs_diff(expected);
        assert!(off < Duration::from_millis(100), "{:?}", recorded.duration);
    }

    /// An init segment held for lack of room is dropped once a newer one goes.
    #[test]
    fn a_held_init_segment_never_follows_a_newer_one() {
        let (mut recorder, queue) = queued(RecordFormat::Mp4, 10_000);
        recorder.pending_init = Some(Bytes::from_static(b"stale"));
        feed(&mut recorder, testkit::Clip::AvSmall);
        let inits: Vec<Bytes> = queue
            .try_iter()
            .filter_map(|command| match command {
                Command::Init(init) => Some(init),
                _ => None,
            })
            .collect();
        assert_eq!(inits.len(), 1);
        assert_ne!(inits[0], Bytes::from_static(b"stale"));
    }

    /// Without video, each audio frame is where an FLV writer may start its next file.
    #[test]
    fn audio_frames_of_an_audio_only_stream_are_places_to_resume() {
        let (mut recorder, queue) = queued(RecordFormat::Flv, 10_000);
        feed(&mut recorder, testkit::Clip::AudioOnlyAac);
        let frames: Vec<bool> = queue
            .try_iter()
            .filter_map(|command| match command {
                Command::Tag { kind: FLV_AUDIO, keyframe, .. } => Some(keyframe),
                _ => None,
            })
            .collect();
        assert!(frames.len() > 100 && frames.iter().all(|&keyframe| keyframe));
    }

    /// The writer's queue holds at most [`WRITER_QUEUE_BYTES`], and what the writer takes
    /// makes room.
    #[test]
    fn the_writer_queue_is_bounded_in_bytes() {
        let (queue, mut taken) = WriterQueue::new();
        let frame = || Command::Fragment(Bytes::from(vec![0; WRITER_QUEUE_BYTES / 2]));
        assert!(queue.try_send(frame()).is_ok() && queue.try_send(frame()).is_ok());
        assert!(matches!(queue.try_send(frame()), Err(TrySendError::Full(_))));
        assert!(matches!(queue.try_send(Command::SegmentStart), Ok(())));
        assert!(taken.next().is_some());
        assert!(queue.try_send(frame()).is_ok());
        // One larger than the bound goes into an empty queue, and only there.
        let huge = || Command::Fragment(Bytes::from(vec![0; WRITER_QUEUE_BYTES + 1]));
        assert!(matches!(queue.try_send(huge()), Err(TrySendError::Full(_))));
        while queue.queued.load(Ordering::Relaxed) > 0 {
            taken.next();
        }
        assert!(queue.try_send(huge()).is_ok());
    }

    /// A file whose set-up failed is not left behind (each retry takes a new name).
    #[test]
    fn a_recording_file_that_failed_is_removed() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-orphan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("cam-t");
        // Its playlist cannot be created: the name is taken.
        std::fs::write(base.with_extension("m3u8"), b"someone else's").unwrap();
        assert!(Output::create(&base, 0, 21, b"INIT").is_err());
        assert!(!base.with_extension("mp4").exists());
        assert_eq!(std::fs::read(base.with_extension("m3u8")).unwrap(), b"someone else's");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recording_is_one_mp4_and_a_vod_playlist_by_byte_range() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (tx, rx) = sync_channel(16);
        let base = dir.join("cam").join("cam-t");
        for command in [
            Command::Init(Bytes::from_static(b"INIT")),
            Command::SegmentStart,
            Command::Fragment(Bytes::from_static(b"aaaa")),
            Command::Fragment(Bytes::from_static(b"bb")),
            Command::SegmentEnd(Duration::from_millis(2000)),
            Command::SegmentStart,
            Command::Fragment(Bytes::from_static(b"ccc")),
            Command::SegmentEnd(Duration::from_millis(1500)),
        ] {
            tx.send(command).unwrap();
        }
        drop(tx);
        let recorded = write(&base, 21, "cam".into(), rx.into_iter(), &|_| {});
        assert_eq!(recorded.bytes, 13);
        assert_eq!(recorded.duration, Duration::from_millis(3500));
        let mp4 = std::fs::read(&recorded.files[0]).unwrap();
        assert_eq!(mp4, b"INITaaaabbccc");
        let playlist = std::fs::read_to_string(recorded.files[0].with_extension("m3u8")).unwrap();
        assert!(playlist.contains("#EXT-X-MAP:URI=\"cam-t.mp4\",BYTERANGE=\"4@0\""), "{playlist}");
        assert!(
            playlist.contains("#EXTINF:2.000,\n#EXT-X-BYTERANGE:6@4\ncam-t.mp4\n"),
            "{playlist}"
        );
        assert!(playlist.contains("#EXT-X-BYTERANGE:3@10\n"), "{playlist}");
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flv_recordings_are_the_tags_as_they_came() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-flv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (tx, rx) = sync_channel(16);
        let tag = |kind, timestamp, body: &'static [u8], keyframe| Command::Tag {
            kind,
            timestamp,
            body: Bytes::from_static(body),
            keyframe,
        };
        tx.send(tag(FLV_SCRIPT, 0, b"meta", false)).unwrap();
        tx.send(tag(FLV_VIDEO, 1000, b"\x17key", true)).unwrap();
        tx.send(tag(FLV_AUDIO, 3000, b"\xafau", false)).unwrap();
        // Metadata updated mid-stream, on the publisher's clock.
        tx.send(tag(FLV_SCRIPT, 4000, b"m2", false)).unwrap();
        drop(tx);
        let recorded =
            write_flv(&dir.join("cam").join("cam-t"), "cam".into(), rx.into_iter(), &|_| {});
        let bytes = std::fs::read(&recorded.files[0]).unwrap();
        assert_eq!(&bytes[..13], &FLV_HEADER);
        // Script tag: type, size 4, timestamp 0, stream 0, body, previous size 15.
        assert_eq!(&bytes[13..28], &[18, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, b'm', b'e', b't', b'a']);
        assert_eq!(&bytes[28..32], &15u32.to_be_bytes());
        // Each tag: 11 bytes of header, the body, 4 of PreviousTagSize.
        assert_eq!(bytes.len(), 13 + (11 + 4 + 4) + (11 + 4 + 4) + (11 + 3 + 4) + (11 + 2 + 4));
        // The clock counts from the first audio or video tag: 0, then 2000 ms, and the
        // metadata after them on the same clock.
        let tag = |at: usize| {
            let timestamp = [bytes[at + 7], bytes[at + 4], bytes[at + 5], bytes[at + 6]];
            (bytes[at], u32::from_be_bytes(timestamp))
        };
        assert_eq!(tag(32), (FLV_VIDEO, 0));
        assert_eq!(tag(51), (FLV_AUDIO, 2000));
        assert_eq!(tag(69), (FLV_SCRIPT, 3000));
        assert_eq!(recorded.duration, Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retention_deletes_the_oldest_and_never_one_in_use() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cam")).unwrap();
        for (name, len) in [("a", 100), ("b", 100), ("c", 100)] {
            std::fs::write(dir.join("cam").join(format!("{name}.mp4")), vec![0; len]).unwrap();
            std::fs::write(dir.join("cam").join(format!("{name}.m3u8")), b"#EXTM3U\n").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let later = SystemTime::now() + IN_USE + Duration::from_secs(1);
        // Over 250 bytes: the oldest goes, with its playlist.
        let deleted = sweep(&dir, None, Some(250), later);
        assert_eq!(deleted, [dir.join("cam").join("a.mp4")]);
        assert!(!dir.join("cam").join("a.m3u8").exists());
        // Everything is in use right now: nothing goes, whatever the limits.
        assert!(sweep(&dir, Some(Duration::ZERO), Some(0), SystemTime::now()).is_empty());
        assert_eq!(sweep(&dir, Some(Duration::ZERO), None, later).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_one_error_and_the_rest_is_skipped() {
        let errors = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = Arc::clone(&errors);
        let (tx, rx) = sync_channel(16);
        for command in [
            Command::Init(Bytes::from_static(b"INIT")),
            Command::SegmentStart,
            Command::Fragment(Bytes::from_static(b"aaaa")),
            Command::SegmentEnd(Duration::from_millis(2000)),
        ] {
            tx.send(command).unwrap();
        }
        drop(tx);
        let base = Path::new("/proc/rtmp-hls-cannot-write-here/cam/cam-t");
        let recorded = write(base, 21, "cam".into(), rx.into_iter(), &move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(errors.load(Ordering::Relaxed), 1);
        assert!(recorded.files.is_empty() && recorded.failures >= 1);
    }
}
