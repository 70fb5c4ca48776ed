//! Cutting access units into fragmented MP4 segments, and, for low-latency HLS, the
//! segments into parts (draft-pantos-hls-rfc8216bis §4.4.4.9 EXT-X-PART).
//!
//! A segment starts at a video keyframe (any audio frame without video) at least the target
//! duration after the previous one, as MPEG-TS segments do. Within it, parts are cut on frame
//! boundaries so that none is longer than the part target: a part ends when the next frame
//! would take it past the target, and a frame that came late (its real duration takes the
//! part past the target) starts the next part instead. The part target itself is whole
//! frames of the stream's cadence (see [`Fragmenter::new`]), so parts on a steady cadence
//! are also at least 85 % of it, as §4.4.4.9 asks of all but independent and final parts.
//! A part is made of fragments (`moof` + `mdat`): one per
//! video frame in low-latency mode (the store joins a part's fragments when it ends); one per
//! segment otherwise (up to [`MAX_SAMPLES_PER_FRAGMENT`]).
//!
//! A video frame's duration is the time to the next frame, so a frame is written when the
//! next one arrives: fragments are continuous (each `tfdt` is the previous one plus its
//! samples' durations). Audio time counts samples (1024 per AAC frame), so it does not
//! wander with the publisher's millisecond timestamps. When those drift from it by more than
//! half a frame (an encoder whose audio clock runs apart, ffmpeg's `-stream_loop`), it is
//! steered back by lengthening or shortening frames by at most 1/[`AUDIO_STEER_FRACTION`]
//! each, never by a jump: a jump in a track's decode time makes a browser's Media Source drop
//! video until the next keyframe (W3C MSE §3.5.8, coded frame processing). Only past
//! [`MAX_AUDIO_GAP`] (audio that stopped, an encoder restart) does it jump.
//!
//! Never looks at a clock: durations come from media timestamps.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::buffer_pool::BufferPool;
use crate::fmp4::{
    self, NON_SYNC_SAMPLE, Run, SYNC_SAMPLE, Sample, SampleEntry, TrackInit, fragment_header_len,
};
use crate::remuxer::NextCut;
use crate::segmenter::{
    AccessUnit, MAX_SEGMENT_BYTES, MAX_SEGMENT_DURATION, TICKS_PER_SECOND, duration_to_ticks,
    ticks_to_duration, video_silence,
};
use crate::ts_mux::Track;

/// Samples one fragment holds at most (its `moof` then fits the room left for it).
pub const MAX_SAMPLES_PER_FRAGMENT: usize = 256;
/// Audio timestamps further than this from the counted audio time re-anchor it at once (a
/// gap: steering would take too long, 16 s for this one).
pub const MAX_AUDIO_GAP: Duration = Duration::from_secs(1);
/// Steering moves the counted audio time by at most this fraction of a frame per frame
/// (1.3 ms per 21 ms AAC frame at 48 kHz: players absorb it, nobody hears it).
pub const AUDIO_STEER_FRACTION: i64 = 16;
/// Without video, a low-latency fragment is flushed once it holds this many audio frames
/// (about 100 ms of AAC at 48 kHz).
const AUDIO_FRAMES_PER_FRAGMENT: usize = 5;
/// At the start of a stream with one track configured, output waits this much media time
/// for the other (MP3 audio has no sequence header: its first frame, just after the first
/// keyframe, announces it), so the stream's first init segment holds both tracks instead of
/// a discontinuity at the second keyframe.
pub const STARTUP_TRACK_WAIT: Duration = Duration::from_millis(500);
/// Video frame intervals the expected cadence is the shortest of (a quarter second at
/// 30 fps): enough to see past a few dropped frames, few enough to follow a frame rate that
/// rises.
const CADENCE_INTERVALS: usize = 8;
/// One millisecond, the step of RTMP timestamps: intervals on a steady cadence differ by
/// up to this much.
const TIMESTAMP_STEP: i64 = TICKS_PER_SECOND / 1000;
/// Frame intervals shorter than this (240 fps) are not a cadence the part target is chosen
/// from: the remuxer moves a repeated or backward timestamp a tick past the last, and a
/// hostile sample rate makes audio frames of a few ticks.
const MIN_CADENCE_INTERVAL: i64 = 4 * TIMESTAMP_STEP;
/// Access units taken into a segment while the part target waits for the cadence, at most:
/// a stream whose video stops after its first frame (a poster frame and audio), or whose
/// timestamps barely move, gets the part duration asked for instead, so output never waits
/// long or piles up.
pub const PART_TARGET_WAIT_UNITS: u32 = 64;
/// Track ids in the init segment.
const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
/// Bytes left in front of a fragment's samples for its `moof`: enough for the most samples
/// a fragment may hold (16 bytes each) and two tracks' boxes.
const FRAGMENT_HEADROOM: usize = 256 + 16 * MAX_SAMPLES_PER_FRAGMENT;
/// The same for low-latency fragments: a video frame and the few audio frames beside it
/// (a fragment holding more has its bytes moved to make room). The store keeps these
/// fragments for a segment's life: a bigger room would outweigh a small frame.
const LOW_LATENCY_HEADROOM: usize = 512;
/// Room for the audio frames of a low-latency fragment, beyond its video frame (AAC frames
/// are a few hundred bytes): enough to append them without moving the fragment.
const LOW_LATENCY_AUDIO_ROOM: usize = 1024;

/// `ticks` (positive) rounded up to a whole millisecond.
fn whole_milliseconds(ticks: i64) -> i64 {
    (ticks.max(1) + TIMESTAMP_STEP - 1) / TIMESTAMP_STEP * TIMESTAMP_STEP
}

/// The audio track as the init segment and the sample durations need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    /// Its sample entry.
    pub entry: SampleEntry,
    /// Samples per second: the track's timescale.
    pub sample_rate: u32,
    /// Samples per frame (1024 for AAC, 1152 or 576 for MP3).
    pub samples_per_frame: u32,
}

/// What the fragmenter produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The init segment of the segments that follow (tracks changed). One that no fragment
    /// follows is replaced by the next.
    Init(Bytes),
    /// A segment starts; its fragments follow. Low-latency playlists list a segment while it
    /// is written, so what precedes its parts (EXT-X-DISCONTINUITY, EXT-X-PROGRAM-DATE-TIME)
    /// is needed now, not at its end.
    SegmentStart {
        /// The timeline or the codec parameters changed before it.
        discontinuity: bool,
        /// Media time of its first access unit (90 kHz, the publisher's timeline).
        start: i64,
        /// The part target this segment's parts keep to (EXT-X-PART-INF's PART-TARGET);
        /// `None` without parts. Chosen before the first segment starts, and again only
        /// when a change of tracks adds or removes video.
        part_target: Option<Duration>,
    },
    /// A fragment (`moof` + `mdat`) of the open segment's current part.
    Fragment(Bytes),
    /// The current part is complete.
    PartEnd {
        /// Its media duration.
        duration: Duration,
        /// It holds a keyframe (or the stream has no video).
        independent: bool,
    },
    /// The open segment is complete (its last part ended just before).
    SegmentEnd {
        /// Its media duration.
        duration: Duration,
        /// The timeline or the codec parameters changed before it.
        discontinuity: bool,
        /// It starts with a keyframe (false only after a forced cut).
        independent: bool,
        /// Media time of its first access unit (90 kHz, the publisher's timeline).
        start: i64,
    },
}

/// A segment being written.
#[derive(Debug)]
struct OpenSegment {
    start: i64,
    /// The end of the last sample written, 90 kHz.
    end: i64,
    discontinuity: bool,
    independent: bool,
    bytes: usize,
    /// The current part's start and whether it holds a keyframe.
    part_start: i64,
    part_independent: bool,
    /// Whether the current part holds any sample yet.
    part_written: bool,
}

/// A video frame waiting for the next one (its duration).
#[derive(Debug, Clone, Copy)]
struct HeldFrame {
    dts: i64,
    pts: i64,
    keyframe: bool,
    size: usize,
}

/// The fragment being filled: samples' bytes after room for the header.
#[derive(Debug)]
struct Fragment {
    /// `headroom` bytes, then the video samples' bytes.
    data: Vec<u8>,
    /// Bytes left in front of the samples for the `moof`.
    headroom: usize,
    video: Vec<Sample>,
    video_base: i64,
    /// Audio samples' bytes, appended after the video's when the fragment is written.
    audio_data: Vec<u8>,
    audio: Vec<Sample>,
    audio_base: i64,
}

/// Cuts access units into fMP4 segments, parts and fragments.
#[derive(Debug)]
pub struct Fragmenter {
    target: i64,
    /// The part duration asked for, 90 kHz; `None` without parts.
    part_request: Option<i64>,
    /// The part target chosen from it and the frames' cadence, 90 kHz (see
    /// [`Fragmenter::new`]); `None` until the cadence is known. Output waits for it.
    part_target: Option<i64>,
    /// Units taken into a segment while the part target was not chosen.
    part_target_waited: u32,
    /// The longest part cut before the part target was chosen (cut to the request).
    early_part: i64,
    video: Option<SampleEntry>,
    audio: Option<AudioTrack>,
    open: Option<OpenSegment>,
    held: Option<HeldFrame>,
    /// The decode time of the last video frame, if any: audio sets the pace once the video
    /// has been silent for a target duration.
    last_video: Option<i64>,
    fragment: Option<Fragment>,
    /// The next audio sample's decode time in samples, while counting.
    audio_next: Option<i64>,
    /// The next fragment's sequence number (`mfhd`).
    sequence: u32,
    discontinuity: bool,
    started: bool,
    /// Size of the last fragment's sample bytes, to size the next one's buffer.
    last_fragment: usize,
    /// The last interval between two video frames, 90 kHz (a guess of the next one's).
    video_interval: i64,
    /// The last [`CADENCE_INTERVALS`] intervals between video frames (zero: none yet), the
    /// shortest of which is the cadence the next cut is expected on: a gap after dropped
    /// frames does not make the next frame look later than it comes.
    recent_intervals: [i64; CADENCE_INTERVALS],
    /// Fragments output since the last init segment.
    fragments_since_init: usize,
    /// The stream's first decode time, while its output waits (see [`STARTUP_TRACK_WAIT`]).
    startup: Option<i64>,
    /// The latest decode time pushed.
    latest: i64,
    out: VecDeque<Output>,
    pool: Arc<BufferPool>,
    /// Audio sample bytes of the next fragment: kept between fragments, so it does not
    /// regrow from empty each time.
    audio_scratch: Vec<u8>,
}

impl Fragmenter {
    /// A fragmenter cutting segments at the first keyframe after `target` and, with
    /// `part_target`, parts of about that long; buffers come from `pool`.
    ///
    /// The part target announced and kept to is whole frames: as many of the video frames'
    /// cadence (the audio frames' without video) as fit in `part_target`, at least one, each
    /// counted a timestamp step (1 ms) longer, since intervals on a steady cadence of
    /// millisecond timestamps differ by that much; rounded up to a millisecond, and at most
    /// a sixteenth over `part_target` (or one frame, when a frame is longer). At 30 fps and
    /// 0.25 s that is 7 x 34 ms = 0.238 s for parts of 233-234 ms; at 23.976 fps, 6 x 42 ms
    /// = 0.252 s for parts of 250-251 ms, where a 0.25 s target would take five-frame parts
    /// (83 %) or six-frame parts longer than it. It is chosen once two video frame intervals
    /// are known (the shorter is the cadence: one may be a gap), and output waits until then
    /// (at most [`PART_TARGET_WAIT_UNITS`]; then it is `part_target`). A change of tracks
    /// that adds or removes video chooses it again.
    pub fn new(target: Duration, part_target: Option<Duration>, pool: Arc<BufferPool>) -> Self {
        Self {
            target: duration_to_ticks(target).max(1),
            part_request: part_target.map(|p| duration_to_ticks(p).max(1)),
            part_target: None,
            part_target_waited: 0,
            early_part: 0,
            video: None,
            audio: None,
            open: None,
            held: None,
            last_video: None,
            fragment: None,
            audio_next: None,
            sequence: 1,
            discontinuity: false,
            started: false,
            last_fragment: 0,
            video_interval: TICKS_PER_SECOND / 30,
            recent_intervals: [0; CADENCE_INTERVALS],
            fragments_since_init: 0,
            startup: None,
            latest: 0,
            out: VecDeque::new(),
            pool,
            audio_scratch: Vec::new(),
        }
    }

    /// What was produced since the last call, in order.
    pub fn pull(&mut self) -> Option<Output> {
        if let Some(first) = self.startup {
            let both = self.video.is_some() && self.audio.is_some();
            if !both && self.latest - first < duration_to_ticks(STARTUP_TRACK_WAIT) {
                return None;
            }
            self.startup = None;
        }
        if self.part_request.is_some() && self.part_target.is_none() {
            // A segment's start announces the part target: not known yet.
            return None;
        }
        let mut output = self.out.pop_front();
        if let Some(Output::SegmentStart { part_target, .. }) = &mut output {
            *part_target = self.part_target.map(ticks_to_duration);
        }
        output
    }

    /// Chooses the part target from a frame interval of `frame` ticks, if parts are asked
    /// for and it is not chosen yet (see [`Fragmenter::new`]).
    fn choose_part_target(&mut self, frame: i64) {
        let Some(request) = self.part_request.filter(|_| self.part_target.is_none()) else {
            return;
        };
        if frame < MIN_CADENCE_INTERVAL {
            return;
        }
        let frames = (request / frame).max(1);
        let whole_frames = frames.saturating_mul(frame + TIMESTAMP_STEP);
        let most = (request + request / 16).max(frame + TIMESTAMP_STEP);
        let target = whole_frames.min(most).min(duration_to_ticks(MAX_SEGMENT_DURATION));
        self.part_target = Some(whole_milliseconds(target).max(self.early_part));
    }

    /// Chooses the part duration asked for as the part target, if it is not chosen yet (the
    /// cadence did not come in time, or the stream ended before it).
    fn choose_requested_part_target(&mut self) {
        if let Some(request) = self.part_request.filter(|_| self.part_target.is_none()) {
            self.part_target = Some(whole_milliseconds(request).max(self.early_part));
        }
    }

    /// The part target cuts are made to: the request until the target is chosen (a part cut
    /// that soon holds one frame).
    fn part_limit(&self) -> Option<i64> {
        self.part_target.or(self.part_request)
    }

    /// Sets the tracks of the next segments: the open segment ends, and the next one starts
    /// with a new init segment after a discontinuity. While the stream's start waits for its
    /// second track (see [`STARTUP_TRACK_WAIT`]), nothing is out yet: the stream starts over
    /// with both tracks instead (the first track's few frames so far are dropped; ffmpeg
    /// sends AV1's configuration after the first audio frames).
    pub fn set_tracks(&mut self, video: Option<SampleEntry>, audio: Option<AudioTrack>) {
        let wait = duration_to_ticks(STARTUP_TRACK_WAIT);
        if self.startup.is_some_and(|first| self.latest - first < wait) {
            self.out.clear();
            self.open = None;
            self.held = None;
            if let Some(fragment) = self.fragment.take() {
                self.pool.give(fragment.data);
            }
            self.audio_next = None;
            self.started = false;
            self.startup = None;
        } else {
            self.break_timeline();
        }
        if self.video.is_some() != video.is_some() || !self.started {
            // The cadence the part target was chosen from is another track's.
            self.part_target = None;
            self.part_target_waited = 0;
            self.recent_intervals = [0; CADENCE_INTERVALS];
        }
        self.video = video;
        self.audio = audio;
        let tracks = self.tracks();
        if !tracks.is_empty() {
            self.out.push_back(Output::Init(Bytes::from(fmp4::init_segment(&tracks))));
            self.fragments_since_init = 0;
        }
    }

    /// Adds `audio` to the tracks if nothing but the init segment was output since they were
    /// set (a stream whose audio has no sequence header, MP3, announces it with its first
    /// frame, just after the first keyframe): the init segment is made again with both
    /// tracks, instead of a discontinuity at the next keyframe. Returns whether it did.
    pub fn add_audio_before_first_fragment(&mut self, audio: AudioTrack) -> bool {
        if self.audio.is_some() {
            return false;
        }
        let init = |fragmenter: &Self| Bytes::from(fmp4::init_segment(&fragmenter.tracks()));
        if self.startup.is_some() {
            // Nothing is out yet: the waiting init segment is made again.
            self.audio = Some(audio);
            let remade = init(self);
            if let Some(Output::Init(first)) = self.out.front_mut() {
                *first = remade;
            }
            return true;
        }
        if self.fragments_since_init > 0 {
            return false;
        }
        self.audio = Some(audio);
        // An init segment with no fragment after it is replaced by the next one.
        self.out.push_back(Output::Init(init(self)));
        true
    }

    /// The init segment's tracks.
    fn tracks(&self) -> Vec<TrackInit> {
        let mut tracks = Vec::new();
        if let Some(entry) = &self.video {
            let entry = entry.clone();
            tracks.push(TrackInit { id: VIDEO_TRACK, timescale: TICKS_PER_SECOND as u32, entry });
        }
        if let Some(audio) = &self.audio {
            let (timescale, entry) = (audio.sample_rate, audio.entry.clone());
            tracks.push(TrackInit { id: AUDIO_TRACK, timescale, entry });
        }
        tracks
    }

    /// Ends the open segment; the next one is a discontinuity.
    pub fn break_timeline(&mut self) {
        if self.started {
            self.discontinuity = true;
        }
        self.close_segment(None);
        self.audio_next = None;
    }

    /// Whether a segment is being written.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Ends the stream: the open segment is complete.
    pub fn finish(&mut self) {
        self.close_segment(None);
        self.startup = None;
        // A stream that ends before its cadence was known: its parts were cut to the request.
        self.choose_requested_part_target();
    }

    /// The frame expected to close the open segment, or end the open part when there are
    /// parts; `None` when no segment is open or the start waits for a second track (what
    /// was made then comes out at once when the wait ends). A part ends at the first frame
    /// that would take it past its target: on the video frames' cadence (the audio frames',
    /// without video), once three frames measured it, the earliest that frame can come;
    /// until then `latest` (the next frame may cut). A segment closes with a keyframe at or
    /// past its target, no sooner than the next frame.
    pub fn next_cut(&self) -> Option<NextCut> {
        let open = self.open.as_ref()?;
        if self.startup.is_some() && (self.video.is_none() || self.audio.is_none()) {
            return None;
        }
        let at = |ticks: i64| ticks_to_duration(ticks.max(0));
        // The frames that can cut come on a cadence: from `last`, every `shortest` to
        // `longest` ticks (RTMP timestamps are whole milliseconds, so a steady cadence's
        // intervals differ by one).
        let cadence = match (&self.audio, self.held) {
            (Some(audio), _) if self.video.is_none() => {
                let frame = i64::from(audio.samples_per_frame) * TICKS_PER_SECOND
                    / i64::from(audio.sample_rate).max(1);
                Some((self.latest, frame - TIMESTAMP_STEP, frame + TIMESTAMP_STEP))
            }
            // Two intervals at least: one may be a gap.
            (_, Some(held)) if self.recent_intervals[1] > 0 => {
                let shortest = self.recent_intervals.iter().filter(|&&i| i > 0).min();
                let shortest = shortest.copied().unwrap_or(self.video_interval);
                Some((held.dts, shortest, shortest + TIMESTAMP_STEP))
            }
            _ => None,
        };
        let Some((last, shortest, longest)) = cadence.filter(|&(_, shortest, _)| shortest > 0)
        else {
            // No cadence yet: the next frame may cut.
            return Some(NextCut { latest: at(self.latest), expected: at(self.latest) });
        };
        // A keyframe at or past the segment's target closes it, no sooner than the next frame.
        let mut expected = (open.start + self.target).max(last + shortest);
        if let Some(part) = self.part_limit() {
            // A frame whose decode time and interval take the part past its target ends it:
            // the first frame that could, were frames `longest` apart, is expected as soon
            // as it can come.
            let gap = open.part_start + part - longest - last;
            let frames = (gap.div_euclid(longest) + 1).max(1);
            expected = expected.min(last + frames * shortest);
        }
        Some(NextCut { latest: at(self.latest), expected: at(expected.max(self.latest)) })
    }

    /// Takes one access unit in decode order: its `data` is the sample (length-prefixed NAL
    /// units, a raw AAC frame, an MP3 frame). Returns false when it was dropped (it cannot
    /// start a segment: audio or a non-keyframe before the first keyframe).
    pub fn push(&mut self, unit: AccessUnit<'_>) -> bool {
        self.latest = self.latest.max(unit.dts);
        if !self.started {
            self.startup = Some(unit.dts);
        }
        let taken = match unit.track {
            Track::Video => self.push_video(unit),
            Track::Audio => self.push_audio(unit),
        };
        if taken && self.open.is_some() && self.part_request.is_some() && self.part_target.is_none()
        {
            self.part_target_waited = self.part_target_waited.saturating_add(1);
            if self.part_target_waited >= PART_TARGET_WAIT_UNITS {
                self.choose_requested_part_target();
            }
        }
        taken
    }

    fn push_video(&mut self, unit: AccessUnit<'_>) -> bool {
        if self.video.is_none() {
            return false;
        }
        // The held frame's duration is now known: it goes out first.
        if let Some(held) = self.held
            && unit.dts > held.dts
        {
            self.video_interval = unit.dts - held.dts;
            self.recent_intervals.rotate_right(1);
            self.recent_intervals[0] = self.video_interval;
            if self.part_request.is_some() && self.part_target.is_none() {
                let mut cadence =
                    self.recent_intervals.iter().filter(|&&i| i >= MIN_CADENCE_INTERVAL);
                if let (Some(&one), Some(&other)) = (cadence.next(), cadence.next()) {
                    self.choose_part_target(cadence.fold(one.min(other), |a, &b| a.min(b)));
                }
            }
        }
        if let (Some(part), Some(held), Some(open)) = (self.part_limit(), self.held, &self.open)
            && open.part_written
            && held.dts > open.part_start
            && unit.dts - open.part_start > part
        {
            // The held frame came late enough that its real duration takes its part past the
            // target: the part ends before it, and it starts the next one. Its fragment (its
            // bytes, and the audio since the last frame) is the next part's first: the part
            // ending has the fragments written so far.
            self.end_part(held.dts);
            if let Some(open) = &mut self.open {
                open.part_start = held.dts;
                open.part_independent = held.keyframe;
                open.part_written = true;
            }
        }
        self.release_held(unit.dts);
        let forced = self.open.as_ref().is_some_and(|open| {
            unit.dts - open.start >= duration_to_ticks(MAX_SEGMENT_DURATION)
                || open.bytes >= MAX_SEGMENT_BYTES
        });
        let cut = self.open.as_ref().is_some_and(|open| unit.dts - open.start >= self.target);
        if self.open.is_none() || (unit.keyframe && cut) || forced {
            if self.open.is_none() && !unit.keyframe {
                return false;
            }
            self.close_segment(Some(unit.dts));
            self.open_segment(unit.dts, unit.keyframe);
        } else if let Some(part) = self.part_limit()
            && let Some(open) = &self.open
            && open.part_written
            && unit.dts + self.video_interval - open.part_start > part
        {
            // This frame would take the part past its target: the next part starts here.
            self.close_part(unit.dts);
            if let Some(open) = &mut self.open {
                open.part_start = unit.dts;
                open.part_independent = unit.keyframe;
            }
        }
        self.last_video = Some(unit.dts);
        let size = unit.data.iter().map(|piece| piece.len()).sum();
        let fragment = self.fragment_for(unit.dts, size);
        fragment.video_base =
            if fragment.video.is_empty() { unit.dts } else { fragment.video_base };
        for piece in unit.data {
            fragment.data.extend_from_slice(piece);
        }
        self.held = Some(HeldFrame { dts: unit.dts, pts: unit.pts, keyframe: unit.keyframe, size });
        if let Some(open) = &mut self.open {
            open.part_written = true;
            open.bytes += size;
        }
        true
    }

    fn push_audio(&mut self, unit: AccessUnit<'_>) -> bool {
        let Some(audio) = &self.audio else { return false };
        let (rate, per_frame) = (i64::from(audio.sample_rate), i64::from(audio.samples_per_frame));
        if self.video.is_none() {
            self.choose_part_target(per_frame * TICKS_PER_SECOND / rate.max(1));
        }
        let silent_for = |limit: i64| {
            self.video.is_some()
                && self
                    .open
                    .as_ref()
                    .is_some_and(|open| unit.dts - self.last_video.unwrap_or(open.start) >= limit)
        };
        // Segments and parts are cut on audio once the video has been silent (the part where
        // it stopped runs until then, as one with dropped frames does). The interval is the
        // measured one (`recent_intervals`), not `video_interval`'s guess before two frames.
        let video_silent = silent_for(video_silence(self.target, self.recent_intervals[0]));
        let forced = self.open.as_ref().is_some_and(|open| {
            unit.dts - open.start >= duration_to_ticks(MAX_SEGMENT_DURATION)
                || open.bytes >= MAX_SEGMENT_BYTES
        });
        if self.open.is_none() {
            if self.video.is_some() {
                return false;
            }
            self.open_segment(unit.dts, true);
        } else if self.video.is_none() || video_silent {
            // Audio-only, or video silent (a phone's camera stopped, its microphone going
            // on): segments and parts are cut on audio frames, the limits too (with video
            // flowing, the next video frame forces a cut, on a frame boundary). A part ends
            // where its last frame does, or the next frame starts if sooner (millisecond
            // stamps): a frame that came late leaves the gap between parts (counted audio
            // time steers across it), not in the part, which then stays within the target.
            // The last video frame goes out first, lasting its usual interval.
            if let Some(held) = self.held {
                self.release_held(held.dts + self.video_interval.max(1));
            }
            let independent = self.video.is_none();
            let open = self.open.as_ref().map_or(unit.dts, |open| open.start);
            let part_end = self.open.as_ref().map_or(unit.dts, |open| open.end.min(unit.dts));
            if unit.dts - open >= self.target || forced {
                self.close_part(part_end);
                self.close_segment(Some(unit.dts));
                self.open_segment(unit.dts, independent);
            } else if let Some(part) = self.part_limit()
                && let Some(open) = &self.open
                && open.part_written
                && unit.dts + per_frame * TICKS_PER_SECOND / rate.max(1) - open.part_start > part
            {
                self.close_part(part_end);
                if let Some(open) = &mut self.open {
                    open.part_start = unit.dts;
                    open.part_independent = independent;
                }
            }
        }
        // Counted audio time, steered toward the publisher's timestamps (see the module
        // documentation), or re-anchored to them past a gap.
        let stamped = unit.dts * rate / TICKS_PER_SECOND;
        let gap = duration_to_ticks(MAX_AUDIO_GAP) * rate / TICKS_PER_SECOND;
        let (at, duration) = match self.audio_next {
            Some(next) if (stamped - next).abs() <= gap => {
                let drift = stamped - next;
                let step = per_frame / AUDIO_STEER_FRACTION;
                let steer = if drift.abs() > per_frame / 2 { drift.clamp(-step, step) } else { 0 };
                (next, per_frame + steer)
            }
            _ => (stamped, per_frame),
        };
        if self.fragment.as_ref().is_some_and(|f| !f.audio.is_empty())
            && self.audio_next != Some(at)
        {
            // A re-anchored sample starts a fragment of its own (its tfdt jumps).
            self.flush_fragment();
        }
        self.audio_next = Some(at + duration);
        let size: usize = unit.data.iter().map(|piece| piece.len()).sum();
        let audio_only_low_latency = self.video.is_none() && self.part_request.is_some();
        let fragment = self.fragment_for(unit.dts, 0);
        if fragment.audio.is_empty() {
            fragment.audio_base = at;
        }
        for piece in unit.data {
            fragment.audio_data.extend_from_slice(piece);
        }
        fragment.audio.push(Sample {
            duration: u32::try_from(duration).unwrap_or(u32::MAX),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            flags: SYNC_SAMPLE,
            composition_offset: 0,
        });
        let audio_only_full =
            audio_only_low_latency && fragment.audio.len() >= AUDIO_FRAMES_PER_FRAGMENT;
        let full = fragment.audio.len() + fragment.video.len() >= MAX_SAMPLES_PER_FRAGMENT;
        if let Some(open) = &mut self.open {
            open.part_written = true;
            open.bytes += size;
            open.end = open.end.max(unit.dts + per_frame * TICKS_PER_SECOND / rate.max(1));
        }
        if audio_only_full || full {
            self.flush_fragment();
        }
        true
    }

    /// Writes the held video frame (now that the next decode time, `next`, is known) into
    /// its fragment and, in low-latency mode, flushes the fragment.
    fn release_held(&mut self, next: i64) {
        let Some(held) = self.held.take() else { return };
        let duration = (next - held.dts).clamp(1, duration_to_ticks(MAX_SEGMENT_DURATION));
        if let Some(fragment) = &mut self.fragment {
            fragment.video.push(Sample {
                duration: u32::try_from(duration).unwrap_or(u32::MAX),
                size: u32::try_from(held.size).unwrap_or(u32::MAX),
                flags: if held.keyframe { SYNC_SAMPLE } else { NON_SYNC_SAMPLE },
                composition_offset: i32::try_from(held.pts - held.dts).unwrap_or(0),
            });
        }
        if let Some(open) = &mut self.open {
            open.end = open.end.max(held.dts + duration);
            // rfc8216bis §4.4.4.9: INDEPENDENT=YES says the part contains an independent
            // frame, wherever in it (GOPs shorter than the segment put keyframes mid-part).
            // Counted as the frame joins its part, not as it arrives: a held frame that
            // came before a late one may still start the next part.
            open.part_independent |= held.keyframe;
        }
        let full = self
            .fragment
            .as_ref()
            .is_some_and(|f| f.audio.len() + f.video.len() >= MAX_SAMPLES_PER_FRAGMENT);
        if self.part_request.is_some() || full {
            self.flush_fragment();
        }
    }

    /// The fragment being filled, started for a unit at `dts` with `video_bytes` of video
    /// sample to come.
    fn fragment_for(&mut self, dts: i64, video_bytes: usize) -> &mut Fragment {
        let headroom =
            if self.part_request.is_some() { LOW_LATENCY_HEADROOM } else { FRAGMENT_HEADROOM };
        let needed = headroom + video_bytes;
        if let Some(fragment) = &mut self.fragment {
            let spare = fragment.data.capacity() - fragment.data.len();
            if spare < video_bytes {
                let more = fragment.data.len() + video_bytes;
                let mut larger = self.pool.take(more, more + more / 2);
                larger.extend_from_slice(&fragment.data);
                self.pool.give(std::mem::replace(&mut fragment.data, larger));
            }
        }
        // A low-latency fragment is one frame: sized for it (the last fragment may have been a
        // keyframe ten times larger). A segment-long one is sized like the last.
        let capacity = match self.part_request {
            Some(_) => needed + LOW_LATENCY_AUDIO_ROOM,
            None => self.last_fragment.max(needed) * 9 / 8,
        };
        let pool = &self.pool;
        self.fragment.get_or_insert_with(|| {
            let mut data = pool.take(needed, capacity);
            data.resize(headroom, 0);
            Fragment {
                data,
                headroom,
                video: Vec::new(),
                video_base: dts,
                audio_data: std::mem::take(&mut self.audio_scratch),
                audio: Vec::new(),
                audio_base: 0,
            }
        })
    }

    /// Writes out the fragment being filled, if it holds samples.
    fn flush_fragment(&mut self) {
        let Some(mut fragment) = self.fragment.take() else { return };
        // A held video frame's bytes end the fragment's video data, but it has no sample yet
        // (its duration comes with the next frame): they move to the next fragment.
        let carried = self.held.and_then(|held| {
            let at = fragment.data.len().checked_sub(held.size)?;
            (at >= fragment.headroom).then(|| (held.dts, fragment.data.split_off(at)))
        });
        self.write_fragment(fragment);
        if let Some((dts, bytes)) = carried {
            let fragment = self.fragment_for(dts, bytes.len());
            fragment.video_base = dts;
            fragment.data.extend_from_slice(&bytes);
        }
    }

    /// Writes out `fragment`, if it holds samples.
    fn write_fragment(&mut self, mut fragment: Fragment) {
        if fragment.video.is_empty() && fragment.audio.is_empty() {
            self.pool.give(fragment.data);
            return;
        }
        let mut runs = Vec::with_capacity(2);
        if !fragment.video.is_empty() {
            let base = u64::try_from(fragment.video_base).unwrap_or(0);
            runs.push(Run { track: VIDEO_TRACK, base_decode_time: base, samples: &fragment.video });
        }
        if !fragment.audio.is_empty() {
            let base = u64::try_from(fragment.audio_base).unwrap_or(0);
            runs.push(Run { track: AUDIO_TRACK, base_decode_time: base, samples: &fragment.audio });
        }
        let header_len = fragment_header_len(&runs);
        if header_len > fragment.headroom {
            // More samples than the room was made for: the video bytes move behind a room
            // that fits (low-latency fragments of audio gathered while video stalled).
            let video = fragment.data.len() - fragment.headroom;
            let size = header_len + video + fragment.audio_data.len();
            let mut moved = self.pool.take(size, size);
            moved.resize(header_len, 0);
            moved.extend_from_slice(&fragment.data[fragment.headroom..]);
            self.pool.give(std::mem::replace(&mut fragment.data, moved));
            fragment.headroom = header_len;
        }
        let headroom = fragment.headroom;
        let payload = fragment.data.len() - headroom + fragment.audio_data.len();
        let start = headroom - header_len;
        fmp4::write_fragment_header(
            self.sequence,
            &runs,
            payload,
            &mut fragment.data[start..headroom],
        );
        drop(runs);
        let needed = fragment.data.len() + fragment.audio_data.len();
        if fragment.data.capacity() < needed {
            // Into a recycled buffer: growing this one would copy into fresh, faulting pages.
            let mut larger = self.pool.take(needed, needed + needed / 8);
            larger.extend_from_slice(&fragment.data);
            self.pool.give(std::mem::replace(&mut fragment.data, larger));
        }
        fragment.data.extend_from_slice(&fragment.audio_data);
        fragment.audio_data.clear();
        // The audio scratch keeps its capacity for the next fragment.
        self.audio_scratch = std::mem::take(&mut fragment.audio_data);
        self.sequence = self.sequence.wrapping_add(1);
        self.last_fragment = fragment.data.len();
        let bytes = self.pool.share(fragment.data).slice(start..);
        self.out.push_back(Output::Fragment(bytes));
        self.fragments_since_init += 1;
    }

    /// Ends the current part at `next` (the next part's start).
    fn close_part(&mut self, next: i64) {
        self.flush_fragment();
        self.end_part(next);
        if let Some(open) = &mut self.open {
            open.part_written = false;
        }
    }

    /// Ends the current part at `next` with the fragments written so far, if it holds any
    /// sample.
    fn end_part(&mut self, next: i64) {
        let Some(open) = &self.open else { return };
        if self.part_request.is_some() && open.part_written {
            let ticks = (next - open.part_start).max(0);
            // Cut to the request before the target was chosen: the target must not be
            // shorter (a part longer than the request is a single frame, longer than any).
            if self.part_target.is_none() && self.part_request.is_some_and(|r| ticks <= r) {
                self.early_part = self.early_part.max(whole_milliseconds(ticks));
            }
            let duration = ticks_to_duration(ticks);
            self.out.push_back(Output::PartEnd { duration, independent: open.part_independent });
        }
    }

    /// Ends the open segment, at `next` if the next segment's start is known (else at the end
    /// of what was written).
    fn close_segment(&mut self, next: Option<i64>) {
        if let Some(held) = self.held {
            // Its duration is the gap to the next frame when known, else the last interval.
            let end = next.unwrap_or(held.dts + self.video_interval);
            self.release_held(end);
        }
        let Some(open) = &self.open else { return };
        let end = next.unwrap_or(open.end);
        self.close_part(end);
        let Some(open) = self.open.take() else { return };
        self.out.push_back(Output::SegmentEnd {
            duration: ticks_to_duration((end - open.start).max(0)),
            discontinuity: open.discontinuity,
            independent: open.independent,
            start: open.start,
        });
    }

    fn open_segment(&mut self, start: i64, independent: bool) {
        let discontinuity = std::mem::take(&mut self.discontinuity);
        // The part target is filled in as the start is pulled (it may not be chosen yet).
        self.out.push_back(Output::SegmentStart { discontinuity, start, part_target: None });
        self.open = Some(OpenSegment {
            start,
            end: start,
            discontinuity,
            independent,
            bytes: 0,
            part_start: start,
            part_independent: independent,
            part_written: false,
        });
        self.started = true;
    }
}
