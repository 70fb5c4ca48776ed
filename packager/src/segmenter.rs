//! Cutting access units into MPEG-TS segments.
//!
//! A segment starts with PAT/PMT and, when the stream has video, with a keyframe, so every
//! segment decodes on its own (RFC 8216 §4.3.3.1 EXT-X-INDEPENDENT-SEGMENTS). It is cut at
//! the first keyframe after the target duration, or, for audio-only streams, at the first
//! frame after it. Never looks at a clock: durations come from media timestamps.
//!
//! Audio frames are held back to share PES packets (up to [`MAX_AUDIO_PES_PAYLOAD`] bytes
//! or [`MAX_AUDIO_PES_DURATION`]), as ffmpeg's and Nginx-RTMP's muxers do: a PES per frame
//! costs a PES header and a part-stuffed TS packet every ~21 ms, ~18 % more audio packets
//! (222 instead of 188 per 2 s segment at 128 kbit/s). Held frames always go out before the
//! segment they belong to closes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::buffer_pool::BufferPool;
use crate::remuxer::NextCut;
use crate::ts_mux::{self, AudioStream, MuxError, PesTiming, Track, TsMuxer};

/// 90 kHz ticks per second (ISO/IEC 13818-1 §2.4.3.7 system clock / 300).
pub const TICKS_PER_SECOND: i64 = 90_000;
/// PTS/DTS run this far ahead of the PCR, as ffmpeg's default `muxdelay` (0.7 s), so the
/// decoder model never sees a frame due before it arrived.
const MUX_DELAY_TICKS: i64 = 63_000;
/// A stream whose keyframes never come still gets cut after this long, so one segment's
/// buffer cannot grow without bound (Nginx-RTMP's `hls_max_fragment` plays the same role).
pub const MAX_SEGMENT_DURATION: Duration = Duration::from_secs(20);
/// And after this many bytes, whatever the duration (about 20 s at 50 Mbit/s).
pub const MAX_SEGMENT_BYTES: usize = 128 << 20;
/// Consecutive PCRs are at most this far apart (ISO/IEC 13818-1 §2.7.2 allows 100 ms): when
/// frames are further apart (low frame rates, gaps in the other track), PCR-only packets
/// fill in.
const PCR_INTERVAL_TICKS: i64 = TICKS_PER_SECOND / 20;
/// PCR-only packets written for one gap at most; gaps this long are timeline breaks anyway.
const MAX_PCR_FILL: i64 = 200;

/// Audio frames share one PES packet up to this many payload bytes (ffmpeg's default
/// `pes_payload_size`); a larger frame gets a PES of its own.
pub const MAX_AUDIO_PES_PAYLOAD: usize = 2_930;
/// And up to this much media time, of either track: a held frame is written at most this
/// much after frames of the other track with later timestamps (so after PCRs up to this much
/// later), well within [`MUX_DELAY_TICKS`] (its PTS still leads the PCR), and low-bitrate
/// audio does not wait long for the byte limit.
pub const MAX_AUDIO_PES_DURATION: Duration = Duration::from_millis(200);

/// Bytes in a TS packet.
const TS_PACKET: usize = 188;
/// Initial buffer of a stream's first segment.
const MIN_SEGMENT_CAPACITY: usize = 256 << 10;
/// Bytes of the open segment a segmenter with a [`SegmentSink`] holds before handing them
/// over: 174 TS packets, just under 32 KiB. Its heap then holds this much of a segment, not
/// the whole (~0.7 MB at 2.6 Mbit/s), and the sink is called about ten times a second at
/// that bit rate.
pub const STAGING_BYTES: usize = 174 * TS_PACKET;

/// Where a segmenter puts segments as it writes them, instead of in buffers of its own (the
/// server's store: a memory file per stream, so a segment is in memory once, in pages the
/// kernel hands back when it is dropped; or recycled heap buffers, taken whole with
/// [`SegmentSink::append_buffer`]). Calls come in order: [`SegmentSink::begin`], then
/// `append` and `overwrite` for that segment, then [`SegmentSink::end`]. The sink deals with
/// its own failures: a segment it cannot keep is its own to drop.
pub trait SegmentSink: Send + fmt::Debug {
    /// A segment starts; one begun and not ended before it is abandoned.
    fn begin(&mut self);
    /// The next bytes of the segment begun last.
    fn append(&mut self, bytes: &[u8]);
    /// The next bytes of the segment begun last, as a whole buffer the sink may keep;
    /// returns an empty buffer for the bytes after them. The default copies them
    /// ([`SegmentSink::append`]) and hands `buffer` back; a sink that keeps segments as the
    /// buffers they were written in takes it and returns another, with room for
    /// [`STAGING_BYTES`].
    fn append_buffer(&mut self, mut buffer: Vec<u8>) -> Vec<u8> {
        self.append(&buffer);
        buffer.clear();
        buffer
    }
    /// Replaces bytes already appended to the segment begun last, from `offset`.
    fn overwrite(&mut self, offset: usize, bytes: &[u8]);
    /// The segment begun last is complete: its id, which the [`Segment`] the segmenter
    /// returns for it carries ([`Segment::sink_id`]), so whoever keeps both pairs them.
    fn end(&mut self) -> u64;
}

/// One access unit, ready to be packetised.
#[derive(Debug, Clone, Copy)]
pub struct AccessUnit<'a> {
    /// The elementary stream it belongs to.
    pub track: Track,
    /// Presentation time, 90 kHz.
    pub pts: i64,
    /// Decode time, 90 kHz.
    pub dts: i64,
    /// How long the unit lasts (an estimate for video), 90 kHz.
    pub duration: i64,
    /// Whether decoding can start here.
    pub keyframe: bool,
    /// The elementary stream bytes (Annex B or ADTS), in pieces to be written back to back.
    pub data: &'a [&'a [u8]],
}

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The MPEG-TS bytes, or none when the segmenter has a [`SegmentSink`] (which has them).
    pub data: Bytes,
    /// Bytes handed to the segmenter's [`SegmentSink`]: the whole segment, or 0 without one.
    pub sink_len: usize,
    /// The id the sink gave the segment at its end (0 without one).
    pub sink_id: u64,
    /// Media duration.
    pub duration: Duration,
    /// The timeline or the codec parameters changed before this segment
    /// (RFC 8216 §4.3.2.3 EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
    /// Decoding can start at the first byte (false only after a forced cut).
    pub independent: bool,
    /// Media time of the first access unit (90 kHz, the publisher's timeline).
    pub start: i64,
}

impl Segment {
    /// Length in bytes, wherever they are.
    pub fn len(&self) -> usize {
        self.sink_len + self.data.len()
    }

    /// Never true for a segment a segmenter made (it holds at least its PAT and PMT).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Segmenter::push`] did with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Written; the unit started a new segment and this is the one it ended, if any.
    Written(Option<Segment>),
    /// Dropped: it cannot start a segment (audio or a non-keyframe before the first keyframe).
    Dropped,
}

/// A segment being written.
#[derive(Debug)]
struct Open {
    /// The bytes not handed to the sink (all of them without one).
    data: Vec<u8>,
    /// Bytes handed to the sink.
    sunk: usize,
    /// The stream's first segment (tracks may still be added to it).
    first: bool,
    start: i64,
    end: i64,
    /// The latest decode time written.
    latest: i64,
    discontinuity: bool,
    independent: bool,
}

/// Audio frames waiting to be written as one PES packet.
#[derive(Debug, Default)]
struct HeldAudio {
    /// The frames' bytes, back to back (ADTS and MPEG audio frames delimit themselves).
    data: Vec<u8>,
    /// Timestamps of the first frame (the PES's).
    pts: i64,
    dts: i64,
}

/// Cuts access units into segments.
///
/// Call [`Segmenter::push`] with each unit in decode order; it returns a segment when the unit
/// started a new one. Call [`Segmenter::finish`] at the end of the stream. Buffers at most one
/// segment, bounded by [`MAX_SEGMENT_DURATION`] and [`MAX_SEGMENT_BYTES`].
#[derive(Debug)]
pub struct Segmenter {
    target: i64,
    mux: TsMuxer,
    has_video: bool,
    open: Option<Open>,
    /// The last PCR written, to keep PCRs monotonic and close enough.
    last_pcr: Option<i64>,
    /// Size of the last segment closed, to size the next one's buffer.
    last_len: usize,
    /// Set when the timeline or parameters break; applies to the next segment opened.
    discontinuity: bool,
    /// Whether any segment has been opened yet (the first one is never a discontinuity).
    started: bool,
    /// Audio frames not yet written; empty when nothing is held.
    held_audio: HeldAudio,
    /// The decode time of the last video frame ([`i64::MIN`] before any), and the interval
    /// before it: audio sets the pace once the video has been silent for a target duration
    /// and two of its intervals.
    last_video: i64,
    video_interval: i32,
    /// Where segment buffers come from and return to.
    pool: Arc<BufferPool>,
    /// Where segments go as they are written, if anywhere.
    sink: Option<Box<dyn SegmentSink>>,
    /// The buffer of [`STAGING_BYTES`] that segments go through with a sink, between two.
    staging: Vec<u8>,
}

impl Segmenter {
    /// A segmenter cutting at the first keyframe after `target`, with buffers of its own
    /// (see [`Segmenter::with_pool`]).
    pub fn new(target: Duration) -> Self {
        Self::with_pool(target, Arc::default())
    }

    /// A segmenter cutting at the first keyframe after `target`, writing segments into
    /// buffers from `pool` (shared with other streams, so one stream's freed segment is the
    /// next one's buffer).
    pub fn with_pool(target: Duration, pool: Arc<BufferPool>) -> Self {
        Self {
            target: duration_to_ticks(target).max(1),
            mux: TsMuxer::new(),
            has_video: false,
            open: None,
            last_video: i64::MIN,
            video_interval: 0,
            last_pcr: None,
            last_len: 0,
            discontinuity: false,
            started: false,
            held_audio: HeldAudio::default(),
            pool,
            sink: None,
            staging: Vec::new(),
        }
    }

    /// Hands every segment to `sink` as it is written (see [`SegmentSink`]); the segments
    /// returned then carry no bytes of their own. Only before the first segment: false (and
    /// `sink` unused) after.
    pub fn set_sink(&mut self, sink: Box<dyn SegmentSink>) -> bool {
        if self.started {
            return false;
        }
        self.sink = Some(sink);
        true
    }

    /// Sets the tracks the next segments carry. A change ends the open segment (returned) and
    /// marks the next one as a discontinuity, since its PMT differs.
    pub fn set_tracks(&mut self, video: bool, audio: Option<AudioStream>) -> Option<Segment> {
        // Held frames belong to the open segment, whose PMT lists the tracks as they were.
        self.flush_audio_before_close();
        self.has_video = video;
        self.mux.set_tracks(video, audio);
        self.break_timeline()
    }

    /// Ends the open segment (returned) and marks the next one as a discontinuity.
    pub fn break_timeline(&mut self) -> Option<Segment> {
        if self.started {
            self.discontinuity = true;
        }
        self.flush_audio_before_close();
        self.last_pcr = None;
        self.open.take().map(|open| self.close(open))
    }

    /// Whether a segment is being written.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The frame expected to close the open segment: a keyframe at the target (encoders'
    /// keyframe intervals are the target or a multiple of it), or once the target is past,
    /// the latest (the next frame may close it); `None` when no segment is open. Forced
    /// cuts ([`MAX_SEGMENT_BYTES`]) and timeline breaks are not foreseen.
    pub fn next_cut(&self) -> Option<NextCut> {
        let open = self.open.as_ref()?;
        let at = |ticks: i64| ticks_to_duration(ticks.max(0));
        let target = open.start + self.target;
        Some(NextCut { latest: at(open.latest), expected: at(target.max(open.latest)) })
    }

    /// Adds an audio track to the stream's very first segment while it is being written, by
    /// rewriting its PAT/PMT, so a track whose first frame comes just after the first video
    /// keyframe (MP3 has no sequence header) does not cost a discontinuity. Returns false
    /// (and changes nothing) in any other situation.
    pub fn add_audio_to_first_segment(&mut self, audio: AudioStream) -> Result<bool, MuxError> {
        let Some(open) = self.open.as_mut() else { return Ok(false) };
        if !open.first || !self.has_video || self.mux.audio().is_some() {
            return Ok(false);
        }
        self.mux.set_tracks(true, Some(audio));
        let mut tables = Vec::with_capacity(2 * TS_PACKET);
        self.mux.write_tables(&mut tables)?;
        match self.sink.as_mut() {
            Some(sink) if open.sunk > 0 => sink.overwrite(0, &tables),
            _ => open.data[..tables.len()].copy_from_slice(&tables),
        }
        Ok(true)
    }

    /// Adds one access unit; see [`Pushed`].
    pub fn push(&mut self, unit: AccessUnit<'_>) -> Result<Pushed, MuxError> {
        let mut finished = None;
        if let Some(open) = &self.open {
            let elapsed = unit.dts - open.start;
            // Audio sets the pace without video, and once the video has been silent (a
            // phone's camera stopped, its microphone going on): segments then go on being
            // cut, and the limits hold for it.
            let last_video = if self.last_video == i64::MIN { open.start } else { self.last_video };
            let video_silent = self.has_video
                && unit.track == Track::Audio
                && unit.dts - last_video
                    >= video_silence(self.target, i64::from(self.video_interval));
            let audio_paces = !self.has_video || video_silent;
            let due = elapsed >= self.target
                && ((unit.track == Track::Video && unit.keyframe) || audio_paces);
            // Audio forces a cut only while it sets the pace: with video flowing, the next
            // video frame does, on a frame boundary.
            let forced = (unit.track == Track::Video || audio_paces)
                && (elapsed >= duration_to_ticks(MAX_SEGMENT_DURATION)
                    || open.sunk + open.data.len() >= MAX_SEGMENT_BYTES);
            if due || forced {
                self.flush_audio_before_close();
                finished = self.open.take().map(|mut open| {
                    open.end = unit.dts;
                    self.close(open)
                });
                self.last_len = finished.as_ref().map_or(self.last_len, Segment::len);
                let independent = (unit.track == Track::Video && unit.keyframe) || !self.has_video;
                self.open_segment(unit.dts, independent)?;
            }
        } else {
            let can_start = if self.has_video {
                unit.track == Track::Video && unit.keyframe
            } else {
                unit.track == Track::Audio
            };
            if !can_start {
                return Ok(Pushed::Dropped);
            }
            self.open_segment(unit.dts, true)?;
        }
        // Held audio goes out once either track has moved the limit past it: the PCR follows
        // the video, so a gap in the audio must not eat into the held frames' PTS lead.
        if !self.held_audio.data.is_empty()
            && unit.dts - self.held_audio.dts >= duration_to_ticks(MAX_AUDIO_PES_DURATION)
        {
            self.flush_audio()?;
        }
        if unit.track == Track::Audio {
            self.hold_audio(&unit)?;
        } else {
            if self.last_video != i64::MIN && unit.dts > self.last_video {
                self.video_interval = i32::try_from(unit.dts - self.last_video).unwrap_or(i32::MAX);
            }
            self.last_video = unit.dts;
            self.write(unit.track, unit.pts, unit.dts, unit.keyframe, unit.data)?;
        }
        if let Some(open) = self.open.as_mut() {
            open.end = open.end.max(unit.dts + unit.duration.max(0));
            open.latest = open.latest.max(unit.dts);
        }
        Ok(Pushed::Written(finished))
    }

    /// Adds an audio frame to the held ones, writing those first when it would not fit
    /// within [`MAX_AUDIO_PES_PAYLOAD`] with them ([`Segmenter::push`] keeps the duration).
    fn hold_audio(&mut self, unit: &AccessUnit<'_>) -> Result<(), MuxError> {
        let len = ts_mux::total_len(unit.data);
        if self.held_audio.data.len() + len > MAX_AUDIO_PES_PAYLOAD {
            self.flush_audio()?;
        }
        if len >= MAX_AUDIO_PES_PAYLOAD {
            return self.write(Track::Audio, unit.pts, unit.dts, true, unit.data);
        }
        let held = &mut self.held_audio;
        if held.data.is_empty() {
            held.pts = unit.pts;
            held.dts = unit.dts;
        }
        for piece in unit.data {
            held.data.extend_from_slice(piece);
        }
        Ok(())
    }

    /// Writes the held audio frames, if any, as one PES packet; they are let go either way.
    fn flush_audio(&mut self) -> Result<(), MuxError> {
        if self.held_audio.data.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.held_audio.data);
        let written =
            self.write(Track::Audio, self.held_audio.pts, self.held_audio.dts, true, &[&data]);
        self.held_audio.data = data;
        self.held_audio.data.clear();
        written
    }

    /// [`Segmenter::flush_audio`] where the segment closes whatever happens: the muxer fails
    /// only on a timestamp or a payload it masks or bounds itself (`ts_mux`), and were it to,
    /// the held frames would be lost, not the segment.
    fn flush_audio_before_close(&mut self) {
        let _ = self.flush_audio();
    }

    /// Writes one PES packet into the open segment, with the PCR-only packets that keep the
    /// PCR interval before it.
    fn write(
        &mut self,
        track: Track,
        pts: i64,
        dts: i64,
        keyframe: bool,
        data: &[&[u8]],
    ) -> Result<(), MuxError> {
        let pcr_track = self.mux.pcr_track();
        let data_len = ts_mux::total_len(data);
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        // PCRs never go backwards (the other track's timestamps may run slightly ahead) and
        // never leave a gap longer than the interval.
        let pcr = self.last_pcr.map_or(dts, |last| last.max(dts));
        let fill = self.last_pcr.map_or(0, |last| {
            ((pcr - last - 1) / PCR_INTERVAL_TICKS).clamp(0, MAX_PCR_FILL) as usize
        });
        if self.sink.is_none() {
            let more = fill * TS_PACKET + ts_mux::pes_bytes_bound(data_len);
            make_room(&self.pool, &mut open.data, more);
        }
        if let Some(mut last) = self.last_pcr {
            for _ in 0..fill {
                last += PCR_INTERVAL_TICKS;
                // With a sink, the buffer never grows: what it holds goes when it is full.
                if let Some(sink) = self.sink.as_deref_mut()
                    && open.data.len() + TS_PACKET > STAGING_BYTES
                {
                    hand_over(sink, &mut open.data, &mut open.sunk);
                }
                self.mux.write_pcr(pcr_track, last, &mut open.data)?;
            }
            self.last_pcr = Some(last);
        }
        let carries_pcr = track == pcr_track;
        if carries_pcr {
            self.last_pcr = Some(pcr);
        }
        let timing = PesTiming {
            pts: pts.max(dts) + MUX_DELAY_TICKS,
            dts: dts + MUX_DELAY_TICKS,
            pcr: carries_pcr.then_some(pcr),
        };
        let random_access = keyframe && track == Track::Video;
        match self.sink.as_deref_mut() {
            None => self.mux.write_pes(track, timing, random_access, data, &mut open.data),
            Some(sink) => {
                let sunk = &mut open.sunk;
                self.mux.write_pes_within(
                    track,
                    timing,
                    random_access,
                    data,
                    &mut open.data,
                    STAGING_BYTES,
                    &mut |buffer| hand_over(sink, buffer, sunk),
                )
            }
        }
    }

    /// Ends the stream: returns the open segment, if any.
    pub fn finish(&mut self) -> Option<Segment> {
        self.flush_audio_before_close();
        self.open.take().map(|open| self.close(open))
    }

    fn open_segment(&mut self, start: i64, independent: bool) -> Result<(), MuxError> {
        let mut data = if let Some(sink) = self.sink.as_mut() {
            sink.begin();
            let mut staging = std::mem::take(&mut self.staging);
            staging.reserve_exact(STAGING_BYTES);
            staging
        } else {
            // Sized like the previous segment plus a sixteenth, so the buffer rarely has to
            // grow while the segment is written; a pooled buffer down to an eighth smaller
            // will do (growing one now and then costs less than faulting fresh pages in for
            // every one).
            let size =
                (self.last_len + self.last_len / 16).clamp(MIN_SEGMENT_CAPACITY, MAX_SEGMENT_BYTES);
            self.pool.take(size - size / 8, size)
        };
        self.mux.write_tables(&mut data)?;
        self.open = Some(Open {
            data,
            sunk: 0,
            first: !self.started,
            start,
            end: start,
            latest: start,
            discontinuity: std::mem::take(&mut self.discontinuity),
            independent,
        });
        self.started = true;
        Ok(())
    }

    /// A finished segment: its buffer shared as the segment's bytes, or, with a sink, its
    /// last bytes handed over and the buffer kept for the next.
    fn close(&mut self, mut open: Open) -> Segment {
        let (data, sink_id) = match self.sink.as_deref_mut() {
            Some(sink) => {
                hand_over(sink, &mut open.data, &mut open.sunk);
                let id = sink.end();
                self.staging = std::mem::take(&mut open.data);
                (Bytes::new(), id)
            }
            None => (self.pool.share(std::mem::take(&mut open.data)), 0),
        };
        Segment {
            start: open.start,
            duration: ticks_to_duration(open.end - open.start),
            data,
            sink_len: open.sunk,
            sink_id,
            discontinuity: open.discontinuity,
            independent: open.independent,
        }
    }
}

/// Hands the bytes in `buffer` to `sink` (counted in `sunk`), leaving `buffer` empty: the
/// same buffer, or one the sink gave for it.
fn hand_over(sink: &mut dyn SegmentSink, buffer: &mut Vec<u8>, sunk: &mut usize) {
    if !buffer.is_empty() {
        *sunk += buffer.len();
        *buffer = sink.append_buffer(std::mem::take(buffer));
        buffer.clear();
    }
}

/// Makes room for `more` bytes in a segment buffer: a full buffer moves to a larger one
/// from the pool (half as large again as needed: a stream's first segments, sized from
/// nothing, grow a few times) instead of doubling, and goes back to the pool.
fn make_room(pool: &Arc<BufferPool>, data: &mut Vec<u8>, more: usize) {
    if data.capacity() - data.len() >= more {
        return;
    }
    let needed = data.len() + more;
    let mut larger = pool.take(needed, needed + needed / 2);
    larger.extend_from_slice(data);
    pool.give(std::mem::replace(data, larger));
}

/// How long (90 kHz) the video must have been silent for audio to set the pace of segments
/// and parts: the `target`, and two of the video's intervals (`interval`, 0 when not known
/// yet: then half the forced cut's duration). A frame rate that low, a screen shared frame by
/// frame, dropped frames or audio leading the video in the publisher's interleaving are not
/// silence; a stall is.
pub(crate) fn video_silence(target: i64, interval: i64) -> i64 {
    let pace =
        if interval > 0 { 2 * interval } else { duration_to_ticks(MAX_SEGMENT_DURATION) / 2 };
    target.max(pace)
}

/// Converts a duration to 90 kHz ticks (saturating).
pub fn duration_to_ticks(d: Duration) -> i64 {
    i64::try_from(d.as_micros() * 9 / 100).unwrap_or(i64::MAX)
}

/// Converts 90 kHz ticks to a duration (negative spans count as zero).
pub fn ticks_to_duration(ticks: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ticks).unwrap_or(0) * 100_000 / 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(dts: i64, keyframe: bool) -> AccessUnit<'static> {
        AccessUnit {
            track: Track::Video,
            pts: dts,
            dts,
            duration: 3000,
            keyframe,
            data: &[&[0; 10]],
        }
    }

    fn audio(dts: i64) -> AccessUnit<'static> {
        AccessUnit {
            track: Track::Audio,
            pts: dts,
            dts,
            duration: 1920,
            keyframe: true,
            data: &[&[1; 10]],
        }
    }

    #[test]
    fn cuts_at_first_keyframe_after_target() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        assert!(s.set_tracks(true, Some(AudioStream::Adts)).is_none());
        // Audio and an inter frame before the first keyframe are dropped.
        assert_eq!(s.push(audio(0)).unwrap(), Pushed::Dropped);
        assert_eq!(s.push(video(0, false)).unwrap(), Pushed::Dropped);
        let mut segments = Vec::new();
        // 30 fps, keyframe every 45 frames (1.5 s): cuts land at 3 s, 6 s, ...
        for frame in 1..=300 {
            let dts = frame * 3000;
            if let Pushed::Written(Some(seg)) = s.push(video(dts, (frame - 1) % 45 == 0)).unwrap() {
                segments.push(seg);
            }
            s.push(audio(dts)).unwrap();
        }
        segments.extend(s.finish());
        let durations: Vec<_> = segments.iter().map(|s| s.duration.as_millis()).collect();
        assert_eq!(durations, [3000, 3000, 3000, 1000]);
        assert!(segments.iter().all(|s| s.independent && !s.discontinuity));
        assert!(segments.iter().all(|s| s.data.len() % 188 == 0));
    }

    #[test]
    fn next_cut_expects_the_keyframe_at_the_target() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, None);
        assert_eq!(s.next_cut(), None, "nothing open");
        let expected = |s: &Segmenter| s.next_cut().map(|cut| (cut.latest, cut.expected));
        let two_seconds = Duration::from_secs(2);
        s.push(video(0, true)).unwrap();
        assert_eq!(expected(&s), Some((Duration::ZERO, two_seconds)));
        for frame in 1..60 {
            s.push(video(frame * 3000, false)).unwrap();
        }
        assert_eq!(expected(&s), Some((ticks_to_duration(59 * 3000), two_seconds)));
        // Past the target without a keyframe: the next frame may cut.
        s.push(video(61 * 3000, false)).unwrap();
        let latest = ticks_to_duration(61 * 3000);
        assert_eq!(expected(&s), Some((latest, latest)));
    }

    #[test]
    fn a_segment_outgrowing_its_buffer_keeps_every_byte() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, None);
        // The first segment is small, so the second one's buffer is too small for its frames.
        let small = [0u8; 100];
        let big = vec![9u8; 300_000];
        let mut segments = Vec::new();
        for frame in 0..=120 {
            let unit = AccessUnit {
                data: if frame < 60 { &[&small] } else { &[&big] },
                ..video(frame * 3000, frame % 60 == 0)
            };
            if let Pushed::Written(Some(seg)) = s.push(unit).unwrap() {
                segments.push(seg);
            }
        }
        let second = &segments[1];
        assert!(second.data.len() > 60 * 300_000, "{}", second.data.len());
        assert_eq!(second.data.len() % TS_PACKET, 0);
        assert!(second.data.chunks(TS_PACKET).all(|p| p[0] == 0x47), "every packet in sync");
        let payload_nines = second.data.iter().filter(|&&b| b == 9).count();
        assert!(payload_nines >= 60 * 300_000, "every payload byte written: {payload_nines}");
    }

    /// Keeps segments in vectors, as a file would.
    #[derive(Debug, Clone, Default)]
    struct VecSink(Arc<std::sync::Mutex<Kept>>);

    /// The segments a [`VecSink`] ended, and the one begun.
    #[derive(Debug, Default)]
    struct Kept {
        ended: Vec<Vec<u8>>,
        open: Option<Vec<u8>>,
    }

    impl SegmentSink for VecSink {
        fn begin(&mut self) {
            self.0.lock().unwrap().open = Some(Vec::new());
        }
        fn append(&mut self, bytes: &[u8]) {
            assert!(bytes.len() <= STAGING_BYTES && bytes.len().is_multiple_of(TS_PACKET));
            self.0.lock().unwrap().open.as_mut().unwrap().extend_from_slice(bytes);
        }
        fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
            let mut kept = self.0.lock().unwrap();
            kept.open.as_mut().unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        fn end(&mut self) -> u64 {
            let mut kept = self.0.lock().unwrap();
            let ended = kept.open.take().unwrap();
            kept.ended.push(ended);
            kept.ended.len() as u64 + 100
        }
    }

    #[test]
    fn a_sink_gets_every_byte_through_a_bounded_buffer() {
        let keyframe = vec![7u8; 200_000];
        let frame = vec![8u8; 9_000];
        let run = |sink: Option<VecSink>| {
            let mut s = Segmenter::new(Duration::from_secs(2));
            if let Some(sink) = sink {
                assert!(s.set_sink(Box::new(sink)));
            }
            s.set_tracks(true, None);
            let mut segments = Vec::new();
            for n in 0..200 {
                // Gaps at frames 100 and 150 make PCR-only packets fill them: 10, then 180
                // (more than the staging buffer holds).
                let gap = match n {
                    0..100 => 0,
                    100..150 => 45_000,
                    _ => 45_000 + 810_000,
                };
                let dts = n * 3000 + gap;
                let data: &[&[u8]] = if n % 60 == 0 { &[&keyframe] } else { &[&frame, &frame] };
                let unit = AccessUnit { data, ..video(dts, n % 60 == 0) };
                if let Pushed::Written(Some(segment)) = s.push(unit).unwrap() {
                    segments.push(segment);
                }
                if n == 30 {
                    // Past the staging buffer: the tables are rewritten in the sink.
                    assert!(s.add_audio_to_first_segment(AudioStream::Adts).unwrap());
                }
                if n > 30 {
                    s.push(audio(dts)).unwrap();
                }
                if let Some(open) = &s.open {
                    assert!(s.sink.is_none() || open.data.capacity() <= STAGING_BYTES);
                }
            }
            segments.extend(s.finish());
            assert!(!s.set_sink(Box::new(VecSink::default())), "only before the first segment");
            segments
        };
        let in_heap = run(None);
        let sink = VecSink::default();
        let sunk = run(Some(sink.clone()));
        let files = std::mem::take(&mut sink.0.lock().unwrap().ended);
        assert_eq!(in_heap.len(), 4);
        assert_eq!(files.len(), in_heap.len());
        for (((heap, sunk), file), id) in in_heap.iter().zip(&sunk).zip(&files).zip(101..) {
            assert!(sunk.data.is_empty() && sunk.sink_len == file.len());
            assert_eq!((sunk.sink_id, heap.sink_id), (id, 0), "the sink's ids");
            assert_eq!(&heap.data[..], &file[..], "the same bytes");
            assert_eq!(heap.sink_len, 0);
            assert_eq!((heap.duration, heap.start), (sunk.duration, sunk.start));
            assert_eq!(
                (heap.discontinuity, heap.independent),
                (sunk.discontinuity, sunk.independent)
            );
            assert_eq!(heap.len(), sunk.len());
        }
    }

    #[test]
    fn audio_only_cuts_on_duration() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(false, Some(AudioStream::Adts));
        let mut cuts = Vec::new();
        for i in 0..200 {
            if let Pushed::Written(Some(seg)) = s.push(audio(i * 1920)).unwrap() {
                cuts.push(seg.duration.as_millis());
            }
        }
        // 1920 ticks per frame: the first frame at or after 2 s is frame 94 (2.005 s).
        assert_eq!(cuts, [2005, 2005]);
    }

    /// Video that stops while audio goes on: segments are cut on the audio at the target
    /// (not independent), so the playlist moves and no buffer grows; the video's next
    /// keyframe cuts as usual.
    #[test]
    fn audio_sets_the_pace_while_the_video_is_silent() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, Some(AudioStream::Adts));
        let mut segments = Vec::new();
        let mut take = |pushed: Pushed| {
            if let Pushed::Written(Some(segment)) = pushed {
                segments.push((segment.duration.as_millis(), segment.independent));
            }
        };
        s.push(video(0, true)).unwrap();
        // 3 s of video, then 12 s of audio alone, then video again.
        for frame in 1..90 {
            take(s.push(video(frame * 3000, frame % 60 == 0)).unwrap());
            take(s.push(audio(frame * 3000)).unwrap());
        }
        let silent_from = 90 * 3000;
        for i in 0..(12 * 90_000 / 1920) {
            take(s.push(audio(silent_from + i * 1920)).unwrap());
        }
        let back = silent_from + 12 * 90_000;
        for frame in 0..70 {
            take(s.push(video(back + frame * 3000, frame % 60 == 0)).unwrap());
        }
        let (durations, independent): (Vec<_>, Vec<_>) = segments.into_iter().unzip();
        // The audio's own cuts, 94 frames of 1920 ticks each, through the silence; the
        // segment where the video comes back ends at its second keyframe, as any.
        assert!(durations.iter().filter(|&&d| d == 2005).count() >= 4, "{durations:?}");
        assert!(durations.iter().all(|&d| d <= 4_000), "{durations:?}");
        assert!(independent[0] && independent.contains(&false), "{independent:?}");
    }

    /// Video at 0.4 fps (a screen shared frame by frame), every frame a keyframe: gaps longer
    /// than the target are its pace, not silence, so every segment starts at a keyframe.
    #[test]
    fn a_low_frame_rate_is_not_silence() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, Some(AudioStream::Adts));
        let mut segments = Vec::new();
        let mut audio_at = 0;
        for frame in 0..12 {
            let dts = frame * 225_000;
            if let Pushed::Written(Some(segment)) = s.push(video(dts, true)).unwrap() {
                segments.push(segment.independent);
            }
            while audio_at < dts + 225_000 {
                if let Pushed::Written(Some(segment)) = s.push(audio(audio_at)).unwrap() {
                    segments.push(segment.independent);
                }
                audio_at += 1920;
            }
        }
        assert!(segments.len() >= 10 && segments.iter().all(|&i| i), "{segments:?}");
    }

    #[test]
    fn missing_keyframes_force_a_cut_at_the_limit() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, None);
        s.push(video(0, true)).unwrap();
        let limit = duration_to_ticks(MAX_SEGMENT_DURATION);
        let mut cut = None;
        for frame in 1..=(limit / 3000 + 1) {
            if let Pushed::Written(Some(seg)) = s.push(video(frame * 3000, false)).unwrap() {
                cut = Some(seg);
                break;
            }
        }
        assert_eq!(cut.unwrap().duration, MAX_SEGMENT_DURATION);
        assert!(!s.finish().unwrap().independent);
    }

    #[test]
    fn track_change_ends_segment_and_marks_discontinuity() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, None);
        s.push(video(0, true)).unwrap();
        s.push(video(3000, false)).unwrap();
        let ended = s.set_tracks(true, Some(AudioStream::Adts)).unwrap();
        assert!(!ended.discontinuity);
        assert_eq!(ended.duration.as_millis(), 66);
        s.push(video(6000, true)).unwrap();
        assert!(s.finish().unwrap().discontinuity);
    }

    /// The audio PES packets of `segment`: (PTS without the mux delay, payload).
    fn audio_pes(segment: &Segment) -> Vec<(i64, Vec<u8>)> {
        use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
        use mpeg2ts::ts::TsPacketReader;
        let mut reader = PesPacketReader::new(TsPacketReader::new(&segment.data[..]));
        let mut found = Vec::new();
        while let Some(pes) = reader.read_pes_packet().unwrap() {
            if pes.header.stream_id.as_u8() == mpeg2ts::es::StreamId::AUDIO_MIN {
                let pts = pes.header.pts.unwrap().as_u64() as i64 - MUX_DELAY_TICKS;
                found.push((pts, pes.data));
            }
        }
        found
    }

    fn audio_frame<'a>(dts: i64, data: &'a [&'a [u8]]) -> AccessUnit<'a> {
        AccessUnit { data, ..audio(dts) }
    }

    #[test]
    fn audio_frames_share_pes_packets_up_to_the_byte_limit() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, Some(AudioStream::Adts));
        s.push(video(0, true)).unwrap();
        // 348-byte frames (AAC at 128 kbit/s, 48 kHz): eight fit in 2,930 bytes.
        let frames: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 348]).collect();
        for (i, frame) in frames.iter().enumerate() {
            // Each frame in two pieces, as the remuxer hands over an ADTS header and its payload.
            s.push(audio_frame(i as i64 * 1920, &[&frame[..7], &frame[7..]])).unwrap();
        }
        let pes = audio_pes(&s.finish().unwrap());
        let sizes: Vec<usize> = pes.iter().map(|(_, data)| data.len()).collect();
        assert_eq!(sizes, [8 * 348, 8 * 348, 4 * 348], "the last ones written at the end");
        let starts: Vec<i64> = pes.iter().map(|(pts, _)| *pts).collect();
        assert_eq!(starts, [0, 8 * 1920, 16 * 1920], "each PES has its first frame's PTS");
        let bytes: Vec<u8> = pes.into_iter().flat_map(|(_, data)| data).collect();
        assert_eq!(bytes, frames.concat(), "every byte, in order");
    }

    #[test]
    fn audio_is_held_at_most_the_duration_limit_and_large_frames_go_alone() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(false, Some(AudioStream::Adts));
        // Small frames (a low bitrate) every 1920 ticks: the 200 ms limit (18,000 ticks)
        // cuts before the byte limit, after ten frames.
        for i in 0..12 {
            s.push(audio_frame(i * 1920, &[&[1; 40]])).unwrap();
        }
        let big = vec![2; MAX_AUDIO_PES_PAYLOAD];
        s.push(audio_frame(12 * 1920, &[&big[..7], &big[7..]])).unwrap();
        s.push(audio_frame(13 * 1920, &[&[3; 40]])).unwrap();
        let pes = audio_pes(&s.finish().unwrap());
        let shape: Vec<(i64, usize)> =
            pes.iter().map(|(pts, data)| (*pts / 1920, data.len())).collect();
        assert_eq!(shape, [(0, 400), (10, 80), (12, MAX_AUDIO_PES_PAYLOAD), (13, 40)]);
    }

    #[test]
    fn audio_is_not_held_longer_than_the_limit_in_video_time() {
        use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.set_tracks(true, Some(AudioStream::Adts));
        s.push(video(0, true)).unwrap();
        s.push(audio_frame(0, &[&[5; 300]])).unwrap();
        // Then video only (the audio pauses) for a second.
        for frame in 1..30 {
            s.push(video(frame * 3000, false)).unwrap();
        }
        let segment = s.finish().unwrap();
        // The PES starts in byte order: the audio must come before the first video frame
        // 200 ms (18,000 ticks) after it.
        let mut reader = TsPacketReader::new(&segment.data[..]);
        let mut starts = Vec::new();
        while let Some(packet) = reader.read_ts_packet().unwrap() {
            if let Some(TsPayload::PesStart(pes)) = packet.payload {
                let pts = pes.header.pts.unwrap().as_u64() as i64 - MUX_DELAY_TICKS;
                starts
                    .push((pes.header.stream_id.as_u8() == mpeg2ts::es::StreamId::AUDIO_MIN, pts));
            }
        }
        let audio_at = starts.iter().position(|&(audio, _)| audio).unwrap();
        assert_eq!(starts[audio_at].1, 0);
        assert_eq!(starts[audio_at + 1], (false, 18_000), "{starts:?}");
    }

    #[test]
    fn held_audio_goes_into_the_segment_it_belongs_to() {
        for with_video in [true, false] {
            let mut s = Segmenter::new(Duration::from_secs(2));
            s.set_tracks(with_video, Some(AudioStream::Adts));
            let mut segments = Vec::new();
            let mut pushed_before_cut = Vec::new();
            for frame in 0..150 {
                let dts = frame * 1920;
                if with_video && frame % 25 == 0 {
                    // Keyframes every 48,000 ticks: cuts at 192,000 (frame 100).
                    if let Pushed::Written(Some(seg)) = s.push(video(dts, true)).unwrap() {
                        segments.push(seg);
                    }
                }
                if let Pushed::Written(Some(seg)) = s.push(audio_frame(dts, &[&[7; 100]])).unwrap()
                {
                    segments.push(seg);
                }
                if segments.is_empty() {
                    pushed_before_cut.push(frame);
                }
            }
            segments.extend(s.finish());
            let first: usize = audio_pes(&segments[0]).iter().map(|(_, d)| d.len()).sum();
            let all: usize = segments.iter().flat_map(audio_pes).map(|(_, d)| d.len()).sum();
            // Frames pushed before the cut (by a keyframe, or for audio-only by the frame
            // that starts the next segment) are all in the first segment.
            assert_eq!(first, pushed_before_cut.len() * 100, "video: {with_video}");
            assert_eq!(all, 150 * 100, "video: {with_video}");
        }
    }

    #[test]
    fn tick_conversions() {
        assert_eq!(duration_to_ticks(Duration::from_millis(1500)), 135_000);
        assert_eq!(ticks_to_duration(135_000), Duration::from_millis(1500));
        assert_eq!(ticks_to_duration(-5), Duration::ZERO);
    }
}
