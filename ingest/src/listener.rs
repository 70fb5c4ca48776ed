//! The RTMP listener: one tokio task per connection, moving bytes between the socket and the
//! sans-IO [`Session`], asking the key store for publish decisions and feeding media to the
//! packager.
//!
//! Packaging runs inline in the connection task: each frame is remuxed as it is read, so a
//! slow packager slows only its own publisher's socket (TCP pushes back on the encoder) and
//! there is no queue between ingest and packager to bound. A panic in a task ends that
//! connection only; its [`Publication`] and [`PublishGuard`] are dropped while unwinding, so
//! the stream still ends cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use packager::{BeginError, Publication, Remuxer, RemuxerConfig, StreamStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{Event, EventSink, PublishGuard, RejectReason, StopReason};
use crate::key_store::{KeyStore, redact};
use crate::limits::{ConnectionCounter, Limits, LogBudget, Verdict};
use crate::rtmp::session::{Action, Session, SessionError};

/// Socket read buffer per connection.
const READ_BUFFER: usize = 64 << 10;
/// Refusal and overload log lines allowed per [`LOG_WINDOW`]; the rest are counted.
const LOG_LINES_PER_WINDOW: u64 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// onStatus codes sent on refusal.
const CODE_BAD_NAME: &str = "NetStream.Publish.BadName";
const CODE_FAILED: &str = "NetStream.Publish.Failed";

/// Settings of the RTMP side.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The only application publishers may use (`live` in `rtmp://host/live`).
    pub app: String,
    /// Packaging settings for each publish.
    pub remuxer: RemuxerConfig,
    /// Connection, stream and time limits.
    pub limits: Limits,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            app: "live".to_owned(),
            remuxer: RemuxerConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// Everything a connection task needs.
pub struct Ingest {
    /// Settings.
    pub config: IngestConfig,
    /// Where publishes write their segments.
    pub store: Arc<StreamStore>,
    /// Who may publish.
    pub keys: Arc<dyn KeyStore>,
    /// Where lifecycle events go.
    pub events: Arc<dyn EventSink>,
    connections: Arc<ConnectionCounter>,
    log_budget: LogBudget,
}

impl Ingest {
    /// The RTMP side over `store`, authorising with `keys`, reporting to `events`.
    pub fn new(
        config: IngestConfig,
        store: Arc<StreamStore>,
        keys: Arc<dyn KeyStore>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            config,
            store,
            keys,
            events,
            connections: Arc::new(ConnectionCounter::default()),
            log_budget: LogBudget::new(LOG_LINES_PER_WINDOW, LOG_WINDOW),
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
}

/// An accepted publish.
struct Active {
    publication: Publication,
    remuxer: Remuxer,
    guard: PublishGuard,
    last_media: Instant,
    /// Packager errors already logged, so a broken track logs once, not per frame.
    logged: Vec<packager::Error>,
    /// Whether the "frames dropped" notice was logged.
    logged_drops: bool,
}

struct Connection {
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
        loop {
            let (deadline, late) = self.deadline();
            let n = tokio::select! {
                read = timeout_at(deadline, self.socket.read(&mut buf)) => match read {
                    Ok(read) => read?,
                    Err(_) => return Err(late),
                },
                _ = self.stop.wait_for(|stop| *stop) => return Err(ConnectionError::Shutdown),
            };
            if n == 0 {
                return Ok(());
            }
            if let Some(active) = &mut self.active {
                active.guard.bytes += n as u64;
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
                        package(active, kind, timestamp, &payload);
                    }
                }
                Action::Metadata(props) => {
                    let summary: Vec<String> =
                        props.iter().take(16).map(|(k, v)| format!("{k}={v}")).collect();
                    debug!(metadata = %summary.join(" "), "stream metadata");
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
        let limit = ingest.config.limits.auth_timeout;
        let grant = match timeout(limit, ingest.keys.lookup(key)).await {
            Ok(Ok(Some(grant))) => grant,
            Ok(Ok(None)) => {
                return self.refuse(
                    request_id,
                    app,
                    &key_id,
                    RejectReason::InvalidKey,
                    CODE_BAD_NAME,
                    "invalid stream key",
                );
            }
            Ok(Err(e)) => {
                ingest.warn_limited(format_args!("key store failed: {e}"));
                return self.refuse_unavailable(request_id, app, &key_id);
            }
            Err(_) => {
                ingest.warn_limited(format_args!("key store did not answer within {limit:?}"));
                return self.refuse_unavailable(request_id, app, &key_id);
            }
        };
        let generation =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let publication =
            match ingest.store.begin(&grant.stream, generation, ingest.config.limits.max_streams) {
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
        info!(stream = %grant.stream, %app, key = %key_id, "publish accepted");
        tracing::Span::current().record("stream", grant.stream.as_str());
        let guard = PublishGuard::start(Arc::clone(&ingest.events), &grant.stream, app, self.peer);
        self.active = Some(Active {
            publication,
            remuxer: Remuxer::new(ingest.config.remuxer),
            guard,
            last_media: Instant::now(),
            logged: Vec::new(),
            logged_drops: false,
        });
        Ok(actions)
    }

    fn refuse_unavailable(
        &mut self,
        request_id: u32,
        app: &str,
        key_id: &str,
    ) -> Result<Vec<Action>, ConnectionError> {
        self.refuse(
            request_id,
            app,
            key_id,
            RejectReason::KeyStoreUnavailable,
            CODE_FAILED,
            "stream keys cannot be checked right now; try again shortly",
        )
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
        self.ingest.events.emit(Event::PublishRejected {
            reason,
            app: app.to_owned(),
            remote: self.peer,
        });
        self.refused = true;
        Ok(self.session.reject_publish(request_id, code, description)?)
    }

    fn end_publish(&mut self, mut active: Active, reason: StopReason) {
        active.remuxer.finish();
        publish_segments(&mut active);
        active.guard.frames = active.remuxer.stats().frames;
        active.guard.reason = reason;
        info!(stream = %active.publication.name(), reason = reason.as_str(), "publish ended");
        // Dropping the publication ends the playlist; dropping the guard emits the stop.
    }
}

/// Remuxes one media message and publishes any finished segments.
fn package(active: &mut Active, kind: packager::TagKind, timestamp: u32, payload: &[u8]) {
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

/// Moves finished segments from the remuxer to the store.
fn publish_segments(active: &mut Active) {
    while let Some(segment) = active.remuxer.pull() {
        let sequence = active.publication.push(segment, SystemTime::now());
        debug!(stream = %active.publication.name(), sequence, "segment ready");
    }
}
