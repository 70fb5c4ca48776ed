//! Who watches a stream: the distinct viewers that fetched its playlist recently, counted for
//! the API and for the per-stream viewer limit (HLS has no connection per viewer, so a
//! viewer is a session the HTTP side names, and counts while it reloads the playlist).
//!
//! The HTTP side names a session by the subject of a valid viewer token, or else by the
//! client's address and user agent (players behind one NAT usually differ in the latter).
//! The user agent is the client's to choose, so sessions without a token are counted apart
//! for at most [`MAX_SESSIONS_PER_ADDRESS`] per address; more from one address count as one
//! more viewer. One client cannot fill a stream's viewer limit alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Viewers remembered per stream; beyond it the estimate saturates (memory stays bounded).
pub const MAX_VIEWERS_TRACKED: usize = 100_000;
/// Sessions without a viewer token counted apart per address: a household or an office
/// behind one NAT watching one stream, not a client varying its user agent.
pub const MAX_SESSIONS_PER_ADDRESS: u32 = 16;
/// A full table is swept of viewers that left at most this often: a sweep walks every entry
/// under the stream's lock, and without this each request of a new client to a full stream
/// made one.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A viewer's session as the HTTP side names it (hashes; nothing of the client is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerSession {
    /// The session: a token's subject, or an address and user agent.
    pub id: u64,
    /// The address of a session without a token (`None` with a token: one person on
    /// several addresses is one viewer, and tokens are not the client's to make).
    pub address: Option<u64>,
}

/// When a session was last seen, and from which address.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    address: Option<u64>,
}

/// One stream's recent viewers.
#[derive(Debug, Default)]
pub(crate) struct Viewers {
    seen: HashMap<u64, Seen>,
    /// Sessions per address, of those in `seen` that have one.
    per_address: HashMap<u64, u32>,
    /// When the table was last swept.
    swept: Option<Instant>,
}

impl Viewers {
    /// Notes that `session` fetched the playlist at `now`. With `limit` > 0, a session not
    /// seen within `window` is refused (false) once `limit` viewers are counted; known
    /// viewers always pass.
    pub(crate) fn admit(
        &mut self,
        session: ViewerSession,
        now: Instant,
        limit: usize,
        window: Duration,
    ) -> bool {
        let mut id = session.id;
        if !self.seen.contains_key(&id)
            && let Some(address) = session.address
            && self.per_address.get(&address).is_some_and(|&n| n >= MAX_SESSIONS_PER_ADDRESS)
        {
            // The address's further sessions share one entry.
            id = overflow_id(address);
        }
        if let Some(seen) = self.seen.get_mut(&id) {
            seen.at = now;
            return true;
        }
        let full = |count: usize| count >= MAX_VIEWERS_TRACKED || (limit > 0 && count >= limit);
        if full(self.seen.len())
            && self.swept.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL)
        {
            self.sweep(now, window);
        }
        if limit > 0 && self.seen.len() >= limit {
            return false;
        }
        if self.seen.len() < MAX_VIEWERS_TRACKED {
            self.seen.insert(id, Seen { at: now, address: session.address });
            if let Some(address) = session.address {
                *self.per_address.entry(address).or_default() += 1;
            }
        }
        true
    }

    /// Viewers seen within `window` of `now` (and up to [`SWEEP_INTERVAL`] more: the table
    /// is swept at most that often, however often it is counted; the stream list is public,
    /// and a sweep walks every viewer under the stream's lock).
    pub(crate) fn count(&mut self, now: Instant, window: Duration) -> usize {
        if self.swept.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL) {
            self.sweep(now, window);
        }
        self.seen.len()
    }

    /// Forgets the viewers not seen within `window` of `now`.
    fn sweep(&mut self, now: Instant, window: Duration) {
        let per_address = &mut self.per_address;
        self.seen.retain(|_, seen| {
            let recent = now.saturating_duration_since(seen.at) < window;
            if !recent
                && let Some(address) = seen.address
                && let Some(count) = per_address.get_mut(&address)
            {
                *count -= 1;
                if *count == 0 {
                    per_address.remove(&address);
                }
            }
            recent
        });
        self.swept = Some(now);
    }
}

/// The entry an address's sessions beyond [`MAX_SESSIONS_PER_ADDRESS`] share.
fn overflow_id(address: u64) -> u64 {
    // Any fixed bijection would do; session ids are hashes, so a collision is as unlikely
    // as one between two sessions.
    address.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(6);

    fn token(id: u64) -> ViewerSession {
        ViewerSession { id, address: None }
    }

    fn from(address: u64, id: u64) -> ViewerSession {
        ViewerSession { id, address: Some(address) }
    }

    #[allow(clippy::disallowed_methods)] // any instant will do: only differences matter
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn viewers_are_distinct_recent_sessions() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        for id in [1, 2, 2, 3] {
            assert!(viewers.admit(token(id), t0, 0, WINDOW));
        }
        assert_eq!(viewers.count(t0, WINDOW), 3);
        viewers.admit(token(1), t0 + Duration::from_secs(5), 0, WINDOW);
        assert_eq!(viewers.count(t0 + Duration::from_secs(7), WINDOW), 1);
    }

    /// Counting sweeps the table at most once a [`SWEEP_INTERVAL`], however often it is asked.
    #[test]
    fn counting_sweeps_at_most_once_an_interval() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        viewers.admit(token(1), t0, 0, WINDOW);
        viewers.admit(token(2), t0 + Duration::from_secs(2), 0, WINDOW);
        let before = t0 + WINDOW - Duration::from_millis(100);
        assert_eq!(viewers.count(before, WINDOW), 2);
        // Viewer 1 has left the window, but the last sweep is 200 ms old.
        assert_eq!(viewers.count(before + Duration::from_millis(200), WINDOW), 2);
        assert_eq!(viewers.count(before + SWEEP_INTERVAL, WINDOW), 1);
    }

    #[test]
    fn one_address_fills_at_most_its_share_of_a_limit() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        let limit = 40;
        // One client varying its user agent: its sessions beyond the share count as one.
        for id in 0..1000 {
            assert!(viewers.admit(from(7, id), t0, limit, WINDOW));
        }
        assert_eq!(viewers.count(t0, WINDOW), MAX_SESSIONS_PER_ADDRESS as usize + 1);
        // Others still get in, up to the limit.
        let room = limit - viewers.count(t0, WINDOW);
        for id in 0..room as u64 {
            assert!(viewers.admit(from(1000 + id, 1000 + id), t0, limit, WINDOW));
        }
        assert!(!viewers.admit(from(5000, 9999), t0, limit, WINDOW), "past the limit");
        // Viewers with tokens are not an address's.
        let mut tokens = Viewers::default();
        for id in 0..100 {
            assert!(tokens.admit(token(id), t0, 0, WINDOW));
        }
        assert_eq!(tokens.count(t0, WINDOW), 100);
    }

    #[test]
    fn an_address_gets_its_share_back_when_its_sessions_leave() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        for id in 0..u64::from(MAX_SESSIONS_PER_ADDRESS) {
            viewers.admit(from(7, id), t0, 0, WINDOW);
        }
        let later = t0 + WINDOW;
        assert_eq!(viewers.count(later, WINDOW), 0);
        assert!(viewers.per_address.is_empty());
        for id in 100..100 + u64::from(MAX_SESSIONS_PER_ADDRESS) {
            viewers.admit(from(7, id), later, 0, WINDOW);
        }
        assert_eq!(viewers.count(later, WINDOW), MAX_SESSIONS_PER_ADDRESS as usize);
    }

    #[test]
    fn a_limit_refuses_new_viewers_only_and_frees_as_they_leave() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        assert!(viewers.admit(token(1), t0, 2, WINDOW));
        assert!(viewers.admit(token(2), t0, 2, WINDOW));
        assert!(!viewers.admit(token(3), t0, 2, WINDOW), "a third viewer got in");
        assert!(viewers.admit(token(1), t0, 2, WINDOW), "a known viewer was refused");
        viewers.admit(token(1), t0 + Duration::from_secs(5), 2, WINDOW);
        assert!(viewers.admit(token(3), t0 + Duration::from_secs(7), 2, WINDOW));
    }

    /// A full stream is swept at most once a second, however many new clients ask.
    #[test]
    fn a_full_stream_is_swept_once_a_second_at_most() {
        let mut viewers = Viewers::default();
        let t0 = t0();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(viewers.admit(token(1), t0, 1, WINDOW));
        // Viewer 1 is still there: a sweep finds nobody gone.
        assert!(!viewers.admit(token(2), ms(5_500), 1, WINDOW));
        // It has left now, but the next sweep waits for its interval.
        assert!(!viewers.admit(token(2), ms(6_000), 1, WINDOW));
        assert!(viewers.admit(token(2), ms(6_500), 1, WINDOW));
    }
}
