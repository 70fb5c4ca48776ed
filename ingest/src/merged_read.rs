//! Merged reads: how long a publisher's socket may rest between reads.
//!
//! An encoder sends ~80 RTMP messages a second per 720p30 stream; reading each as it arrives
//! costs a task wake-up and a `recv` per message, which was the largest share of the
//! server's CPU under load (BENCHMARKS.md). SRS's "merged read" (`mr`) sleeps between reads
//! to take several messages at once, at the price of that much latency on every message.
//!
//! Here the pause is taken only where it does not delay a segment: HLS viewers see media only
//! when a segment closes, and the segmenter cuts at the first keyframe after the target
//! duration, so while the open segment still needs more media than the pause plus a guard,
//! no message a real-time publisher sends during the pause can close it. Near a cut, and
//! whenever the last read took half the read buffer or more (a backlog, or a fast stream),
//! reads are immediate again. What is not foreseen, and may then wait up to one pause: a
//! publisher sending well ahead of real time, a timestamp jump short of a timeline break, a
//! forced cut (`MAX_SEGMENT_BYTES`). Once a segment has reached the target duration and
//! waits for a keyframe (long GOPs), every read is immediate, so streams with GOPs longer
//! than the target rest less.

use std::time::Duration;

/// Default longest pause. 50 ms at a 2.6 Mbit/s stream is ~17 KB waiting in the socket,
/// well inside the kernel's receive buffer, and cuts wake-ups from ~80 to ~20 a second;
/// SRS's `mr_latency` default is 350 ms.
pub const DEFAULT_MAX_READ_PAUSE: Duration = Duration::from_millis(50);
/// Media time kept in hand before a possible cut: reads turn immediate this long before the
/// earliest keyframe that could close the segment, which absorbs an encoder sending ahead of
/// its timestamps (interleaving, send bursts) by up to this much.
pub const CUT_GUARD: Duration = Duration::from_millis(150);
/// Pauses shorter than this are not worth a timer.
pub const MIN_READ_PAUSE: Duration = Duration::from_millis(5);

/// The pause before the next read, given the media time left before the open segment can be
/// cut (`None`: unknown, read at once) and the configured longest pause (zero disables).
pub fn pause(time_to_cut: Option<Duration>, max_pause: Duration) -> Option<Duration> {
    let pause = time_to_cut?.checked_sub(CUT_GUARD)?.min(max_pause);
    (pause >= MIN_READ_PAUSE).then_some(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_up_to_the_maximum_while_the_cut_is_far() {
        assert_eq!(pause(Some(1900 * MS), DEFAULT_MAX_READ_PAUSE), Some(DEFAULT_MAX_READ_PAUSE));
    }

    #[test]
    fn pause_shrinks_to_keep_the_guard_before_the_cut() {
        assert_eq!(pause(Some(CUT_GUARD + 20 * MS), DEFAULT_MAX_READ_PAUSE), Some(20 * MS));
    }

    #[test]
    fn reads_at_once_near_the_cut_or_when_it_cannot_be_foreseen() {
        assert_eq!(pause(Some(CUT_GUARD), DEFAULT_MAX_READ_PAUSE), None);
        assert_eq!(pause(Some(CUT_GUARD + MIN_READ_PAUSE - MS), DEFAULT_MAX_READ_PAUSE), None);
        assert_eq!(pause(Some(Duration::ZERO), DEFAULT_MAX_READ_PAUSE), None);
        assert_eq!(pause(None, DEFAULT_MAX_READ_PAUSE), None);
    }

    #[test]
    fn zero_maximum_disables_pauses() {
        assert_eq!(pause(Some(1900 * MS), Duration::ZERO), None);
    }
}
