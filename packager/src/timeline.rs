//! RTMP's 32-bit millisecond timestamps, unwrapped into one monotonic-enough 64-bit timeline.
//!
//! RTMP (and FLV) timestamps wrap every 2^32 ms (about 49.7 days). Audio and video share the
//! clock and may arrive slightly out of order, so each timestamp is read as the signed 32-bit
//! distance from the previous one (RFC 1982-style serial arithmetic).

/// How far from zero the timeline may go, in milliseconds (about 142,000 years: a stream
/// wrapping every 49.7 days never gets there). A publisher can move it up to 2^31 ms per
/// message, so without a bound some 48 million empty messages would overflow the 90 kHz
/// ticks made from it; past the bound it starts again at the raw timestamp, which the
/// remuxer takes for a timeline break.
pub const MAX_WIDENED_MS: i64 = 1 << 52;

/// Unwraps 32-bit millisecond timestamps.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    last: Option<(u32, i64)>,
}

impl Timeline {
    /// A timeline that starts at the first timestamp it sees.
    pub fn new() -> Self {
        Self::default()
    }

    /// The unwrapped value of `raw`, in milliseconds.
    pub fn widen(&mut self, raw: u32) -> i64 {
        let value = match self.last {
            None => i64::from(raw),
            Some((last_raw, last)) => last + i64::from(raw.wrapping_sub(last_raw) as i32),
        };
        let value = if value.abs() > MAX_WIDENED_MS { i64::from(raw) } else { value };
        self.last = Some((raw, value));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward_past_u32_max() {
        let mut t = Timeline::new();
        assert_eq!(t.widen(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(t.widen(5), i64::from(u32::MAX) + 6);
        assert_eq!(t.widen(40), i64::from(u32::MAX) + 41);
    }

    #[test]
    fn a_timeline_driven_past_its_bound_starts_again() {
        let mut t = Timeline::new();
        let mut raw = 0u32;
        let mut value = t.widen(raw);
        // 2^31 - 1 ms forward each time, until past the bound.
        while value <= MAX_WIDENED_MS - i64::from(i32::MAX) {
            raw = raw.wrapping_add(i32::MAX as u32);
            let next = t.widen(raw);
            assert_eq!(next, value + i64::from(i32::MAX));
            value = next;
        }
        raw = raw.wrapping_add(i32::MAX as u32);
        assert_eq!(t.widen(raw), i64::from(raw));
        assert_eq!(t.widen(raw.wrapping_add(40)), i64::from(raw) + 40, "and goes on from there");
    }

    #[test]
    fn small_backward_steps_stay_backward() {
        let mut t = Timeline::new();
        assert_eq!(t.widen(1000), 1000);
        assert_eq!(t.widen(980), 980);
        assert_eq!(t.widen(3), 3);
        assert_eq!(t.widen(u32::MAX), -1);
    }
}
