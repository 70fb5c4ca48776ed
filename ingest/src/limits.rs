//! The RTMP side's limits, each with the reason for its default, and the bookkeeping that
//! enforces the connection limits.
//!
//! Every limit here is configurable (`rtmp-hls --help`); the per-message limits of the
//! protocol itself are constants in [`rtmp::chunk`] and [`rtmp::session`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Open RTMP connections, all peers together. Each costs a task, a 64 KiB read buffer and
/// up to the chunk layer's buffer limit; Nginx's default `worker_connections` is 1024.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open RTMP connections from one IP address: an encoder uses one; a studio with many
/// encoders behind one NAT stays well under this.
pub const MAX_CONNECTIONS_PER_IP: usize = 32;
/// Streams live at once: the memory of each is its playlist window of segments.
pub const MAX_STREAMS: usize = 256;
/// From TCP accept to the end of the handshake. Real clients need one round trip.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// From TCP accept to the publish request (connect, createStream, publish).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
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
            max_streams: MAX_STREAMS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            publish_timeout: PUBLISH_TIMEOUT,
            no_media_timeout: NO_MEDIA_TIMEOUT,
            auth_timeout: AUTH_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// [`Limits::max_connections`].
    #[error("{0} connections open, the limit")]
    Total(usize),
    /// [`Limits::max_connections_per_ip`].
    #[error("{0} connections open from this address, the limit")]
    PerIp(usize),
}

/// Counts open connections, in total and per address.
#[derive(Debug, Default)]
pub struct ConnectionCounter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionCounter {
    /// Admits a connection from `ip` if both limits allow it.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
    ) -> Result<ConnectionSlot, Overloaded> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let total = self.total.load(Ordering::Relaxed);
        if total >= limits.max_connections {
            return Err(Overloaded::Total(total));
        }
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err(Overloaded::PerIp(*from_ip));
        }
        *from_ip += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionSlot { counter: Arc::clone(self), ip })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_ip = self.counter.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
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
    fn connection_limits_hold_and_free_on_drop() {
        let counter = Arc::new(ConnectionCounter::default());
        let limits = Limits { max_connections: 3, max_connections_per_ip: 2, ..Limits::default() };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counter.admit(a, &limits).unwrap();
        let _second = counter.admit(a, &limits).unwrap();
        assert_eq!(counter.admit(a, &limits).unwrap_err(), Overloaded::PerIp(2));
        let _third = counter.admit(b, &limits).unwrap();
        assert_eq!(counter.admit(b, &limits).unwrap_err(), Overloaded::Total(3));
        drop(first);
        assert_eq!(counter.open(), 2);
        assert!(counter.admit(a, &limits).is_ok());
    }

    #[test]
    fn per_ip_entries_do_not_accumulate() {
        let counter = Arc::new(ConnectionCounter::default());
        let limits = Limits::default();
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            drop(counter.admit(ip, &limits).unwrap());
        }
        assert!(counter.per_ip.lock().unwrap().is_empty());
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
