//! Per-publish accounting: bytes and frames received, segments made, and the rates derived
//! from them. One formula ([`Rates::over`]) serves the `stream_stats` events, the status the
//! stats API shows and the `publish_stopped` event, each over its own window.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::metrics::StreamCounters;

/// Shortest span a status refresh computes rates over (segments can be closer together).
pub const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);

/// Bits and video frames per second over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Bits per second.
    pub bitrate_bps: u64,
    /// Video frames per second, to two decimals.
    pub fps: f64,
}

impl Rates {
    /// The rates of `bytes` and `frames` over `span`; zero for an empty span.
    pub fn over(bytes: u64, frames: u64, span: Duration) -> Self {
        let seconds = span.as_secs_f64();
        if seconds <= 0.0 {
            return Self::default();
        }
        Self {
            bitrate_bps: (bytes as f64 * 8.0 / seconds) as u64,
            fps: (frames as f64 / seconds * 100.0).round() / 100.0,
        }
    }
}

/// The counters at one instant, from which rates since then follow.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    bytes: u64,
    video_frames: u64,
}

impl Mark {
    fn rates_until(&self, now: Instant, bytes: u64, video_frames: u64) -> Rates {
        Rates::over(
            bytes.saturating_sub(self.bytes),
            video_frames.saturating_sub(self.video_frames),
            now.saturating_duration_since(self.at),
        )
    }
}

/// What one publish has received and made, with the marks its two rate windows start at.
#[derive(Debug)]
pub(crate) struct Accounting {
    /// Bytes received since the publish began.
    bytes: u64,
    /// Segments published.
    segments: u64,
    /// This stream's series in the metrics, and the server's segment counter.
    counters: StreamCounters,
    segment_counter: Counter,
    /// Where the current `stream_stats` window began, and when it is due.
    stats_mark: Mark,
    next_stats: Instant,
    /// Where the current status window began.
    status_mark: Mark,
}

impl Accounting {
    /// Accounting for a publish accepted at `now`, whose first stats are due after `interval`.
    pub(crate) fn new(
        counters: StreamCounters,
        segment_counter: Counter,
        now: Instant,
        interval: Duration,
    ) -> Self {
        let mark = Mark { at: now, bytes: 0, video_frames: 0 };
        Self {
            bytes: 0,
            segments: 0,
            counters,
            segment_counter,
            stats_mark: mark,
            next_stats: now + interval,
            status_mark: mark,
        }
    }

    /// Bytes received since the publish began.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments published.
    pub(crate) fn segments(&self) -> u64 {
        self.segments
    }

    /// When the next `stream_stats` is due.
    pub(crate) fn next_stats(&self) -> Instant {
        self.next_stats
    }

    /// `n` bytes arrived from the publisher.
    pub(crate) fn received(&mut self, n: usize) {
        self.bytes += n as u64;
        self.counters.bytes.inc_by(n as u64);
    }

    /// A media message arrived.
    pub(crate) fn frame(&mut self) {
        self.counters.frames.inc();
    }

    /// A segment was published.
    pub(crate) fn segment(&mut self) {
        self.segments += 1;
        self.segment_counter.inc();
    }

    /// The rates since the last `stream_stats` (or the start); starts the next window and
    /// schedules it `interval` from `now`.
    pub(crate) fn stats_window(
        &mut self,
        now: Instant,
        video_frames: u64,
        interval: Duration,
    ) -> Rates {
        let rates = self.stats_mark.rates_until(now, self.bytes, video_frames);
        self.stats_mark = Mark { at: now, bytes: self.bytes, video_frames };
        self.next_stats = now + interval;
        rates
    }

    /// The rates since the last status window, if it lasted at least [`MIN_RATE_WINDOW`]
    /// (then the next window starts at `now`).
    pub(crate) fn status_window(&mut self, now: Instant, video_frames: u64) -> Option<Rates> {
        if now.saturating_duration_since(self.status_mark.at) < MIN_RATE_WINDOW {
            return None;
        }
        let rates = self.status_mark.rates_until(now, self.bytes, video_frames);
        self.status_mark = Mark { at: now, bytes: self.bytes, video_frames };
        Some(rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_empty_spans_are_zero() {
        let rates = Rates::over(250_000, 60, Duration::from_secs(2));
        assert_eq!(rates, Rates { bitrate_bps: 1_000_000, fps: 30.0 });
        assert_eq!(Rates::over(1, 1, Duration::ZERO), Rates::default());
        assert_eq!(Rates::over(0, 2, Duration::from_secs(3)).fps, 0.67);
    }

    #[test]
    fn windows_start_where_the_last_one_ended() {
        let t0 = Instant::now();
        let counters = StreamCounters::default();
        let mut accounting =
            Accounting::new(counters.clone(), Counter::default(), t0, Duration::from_secs(10));
        accounting.received(125_000);
        accounting.frame();
        let first =
            accounting.stats_window(t0 + Duration::from_secs(1), 30, Duration::from_secs(10));
        assert_eq!(first, Rates { bitrate_bps: 1_000_000, fps: 30.0 });
        assert_eq!(accounting.next_stats(), t0 + Duration::from_secs(11));
        accounting.received(62_500);
        let second =
            accounting.stats_window(t0 + Duration::from_secs(2), 45, Duration::from_secs(10));
        assert_eq!(second, Rates { bitrate_bps: 500_000, fps: 15.0 });
        // The status window is its own, and waits for at least MIN_RATE_WINDOW.
        assert_eq!(accounting.status_window(t0 + Duration::from_millis(499), 30), None);
        let status = accounting.status_window(t0 + Duration::from_secs(2), 60).unwrap();
        assert_eq!(status, Rates { bitrate_bps: 750_000, fps: 30.0 });
        assert_eq!(accounting.bytes(), 187_500);
        assert_eq!((counters.bytes.get(), counters.frames.get()), (187_500, 1));
    }
}
