//! The RTMP listener: one tokio task per connection, moving bytes between the socket and the
//! sans-IO [`Session`], asking the key store for publish decisions and feeding media to the
//! packager.
//!
//! Packaging runs inline in the connection task: each frame is remuxed as it is read, so a
//! slow packager slows only its own publisher's socket (TCP pushes back on the encoder) and
//! there is no queue between ingest and packager to bound. A panic in a task ends that
//! connection only; its [`Publication`] and [`PublishGuard`] are dropped while unwinding, so
//! the stream still ends cleanly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use packager::{BufferPool, Remuxer, RemuxerConfig};
use prometheus_client::metrics::counter::Counter;
use stream_store::{BeginError, Publication, StreamStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{Event, EventSink, MediaInfo, PublishGuard, RejectReason, StopReason};
use crate::hooks::{self, HookConfig, HookMode};
use crate::limits::{ConnectionCounter, Limits, LogBudget, Verdict};
use crate::merged_read;
use crate::metrics::IngestMetrics;
use crate::status::{PublishStatus, StatusBoard};
use auth::authorizer::{Authorizer, Denial};
use auth::key_store::redact;
use auth::key_store::{Grant, validate_stream_name};
use rtmp::session::{Action, Session, SessionError};

/// Socket read buffer per connection.
const READ_BUFFER: usize = 64 << 10;
/// Refusal and overload log lines allowed per [`LOG_WINDOW`]; the rest are counted.
const LOG_LINES_PER_WINDOW: u64 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// onStatus codes sent on refusal.
const CODE_BAD_NAME: &str = "NetStream.Publish.BadName";
const CODE_FAILED: &str = "NetStream.Publish.Failed";

/// What happens when a valid key publishes a stream that is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TakeoverPolicy {
    /// The new publisher takes over: the old session is closed and the playlist continues
    /// after a discontinuity. This is what an encoder reconnecting after a network blip needs
    /// (its old TCP connection may not look dead yet); MediaMTX does the same by default.
    #[default]
    Replace,
    /// The new publisher is refused with `NetStream.Publish.BadName` (Nginx-RTMP's behaviour).
    Refuse,
}

/// How often a live publish re-checks its stored key, so a revocation ends it within this
/// plus the key store's answer time.
pub const REVOCATION_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often each live stream emits `stream_stats` by default.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest span a status refresh computes rates over (segments can be closer together).
const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);
/// How long a takeover waits for the old publisher to let go of the stream.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// Settings of the RTMP side.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The only application publishers may use (`live` in `rtmp://host/live`).
    pub app: String,
    /// Packaging settings for each publish.
    pub remuxer: RemuxerConfig,
    /// Connection, stream and time limits.
    pub limits: Limits,
    /// A second publisher for a live stream.
    pub takeover: TakeoverPolicy,
    /// How often each live stream emits `stream_stats`.
    pub stats_interval: Duration,
    /// Nginx-RTMP-style HTTP callbacks.
    pub hooks: HookConfig,
    /// Media time a live publisher's bytes gather in the socket between reads while no
    /// segment can close (see [`merged_read`]); zero reads every message as it arrives.
    pub max_read_pause: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            app: "live".to_owned(),
            remuxer: RemuxerConfig::default(),
            limits: Limits::default(),
            takeover: TakeoverPolicy::default(),
            stats_interval: STATS_INTERVAL,
            hooks: HookConfig::default(),
            max_read_pause: merged_read::DEFAULT_MAX_READ_PAUSE,
        }
    }
}

/// A live publisher as the registry knows it: its connection id, and how to end it.
type Publisher = (u64, watch::Sender<Option<StopReason>>);

/// Everything a connection task needs.
pub struct Ingest {
    /// Settings.
    pub config: IngestConfig,
    /// Where publishes write their segments.
    pub store: Arc<StreamStore>,
    /// Who may publish.
    pub authorizer: Arc<Authorizer>,
    /// Where lifecycle events go.
    pub events: Arc<dyn EventSink>,
    connections: Arc<ConnectionCounter>,
    log_budget: LogBudget,
    /// The live publishers, by stream name: how to end each (takeover, kick).
    publishers: Mutex<HashMap<String, Publisher>>,
    /// What each stream's latest publish looks like, for the stats API.
    statuses: StatusBoard,
    /// Prometheus metrics of the RTMP side.
    metrics: IngestMetrics,
    /// `on_publish_done` callbacks in flight (each bounded by the hook timeout); waited for
    /// at shutdown so a deploy does not lose them.
    callbacks: Mutex<JoinSet<()>>,
    /// Segment buffers every publish's remuxer writes into and returns to.
    segment_buffers: Arc<BufferPool>,
}

impl Ingest {
    /// The RTMP side over `store`, authorising with `authorizer`, reporting to `events`.
    pub fn new(
        config: IngestConfig,
        store: Arc<StreamStore>,
        authorizer: Arc<Authorizer>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            config,
            store,
            authorizer,
            events,
            connections: Arc::new(ConnectionCounter::default()),
            log_budget: LogBudget::new(LOG_LINES_PER_WINDOW, LOG_WINDOW),
            publishers: Mutex::new(HashMap::new()),
            statuses: StatusBoard::default(),
            metrics: IngestMetrics::default(),
            callbacks: Mutex::new(JoinSet::new()),
            segment_buffers: Arc::default(),
        }
    }

    /// The RTMP side's metrics, to register for scraping.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// The status of each stream's latest publish (live or ended).
    pub fn statuses(&self) -> &StatusBoard {
        &self.statuses
    }

    /// Ends the live publish of `stream` for `reason`; returns whether one was live.
    pub fn end_publish(&self, stream: &str, reason: StopReason) -> bool {
        let publishers = self.publishers.lock().unwrap_or_else(PoisonError::into_inner);
        publishers.get(stream).is_some_and(|(_, kick)| kick.send(Some(reason)).is_ok())
    }

    fn register(&self, stream: &str, id: u64) -> watch::Receiver<Option<StopReason>> {
        let (kick, receiver) = watch::channel(None);
        let mut publishers = self.publishers.lock().unwrap_or_else(PoisonError::into_inner);
        publishers.insert(stream.to_owned(), (id, kick));
        receiver
    }

    fn unregister(&self, stream: &str, id: u64) {
        let mut publishers = self.publishers.lock().unwrap_or_else(PoisonError::into_inner);
        if publishers.get(stream).is_some_and(|(owner, _)| *owner == id) {
            publishers.remove(stream);
        }
    }

    /// Open RTMP connections.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// Logs a refusal-type warning within the log budget.
    fn warn_limited(&self, message: std::fmt::Arguments<'_>) {
        match self.log_budget.allow() {
            Verdict::Log { suppressed: 0 } => warn!("{message}"),
            Verdict::Log { suppressed } => {
                warn!(
                    suppressed,
                    "{message} ({suppressed} similar lines before this one were not logged)"
                );
            }
            Verdict::FirstSuppressed => warn!(
                "{message} (log budget of {LOG_LINES_PER_WINDOW} lines per {LOG_WINDOW:?} reached: \
                 similar lines are counted, not logged, until the window ends)"
            ),
            Verdict::Suppressed => {}
        }
    }
}

/// Accepts RTMP connections until `shutdown` completes; then ends every connection (live
/// streams get their last segment and EXT-X-ENDLIST) and returns once all have finished, or
/// after `grace`.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    ingest.warn_limited(format_args!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let slot = match ingest.connections.admit(peer.ip(), &ingest.config.limits) {
            Ok(slot) => slot,
            Err(overloaded) => {
                ingest.warn_limited(format_args!("connection from {peer} refused: {overloaded}"));
                drop(socket);
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ingest = Arc::clone(&ingest);
        let stop = stop_rx.clone();
        let span = info_span!("rtmp", conn = id, peer = %peer, stream = tracing::field::Empty);
        tasks.spawn(
            async move {
                let _slot = slot;
                let _ = socket.set_nodelay(true);
                match Connection::new(ingest, socket, peer, id, stop).run().await {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => info!(error = %e, "connection closed"),
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = tasks.len();
    if open > 0 {
        info!(connections = open, "ending RTMP connections");
    }
    let drained = timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(connections = tasks.len(), "connections still open after {grace:?}; aborting them");
        tasks.shutdown().await;
    }
    // The publishes that just ended have their on_publish_done in flight.
    let mut callbacks =
        std::mem::take(&mut *ingest.callbacks.lock().unwrap_or_else(PoisonError::into_inner));
    if !callbacks.is_empty() {
        let limit = ingest.config.hooks.timeout + Duration::from_millis(100);
        let sent = timeout(limit, async { while callbacks.join_next().await.is_some() {} }).await;
        if sent.is_err() {
            warn!(callbacks = callbacks.len(), "on_publish_done callbacks unfinished at exit");
        }
    }
    Ok(())
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] SessionError),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no publish request within {0:?}")]
    PublishTimeout(Duration),
    #[error("no audio or video for {0:?}")]
    NoMedia(Duration),
    #[error("client did not read for {0:?}")]
    WriteTimeout(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("publish ended: {}", .0.as_str())]
    Ended(StopReason),
}

/// An accepted publish.
struct Active {
    /// Told to end the publish (takeover, revocation, kick).
    kick: watch::Receiver<Option<StopReason>>,
    /// Re-checks a stored key until the publish ends.
    revocation_watch: Option<tokio::task::JoinHandle<()>>,
    publication: Publication,
    remuxer: Remuxer,
    /// Pairs `publish_started` with `publish_stopped`; made when the first frame is packaged.
    guard: Option<PublishGuard>,
    /// This publish as the stats API shows it, and the counters at its last rate refresh.
    status: PublishStatus,
    status_base: (Instant, u64, u64),
    /// What the started event needs that the remuxer does not know.
    stream: String,
    /// The publishing name as the client sent it (the key: secret), for `on_publish_done`.
    published_name: String,
    owner: Option<String>,
    app: String,
    /// Picture size and frame rate from the encoder's metadata.
    metadata: (Option<u32>, Option<u32>, Option<f64>),
    /// Bytes received since the publish began.
    bytes: u64,
    /// This stream's byte and frame counters, and the segment counter (metrics).
    counters: (Counter, Counter),
    segment_counter: Counter,
    /// Segments published.
    segments: u64,
    /// When the next `stream_stats` is due, and the counters at the previous one.
    next_stats: Instant,
    stats_base: (Instant, u64, u64),
    last_media: Instant,
    /// Packager errors already logged, so a broken track logs once, not per frame.
    logged: Vec<packager::Error>,
    /// Whether the "frames dropped" notice was logged.
    logged_drops: bool,
}

struct Connection {
    id: u64,
    ingest: Arc<Ingest>,
    socket: TcpStream,
    peer: SocketAddr,
    session: Session,
    active: Option<Active>,
    /// Set once a publish was refused: the connection closes after the reply is sent.
    refused: bool,
    accepted: Instant,
    stop: watch::Receiver<bool>,
}

impl Connection {
    fn new(
        ingest: Arc<Ingest>,
        socket: TcpStream,
        peer: SocketAddr,
        id: u64,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            id,
            ingest,
            socket,
            peer,
            session: Session::new(id as u32 ^ u32::from(peer.port())),
            active: None,
            refused: false,
            accepted: Instant::now(),
            stop,
        }
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let result = self.read_loop().await;
        if let Some(active) = self.active.take() {
            let reason = match &result {
                Ok(()) => StopReason::ClientClosed,
                Err(ConnectionError::NoMedia(_)) => StopReason::Timeout,
                Err(ConnectionError::Shutdown) => StopReason::ServerShutdown,
                Err(ConnectionError::Ended(reason)) => *reason,
                Err(_) => StopReason::Error,
            };
            self.end_publish(active, reason);
        }
        let _ = self.socket.shutdown().await;
        result
    }

    /// The instant the current phase must have progressed by, and the error if it has not.
    fn deadline(&self) -> (Instant, ConnectionError) {
        let limits = &self.ingest.config.limits;
        if let Some(active) = &self.active {
            (
                active.last_media + limits.no_media_timeout,
                ConnectionError::NoMedia(limits.no_media_timeout),
            )
        } else if !self.session.handshake_done() {
            (
                self.accepted + limits.handshake_timeout,
                ConnectionError::HandshakeTimeout(limits.handshake_timeout),
            )
        } else {
            (
                self.accepted + limits.publish_timeout,
                ConnectionError::PublishTimeout(limits.publish_timeout),
            )
        }
    }

    async fn read_loop(&mut self) -> Result<(), ConnectionError> {
        let mut buf = vec![0u8; READ_BUFFER];
        // One timer each for the phase deadline and the stats tick, moved as they change: a
        // timer pushed later only updates its instant, where a fresh timeout per read took
        // the timer wheel's lock twice for each of the ~80 messages a second of a stream.
        let (deadline, _) = self.deadline();
        let late_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(late_timer);
        let stats_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(stats_timer);
        // Armed while bytes gather in the socket below its low-water mark (merged reads):
        // when it fires, whatever is queued is read.
        let pause_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(pause_timer);
        let receive_buffer = crate::low_water::receive_buffer(&self.socket).unwrap_or(0);
        let mut pacer = merged_read::ReadPacer::new(
            self.ingest.config.max_read_pause,
            receive_buffer,
            self.ingest.config.limits.no_media_timeout,
        );
        // Shutdown and kick are waited for by futures made once per connection (or publish),
        // not once per read: each new wait joins, and on leaving quits, the channel's waiter
        // list, under a lock the shutdown channel shares with every connection.
        let mut stop = self.stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(shutdown);
        let mut kick: Option<Kick> = None;
        loop {
            match (&self.active, &kick) {
                (Some(active), Some((channel, _))) if active.kick.same_channel(channel) => {}
                (Some(active), _) => {
                    kick = Some((active.kick.clone(), Box::pin(kicked(active.kick.clone()))));
                }
                (None, Some(_)) => kick = None,
                (None, None) => {}
            }
            let (deadline, late) = self.deadline();
            if late_timer.deadline() != deadline {
                late_timer.as_mut().reset(deadline);
            }
            let stats_at = self.active.as_ref().map(|active| active.next_stats);
            if let Some(at) = stats_at
                && stats_timer.deadline() != at
            {
                stats_timer.as_mut().reset(at);
            }
            let n = tokio::select! {
                // Stop and kick first, so a peer that never pauses cannot starve them; then
                // data before the deadline, as a timeout around the read would.
                biased;
                () = &mut shutdown => return Err(ConnectionError::Shutdown),
                reason = async {
                    match kick.as_mut() {
                        Some((_, kicked)) => kicked.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => return Err(ConnectionError::Ended(reason)),
                read = self.socket.read(&mut buf) => Some(read?),
                () = &mut pause_timer, if pacer.low_water() > 1 => {
                    if let Some(mark) = pacer.fallback() {
                        self.set_low_water(mark, &mut pacer)?;
                    }
                    continue;
                }
                () = &mut late_timer => return Err(late),
                () = &mut stats_timer, if stats_at.is_some() => None,
            };
            let Some(n) = n else {
                self.emit_stats();
                continue;
            };
            if n == 0 {
                return Ok(());
            }
            if let Some(active) = &mut self.active {
                active.bytes += n as u64;
                active.counters.0.inc_by(n as u64);
            }
            let actions = self.session.handle_bytes(&buf[..n])?;
            self.perform(actions).await?;
            if let Some(error) = self.session.error() {
                // The good messages before the fault were handled above.
                return Err(error.clone().into());
            }
            if self.refused {
                return Ok(());
            }
            let time_to_cut = self.active.as_ref().and_then(|a| a.remuxer.time_to_cut());
            let now = Instant::now();
            let (next, mark) = pacer.after_read(n, buf.len(), now.into_std(), time_to_cut);
            if let Some(mark) = mark {
                self.set_low_water(mark, &mut pacer)?;
            }
            if let merged_read::NextRead::Gather { fallback, .. } = next {
                pause_timer.as_mut().reset(now + fallback);
            }
        }
    }

    /// Sets the socket's receive low-water mark. If the system refuses a mark above 1, reads
    /// turn immediate (the mark back to 1); if it refuses 1, bytes below the mark it kept
    /// could wait unseen, so the connection ends.
    fn set_low_water(
        &self,
        bytes: usize,
        pacer: &mut merged_read::ReadPacer,
    ) -> Result<(), ConnectionError> {
        match crate::low_water::set(&self.socket, bytes) {
            Ok(()) => Ok(()),
            Err(error) if bytes == 1 => Err(error.into()),
            Err(error) => {
                debug!(%error, "receive low-water mark not set; reading every message");
                pacer.disable();
                // The socket may keep an earlier mark above 1 (marks follow the rate).
                Ok(crate::low_water::set(&self.socket, 1)?)
            }
        }
    }

    /// Performs actions in order; decisions add the actions of their answers.
    async fn perform(&mut self, actions: Vec<Action>) -> Result<(), ConnectionError> {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(bytes) => {
                    let limit = self.ingest.config.limits.write_timeout;
                    timeout(limit, self.socket.write_all(&bytes))
                        .await
                        .map_err(|_| ConnectionError::WriteTimeout(limit))??;
                }
                Action::PublishRequested { request_id, app, key } => {
                    let answer = self.decide(request_id, &app, &key).await?;
                    queue.extend(answer);
                }
                Action::Media { kind, timestamp, payload } => {
                    if let Some(active) = &mut self.active {
                        active.last_media = Instant::now();
                        active.counters.1.inc();
                        let segments = active.segments;
                        package(active, kind, timestamp, &payload);
                        let mut changed = active.segments != segments;
                        if active.guard.is_none() && active.remuxer.stats().frames > 0 {
                            active.status.media = media_info(active);
                            active.guard = Some(went_live(active, &self.ingest.events, self.peer));
                            changed = true;
                        }
                        if changed {
                            refresh_status(active, &self.ingest.statuses, self.id);
                        }
                    }
                }
                Action::Metadata(props) => {
                    let summary: Vec<String> =
                        props.iter().take(16).map(|(k, v)| format!("{k}={v}")).collect();
                    debug!(metadata = %summary.join(" "), "stream metadata");
                    if let Some(active) = &mut self.active {
                        let number = |names: &[&str]| {
                            props
                                .iter()
                                .find(|(k, _)| names.contains(&k.as_str()))
                                .and_then(|(_, v)| v.as_number())
                        };
                        let pixels = |names: &[&str]| {
                            number(names).filter(|n| (1.0..65536.0).contains(n)).map(|n| n as u32)
                        };
                        active.metadata = (
                            pixels(&["width"]),
                            pixels(&["height"]),
                            number(&["framerate", "videoframerate"])
                                .filter(|f| (0.0..1000.0).contains(f)),
                        );
                    }
                }
                Action::PublishEnded => {
                    if let Some(active) = self.active.take() {
                        self.end_publish(active, StopReason::ClientClosed);
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a publish request and answers it.
    async fn decide(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
    ) -> Result<Vec<Action>, ConnectionError> {
        let ingest = Arc::clone(&self.ingest);
        let key_id = redact(key);
        if app != ingest.config.app {
            return self.refuse(
                request_id,
                app,
                &key_id,
                RejectReason::UnknownApp,
                CODE_BAD_NAME,
                "unknown application",
            );
        }
        let hooks = &ingest.config.hooks;
        let hook_only = hooks.mode == HookMode::Only && hooks.on_publish.is_some();
        let asked = Instant::now();
        let decision = if hook_only {
            // Nginx-RTMP's model: the publishing name is the stream, unless the hook renames.
            let name = key.split('?').next().unwrap_or_default().to_owned();
            if ingest.authorizer.admits(self.peer.ip()) {
                Ok(Grant { stream: name, owner: None, revocable: false })
            } else {
                Err(Denial::RateLimited)
            }
        } else {
            ingest.authorizer.authorize(self.peer.ip(), key).await
        };
        if !hook_only {
            ingest.metrics.key_lookup.observe(asked.elapsed().as_secs_f64());
        }
        let mut grant = match decision {
            Ok(grant) => grant,
            Err(denial) => {
                let (reason, code) = match &denial {
                    Denial::UnknownKey => (RejectReason::InvalidKey, CODE_BAD_NAME),
                    Denial::Token(_) | Denial::WrongStream => {
                        (RejectReason::InvalidToken, CODE_BAD_NAME)
                    }
                    Denial::RateLimited => (RejectReason::RateLimited, CODE_FAILED),
                    Denial::Unavailable(cause) => {
                        ingest.warn_limited(format_args!("key store unavailable: {cause}"));
                        (RejectReason::KeyStoreUnavailable, CODE_FAILED)
                    }
                };
                return self.refuse(request_id, app, &key_id, reason, code, &denial.to_string());
            }
        };
        if let Some(url) = &hooks.on_publish {
            let call = hooks::Call {
                call: "publish",
                app,
                name: key,
                addr: self.peer.ip(),
                client_id: self.id,
                client: self.session.client_info(),
            };
            let refusal = match hooks::send(url, hooks.method, call.form(), hooks.timeout).await {
                Ok((status, location)) => match hooks::verdict(status, location.as_deref()) {
                    hooks::Verdict::Allow(None) => None,
                    hooks::Verdict::Allow(Some(name)) => {
                        // The name before may be the key (hook-only mode): only the new one.
                        info!(key = %key_id, stream = %name, "on_publish renamed the stream");
                        grant.stream = name;
                        None
                    }
                    hooks::Verdict::Refuse(status) => Some((
                        RejectReason::HookRefused,
                        CODE_BAD_NAME,
                        format!("refused by on_publish (HTTP {status})"),
                    )),
                },
                Err(e) => {
                    let url = url.redacted();
                    ingest.warn_limited(format_args!("on_publish callback to {url} failed: {e}"));
                    Some((
                        RejectReason::HookUnavailable,
                        CODE_FAILED,
                        "the on_publish callback could not be asked".to_owned(),
                    ))
                }
            };
            if let Some((reason, code, description)) = refusal {
                if reason == RejectReason::HookRefused {
                    ingest.authorizer.note_failure(self.peer.ip());
                }
                return self.refuse(request_id, app, &key_id, reason, code, &description);
            }
        }
        // From here on a refusal follows an on_publish that allowed: Nginx-RTMP then sends
        // on_publish_done too, and backends that marked the stream live rely on it.
        let allowed_by_hook = hooks.on_publish.is_some();
        if validate_stream_name(&grant.stream).is_err() {
            // The name may be the key itself (hook-only mode): not in the description.
            let description = "the stream name is not usable (1 to 64 of A-Z a-z 0-9 _ - .)";
            let reason = RejectReason::InvalidKey;
            if allowed_by_hook {
                self.notify_done(app, key);
            }
            return self.refuse(request_id, app, &key_id, reason, CODE_BAD_NAME, description);
        }
        let generation =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let max_streams = ingest.config.limits.max_streams;
        let mut claimed = ingest.store.begin(&grant.stream, generation, max_streams);
        if matches!(claimed, Err(BeginError::AlreadyLive(_)))
            && ingest.config.takeover == TakeoverPolicy::Replace
        {
            info!(stream = %grant.stream, "taking the stream over from its current publisher");
            ingest.end_publish(&grant.stream, StopReason::TakenOver);
            let deadline = Instant::now() + TAKEOVER_WAIT;
            while matches!(claimed, Err(BeginError::AlreadyLive(_))) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                claimed = ingest.store.begin(&grant.stream, generation, max_streams);
            }
        }
        if claimed.is_err() && allowed_by_hook {
            self.notify_done(app, key);
        }
        let publication = match claimed {
            Ok(publication) => publication,
            Err(BeginError::AlreadyLive(_)) => {
                return self.refuse(
                    request_id,
                    app,
                    &key_id,
                    RejectReason::AlreadyLive,
                    CODE_BAD_NAME,
                    "this stream is already being published",
                );
            }
            Err(BeginError::TooManyStreams(_)) => {
                return self.refuse(
                    request_id,
                    app,
                    &key_id,
                    RejectReason::TooManyStreams,
                    CODE_FAILED,
                    "the server is at its limit of live streams",
                );
            }
        };
        let actions = self.session.accept_publish(request_id)?;
        ingest.metrics.publishes_accepted.inc();
        let owner = grant.owner.as_deref().unwrap_or("-");
        info!(stream = %grant.stream, %app, key = %key_id, %owner, "publish accepted");
        tracing::Span::current().record("stream", grant.stream.as_str());
        let kick = ingest.register(&grant.stream, self.id);
        let revocation_watch = grant.revocable.then(|| {
            let (ingest, stream, key, id) =
                (Arc::clone(&ingest), grant.stream.clone(), key.to_owned(), self.id);
            tokio::spawn(watch_revocation(ingest, stream, key, id))
        });
        let now = Instant::now();
        let status =
            PublishStatus::accepted(self.peer, app, grant.owner.clone(), SystemTime::now());
        ingest.statuses.set(&grant.stream, self.id, status.clone(), true);
        self.active = Some(Active {
            status,
            status_base: (now, 0, 0),
            kick,
            revocation_watch,
            publication,
            remuxer: Remuxer::with_pool(ingest.config.remuxer, Arc::clone(&ingest.segment_buffers)),
            guard: None,
            stream: grant.stream.clone(),
            owner: grant.owner.clone(),
            published_name: key.to_owned(),
            app: app.to_owned(),
            metadata: (None, None, None),
            bytes: 0,
            counters: ingest.metrics.stream_counters(&grant.stream),
            segment_counter: ingest.metrics.segments.clone(),
            segments: 0,
            next_stats: now + ingest.config.stats_interval,
            stats_base: (now, 0, 0),
            last_media: now,
            logged: Vec::new(),
            logged_drops: false,
        });
        Ok(actions)
    }

    fn refuse(
        &mut self,
        request_id: u32,
        app: &str,
        key_id: &str,
        reason: RejectReason,
        code: &str,
        description: &str,
    ) -> Result<Vec<Action>, ConnectionError> {
        let reason_name = reason.as_str();
        self.ingest.warn_limited(format_args!(
            "publish refused: {description} (app={app} key={key_id} reason={reason_name})"
        ));
        self.ingest.metrics.rejected(reason);
        self.ingest.events.emit(Event::PublishRejected {
            reason,
            app: app.to_owned(),
            remote: self.peer,
        });
        self.refused = true;
        Ok(self.session.reject_publish(request_id, code, description)?)
    }

    /// Sends `on_publish_done` (if configured) for the publishing name `name`, in a task the
    /// listener waits for at shutdown.
    fn notify_done(&self, app: &str, name: &str) {
        let hooks = &self.ingest.config.hooks;
        let Some(url) = hooks.on_publish_done.clone() else { return };
        let form = hooks::Call {
            call: "publish_done",
            app,
            name,
            addr: self.peer.ip(),
            client_id: self.id,
            client: self.session.client_info(),
        }
        .form();
        let (method, timeout) = (hooks.method, hooks.timeout);
        let mut callbacks = self.ingest.callbacks.lock().unwrap_or_else(PoisonError::into_inner);
        // Finished callbacks are collected here, so the set holds only running ones.
        while callbacks.try_join_next().is_some() {}
        callbacks.spawn(
            async move {
                if let Err(e) = hooks::send(&url, method, form, timeout).await {
                    warn!(error = %e, url = %url.redacted(), "on_publish_done callback failed");
                }
            }
            .in_current_span(),
        );
    }

    /// Emits `stream_stats` for the live publish and schedules the next.
    fn emit_stats(&mut self) {
        let interval = self.ingest.config.stats_interval;
        let Some(active) = &mut self.active else { return };
        let now = Instant::now();
        active.next_stats = now + interval;
        let stats = active.remuxer.stats();
        let (since, bytes_before, frames_before) = active.stats_base;
        active.stats_base = (now, active.bytes, stats.video_frames);
        if active.guard.is_none() {
            return;
        }
        let seconds = now.duration_since(since).as_secs_f64().max(0.001);
        self.ingest.events.emit(Event::StreamStats {
            stream: active.stream.clone(),
            bitrate_bps: ((active.bytes - bytes_before) as f64 * 8.0 / seconds) as u64,
            fps: ((stats.video_frames - frames_before) as f64 / seconds * 100.0).round() / 100.0,
            keyframe_interval_ms: stats.keyframe_interval_ms,
            segments: active.segments,
            viewers: self.ingest.store.viewers(&active.stream, now.into_std()),
        });
    }

    fn end_publish(&mut self, mut active: Active, reason: StopReason) {
        if let Some(watch) = active.revocation_watch.take() {
            watch.abort();
        }
        self.ingest.unregister(active.publication.name(), self.id);
        self.ingest.metrics.stream_ended(active.publication.name());
        active.remuxer.finish();
        publish_segments(&mut active);
        refresh_status(&mut active, &self.ingest.statuses, self.id);
        active.status.ended = Some((SystemTime::now(), reason));
        self.ingest.statuses.set(&active.stream, self.id, active.status.clone(), false);
        if let Some(guard) = &mut active.guard {
            guard.frames = active.remuxer.stats().frames;
            guard.bytes = active.bytes;
            guard.reason = reason;
        }
        info!(stream = %active.publication.name(), reason = reason.as_str(), "publish ended");
        self.notify_done(&active.app, &active.published_name);
        // Dropping the publication ends the playlist; dropping the guard emits the stop.
    }
}

/// A publish's kick channel, and the wait on it.
type Kick = (
    watch::Receiver<Option<StopReason>>,
    std::pin::Pin<Box<dyn Future<Output = StopReason> + Send>>,
);

/// Completes with the reason when the publish is told to end; never without one.
async fn kicked(mut kick: watch::Receiver<Option<StopReason>>) -> StopReason {
    let reason = kick.wait_for(Option::is_some).await.ok().and_then(|reason| *reason);
    match reason {
        Some(reason) => reason,
        // The sender is gone (cannot happen while registered): never end on it.
        None => std::future::pending().await,
    }
}

/// Re-checks the key of a live publish every [`REVOCATION_CHECK_INTERVAL`] and ends the
/// publish once the key is revoked. A key store that cannot answer does not end it.
async fn watch_revocation(ingest: Arc<Ingest>, stream: String, key: String, id: u64) {
    let mut tick = tokio::time::interval(REVOCATION_CHECK_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        if ingest.authorizer.still_valid(&key).await == Some(false) {
            let publishers = ingest.publishers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((owner, kick)) = publishers.get(&stream)
                && *owner == id
            {
                info!(%stream, "key revoked: ending the publish");
                let _ = kick.send(Some(StopReason::Revoked));
            }
            return;
        }
    }
}

/// Remuxes one media message and publishes any finished segments.
fn package(active: &mut Active, kind: rtmp::MediaKind, timestamp: u32, payload: &[u8]) {
    let kind = match kind {
        rtmp::MediaKind::Audio => packager::TagKind::Audio,
        rtmp::MediaKind::Video => packager::TagKind::Video,
    };
    if let Err(e) = active.remuxer.push(kind, timestamp, payload)
        && !active.logged.contains(&e)
    {
        warn!(stream = %active.publication.name(), error = %e, "media dropped (logged once per kind)");
        active.logged.push(e);
    }
    if !active.logged_drops && active.remuxer.stats().frames_dropped > 0 {
        active.logged_drops = true;
        info!(
            stream = %active.publication.name(),
            "dropping frames until a sequence header and a keyframe (logged once; see stats)"
        );
    }
    publish_segments(active);
}

/// Refreshes the status snapshot of `active` (counters, and rates since the last refresh at
/// least [`MIN_RATE_WINDOW`] ago) and posts it on `board`.
fn refresh_status(active: &mut Active, board: &StatusBoard, id: u64) {
    let now = Instant::now();
    let stats = active.remuxer.stats();
    let (since, bytes_before, frames_before) = active.status_base;
    let span = now.duration_since(since);
    if span >= MIN_RATE_WINDOW {
        let seconds = span.as_secs_f64();
        let status = &mut active.status;
        status.bitrate_bps = ((active.bytes - bytes_before) as f64 * 8.0 / seconds) as u64;
        status.fps =
            ((stats.video_frames - frames_before) as f64 / seconds * 100.0).round() / 100.0;
        active.status_base = (now, active.bytes, stats.video_frames);
    }
    let status = &mut active.status;
    status.bytes = active.bytes;
    status.frames = stats.frames;
    status.segments = active.segments;
    status.keyframe_interval_ms = stats.keyframe_interval_ms;
    board.set(&active.stream, id, status.clone(), false);
}

/// What is known of the media of `active`.
fn media_info(active: &Active) -> MediaInfo {
    let audio = active.remuxer.audio_config();
    MediaInfo {
        video_codec: active.remuxer.video_config().map(|c| c.codec_string()),
        width: active.metadata.0,
        height: active.metadata.1,
        fps: active.metadata.2,
        audio_codec: audio.map(|a| a.codec_string()),
        audio_sample_rate: audio.map(|a| a.sample_rate()),
        audio_channels: audio.and_then(|a| a.channels()),
    }
}

/// The stream's first frame is packaged: emits `publish_started` with what is known of the
/// media, and returns the guard that will emit the stop.
fn went_live(active: &Active, events: &Arc<dyn EventSink>, peer: SocketAddr) -> PublishGuard {
    PublishGuard::start(
        Arc::clone(events),
        &active.stream,
        active.owner.clone(),
        &active.app,
        peer,
        active.status.media.clone(),
    )
}

/// Moves finished segments from the remuxer to the store.
fn publish_segments(active: &mut Active) {
    while let Some(segment) = active.remuxer.pull() {
        active.segments += 1;
        active.segment_counter.inc();
        let sequence = active.publication.push(segment, SystemTime::now());
        debug!(stream = %active.publication.name(), sequence, "segment ready");
    }
}
