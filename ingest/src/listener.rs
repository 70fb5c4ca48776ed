//! The RTMP listener: accepts connections under the connection limits and runs one task per
//! connection ([`crate::connection`]); [`Ingest`] is what those tasks share.
//!
//! A panic in a task ends that connection only; its publish's `Drop`s still end the stream
//! and emit the stop. At shutdown every connection is told to end (live streams get their
//! last segment and EXT-X-ENDLIST) and the `on_publish_done` callbacks in flight and the
//! recordings being finished are waited for, each within bounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use auth::Authorizer;
use packager::{BufferPool, RemuxerConfig};
use rtmp_hls_threads::Spread;
use stream_store::StreamStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::admission::Admission;
use crate::connection::Connection;
use crate::decision::Request;
use crate::events::{EventSink, StopReason};
use crate::hooks::{self, HookConfig};
use crate::limits::{Limits, LogBudget, PerAddressBudget, Verdict};
use crate::merged_read;
use crate::metrics::IngestMetrics;
use crate::registry::Registry;
use crate::socket::Socket;
use crate::status::StatusBoard;

/// How long shutdown waits for recordings being finished: each writer writes what it has
/// queued (at most [`crate::record::WRITER_QUEUE`] messages, a few seconds of media) and
/// syncs, then `record_done` goes out and `on_record_done` is called for each file (each
/// call within the hook timeout). With the RTMP grace (5 s), the Kafka flush (up to 10 s)
/// and the HTTP grace (5 s) it stays within the 30 s stop timeout of the systemd unit and
/// the compose file.
const RECORDINGS_AT_EXIT: Duration = Duration::from_secs(8);
/// Refusal and overload log lines allowed per [`LOG_WINDOW`]; the rest are counted.
const LOG_LINES_PER_WINDOW: u64 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// How each live stream emits `stream_stats` by default.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// What happens when a valid key publishes a stream that is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TakeoverPolicy {
    /// The new publisher takes the stream over.
    ///
    /// The old session is closed and the playlist continues after a discontinuity. This is
    /// what an encoder reconnecting after a network blip needs (its old TCP connection may
    /// not look dead yet); MediaMTX does the same by default.
    #[default]
    Replace,
    /// The new publisher is refused.
    ///
    /// With `NetStream.Publish.BadName`, as Nginx-RTMP does.
    Refuse,
}

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
    /// Time between the ticks at which live publishers are read while no segment can close
    /// (see [`merged_read`]); zero reads every message as it arrives.
    pub max_read_pause: Duration,
    /// Where live streams are pushed on to (`--push`), and how.
    pub push: crate::push::PushConfig,
    /// Who may play private streams over RTMP (the HTTP side's viewer access); `None`:
    /// nobody.
    pub viewers: Option<Arc<auth::viewer::ViewerAccess>>,
    /// RTMP players: whether they are served, and how many.
    pub play: crate::play::PlayLimits,
    /// Where publishes are recorded.
    pub record: crate::record::RecordConfig,
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
            push: crate::push::PushConfig::default(),
            viewers: None,
            play: crate::play::PlayLimits::default(),
            record: crate::record::RecordConfig::default(),
        }
    }
}

/// Everything the connection tasks share.
pub struct Ingest {
    /// Settings.
    pub config: IngestConfig,
    /// Where publishes write their segments.
    pub store: Arc<StreamStore>,
    /// Who may publish.
    pub authorizer: Arc<Authorizer>,
    /// Where lifecycle events go.
    pub events: Arc<dyn EventSink>,
    pub(crate) connections: Arc<Admission>,
    log_budget: LogBudget,
    /// Refusals reported per address.
    pub(crate) rejection_reports: PerAddressBudget,
    /// `publish_rejected` events over all addresses.
    pub(crate) rejection_events: LogBudget,
    /// The live publishers, by stream name: how to stop each (takeover, kick, revocation).
    pub(crate) registry: Arc<Registry>,
    /// What each stream's latest publish looks like, for the stats API.
    pub(crate) statuses: StatusBoard,
    /// Prometheus metrics of the RTMP side.
    pub(crate) metrics: IngestMetrics,
    /// `on_publish_done` callbacks in flight (each bounded by the hook timeout); waited for
    /// at shutdown so a deploy does not lose them.
    callbacks: Mutex<JoinSet<()>>,
    /// Recordings being finished (the writer's queue written and synced, then `record_done`
    /// and `on_record_done`); waited for at shutdown up to [`RECORDINGS_AT_EXIT`].
    recordings: Mutex<JoinSet<()>>,
    /// Segment buffers every publish's remuxer writes into and returns to.
    pub(crate) segment_buffers: Arc<BufferPool>,
    /// The live publishes as RTMP players see them.
    pub(crate) broadcasts: crate::play::Broadcasts,
    /// Pushes and broadcasts of interrupted publishes, waiting for their publisher.
    pub(crate) parked: crate::continuity::ParkedRelays,
    /// This node's part in a cluster, if it is in one.
    pub(crate) cluster: Option<Arc<crate::cluster::ClusterMember>>,
}

impl Ingest {
    /// The RTMP side over `store`, authorising with `authorizer`, reporting to `events`.
    pub fn new(
        config: IngestConfig,
        store: Arc<StreamStore>,
        authorizer: Arc<Authorizer>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        let segment_buffers = Arc::clone(store.buffer_pool());
        Self {
            config,
            store,
            authorizer,
            events,
            connections: Arc::default(),
            log_budget: LogBudget::new(LOG_LINES_PER_WINDOW, LOG_WINDOW),
            rejection_reports: PerAddressBudget::new(
                crate::limits::REJECTIONS_REPORTED_PER_ADDRESS,
                crate::limits::REJECTION_WINDOW,
            ),
            rejection_events: LogBudget::new(
                crate::limits::REJECTIONS_REPORTED,
                crate::limits::REJECTION_WINDOW,
            ),
            registry: Arc::default(),
            statuses: StatusBoard::default(),
            metrics: IngestMetrics::default(),
            callbacks: Mutex::new(JoinSet::new()),
            recordings: Mutex::new(JoinSet::new()),
            segment_buffers,
            broadcasts: crate::play::Broadcasts::default(),
            parked: crate::continuity::ParkedRelays::default(),
            cluster: None,
        }
    }

    /// Makes this node a member of a cluster: publishes take their stream's lease first
    /// (run [`crate::cluster::run`] beside the listener).
    pub fn set_cluster(&mut self, member: Arc<crate::cluster::ClusterMember>) {
        self.cluster = Some(member);
    }

    /// This node's part in a cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterMember>> {
        self.cluster.as_ref()
    }

    /// The RTMP side's metrics, to register for scraping.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Recycled buffers waiting for a segment, fragment or part: how many, and their capacity
    /// in bytes.
    pub fn pooled_segment_buffers(&self) -> (usize, usize) {
        self.segment_buffers.held()
    }

    /// The status of each stream's latest publish (live or ended).
    pub fn statuses(&self) -> &StatusBoard {
        &self.statuses
    }

    /// Ends the live publish of `stream` for `reason`; returns whether one was live.
    pub fn end_publish(&self, stream: &str, reason: StopReason) -> bool {
        self.registry.stop(stream, reason).is_some()
    }

    /// Open RTMP connections, and those of them not authenticated yet.
    pub fn open_connections(&self) -> (usize, usize) {
        (self.connections.open(), self.connections.unauthenticated())
    }

    /// Logs a refusal-type warning within the log budget.
    pub(crate) fn warn_limited(&self, message: std::fmt::Arguments<'_>) {
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

    /// Finishes `recorder`'s recording of `stream` off the runtime, then emits
    /// `record_done` and calls `on_record_done` (`form`, with the file's `path`), in a task
    /// [`serve`] waits for at shutdown.
    pub(crate) fn record_done(
        &self,
        stream: &str,
        recorder: crate::record::Recorder,
        form: String,
    ) {
        let Some(finishing) = recorder.finish() else { return };
        let hooks = &self.config.hooks;
        let (url, method, timeout) = (hooks.on_record_done.clone(), hooks.method, hooks.timeout);
        let events = Arc::clone(&self.events);
        let dir = self.config.record.dir.clone().unwrap_or_default();
        let stream = stream.to_owned();
        let mut recordings = self.recordings.lock().unwrap_or_else(PoisonError::into_inner);
        while recordings.try_join_next().is_some() {}
        recordings.spawn(async move {
            let Ok(Some(recorded)) = tokio::task::spawn_blocking(move || finishing.join()).await
            else {
                warn!(%stream, "the recording's writer failed");
                return;
            };
            let files: Vec<String> = recorded
                .files
                .iter()
                .map(|f| f.strip_prefix(&dir).unwrap_or(f).display().to_string())
                .collect();
            info!(%stream, files = ?files, bytes = recorded.bytes, "recording done");
            events.emit(crate::Event::RecordDone {
                stream: recorded.stream.clone(),
                files: files.clone(),
                bytes: recorded.bytes,
                duration: recorded.duration,
                failures: recorded.failures,
            });
            let Some(url) = url else { return };
            for file in &recorded.files {
                let path = percent_encoding::utf8_percent_encode(
                    &file.display().to_string(),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                let form = format!("{form}&path={path}");
                if let Err(e) = hooks::send(&url, method, form, timeout).await {
                    warn!(error = %e, url = %url.redacted(), "on_record_done callback failed");
                }
            }
        });
    }

    /// Sends `on_publish_done` for `request` (if configured), in a task [`serve`] waits for
    /// at shutdown.
    pub(crate) fn publish_done(&self, request: &Request<'_>) {
        let hooks = &self.config.hooks;
        let Some(url) = hooks.on_publish_done.clone() else { return };
        let form = request.call("publish_done").form();
        let (method, timeout) = (hooks.method, hooks.timeout);
        let mut callbacks = self.callbacks.lock().unwrap_or_else(PoisonError::into_inner);
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
}

/// Accepts RTMP connections until `shutdown` completes; then ends every connection (live
/// streams get their last segment and EXT-X-ENDLIST) and returns once all have finished, or
/// after `grace`.
///
/// Each connection runs where `spread` places it.
pub async fn serve(
    listener: TcpListener,
    spread: Spread,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    serve_on(listener, spread, None, ingest, shutdown, grace).await
}

/// [`serve`] for RTMPS: each connection's TLS handshake (with `tls`, no ALPN needed: RTMP
/// has no registered protocol id) must complete within the handshake timeout, and counts
/// against the same connection limits as an RTMP handshake before it.
pub async fn serve_tls(
    listener: TcpListener,
    spread: Spread,
    tls: Arc<ServerConfig>,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    serve_on(listener, spread, Some(TlsAcceptor::from(tls)), ingest, shutdown, grace).await
}

async fn serve_on(
    listener: TcpListener,
    spread: Spread,
    tls: Option<TlsAcceptor>,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    // Shared by the RTMP and RTMPS listeners: ids stay unique in the logs.
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
        let limits = &ingest.config.limits;
        let slot = match ingest.connections.admit(peer.ip(), limits, std::time::Instant::now()) {
            Ok(slot) => slot,
            Err(overloaded) => {
                ingest.metrics.connections_refused.inc();
                ingest.warn_limited(format_args!("connection from {peer} refused: {overloaded}"));
                drop(socket);
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ingest = Arc::clone(&ingest);
        let stop = stop_rx.clone();
        let span = info_span!("rtmp", conn = id, peer = %peer, stream = tracing::field::Empty);
        let tls = tls.clone();
        spread.spawn(&mut tasks, socket, move |socket| {
            async move {
                let _ = socket.set_nodelay(true);
                let socket = match tls {
                    None => Socket::Plain(socket),
                    Some(tls) => {
                        let limit = ingest.config.limits.handshake_timeout;
                        match timeout(limit, tls.accept(socket)).await {
                            Ok(Ok(stream)) => Socket::Tls(Box::new(stream)),
                            Ok(Err(e)) => return info!(error = %e, "TLS handshake failed"),
                            Err(_) => return info!("TLS handshake not done in {limit:?}"),
                        }
                    }
                };
                match Connection::new(ingest, socket, peer, id, stop, slot).run().await {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => info!(error = %e, "connection closed"),
                }
            }
            .instrument(span)
        });
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
    // Pushes and players still waiting for a publisher end as a clean stop would.
    for (stream, parked) in ingest.parked.drain() {
        crate::continuity::end(&ingest, &stream, parked);
    }
    // The publishes that just ended have their on_publish_done in flight, and their
    // recordings being finished.
    let take = |set: &Mutex<JoinSet<()>>| {
        std::mem::take(&mut *set.lock().unwrap_or_else(PoisonError::into_inner))
    };
    let (mut callbacks, mut recordings) = (take(&ingest.callbacks), take(&ingest.recordings));
    let limit = ingest.config.hooks.timeout + Duration::from_millis(100);
    let (sent, recorded) = tokio::join!(
        timeout(limit, async { while callbacks.join_next().await.is_some() {} }),
        timeout(RECORDINGS_AT_EXIT, async { while recordings.join_next().await.is_some() {} }),
    );
    if sent.is_err() {
        warn!(callbacks = callbacks.len(), "on_publish_done callbacks unfinished at exit");
    }
    if recorded.is_err() {
        warn!(
            recordings = recordings.len(),
            "recordings not finished at exit (their files are readable; no record_done for them)"
        );
    }
    Ok(())
}
