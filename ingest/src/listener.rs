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

use packager::{Publication, Remuxer, RemuxerConfig, StreamStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{Event, EventSink, PublishGuard, RejectReason, StopReason};
use crate::key_store::{KeyStore, redact};
use crate::rtmp::session::{Action, Session, SessionError};

/// Time from TCP accept to the publish request (handshake, connect, createStream, publish).
/// Real encoders need well under a second; idle sockets are closed after this.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped and its stream ended.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the key store may take to answer; the publish is refused after that.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one write to a client may block (clients that stop reading are dropped).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read buffer per connection.
const READ_BUFFER: usize = 64 << 10;

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
    /// See [`PUBLISH_DEADLINE`].
    pub publish_deadline: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            app: "live".to_owned(),
            remuxer: RemuxerConfig::default(),
            publish_deadline: PUBLISH_DEADLINE,
            idle_timeout: IDLE_TIMEOUT,
            auth_timeout: AUTH_TIMEOUT,
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
}

/// Accepts RTMP connections until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ingest = Arc::clone(&ingest);
        let span = info_span!("rtmp", conn = id, peer = %peer, stream = tracing::field::Empty);
        tokio::spawn(
            async move {
                let _ = socket.set_nodelay(true);
                match Connection::new(ingest, socket, peer, id).run().await {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => info!(error = %e, "connection closed"),
                }
            }
            .instrument(span),
        );
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] SessionError),
    #[error("no publish request within {0:?}")]
    PublishDeadline(Duration),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("client did not read for {0:?}")]
    WriteTimeout(Duration),
}

/// An accepted publish.
struct Active {
    publication: Publication,
    remuxer: Remuxer,
    guard: PublishGuard,
    /// Packager errors already logged, so a broken track logs once, not per frame.
    logged: Vec<packager::Error>,
}

struct Connection {
    ingest: Arc<Ingest>,
    socket: TcpStream,
    peer: SocketAddr,
    session: Session,
    active: Option<Active>,
    /// Set once a publish was refused: the connection closes after the reply is sent.
    refused: bool,
}

impl Connection {
    fn new(ingest: Arc<Ingest>, socket: TcpStream, peer: SocketAddr, id: u64) -> Self {
        Self {
            ingest,
            socket,
            peer,
            session: Session::new(id as u32 ^ u32::from(peer.port())),
            active: None,
            refused: false,
        }
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let result = self.read_loop().await;
        if let Some(active) = self.active.take() {
            let reason = match &result {
                Ok(()) => StopReason::ClientClosed,
                Err(ConnectionError::Idle(_)) => StopReason::Timeout,
                Err(_) => StopReason::Error,
            };
            self.end_publish(active, reason);
        }
        let _ = self.socket.shutdown().await;
        result
    }

    async fn read_loop(&mut self) -> Result<(), ConnectionError> {
        let deadline = Instant::now() + self.ingest.config.publish_deadline;
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let read = if self.active.is_some() {
                let idle = self.ingest.config.idle_timeout;
                timeout(idle, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| ConnectionError::Idle(idle))?
            } else {
                let limit = self.ingest.config.publish_deadline;
                timeout_at(deadline, self.socket.read(&mut buf))
                    .await
                    .map_err(|_| ConnectionError::PublishDeadline(limit))?
            };
            let n = read?;
            if n == 0 {
                return Ok(());
            }
            if let Some(active) = &mut self.active {
                active.guard.bytes += n as u64;
            }
            let actions = self.session.handle_bytes(&buf[..n])?;
            self.perform(actions).await?;
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
                    timeout(WRITE_TIMEOUT, self.socket.write_all(&bytes))
                        .await
                        .map_err(|_| ConnectionError::WriteTimeout(WRITE_TIMEOUT))??;
                }
                Action::PublishRequested { request_id, app, key } => {
                    let answer = self.decide(request_id, &app, &key).await?;
                    queue.extend(answer);
                }
                Action::Media { kind, timestamp, payload } => {
                    if let Some(active) = &mut self.active {
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
        let lookup = timeout(ingest.config.auth_timeout, ingest.keys.lookup(key)).await;
        let grant = match lookup {
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
                warn!(error = %e, "key store failed");
                return self.refuse(
                    request_id,
                    app,
                    &key_id,
                    RejectReason::KeyStoreUnavailable,
                    CODE_FAILED,
                    "stream keys cannot be checked right now; try again shortly",
                );
            }
            Err(_) => {
                warn!(timeout = ?ingest.config.auth_timeout, "key store did not answer in time");
                return self.refuse(
                    request_id,
                    app,
                    &key_id,
                    RejectReason::KeyStoreUnavailable,
                    CODE_FAILED,
                    "stream keys cannot be checked right now; try again shortly",
                );
            }
        };
        let generation =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let Ok(publication) = ingest.store.begin(&grant.stream, generation) else {
            return self.refuse(
                request_id,
                app,
                &key_id,
                RejectReason::AlreadyLive,
                CODE_BAD_NAME,
                "this stream is already being published",
            );
        };
        let actions = match self.session.accept_publish(request_id) {
            Ok(actions) => actions,
            Err(e) => return Err(e.into()),
        };
        info!(stream = %grant.stream, %app, key = %key_id, "publish accepted");
        tracing::Span::current().record("stream", grant.stream.as_str());
        let guard = PublishGuard::start(Arc::clone(&ingest.events), &grant.stream, app, self.peer);
        self.active = Some(Active {
            publication,
            remuxer: Remuxer::new(ingest.config.remuxer),
            guard,
            logged: Vec::new(),
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
        warn!(%app, key = %key_id, reason = reason.as_str(), "publish refused: {description}");
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
    publish_segments(active);
}

/// Moves finished segments from the remuxer to the store.
fn publish_segments(active: &mut Active) {
    while let Some(segment) = active.remuxer.pull() {
        let sequence = active.publication.push(segment, SystemTime::now());
        debug!(stream = %active.publication.name(), sequence, "segment ready");
    }
}
