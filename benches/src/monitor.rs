//! One stream's monitor: times packaging delay and notices a stream falling behind.
//!
//! Packaging delay of a segment = the moment the playlist first lists it, minus the moment
//! the publisher sent the keyframe that closed it (the first frame after the segment's last
//! media; servers cut segments when that keyframe arrives). The segment's end is found by
//! adding EXTINF durations to the previous segment's end and snapping to the nearest keyframe
//! sent (so EXTINF rounding never accumulates); the first listed segment starts at the
//! stream's first keyframe. After each keyframe the monitor polls the playlist quickly
//! ([`FIRST_POLL`], then intervals growing by [`POLL_GROWTH`]), so a delay is an upper bound
//! at most a quarter above the truth (2 ms resolution near zero); otherwise it polls every
//! half target duration, as a player reloads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::http::Client;
use crate::playlist;
use crate::publisher::KeyframeSent;
use crate::shared::Shared;

/// First playlist poll after a keyframe leaves: both servers publish a segment within a
/// millisecond or two of the keyframe that closes it when idle, so start just after that.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// Each following poll waits this much longer than the previous one, so a slow server gets
/// a few polls per segment, not dozens, and the resolution stays a fixed fraction of the delay.
const POLL_GROWTH: f64 = 1.25;
/// Keyframes remembered to match segment ends: two minutes of 2 s GOPs, far beyond any delay
/// a stream that has not fallen behind can have.
const KEYFRAME_RING: usize = 64;
/// A segment end this far from every remembered keyframe is not timed (counted as unmatched).
const SNAP_TOLERANCE_MS: f64 = 500.0;
/// Packaging delay above which a segment is late (the threshold).
pub(crate) const LATE_DELAY: Duration = Duration::from_secs(2);
/// Consecutive late segments that make a stream behind: one late segment on a shared VM is
/// noise (it is in the p99 anyway); two in a row is a trend.
const LATE_SEGMENTS_BEHIND: u32 = 2;
/// Target durations without a new segment that make a stream behind (the threshold).
const STALL_TARGET_DURATIONS: f64 = 2.0;
/// Time from the first keyframe sent to the first segment listed before a stream counts as
/// behind: one segment (2 s) plus generous slack for a server that opens its playlist late.
const FIRST_SEGMENT_LIMIT: Duration = Duration::from_secs(10);
/// Reload interval before the playlist's target duration is known.
pub(crate) const DEFAULT_RELOAD: Duration = Duration::from_secs(1);
/// Time one playlist request may take.
pub(crate) const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// Initial playlist buffer.
const PLAYLIST_CAPACITY: usize = 4096;

pub(crate) struct Monitor {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) keyframes: mpsc::Receiver<KeyframeSent>,
}

/// Where the monitor is in the stream.
struct Position {
    /// Last segment timed.
    last_seq: Option<u64>,
    /// End of that segment, ms of stream time.
    end_ms: f64,
    late_in_a_row: u32,
}

impl Monitor {
    pub(crate) async fn run(mut self) {
        let stream = &self.shared.streams[self.index];
        let mut client = Client::new(&stream.host);
        let mut body = Vec::with_capacity(PLAYLIST_CAPACITY);
        let mut ring: VecDeque<KeyframeSent> = VecDeque::with_capacity(KEYFRAME_RING);
        let mut position = Position { last_seq: None, end_ms: 0.0, late_in_a_row: 0 };
        let mut reload = DEFAULT_RELOAD;
        let mut target_duration = None;
        let mut first_keyframe: Option<Instant> = None;
        let mut last_advance: Option<Instant> = None;
        let mut fast: Option<Duration> = None;
        let mut next_poll = Instant::now() + reload;
        loop {
            tokio::select! {
                biased;
                keyframe = self.keyframes.recv() => {
                    let Some(keyframe) = keyframe else {
                        // The publisher is gone; it has marked the stream.
                        return;
                    };
                    first_keyframe.get_or_insert(keyframe.at);
                    if ring.len() == KEYFRAME_RING {
                        ring.pop_front();
                    }
                    ring.push_back(keyframe);
                    fast = Some(FIRST_POLL);
                    next_poll = next_poll.min(keyframe.at + FIRST_POLL);
                }
                () = sleep_until(next_poll) => {
                    let advanced = self
                        .poll(&mut client, &mut body, &ring, &mut position, &mut target_duration)
                        .await;
                    let now = Instant::now();
                    if advanced {
                        last_advance = Some(now);
                        fast = None;
                    } else if let Some(interval) = fast {
                        let grown = interval.mul_f64(POLL_GROWTH);
                        fast = (grown < reload).then_some(grown);
                    }
                    if let Some(target) = target_duration {
                        reload = Duration::from_secs_f64(target / 2.0);
                    }
                    next_poll = now + fast.unwrap_or(reload);
                    self.check_stall(now, first_keyframe, last_advance, target_duration);
                }
            }
        }
    }

    /// Fetches the playlist and times its new segments; returns whether there were any.
    async fn poll(
        &self,
        client: &mut Client,
        body: &mut Vec<u8>,
        ring: &VecDeque<KeyframeSent>,
        position: &mut Position,
        target_duration: &mut Option<f64>,
    ) -> bool {
        let stream = &self.shared.streams[self.index];
        let response = client.get(&stream.playlist_path, Some(body), REQUEST_LIMIT).await;
        let seen = Instant::now();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.shared.error(e.kind());
                return false;
            }
        };
        if response.status == 404 && position.last_seq.is_none() {
            return false; // not live yet
        }
        if response.status != 200 {
            self.shared.error(if response.status == 404 {
                "playlist_404"
            } else {
                "playlist_status"
            });
            return false;
        }
        let Some(list) = std::str::from_utf8(body).ok().and_then(playlist::parse) else {
            self.shared.error("playlist_malformed");
            return false;
        };
        *target_duration = Some(list.target_duration);
        let mut advanced = false;
        for segment in &list.segments {
            if position.last_seq.is_some_and(|last| segment.seq <= last) {
                continue;
            }
            if position.last_seq.is_some_and(|last| segment.seq > last + 1) {
                // Segments came and went between two polls: nothing to anchor on but the
                // keyframes, which the snap below uses.
                self.shared.error("monitor_missed_segments");
            }
            advanced = true;
            // Segments missed between two polls were cut on the same GOP: count them at this
            // one's duration, so the estimate still lands near the right keyframe.
            let missed = position.last_seq.map_or(0, |last| segment.seq.saturating_sub(last + 1));
            let estimate = position.end_ms + segment.duration_ms * (missed + 1) as f64;
            let nearest = ring.iter().min_by(|a, b| {
                (a.ts_ms as f64 - estimate).abs().total_cmp(&(b.ts_ms as f64 - estimate).abs())
            });
            let mut stats = self.shared.stats();
            match nearest {
                Some(k) if (k.ts_ms as f64 - estimate).abs() <= SNAP_TOLERANCE_MS => {
                    let delay = seen.saturating_duration_since(k.at);
                    stats.packaging_delay.record(delay);
                    position.end_ms = k.ts_ms as f64;
                    position.late_in_a_row =
                        if delay > LATE_DELAY { position.late_in_a_row + 1 } else { 0 };
                }
                _ => {
                    stats.delay_unmatched += 1;
                    position.end_ms = estimate;
                }
            }
            drop(stats);
            position.last_seq = Some(segment.seq);
            let mut status = stream.status();
            status.window_segments += 1;
        }
        if position.late_in_a_row >= LATE_SEGMENTS_BEHIND {
            stream.mark_behind(format!(
                "{LATE_SEGMENTS_BEHIND} segments in a row later than {LATE_DELAY:?}"
            ));
        }
        if list.ended {
            stream.mark_behind("playlist ended (EXT-X-ENDLIST)".into());
        }
        advanced
    }

    fn check_stall(
        &self,
        now: Instant,
        first_keyframe: Option<Instant>,
        last_advance: Option<Instant>,
        target_duration: Option<f64>,
    ) {
        let stream = &self.shared.streams[self.index];
        match (first_keyframe, last_advance, target_duration) {
            (Some(first), None, _) if now.duration_since(first) > FIRST_SEGMENT_LIMIT => {
                stream.mark_behind(format!("no segment {FIRST_SEGMENT_LIMIT:?} after publishing"));
            }
            (_, Some(last), Some(target))
                if now.duration_since(last).as_secs_f64() > STALL_TARGET_DURATIONS * target =>
            {
                stream.mark_behind(format!(
                    "playlist did not advance for {:.1} s (target duration {target} s)",
                    now.duration_since(last).as_secs_f64()
                ));
            }
            _ => {}
        }
    }
}
