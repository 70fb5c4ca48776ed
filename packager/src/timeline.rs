//! RTMP's 32-bit millisecond timestamps, unwrapped into one monotonic-enough 64-bit timeline.
//!
//! RTMP (and FLV) timestamps wrap every 2^32 ms (about 49.7 days). Audio and video share the
//! clock and may arrive slightly out of order, so each timestamp is read as the signed 32-bit
//! distance from the previous one (RFC 1982-style serial arithmetic).

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
    fn small_backward_steps_stay_backward() {
        let mut t = Timeline::new();
        assert_eq!(t.widen(1000), 1000);
        assert_eq!(t.widen(980), 980);
        assert_eq!(t.widen(3), 3);
        assert_eq!(t.widen(u32::MAX), -1);
    }
}
