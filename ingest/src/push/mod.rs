//! Push (relay out): every live stream sent on to other RTMP and RTMPS servers as its
//! publisher sent it, as Nginx-RTMP's `push` does (multistreaming to YouTube, Twitch,
//! Facebook, or another rtmp-hls).
//!
//! Each target of a publish gets a task and a bounded queue ([`queue`]); the publisher's
//! connection adds each message to every queue and never waits, so a target that is down,
//! slow or stalled costs the stream and the other targets nothing. The task connects
//! ([`target`]: the URL, TLS for `rtmps://`), publishes with the sans-IO
//! [`rtmp::client::Publisher`] (answering the target's pings and acknowledgement windows),
//! and sends what the queue gives, the FLV tag bodies unchanged. A failed connection is tried
//! again after a backoff (1 s doubling to 30 s); the publish's end is passed on
//! (`FCUnpublish`, `deleteStream`) after what is queued, within a deadline.

pub mod queue;
pub mod target;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rtmp::MediaKind;
use rtmp::client::{PublishEvent, PublishSettings, Publisher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{info, warn};

pub use queue::{Item, MAX_QUEUE_BYTES, PushQueue, Role};
pub use target::{InvalidTarget, PushTarget};

use crate::events::{Event, EventSink};
use crate::metrics::{IngestMetrics, PushLabel};
use crate::rebase::Rebase;

/// Push targets a stream's key may name, besides the server's: each costs a connection and
/// a queue for every publish of the stream.
pub const MAX_STREAM_TARGETS: usize = 8;
/// Time allowed for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed from the connection to the target's `NetStream.Publish.Start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A target that takes nothing for this long is given up on and connected again (its queue
/// overflows and drops meanwhile; the stream never waits).
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// First wait before connecting again; doubled after each failure up to [`MAX_BACKOFF`],
/// back to this after a session that lasted [`STABLE_SESSION`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A session this long resets the backoff.
pub const STABLE_SESSION: Duration = Duration::from_secs(30);
/// After the publish ended, time allowed to send what is queued and the unpublish.
pub const END_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes read from a target at once (it sends acknowledgements, pings and statuses only).
const READ_BUFFER: usize = 4096;
/// Messages written per socket write, at most.
const BATCH_MESSAGES: usize = 64;

/// What pushing needs from the server: where to push every stream, and the TLS settings for
/// `rtmps://` targets.
#[derive(Clone, Default)]
pub struct PushConfig {
    /// Targets of every stream (`--push`).
    pub targets: Vec<PushTarget>,
    /// Client TLS settings (trusted roots) for `rtmps://` targets.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Bytes each target's queue holds before dropping.
    pub queue_bytes: usize,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("targets", &self.targets)
            .field("tls", &self.tls.is_some())
            .field("queue_bytes", &self.queue_bytes)
            .finish()
    }
}

/// A queue and the wake-up of the task emptying it (a push target's, or an RTMP player's).
pub(crate) struct Outbox {
    queue: Mutex<PushQueue>,
    /// Notified after each addition, and at the end.
    pub(crate) wake: Notify,
}

impl Outbox {
    /// An empty outbox of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self { queue: Mutex::new(PushQueue::new(limit)), wake: Notify::new() }
    }

    /// The queue.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, PushQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `item` and wakes the task.
    pub(crate) fn push(&self, item: Item) {
        self.lock().push(item);
        self.wake.notify_one();
    }

    /// Marks the end and wakes the task.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.wake.notify_one();
    }
}

type Shared = Outbox;

/// The targets of one publish (or of publishes that continue one another within the
/// reconnect window). Dropping it ends every target's publish.
#[derive(Default)]
pub(crate) struct Push {
    targets: Vec<(Arc<Shared>, JoinHandle<()>)>,
    /// Labels of the targets, to tell whether a new publish pushes to the same ones.
    labels: Vec<String>,
    rebase: Mutex<Rebase>,
}

/// What a target's task reports to.
#[derive(Clone)]
pub(crate) struct Reporting {
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) metrics: IngestMetrics,
}

impl Push {
    /// Starts pushing `stream` to `targets`.
    pub(crate) fn start(
        stream: &str,
        targets: Vec<PushTarget>,
        config: &PushConfig,
        reporting: &Reporting,
    ) -> Self {
        let labels = targets.iter().map(PushTarget::label).collect();
        let targets =
            targets.into_iter().map(|target| spawn(stream, target, config, reporting)).collect();
        Self { targets, labels, rebase: Mutex::default() }
    }

    /// These pushes, continued by a new publish of `stream` pushing to `targets`: the
    /// targets it still has go on (their clock too), the others end, new ones start.
    pub(crate) fn continue_with(
        self,
        stream: &str,
        targets: Vec<PushTarget>,
        config: &PushConfig,
        reporting: &Reporting,
    ) -> Self {
        // The new publisher sends its configurations: new targets get them from it.
        let push = self.retarget(stream, targets, &[], config, reporting);
        push.continue_after_break();
        push
    }

    /// These pushes of `stream`, now to `targets`: those still there go on, the others
    /// end, new ones start with `seed` (the stream's metadata and configurations so far)
    /// and go on at the next keyframe.
    pub(crate) fn retarget(
        mut self,
        stream: &str,
        targets: Vec<PushTarget>,
        seed: &[Item],
        config: &PushConfig,
        reporting: &Reporting,
    ) -> Self {
        let mut old: Vec<_> = std::mem::take(&mut self.targets)
            .into_iter()
            .zip(std::mem::take(&mut self.labels))
            .collect();
        for target in targets {
            let label = target.label();
            let pushing = match old.iter().position(|(_, kept)| *kept == label) {
                Some(at) => old.remove(at).0,
                None => {
                    let (shared, task) = spawn(stream, target, config, reporting);
                    for item in seed {
                        shared.push(item.clone());
                    }
                    (shared, task)
                }
            };
            self.targets.push(pushing);
            self.labels.push(label);
        }
        for ((shared, _), _) in old {
            shared.end();
        }
        self
    }

    /// The next messages come from a new publisher continuing the stream: the targets see
    /// their clock go on.
    fn continue_after_break(&self) {
        self.rebase.lock().unwrap_or_else(PoisonError::into_inner).continue_after_break();
    }

    /// Passes on an audio or video message.
    pub(crate) fn media(&self, kind: MediaKind, timestamp: u32, payload: &Bytes) {
        if self.targets.is_empty() {
            return;
        }
        let timestamp = self.rebase.lock().unwrap_or_else(PoisonError::into_inner).apply(timestamp);
        let role = queue::role(kind, payload);
        for (shared, _) in &self.targets {
            shared.push(Item::Media { kind, timestamp, payload: payload.clone(), role });
        }
    }

    /// Passes on `onMetaData` (its AMF0 values).
    pub(crate) fn metadata(&self, values: &Bytes) {
        for (shared, _) in &self.targets {
            shared.push(Item::Metadata(values.clone()));
        }
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        for (shared, _) in &self.targets {
            shared.end();
        }
        // The tasks finish on their own (bounded by END_DEADLINE once connected).
    }
}

/// Starts pushing `stream` to `target`: its queue, and the task emptying it.
fn spawn(
    stream: &str,
    target: PushTarget,
    config: &PushConfig,
    reporting: &Reporting,
) -> (Arc<Shared>, JoinHandle<()>) {
    let queue_bytes = if config.queue_bytes == 0 { MAX_QUEUE_BYTES } else { config.queue_bytes };
    let shared = Arc::new(Outbox::new(queue_bytes));
    let task = Task {
        label: PushLabel { stream: stream.to_owned(), target: target.label() },
        stream: stream.to_owned(),
        target,
        tls: config.tls.clone(),
        shared: Arc::clone(&shared),
        reporting: reporting.clone(),
        sent_bytes: 0,
        attempts: 0,
    };
    (shared, tokio::spawn(task.run()))
}

/// One target's task.
struct Task {
    stream: String,
    target: PushTarget,
    label: PushLabel,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    shared: Arc<Shared>,
    reporting: Reporting,
    sent_bytes: u64,
    attempts: u64,
}

/// Why a session with a target ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no NetStream.Publish.Start within {0:?}")]
    StartTimeout(Duration),
    #[error("the target refused the publish: {code} {description}")]
    Refused { code: String, description: String },
    #[error("the target took nothing for {0:?}")]
    Stalled(Duration),
    #[error("the target closed the connection")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] rtmp::client::PublishError),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Task {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if self.shared.lock().ended {
                break;
            }
            self.attempts += 1;
            let began = Instant::now();
            let result = self.session().await;
            self.reporting.metrics.push_connected.get_or_create(&self.label).set(0);
            self.shared.lock().stop();
            match result {
                Ok(()) => break,
                Err(error) => {
                    if began.elapsed() >= STABLE_SESSION {
                        backoff = MIN_BACKOFF;
                    }
                    self.reporting.metrics.push_failures.get_or_create(&self.label).inc();
                    warn!(stream = %self.stream, target = %self.label.target, %error, retry_in = ?backoff, "push failed");
                    self.reporting.events.emit(Event::PushFailed {
                        stream: self.stream.clone(),
                        target: self.label.target.clone(),
                        attempt: self.attempts,
                        error: error.to_string(),
                        retry_in: backoff,
                    });
                    if self.sleep_unless_ended(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let dropped = self.shared.lock().dropped_bytes;
        info!(stream = %self.stream, target = %self.label.target, bytes = self.sent_bytes, dropped, "push ended");
        self.reporting.events.emit(Event::PushStopped {
            stream: self.stream.clone(),
            target: self.label.target.clone(),
            bytes: self.sent_bytes,
            dropped_bytes: dropped,
            attempts: self.attempts,
        });
        let metrics = &self.reporting.metrics;
        metrics.push_bytes.remove(&self.label);
        metrics.push_dropped_bytes.remove(&self.label);
        metrics.push_failures.remove(&self.label);
        metrics.push_connected.remove(&self.label);
    }

    /// Sleeps `wait`, or less if the publish ends; whether it ended.
    async fn sleep_unless_ended(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.shared.lock().ended {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return false,
                () = self.shared.wake.notified() => {}
            }
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, SessionError> {
        let address = (self.target.host.as_str(), self.target.port);
        let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))??;
        tcp.set_nodelay(true)?;
        if !self.target.tls {
            return Ok(Box::new(tcp));
        }
        let config = self.tls.clone().ok_or_else(|| SessionError::Tls("no TLS settings".into()))?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.target.host.clone())
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        Ok(Box::new(tls))
    }

    /// One connection: publish, then send until the publish ends (`Ok`) or the connection
    /// fails.
    async fn session(&mut self) -> Result<(), SessionError> {
        let mut io = self.connect().await?;
        let settings = PublishSettings {
            app: self.target.app.clone(),
            tc_url: self.target.tc_url(),
            key: self.target.name.clone().unwrap_or_else(|| self.stream.clone()),
        };
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let mut client = Publisher::new(settings, u64::from_le_bytes(seed));
        let mut buffer = vec![0u8; READ_BUFFER];
        let started = timeout(START_TIMEOUT, async {
            loop {
                let out = client.take_output();
                io.write_all(&out).await?;
                let n = io.read(&mut buffer).await?;
                if n == 0 {
                    return Err(SessionError::Closed);
                }
                match client.handle_bytes(&buffer[..n])? {
                    Some(PublishEvent::Started { .. }) => return Ok(()),
                    Some(PublishEvent::Refused { code, description }) => {
                        return Err(SessionError::Refused { code, description });
                    }
                    None => {}
                }
            }
        });
        started.await.map_err(|_| SessionError::StartTimeout(START_TIMEOUT))??;
        self.shared.lock().start();
        self.reporting.metrics.push_connected.get_or_create(&self.label).set(1);
        info!(stream = %self.stream, target = %self.label.target, attempt = self.attempts, "pushing");
        self.reporting.events.emit(Event::PushStarted {
            stream: self.stream.clone(),
            target: self.label.target.clone(),
            attempt: self.attempts,
        });
        let sent = self.reporting.metrics.push_bytes.get_or_create(&self.label).clone();
        let dropped_counter =
            self.reporting.metrics.push_dropped_bytes.get_or_create(&self.label).clone();
        let mut dropped_seen = self.shared.lock().dropped_bytes;
        let mut end_by: Option<Instant> = None;
        let mut out = client.take_output();
        loop {
            let (ended, batch, dropped) = {
                let mut queue = self.shared.lock();
                let batch: Vec<Item> =
                    std::iter::from_fn(|| queue.pop()).take(BATCH_MESSAGES).collect();
                (queue.ended, batch, queue.dropped_bytes)
            };
            if dropped > dropped_seen {
                dropped_counter.inc_by(dropped - dropped_seen);
                dropped_seen = dropped;
            }
            for item in batch {
                match item {
                    Item::Metadata(values) => client.data_frame(&values, &mut out),
                    Item::Media { kind, timestamp, payload, .. } => {
                        client.media(kind, timestamp, &payload, &mut out);
                    }
                }
            }
            if ended && out.is_empty() {
                client.unpublish();
                let bye = client.take_output();
                let deadline = *end_by.get_or_insert_with(|| Instant::now() + END_DEADLINE);
                let _ = tokio::time::timeout_at(deadline, async {
                    io.write_all(&bye).await?;
                    io.shutdown().await
                })
                .await;
                return Ok(());
            }
            if ended {
                let deadline = *end_by.get_or_insert_with(|| Instant::now() + END_DEADLINE);
                if Instant::now() >= deadline {
                    return Ok(());
                }
            }
            if !out.is_empty() {
                let limit = match end_by {
                    Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                    None => WRITE_STALL,
                };
                match timeout(limit, io.write_all(&out)).await {
                    Ok(result) => result?,
                    Err(_) if end_by.is_some() => return Ok(()),
                    Err(_) => return Err(SessionError::Stalled(WRITE_STALL)),
                }
                sent.inc_by(out.len() as u64);
                self.sent_bytes += out.len() as u64;
                out.clear();
                continue;
            }
            tokio::select! {
                () = self.shared.wake.notified() => {}
                read = io.read(&mut buffer) => {
                    let n = read?;
                    if n == 0 {
                        return Err(SessionError::Closed);
                    }
                    client.handle_bytes(&buffer[..n])?;
                    out.extend(client.take_output());
                }
            }
        }
    }
}
