//! What one step measures, in fixed memory: log-linear histograms of durations (any run
//! length, ~1.6 % resolution), counters, and errors by kind. Tasks record into the current
//! step's [`StepStats`]; the driver takes it at the end of the step.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Exact buckets below this many microseconds, then this many buckets per power of two:
/// a bucket is at most 1/32 of its value wide, so a reported quantile is within 1.6 %.
const SUB_BUCKETS: u64 = 32;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Largest duration kept apart, in microseconds (2^36 µs ≈ 19 hours); longer ones are
/// counted in the last bucket.
const MAX_EXPONENT: u32 = 36;
const BUCKETS: usize = ((MAX_EXPONENT - SUB_BITS + 2) as usize) * SUB_BUCKETS as usize;

/// A histogram of durations.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS].into(), count: 0, sum_us: 0, min_us: u64::MAX, max_us: 0 }
    }
}

fn bucket_of(us: u64) -> usize {
    let us = us.min((1 << (MAX_EXPONENT + 1)) - 1);
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros();
    let mantissa = (us >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
    ((exponent - SUB_BITS + 1) as u64 * SUB_BUCKETS + mantissa) as usize
}

/// The middle of bucket `index`, in microseconds.
fn bucket_middle(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let exponent = (index / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    let mantissa = index % SUB_BUCKETS;
    let width = 1u64 << (exponent - SUB_BITS);
    ((SUB_BUCKETS + mantissa) << (exponent - SUB_BITS)) + width / 2
}

impl Histogram {
    pub(crate) fn record(&mut self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// The `q` quantile (0..=1) in microseconds, or `None` when empty.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_middle(index).clamp(self.min_us, self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub(crate) fn summary(&self) -> Summary {
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
        Summary {
            count: self.count,
            p50_ms: ms(self.quantile_us(0.5)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms((self.count > 0).then_some(self.max_us)),
            mean_ms: ms(self.sum_us.checked_div(self.count)),
        }
    }
}

/// Quantiles of a histogram, in milliseconds (`null` when nothing was measured).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) mean_ms: Option<f64>,
}

/// Everything one step measures but CPU and memory (sampled by the driver).
#[derive(Debug, Default)]
pub(crate) struct StepStats {
    /// Playlist gains a segment, minus the send of the keyframe that closed it.
    pub(crate) packaging_delay: Histogram,
    /// Viewers' playlist GETs, request written to body read.
    pub(crate) playlist_fetch: Histogram,
    /// Viewers' segment GETs, request written to body read.
    pub(crate) segment_fetch: Histogram,
    /// Low-latency viewers: a part's last byte received, minus the instant the publisher's
    /// clock had its last video frame due.
    pub(crate) part_latency: Histogram,
    /// Low-latency viewers' part GETs, request written to last byte read (a hinted part is
    /// sent when it is complete, so about a part's duration).
    pub(crate) part_fetch: Histogram,
    /// Low-latency viewers' blocking playlist reloads, request written to body read: the
    /// time the server held them.
    pub(crate) blocked_reload: Histogram,
    /// Publishers' wake-ups after their scheduled time: the generator's own scheduling lag.
    pub(crate) wake_late: Histogram,
    /// Publishers' writes done after their due time: scheduling plus the server's backpressure.
    pub(crate) send_lag: Histogram,
    pub(crate) playlists_fetched: u64,
    pub(crate) segments_fetched: u64,
    pub(crate) bytes_fetched: u64,
    pub(crate) parts_fetched: u64,
    pub(crate) part_bytes_fetched: u64,
    /// Parts received whose latency is unknown: no video sample, or its decode time unknown.
    pub(crate) parts_untimed: u64,
    /// Parts received before their last video frame was due (a publisher sends up to its
    /// batch window early): counted in `part_latency` as 0.
    pub(crate) parts_early: u64,
    /// Segments whose end matched no keyframe sent, so not timed.
    pub(crate) delay_unmatched: u64,
    /// Counted from the start of the step, warm-up included.
    pub(crate) errors: BTreeMap<&'static str, u64>,
}

impl StepStats {
    pub(crate) fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Starts the measurement window: clears everything but errors.
    pub(crate) fn start_window(&mut self) {
        let errors = std::mem::take(&mut self.errors);
        *self = Self { errors, ..Self::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_resolution() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_us(0.5).unwrap() as f64;
        let p99 = h.quantile_us(0.99).unwrap() as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.summary().max_ms, Some(1000.0));
        assert_eq!(h.summary().count, 1000);
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_middle_is_close() {
        for us in (0..5000).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 2]) {
            let index = bucket_of(us);
            assert!(index < BUCKETS);
            let middle = bucket_middle(index) as f64;
            let kept = us.min((1 << (MAX_EXPONENT + 1)) - 1) as f64;
            assert!((middle - kept).abs() <= kept / 32.0 + 0.5, "{us}: {middle}");
        }
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        assert_eq!(Histogram::default().summary(), Summary::default());
    }

    #[test]
    fn the_window_keeps_the_step_errors() {
        let mut s = StepStats::default();
        s.error("http_status");
        s.segments_fetched = 3;
        s.start_window();
        assert_eq!(s.segments_fetched, 0);
        assert_eq!(s.errors.get("http_status"), Some(&1));
    }
}
