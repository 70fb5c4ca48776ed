//! Membership in a cluster of nodes that share one stream registry: a lease per live stream,
//! so that one node at a time publishes it; takeovers between nodes handed over with the
//! stream's numbering; a node that cannot renew its leases fenced off before they expire;
//! and the registry as this node last read it, for viewers' requests and the stream list.
//!
//! The registry itself (MongoDB in the server) is behind [`StreamRegistry`]. A lease is a
//! document per stream: its holder (node and process), the holder's internal URL, a
//! revision every renewal increments, a state (`live`: published; `open`: its publisher
//! dropped and the holder keeps the playlist open for the reconnect window; `ended`), and
//! where the stream's numbering stands.
//!
//! No clock is compared between nodes. The holder renews all its leases in one operation
//! every [`ClusterConfig::renew_interval`]; it treats its leases as valid until the lease
//! time after it *sent* its last successful renewal, less [`FENCE_MARGIN`], and stops its
//! publishers when that passes without a renewal. Another node treats a lease as expired
//! only after its revision stayed the same for the lease time as measured by its own
//! monotonic clock, which starts after the holder's last renewal was written: the holder has
//! stopped by then. Both sides rely only on their clocks running at about the same rate.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use stream_store::Numbering;
use tokio::time::{Instant, sleep, timeout};
use tracing::{info, warn};

use crate::events::StopReason;
use crate::listener::{Ingest, TakeoverPolicy};

/// How long before its lease time a node that could not renew stops its publishers: room
/// for a renewal in flight and for stopping (a publisher stops within milliseconds).
pub const FENCE_MARGIN: Duration = Duration::from_secs(1);
/// Renewals per lease time: a holder that misses a few renewals in a row (a slow database)
/// is not fenced yet.
pub const RENEWALS_PER_LEASE: u32 = 5;
/// The shortest lease time: a renewal interval under [`FENCE_MARGIN`] would fence on any
/// hiccup.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(3);
/// How often a live stream's numbering is written to its lease, so a node that continues it
/// after its holder died starts close to where it stood.
pub const NUMBERING_INTERVAL: Duration = Duration::from_secs(8);
/// Media sequence numbers a node continuing a dead holder's stream skips past the last one
/// recorded: segments made since ([`NUMBERING_INTERVAL`] of segments of 0.5 s at least).
pub const MOVE_MARGIN: u64 = 16;
/// How often a node waiting on a lease (a takeover's handover, a holder's renewals) reads
/// it again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// This node as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's id (`--server-id`), as events and the stream list show it.
    pub node: String,
    /// The node's id and this process's: a restarted node does not hold its old leases.
    pub holder: String,
    /// Where other nodes fetch this node's streams from (`http://host:port`).
    pub url: String,
}

impl Member {
    /// This process on node `node`, reachable at `url`.
    pub fn new(node: impl Into<String>, url: impl Into<String>) -> Self {
        let node = node.into();
        let mut nonce = [0u8; 8];
        // Without randomness, the process id and start time still tell processes apart.
        let nonce = match getrandom::fill(&mut nonce) {
            Ok(()) => u64::from_le_bytes(nonce),
            Err(_) => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
                now.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
            }
        };
        Self { holder: format!("{node}/{nonce:016x}"), node, url: url.into() }
    }
}

/// What a lease says of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Published on its holder.
    Live,
    /// Its publisher dropped; the holder keeps the playlist open for the reconnect window.
    Open,
    /// Nobody publishes it.
    Ended,
}

impl LeaseState {
    /// As the registry spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Open => "open",
            Self::Ended => "ended",
        }
    }

    /// From the registry's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "live" => Some(Self::Live),
            "open" => Some(Self::Open),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// One stream's lease, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The stream.
    pub stream: String,
    /// The holder's node id.
    pub node: String,
    /// The holder (node and process).
    pub holder: String,
    /// The holder's internal URL.
    pub url: String,
    /// When the holder took it (its clock; shown, never compared).
    pub since: SystemTime,
    /// Incremented by every renewal and every change.
    pub revision: u64,
    /// Live, open or ended.
    pub state: LeaseState,
    /// After a takeover: the holder it was taken from, until that holder has stopped and
    /// handed the numbering over.
    pub previous_holder: Option<String>,
    /// Where the stream's numbering stood when last written.
    pub numbering: Numbering,
    /// Only viewers with a credential may watch it (as when its publish began), so other
    /// nodes list it to admins only.
    pub private: bool,
    /// An operator on another node asked for its publisher to be disconnected.
    pub kick_requested: bool,
}

/// The registry did not answer, or answered what this node cannot use.
#[derive(Debug, thiserror::Error)]
#[error("the stream registry is unavailable: {0}")]
pub struct RegistryError(pub String);

/// The shared registry of leases. Every change is conditional: on the holder for a holder's
/// updates, on the revision read for a taker's.
#[async_trait]
pub trait StreamRegistry: Send + Sync + fmt::Debug {
    /// `stream`'s lease, if it has one.
    async fn get(&self, stream: &str) -> Result<Option<Lease>, RegistryError>;
    /// Creates `stream`'s lease, live and held by `me`; `false` if it has one already.
    async fn create(&self, stream: &str, me: &Member, private: bool)
    -> Result<bool, RegistryError>;
    /// Makes `me` the live holder of `stream` if its lease's revision is still `revision`;
    /// `from` is the holder it is taken from while that one may still publish. `false` if
    /// the lease changed.
    async fn take(
        &self,
        stream: &str,
        me: &Member,
        revision: u64,
        from: Option<&str>,
        private: bool,
    ) -> Result<bool, RegistryError>;
    /// Renews every live or open lease `me` holds, in one operation; returns how many.
    async fn renew(&self, me: &Member) -> Result<u64, RegistryError>;
    /// The streams whose live or open lease `me` holds.
    async fn held(&self, me: &Member) -> Result<Vec<String>, RegistryError>;
    /// Sets the state of `stream`'s lease, and its numbering if given, if `me` holds it.
    async fn update(
        &self,
        stream: &str,
        me: &Member,
        state: LeaseState,
        numbering: Option<Numbering>,
    ) -> Result<(), RegistryError>;
    /// After a takeover from `me`: `me` has stopped publishing `stream`, whose numbering
    /// ended at `numbering`.
    async fn hand_over(
        &self,
        stream: &str,
        me: &Member,
        numbering: Numbering,
    ) -> Result<(), RegistryError>;
    /// Ends `stream`'s lease if its revision is still `revision` (its holder stopped
    /// renewing), moving its next media sequence number `margin` on (segments its holder
    /// may have made since it last wrote the numbering).
    async fn expire(&self, stream: &str, revision: u64, margin: u64) -> Result<(), RegistryError>;
    /// Every live or open lease.
    async fn list(&self) -> Result<Vec<Lease>, RegistryError>;
    /// Asks the holder of `stream`'s live lease to disconnect its publisher (it reads the
    /// request at its next tick); whether the lease is live.
    async fn request_kick(&self, stream: &str) -> Result<bool, RegistryError>;
}

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node.
    pub member: Member,
    /// How long a lease lasts without renewal.
    pub lease_time: Duration,
}

impl ClusterConfig {
    /// How often leases are renewed and the registry read.
    pub fn renew_interval(&self) -> Duration {
        self.lease_time / RENEWALS_PER_LEASE
    }
}

/// A stream this node holds the lease of.
#[derive(Debug)]
struct Held {
    /// A publish is being decided: the lease is ours, the stream not claimed here yet.
    claiming: bool,
    /// What the registry was last told.
    state: LeaseState,
    /// The numbering last written, and when.
    recorded: Option<(Numbering, Instant)>,
}

/// A lease as this node has watched it.
#[derive(Debug, Clone)]
struct Seen {
    lease: Lease,
    /// When this node first read the lease's current revision.
    since: Instant,
}

/// This node's part in the cluster: its leases and its view of everyone's.
#[derive(Debug)]
pub struct ClusterMember {
    config: ClusterConfig,
    registry: Arc<dyn StreamRegistry>,
    held: Mutex<HashMap<String, Held>>,
    /// Leases read at the last tick, by stream.
    seen: Mutex<HashMap<String, Seen>>,
    /// Until when this node's leases are valid (see the module docs); `None` before the first
    /// renewal and after fencing.
    valid_until: Mutex<Option<Instant>>,
}

/// Why a publish cannot have the stream's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// Another node publishes it (and the takeover policy refuses), or took it meanwhile.
    HeldElsewhere(String),
    /// The registry cannot be asked, or this node's leases are fenced.
    Unavailable(String),
}

/// A publish holding its stream's lease while it claims the stream here. Dropped without
/// [`confirm`](Self::confirm), the lease is given up at the next tick.
#[derive(Debug)]
pub struct LeaseClaim<'a> {
    member: &'a ClusterMember,
    stream: String,
    /// Where to continue the stream's numbering from, if it was published elsewhere.
    pub from: Option<Numbering>,
}

impl LeaseClaim<'_> {
    /// The stream is claimed here: the lease is live.
    pub fn confirm(self) {}
}

impl Drop for LeaseClaim<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.member.held().get_mut(&self.stream) {
            held.claiming = false;
        }
    }
}

impl ClusterMember {
    /// This node in the cluster `registry` coordinates.
    pub fn new(config: ClusterConfig, registry: Arc<dyn StreamRegistry>) -> Self {
        Self {
            config,
            registry,
            held: Mutex::default(),
            seen: Mutex::default(),
            valid_until: Mutex::new(None),
        }
    }

    /// This node.
    pub fn member(&self) -> &Member {
        &self.config.member
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn valid(&self) -> bool {
        let valid_until = *self.valid_until.lock().unwrap_or_else(PoisonError::into_inner);
        valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// The node serving `stream`, if another node holds its live or open lease and it has
    /// not expired as this node has watched it: its node id and URL.
    pub fn holder_of(&self, stream: &str) -> Option<(String, String)> {
        let seen = self.seen();
        let seen = seen.get(stream)?;
        let fresh = seen.since.elapsed() < self.config.lease_time;
        (fresh && seen.lease.holder != self.config.member.holder)
            .then(|| (seen.lease.node.clone(), seen.lease.url.clone()))
    }

    /// Every live or open lease as last read, by stream name.
    pub fn leases(&self) -> Vec<Lease> {
        let seen = self.seen();
        let mut leases: Vec<Lease> = seen
            .values()
            .filter(|seen| seen.since.elapsed() < self.config.lease_time)
            .map(|seen| seen.lease.clone())
            .collect();
        leases.sort_by(|a, b| a.stream.cmp(&b.stream));
        leases
    }

    /// Asks the node publishing `stream` to disconnect its publisher; whether another node
    /// publishes it.
    pub async fn kick(&self, stream: &str) -> bool {
        if self.holder_of(stream).is_none() {
            return false;
        }
        match self.registry.request_kick(stream).await {
            Ok(live) => live,
            Err(e) => {
                warn!(%stream, "asking the stream's node to kick its publisher: {e}");
                false
            }
        }
    }

    /// Takes `stream`'s lease for a publish here, as `policy` says when another node
    /// publishes it. Returns where the numbering continues from.
    pub async fn acquire(
        &self,
        stream: &str,
        policy: TakeoverPolicy,
        private: bool,
    ) -> Result<LeaseClaim<'_>, LeaseRefusal> {
        if !self.valid() {
            return Err(LeaseRefusal::Unavailable("this node's leases are not renewed".into()));
        }
        let me = &self.config.member;
        let unavailable = |e: RegistryError| LeaseRefusal::Unavailable(e.0);
        // A few rounds: each lost race means another node changed the lease meanwhile.
        for _ in 0..3 {
            let Some(lease) = self.registry.get(stream).await.map_err(unavailable)? else {
                self.mark_claiming(stream);
                if self.registry.create(stream, me, private).await.map_err(unavailable)? {
                    return Ok(self.claim(stream, None));
                }
                self.unmark_if_claiming(stream);
                continue;
            };
            let from = match lease.state {
                _ if lease.holder == me.holder => None,
                LeaseState::Open | LeaseState::Ended => Some(lease.numbering),
                LeaseState::Live => {
                    return self.take_live(stream, lease, policy, private).await;
                }
            };
            self.mark_claiming(stream);
            let taken = self.registry.take(stream, me, lease.revision, None, private).await;
            if taken.map_err(unavailable)? {
                return Ok(self.claim(stream, from));
            }
            self.unmark_if_claiming(stream);
        }
        Err(LeaseRefusal::HeldElsewhere(stream.to_owned()))
    }

    /// Takes the lease of a stream another node publishes: at once (`Replace`), waiting for
    /// that node to hand over or for its lease time; or (`Refuse`) only once that node has
    /// stopped renewing.
    async fn take_live(
        &self,
        stream: &str,
        lease: Lease,
        policy: TakeoverPolicy,
        private: bool,
    ) -> Result<LeaseClaim<'_>, LeaseRefusal> {
        let me = &self.config.member;
        let lease_time = self.config.lease_time;
        let unavailable = |e: RegistryError| LeaseRefusal::Unavailable(e.0);
        let mut revision = lease.revision;
        if policy == TakeoverPolicy::Refuse {
            // Its holder renews every interval: a change means it is alive.
            let watched =
                self.seen().get(stream).filter(|s| s.lease.revision == revision).map(|s| s.since);
            let deadline = watched.unwrap_or_else(Instant::now) + lease_time;
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                sleep(POLL_INTERVAL).await;
                match self.registry.get(stream).await.map_err(unavailable)? {
                    Some(now) if now.revision == revision && now.state == LeaseState::Live => {}
                    Some(now) if now.state == LeaseState::Live => {
                        return Err(LeaseRefusal::HeldElsewhere(now.node));
                    }
                    // Released or gone meanwhile: decide again from the start.
                    Some(now) => {
                        revision = now.revision;
                        break;
                    }
                    None => return Err(LeaseRefusal::HeldElsewhere(stream.to_owned())),
                }
            }
        }
        self.mark_claiming(stream);
        let from = Some(lease.holder.as_str());
        let taken = self.registry.take(stream, me, revision, from, private).await;
        if !taken.map_err(unavailable)? {
            self.unmark_if_claiming(stream);
            return Err(LeaseRefusal::HeldElsewhere(lease.node));
        }
        info!(%stream, from = %lease.node, "took the stream's lease over from another node");
        // The old holder stops at its next renewal and hands over; if it is dead or cut
        // off, it has stopped by the end of its lease time.
        let taken = Instant::now();
        let mut numbering = Numbering {
            next_sequence: lease.numbering.next_sequence + MOVE_MARGIN,
            ..lease.numbering
        };
        while taken.elapsed() < lease_time {
            sleep(POLL_INTERVAL).await;
            match self.registry.get(stream).await {
                Ok(Some(now)) if now.holder != me.holder => {
                    self.unmark_if_claiming(stream);
                    return Err(LeaseRefusal::HeldElsewhere(now.node));
                }
                Ok(Some(now)) if now.previous_holder.is_none() => {
                    numbering = now.numbering;
                    break;
                }
                Ok(_) => {}
                Err(e) => warn!(%stream, "waiting for a handover: {e}"),
            }
        }
        Ok(self.claim(stream, Some(numbering)))
    }

    fn mark_claiming(&self, stream: &str) {
        self.held()
            .entry(stream.to_owned())
            .and_modify(|held| held.claiming = true)
            .or_insert(Held { claiming: true, state: LeaseState::Live, recorded: None });
    }

    /// After a lost race: forget a lease this node never had.
    fn unmark_if_claiming(&self, stream: &str) {
        let mut held = self.held();
        if held.get(stream).is_some_and(|h| h.claiming && h.recorded.is_none()) {
            held.remove(stream);
        }
    }

    fn claim(&self, stream: &str, from: Option<Numbering>) -> LeaseClaim<'_> {
        match from {
            Some(from) => info!(
                %stream,
                next_sequence = from.next_sequence,
                discontinuity_sequence = from.discontinuity_sequence,
                "stream lease taken; numbering continues"
            ),
            None => info!(%stream, "stream lease taken"),
        }
        self.held()
            .entry(stream.to_owned())
            .and_modify(|held| held.state = LeaseState::Live)
            .or_insert(Held { claiming: true, state: LeaseState::Live, recorded: None });
        LeaseClaim { member: self, stream: stream.to_owned(), from }
    }

    /// One round: this node's leases brought in line with its streams, renewed (or fenced),
    /// numbering recorded, and the registry read.
    async fn tick(&self, ingest: &Ingest) {
        let interval = self.config.renew_interval();
        self.sync_states(ingest).await;
        let sent = Instant::now();
        let renewed = timeout(interval, self.renew(ingest)).await;
        match renewed {
            Ok(Ok(())) => {
                *self.valid_until.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(sent + self.config.lease_time.saturating_sub(FENCE_MARGIN));
            }
            Ok(Err(e)) => {
                ingest.warn_limited(format_args!("renewing this node's stream leases: {e}"));
            }
            Err(_) => ingest.warn_limited(format_args!(
                "renewing this node's stream leases took longer than {interval:?}"
            )),
        }
        if self.valid() {
            self.record_numbering(ingest).await;
        }
        match timeout(interval, self.registry.list()).await {
            Ok(Ok(leases)) => self.saw(ingest, leases).await,
            Ok(Err(e)) => ingest.warn_limited(format_args!("reading the stream registry: {e}")),
            Err(_) => ingest.warn_limited(format_args!("reading the stream registry timed out")),
        }
    }

    /// Tells the registry which held streams stopped here (open for the reconnect window,
    /// or ended).
    async fn sync_states(&self, ingest: &Ingest) {
        let changes: Vec<(String, LeaseState)> = self
            .held()
            .iter()
            .filter(|(_, held)| !held.claiming)
            .filter_map(|(stream, held)| {
                let now = if ingest.store.is_live(stream) {
                    LeaseState::Live
                } else if ingest.store.is_open(stream) {
                    LeaseState::Open
                } else {
                    LeaseState::Ended
                };
                (now != held.state).then(|| (stream.clone(), now))
            })
            .collect();
        for (stream, state) in changes {
            let numbering = ingest.store.numbering(&stream);
            let me = &self.config.member;
            match self.registry.update(&stream, me, state, numbering).await {
                Ok(()) => {
                    let mut held = self.held();
                    if state == LeaseState::Ended {
                        held.remove(&stream);
                    } else if let Some(held) = held.get_mut(&stream) {
                        held.state = state;
                    }
                }
                Err(e) => ingest.warn_limited(format_args!("updating {stream}'s lease: {e}")),
            }
        }
    }

    /// Renews every lease; stops the publishers of streams another node took over, and
    /// hands their numbering over once they stopped.
    async fn renew(&self, ingest: &Ingest) -> Result<(), RegistryError> {
        let me = &self.config.member;
        let renewed = self.registry.renew(me).await?;
        if usize::try_from(renewed).is_ok_and(|n| n == self.held().len()) {
            return Ok(());
        }
        let still: std::collections::HashSet<String> =
            self.registry.held(me).await?.into_iter().collect();
        let lost: Vec<String> = {
            let mut held = self.held();
            // A lease being created or taken may not be in the answer yet.
            let lost: Vec<String> = held
                .iter()
                .filter(|(stream, held)| !held.claiming && !still.contains(*stream))
                .map(|(stream, _)| stream.clone())
                .collect();
            for stream in &lost {
                held.remove(stream);
            }
            lost
        };
        for stream in lost {
            info!(%stream, "another node took the stream over");
            let Some(mut released) = ingest.registry.stop(&stream, StopReason::TakenOver) else {
                // Not published here (open, or ended meanwhile): nothing to wait for.
                let numbering = ingest.store.numbering(&stream).unwrap_or_default();
                let _ = self.registry.hand_over(&stream, me, numbering).await;
                continue;
            };
            let registry = Arc::clone(&self.registry);
            let store = Arc::clone(&ingest.store);
            let me = me.clone();
            tokio::spawn(async move {
                let _ = released.wait_for(|released| *released).await;
                let numbering = store.numbering(&stream).unwrap_or_default();
                if let Err(e) = registry.hand_over(&stream, &me, numbering).await {
                    warn!(%stream, "handing the stream over: {e}");
                }
            });
        }
        Ok(())
    }

    /// Waits until this node's leases may have expired without a renewal, then stops every
    /// publisher here; runs beside the ticks, so a registry that hangs cannot delay it.
    async fn fence_when_due(&self, ingest: &Ingest) {
        loop {
            let until = *self.valid_until.lock().unwrap_or_else(PoisonError::into_inner);
            match until {
                Some(until) if Instant::now() < until => tokio::time::sleep_until(until).await,
                Some(_) => break,
                None => sleep(self.config.renew_interval()).await,
            }
        }
        {
            let mut valid_until = self.valid_until.lock().unwrap_or_else(PoisonError::into_inner);
            if valid_until.is_some_and(|until| Instant::now() < until) {
                // Renewed meanwhile.
                return;
            }
            *valid_until = None;
        }
        // The leases stay listed as held: once the registry answers again, their states
        // follow the streams (open or ended) and a takeover meanwhile shows as lost.
        let streams: Vec<String> = self.held().keys().cloned().collect();
        for stream in streams {
            if ingest.registry.stop(&stream, StopReason::LeaseLost).is_some() {
                warn!(%stream, "stream stopped: its lease could not be renewed");
            }
        }
    }

    /// Writes the numbering of live streams that moved on since it was last written.
    async fn record_numbering(&self, ingest: &Ingest) {
        let due: Vec<(String, Numbering)> = self
            .held()
            .iter()
            .filter(|(_, held)| !held.claiming && held.state == LeaseState::Live)
            .filter(|(_, held)| {
                held.recorded.is_none_or(|(_, at)| at.elapsed() >= NUMBERING_INTERVAL)
            })
            .filter_map(|(stream, held)| {
                let numbering = ingest.store.numbering(stream)?;
                (held.recorded.map(|(n, _)| n) != Some(numbering))
                    .then(|| (stream.clone(), numbering))
            })
            .collect();
        let me = &self.config.member;
        for (stream, numbering) in due {
            match self.registry.update(&stream, me, LeaseState::Live, Some(numbering)).await {
                Ok(()) => {
                    if let Some(held) = self.held().get_mut(&stream) {
                        held.recorded = Some((numbering, Instant::now()));
                    }
                }
                Err(e) => ingest.warn_limited(format_args!("recording {stream}'s numbering: {e}")),
            }
        }
    }

    /// Takes in the registry as read: revisions that changed restart their watch; leases
    /// whose revision stayed for the lease time are expired in the registry.
    async fn saw(&self, ingest: &Ingest, leases: Vec<Lease>) {
        let now = Instant::now();
        let mut stale = Vec::new();
        let me = &self.config.member.holder;
        for lease in leases.iter().filter(|l| l.kick_requested && &l.holder == me) {
            if ingest.registry.stop(&lease.stream, StopReason::Kicked).is_some() {
                info!(stream = %lease.stream, "publisher kicked at another node's request");
            }
        }
        {
            let mut seen = self.seen();
            let mut next = HashMap::with_capacity(leases.len());
            for lease in leases {
                let since = match seen.remove(&lease.stream) {
                    Some(old) if old.lease.revision == lease.revision => old.since,
                    _ => now,
                };
                if now.saturating_duration_since(since) >= self.config.lease_time
                    && lease.holder != self.config.member.holder
                {
                    stale.push((lease.stream.clone(), lease.revision));
                }
                next.insert(lease.stream.clone(), Seen { lease, since });
            }
            *seen = next;
        }
        for (stream, revision) in stale {
            if self.registry.expire(&stream, revision, MOVE_MARGIN).await.is_ok() {
                info!(%stream, "ended a lease whose holder stopped renewing it");
            }
        }
    }

    /// Ends every lease this node holds (at shutdown, once its streams ended).
    pub async fn release_all(&self, ingest: &Ingest) {
        let streams: Vec<String> = self.held().keys().cloned().collect();
        for stream in streams {
            let numbering = ingest.store.numbering(&stream);
            let me = &self.config.member;
            if let Err(e) = self.registry.update(&stream, me, LeaseState::Ended, numbering).await {
                warn!(%stream, "releasing the stream's lease: {e}");
            }
        }
        self.held().clear();
    }
}

/// Runs `ingest`'s cluster membership until `shutdown` turns true.
pub async fn run(ingest: Arc<Ingest>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(member) = ingest.cluster.clone() else { return };
    let ticking = async {
        let mut ticks = tokio::time::interval(member.config.renew_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            member.tick(&ingest).await;
        }
    };
    let fencing = async {
        loop {
            member.fence_when_due(&ingest).await;
        }
    };
    tokio::select! {
        () = ticking => {}
        () = fencing => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
