//! The server: checks and opens what the options name, wires the RTMP side, the stream store
//! and the HTTP servers together, runs them until SIGTERM or Ctrl-C, and stops them in order
//! (RTMP first, so every live stream gets its last segment, ENDLIST and stop event; then the
//! events are flushed; then HTTP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use auth::Authorizer;
use auth::jwt::{JwtVerifier, Scope};
use auth::viewer::{UrlSigner, ViewerAccess};
use ingest::events::{Envelope, Event, EventSink};
use ingest::{Ingest, IngestConfig, LogSink};
use packager::{Container, RemuxerConfig};
use rtmp_hls_http::metrics::HttpMetrics;
use rtmp_hls_http::{HlsDirect, Router};
use rtmp_hls_threads::{ConnectionThreads, Spread};
use rtmp_hls_tls::{ReloadingCert, TlsFiles};
use stream_store::{MemfdSegments, StoreConfig, StreamStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::RecordStreams;
use crate::config::{HlsVariant, SegmentStorage, ServeArgs};
use crate::control;
use crate::kafka_events::{KafkaEvents, KafkaSettings};
use crate::key_admin::{KeyAdmin, StoreSettings};
use crate::mongo_keys::MongoKeyStore;
use crate::mongo_registry::MongoRegistry;
use crate::sequences::SequenceFile;

/// The stream created on first start.
pub(crate) const DEMO_STREAM: &str = "demo";
/// How long the server waits on exit for Kafka to acknowledge queued events.
const KAFKA_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// How often ended streams are checked for expiry and sequence numbers persisted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// How often recycled segment buffers that served no request are freed, and the allocator's
/// free memory returned to the kernel: five segments of the default duration, so the pool
/// keeps what the streams' cuts take and give back, and a peak's surplus goes within
/// seconds.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the server until a signal; returns once everything stopped.
pub(crate) async fn run(settings: StoreSettings, args: ServeArgs) -> Result<()> {
    // Everything the options name is checked and opened before anything starts.
    let jwt = jwt_verifier(&args)?.map(Arc::new);
    let viewers = Arc::new(viewer_access(&args, jwt.clone())?);
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!("creating the data directory {} (--data-dir)", settings.data_dir.display())
    })?;
    let (keys, demo_key) = open_keys(&settings, args.auth_timeout).await?;
    if jwt.is_some() {
        info!("publish tokens (JWT) accepted as stream keys");
    }
    let listeners = Listeners::bind(&args).await?;
    let sequences = SequenceFile::new(&settings.data_dir);
    let store = Arc::new(stream_store(&args));
    store.restore_sequences(sequences.load_for_restart());
    let events = Events::start(&args)?;
    events.sink.emit(Event::ServerStarted);
    let authorizer =
        Authorizer::new(keys.key_store(), jwt.clone(), args.failure_limits(), args.auth_timeout);
    let mut ingest = Ingest::new(
        ingest_config(&args, &viewers)?,
        Arc::clone(&store),
        Arc::new(authorizer),
        Arc::clone(&events.sink),
    );
    if let Some(member) = cluster_member(&settings, &args).await? {
        ingest.set_cluster(member);
    }
    let ingest = Arc::new(ingest);
    let routes =
        Routes::build(&args, &ingest, keys, jwt, Arc::clone(&viewers), events.kafka.clone());

    let (rtmp_addr, http_addr) = (listeners.rtmp.local_addr()?, listeners.http.local_addr()?);
    info!(addr = %rtmp_addr, "RTMP listening");
    info!(addr = %http_addr, "HTTP listening");
    if let Some(key) = demo_key {
        crate::print_welcome(&args, rtmp_addr, http_addr, &key);
    }
    let threads = connection_threads(&args)?;
    let running =
        Running::start(listeners, threads, routes, Arc::clone(&ingest), sequences.clone(), &args);
    shutdown_signal().await;
    info!("shutting down: ending live streams");
    events.sink.emit(Event::ServerStopping);
    running.stop(&ingest, &sequences, events.kafka).await?;
    info!("stopped");
    Ok(())
}

/// This node's membership of a cluster (`--cluster-url`), with its registry in MongoDB.
async fn cluster_member(
    settings: &StoreSettings,
    args: &ServeArgs,
) -> Result<Option<Arc<ingest::cluster::ClusterMember>>> {
    let Some(url) = &args.cluster_url else { return Ok(None) };
    let Some(uri) = &settings.mongo_uri else {
        anyhow::bail!(
            "--cluster-url needs --mongo-uri: the nodes share their stream registry there"
        );
    };
    let registry = MongoRegistry::connect(
        uri,
        &settings.mongo_database,
        &args.cluster_collection,
        args.auth_timeout,
        args.lease_time,
    )
    .await?;
    let indexed = registry.clone();
    tokio::spawn(async move {
        if let Err(e) = indexed.ensure_indexes().await {
            warn!(error = %e.kind, "the stream registry's index was not created");
        }
    });
    let node = args.server_id.clone().unwrap_or_else(host_name);
    let member = ingest::cluster::Member::new(node, url.clone());
    info!(node = %member.node, %url, collection = %args.cluster_collection, lease = ?args.lease_time, "cluster member");
    let config = ingest::cluster::ClusterConfig { member, lease_time: args.lease_time };
    Ok(Some(Arc::new(ingest::cluster::ClusterMember::new(config, Arc::new(registry)))))
}

/// The publish-token verifier the options configure, if any.
pub(crate) fn jwt_verifier(args: &ServeArgs) -> Result<Option<JwtVerifier>> {
    let verifier = match (&args.jwt_secret, &args.jwt_public_key) {
        (Some(secret), _) => JwtVerifier::from_secret(secret.as_bytes()),
        (None, Some(path)) => {
            JwtVerifier::from_public_key_file(path).context("--jwt-public-key")?
        }
        (None, None) => return Ok(None),
    };
    let scope = |audience: &Option<String>| Scope {
        audience: audience.clone(),
        issuer: args.jwt_issuer.clone(),
    };
    let (publish, admin) = (scope(&args.jwt_audience), scope(&args.jwt_admin_audience));
    Ok(Some(verifier.scoped(publish, admin)))
}

/// Who watches private streams: viewer tokens verified with the token key, the
/// `--viewer-claim` check (without a token key, nobody: the refusal says why), and media
/// URLs signed with `--url-signing-secret` (or a random secret).
fn viewer_access(args: &ServeArgs, jwt: Option<Arc<JwtVerifier>>) -> Result<ViewerAccess> {
    let signer = match &args.url_signing_secret {
        Some(secret) => UrlSigner::new(secret.as_bytes(), args.signed_url_ttl)
            .context("--url-signing-secret")?,
        None => UrlSigner::random(args.signed_url_ttl)?,
    };
    Ok(ViewerAccess::new(jwt, args.viewer_claim.clone(), signer))
}

/// Opens the key store; on first start of the embedded store, seeds the demo stream and
/// returns its key (to show once).
async fn open_keys(
    settings: &StoreSettings,
    timeout: Duration,
) -> Result<(KeyAdmin, Option<String>)> {
    let keys = KeyAdmin::open(settings, timeout)
        .await
        .with_context(|| "opening the key store".to_owned())?;
    let demo_key = match &keys {
        KeyAdmin::File(store) => store.seed_if_empty(DEMO_STREAM)?,
        KeyAdmin::Mongo(store) => {
            info!(database = %settings.mongo_database, collection = %settings.mongo_collection, "stream keys in MongoDB");
            tokio::spawn(ensure_indexes(store.clone()));
            None
        }
    };
    Ok((keys, demo_key))
}

/// The sockets the server listens on.
struct Listeners {
    rtmp: TcpListener,
    http: TcpListener,
    admin: Option<TcpListener>,
    https: Option<TcpListener>,
    rtmps: Option<TcpListener>,
    /// The certificate of the TLS listeners.
    cert: Option<Arc<ReloadingCert>>,
}

impl Listeners {
    async fn bind(args: &ServeArgs) -> Result<Self> {
        let rtmp = TcpListener::bind(args.rtmp_addr)
            .await
            .with_context(|| format!("binding RTMP to {} (--rtmp-addr)", args.rtmp_addr))?;
        let http = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("binding HTTP to {} (--http-addr)", args.http_addr))?;
        let admin = match args.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin API to {addr} (--admin-addr)"))?,
            ),
            None => None,
        };
        let cert = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles { cert: cert.clone(), key: key.clone() };
                let cert = ReloadingCert::new(files).context("loading --tls-cert and --tls-key")?;
                Some(Arc::new(cert))
            }
            _ => None,
        };
        let https = match args.https_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding HTTPS to {addr} (--https-addr)"))?,
            ),
            None => None,
        };
        let rtmps = match args.rtmps_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding RTMPS to {addr} (--rtmps-addr)"))?,
            ),
            None => None,
        };
        Ok(Self { rtmp, http, admin, https, rtmps, cert })
    }
}

/// The threads connections run on (`--connection-threads`, one per core by default); `None`
/// with 0: connections run on the main runtime.
fn connection_threads(args: &ServeArgs) -> Result<Option<Arc<ConnectionThreads>>> {
    let count = args.connection_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    if count == 0 {
        return Ok(None);
    }
    let threads = ConnectionThreads::start(count).context("starting the connection threads")?;
    info!(threads = threads.len(), "connection threads started");
    Ok(Some(threads))
}

/// The stream store, with segments in memory files unless `--segment-storage heap`.
fn stream_store(args: &ServeArgs) -> StreamStore {
    let config = StoreConfig {
        window: usize::from(args.playlist_length),
        target_duration: args.segment_duration,
        part_target: (args.hls_variant == HlsVariant::LowLatency).then_some(args.part_duration),
        reconnect_window: args.reconnect_window,
    };
    match args.segment_storage {
        SegmentStorage::Memfd => StreamStore::with_segment_files(config, MemfdSegments::new()),
        SegmentStorage::Heap => StreamStore::new(config),
    }
}

fn ingest_config(args: &ServeArgs, viewers: &Arc<ViewerAccess>) -> Result<IngestConfig> {
    let push = ingest::push::PushConfig {
        // Validated at startup: an unusable target never gets here.
        targets: args.push.iter().filter_map(|target| target.clone().ok()).collect(),
        tls: Some(
            rtmp_hls_tls::client_config(args.push_ca_file.as_deref()).context("--push-ca-file")?,
        ),
        queue_bytes: ingest::push::MAX_QUEUE_BYTES,
    };
    Ok(IngestConfig {
        app: args.app.clone(),
        remuxer: RemuxerConfig {
            target_duration: args.segment_duration,
            container: match args.hls_variant {
                HlsVariant::Mpegts => Container::Ts,
                HlsVariant::Fmp4 => Container::Fmp4 { part_target: None },
                HlsVariant::LowLatency => Container::Fmp4 { part_target: Some(args.part_duration) },
            },
        },
        limits: args.ingest_limits(),
        takeover: args.takeover,
        stats_interval: args.stats_interval,
        hooks: args.hooks(),
        max_read_pause: Duration::from_millis(args.max_read_pause_ms),
        push,
        viewers: Some(Arc::clone(viewers)),
        record: ingest::record::RecordConfig {
            dir: args.record_dir.clone(),
            format: args.record_format,
            only_marked: args.record_streams == RecordStreams::Marked,
        },
        play: ingest::play::PlayLimits {
            enabled: args.rtmp_play,
            max_players: args.max_rtmp_players,
            max_per_stream: args.max_viewers_per_stream,
        },
    })
}

/// Where lifecycle events go: Kafka when brokers are configured, else the log.
struct Events {
    sink: Arc<dyn EventSink>,
    kafka: Option<Arc<KafkaEvents>>,
}

impl Events {
    fn start(args: &ServeArgs) -> Result<Self> {
        let server_id = args.server_id.clone().unwrap_or_else(host_name);
        let Some(brokers) = &args.kafka_brokers else {
            let sink = Arc::new(LogSink::new(Envelope::new(server_id)));
            return Ok(Self { sink, kafka: None });
        };
        let kafka = KafkaEvents::start(&KafkaSettings {
            brokers: brokers.clone(),
            topic: args.kafka_topic.clone(),
            properties: args.kafka_properties.clone(),
            server_id,
        })?;
        Ok(Self { sink: Arc::clone(&kafka) as Arc<dyn EventSink>, kafka: Some(kafka) })
    }
}

/// The HTTP routes: HLS on the public address, and the API with `/metrics` there too or on
/// the admin address.
struct Routes {
    public: Router,
    /// The public address's HLS requests, without the router.
    direct: HlsDirect,
    /// With `--admin-addr`.
    admin: Option<Router>,
}

impl Routes {
    fn build(
        args: &ServeArgs,
        ingest: &Arc<Ingest>,
        keys: KeyAdmin,
        jwt: Option<Arc<JwtVerifier>>,
        viewers: Arc<ViewerAccess>,
        kafka: Option<Arc<KafkaEvents>>,
    ) -> Self {
        let store = &ingest.store;
        let http_metrics = HttpMetrics::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("rtmp_hls");
        ingest.metrics().register(&mut registry);
        http_metrics.register(&mut registry);
        registry.register_collector(Box::new(control::CurrentState {
            ingest: Arc::clone(ingest),
            store: Arc::clone(store),
            kafka,
        }));
        let fetch_through = ingest.cluster().map(|member| {
            let origins = Arc::new(ClusterOrigins(Arc::clone(member)));
            let through = rtmp_hls_http::fetch_through::FetchThrough::new(
                &member.member().node,
                origins,
                args.reconnect_window,
            );
            Arc::new(through)
        });
        if let Some(through) = &fetch_through {
            through.register(&mut registry);
        }
        if let Some(member) = ingest.cluster() {
            member.register(&mut registry);
        }
        let control: Arc<dyn rtmp_hls_http::api::Control> = Arc::new(control::ServerControl {
            ingest: Arc::clone(ingest),
            store: Arc::clone(store),
            keys,
            auth: control::AdminAuth { token: args.admin_token.clone(), jwt },
            registry,
        });
        let api = rtmp_hls_http::api::router(Arc::clone(&control));
        let options = rtmp_hls_http::HlsOptions {
            max_viewers: args.max_viewers_per_stream,
            access: viewers,
            variants: args.variants.clone().into(),
            fetch_through,
            ipv6_prefix: args.ipv6_prefix,
        };
        let (mut hls, direct) = rtmp_hls_http::router_and_direct(Arc::clone(store), options);
        let direct = direct.counted(&http_metrics);
        if args.web_page {
            hls = hls.merge(rtmp_hls_http::web::router(control));
        }
        if let Some(dir) = &args.record_dir {
            hls = hls.merge(rtmp_hls_http::recordings::router(dir.clone(), Arc::clone(store)));
        }
        match args.admin_addr {
            Some(_) => Self {
                public: http_metrics.count(hls),
                direct,
                admin: Some(http_metrics.count(api)),
            },
            None => Self { public: http_metrics.count(hls.merge(api)), direct, admin: None },
        }
    }
}

/// Where the cluster's streams are published, as this node's registry view says.
#[derive(Debug)]
struct ClusterOrigins(Arc<ingest::cluster::ClusterMember>);

impl rtmp_hls_http::fetch_through::Origins for ClusterOrigins {
    fn origin(&self, stream: &str) -> Option<rtmp_hls_http::fetch_through::Origin> {
        let (node, url) = self.0.holder_of(stream)?;
        Some(rtmp_hls_http::fetch_through::Origin { node, url })
    }
}

/// The running servers, and how to stop each.
struct Running {
    stop_rtmp: watch::Sender<bool>,
    stop_http: watch::Sender<bool>,
    rtmp: tokio::task::JoinHandle<std::io::Result<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    admin: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    https: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    rtmps: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    housekeeping: tokio::task::JoinHandle<()>,
    /// Reloads the TLS certificate when its files change.
    certificate_watch: Option<tokio::task::JoinHandle<()>>,
    /// Ends the cluster membership (renewals and the fence).
    stop_cluster: watch::Sender<bool>,
    /// The threads connections run on, stopped last.
    threads: Option<Arc<ConnectionThreads>>,
}

impl Running {
    fn start(
        listeners: Listeners,
        threads: Option<Arc<ConnectionThreads>>,
        routes: Routes,
        ingest: Arc<Ingest>,
        sequences: SequenceFile,
        args: &ServeArgs,
    ) -> Self {
        // RTMP and RTMPS spread their connections together, HTTP and HTTPS theirs.
        let spread = || threads.as_ref().map_or_else(Spread::here, Spread::over);
        let (rtmp_spread, http_spread) = (spread(), spread());
        let (stop_rtmp, rtmp_stopped) = watch::channel(false);
        let (stop_http, http_stopped) = watch::channel(false);
        let grace = args.shutdown_grace;
        let housekeeping =
            tokio::spawn(housekeeping(Arc::clone(&ingest), sequences, args.ended_ttl));
        // Leases are renewed until every stream here ended and they were released.
        let (stop_cluster, cluster_stopped) = watch::channel(false);
        tokio::spawn(ingest::cluster::run(Arc::clone(&ingest), cluster_stopped));
        if let Some(dir) = args.record_dir.clone() {
            let hours = |h: u64| (h > 0).then(|| Duration::from_secs(h.saturating_mul(3600)));
            let max_age = hours(args.record_max_age_hours);
            let max_bytes =
                (args.record_max_mib > 0).then_some(args.record_max_mib.saturating_mul(1 << 20));
            tokio::spawn(record_retention(dir, max_age, max_bytes));
        }
        let rtmps = listeners.rtmps.zip(listeners.cert.clone()).map(|(listener, cert)| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "RTMPS listening");
            }
            tokio::spawn(ingest::serve_tls(
                listener,
                rtmp_spread.clone(),
                rtmp_hls_tls::server_config(cert, &[]),
                Arc::clone(&ingest),
                stopped(rtmp_stopped.clone()),
                grace,
            ))
        });
        let rtmp = tokio::spawn(ingest::serve(
            listeners.rtmp,
            rtmp_spread,
            ingest,
            stopped(rtmp_stopped),
            grace,
        ));
        let serve_http = |listener: TcpListener, spread: Spread, routes, direct| {
            let stop = stopped(http_stopped.clone());
            tokio::spawn(rtmp_hls_http::serve_router(
                listener,
                spread,
                routes,
                direct,
                args.http_limits(),
                stop,
                grace,
            ))
        };
        let admin = listeners.admin.zip(routes.admin).map(|(listener, routes)| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "admin API listening");
            }
            // The API on its own address is not viewers' traffic: it stays on the main
            // runtime (on the public address it shares the HTTP connections' threads).
            serve_http(listener, Spread::here(), routes, None)
        });
        let https = listeners.https.zip(listeners.cert.clone()).map(|(listener, cert)| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "HTTPS listening");
            }
            tokio::spawn(rtmp_hls_http::serve_router_tls(
                listener,
                http_spread.clone(),
                routes.public.clone(),
                Some(routes.direct.clone()),
                args.http_limits(),
                cert,
                stopped(http_stopped.clone()),
                grace,
            ))
        });
        let certificate_watch = listeners.cert.map(|cert| tokio::spawn(cert.watch()));
        let http = serve_http(listeners.http, http_spread, routes.public, Some(routes.direct));
        Self {
            stop_rtmp,
            stop_http,
            rtmp,
            http,
            admin,
            https,
            rtmps,
            housekeeping,
            certificate_watch,
            stop_cluster,
            threads,
        }
    }

    /// Stops RTMP (every live stream ends), saves the sequence numbers, flushes Kafka, stops
    /// HTTP, then the connection threads.
    async fn stop(
        self,
        ingest: &Ingest,
        sequences: &SequenceFile,
        kafka: Option<Arc<KafkaEvents>>,
    ) -> Result<()> {
        let store = &ingest.store;
        let _ = self.stop_rtmp.send(true);
        self.rtmp.await?.context("RTMP listener")?;
        if let Some(rtmps) = self.rtmps {
            rtmps.await?.context("RTMPS listener")?;
        }
        self.housekeeping.abort();
        // Saved first: what follows waits on other services, and may be cut short.
        if let Err(e) = sequences.save(store) {
            warn!(error = %e, "could not save media sequence numbers");
        }
        if let Some(member) = ingest.cluster() {
            // Every stream ended here: the next node to publish one continues its numbering.
            member.release_all(ingest).await;
        }
        let _ = self.stop_cluster.send(true);
        if let Some(kafka) = kafka {
            // Every stop event is queued by now: hand them to the broker, boundedly.
            tokio::task::spawn_blocking(move || kafka.flush(KAFKA_FLUSH_LIMIT)).await?;
        }
        let _ = self.stop_http.send(true);
        self.http.await?.context("HTTP server")?;
        if let Some(admin) = self.admin {
            admin.await?.context("admin API server")?;
        }
        if let Some(https) = self.https {
            https.await?.context("HTTPS server")?;
        }
        if let Some(watch) = self.certificate_watch {
            watch.abort();
        }
        if let Some(threads) = self.threads {
            // Recordings' writers finish their files there.
            tokio::task::spawn_blocking(move || threads.stop()).await?;
        }
        Ok(())
    }
}

/// Creates the key collection's indexes, retrying while the database is unreachable (the
/// server runs meanwhile, refusing publishes it cannot check).
async fn ensure_indexes(store: MongoKeyStore) {
    let mut delay = Duration::from_secs(1);
    loop {
        match store.ensure_indexes().await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e.kind, "MongoDB indexes not created yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The machine's host name, for `server_id`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "rtmp-hls".to_owned())
}

/// Completes when `rx` turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Every second: forget streams that ended long enough ago, and persist media sequence
/// numbers when they changed (so a restart after a crash never goes back to an older one).
/// Every [`RELEASE_INTERVAL`]: free the memory nothing used since the last time.
async fn housekeeping(ingest: Arc<Ingest>, sequences: SequenceFile, ended_ttl: Duration) {
    let store = Arc::clone(&ingest.store);
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut release = tokio::time::interval(RELEASE_INTERVAL);
    let mut saved = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = release.tick() => {
                store.buffer_pool().release_unused();
                // It walks every arena under its lock: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(crate::allocator::release_free_memory).await;
                continue;
            }
        }
        let expired = store.reap(std::time::Instant::now(), ended_ttl);
        for name in &expired {
            info!(stream = %name, "ended stream expired");
        }
        if !expired.is_empty() {
            // The stats of a forgotten stream go with it (a publish accepted but never
            // packaged has no store entry either, and goes too).
            ingest.statuses().retain(|name| store.contains(name));
        }
        let current = store.sequences();
        if current != saved {
            let (file, snapshot) = (sequences.clone(), current.clone());
            match tokio::task::spawn_blocking(move || file.write(&snapshot)).await {
                Ok(Ok(())) => saved = current,
                Ok(Err(e)) => warn!(error = %e, "could not save media sequence numbers"),
                Err(e) => warn!(error = %e, "sequence saver failed"),
            }
        }
    }
}

/// How often recordings past their age or over the size limit are deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Deletes old recordings every [`RETENTION_INTERVAL`] (see [`ingest::record::sweep`]).
async fn record_retention(
    dir: std::path::PathBuf,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
) {
    if max_age.is_none() && max_bytes.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        tick.tick().await;
        let dir = dir.clone();
        let swept = tokio::task::spawn_blocking(move || {
            ingest::record::sweep(&dir, max_age, max_bytes, std::time::SystemTime::now())
        });
        for deleted in swept.await.unwrap_or_default() {
            info!(path = %deleted.display(), "recording deleted (retention)");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// A wildcard address's loopback twin, for printing and for the health check.
pub(crate) fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}
