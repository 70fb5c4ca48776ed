//! Membership in a cluster of nodes that share one stream registry: a lease per live stream,
//! so that one node at a time publishes it; takeovers between nodes handed over with the
//! stream's numbering; a node that cannot renew its leases fenced off before they expire;
//! and the registry as this node last read it, for viewers' requests and the stream list.
//!
//! The registry itself (MongoDB in the server) is behind [`StreamRegistry`]. A lease is a
//! document per stream: its holder (node and process), the holder's internal URL, a
//! revision every renewal increments, a state (`live`: published; `open`: its publisher
//! dropped and the holder keeps the playlist open for the reconnect window; `done`: ended,
//! and the holder still serves the final playlist; `ended`: nobody serves it), and
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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
/// The shortest segment the numbering margin allows for: segments are cut at keyframes after
/// the target duration, so only discontinuities (new codec parameters, timeline breaks) cut
/// shorter ones.
pub const SHORTEST_SEGMENT: Duration = Duration::from_millis(500);
/// How often a node waiting on a lease (a takeover's handover, a holder's renewals) reads
/// it again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Tries of a replacing takeover's conditional write: each renewal of the holder (one per
/// renewal interval, at least 600 ms apart) moves the lease's revision, and one landing
/// between the takeover's read and its write fails the write. A read and a write take a few
/// round trips, so a second try almost never meets a second renewal; a third covers a slow
/// database.
const TAKE_TRIES: u32 = 3;

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
    /// Its publish ended; the holder still serves the final playlist (EXT-X-ENDLIST) for
    /// `--ended-ttl`.
    Done,
    /// Nobody publishes or serves it.
    Ended,
}

impl LeaseState {
    /// As the registry spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Open => "open",
            Self::Done => "done",
            Self::Ended => "ended",
        }
    }

    /// From the registry's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "live" => Some(Self::Live),
            "open" => Some(Self::Open),
            "done" => Some(Self::Done),
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
    /// Renews every live, open or done lease `me` holds, in one operation; returns how many.
    async fn renew(&self, me: &Member) -> Result<u64, RegistryError>;
    /// The streams whose live, open or done lease `me` holds.
    async fn held(&self, me: &Member) -> Result<Vec<String>, RegistryError>;
    /// Sets the state of `stream`'s lease, and its numbering if given, if `me` holds it;
    /// clears `previous_holder` (a takeover's wait is over once the holder writes).
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
        numbering: Option<Numbering>,
    ) -> Result<(), RegistryError>;
    /// Sets whether `stream`'s lease says private, if `me` holds it (a stream made private
    /// or public while live).
    async fn set_private(
        &self,
        stream: &str,
        me: &Member,
        private: bool,
    ) -> Result<(), RegistryError>;
    /// Ends `stream`'s lease if its revision is still `revision` (its holder stopped
    /// renewing), moving its next media sequence number `margin` on (segments its holder
    /// may have made since it last wrote the numbering).
    async fn expire(&self, stream: &str, revision: u64, margin: u64) -> Result<(), RegistryError>;
    /// Every live, open or done lease.
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

    /// Media sequence numbers a node continuing a dead holder's stream skips past the last
    /// ones written: the segments the holder may have made since, in up to
    /// [`NUMBERING_INTERVAL`] before its last write and the lease time after it, none shorter
    /// than [`SHORTEST_SEGMENT`].
    pub fn move_margin(&self) -> u64 {
        let unwritten = NUMBERING_INTERVAL + self.lease_time;
        (unwritten.as_millis() / SHORTEST_SEGMENT.as_millis()) as u64 + 2
    }
}

/// A stream this node holds the lease of.
#[derive(Debug)]
struct Held {
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
    /// The leases this node holds (live, open or done), by stream.
    held: Mutex<HashMap<String, Held>>,
    /// Leases read at the last tick, by stream.
    seen: Mutex<HashMap<String, Seen>>,
    /// Until when this node's leases are valid (see the module docs); `None` before the first
    /// renewal and once fenced.
    valid_until: Mutex<Option<Instant>>,
    /// Per stream: a publish decision (lease to local claim) and the upkeep of the stream's
    /// lease (state changes, losses) take turns, so neither acts on what the other is
    /// changing.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Registry operations by kind, for `rtmp_hls_registry_operations_total`.
    operations: Family<OperationLabel, Counter>,
}

/// A registry operation's kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    op: &'static str,
}

/// Why a publish cannot have the stream's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// Another node publishes it (and the takeover policy refuses), or took it meanwhile.
    HeldElsewhere(String),
    /// The registry cannot be asked, or this node's leases are fenced.
    Unavailable(String),
}

/// One stream's turn (see [`ClusterMember::locks`]); the lock's map entry goes with the last
/// user.
#[derive(Debug)]
struct StreamTurn<'a> {
    member: &'a ClusterMember,
    stream: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for StreamTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.member.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.get(&self.stream).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.stream);
        }
    }
}

/// A publish holding its stream's lease while it claims the stream here (the stream's turn
/// is held until it is dropped).
#[derive(Debug)]
pub struct LeaseClaim<'a> {
    member: &'a ClusterMember,
    _turn: StreamTurn<'a>,
    /// Where to continue the stream's numbering from, if it was published elsewhere.
    pub from: Option<Numbering>,
}

impl LeaseClaim<'_> {
    /// The stream is claimed here. Whether this node's leases are still valid: a publish
    /// whose lease was fenced off while it was being decided must not go on.
    pub fn confirm(self) -> bool {
        self.member.valid()
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
            locks: Mutex::default(),
            operations: Family::default(),
        }
    }

    /// Registers the registry operations counter.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "registry_operations",
            "Operations on the cluster's stream registry, by kind",
            self.operations.clone(),
        );
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

    fn stream_lock(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(stream.to_owned()).or_default())
    }

    /// Waits for `stream`'s turn.
    async fn turn(&self, stream: &str) -> StreamTurn<'_> {
        let guard = self.stream_lock(stream).lock_owned().await;
        StreamTurn { member: self, stream: stream.to_owned(), guard: Some(guard) }
    }

    /// `stream`'s turn if nobody has it.
    fn try_turn(&self, stream: &str) -> Option<StreamTurn<'_>> {
        let guard = self.stream_lock(stream).try_lock_owned().ok();
        let turn = StreamTurn { member: self, stream: stream.to_owned(), guard };
        turn.guard.is_some().then_some(turn)
    }

    /// A registry call (operation `op`, counted) that gives up after `limit`.
    async fn call<T>(
        &self,
        op: &'static str,
        limit: Duration,
        call: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        self.operations.get_or_create(&OperationLabel { op }).inc();
        timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(RegistryError(format!("no answer within {limit:?}"))))
    }

    /// The node serving `stream`, if another node holds its live, open or done lease and it has
    /// not expired as this node has watched it: its node id and URL.
    pub fn holder_of(&self, stream: &str) -> Option<(String, String)> {
        let seen = self.seen();
        let seen = seen.get(stream)?;
        let fresh = seen.since.elapsed() < self.config.lease_time;
        (fresh && seen.lease.holder != self.config.member.holder)
            .then(|| (seen.lease.node.clone(), seen.lease.url.clone()))
    }

    /// Every live, open or done lease as last read, by stream name.
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

    /// The live, open or done lease of `stream` as last read, unless it expired.
    pub fn lease(&self, stream: &str) -> Option<Lease> {
        let seen = self.seen();
        let seen = seen.get(stream)?;
        (seen.since.elapsed() < self.config.lease_time).then(|| seen.lease.clone())
    }

    /// Asks the node publishing `stream` to disconnect its publisher; whether another node
    /// publishes it.
    pub async fn kick(&self, stream: &str) -> bool {
        if self.holder_of(stream).is_none() {
            return false;
        }
        let limit = self.config.lease_time;
        match self.call("request_kick", limit, self.registry.request_kick(stream)).await {
            Ok(live) => live,
            Err(e) => {
                warn!(%stream, "asking the stream's node to kick its publisher: {e}");
                false
            }
        }
    }

    /// Takes `stream`'s lease for a publish here, as `policy` says when another node
    /// publishes it. The returned claim holds the stream's turn until the publish has
    /// claimed the stream here, and says where the numbering continues from.
    pub async fn acquire(
        &self,
        stream: &str,
        policy: TakeoverPolicy,
        private: bool,
    ) -> Result<LeaseClaim<'_>, LeaseRefusal> {
        let turn = self.turn(stream).await;
        if !self.valid() {
            return Err(LeaseRefusal::Unavailable("this node's leases are not renewed".into()));
        }
        let me = &self.config.member;
        let limit = self.config.lease_time;
        let unavailable = |e: RegistryError| LeaseRefusal::Unavailable(e.0);
        // A few rounds: each lost race means another node changed the lease meanwhile.
        for _ in 0..3 {
            let lease =
                self.call("get", limit, self.registry.get(stream)).await.map_err(unavailable)?;
            let Some(lease) = lease else {
                let created = self.registry.create(stream, me, private);
                if self.call("create", limit, created).await.map_err(unavailable)? {
                    return Ok(self.claimed(turn, None));
                }
                continue;
            };
            let from = match lease.state {
                // Ours already (a publish here, or open for its reconnect window here).
                _ if lease.holder == me.holder => None,
                LeaseState::Open | LeaseState::Done | LeaseState::Ended => Some(lease.numbering),
                LeaseState::Live => return self.take_live(turn, lease, policy, private).await,
            };
            let taken = self.registry.take(stream, me, lease.revision, None, private);
            if self.call("take", limit, taken).await.map_err(unavailable)? {
                return Ok(self.claimed(turn, from));
            }
        }
        Err(LeaseRefusal::HeldElsewhere(stream.to_owned()))
    }

    /// Takes the lease of a stream another node publishes: at once (`Replace`), then waits
    /// for that node to hand over or for its lease time; or (`Refuse`) only once that node
    /// has stopped renewing.
    async fn take_live<'a>(
        &'a self,
        turn: StreamTurn<'a>,
        mut lease: Lease,
        policy: TakeoverPolicy,
        private: bool,
    ) -> Result<LeaseClaim<'a>, LeaseRefusal> {
        let stream = turn.stream.clone();
        let me = &self.config.member;
        let lease_time = self.config.lease_time;
        let unavailable = |e: RegistryError| LeaseRefusal::Unavailable(e.0);
        if policy == TakeoverPolicy::Refuse {
            // Its holder renews every interval: a change means it is alive.
            let watched = self
                .seen()
                .get(&stream)
                .filter(|s| s.lease.revision == lease.revision)
                .map(|s| s.since);
            let deadline = watched.unwrap_or_else(Instant::now) + lease_time;
            while Instant::now() < deadline {
                sleep(POLL_INTERVAL).await;
                let now = self.call("get", lease_time, self.registry.get(&stream)).await;
                match now.map_err(unavailable)? {
                    Some(now) if now.revision == lease.revision => {}
                    Some(now) => return Err(LeaseRefusal::HeldElsewhere(now.node)),
                    None => return Err(LeaseRefusal::HeldElsewhere(stream)),
                }
            }
        }
        for tries in 1.. {
            let taken =
                self.registry.take(&stream, me, lease.revision, Some(&lease.holder), private);
            if self.call("take", lease_time, taken).await.map_err(unavailable)? {
                break;
            }
            // Replacing, a renewal of the same holder since the read is no reason to give up
            // (refusing, it is: the holder is alive); another holder, or none, is.
            if policy != TakeoverPolicy::Replace || tries >= TAKE_TRIES {
                return Err(LeaseRefusal::HeldElsewhere(lease.node));
            }
            let now = self.call("get", lease_time, self.registry.get(&stream));
            match now.await.map_err(unavailable)? {
                Some(now) if now.holder == lease.holder && now.state == LeaseState::Live => {
                    lease = now;
                }
                _ => return Err(LeaseRefusal::HeldElsewhere(lease.node)),
            }
        }
        info!(%stream, from = %lease.node, "took the stream's lease over from another node");
        // Renewed with the others from now on, while the handover is awaited.
        self.held().insert(stream.clone(), Held { state: LeaseState::Live, recorded: None });
        // The old holder stops at its next renewal and hands over; if it is dead or cut off,
        // it has stopped by the end of its lease time.
        let taken = Instant::now();
        while taken.elapsed() < lease_time {
            sleep(POLL_INTERVAL).await;
            match self.call("get", lease_time, self.registry.get(&stream)).await {
                Ok(Some(now)) if now.holder != me.holder || now.state != LeaseState::Live => {
                    self.held().remove(&stream);
                    return Err(LeaseRefusal::HeldElsewhere(now.node));
                }
                Ok(Some(now)) if now.previous_holder.is_none() => {
                    return Ok(self.claimed(turn, Some(now.numbering)));
                }
                Ok(None) => {
                    self.held().remove(&stream);
                    return Err(LeaseRefusal::HeldElsewhere(stream));
                }
                Ok(Some(_)) => {}
                Err(e) => warn!(%stream, "waiting for a handover: {e}"),
            }
        }
        let numbering = Numbering {
            next_sequence: lease.numbering.next_sequence.saturating_add(self.config.move_margin()),
            ..lease.numbering
        };
        // The wait is over: a late handover must not move the numbering back.
        let update = self.registry.update(&stream, me, LeaseState::Live, Some(numbering));
        if let Err(e) = self.call("update", lease_time, update).await {
            warn!(%stream, "ending a takeover's wait: {e}");
        }
        Ok(self.claimed(turn, Some(numbering)))
    }

    /// The lease of the turn's stream is this node's.
    fn claimed<'a>(&'a self, turn: StreamTurn<'a>, from: Option<Numbering>) -> LeaseClaim<'a> {
        let stream = &turn.stream;
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
            .entry(stream.clone())
            .and_modify(|held| held.state = LeaseState::Live)
            .or_insert(Held { state: LeaseState::Live, recorded: None });
        LeaseClaim { member: self, _turn: turn, from }
    }

    /// Renews every lease, in one operation; when it touched another number of leases than
    /// this node holds, finds out which it lost (their publishers stop, and their numbering
    /// is handed over once they did) and which it holds without knowing.
    async fn renew(&self, ingest: &Ingest) {
        let interval = self.config.renew_interval();
        let me = &self.config.member;
        let sent = Instant::now();
        let renewed = match self.call("renew", interval, self.registry.renew(me)).await {
            Ok(renewed) => renewed,
            Err(e) => {
                ingest.warn_limited(format_args!("renewing this node's stream leases: {e}"));
                return;
            }
        };
        if usize::try_from(renewed).map_or(true, |n| n != self.held().len()) {
            let still = match self.call("held", interval, self.registry.held(me)).await {
                Ok(still) => still.into_iter().collect::<std::collections::HashSet<_>>(),
                Err(e) => {
                    ingest.warn_limited(format_args!("reading this node's stream leases: {e}"));
                    return;
                }
            };
            self.reconcile(ingest, &still);
        }
        *self.valid_until.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(sent + self.config.lease_time.saturating_sub(FENCE_MARGIN));
    }

    /// Stops the publishers of streams whose lease another node took (a stream being decided
    /// here has its own reads); ends leases the registry says this node holds and it does not.
    fn reconcile(&self, ingest: &Ingest, still: &std::collections::HashSet<String>) {
        let me = &self.config.member;
        let known: Vec<String> = self.held().keys().cloned().collect();
        for stream in known.into_iter().filter(|stream| !still.contains(stream)) {
            let Some(turn) = self.try_turn(&stream) else { continue };
            if self.held().remove(&stream).is_none() {
                continue;
            }
            info!(%stream, "another node took the stream over");
            let released = ingest.registry.stop(&stream, StopReason::TakenOver);
            let (registry, store, me) =
                (Arc::clone(&self.registry), Arc::clone(&ingest.store), me.clone());
            let operations = self.operations.clone();
            let limit = self.config.lease_time;
            drop(turn);
            tokio::spawn(async move {
                if let Some(mut released) = released {
                    let _ = released.wait_for(|released| *released).await;
                }
                operations.get_or_create(&OperationLabel { op: "hand_over" }).inc();
                let handed = registry.hand_over(&stream, &me, store.numbering(&stream));
                match timeout(limit, handed).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(%stream, "handing the stream over: {e}"),
                    Err(_) => warn!(%stream, "handing the stream over: no answer in time"),
                }
            });
        }
        let unknown: Vec<String> =
            still.iter().filter(|stream| !self.held().contains_key(*stream)).cloned().collect();
        for stream in unknown {
            let Some(turn) = self.try_turn(&stream) else { continue };
            if self.held().contains_key(&stream) {
                continue;
            }
            let (registry, me) = (Arc::clone(&self.registry), me.clone());
            let numbering = ingest.store.numbering(&stream);
            let limit = self.config.renew_interval();
            drop(turn);
            self.operations.get_or_create(&OperationLabel { op: "update" }).inc();
            tokio::spawn(async move {
                let ended = registry.update(&stream, &me, LeaseState::Ended, numbering);
                if let Ok(Ok(())) = timeout(limit, ended).await {
                    info!(%stream, "ended a lease this node held without publishing the stream");
                }
            });
        }
    }

    /// Waits until this node's leases may have expired without a renewal, then stops every
    /// publisher here, and keeps stopping any (a publish decided meanwhile) until a renewal
    /// succeeds again. Runs beside the renewals, so a registry that hangs cannot delay it.
    async fn fence(&self, ingest: &Ingest) {
        loop {
            let until = *self.valid_until.lock().unwrap_or_else(PoisonError::into_inner);
            match until {
                Some(until) if Instant::now() < until => tokio::time::sleep_until(until).await,
                None if self.held().is_empty() => sleep(self.config.renew_interval()).await,
                _ => {
                    {
                        let mut valid =
                            self.valid_until.lock().unwrap_or_else(PoisonError::into_inner);
                        if valid.is_some_and(|until| Instant::now() < until) {
                            continue;
                        }
                        *valid = None;
                    }
                    // The leases stay listed as held: once the registry answers again, their
                    // states follow the streams (open or ended) and a takeover meanwhile shows
                    // as a loss.
                    let streams: Vec<String> = self.held().keys().cloned().collect();
                    for stream in streams {
                        if ingest.registry.stop(&stream, StopReason::LeaseLost).is_some() {
                            warn!(%stream, "stream stopped: its lease could not be renewed");
                        }
                    }
                    sleep(POLL_INTERVAL).await;
                }
            }
        }
    }

    /// Tells the registry which held streams stopped here (open for the reconnect window,
    /// or ended), and writes the numbering of live streams that moved on.
    async fn upkeep(&self, ingest: &Ingest) {
        let interval = self.config.renew_interval();
        let me = &self.config.member;
        let streams: Vec<String> = self.held().keys().cloned().collect();
        for stream in streams {
            let Some(_turn) = self.try_turn(&stream) else { continue };
            let (state, recorded) = match self.held().get(&stream) {
                Some(held) => (held.state, held.recorded),
                None => continue,
            };
            let now = if ingest.store.is_live(&stream) {
                LeaseState::Live
            } else if ingest.store.is_open(&stream) {
                LeaseState::Open
            } else if ingest.store.contains(&stream) {
                LeaseState::Done
            } else {
                LeaseState::Ended
            };
            let numbering = ingest.store.numbering(&stream);
            let due = now == LeaseState::Live
                && recorded.is_none_or(|(_, at)| at.elapsed() >= NUMBERING_INTERVAL)
                && numbering.is_some()
                && recorded.map(|(n, _)| n) != numbering;
            if now == state && !due {
                continue;
            }
            let update = self.registry.update(&stream, me, now, numbering);
            match self.call("update", interval, update).await {
                Ok(()) => {
                    let mut held = self.held();
                    if now == LeaseState::Ended {
                        held.remove(&stream);
                    } else if let Some(held) = held.get_mut(&stream) {
                        held.state = now;
                        held.recorded = numbering.map(|n| (n, Instant::now()));
                    }
                }
                Err(e) => ingest.warn_limited(format_args!("updating {stream}'s lease: {e}")),
            }
        }
    }

    /// Reads the registry: revisions that changed restart their watch; leases whose
    /// revision stayed for the lease time are ended; kicks asked of this node are done.
    async fn read_registry(&self, ingest: &Ingest) {
        let interval = self.config.renew_interval();
        let leases = match self.call("list", interval, self.registry.list()).await {
            Ok(leases) => leases,
            Err(e) => {
                ingest.warn_limited(format_args!("reading the stream registry: {e}"));
                return;
            }
        };
        let now = Instant::now();
        let me = &self.config.member.holder;
        for lease in leases.iter().filter(|l| l.kick_requested && &l.holder == me) {
            if ingest.registry.stop(&lease.stream, StopReason::Kicked).is_some() {
                info!(stream = %lease.stream, "publisher kicked at another node's request");
            }
        }
        let mut stale = Vec::new();
        {
            let mut seen = self.seen();
            let mut next = HashMap::with_capacity(leases.len());
            for lease in leases {
                let since = match seen.remove(&lease.stream) {
                    Some(old) if old.lease.revision == lease.revision => old.since,
                    _ => now,
                };
                if now.saturating_duration_since(since) >= self.config.lease_time
                    && &lease.holder != me
                {
                    stale.push((lease.stream.clone(), lease.revision));
                }
                next.insert(lease.stream.clone(), Seen { lease, since });
            }
            *seen = next;
        }
        let margin = self.config.move_margin();
        for (stream, revision) in stale {
            if self
                .call("expire", interval, self.registry.expire(&stream, revision, margin))
                .await
                .is_ok()
            {
                info!(%stream, "ended a lease whose holder stopped renewing it");
            }
        }
    }

    /// Tells the registry that `stream`, published here, was made private or public, so the
    /// other nodes list it as it is (a failure is logged; the next publish writes it again).
    pub async fn set_private(&self, stream: &str, private: bool) {
        let set = self.registry.set_private(stream, &self.config.member, private);
        if let Err(e) = self.call("set_private", self.config.renew_interval(), set).await {
            warn!(%stream, "the stream's visibility not written to the registry: {e}");
        }
    }

    /// Ends every lease this node holds (at shutdown, once its streams ended), all at once
    /// and within one renewal interval in all: a node that holds many leases and cannot
    /// reach the registry does not hold its exit up by an interval per lease (a lease not
    /// released expires as any lease of a node that stopped renewing).
    pub async fn release_all(&self, ingest: &Ingest) {
        let streams: Vec<String> = self.held().keys().cloned().collect();
        let mut updates = tokio::task::JoinSet::new();
        for stream in streams {
            let numbering = ingest.store.numbering(&stream);
            let (registry, me) = (Arc::clone(&self.registry), self.config.member.clone());
            self.operations.get_or_create(&OperationLabel { op: "update" }).inc();
            updates.spawn(async move {
                let result = registry.update(&stream, &me, LeaseState::Ended, numbering).await;
                (stream, result)
            });
        }
        let limit = self.config.renew_interval();
        let released = timeout(limit, async {
            while let Some(done) = updates.join_next().await {
                if let Ok((stream, Err(e))) = done {
                    warn!(%stream, "releasing the stream's lease: {e}");
                }
            }
        });
        if released.await.is_err() {
            warn!(left = updates.len(), "leases not released within {limit:?}: they expire");
        }
        self.held().clear();
    }
}

/// Runs `ingest`'s cluster membership until `shutdown` turns true: renewals, the fence, and
/// the upkeep and reading of the registry, each on its own timer.
pub async fn run(ingest: Arc<Ingest>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(member) = ingest.cluster.clone() else { return };
    let every = |interval: Duration| {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    };
    let interval = member.config.renew_interval();
    let renewing = async {
        let mut ticks = every(interval);
        loop {
            ticks.tick().await;
            member.renew(&ingest).await;
        }
    };
    let upkeep = async {
        let mut ticks = every(interval);
        loop {
            ticks.tick().await;
            member.upkeep(&ingest).await;
            member.read_registry(&ingest).await;
        }
    };
    tokio::select! {
        () = renewing => {}
        () = upkeep => {}
        () = member.fence(&ingest) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A registry in memory that can be made unreachable (the fault a test cannot get from
    /// a real MongoDB on cue); tests/cluster.rs runs the real one.
    #[derive(Debug, Default)]
    struct Memory {
        leases: Mutex<HashMap<String, Lease>>,
        down: AtomicBool,
        /// Updates never answer (a database that takes connections and hangs).
        hung: AtomicBool,
        /// The holder's renewal lands just before the next `take` (a race a real database
        /// gives only by chance).
        renewal_before_take: AtomicBool,
    }

    impl Memory {
        fn check(&self) -> Result<(), RegistryError> {
            match self.down.load(Ordering::SeqCst) {
                true => Err(RegistryError("unreachable".into())),
                false => Ok(()),
            }
        }

        fn with<T>(
            &self,
            f: impl FnOnce(&mut HashMap<String, Lease>) -> T,
        ) -> Result<T, RegistryError> {
            self.check()?;
            Ok(f(&mut self.leases.lock().unwrap()))
        }
    }

    #[async_trait]
    impl StreamRegistry for Memory {
        async fn get(&self, stream: &str) -> Result<Option<Lease>, RegistryError> {
            self.with(|l| l.get(stream).cloned())
        }
        async fn create(
            &self,
            stream: &str,
            me: &Member,
            private: bool,
        ) -> Result<bool, RegistryError> {
            self.with(|l| {
                if l.contains_key(stream) {
                    return false;
                }
                let lease = Lease {
                    stream: stream.into(),
                    node: me.node.clone(),
                    holder: me.holder.clone(),
                    url: me.url.clone(),
                    since: SystemTime::now(),
                    revision: 0,
                    state: LeaseState::Live,
                    previous_holder: None,
                    numbering: Numbering::default(),
                    private,
                    kick_requested: false,
                };
                l.insert(stream.into(), lease);
                true
            })
        }
        async fn take(
            &self,
            stream: &str,
            me: &Member,
            revision: u64,
            from: Option<&str>,
            private: bool,
        ) -> Result<bool, RegistryError> {
            let renewed = self.renewal_before_take.swap(false, Ordering::SeqCst);
            self.with(|l| match l.get_mut(stream) {
                Some(lease) if renewed => {
                    lease.revision += 1;
                    false
                }
                Some(lease) if lease.revision == revision => {
                    lease.node = me.node.clone();
                    lease.holder = me.holder.clone();
                    lease.url = me.url.clone();
                    lease.state = LeaseState::Live;
                    lease.previous_holder = from.map(str::to_owned);
                    lease.private = private;
                    lease.revision += 1;
                    true
                }
                _ => false,
            })
        }
        async fn renew(&self, me: &Member) -> Result<u64, RegistryError> {
            self.with(|l| {
                let mine = l
                    .values_mut()
                    .filter(|x| x.holder == me.holder && x.state != LeaseState::Ended);
                mine.map(|x| x.revision += 1).count() as u64
            })
        }
        async fn held(&self, me: &Member) -> Result<Vec<String>, RegistryError> {
            self.with(|l| {
                let mine =
                    l.values().filter(|x| x.holder == me.holder && x.state != LeaseState::Ended);
                mine.map(|x| x.stream.clone()).collect()
            })
        }
        async fn update(
            &self,
            stream: &str,
            me: &Member,
            state: LeaseState,
            numbering: Option<Numbering>,
        ) -> Result<(), RegistryError> {
            if self.hung.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.with(|l| {
                if let Some(lease) = l.get_mut(stream).filter(|x| x.holder == me.holder) {
                    lease.state = state;
                    lease.previous_holder = None;
                    lease.numbering = numbering.unwrap_or(lease.numbering);
                    lease.revision += 1;
                }
            })
        }
        async fn set_private(
            &self,
            stream: &str,
            me: &Member,
            private: bool,
        ) -> Result<(), RegistryError> {
            self.with(|l| {
                if let Some(lease) = l.get_mut(stream).filter(|x| x.holder == me.holder) {
                    lease.private = private;
                    lease.revision += 1;
                }
            })
        }
        async fn hand_over(
            &self,
            stream: &str,
            me: &Member,
            numbering: Option<Numbering>,
        ) -> Result<(), RegistryError> {
            self.with(|l| {
                let previous = Some(me.holder.as_str());
                if let Some(lease) =
                    l.get_mut(stream).filter(|x| x.previous_holder.as_deref() == previous)
                {
                    lease.previous_holder = None;
                    lease.numbering = numbering.unwrap_or(lease.numbering);
                    lease.revision += 1;
                }
            })
        }
        async fn expire(
            &self,
            stream: &str,
            revision: u64,
            margin: u64,
        ) -> Result<(), RegistryError> {
            self.with(|l| {
                if let Some(lease) = l.get_mut(stream).filter(|x| x.revision == revision) {
                    lease.state = LeaseState::Ended;
                    lease.numbering.next_sequence += margin;
                    lease.revision += 1;
                }
            })
        }
        async fn list(&self) -> Result<Vec<Lease>, RegistryError> {
            self.with(|l| l.values().filter(|x| x.state != LeaseState::Ended).cloned().collect())
        }
        async fn request_kick(&self, stream: &str) -> Result<bool, RegistryError> {
            self.with(|l| l.get_mut(stream).map(|x| x.kick_requested = true).is_some())
        }
    }

    const LEASE: Duration = Duration::from_secs(5);

    fn node(name: &str, registry: &Arc<Memory>) -> Ingest {
        let dir = std::env::temp_dir()
            .join(format!("rtmp-hls-cluster-unit-{name}-{}", std::process::id()));
        let keys = Arc::new(auth::file_key_store::FileKeyStore::open(&dir).unwrap());
        let authorizer =
            auth::Authorizer::new(keys, None, Default::default(), Duration::from_secs(1));
        let events = Arc::new(crate::LogSink::new(crate::events::Envelope::new(name)));
        let store = Arc::new(stream_store::StreamStore::new(stream_store::StoreConfig::default()));
        let mut ingest = Ingest::new(Default::default(), store, Arc::new(authorizer), events);
        let config = ClusterConfig {
            member: Member::new(name, format!("http://{name}")),
            lease_time: LEASE,
        };
        ingest.set_cluster(Arc::new(ClusterMember::new(
            config,
            Arc::clone(registry) as Arc<dyn StreamRegistry>,
        )));
        ingest
    }

    fn segment() -> packager::Segment {
        packager::Segment {
            data: bytes::Bytes::from_static(&[0x47; 188]),
            sink_len: 0,
            sink_id: 0,
            duration: Duration::from_secs(2),
            discontinuity: false,
            independent: true,
            start: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_node_is_fenced_before_another_calls_its_lease_expired() {
        let registry = Arc::new(Memory::default());
        let (a, b) = (node("a", &registry), node("b", &registry));
        let (ma, mb) = (a.cluster().unwrap(), b.cluster().unwrap());
        ma.renew(&a).await;
        let claim = ma.acquire("cam", TakeoverPolicy::Replace, false).await.unwrap();
        assert_eq!(claim.from, None);
        let publication = a.store.begin("cam", 1, 10).unwrap();
        assert!(claim.confirm());
        ma.renew(&a).await;
        mb.renew(&b).await;
        mb.read_registry(&b).await;
        assert_eq!(mb.holder_of("cam"), Some(("a".into(), "http://a".into())));

        // A loses the registry just after a renewal that B saw.
        registry.down.store(true, Ordering::SeqCst);
        let cut = Instant::now();
        let fence = async { ma.fence(&a).await };
        let watch = async {
            let mut expired_after = None;
            loop {
                sleep(Duration::from_millis(100)).await;
                registry.down.store(false, Ordering::SeqCst);
                mb.read_registry(&b).await;
                registry.down.store(true, Ordering::SeqCst);
                if registry.leases.lock().unwrap()["cam"].state == LeaseState::Ended {
                    expired_after.get_or_insert(cut.elapsed());
                    break expired_after;
                }
            }
        };
        let expired = tokio::select! {
            () = fence => unreachable!(),
            expired = watch => expired.unwrap(),
        };
        // By then A's fence had fired.
        assert_eq!(*ma.valid_until.lock().unwrap(), None, "A not fenced when B expired its lease");
        assert!(expired >= LEASE - FENCE_MARGIN, "expired after {expired:?}");
        // B continues past the margin.
        registry.down.store(false, Ordering::SeqCst);
        mb.renew(&b).await;
        let claim = mb.acquire("cam", TakeoverPolicy::Refuse, false).await.unwrap();
        assert_eq!(claim.from.unwrap().next_sequence, mb.config.move_margin());
        drop(publication);
    }

    /// A registry that hangs holds a node's exit up by one renewal interval, not one per
    /// lease; one that answers has every lease ended.
    #[tokio::test(start_paused = true)]
    async fn leases_are_released_at_once_within_one_interval() {
        for hung in [true, false] {
            let registry = Arc::new(Memory::default());
            let a = node(if hung { "r1" } else { "r2" }, &registry);
            let ma = a.cluster().unwrap();
            ma.renew(&a).await;
            let mut publications = Vec::new();
            for n in 0..20 {
                let stream = format!("s{n}");
                let claim = ma.acquire(&stream, TakeoverPolicy::Replace, false).await.unwrap();
                publications.push(a.store.begin(&stream, 1, 100).unwrap());
                assert!(claim.confirm());
            }
            assert_eq!(ma.held().len(), 20);
            registry.hung.store(hung, Ordering::SeqCst);
            let start = Instant::now();
            ma.release_all(&a).await;
            assert!(start.elapsed() <= ma.config.renew_interval(), "{:?}", start.elapsed());
            let leases = registry.leases.lock().unwrap();
            let ended = leases.values().filter(|l| l.state == LeaseState::Ended).count();
            assert_eq!(ended, if hung { 0 } else { 20 });
        }
    }

    /// Two nodes of one registry, both renewed, `a` publishing "cam" live.
    async fn live_on_a(
        a: &str,
        b: &str,
    ) -> (Arc<Memory>, Ingest, Ingest, stream_store::Publication) {
        let registry = Arc::new(Memory::default());
        let (a, b) = (node(a, &registry), node(b, &registry));
        let (ma, mb) = (a.cluster().unwrap(), b.cluster().unwrap());
        ma.renew(&a).await;
        mb.renew(&b).await;
        let claim = ma.acquire("cam", TakeoverPolicy::Replace, false).await.unwrap();
        let publication = a.store.begin("cam", 1, 10).unwrap();
        assert!(claim.confirm());
        (registry, a, b, publication)
    }

    /// `b` takes "cam" over, replacing, while `a` renews half a second in (when it notices
    /// and hands over); then `a` holds nothing.
    async fn take_over_while_a_renews<'b>(
        a: &Ingest,
        b: &'b Ingest,
    ) -> Result<LeaseClaim<'b>, LeaseRefusal> {
        let (ma, mb) = (a.cluster().unwrap(), b.cluster().unwrap());
        let taking = mb.acquire("cam", TakeoverPolicy::Replace, false);
        let renewing = async {
            sleep(Duration::from_millis(500)).await;
            ma.renew(a).await;
        };
        let (claim, ()) = tokio::join!(taking, renewing);
        assert!(claim.is_err() || ma.held().is_empty(), "A still holds it");
        claim
    }

    #[tokio::test(start_paused = true)]
    async fn a_takeover_between_live_nodes_waits_for_the_exact_numbering() {
        let (registry, a, b, publication) = live_on_a("a2", "b2").await;
        for _ in 0..5 {
            publication.push(segment(), SystemTime::now());
        }
        // Recorded while live: behind where the stream will be.
        a.cluster().unwrap().upkeep(&a).await;
        publication.push(segment(), SystemTime::now());

        // B takes it; A notices at its next renewal and hands over where it ended.
        let claim = take_over_while_a_renews(&a, &b).await.unwrap();
        assert_eq!(claim.from, Some(Numbering { next_sequence: 6, discontinuity_sequence: 0 }));
        drop(publication);
        assert_eq!(
            registry.leases.lock().unwrap()["cam"].holder,
            b.cluster().unwrap().member().holder
        );
    }

    /// The holder renewing between a replacing takeover's read and its write (every renewal
    /// moves the revision) does not refuse the takeover; a refusing one it does (the holder
    /// is alive).
    #[tokio::test(start_paused = true)]
    async fn a_renewal_racing_a_takeover_does_not_refuse_it() {
        let (registry, a, b, publication) = live_on_a("a3", "b3").await;
        let mb = b.cluster().unwrap();
        registry.renewal_before_take.store(true, Ordering::SeqCst);
        let refused = mb.acquire("cam", TakeoverPolicy::Refuse, false).await;
        assert!(matches!(refused, Err(LeaseRefusal::HeldElsewhere(_))), "a live holder");

        // (The refusal waited a lease time.)
        mb.renew(&b).await;
        registry.renewal_before_take.store(true, Ordering::SeqCst);
        let claim = take_over_while_a_renews(&a, &b).await;
        assert!(claim.is_ok(), "refused: {:?}", claim.err());
        drop(publication);
        assert_eq!(registry.leases.lock().unwrap()["cam"].holder, mb.member().holder);
    }
}
