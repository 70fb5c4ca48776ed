//! Which connections get a place: the total and per-address limits, and a separate cap on
//! connections that are not authorised yet, so that idle or half-open connections cannot
//! keep real publishers out.
//!
//! A connection is *unauthenticated* from accept until its publish is granted. Those are
//! capped at [`Limits::max_unauthenticated`]; when the cap (or the total limit) is reached,
//! a new connection takes the place of an unauthenticated one: the one that got least far
//! ([`Progress`]: nothing sent, handshaking, handshake done, connected, publish being
//! decided), among those the one of the address that holds the most, and then the oldest.
//! Idle and half-open connections so give their places up first, whatever addresses they
//! come from, while an encoder passes those stages within its first round trips; a flood
//! from a few addresses evicts itself. Addresses are counted by group
//! ([`auth::address::group`]: IPv6 per /64). A connection admitted less than
//! [`FRESH_CONNECTION_GRACE`] ago that has sent nothing yet ranks as handshaking; one that has
//! stayed at a stage before its publish request for [`STALLED_STAGE`] ranks as one that sent
//! nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::limits::{Limits, MAX_TRACKED_ADDRESSES, NEW_CONNECTION_BURST_PER_IP};

/// How long a silent new connection ranks as handshaking: its first bytes may not have been
/// read yet (it is read on its connection thread, after admission), and under a flood of
/// half-open connections (ranked above a silent one) the next admission would otherwise evict
/// it before the server read the C0+C1 an encoder sends at once. What a flood gains: for its
/// first second a silent connection ranks as one that sent a byte would (so a silent flood is
/// as strong as a one-byte flood, no stronger); past it, it ranks lowest again.
pub const FRESH_CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// How long a connection may stay at a stage before its publish request (handshaking,
/// handshake done, connected) and keep that stage's rank; past it, it ranks as one that sent
/// nothing. An encoder passes each stage in a round trip (its C2, then `connect`, then
/// `createStream` and `publish` on their answers), well within two seconds on any link. A
/// flood that completes the free stages and waits (a `connect` costs nothing) would otherwise
/// outrank every encoder still in its first round trips, and keep new publishers out by
/// renewing its connections once per publish timeout; now it must renew them this often.
pub const STALLED_STAGE: Duration = Duration::from_secs(2);

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// [`Limits::max_connections`], with no unauthenticated connection to give its place.
    #[error("{0} connections open, the limit")]
    Total(usize),
    /// [`Limits::max_connections_per_ip`].
    #[error("{0} connections open from this address, the limit")]
    PerAddress(usize),
    /// [`Limits::new_connections_per_ip_per_minute`].
    #[error("this address opens connections faster than {0} a minute")]
    Rate(u32),
}

/// Open connections, in total and per address group, and the unauthenticated ones.
#[derive(Debug, Default)]
pub struct Admission {
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_group: HashMap<IpAddr, usize>,
    /// Unauthenticated connections, oldest first.
    waiting: Vec<Waiting>,
    next_id: u64,
    evicted: u64,
    /// New-connection tokens per address group: (tokens, when last refilled).
    rate: HashMap<IpAddr, (f64, Instant)>,
    /// While `rate` is full: no bucket of it is full again before this, so a connection from
    /// a group not tracked costs no scan of the table until then.
    rate_full_until: Option<Instant>,
}

/// How far an unauthenticated connection got, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Progress {
    /// Nothing received.
    Accepted,
    /// Bytes of the handshake received.
    Handshaking,
    /// The handshake is done.
    HandshakeDone,
    /// `connect` accepted.
    Connected,
    /// A publish request is being decided.
    Deciding,
}

/// An unauthenticated connection, and how to tell it to go.
#[derive(Debug)]
struct Waiting {
    id: u64,
    group: IpAddr,
    progress: Progress,
    admitted: Instant,
    /// When it reached `progress`.
    since: Instant,
    evict: watch::Sender<bool>,
}

impl Waiting {
    /// How far it counts as having got at `now` (see [`FRESH_CONNECTION_GRACE`] and
    /// [`STALLED_STAGE`]).
    fn rank(&self, now: Instant) -> Progress {
        let fresh = now.saturating_duration_since(self.admitted) < FRESH_CONNECTION_GRACE;
        let stalled = now.saturating_duration_since(self.since) >= STALLED_STAGE;
        match self.progress {
            Progress::Accepted if fresh => Progress::Handshaking,
            Progress::Handshaking | Progress::HandshakeDone | Progress::Connected if stalled => {
                Progress::Accepted
            }
            progress => progress,
        }
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    group: IpAddr,
    id: u64,
    /// Turns true if the connection must give its place up (it is unauthenticated). Once it
    /// is authenticated the sender is gone.
    evicted: watch::Receiver<bool>,
}

impl Admission {
    /// Admits a connection from `ip` under `limits`, evicting an unauthenticated connection
    /// if the unauthenticated cap or the total limit is reached.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
        now: Instant,
    ) -> Result<ConnectionSlot, Overloaded> {
        let group = auth::address::group(ip, limits.ipv6_prefix);
        let mut counts = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_group = counts.per_group.get(&group).copied().unwrap_or(0);
        if from_group >= limits.max_connections_per_ip {
            return Err(Overloaded::PerAddress(from_group));
        }
        let per_minute = limits.new_connections_per_ip_per_minute;
        if per_minute > 0 && !counts.take_token(group, per_minute, now) {
            return Err(Overloaded::Rate(per_minute));
        }
        // An evicted connection leaves the counts at once (its task ends right after), so
        // under a flood the sockets open may pass the limit by those closing for a moment.
        if counts.total >= limits.max_connections && !counts.evict_one(now) {
            return Err(Overloaded::Total(counts.total));
        }
        while counts.waiting.len() >= limits.max_unauthenticated.max(1) {
            counts.evict_one(now);
        }
        let id = counts.next_id;
        counts.next_id += 1;
        let (evict, evicted) = watch::channel(false);
        let progress = Progress::Accepted;
        counts.waiting.push(Waiting { id, group, progress, admitted: now, since: now, evict });
        counts.total += 1;
        *counts.per_group.entry(group).or_insert(0) += 1;
        Ok(ConnectionSlot { admission: Arc::clone(self), group, id, evicted })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).total
    }

    /// Open connections not authenticated yet.
    pub fn unauthenticated(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).waiting.len()
    }

    /// Connections evicted so far.
    pub fn evicted(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).evicted
    }
}

impl Counts {
    /// Takes a new-connection token of `group`, refilled at `per_minute`.
    fn take_token(&mut self, group: IpAddr, per_minute: u32, now: Instant) -> bool {
        let rate = f64::from(per_minute) / 60.0;
        let burst = f64::from(NEW_CONNECTION_BURST_PER_IP);
        let refilled = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
        };
        if self.rate.len() >= MAX_TRACKED_ADDRESSES && !self.rate.contains_key(&group) {
            // Forget addresses whose bucket is full again; if none, let this one through
            // (the other limits still hold).
            if self.rate_full_until.is_some_and(|until| now < until) {
                return true;
            }
            self.rate.retain(|_, bucket| refilled(*bucket) < burst);
            if self.rate.len() >= MAX_TRACKED_ADDRESSES {
                // Buckets only fill as time passes: the earliest to fill bounds them all.
                self.rate_full_until = self
                    .rate
                    .values()
                    .filter_map(|&(tokens, at)| {
                        at.checked_add(Duration::try_from_secs_f64((burst - tokens) / rate).ok()?)
                    })
                    .min();
                return true;
            }
        }
        let bucket = self.rate.entry(group).or_insert((burst, now));
        let tokens = refilled(*bucket);
        if tokens < 1.0 {
            return false;
        }
        *bucket = (tokens - 1.0, now);
        true
    }

    /// Tells one unauthenticated connection to go: the least advanced, of the group with the
    /// most, the oldest. Returns false when there is none.
    fn evict_one(&mut self, now: Instant) -> bool {
        let Some(least) = self.waiting.iter().map(|w| w.rank(now)).min() else { return false };
        let mut per_group: HashMap<IpAddr, usize> = HashMap::new();
        for waiting in self.waiting.iter().filter(|w| w.rank(now) == least) {
            *per_group.entry(waiting.group).or_insert(0) += 1;
        }
        let most = per_group.values().copied().max().unwrap_or(0);
        // Oldest first, so the first match is the oldest.
        let Some(index) =
            self.waiting.iter().position(|w| w.rank(now) == least && per_group[&w.group] == most)
        else {
            return false;
        };
        let waiting = self.waiting.remove(index);
        waiting.evict.send_replace(true);
        self.evicted += 1;
        self.release(waiting.group);
        true
    }

    /// One connection of `group` left.
    fn release(&mut self, group: IpAddr) {
        if let Some(count) = self.per_group.get_mut(&group) {
            *count -= 1;
            if *count == 0 {
                self.per_group.remove(&group);
            }
        }
        self.total -= 1;
    }
}

impl ConnectionSlot {
    /// The connection got as far as `progress` at `now` (while unauthenticated).
    pub fn progressed(&self, progress: Progress, now: Instant) {
        let mut counts = self.admission.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = counts.waiting.iter_mut().find(|waiting| waiting.id == self.id)
            && progress > waiting.progress
        {
            waiting.progress = progress;
            waiting.since = now;
        }
    }

    /// The connection was granted a publish: it no longer counts as unauthenticated and can
    /// no longer be evicted.
    pub fn authenticated(&self) {
        let mut counts = self.admission.state.lock().unwrap_or_else(PoisonError::into_inner);
        counts.waiting.retain(|waiting| waiting.id != self.id);
    }

    /// Completes if the connection is evicted; never once it is authenticated.
    pub fn evicted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut evicted = self.evicted.clone();
        async move {
            if evicted.wait_for(|evicted| *evicted).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.admission.state.lock().unwrap_or_else(PoisonError::into_inner);
        // An evicted connection was counted out when it was evicted (under this lock).
        if *self.evicted.borrow() {
            return;
        }
        counts.waiting.retain(|waiting| waiting.id != self.id);
        counts.release(self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn evicted(slot: &ConnectionSlot) -> bool {
        let mut future = pin!(slot.evicted());
        future.as_mut().poll(&mut Context::from_waker(Waker::noop())) == Poll::Ready(())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn unlimited_rate() -> Limits {
        Limits { new_connections_per_ip_per_minute: 0, ..Limits::default() }
    }

    /// One instant for every admission of a test but the rate test's.
    fn now() -> Instant {
        static NOW: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *NOW.get_or_init(Instant::now)
    }

    #[test]
    fn new_connections_per_address_are_rate_limited() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { new_connections_per_ip_per_minute: 60, ..Limits::default() };
        let t0 = now();
        for _ in 0..NEW_CONNECTION_BURST_PER_IP {
            drop(admission.admit(ip("10.0.0.1"), &limits, t0).unwrap());
        }
        assert_eq!(admission.admit(ip("10.0.0.1"), &limits, t0).unwrap_err(), Overloaded::Rate(60));
        assert!(admission.admit(ip("10.0.0.2"), &limits, t0).is_ok(), "per address");
        let later = t0 + Duration::from_secs(1);
        assert!(admission.admit(ip("10.0.0.1"), &limits, later).is_ok(), "one a second");
        assert!(admission.admit(ip("10.0.0.1"), &limits, later).is_err());
        let unlimited = Limits { new_connections_per_ip_per_minute: 0, ..Limits::default() };
        for _ in 0..100 {
            drop(admission.admit(ip("10.0.0.3"), &unlimited, t0).unwrap());
        }
    }

    #[test]
    fn connection_limits_hold_and_free_on_drop() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_connections: 3, max_connections_per_ip: 2, ..Limits::default() };
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let first = admission.admit(a, &limits, now()).unwrap();
        let second = admission.admit(a, &limits, now()).unwrap();
        assert_eq!(admission.admit(a, &limits, now()).unwrap_err(), Overloaded::PerAddress(2));
        for slot in [&first, &second] {
            slot.authenticated();
        }
        let third = admission.admit(b, &limits, now()).unwrap();
        third.authenticated();
        // Full of authenticated connections: nobody to evict.
        assert_eq!(admission.admit(b, &limits, now()).unwrap_err(), Overloaded::Total(3));
        drop(first);
        assert_eq!(admission.open(), 2);
        assert!(admission.admit(a, &limits, now()).is_ok());
    }

    #[test]
    fn a_full_house_of_unauthenticated_connections_makes_room() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_connections: 100, max_unauthenticated: 4, ..unlimited_rate() };
        // A flood from one address, then one from another, then a publisher.
        let flood: Vec<_> =
            (0..3).map(|_| admission.admit(ip("10.0.0.9"), &limits, now()).unwrap()).collect();
        let lone = admission.admit(ip("10.0.0.7"), &limits, now()).unwrap();
        let encoder = admission.admit(ip("10.0.0.1"), &limits, now()).unwrap();
        // The cap was reached: the oldest of the largest group went, nobody else.
        assert_eq!(flood.iter().map(evicted).collect::<Vec<_>>(), [true, false, false]);
        assert!(!evicted(&lone) && !evicted(&encoder));
        encoder.authenticated();
        assert_eq!(admission.unauthenticated(), 3);
        // More flood, held open: every admission past the cap evicts one unauthenticated
        // connection, at last the flood's own; the authenticated encoder is never evicted.
        let more: Vec<_> =
            (0..10).map(|_| admission.admit(ip("10.0.0.8"), &limits, now()).unwrap()).collect();
        assert!(!evicted(&encoder));
        assert_eq!(admission.evicted(), 1 + 9);
        assert_eq!(admission.unauthenticated(), 4);
        // Once the flood's address holds the most, it evicts its own: the lone connection and
        // the other address's stay.
        assert_eq!(more.iter().filter(|slot| !evicted(slot)).count(), 2);
        assert!(!evicted(&lone) && !evicted(&flood[2]));
    }

    /// Idle connections from many addresses, each newer than the encoder, give way before
    /// an encoder that got further.
    #[test]
    fn connections_that_got_further_are_evicted_last() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_unauthenticated: 4, ..Limits::default() };
        let t0 = now();
        let encoder = admission.admit(ip("10.0.0.1"), &limits, t0).unwrap();
        encoder.progressed(Progress::Connected, t0);
        let half_open = admission.admit(ip("10.0.0.2"), &limits, t0).unwrap();
        half_open.progressed(Progress::Handshaking, t0);
        // A silent flood from many addresses, each one silent past its grace when the next
        // comes, within the stages' grace: it evicts itself.
        let at = |i: u32| t0 + FRESH_CONNECTION_GRACE * i * 9 / 10;
        let flood: Vec<_> = (0..3u32)
            .map(|i| admission.admit(IpAddr::from((0x0a01_0000 + i).to_be_bytes()), &limits, at(i)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!evicted(&encoder) && !evicted(&half_open));
        assert!(evicted(&flood[0]) && !evicted(&flood[1]) && !evicted(&flood[2]));
        // With only advanced connections left to evict, the least advanced goes first.
        for slot in &flood[1..] {
            slot.progressed(Progress::Deciding, at(2));
        }
        let late = admission.admit(ip("10.0.0.3"), &limits, at(2)).unwrap();
        assert!(evicted(&half_open), "the least advanced goes first");
        let later = admission.admit(ip("10.0.0.4"), &limits, at(2)).unwrap();
        assert!(evicted(&late) && !evicted(&encoder), "a new idle one before the encoder");
        later.progressed(Progress::Deciding, at(2));
        let _last = admission.admit(ip("10.0.0.5"), &limits, at(2)).unwrap();
        assert!(evicted(&encoder), "at last, the oldest of the least advanced");
    }

    /// Connections that completed the free stages (`connect` costs nothing) and wait rank as
    /// silent ones once stalled there: a flood of them cannot keep an encoder in its first
    /// round trips out. A publish being decided never stalls.
    #[test]
    fn a_stage_held_past_its_grace_ranks_lowest() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_unauthenticated: 5, ..unlimited_rate() };
        let t0 = now();
        let parked: Vec<_> = (0..4u32)
            .map(|i| {
                let slot =
                    admission.admit(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), &limits, t0);
                let slot = slot.unwrap();
                slot.progressed(Progress::Connected, t0);
                slot
            })
            .collect();
        parked[3].progressed(Progress::Deciding, t0);
        let arrives = t0 + STALLED_STAGE;
        let encoder = admission.admit(ip("10.1.0.1"), &limits, arrives).unwrap();
        encoder.progressed(Progress::HandshakeDone, arrives);
        let mut flood = Vec::new();
        for n in 0..3u32 {
            let next = IpAddr::from((0x0a00_0100 + n).to_be_bytes());
            flood.push(admission.admit(next, &limits, arrives + Duration::from_millis(50)));
            assert!(!evicted(&encoder), "evicted for a stalled connection's newcomer {n}");
            assert!(evicted(&parked[usize::try_from(n).unwrap()]), "the stalled one {n} goes");
        }
        assert!(!evicted(&parked[3]), "a publish being decided is not stalled");
    }

    /// Under a flood of half-open connections, a new connection the server has not read yet
    /// outlasts the next admission; once the grace has passed and it is still silent, it is
    /// the first to go.
    #[test]
    fn a_new_connection_gets_a_grace_before_its_first_read() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_unauthenticated: 3, ..unlimited_rate() };
        let t0 = now();
        let half_open: Vec<_> = (0..2)
            .map(|_| admission.admit(ip("10.0.0.9"), &limits, t0).unwrap())
            .inspect(|slot| slot.progressed(Progress::Handshaking, t0))
            .collect();
        let soon = t0 + FRESH_CONNECTION_GRACE / 2;
        let encoder = admission.admit(ip("10.0.0.1"), &limits, soon).unwrap();
        let _next = admission.admit(ip("10.0.0.8"), &limits, soon).unwrap();
        assert!(!evicted(&encoder), "evicted before the server could read it");
        assert!(evicted(&half_open[0]) && !evicted(&half_open[1]));
        let late = soon + FRESH_CONNECTION_GRACE;
        let _after = admission.admit(ip("10.0.0.7"), &limits, late).unwrap();
        assert!(evicted(&encoder), "silent past the grace, it is the least advanced");
        assert!(!evicted(&half_open[1]));
    }

    #[test]
    fn the_total_limit_evicts_an_unauthenticated_connection_first() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_connections: 2, max_unauthenticated: 10, ..Limits::default() };
        let publisher = admission.admit(ip("10.0.0.1"), &limits, now()).unwrap();
        publisher.authenticated();
        let idle = admission.admit(ip("10.0.0.2"), &limits, now()).unwrap();
        let encoder = admission.admit(ip("10.0.0.3"), &limits, now()).unwrap();
        assert!(evicted(&idle) && !evicted(&encoder) && !evicted(&publisher));
    }

    #[test]
    fn ipv6_addresses_count_per_prefix() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_connections_per_ip: 2, ..Limits::default() };
        let _a = admission.admit(ip("2001:db8::1"), &limits, now()).unwrap();
        let _b = admission.admit(ip("2001:db8::ffff:2"), &limits, now()).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8::3:4:5:6"), &limits, now()).unwrap_err(),
            Overloaded::PerAddress(2)
        );
        assert!(admission.admit(ip("2001:db8:0:1::1"), &limits, now()).is_ok());
    }

    /// With the rate table full of buckets still refilling, a connection from a group not
    /// tracked passes without a scan of the table until the first bucket is full again.
    #[test]
    fn a_full_rate_table_is_scanned_only_when_a_bucket_can_be_forgotten() {
        let mut counts = Counts::default();
        let t0 = now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(counts.take_token(IpAddr::from(i.to_be_bytes()), 60, t0));
        }
        let new = |n: u32| IpAddr::from((0xff00_0000 + n).to_be_bytes());
        assert!(counts.take_token(new(1), 60, t0), "let through, not tracked");
        // One token a second refills: the first bucket is full again a second later.
        assert_eq!(counts.rate_full_until, Some(t0 + Duration::from_secs(1)));
        assert!(counts.take_token(new(2), 60, t0 + Duration::from_millis(500)));
        assert_eq!(counts.rate.len(), MAX_TRACKED_ADDRESSES);
        assert!(counts.take_token(new(3), 60, t0 + Duration::from_secs(2)));
        assert_eq!(counts.rate.len(), 1, "every full bucket forgotten, the new one tracked");
    }

    #[test]
    fn entries_do_not_accumulate() {
        let admission = Arc::new(Admission::default());
        let limits = unlimited_rate();
        for i in 0..1000u32 {
            let slot = admission.admit(IpAddr::from(i.to_be_bytes()), &limits, now()).unwrap();
            if i % 2 == 0 {
                slot.authenticated();
            }
        }
        let counts = admission.state.lock().unwrap();
        assert!(counts.per_group.is_empty() && counts.waiting.is_empty() && counts.total == 0);
    }
}
