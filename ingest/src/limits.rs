//! The RTMP side's limits, each with the reason for its default, and the log budget that
//! keeps refusals from flooding the log. [`crate::admission`] enforces the connection
//! limits.
//!
//! Every limit here is configurable (`rtmp-hls --help`); the per-message limits of the
//! protocol itself are constants in [`rtmp::chunk`] and [`rtmp::session`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Open RTMP connections, all peers together. Each costs a task, its socket's kernel buffers
/// and up to the chunk layer's buffer limit (reads go into its thread's buffer); Nginx's
/// default `worker_connections` is 1024.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open RTMP connections from one address (an IPv6 /64, see [`auth::address`]): an encoder
/// uses one; a studio with many encoders behind one NAT stays well under this.
pub const MAX_CONNECTIONS_PER_IP: usize = 32;
/// Open connections not granted a publish yet (handshaking, or between `connect` and the
/// decision). Real encoders spend well under a second there; the rest of
/// [`MAX_CONNECTIONS`] is kept for publishers, so idle or half-open connections from any
/// number of addresses cannot hold every place. When this many wait, the next connection
/// takes the place of one of them (see [`crate::admission`]).
pub const MAX_UNAUTHENTICATED: usize = 256;
/// New RTMP connections one address may open per minute, after a burst of
/// [`NEW_CONNECTION_BURST_PER_IP`]: an encoder reconnects every few seconds at most. Without
/// it, connections that are evicted (see [`MAX_UNAUTHENTICATED`]) come straight back, and a
/// flood from many addresses churns fast enough to sweep a publisher's new connection out
/// before it gets through its handshake. 0: no limit.
pub const NEW_CONNECTIONS_PER_IP_PER_MINUTE: u32 = 120;
/// See [`NEW_CONNECTIONS_PER_IP_PER_MINUTE`].
pub const NEW_CONNECTION_BURST_PER_IP: u32 = 16;
/// Streams live at once: the memory of each is its playlist window of segments.
pub const MAX_STREAMS: usize = 256;
/// From TCP accept to the end of the handshake. Real clients need one round trip.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// From TCP accept to the publish request (connect, createStream, publish): encoders send
/// them within a round trip or two of the handshake.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// A publishing client that sends no audio or video for this long is dropped and its stream
/// ended (pings and metadata do not count).
pub const NO_MEDIA_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the key store may take to answer; the publish is refused after that.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one write to a client may block: a client that stops reading is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the RTMP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// See [`MAX_UNAUTHENTICATED`].
    pub max_unauthenticated: usize,
    /// See [`NEW_CONNECTIONS_PER_IP_PER_MINUTE`].
    pub new_connections_per_ip_per_minute: u32,
    /// IPv6 addresses are counted per prefix of this many bits ([`auth::address::group`]).
    pub ipv6_prefix: u8,
    /// See [`MAX_STREAMS`].
    pub max_streams: usize,
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`PUBLISH_TIMEOUT`].
    pub publish_timeout: Duration,
    /// See [`NO_MEDIA_TIMEOUT`].
    pub no_media_timeout: Duration,
    /// See [`AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// See [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            max_unauthenticated: MAX_UNAUTHENTICATED,
            new_connections_per_ip_per_minute: NEW_CONNECTIONS_PER_IP_PER_MINUTE,
            ipv6_prefix: auth::address::IPV6_PREFIX,
            max_streams: MAX_STREAMS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            publish_timeout: PUBLISH_TIMEOUT,
            no_media_timeout: NO_MEDIA_TIMEOUT,
            auth_timeout: AUTH_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// Publish refusals reported (a `publish_rejected` event and a log line) per address group
/// per [`REJECTION_WINDOW`]; past it they are counted in the metrics only, so one client
/// retrying a bad key cannot fill the log or the event stream.
pub const REJECTIONS_REPORTED_PER_ADDRESS: u32 = 10;
/// See [`REJECTIONS_REPORTED_PER_ADDRESS`].
pub const REJECTION_WINDOW: Duration = Duration::from_secs(60);
/// `publish_rejected` events sent per [`REJECTION_WINDOW`] over all addresses (past it they
/// are counted in the metrics only): the per-address budget alone lets a client holding many
/// addresses (an IPv6 /48 is 65,536 groups) fill the event stream, whose queue real
/// streams' lifecycle events share.
pub const REJECTIONS_REPORTED: u64 = 600;
/// Addresses whose refusals are tracked at once; past it, refusals from addresses not
/// tracked are counted only, until windows expire.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Lets through at most `per_window` reports per window for each address.
#[derive(Debug)]
pub struct PerAddressBudget {
    per_window: u32,
    window: Duration,
    seen: Mutex<Seen>,
}

/// The addresses reported on, each with its window's start and count.
#[derive(Debug, Default)]
struct Seen {
    windows: HashMap<IpAddr, (Instant, u32)>,
    /// While the table is full: no window of it ends before this, so a refusal from an
    /// address not tracked costs no scan of the table until then.
    full_until: Option<Instant>,
}

impl PerAddressBudget {
    /// A budget of `per_window` per `window` for each address.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self { per_window, window, seen: Mutex::default() }
    }

    /// Whether a report for `address` (a group: [`auth::address::group`]) may go out at
    /// `now`.
    pub fn allow(&self, address: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Seen { windows, full_until } = &mut *seen;
        if windows.len() >= MAX_TRACKED_ADDRESSES && !windows.contains_key(&address) {
            if full_until.is_some_and(|until| now < until) {
                return false;
            }
            let window = self.window;
            windows.retain(|_, (since, _)| now.saturating_duration_since(*since) < window);
            if windows.len() >= MAX_TRACKED_ADDRESSES {
                // Windows only move later, so the earliest end now is a safe bound.
                *full_until = windows.values().map(|(since, _)| *since + window).min();
                return false;
            }
        }
        let (since, count) = windows.entry(address).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= self.window {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        *count <= self.per_window
    }
}

/// Lets through at most `per_window` events per window and counts the rest, so a flood of
/// bad connections cannot flood the log.
#[derive(Debug)]
pub struct LogBudget {
    per_window: u64,
    window: Duration,
    state: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_window` lines per `window`.
    pub fn new(per_window: u64, window: Duration) -> Self {
        Self {
            per_window,
            window,
            state: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log this event.
    pub fn allow(&self) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(state.0) >= self.window {
            *state = (now, 0);
        }
        if state.1 >= self.per_window {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            // The count goes one past the budget to remember the notice was given.
            let first = state.1 == self.per_window;
            state.1 = self.per_window + 1;
            return if first { Verdict::FirstSuppressed } else { Verdict::Suppressed };
        }
        state.1 += 1;
        Verdict::Log { suppressed: self.suppressed.swap(0, Ordering::Relaxed) }
    }
}

/// What [`LogBudget::allow`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were counted, not logged, since the last one.
    Log {
        /// Lines not logged before this one.
        suppressed: u64,
    },
    /// The budget just ran out: say so once.
    FirstSuppressed,
    /// Count it, do not log it.
    Suppressed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_limited_per_address_and_window() {
        let budget = PerAddressBudget::new(2, Duration::from_secs(60));
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!([0, 1, 2].map(|_| budget.allow(a, t0)), [true, true, false]);
        assert!(budget.allow(b, t0), "another address has its own budget");
        assert!(budget.allow(a, t0 + Duration::from_secs(60)), "a new window");
        // The table is bounded: past it, new addresses are not reported until windows end.
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            budget.allow(IpAddr::from(((i + 1) << 8).to_be_bytes()), t0);
        }
        assert!(!budget.allow("10.9.9.9".parse().unwrap(), t0));
        // Full, and no window ends for a minute: that is when the table is scanned next.
        assert_eq!(budget.seen.lock().unwrap().full_until, Some(t0 + Duration::from_secs(60)));
        assert!(!budget.allow("10.9.9.8".parse().unwrap(), t0 + Duration::from_secs(59)));
        assert!(budget.allow("10.9.9.9".parse().unwrap(), t0 + Duration::from_secs(61)));
        assert!(budget.seen.lock().unwrap().windows.len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn log_budget_suppresses_and_reports_the_count() {
        let budget = LogBudget::new(2, Duration::from_secs(3600));
        assert_eq!(budget.allow(), Verdict::Log { suppressed: 0 });
        assert_eq!(budget.allow(), Verdict::Log { suppressed: 0 });
        assert_eq!(budget.allow(), Verdict::FirstSuppressed);
        assert_eq!(budget.allow(), Verdict::Suppressed);
        let budget = LogBudget { window: Duration::ZERO, ..budget };
        assert_eq!(budget.allow(), Verdict::Log { suppressed: 2 });
    }
}
