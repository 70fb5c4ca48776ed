//! `rtmp-hls`: the binary. Parses the configuration, opens the key store, wires the RTMP
//! listener, the stream store and the HTTP server together, and runs the `keys` CLI.

mod config;
mod config_file;
mod control;
mod kafka_events;
mod key_admin;
mod mongo_keys;
mod sequences;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use auth::Authorizer;
use auth::jwt::JwtVerifier;
use config::{Command, ConfigAction, KeysAction, LogFormat, ServeArgs};
use ingest::events::{Envelope, Event, EventSink};
use ingest::{Ingest, IngestConfig, LogSink};
use kafka_events::{KafkaEvents, KafkaSettings};
use key_admin::{KeyAdmin, StoreSettings};
use mongo_keys::MongoKeyStore;
use packager::RemuxerConfig;
use stream_store::{MemfdSegments, StoreConfig, StreamStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// The stream created on first start.
const DEMO_STREAM: &str = "demo";
/// How long the server waits on exit for Kafka to acknowledge queued events.
const KAFKA_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// How often ended streams are checked for expiry and sequence numbers persisted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> std::process::ExitCode {
    let (cli, matches) =
        config_file::load(std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    let settings = StoreSettings {
        data_dir: cli.data_dir.clone(),
        mongo_uri: cli.mongo_uri.clone(),
        mongo_database: cli.mongo_database.clone(),
        mongo_collection: cli.mongo_collection.clone(),
    };
    let outcome = match cli.command {
        Some(Command::Keys { action }) => keys(&settings, action),
        Some(Command::Config { action: ConfigAction::Check }) => check_config(&cli.serve, &matches),
        Some(Command::Healthcheck) => healthcheck(cli.serve.http_addr),
        Some(Command::Config { action: ConfigAction::Example }) => {
            print_out(&config_file::example());
            Ok(())
        }
        None => serve(settings, cli.serve),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)] // the binary's edge: the one place errors are shown
            {
                eprintln!("rtmp-hls: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Validates what parsing cannot (files the options name) and prints the effective
/// configuration.
fn check_config(args: &ServeArgs, matches: &clap::ArgMatches) -> Result<()> {
    jwt_verifier(args)?;
    print_out(&config_file::effective(matches));
    print_out("# configuration OK\n");
    Ok(())
}

#[allow(clippy::print_stdout)] // the CLI's output
fn print_out(text: &str) {
    print!("{text}");
}

/// The publish-token verifier the options configure, if any.
fn jwt_verifier(args: &ServeArgs) -> Result<Option<JwtVerifier>> {
    Ok(match (&args.jwt_secret, &args.jwt_public_key) {
        (Some(secret), _) => Some(JwtVerifier::from_secret(secret.as_bytes())),
        (None, Some(path)) => {
            Some(JwtVerifier::from_public_key_file(path).context("--jwt-public-key")?)
        }
        (None, None) => None,
    })
}

/// How long the health check waits for the server.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// GETs /healthz from the server listening on `addr` (a wildcard address means this host).
fn healthcheck(mut addr: SocketAddr) -> Result<()> {
    use std::io::{Read as _, Write as _};
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        anyhow::bail!("{addr} answered {:?}", status_line.lines().next().unwrap_or_default())
    }
}

/// How long the keys commands wait for MongoDB.
const CLI_DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

#[allow(clippy::print_stdout)] // this is the CLI's output
fn keys(settings: &StoreSettings, action: KeysAction) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = KeyAdmin::open(settings, CLI_DATABASE_TIMEOUT).await?;
        match action {
            KeysAction::Add { name, owner } => {
                let key = store.add(&name, owner.as_deref()).await?;
                println!("Created stream {name:?}. Its stream key, shown only this once:");
                println!("{key}");
            }
            KeysAction::List => {
                let streams = store.list().await?;
                if streams.is_empty() {
                    println!("No streams. Create one with: rtmp-hls keys add <name>");
                }
                for s in streams {
                    let owner = s.owner.map(|o| format!(" owner {o}")).unwrap_or_default();
                    let revoked = if s.revoked { " (revoked)" } else { "" };
                    println!("{:<32} created {}{owner}{revoked}", s.stream, s.created_at);
                }
            }
            KeysAction::Revoke { name } => {
                if store.revoke(&name).await? {
                    println!("Revoked the key of {name:?}.");
                } else {
                    anyhow::bail!("no stream named {name:?} with a live key");
                }
            }
        }
        Ok(())
    })
}

fn serve(settings: StoreSettings, args: ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(settings, args))
}

async fn run(settings: StoreSettings, args: ServeArgs) -> Result<()> {
    // Everything the options name is checked before anything starts.
    let jwt = jwt_verifier(&args)?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!("creating the data directory {} (--data-dir)", data_dir.display())
    })?;
    let keys = KeyAdmin::open(&settings, args.auth_timeout)
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
    if jwt.is_some() {
        info!("publish tokens (JWT) accepted as stream keys");
    }
    let admin_jwt = jwt_verifier(&args)?.map(Arc::new);
    let authorizer =
        Arc::new(Authorizer::new(keys.key_store(), jwt, args.failure_limits(), args.auth_timeout));

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
    let rtmp_addr = rtmp.local_addr()?;
    let http_addr = http.local_addr()?;

    let store_config = StoreConfig {
        window: usize::from(args.playlist_length),
        retain_after_window: usize::from(args.playlist_length) + 1,
        target_duration: args.segment_duration,
    };
    // Popular segments move to memory files, sent without a copy.
    let store = Arc::new(match args.segment_storage {
        config::SegmentStorage::Memfd => {
            StreamStore::with_segment_files(store_config, MemfdSegments::new())
        }
        config::SegmentStorage::Heap => StreamStore::new(store_config),
    });
    let sequences = sequences::SequenceFile::new(&data_dir);
    store.restore_sequences(sequences.load_for_restart());
    let server_id = args.server_id.clone().unwrap_or_else(host_name);
    let kafka = match &args.kafka_brokers {
        Some(brokers) => Some(KafkaEvents::start(&KafkaSettings {
            brokers: brokers.clone(),
            topic: args.kafka_topic.clone(),
            properties: args.kafka_properties.clone(),
            server_id: server_id.clone(),
        })?),
        None => None,
    };
    let events: Arc<dyn EventSink> = match &kafka {
        Some(kafka) => Arc::clone(kafka) as Arc<dyn EventSink>,
        None => Arc::new(LogSink::new(Envelope::new(server_id.clone()))),
    };
    events.emit(Event::ServerStarted);
    let ingest = Arc::new(Ingest::new(
        IngestConfig {
            app: args.app.clone(),
            remuxer: RemuxerConfig { target_duration: args.segment_duration },
            limits: args.ingest_limits(),
            takeover: args.takeover_policy(),
            stats_interval: args.stats_interval,
            hooks: args.hooks(),
            max_read_pause: Duration::from_millis(args.max_read_pause_ms),
        },
        Arc::clone(&store),
        authorizer,
        Arc::clone(&events),
    ));

    let http_metrics = rtmp_hls_http::metrics::HttpMetrics::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("rtmp_hls");
    ingest.metrics().register(&mut registry);
    http_metrics.register(&mut registry);
    registry.register_collector(Box::new(control::CurrentState {
        ingest: Arc::clone(&ingest),
        store: Arc::clone(&store),
        kafka: kafka.clone(),
    }));
    let api = rtmp_hls_http::api::router(Arc::new(control::ServerControl {
        ingest: Arc::clone(&ingest),
        store: Arc::clone(&store),
        keys: keys.clone(),
        auth: control::AdminAuth { token: args.admin_token.clone(), jwt: admin_jwt },
        registry,
    }));
    let hls = rtmp_hls_http::router(Arc::clone(&store), args.max_viewers_per_stream);
    let (public_routes, admin_routes) = match admin {
        Some(listener) => (hls, Some((listener, http_metrics.count(api)))),
        None => (hls.merge(api), None),
    };
    let public_routes = http_metrics.count(public_routes);

    info!(addr = %rtmp_addr, "RTMP listening");
    info!(addr = %http_addr, "HTTP listening");
    if let Some(key) = demo_key {
        print_welcome(&args, rtmp_addr, http_addr, &key);
    }

    let (stop_rtmp, rtmp_stopped) = watch::channel(false);
    let (stop_http, http_stopped) = watch::channel(false);
    let housekeeping =
        tokio::spawn(housekeeping(Arc::clone(&ingest), sequences.clone(), args.ended_ttl));
    let rtmp_task =
        tokio::spawn(ingest::serve(rtmp, ingest, stopped(rtmp_stopped), args.shutdown_grace));
    let admin_task = admin_routes.map(|(listener, routes)| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "admin API listening");
        }
        tokio::spawn(rtmp_hls_http::serve_router(
            listener,
            routes,
            args.http_limits(),
            stopped(http_stopped.clone()),
            args.shutdown_grace,
        ))
    });
    let http_task = tokio::spawn(rtmp_hls_http::serve_router(
        http,
        public_routes,
        args.http_limits(),
        stopped(http_stopped),
        args.shutdown_grace,
    ));

    shutdown_signal().await;
    info!("shutting down: ending live streams");
    events.emit(Event::ServerStopping);
    // RTMP first: every live stream gets its last segment and EXT-X-ENDLIST.
    let _ = stop_rtmp.send(true);
    rtmp_task.await?.context("RTMP listener")?;
    housekeeping.abort();
    if let Err(e) = sequences.save(&store) {
        warn!(error = %e, "could not save media sequence numbers");
    }
    if let Some(kafka) = kafka {
        // Every stop event is queued by now: hand them to the broker, boundedly.
        tokio::task::spawn_blocking(move || kafka.flush(KAFKA_FLUSH_LIMIT)).await?;
    }
    let _ = stop_http.send(true);
    http_task.await?.context("HTTP server")?;
    if let Some(task) = admin_task {
        task.await?.context("admin API server")?;
    }
    info!("stopped");
    Ok(())
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
async fn housekeeping(
    ingest: Arc<Ingest>,
    sequences: sequences::SequenceFile,
    ended_ttl: Duration,
) {
    let store = Arc::clone(&ingest.store);
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut saved = Vec::new();
    loop {
        tick.tick().await;
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The first-start message: how to publish to the demo stream and where to watch it.
#[allow(clippy::print_stdout)] // shown once to the operator, on purpose not a log line
fn print_welcome(args: &ServeArgs, rtmp: SocketAddr, http: SocketAddr, key: &str) {
    let host = |addr: SocketAddr| match &args.public_host {
        Some(host) => host.clone(),
        None if addr.ip().is_unspecified() => "localhost".to_owned(),
        None => addr.ip().to_string(),
    };
    let server = format!("rtmp://{}:{}/{}", host(rtmp), rtmp.port(), args.app);
    let play = format!("http://{}:{}/hls/{DEMO_STREAM}/index.m3u8", host(http), http.port());
    println!(
        "\nCreated stream \"{DEMO_STREAM}\" with a new stream key. It is shown only this once; \
         only its hash is stored.\n\
         \n  ffmpeg:  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \
         -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv {server}/{key}\
         \n  OBS:     Server: {server}\
         \n           Stream Key: {key}\
         \n  Watch:   {play}\
         \n           (ffplay, VLC, Safari, or any hls.js page)\
         \n\nAdd streams with: rtmp-hls keys add <name>\n"
    );
}
