//! One publish's packaging: FLV tags in, MPEG-TS segments out.
//!
//! Owns the codec configurations, the timeline and the segmenter. Converts each FLV frame to
//! an access unit (Annex B for H.264, ADTS for AAC, MP3 as is) timed in 90 kHz from the RTMP
//! timestamp plus the composition offset (FLV v10.1 E.4.3.1).
//!
//! Policies, each chosen so a player never sees a broken segment:
//! - **Tracks come from sequence headers actually received** (no phantom PIDs). A track that
//!   appears or changes parameters mid-stream takes effect at the next keyframe, which starts a
//!   segment marked as a discontinuity with the new PMT; until then frames of the changed
//!   audio track are dropped (at most one GOP).
//! - **The timeline breaks** when a timestamp jumps more than [`MAX_FORWARD_JUMP`] ahead or
//!   [`MAX_BACKWARD_JUMP`] back: the segment ends, frames are dropped until the next keyframe,
//!   which starts a discontinuity. The output timeline stays continuous across the break
//!   (the new input timeline is rebased to start where the old one ended), so no player or
//!   tool ever sees timestamps go backwards or leap. Smaller steps back are absorbed so DTS
//!   stays strictly increasing per track.
//! - **An audio track whose first frame comes just after the first keyframe** (MP3 has no
//!   sequence header) joins the first segment without a discontinuity.
//! - **Unsupported codecs drop their track**: the tag is refused with
//!   [`Unsupported`](crate::Unsupported) and the other track goes on alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::Unsupported;
use crate::adts::{AacConfig, SAMPLES_PER_FRAME};
use crate::buffer_pool::BufferPool;
use crate::flv::{self, AudioTag, TagKind, VideoCodec, VideoTag};
use crate::fmp4::{Colour, SampleEntry};
use crate::fragmenter::{AudioTrack, Fragmenter, Output as FragmentOutput};
use crate::mpa::MpegAudioConfig;
use crate::segmenter::{
    AccessUnit, Pushed, Segment, SegmentSink, Segmenter, TICKS_PER_SECOND, duration_to_ticks,
};
use crate::timeline::Timeline;
use crate::ts_mux::{AudioStream, Track};
use crate::video::VideoConfig;

/// Frame duration assumed for video until two frames have been seen (30 fps).
const DEFAULT_VIDEO_FRAME_TICKS: i64 = TICKS_PER_SECOND / 30;
/// Ticks per millisecond of RTMP time.
const TICKS_PER_MS: i64 = TICKS_PER_SECOND / 1000;
/// A timestamp further ahead of the stream's position than this breaks the timeline.
pub const MAX_FORWARD_JUMP: Duration = Duration::from_secs(5);
/// A timestamp further behind the stream's position than this breaks the timeline; audio
/// and video interleave a little out of order, so small steps back are normal.
pub const MAX_BACKWARD_JUMP: Duration = Duration::from_secs(1);
/// A track's own decode times going back further than this (for video, or four frames if
/// more) break the timeline too, within [`MAX_BACKWARD_JUMP`] of the stream's position:
/// encoders round to milliseconds (a step of one), and one that stamps presentation times
/// reorders by a few frames; a step of half a second is an encoder's clock going back, whose
/// frames nudged one tick apart would play as a burst.
pub const MAX_TRACK_STEP_BACK: Duration = Duration::from_millis(250);
/// Frames of reordering the video's step-back allowance covers at low frame rates.
const STEP_BACK_FRAMES: i64 = 4;
/// Composition offsets beyond this are encoder bugs; they are treated as zero.
pub const MAX_COMPOSITION_OFFSET: Duration = Duration::from_secs(10);

/// Settings of a [`Remuxer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemuxerConfig {
    /// Segments are cut at the first keyframe after this long.
    pub target_duration: Duration,
    /// What segments are made of.
    pub container: Container,
}

impl Default for RemuxerConfig {
    fn default() -> Self {
        Self { target_duration: Duration::from_secs(2), container: Container::Ts }
    }
}

/// What segments are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Container {
    /// MPEG-TS segments ([`Remuxer::pull`]).
    #[default]
    Ts,
    /// Fragmented MP4 segments ([`Remuxer::pull_fmp4`]), cut into parts of at most
    /// `part_target` for low-latency HLS when it is set.
    Fmp4 {
        /// The longest part.
        part_target: Option<Duration>,
    },
}

/// Where access units go.
#[derive(Debug)]
enum Backend {
    Ts(Segmenter),
    Fmp4(Box<Fragmenter>),
}

/// The frame expected to make a publisher's next cut (close its open segment, or end its
/// open low-latency part), for ingest to time a read to that frame's arrival and read the
/// socket less often before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextCut {
    /// Decode time of the latest frame received, on the publisher's timeline.
    pub latest: Duration,
    /// Decode time of the frame expected to make the cut, as soon as it can come: a keyframe
    /// at the segment's target, or (with parts) the first frame that could take the part
    /// past its target on the video frames' cadence (the audio frames', without video),
    /// whichever comes first; `latest` when no later frame can be foreseen (the next one
    /// may cut). Never later than the frame that cuts while frames keep their cadence (to
    /// the millisecond of RTMP timestamps); a frame off it (a rising frame rate, or after
    /// dropped frames) may come sooner than expected.
    pub expected: Duration,
}

/// Counters a caller may report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemuxerStats {
    /// Frames packaged.
    pub frames: u64,
    /// Frames dropped: before their track's configuration, before the first keyframe, or
    /// while waiting for a keyframe after a change or a timeline break.
    pub frames_dropped: u64,
    /// Timeline breaks (jumps) seen.
    pub timeline_breaks: u64,
    /// Video frames packaged.
    pub video_frames: u64,
    /// Media time between the last two keyframes packaged, in milliseconds.
    pub keyframe_interval_ms: Option<u64>,
}

/// The audio codec in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioConfig {
    /// AAC, from its AudioSpecificConfig.
    Aac(AacConfig),
    /// MP3, from its first frame header.
    Mp3(MpegAudioConfig),
}

impl AudioConfig {
    /// The RFC 6381 codec string (`mp4a.40.2`; `mp4a.40.34` for MP3).
    pub fn codec_string(&self) -> String {
        match self {
            Self::Aac(c) => c.codec_string(),
            Self::Mp3(_) => "mp4a.40.34".to_owned(),
        }
    }

    /// Sampling rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Aac(c) => c.sample_rate,
            Self::Mp3(c) => c.sample_rate,
        }
    }

    /// Channel count, when the configuration says (AAC channel configurations 1 to 6, MP3
    /// modes).
    pub fn channels(&self) -> Option<u8> {
        match self {
            Self::Aac(c) => match c.channel_config {
                0 => None,
                7 => Some(8),
                n => Some(n),
            },
            Self::Mp3(c) => Some(if c.channel_mode == 3 { 1 } else { 2 }),
        }
    }

    fn stream(&self) -> AudioStream {
        match self {
            Self::Aac(_) => AudioStream::Adts,
            Self::Mp3(c) if c.mpeg1 => AudioStream::Mpeg1,
            Self::Mp3(_) => AudioStream::Mpeg2,
        }
    }

    fn frame_ticks(&self) -> i64 {
        let (samples, rate) = match self {
            Self::Aac(c) => (SAMPLES_PER_FRAME, c.core_sample_rate()),
            Self::Mp3(c) => (c.samples_per_frame, c.sample_rate),
        };
        i64::from(samples) * TICKS_PER_SECOND / i64::from(rate.max(1))
    }
}

/// FLV tags to segments for one publish.
///
/// Call [`Remuxer::push`] with every audio and video message in arrival order, then
/// [`Remuxer::pull`] until it returns `None`; at most two segments wait between pushes.
/// Call [`Remuxer::finish`] when the publisher stops, then `pull` the rest.
#[derive(Debug)]
pub struct Remuxer {
    timeline: Timeline,
    video: Option<VideoConfig>,
    /// The video's colour description, from the publisher's E-RTMP metadata (fMP4 only).
    colour: Option<Colour>,
    audio: Option<AudioConfig>,
    /// Configurations as the current segment's PMT announces them.
    applied: (bool, Option<AudioStream>),
    /// The video or audio configuration changed; applied at the next point a segment may
    /// start.
    pending_video: bool,
    pending_audio: bool,
    /// The timeline broke; frames wait for the next segment start.
    broken: bool,
    backend: Backend,
    ready: VecDeque<Segment>,
    /// The furthest input decode time reached on any track (for jump detection).
    position: Option<i64>,
    /// Output time = input time + `offset`; changes at each timeline break.
    offset: i64,
    /// The end of the last frame written, in output time.
    written_end: i64,
    last_video_dts: Option<i64>,
    last_audio_dts: Option<i64>,
    /// Each track's latest decode time as the publisher stamped it since the timeline last
    /// (re)started: a track's own clock stepping back is measured against it.
    input_clocks: (Option<i64>, Option<i64>),
    last_keyframe_dts: Option<i64>,
    video_frame_ticks: i64,
    stats: RemuxerStats,
}

impl Remuxer {
    /// A remuxer for a new publish, with segment buffers of its own (see
    /// [`Remuxer::with_pool`]).
    pub fn new(config: RemuxerConfig) -> Self {
        Self::with_pool(config, Arc::default())
    }

    /// A remuxer for a new publish whose segments are written into buffers from `pool`,
    /// which a server shares between all its streams.
    pub fn with_pool(config: RemuxerConfig, pool: Arc<BufferPool>) -> Self {
        Self {
            timeline: Timeline::new(),
            video: None,
            colour: None,
            audio: None,
            applied: (false, None),
            pending_video: false,
            pending_audio: false,
            broken: false,
            backend: match config.container {
                Container::Ts => Backend::Ts(Segmenter::with_pool(config.target_duration, pool)),
                Container::Fmp4 { part_target } => Backend::Fmp4(Box::new(Fragmenter::new(
                    config.target_duration,
                    part_target,
                    pool,
                ))),
            },
            ready: VecDeque::with_capacity(2),
            position: None,
            offset: 0,
            written_end: 0,
            last_video_dts: None,
            last_audio_dts: None,
            input_clocks: (None, None),
            last_keyframe_dts: None,
            video_frame_ticks: DEFAULT_VIDEO_FRAME_TICKS,
            stats: RemuxerStats::default(),
        }
    }

    /// Hands MPEG-TS segments to `sink` as they are written (see [`SegmentSink`]): the
    /// segments pulled then carry no bytes of their own. False (and `sink` unused) for fMP4,
    /// or once a segment has been started.
    pub fn set_segment_sink(&mut self, sink: Box<dyn SegmentSink>) -> bool {
        match &mut self.backend {
            Backend::Ts(segmenter) => segmenter.set_sink(sink),
            Backend::Fmp4(_) => false,
        }
    }

    /// Takes one audio or video message (`data` is the FLV tag body, `timestamp_ms` the RTMP
    /// timestamp). An error rejects this tag only; the remuxer stays usable.
    pub fn push(&mut self, kind: TagKind, timestamp_ms: u32, data: &[u8]) -> Result<(), Error> {
        let dts = self.timeline.widen(timestamp_ms) * TICKS_PER_MS;
        match kind {
            TagKind::Video => self.push_video(dts, data),
            TagKind::Audio => self.push_audio(dts, data),
        }
    }

    /// The next finished MPEG-TS segment, if any.
    pub fn pull(&mut self) -> Option<Segment> {
        self.ready.pop_front()
    }

    /// The next fMP4 output (init segment, fragment, end of a part or a segment), if any.
    pub fn pull_fmp4(&mut self) -> Option<FragmentOutput> {
        match &mut self.backend {
            Backend::Fmp4(fragmenter) => fragmenter.pull(),
            Backend::Ts(_) => None,
        }
    }

    /// Ends the stream: the last, partial segment becomes available.
    pub fn finish(&mut self) {
        match &mut self.backend {
            Backend::Ts(segmenter) => self.ready.extend(segmenter.finish()),
            Backend::Fmp4(fragmenter) => fragmenter.finish(),
        }
    }

    /// The video configuration in use.
    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    /// The audio configuration in use.
    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio.as_ref()
    }

    /// The frame expected to make the next cut (see [`NextCut`]); `None` while that cannot
    /// be foreseen (no segment open, a configuration change or a timeline break waiting for
    /// the next cut). Ingest reads a socket less often before that frame is due.
    pub fn next_cut(&self) -> Option<NextCut> {
        if self.broken || self.pending_video || self.pending_audio {
            return None;
        }
        match &self.backend {
            Backend::Ts(segmenter) => segmenter.next_cut(),
            Backend::Fmp4(fragmenter) => fragmenter.next_cut(),
        }
    }

    /// Frame counters.
    pub fn stats(&self) -> RemuxerStats {
        self.stats
    }

    fn push_video(&mut self, dts: i64, data: &[u8]) -> Result<(), Error> {
        match flv::parse_video(data)? {
            // ffmpeg sends an empty AV1 sequence start before the real one.
            VideoTag::SequenceHeader { record: [], .. } => Ok(()),
            VideoTag::SequenceHeader { codec, record } => {
                if matches!(self.backend, Backend::Ts(_)) && codec != VideoCodec::Avc {
                    return Err(Unsupported::VideoCodecInTs(codec.name()).into());
                }
                let config = VideoConfig::parse(codec, record)?;
                if self.video.as_ref() != Some(&config) {
                    self.video = Some(config);
                    self.pending_video = true;
                }
                Ok(())
            }
            VideoTag::Frame { codec, keyframe, composition_time_ms, data: frame } => {
                if self.video.as_ref().is_none_or(|video| video.codec() != codec) {
                    self.stats.frames_dropped += 1;
                    return Ok(());
                }
                if keyframe
                    && self.pending_video
                    && let Some(VideoConfig::Vp9(vp9)) = &mut self.video
                {
                    // VP9's record has no picture size: its first keyframe gives it, before
                    // the keyframe starts the segment whose init segment needs it.
                    vp9.learn_size(frame);
                }
                let Some(dts) = self.place(Track::Video, dts, keyframe) else {
                    self.stats.frames_dropped += 1;
                    return Ok(());
                };
                let cts = i64::from(composition_time_ms) * TICKS_PER_MS;
                let cts = if (0..=duration_to_ticks(MAX_COMPOSITION_OFFSET)).contains(&cts) {
                    cts
                } else {
                    0
                };
                // MPEG-TS: start codes and NAL units go to the muxer as pieces, not joined
                // first (an AUD, maybe SPS and PPS, then a start code and a slice or a few).
                // fMP4 carries the length-prefixed NAL units as they came, AV1 without its
                // temporal delimiter.
                let mut pieces = Vec::with_capacity(8);
                match (&self.backend, &self.video) {
                    (Backend::Ts(_), Some(VideoConfig::Avc(avc))) => {
                        avc.annex_b(frame, keyframe, &mut pieces)?;
                    }
                    (_, Some(VideoConfig::Av1(_))) => crate::av1::sample_pieces(frame, &mut pieces),
                    _ => pieces.push(frame),
                }
                let unit = AccessUnit {
                    track: Track::Video,
                    pts: dts + cts,
                    dts,
                    duration: self.video_frame_ticks,
                    keyframe,
                    data: &pieces,
                };
                self.written_end = self.written_end.max(dts + unit.duration);
                let written = write(&mut self.backend, &mut self.ready, &mut self.stats, unit)?;
                if written {
                    self.stats.video_frames += 1;
                    if keyframe {
                        if let Some(last) = self.last_keyframe_dts {
                            self.stats.keyframe_interval_ms =
                                u64::try_from((dts - last) / TICKS_PER_MS).ok();
                        }
                        self.last_keyframe_dts = Some(dts);
                    }
                }
                Ok(())
            }
            VideoTag::Ignored => Ok(()),
        }
    }

    fn push_audio(&mut self, dts: i64, data: &[u8]) -> Result<(), Error> {
        let raw = match flv::parse_audio(data)? {
            AudioTag::AacSequenceHeader(asc) => {
                let config = AacConfig::parse(asc)?;
                if matches!(self.backend, Backend::Ts(_))
                    && !(1..=7).contains(&config.channel_config)
                {
                    // Its frames are not the previous configuration's either: the track goes
                    // (at the next keyframe) until a configuration ADTS can say comes.
                    if self.audio.take().is_some() {
                        self.pending_audio = true;
                    }
                    return Err(Unsupported::AacChannelsInTs(config.channel_config).into());
                }
                self.set_audio(AudioConfig::Aac(config));
                return Ok(());
            }
            AudioTag::Mp3(frame) => {
                self.set_audio(AudioConfig::Mp3(MpegAudioConfig::parse(frame)?));
                frame
            }
            AudioTag::AacFrame(raw) => raw,
        };
        let Some(audio) = &self.audio else {
            self.stats.frames_dropped += 1;
            return Ok(());
        };
        let duration = audio.frame_ticks();
        let Some(dts) = self.place(Track::Audio, dts, false) else {
            self.stats.frames_dropped += 1;
            return Ok(());
        };
        let adts_header = match (&self.backend, &self.audio) {
            (Backend::Ts(_), Some(AudioConfig::Aac(aac))) => Some(aac.adts_header(raw.len())?),
            _ => None,
        };
        // MP3 frames carry their own headers: an empty first piece, which the muxer skips.
        let header = adts_header.as_ref().map_or(&[][..], |header| &header[..]);
        let unit = AccessUnit {
            track: Track::Audio,
            pts: dts,
            dts,
            duration,
            keyframe: true,
            data: &[header, raw],
        };
        self.written_end = self.written_end.max(dts + duration);
        write(&mut self.backend, &mut self.ready, &mut self.stats, unit).map(|_| ())
    }

    fn set_audio(&mut self, config: AudioConfig) {
        if self.audio.as_ref() != Some(&config) {
            self.audio = Some(config);
            self.pending_audio = true;
        }
    }

    /// Decides whether a frame of `track` at `dts` can be written now, applying pending
    /// changes and timeline breaks; returns its (possibly nudged) decode time.
    fn place(&mut self, track: Track, dts: i64, keyframe: bool) -> Option<i64> {
        let has_video = self.video.is_some();
        // Where a segment may start: a video keyframe, or any audio frame without video.
        let starts_here =
            if has_video { track == Track::Video && keyframe } else { track == Track::Audio };

        let (clock, allowance) = match track {
            Track::Video => (
                &mut self.input_clocks.0,
                duration_to_ticks(MAX_TRACK_STEP_BACK)
                    .max(STEP_BACK_FRAMES * self.video_frame_ticks),
            ),
            Track::Audio => (&mut self.input_clocks.1, duration_to_ticks(MAX_TRACK_STEP_BACK)),
        };
        let stepped_back = clock.is_some_and(|last| dts < last - allowance);
        *clock = Some(clock.map_or(dts, |last| last.max(dts)));
        let jumped = stepped_back
            || self.position.is_some_and(|position| {
                dts > position + duration_to_ticks(MAX_FORWARD_JUMP)
                    || dts < position - duration_to_ticks(MAX_BACKWARD_JUMP)
            });
        if jumped && !self.broken {
            self.broken = true;
            self.stats.timeline_breaks += 1;
        }
        if self.broken {
            if !starts_here {
                // Off the timeline until a frame that can start a segment restarts it.
                return None;
            }
            self.break_timeline();
            self.broken = false;
            self.position = None;
            // The tracks' clocks count from here: the other track's comes with its next frame.
            self.input_clocks = match track {
                Track::Video => (Some(dts), None),
                Track::Audio => (None, Some(dts)),
            };
            self.offset = self.written_end - dts;
        }
        self.position = Some(self.position.map_or(dts, |p| p.max(dts)));
        let dts = dts + self.offset;
        let open = match &self.backend {
            Backend::Ts(segmenter) => segmenter.is_open(),
            Backend::Fmp4(fragmenter) => fragmenter.is_open(),
        };
        if (self.pending_video || self.pending_audio) && (starts_here || !open) {
            self.pending_video = false;
            self.pending_audio = false;
            let wanted = (has_video, self.audio.as_ref().map(AudioConfig::stream));
            let (video, audio) = (self.video_entry(), self.audio_track());
            match &mut self.backend {
                Backend::Ts(segmenter) if wanted != self.applied => {
                    self.ready.extend(segmenter.set_tracks(wanted.0, wanted.1));
                }
                // Same tracks, new parameters (a new SPS, a new AAC config): new segment.
                Backend::Ts(segmenter) if segmenter.is_open() => {
                    self.ready.extend(segmenter.break_timeline());
                }
                Backend::Ts(_) => {}
                // A new init segment, whatever changed.
                Backend::Fmp4(fragmenter) => fragmenter.set_tracks(video, audio),
            }
            self.applied = wanted;
        } else if self.pending_audio
            && self.applied.1.is_none()
            && let Some(audio) = self.audio.as_ref().map(AudioConfig::stream)
        {
            let track = self.audio_track();
            let added = match (&mut self.backend, track) {
                (Backend::Ts(segmenter), _) => {
                    segmenter.add_audio_to_first_segment(audio).unwrap_or(false)
                }
                (Backend::Fmp4(fragmenter), Some(track)) => {
                    fragmenter.add_audio_before_first_fragment(track)
                }
                (Backend::Fmp4(_), None) => false,
            };
            if added {
                self.pending_audio = false;
                self.applied.1 = Some(audio);
            }
        }
        // Only tracks the current PMT announces, in the format it announces, are written.
        let announced = match track {
            Track::Video => self.applied.0,
            Track::Audio => self.applied.1.is_some() && !self.pending_audio,
        };
        if !announced {
            return None;
        }

        // Keep DTS strictly increasing per track (encoders round timestamps to milliseconds
        // and occasionally repeat one or step back a little).
        let last = match track {
            Track::Video => &mut self.last_video_dts,
            Track::Audio => &mut self.last_audio_dts,
        };
        let previous = *last;
        let dts = match previous {
            Some(previous) if dts <= previous => previous + 1,
            _ => dts,
        };
        *last = Some(dts);
        if track == Track::Video
            && let Some(previous) = previous
            && dts - previous < TICKS_PER_SECOND
        {
            self.video_frame_ticks = dts - previous;
        }
        Some(dts)
    }

    /// Ends the open segment; the next one follows a discontinuity.
    fn break_timeline(&mut self) {
        match &mut self.backend {
            Backend::Ts(segmenter) => self.ready.extend(segmenter.break_timeline()),
            Backend::Fmp4(fragmenter) => fragmenter.break_timeline(),
        }
    }

    /// The video track's fMP4 sample entry.
    fn video_entry(&self) -> Option<SampleEntry> {
        self.video.as_ref().map(|video| video.sample_entry(self.colour))
    }

    /// The video's colour description, as the publisher's Enhanced RTMP `colorInfo` metadata
    /// gives it: fMP4 init segments carry it (`colr`). A change once frames flow gives a new
    /// init segment at the next keyframe, as a new sequence header does; MPEG-TS ignores it
    /// (the codec's own headers carry colour there).
    pub fn set_colour(&mut self, colour: Colour) {
        if self.colour != Some(colour) {
            self.colour = Some(colour);
            if matches!(self.backend, Backend::Fmp4(_)) && self.video.is_some() {
                self.pending_video = true;
            }
        }
    }

    /// The audio track as fMP4 describes it: AAC in its core coder's timescale (1024 samples
    /// a frame, as its timestamps count), MP3 in its own.
    fn audio_track(&self) -> Option<AudioTrack> {
        let channels = u16::from(self.audio.as_ref()?.channels().unwrap_or(2));
        Some(match self.audio.as_ref()? {
            AudioConfig::Aac(aac) => AudioTrack {
                entry: SampleEntry::Aac {
                    config: aac.audio_specific_config().to_vec(),
                    sample_rate: aac.core_sample_rate(),
                    channels,
                },
                sample_rate: aac.core_sample_rate(),
                samples_per_frame: SAMPLES_PER_FRAME,
            },
            AudioConfig::Mp3(mp3) => AudioTrack {
                entry: SampleEntry::Mp3 {
                    mpeg1: mp3.mpeg1,
                    sample_rate: mp3.sample_rate,
                    channels,
                },
                sample_rate: mp3.sample_rate,
                samples_per_frame: mp3.samples_per_frame,
            },
        })
    }
}
/// Hands `unit` to `backend` (finished TS segments go to `ready`); whether it was written,
/// else it is counted dropped.
fn write(
    backend: &mut Backend,
    ready: &mut VecDeque<Segment>,
    stats: &mut RemuxerStats,
    unit: AccessUnit<'_>,
) -> Result<bool, Error> {
    let written = match backend {
        Backend::Ts(segmenter) => match segmenter.push(unit) {
            Ok(Pushed::Dropped) => false,
            Ok(Pushed::Written(finished)) => {
                ready.extend(finished);
                true
            }
            Err(_) => return Err(Error::Internal("the MPEG-TS encoder refused a packet")),
        },
        Backend::Fmp4(fragmenter) => fragmenter.push(unit),
    };
    if written {
        stats.frames += 1;
    } else {
        stats.frames_dropped += 1;
    }
    Ok(written)
}
