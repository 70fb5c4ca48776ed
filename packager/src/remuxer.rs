//! One publish's packaging: FLV tags in, MPEG-TS segments out.
//!
//! Owns the codec configurations, the timeline and the segmenter. Converts each FLV frame to
//! an access unit (Annex B for H.264, ADTS for AAC) timed in 90 kHz from the RTMP timestamp
//! plus the composition offset (FLV v10.1 E.4.3.1).

use std::collections::VecDeque;
use std::time::Duration;

use crate::Error;
use crate::adts::{AacConfig, SAMPLES_PER_FRAME};
use crate::avc::AvcConfig;
use crate::flv::{self, AudioTag, TagKind, VideoTag};
use crate::segmenter::{AccessUnit, Pushed, Segment, Segmenter, TICKS_PER_SECOND};
use crate::timeline::Timeline;
use crate::ts_mux::{MuxError, Track};

/// Frame duration assumed for video until two frames have been seen (30 fps).
const DEFAULT_VIDEO_FRAME_TICKS: i64 = TICKS_PER_SECOND / 30;
/// Ticks per millisecond of RTMP time.
const TICKS_PER_MS: i64 = TICKS_PER_SECOND / 1000;

/// Settings of a [`Remuxer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemuxerConfig {
    /// Segments are cut at the first keyframe after this long.
    pub target_duration: Duration,
}

impl Default for RemuxerConfig {
    fn default() -> Self {
        Self { target_duration: Duration::from_secs(2) }
    }
}

/// Counters a caller may report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemuxerStats {
    /// Frames packaged.
    pub frames: u64,
    /// Frames dropped: before their track's sequence header, or before the first keyframe.
    pub frames_dropped: u64,
}

/// FLV tags to segments for one publish.
///
/// Call [`Remuxer::push`] with every audio and video message in arrival order, then
/// [`Remuxer::pull`] until it returns `None`; at most two segments wait between pushes.
/// Call [`Remuxer::finish`] when the publisher stops to get the last segment.
#[derive(Debug)]
pub struct Remuxer {
    timeline: Timeline,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    segmenter: Segmenter,
    ready: VecDeque<Segment>,
    /// Reused buffer for the unit being converted.
    scratch: Vec<u8>,
    last_video_dts: Option<i64>,
    video_frame_ticks: i64,
    stats: RemuxerStats,
}

impl Remuxer {
    /// A remuxer for a new publish.
    pub fn new(config: RemuxerConfig) -> Self {
        Self {
            timeline: Timeline::new(),
            avc: None,
            aac: None,
            segmenter: Segmenter::new(config.target_duration),
            ready: VecDeque::with_capacity(2),
            scratch: Vec::new(),
            last_video_dts: None,
            video_frame_ticks: DEFAULT_VIDEO_FRAME_TICKS,
            stats: RemuxerStats::default(),
        }
    }

    /// Takes one audio or video message (`data` is the FLV tag body, `timestamp_ms` the RTMP
    /// timestamp). An error rejects this tag only; the remuxer stays usable.
    pub fn push(&mut self, kind: TagKind, timestamp_ms: u32, data: &[u8]) -> Result<(), Error> {
        let dts = self.timeline.unwrap(timestamp_ms) * TICKS_PER_MS;
        match kind {
            TagKind::Video => self.push_video(dts, data),
            TagKind::Audio => self.push_audio(dts, data),
        }
    }

    /// The next finished segment, if any.
    pub fn pull(&mut self) -> Option<Segment> {
        self.ready.pop_front()
    }

    /// Ends the stream: returns the last, partial segment if there is one.
    pub fn finish(&mut self) -> Option<Segment> {
        self.ready.extend(self.segmenter.finish());
        self.ready.pop_front()
    }

    /// The video configuration in use.
    pub fn video_config(&self) -> Option<&AvcConfig> {
        self.avc.as_ref()
    }

    /// The audio configuration in use.
    pub fn audio_config(&self) -> Option<&AacConfig> {
        self.aac.as_ref()
    }

    /// Frame counters.
    pub fn stats(&self) -> RemuxerStats {
        self.stats
    }

    fn push_video(&mut self, dts: i64, data: &[u8]) -> Result<(), Error> {
        match flv::parse_video(data)? {
            VideoTag::SequenceHeader(record) => {
                let config = AvcConfig::parse(record)?;
                if self.avc.as_ref() != Some(&config) {
                    self.avc = Some(config);
                    self.tracks_changed();
                }
                Ok(())
            }
            VideoTag::Frame { keyframe, composition_time_ms, nalus } => {
                let Some(avc) = &self.avc else {
                    self.stats.frames_dropped += 1;
                    return Ok(());
                };
                self.scratch.clear();
                avc.write_annex_b(nalus, &mut self.scratch)?;
                if let Some(last) = self.last_video_dts.filter(|&last| dts > last) {
                    self.video_frame_ticks = dts - last;
                }
                self.last_video_dts = Some(dts);
                let unit = AccessUnit {
                    track: Track::Video,
                    pts: dts + i64::from(composition_time_ms) * TICKS_PER_MS,
                    dts,
                    duration: self.video_frame_ticks,
                    keyframe,
                    data: &self.scratch,
                };
                let pushed = self.segmenter.push(unit);
                self.record(pushed)
            }
            VideoTag::Ignored => Ok(()),
        }
    }

    fn push_audio(&mut self, dts: i64, data: &[u8]) -> Result<(), Error> {
        match flv::parse_audio(data)? {
            AudioTag::SequenceHeader(asc) => {
                let config = AacConfig::parse(asc)?;
                if self.aac.as_ref() != Some(&config) {
                    self.aac = Some(config);
                    self.tracks_changed();
                }
                Ok(())
            }
            AudioTag::Frame(raw) => {
                let Some(aac) = &self.aac else {
                    self.stats.frames_dropped += 1;
                    return Ok(());
                };
                self.scratch.clear();
                self.scratch.extend_from_slice(&aac.adts_header(raw.len())?);
                self.scratch.extend_from_slice(raw);
                let duration = i64::from(SAMPLES_PER_FRAME) * TICKS_PER_SECOND
                    / i64::from(aac.core_sample_rate());
                let unit = AccessUnit {
                    track: Track::Audio,
                    pts: dts,
                    dts,
                    duration,
                    keyframe: true,
                    data: &self.scratch,
                };
                let pushed = self.segmenter.push(unit);
                self.record(pushed)
            }
        }
    }

    fn tracks_changed(&mut self) {
        let ended = self.segmenter.set_tracks(self.avc.is_some(), self.aac.is_some());
        self.ready.extend(ended);
    }

    fn record(&mut self, pushed: Result<Pushed, MuxError>) -> Result<(), Error> {
        match pushed {
            Ok(Pushed::Dropped) => self.stats.frames_dropped += 1,
            Ok(Pushed::Written(finished)) => {
                self.stats.frames += 1;
                self.ready.extend(finished);
            }
            Err(_) => return Err(Error::Internal("the MPEG-TS encoder refused a packet")),
        }
        Ok(())
    }
}
