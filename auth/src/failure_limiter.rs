//! Rate limiting of failed publish attempts per remote IP: a token bucket each, so a client
//! guessing keys is refused before any key-store lookup once its bucket is empty. The table
//! holds at most [`MAX_TRACKED_IPS`] addresses, so its memory is bounded however many
//! addresses try.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed attempts an address may make in a burst.
pub const FAILURE_BURST: u32 = 10;
/// Failed attempts an address regains per minute after the burst.
pub const FAILURES_PER_MINUTE: u32 = 10;
/// Addresses tracked at once. Beyond it, addresses whose bucket has refilled are forgotten
/// first; if all are still limited, the oldest half is.
pub const MAX_TRACKED_IPS: usize = 65_536;

/// Settings of a [`FailureLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// See [`FAILURE_BURST`].
    pub burst: u32,
    /// See [`FAILURES_PER_MINUTE`].
    pub per_minute: u32,
}

impl Default for FailureLimits {
    fn default() -> Self {
        Self { burst: FAILURE_BURST, per_minute: FAILURES_PER_MINUTE }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-address token buckets of failed attempts.
#[derive(Debug)]
pub struct FailureLimiter {
    limits: FailureLimits,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    max_tracked: usize,
}

impl FailureLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: FailureLimits) -> Self {
        Self { limits, buckets: Mutex::new(HashMap::new()), max_tracked: MAX_TRACKED_IPS }
    }

    /// Whether `ip` may attempt a publish now (its bucket is not empty).
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.get_mut(&ip).is_none_or(|bucket| self.refill(bucket, now) >= 1.0)
    }

    /// Takes an attempt from `ip`'s bucket if it holds one: the attempt counts as failed
    /// from its start, so attempts in flight at once (each waiting for its lookup) cannot
    /// pass more than the bucket holds. [`Self::refund`] gives it back if it did not fail.
    pub fn take(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (bucket, tokens) = self.tracked_bucket(&mut buckets, ip, now);
        if tokens < 1.0 {
            return false;
        }
        bucket.tokens = tokens - 1.0;
        true
    }

    /// Gives back an attempt [`Self::take`] took from `ip` that did not fail.
    pub fn refund(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&ip) {
            let tokens = self.refill(bucket, now);
            bucket.tokens = (tokens + 1.0).min(f64::from(self.limits.burst));
        }
    }

    /// Records a failed attempt from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (bucket, tokens) = self.tracked_bucket(&mut buckets, ip, now);
        bucket.tokens = (tokens - 1.0).max(0.0);
    }

    /// `ip`'s bucket, refilled to `now`, and its tokens; a new address gets a full one (room
    /// made for it first when the table is full).
    fn tracked_bucket<'a>(
        &self,
        buckets: &'a mut HashMap<IpAddr, Bucket>,
        ip: IpAddr,
        now: Instant,
    ) -> (&'a mut Bucket, f64) {
        if !buckets.contains_key(&ip) && buckets.len() >= self.max_tracked {
            self.make_room(buckets, now);
        }
        let burst = f64::from(self.limits.burst);
        let bucket = buckets.entry(ip).or_insert(Bucket { tokens: burst, updated: now });
        let tokens = self.refill(bucket, now);
        (bucket, tokens)
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let rate = f64::from(self.limits.per_minute) / 60.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.limits.burst));
        bucket.updated = now;
        bucket.tokens
    }

    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = f64::from(self.limits.burst);
        buckets.retain(|_, bucket| self.refill(bucket, now) < burst);
        if buckets.len() >= self.max_tracked {
            let mut ages: Vec<(Instant, IpAddr)> =
                buckets.iter().map(|(ip, b)| (b.updated, *ip)).collect();
            ages.sort_unstable();
            for (_, ip) in ages.iter().take(ages.len() / 2 + 1) {
                buckets.remove(ip);
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// How long an address that used its burst waits for one more attempt.
pub fn refill_interval(limits: FailureLimits) -> Duration {
    Duration::from_secs_f64(60.0 / f64::from(limits.per_minute.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_then_refusals_then_refills() {
        let limiter = FailureLimiter::new(FailureLimits { burst: 3, per_minute: 6 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(ip(1), t0));
            limiter.record_failure(ip(1), t0);
        }
        assert!(!limiter.allows(ip(1), t0));
        assert!(limiter.allows(ip(2), t0), "another address is not affected");
        let later = t0 + refill_interval(FailureLimits { burst: 3, per_minute: 6 });
        assert!(limiter.allows(ip(1), later));
    }

    #[test]
    fn attempts_are_taken_at_their_start_and_refunded_unless_they_fail() {
        let limiter = FailureLimiter::new(FailureLimits { burst: 3, per_minute: 6 });
        let t0 = Instant::now();
        let taken = (0..10).filter(|_| limiter.take(ip(1), t0)).count();
        assert_eq!(taken, 3, "attempts in flight at once pass no more than the burst");
        limiter.refund(ip(1), t0);
        assert!(limiter.take(ip(1), t0), "a refunded attempt is there again");
        assert!(!limiter.take(ip(1), t0));
        for _ in 0..10 {
            limiter.refund(ip(1), t0);
        }
        assert_eq!((0..10).filter(|_| limiter.take(ip(1), t0)).count(), 3, "never past the burst");
    }

    #[test]
    fn memory_is_bounded_however_many_addresses_fail() {
        let limiter =
            FailureLimiter { max_tracked: 1000, ..FailureLimiter::new(FailureLimits::default()) };
        let t0 = Instant::now();
        for n in 0..50_000 {
            limiter.record_failure(ip(n), t0);
            assert!(limiter.tracked() <= 1000);
        }
        // The most recent offenders are still remembered.
        for _ in 0..FAILURE_BURST {
            limiter.record_failure(ip(49_999), t0);
        }
        assert!(!limiter.allows(ip(49_999), t0));
    }
}
