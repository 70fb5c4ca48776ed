//! `rtmp-hls`: the binary. Parses the configuration (flags, environment, file), then runs the
//! server ([`server`]) or a command: `keys` (the key store), `config check|example`,
//! `healthcheck`. It owns the adapters behind the libraries' traits (the MongoDB key store,
//! the Kafka event sink, the API's `Control`); protocol and media logic live in the crates.

mod allocator;
mod config;
mod config_file;
mod control;
mod kafka_events;
mod key_admin;
mod migrate;
mod mongo_keys;
mod mongo_registry;
mod sequences;
mod server;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use config::{Command, ConfigAction, KeysAction, LogFormat, ServeArgs};
use key_admin::{KeyAdmin, StoreSettings};
use server::DEMO_STREAM;

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
        Some(Command::Migrate { nginx_conf }) => migrate_nginx(&nginx_conf),
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

/// Prints the rtmp-hls configuration equivalent to an Nginx-RTMP one.
fn migrate_nginx(path: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = migrate::parse(&text).with_context(|| format!("{}", path.display()))?;
    let name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    print_out(&migrate::migrate(&parsed).render(&name));
    Ok(())
}

/// Validates what parsing cannot (files the options name) and prints the effective
/// configuration.
fn check_config(args: &ServeArgs, matches: &clap::ArgMatches) -> Result<()> {
    server::jwt_verifier(args)?;
    print_out(&config_file::effective(matches));
    print_out("# configuration OK\n");
    Ok(())
}

#[allow(clippy::print_stdout)] // the CLI's output
fn print_out(text: &str) {
    print!("{text}");
}

/// How long the health check waits for the server.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// GETs /healthz from the server listening on `addr` (a wildcard address means this host).
fn healthcheck(addr: SocketAddr) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let addr = server::reachable(addr);
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
            KeysAction::Add { name, owner, private } => {
                let key = store.add(&name, owner.as_deref(), private).await?;
                let kind = if private { "private stream" } else { "stream" };
                println!("Created {kind} {name:?}. Its stream key, shown only this once:");
                println!("{key}");
            }
            KeysAction::Push { name, urls } => {
                for url in &urls {
                    ingest::push::PushTarget::parse(url)?;
                }
                if !store.set_push(&name, &urls).await? {
                    anyhow::bail!("no stream named {name:?} has a key");
                }
                println!("{name:?} is pushed to {} target(s) from its next publish.", urls.len());
            }
            KeysAction::Record { name, setting } => {
                let record = match setting.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                };
                if !store.set_record(&name, record).await? {
                    anyhow::bail!("no stream named {name:?} has a key");
                }
                println!("{name:?} recording: {setting}, from its next publish.");
            }
            KeysAction::Visibility { name, visibility } => {
                if !store.set_private(&name, visibility == "private").await? {
                    anyhow::bail!("no stream named {name:?} has a key");
                }
                println!("{name:?} is {visibility}; a live publish follows within seconds.");
            }
            KeysAction::List => {
                let streams = store.list().await?;
                if streams.is_empty() {
                    println!("No streams. Create one with: rtmp-hls keys add <name>");
                }
                for s in streams {
                    let owner = s.owner.map(|o| format!(" owner {o}")).unwrap_or_default();
                    let revoked = if s.revoked { " (revoked)" } else { "" };
                    let private = if s.private { " private" } else { "" };
                    let push = if s.push.is_empty() {
                        String::new()
                    } else {
                        format!(" pushed to {} target(s)", s.push.len())
                    };
                    println!(
                        "{:<32} created {}{owner}{private}{push}{revoked}",
                        s.stream, s.created_at
                    );
                }
            }
            KeysAction::RevokeToken { jti } => {
                if store.revoke_token(&jti).await? {
                    println!("Revoked publish token {jti:?}.");
                } else {
                    println!("Publish token {jti:?} was revoked already.");
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
    runtime.block_on(server::run(settings, args))
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
pub(crate) fn print_welcome(args: &ServeArgs, rtmp: SocketAddr, http: SocketAddr, key: &str) {
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
