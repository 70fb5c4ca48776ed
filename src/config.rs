//! Command line and environment: every server option is a flag with an `RTMP_HLS_*`
//! variable. The names of `--rtmp-addr`, `--http-addr`, `--data-dir` and their variables are
//! a stable interface: scripts rely on them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ingest::TakeoverPolicy;
use ingest::hooks::{HookMethod, HookMode};

/// RTMP ingest to in-memory HLS.
///
/// With no arguments, serves RTMP on 0.0.0.0:1935 and HLS on 0.0.0.0:8080, with stream keys
/// kept in ./data. On first start it creates a stream "demo" and prints how to publish to it.
#[derive(Debug, Parser)]
#[command(name = "rtmp-hls", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Configuration file (TOML; keys are these options in snake case, see
    /// rtmp-hls.example.toml). Environment variables and flags override it.
    #[arg(long, env = "RTMP_HLS_CONFIG", value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,

    /// Directory of the embedded key store (and of persisted sequence numbers).
    #[arg(long, env = "RTMP_HLS_DATA_DIR", default_value = "data", global = true)]
    pub(crate) data_dir: PathBuf,

    /// MongoDB connection string (mongodb://...). When set, stream keys live in MongoDB
    /// instead of the embedded store, for the server and the keys commands alike.
    #[arg(long, env = "RTMP_HLS_MONGO_URI", global = true, hide_env_values = true)]
    pub(crate) mongo_uri: Option<String>,

    /// MongoDB database of the key collection.
    #[arg(long, env = "RTMP_HLS_MONGO_DATABASE", default_value = "streaming", global = true)]
    pub(crate) mongo_database: String,

    /// MongoDB collection of stream keys (schema: docs/keys.md).
    #[arg(long, env = "RTMP_HLS_MONGO_COLLECTION", default_value = "stream_keys", global = true)]
    pub(crate) mongo_collection: String,

    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage stream keys in the embedded store (applies to a running server at once).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Exit 0 if the server on --http-addr answers /healthz (for container health checks:
    /// the runtime image has no curl).
    Healthcheck,
    /// Check the configuration, or print an example file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Read an Nginx-RTMP configuration (its `rtmp {}` block and the `http {}` server of its
    /// HLS) and print the equivalent rtmp-hls configuration file, every directive without
    /// an option listed with why.
    Migrate {
        /// The nginx.conf to read.
        nginx_conf: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Validate the configuration (file, environment, flags) and print the effective values,
    /// secrets masked.
    Check,
    /// Print an example configuration file with every option and its default.
    Example,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Create a stream and print its key (once: only its hash is stored).
    Add {
        /// Public stream name (A-Z a-z 0-9 _ - .), used in the play URL.
        name: String,
        /// Owner recorded with the key (the platform's user id; MongoDB store only).
        #[arg(long)]
        owner: Option<String>,
        /// Only viewers with a viewer token (the platform's login) may watch it, and it is
        /// not listed in the public stats.
        #[arg(long)]
        private: bool,
    },
    /// Set where a stream is pushed on to, besides the server's --push targets (from its next
    /// publish); no URL clears the list.
    Push {
        /// Public stream name.
        name: String,
        /// rtmp[s]://host[:port]/app[/key] (the key is stored as given: keep the file or
        /// database as secret as the keys).
        urls: Vec<String>,
    },
    /// Record a stream's publishes (`on`), never (`off`), or as the server's
    /// --record-streams says (`default`).
    Record {
        /// Public stream name.
        name: String,
        /// `on`, `off` or `default`.
        #[arg(value_parser = ["on", "off", "default"])]
        setting: String,
    },
    /// Make a stream private or public; a live publish with the stream's key follows within
    /// seconds (at its next key re-check).
    Visibility {
        /// Public stream name.
        name: String,
        /// `private` or `public`.
        #[arg(value_parser = ["private", "public"])]
        visibility: String,
    },
    /// List streams and when their keys were created (never the keys).
    List,
    /// Revoke a publish token by its id (its `jti` claim): it stops publishing, and a live
    /// publish it started ends.
    RevokeToken {
        /// The token's `jti`.
        jti: String,
    },
    /// Revoke a stream's key.
    Revoke {
        /// Public stream name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SegmentStorage {
    /// MPEG-TS segments are written into their stream's memory file (Linux memfd) as they
    /// are made, an fMP4 segment moves there at its second fetch; viewers are sent them with
    /// sendfile, without a copy, as Nginx sends files from tmpfs. A segment's pages are
    /// allocated as it is written and freed when it goes: the least memory.
    Memfd,
    /// The process heap: an MPEG-TS segment is the packager's 32 KiB buffers, recycled, and
    /// one buffer from its second fetch on. Every response copies it into the socket, but no
    /// page is allocated per segment: a stream costs 5-20 % less CPU and about 0.1 MiB more
    /// memory (BENCHMARKS.md).
    Heap,
}

/// Which streams `--record-dir` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RecordStreams {
    /// Every stream, but those whose key says `record: false`.
    All,
    /// Only the streams whose key says `record: true`.
    Marked,
}

/// What HLS is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HlsVariant {
    /// MPEG-TS segments (RFC 8216 §3.2): every HLS player since 2009; H.264, AAC, MP3.
    Mpegts,
    /// Fragmented MP4 segments after an init segment (EXT-X-MAP); also HEVC, AV1, VP9.
    Fmp4,
    /// fMP4 with parts, blocking playlist reload, preload hints and delta updates
    /// (low-latency HLS); players that do not know parts play its segments.
    LowLatency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("tls_listener").args(["https_addr", "rtmps_addr"]).multiple(true)))]
pub(crate) struct ServeArgs {
    /// RTMP listen address.
    #[arg(long, env = "RTMP_HLS_RTMP_ADDR", default_value = "0.0.0.0:1935")]
    pub(crate) rtmp_addr: SocketAddr,

    /// RTMPS listen address (RTMP over TLS: rtmps://host:port/<app>, the usual port is 443);
    /// needs --tls-cert and --tls-key. The RTMP listener stays.
    #[arg(long, env = "RTMP_HLS_RTMPS_ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub(crate) rtmps_addr: Option<SocketAddr>,

    /// HTTP listen address (HLS delivery).
    #[arg(long, env = "RTMP_HLS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub(crate) http_addr: SocketAddr,

    /// Threads that RTMP and HTTP connections run on, each connection on one from accept to
    /// close, as each Nginx worker runs its own (default: one per core). 0 runs them on the
    /// work-stealing pool with everything else, which wakes a second core for work one could
    /// do.
    #[arg(long, env = "RTMP_HLS_CONNECTION_THREADS", value_parser = clap::value_parser!(u16).range(0..=i64::from(rtmp_hls_threads::MAX_THREADS)))]
    pub(crate) connection_threads: Option<u16>,

    /// HTTPS listen address (HLS over HTTP/2 or HTTP/1.1, as Apple's low-latency players
    /// want); needs --tls-cert and --tls-key. The plain HTTP listener stays.
    #[arg(long, env = "RTMP_HLS_HTTPS_ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub(crate) https_addr: Option<SocketAddr>,

    /// PEM certificate chain of the HTTPS and RTMPS listeners (leaf first); reloaded when
    /// it changes.
    #[arg(long, env = "RTMP_HLS_TLS_CERT", requires = "tls_listener")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key of the HTTPS and RTMPS listeners (PKCS#8, PKCS#1 or SEC1); reloaded
    /// with the certificate.
    #[arg(long, env = "RTMP_HLS_TLS_KEY", requires = "tls_listener")]
    pub(crate) tls_key: Option<PathBuf>,

    /// RTMP players (ffplay, VLC, OBS's media source) may pull live streams from
    /// rtmp://host/<app>/<name> (private ones with ?token=<viewer token>).
    #[arg(long, env = "RTMP_HLS_RTMP_PLAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) rtmp_play: bool,

    /// RTMP players at once, over all streams (--max-viewers-per-stream applies to each
    /// stream's players too). Players never take the connections live publishers need:
    /// at most --max-connections less --max-streams (of which at most half is kept).
    #[arg(long, env = "RTMP_HLS_MAX_RTMP_PLAYERS", default_value_t = ingest::play::MAX_PLAYERS, help_heading = "Limits")]
    pub(crate) max_rtmp_players: usize,

    /// The built-in web page on the HTTP listeners: `/` lists the streams, `/watch/<name>`
    /// plays one (hls.js from jsDelivr, pinned with Subresource Integrity).
    #[arg(long, env = "RTMP_HLS_WEB_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) web_page: bool,

    /// RTMP application publishers connect to (rtmp://host/<app>).
    #[arg(long, env = "RTMP_HLS_APP", default_value = "live")]
    pub(crate) app: String,

    /// Target segment duration in seconds; segments are cut at the first keyframe after it.
    #[arg(long, env = "RTMP_HLS_SEGMENT_DURATION", default_value = "2", value_parser = parse_seconds)]
    pub(crate) segment_duration: Duration,

    /// Segments listed in the live playlist (more while fewer would be shorter than three
    /// target durations, which RFC 8216 forbids).
    #[arg(long, env = "RTMP_HLS_PLAYLIST_LENGTH", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) playlist_length: u16,

    /// Where closed segments are kept in RAM.
    #[arg(long, env = "RTMP_HLS_SEGMENT_STORAGE", value_enum, default_value_t = SegmentStorage::Memfd)]
    pub(crate) segment_storage: SegmentStorage,

    /// What HLS is made of.
    #[arg(long, env = "RTMP_HLS_HLS_VARIANT", value_enum, default_value_t = HlsVariant::Mpegts)]
    pub(crate) hls_variant: HlsVariant,

    /// Part duration in seconds with `--hls-variant low-latency` (0.1 to 2). Parts are whole
    /// frames: PART-TARGET is as many frames as fit in it (at least one), counted 1 ms long
    /// each, so at 30 fps 0.25 gives parts of 7 frames under a target of 0.238.
    #[arg(long, env = "RTMP_HLS_PART_DURATION", default_value = "0.25", value_parser = parse_part_seconds)]
    pub(crate) part_duration: Duration,

    /// Seconds an ended stream's playlist (with EXT-X-ENDLIST) stays available.
    #[arg(long, env = "RTMP_HLS_ENDED_TTL", default_value = "60", value_parser = parse_seconds)]
    pub(crate) ended_ttl: Duration,

    /// Seconds a stream whose publisher dropped without stopping (network loss, encoder
    /// killed, timeout) stays live, without EXT-X-ENDLIST, so players keep waiting; a publish
    /// of it within that time continues the playlist after a discontinuity. A publisher that
    /// stops (OBS's "Stop Streaming") ends the stream at once. 0: every end is final.
    #[arg(long, env = "RTMP_HLS_RECONNECT_WINDOW", default_value = "20", value_parser = parse_seconds_or_zero)]
    pub(crate) reconnect_window: Duration,

    /// Host name used in the URLs printed at startup.
    #[arg(long, env = "RTMP_HLS_PUBLIC_HOST")]
    pub(crate) public_host: Option<String>,

    /// Log format.
    #[arg(long, env = "RTMP_HLS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Open RTMP connections, all clients together.
    #[arg(long, env = "RTMP_HLS_MAX_CONNECTIONS", default_value_t = ingest::limits::MAX_CONNECTIONS, help_heading = "Limits")]
    pub(crate) max_connections: usize,

    /// Open RTMP connections from one IP address (IPv6: one prefix, --ipv6-prefix).
    #[arg(long, env = "RTMP_HLS_MAX_CONNECTIONS_PER_IP", default_value_t = ingest::limits::MAX_CONNECTIONS_PER_IP, help_heading = "Limits")]
    pub(crate) max_connections_per_ip: usize,

    /// Open RTMP connections not granted a publish yet; past it, a new connection takes the
    /// place of one of them (the oldest of the address with the most), so idle or half-open
    /// connections cannot keep publishers out.
    #[arg(long, env = "RTMP_HLS_MAX_UNAUTHENTICATED", default_value_t = ingest::limits::MAX_UNAUTHENTICATED, help_heading = "Limits")]
    pub(crate) max_unauthenticated: usize,

    /// New RTMP connections one IP address may open per minute, after a burst of 16 (0: no
    /// limit). Keeps evicted connections from coming straight back.
    #[arg(long, env = "RTMP_HLS_NEW_CONNECTIONS_PER_IP_PER_MINUTE", default_value_t = ingest::limits::NEW_CONNECTIONS_PER_IP_PER_MINUTE, help_heading = "Limits")]
    pub(crate) new_connections_per_ip_per_minute: u32,

    /// Prefix length IPv6 clients are counted by in per-address limits (connections, failed
    /// publish attempts, viewer sessions without a token): one subscriber usually holds a
    /// whole /64.
    #[arg(long, env = "RTMP_HLS_IPV6_PREFIX", default_value_t = auth::address::IPV6_PREFIX, value_parser = clap::value_parser!(u8).range(1..=128), help_heading = "Limits")]
    pub(crate) ipv6_prefix: u8,

    /// Streams live at once.
    #[arg(long, env = "RTMP_HLS_MAX_STREAMS", default_value_t = ingest::limits::MAX_STREAMS, help_heading = "Limits")]
    pub(crate) max_streams: usize,

    /// Seconds from TCP accept to the end of the RTMP handshake.
    #[arg(long, env = "RTMP_HLS_HANDSHAKE_TIMEOUT", default_value = "5", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) handshake_timeout: Duration,

    /// Seconds from TCP accept to the publish request.
    #[arg(long, env = "RTMP_HLS_PUBLISH_TIMEOUT", default_value = "5", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) publish_timeout: Duration,

    /// Seconds without audio or video after which a publisher is dropped and its stream ended.
    #[arg(long, env = "RTMP_HLS_NO_MEDIA_TIMEOUT", default_value = "15", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) no_media_timeout: Duration,

    /// Milliseconds between reads of a live publisher's media, so several messages are read
    /// at once (SRS's merged read, but never holding up a segment or part): publishers are
    /// read at ticks this far apart, the same for all (one wake-up reads them all), or 2 ms
    /// after the frame that closes the next segment or part is due; the kernel holds the
    /// bytes in between (SO_RCVLOWAT, waking the reader early only past 128 KiB: a burst,
    /// or a stream above ~3.5-5 Mbit/s). Media relayed to RTMP players and push targets
    /// waits up to one and a half times this long. 0 reads each message as it arrives.
    #[arg(long, env = "RTMP_HLS_MAX_READ_PAUSE_MS", default_value_t = DEFAULT_MAX_READ_PAUSE_MS, value_parser = clap::value_parser!(u64).range(0..=MAX_READ_PAUSE_MS), help_heading = "Limits")]
    pub(crate) max_read_pause_ms: u64,

    /// Kafka bootstrap servers (host:port,...). When set, lifecycle events go to Kafka; when
    /// not, to the log.
    #[arg(long, env = "RTMP_HLS_KAFKA_BROKERS", help_heading = "Events")]
    pub(crate) kafka_brokers: Option<String>,

    /// Kafka topic of lifecycle events.
    #[arg(
        long,
        env = "RTMP_HLS_KAFKA_TOPIC",
        default_value = "stream-events",
        help_heading = "Events"
    )]
    pub(crate) kafka_topic: String,

    /// A librdkafka property, as name=value (repeatable; e.g. security.protocol=SASL_PLAINTEXT).
    #[arg(long = "kafka-property", value_name = "NAME=VALUE", value_parser = parse_property, help_heading = "Events")]
    pub(crate) kafka_properties: Vec<(String, String)>,

    /// This server's id in events (default: the host name).
    #[arg(long, env = "RTMP_HLS_SERVER_ID", help_heading = "Events")]
    pub(crate) server_id: Option<String>,

    /// Seconds between stream_stats events of each live stream.
    #[arg(long, env = "RTMP_HLS_STATS_INTERVAL", default_value = "10", value_parser = parse_seconds, help_heading = "Events")]
    pub(crate) stats_interval: Duration,

    /// Shared secret of HS256 publish tokens (JWTs used as stream keys).
    #[arg(
        long,
        env = "RTMP_HLS_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key",
        help_heading = "Publish tokens"
    )]
    pub(crate) jwt_secret: Option<String>,

    /// Public key of RS256/ES256 publish tokens: a PEM file, or a JWKS (JSON) file.
    #[arg(long, env = "RTMP_HLS_JWT_PUBLIC_KEY", help_heading = "Publish tokens")]
    pub(crate) jwt_public_key: Option<PathBuf>,

    /// The `aud` claim publish tokens must carry (then required). Give this service its own
    /// audience, so a login token of the platform is not a stream key.
    #[arg(long, env = "RTMP_HLS_JWT_AUDIENCE", help_heading = "Publish tokens")]
    pub(crate) jwt_audience: Option<String>,

    /// The `aud` claim admin API tokens must carry (then required); a different one from
    /// --jwt-audience, so a publish token never administers.
    #[arg(long, env = "RTMP_HLS_JWT_ADMIN_AUDIENCE", help_heading = "Publish tokens")]
    pub(crate) jwt_admin_audience: Option<String>,

    /// The `iss` claim every token must carry (then required).
    #[arg(long, env = "RTMP_HLS_JWT_ISSUER", help_heading = "Publish tokens")]
    pub(crate) jwt_issuer: Option<String>,

    /// A suffix of streams published as renditions of one another (repeatable, in the order
    /// players should see them; Nginx-RTMP's hls_variant): with `--variant _720p --variant
    /// _480p`, /hls/cam/index.m3u8 lists cam_720p and cam_480p with their measured bit rates,
    /// codecs, resolution and frame rate.
    #[arg(long = "variant", value_name = "SUFFIX", value_parser = parse_variant_suffix)]
    pub(crate) variants: Vec<String>,

    /// Record every publish into this directory: <dir>/<stream>/<stream>-<start>.mp4
    /// (fragmented MP4, written as it goes) and a VOD playlist beside it, served at
    /// /recordings/<stream>/<file> (not those of private streams).
    #[arg(long, env = "RTMP_HLS_RECORD_DIR", help_heading = "Recording")]
    pub(crate) record_dir: Option<PathBuf>,

    /// What recordings are written as: `mp4` (fragmented, with a VOD playlist) or `flv` (the
    /// tags as the encoder sent them, as Nginx-RTMP records).
    #[arg(long, env = "RTMP_HLS_RECORD_FORMAT", value_enum, default_value_t = ingest::record::RecordFormat::Mp4, help_heading = "Recording")]
    pub(crate) record_format: ingest::record::RecordFormat,

    /// Which streams are recorded: `all` (but those whose key says `record: false`) or
    /// `marked` (only those whose key says `record: true`; `keys record <name> on`).
    #[arg(long, env = "RTMP_HLS_RECORD_STREAMS", value_enum, default_value_t = RecordStreams::All, help_heading = "Recording")]
    pub(crate) record_streams: RecordStreams,

    /// Recordings older than this many hours are deleted (0: kept).
    #[arg(
        long,
        env = "RTMP_HLS_RECORD_MAX_AGE_HOURS",
        default_value = "0",
        help_heading = "Recording"
    )]
    pub(crate) record_max_age_hours: u64,

    /// When the recordings take more than this many MiB, the oldest are deleted (0: no
    /// limit).
    #[arg(long, env = "RTMP_HLS_RECORD_MAX_MIB", default_value = "0", help_heading = "Recording")]
    pub(crate) record_max_mib: u64,

    /// Push every live stream on to this RTMP or RTMPS server as it arrives (repeatable;
    /// Nginx-RTMP's `push`): rtmp[s]://host[:port]/app[/key]; without a key the stream's own
    /// name is published. A slow or absent target never slows the stream.
    #[arg(long = "push", value_name = "URL", value_parser = parse_push_target, help_heading = "Push")]
    pub(crate) push: Vec<PushTargetArg>,

    /// A PEM file of certificates to trust for rtmps:// push targets, besides the Mozilla root
    /// store (a private CA, a self-signed target).
    #[arg(long, env = "RTMP_HLS_PUSH_CA_FILE", help_heading = "Push")]
    pub(crate) push_ca_file: Option<PathBuf>,

    /// What a viewer token (the platform's login, verified with the token key) must claim
    /// to watch a private stream: NAME (the claim lists the stream, or `*`) or NAME=VALUE
    /// (the claim is, or lists, the value: a role). Without it any valid login watches.
    #[arg(
        long,
        env = "RTMP_HLS_VIEWER_CLAIM",
        value_name = "NAME[=VALUE]",
        help_heading = "Private streams"
    )]
    pub(crate) viewer_claim: Option<auth::viewer::ClaimRule>,

    /// Seconds a private stream's signed media URL works (playlists give fresh ones).
    #[arg(long, env = "RTMP_HLS_SIGNED_URL_TTL", default_value = "300", value_parser = parse_seconds, help_heading = "Private streams")]
    pub(crate) signed_url_ttl: Duration,

    /// Secret (at least 32 bytes) signing private streams' media URLs; nodes behind one
    /// name need the same. Default: random at each start.
    #[arg(
        long,
        env = "RTMP_HLS_URL_SIGNING_SECRET",
        hide_env_values = true,
        help_heading = "Private streams"
    )]
    pub(crate) url_signing_secret: Option<String>,

    /// Join a cluster: this node's HTTP URL as the other nodes reach it (http://host:port).
    /// Needs --mongo-uri: the nodes share a stream registry there (--cluster-collection), one
    /// node publishes each stream, and every node serves every live stream (docs/cluster.md).
    #[arg(long, env = "RTMP_HLS_CLUSTER_URL", value_name = "URL", value_parser = parse_cluster_url, help_heading = "Cluster")]
    pub(crate) cluster_url: Option<String>,

    /// MongoDB collection of the cluster's stream registry (in --mongo-database).
    #[arg(
        long,
        env = "RTMP_HLS_CLUSTER_COLLECTION",
        default_value = "live_streams",
        help_heading = "Cluster"
    )]
    pub(crate) cluster_collection: String,

    /// Seconds a node's stream leases last without renewal (renewed five times as often). A
    /// node that cannot renew stops its publishers a second before; another node may take a
    /// stream of a dead node after this long.
    #[arg(long, env = "RTMP_HLS_LEASE_TIME", default_value = "5", value_parser = parse_lease_time, help_heading = "Cluster")]
    pub(crate) lease_time: Duration,

    /// What a valid publish for a stream that is already live does: take it over (the old
    /// publisher is disconnected) or be refused.
    #[arg(long, env = "RTMP_HLS_TAKEOVER", value_enum, default_value_t = TakeoverPolicy::Replace)]
    pub(crate) takeover: TakeoverPolicy,

    /// Failed publish attempts one IP address may make in a burst.
    #[arg(long, env = "RTMP_HLS_AUTH_FAILURE_BURST", default_value_t = auth::failure_limiter::FAILURE_BURST, help_heading = "Limits")]
    pub(crate) auth_failure_burst: u32,

    /// Failed publish attempts an IP address regains per minute.
    #[arg(long, env = "RTMP_HLS_AUTH_FAILURES_PER_MINUTE", default_value_t = auth::failure_limiter::FAILURES_PER_MINUTE, help_heading = "Limits")]
    pub(crate) auth_failures_per_minute: u32,

    /// Seconds the key store may take to answer before a publish is refused.
    #[arg(long, env = "RTMP_HLS_AUTH_TIMEOUT", default_value = "3", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) auth_timeout: Duration,

    /// Seconds one write to an RTMP client may block (a client that stops reading is dropped).
    #[arg(long, env = "RTMP_HLS_WRITE_TIMEOUT", default_value = "10", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) write_timeout: Duration,

    /// Open HTTP connections.
    #[arg(long, env = "RTMP_HLS_HTTP_MAX_CONNECTIONS", default_value_t = rtmp_hls_http::server::MAX_CONNECTIONS, help_heading = "Limits")]
    pub(crate) http_max_connections: usize,

    /// Open HTTP connections from one IP address (IPv6: one prefix, --ipv6-prefix).
    #[arg(long, env = "RTMP_HLS_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = rtmp_hls_http::server::MAX_CONNECTIONS_PER_IP, help_heading = "Limits")]
    pub(crate) http_max_connections_per_ip: usize,

    /// Seconds allowed for an HTTP request's headers to arrive.
    #[arg(long, env = "RTMP_HLS_HTTP_HEADER_TIMEOUT", default_value = "10", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) http_header_timeout: Duration,

    /// Seconds an HTTP connection may make no progress (idle keep-alive, a viewer not
    /// reading); a request waiting for the stream (a blocked playlist reload, the hinted
    /// part) is not idle.
    #[arg(long, env = "RTMP_HLS_HTTP_IDLE_TIMEOUT", default_value = "30", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) http_idle_timeout: Duration,

    /// Viewers admitted per stream (0: no limit); new viewers beyond it get 503.
    #[arg(
        long,
        env = "RTMP_HLS_MAX_VIEWERS_PER_STREAM",
        default_value_t = 0,
        help_heading = "Limits"
    )]
    pub(crate) max_viewers_per_stream: usize,

    /// Nginx-RTMP-style on_publish callback (http://...): POSTed before each publish; 2xx
    /// allows, 3xx with Location renames the stream, anything else refuses.
    #[arg(long, env = "RTMP_HLS_ON_PUBLISH", value_parser = parse_hook_url, help_heading = "Callbacks")]
    pub(crate) on_publish: Option<CallbackUrl>,

    /// Nginx-RTMP-style on_publish_done callback (http://...): POSTed after each publish.
    #[arg(long, env = "RTMP_HLS_ON_PUBLISH_DONE", value_parser = parse_hook_url, help_heading = "Callbacks")]
    pub(crate) on_publish_done: Option<CallbackUrl>,

    /// Nginx-RTMP-style on_record_done callback (http://...): POSTed after each recording
    /// (--record-dir) is finished, with its `path`.
    #[arg(long, env = "RTMP_HLS_ON_RECORD_DONE", value_parser = parse_hook_url, help_heading = "Callbacks")]
    pub(crate) on_record_done: Option<CallbackUrl>,

    /// Whether on_publish decides with the key store or instead of it.
    #[arg(long, env = "RTMP_HLS_HOOK_MODE", value_enum, default_value_t = HookMode::Also, requires = "on_publish", help_heading = "Callbacks")]
    pub(crate) hook_mode: HookMode,

    /// How callbacks send their fields (Nginx-RTMP's notify_method).
    #[arg(long, env = "RTMP_HLS_HOOK_METHOD", value_enum, default_value_t = HookMethod::Post, help_heading = "Callbacks")]
    pub(crate) hook_method: HookMethod,

    /// Seconds a callback may take; an on_publish without an answer refuses the publish.
    #[arg(long, env = "RTMP_HLS_HOOK_TIMEOUT", default_value = "3", value_parser = parse_seconds, help_heading = "Callbacks")]
    pub(crate) hook_timeout: Duration,

    /// Listen address of the stats and admin API and of /metrics (e.g. 127.0.0.1:8081, to keep
    /// them off the public network). Without it they are served on --http-addr.
    #[arg(long, env = "RTMP_HLS_ADMIN_ADDR", help_heading = "API")]
    pub(crate) admin_addr: Option<SocketAddr>,

    /// Static bearer token of the admin API (at least 16 characters). JWTs with
    /// `role: "admin"`, signed with the publish-token key (--jwt-secret or --jwt-public-key),
    /// are accepted too.
    #[arg(long, env = "RTMP_HLS_ADMIN_TOKEN", hide_env_values = true, help_heading = "API")]
    pub(crate) admin_token: Option<String>,

    /// Seconds allowed, on SIGTERM, for connections to end before the server exits.
    #[arg(long, env = "RTMP_HLS_SHUTDOWN_GRACE", default_value = "5", value_parser = parse_seconds, help_heading = "Limits")]
    pub(crate) shutdown_grace: Duration,
}

impl ServeArgs {
    /// Rules across options, and checks of secret values (their errors never show the
    /// value). Clap checks conflicts only between values given explicitly; values from the
    /// configuration file arrive as defaults, so the rules that matter are checked here too.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_JWT_SECRET_LEN
        {
            return Err(format!(
                "--jwt-secret: an HS256 secret needs at least {MIN_JWT_SECRET_LEN} bytes, this one \
                 has {} (RFC 7518 §3.2; e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        if let Some(token) = &self.admin_token
            && token.len() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(format!(
                "--admin-token: an admin token needs at least {MIN_ADMIN_TOKEN_LEN} characters, \
                 this one has {} (e.g. `openssl rand -hex 24`)",
                token.len()
            ));
        }
        if let Some(secret) = &self.url_signing_secret
            && secret.len() < auth::viewer::MIN_SIGNING_SECRET_LEN
        {
            return Err(format!(
                "--url-signing-secret: needs at least {} bytes, this one has {} (e.g. `openssl \
                 rand -hex 32`)",
                auth::viewer::MIN_SIGNING_SECRET_LEN,
                secret.len()
            ));
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return Err("--jwt-secret and --jwt-public-key are both set (by flag, environment \
                        or configuration file): configure one token key"
                .into());
        }
        for (flag, url) in [
            ("--on-publish", &self.on_publish),
            ("--on-publish-done", &self.on_publish_done),
            ("--on-record-done", &self.on_record_done),
        ] {
            if let Some(Err(why)) = url {
                return Err(format!("{flag}: {why}"));
            }
        }
        for target in &self.push {
            if let Err(why) = target {
                return Err(format!("--push: {why}"));
            }
        }
        if self.hook_mode == HookMode::Only && self.on_publish.is_none() {
            return Err("--hook-mode only needs --on-publish".into());
        }
        if self.max_unauthenticated == 0 {
            return Err("--max-unauthenticated: at least 1, or no publisher could connect".into());
        }
        if self.auth_failure_burst == 0 {
            // Each attempt takes its place in the bucket while it is decided.
            return Err("--auth-failure-burst: at least 1, or no key could ever be tried".into());
        }
        Ok(())
    }

    /// The RTMP side's limits.
    pub(crate) fn ingest_limits(&self) -> ingest::Limits {
        ingest::Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_unauthenticated: self.max_unauthenticated,
            new_connections_per_ip_per_minute: self.new_connections_per_ip_per_minute,
            ipv6_prefix: self.ipv6_prefix,
            max_streams: self.max_streams,
            handshake_timeout: self.handshake_timeout,
            publish_timeout: self.publish_timeout,
            no_media_timeout: self.no_media_timeout,
            auth_timeout: self.auth_timeout,
            write_timeout: self.write_timeout,
        }
    }

    /// The callbacks.
    pub(crate) fn hooks(&self) -> ingest::hooks::HookConfig {
        ingest::hooks::HookConfig {
            // Validated at startup: an unusable URL never gets here.
            on_publish: self.on_publish.clone().and_then(Result::ok),
            on_publish_done: self.on_publish_done.clone().and_then(Result::ok),
            on_record_done: self.on_record_done.clone().and_then(Result::ok),
            timeout: self.hook_timeout,
            mode: self.hook_mode,
            method: self.hook_method,
        }
    }

    /// Limits on failed publish attempts per address.
    pub(crate) fn failure_limits(&self) -> auth::failure_limiter::FailureLimits {
        auth::failure_limiter::FailureLimits {
            burst: self.auth_failure_burst,
            per_minute: self.auth_failures_per_minute,
        }
    }

    /// The HTTP side's limits.
    pub(crate) fn http_limits(&self) -> rtmp_hls_http::HttpLimits {
        rtmp_hls_http::HttpLimits {
            max_connections: self.http_max_connections,
            max_connections_per_ip: self.http_max_connections_per_ip,
            ipv6_prefix: self.ipv6_prefix,
            header_read_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_viewers_per_stream: self.max_viewers_per_stream,
            ..rtmp_hls_http::HttpLimits::default()
        }
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not name=value")),
    }
}

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the
/// hash (256 bits); a shorter one can be brute-forced from a single token.
const MIN_JWT_SECRET_LEN: usize = 32;

/// Default of `--max-read-pause-ms`.
const DEFAULT_MAX_READ_PAUSE_MS: u64 =
    ingest::merged_read::DEFAULT_MAX_READ_PAUSE.as_millis() as u64;
/// Highest `--max-read-pause-ms`: longer rests fill a fast stream's socket buffer and push
/// back on the encoder, which may then drop frames.
const MAX_READ_PAUSE_MS: u64 = 1000;

/// Shortest static admin token accepted: a guessable token would open the admin API.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A callback URL as given: parsed, or why not, in words that show the URL masked (it may
/// hold a secret, and clap would quote a value it refuses whole).
pub(crate) type CallbackUrl = Result<ingest::hooks::HookUrl, String>;

fn parse_hook_url(text: &str) -> Result<CallbackUrl, String> {
    Ok(text.parse().map_err(|e| format!("{}: {e}", crate::config_file::mask_url(text, true))))
}

/// A part duration: at least a frame or two, at most what still makes the latency low
/// (Apple's players ask for parts under a second or so).
fn parse_part_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=2.0).contains(&seconds) {
        return Err(format!("{seconds} s is outside 0.1 to 2"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// [`parse_seconds`], or 0 (off).
fn parse_seconds_or_zero(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_seconds(text),
    }
}

fn parse_variant_suffix(text: &str) -> Result<String, String> {
    let usable = !text.is_empty()
        && text.len() <= 16
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if usable {
        Ok(text.to_owned())
    } else {
        Err("a variant suffix is 1 to 16 of A-Z a-z 0-9 _ - . (e.g. _720p)".into())
    }
}

/// A push target as given: parsed, or why not without the URL (its path may hold the
/// target's stream key, and clap would quote a value it refuses whole).
pub(crate) type PushTargetArg = Result<ingest::push::PushTarget, String>;

fn parse_push_target(text: &str) -> Result<PushTargetArg, String> {
    Ok(ingest::push::PushTarget::parse(text).map_err(|e| e.to_string()))
}

/// A cluster node's URL: plain `http://host:port` (the nodes' internal network), no path.
fn parse_cluster_url(text: &str) -> Result<String, String> {
    let rest = text.strip_prefix("http://").ok_or("the URL must start with http://")?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("expected http://host:port with no path, query or credentials".into());
    }
    Ok(format!("http://{rest}"))
}

fn parse_lease_time(text: &str) -> Result<Duration, String> {
    let lease = parse_seconds(text)?;
    if lease < ingest::cluster::MIN_LEASE_TIME {
        return Err(format!(
            "at least {} seconds (renewals come five times per lease)",
            ingest::cluster::MIN_LEASE_TIME.as_secs()
        ));
    }
    Ok(lease)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&seconds) {
        return Err(format!("{seconds} s is outside 0.1 to 3600"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_zero_config_start() {
        let cli = Cli::try_parse_from(["rtmp-hls"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.rtmp_addr.to_string(), "0.0.0.0:1935");
        assert_eq!(cli.serve.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(cli.data_dir, PathBuf::from("data"));
        assert_eq!(cli.serve.segment_duration, Duration::from_secs(2));
        assert_eq!(cli.serve.playlist_length, 6);
        assert_eq!(cli.serve.ended_ttl, Duration::from_secs(60));
        assert_eq!(cli.serve.reconnect_window, Duration::from_secs(20));
        assert!(cli.serve.web_page);
        assert_eq!(cli.serve.ingest_limits(), ingest::Limits::default());
        assert_eq!(cli.serve.http_limits(), rtmp_hls_http::HttpLimits::default());
        assert_eq!(cli.serve.takeover, TakeoverPolicy::Replace);
        assert_eq!(cli.serve.failure_limits(), auth::failure_limiter::FailureLimits::default());
        assert_eq!(
            (cli.mongo_database.as_str(), cli.mongo_collection.as_str()),
            ("streaming", "stream_keys")
        );
    }

    #[test]
    fn the_reconnect_window_may_be_off_but_not_negative() {
        let window = |w: &str| {
            Cli::try_parse_from(["rtmp-hls", "--reconnect-window", w])
                .map(|c| c.serve.reconnect_window)
        };
        assert_eq!(window("0").unwrap(), Duration::ZERO);
        assert_eq!(window("2.5").unwrap(), Duration::from_millis(2500));
        assert!(window("-1").is_err() && window("0.01").is_err());
    }

    #[test]
    fn kafka_properties_are_name_value_pairs() {
        let cli = Cli::try_parse_from([
            "rtmp-hls",
            "--kafka-property",
            "sasl.mechanism=PLAIN",
            "--kafka-property",
            "a=b=c",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.kafka_properties,
            [("sasl.mechanism".to_owned(), "PLAIN".to_owned()), ("a".to_owned(), "b=c".to_owned())]
        );
        assert!(Cli::try_parse_from(["rtmp-hls", "--kafka-property", "novalue"]).is_err());
    }

    #[test]
    fn one_jwt_key_kind_at_a_time() {
        let err = Cli::try_parse_from([
            "rtmp-hls",
            "--jwt-secret",
            &"x".repeat(32),
            "--jwt-public-key",
            "k.pem",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--jwt-public-key"), "{err}");
    }

    #[test]
    fn keys_subcommands_take_data_dir() {
        let cli = Cli::try_parse_from(["rtmp-hls", "keys", "add", "cam", "--data-dir", "/tmp/x"])
            .unwrap();
        assert_eq!(cli.data_dir, PathBuf::from("/tmp/x"));
        assert!(
            matches!(cli.command, Some(Command::Keys { action: KeysAction::Add { ref name, .. } }) if name == "cam")
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        for args in [
            ["rtmp-hls", "--jwt-secret", ""],
            ["rtmp-hls", "--jwt-secret", "only-thirty-one-bytes-long-here"],
            ["rtmp-hls", "--admin-token", "fifteen-chars!!"],
        ] {
            let err = Cli::try_parse_from(args).unwrap().serve.validate().unwrap_err();
            assert!(err.contains(args[1]) && err.contains("at least"), "{err}");
            assert!(args[2].is_empty() || !err.contains(args[2]), "the secret is in: {err}");
        }
        let cli = Cli::try_parse_from(["rtmp-hls", "--jwt-secret", &"x".repeat(32)]).unwrap();
        assert!(cli.serve.validate().is_ok());
    }

    /// Limits that would refuse every publisher are refused at start.
    #[test]
    fn limits_that_refuse_everyone_are_refused() {
        for (flag, value) in [("--auth-failure-burst", "0"), ("--max-unauthenticated", "0")] {
            let cli = Cli::try_parse_from(["rtmp-hls", flag, value]).unwrap();
            let err = cli.serve.validate().unwrap_err();
            assert!(err.starts_with(flag) && err.contains("at least 1"), "{err}");
        }
        let cli = Cli::try_parse_from(["rtmp-hls", "--auth-failure-burst", "1"]).unwrap();
        assert!(cli.serve.validate().is_ok());
    }

    /// A refused callback URL is named with its secrets masked, never quoted whole.
    #[test]
    fn bad_callback_urls_are_refused_without_their_secrets() {
        for url in [
            "https://backend/hook?token=SECRET",
            "http://user:SECRET@backend/hook",
            "http://:80/hook?token=SECRET",
            "http://backend/h k?token=SECRET",
        ] {
            let cli = Cli::try_parse_from(["rtmp-hls", "--on-publish-done", url]).unwrap();
            let err = cli.serve.validate().unwrap_err();
            assert!(err.starts_with("--on-publish-done: "), "{err}");
            assert!(!err.contains("SECRET"), "the secret is in: {err}");
        }
    }

    /// A refused push URL (its path may hold the target's key) is never quoted.
    #[test]
    fn bad_push_urls_are_refused_without_their_keys() {
        for url in ["rtmp://host:notaport/live/SECRET-KEY", "http://host/live/SECRET-KEY"] {
            let cli = Cli::try_parse_from(["rtmp-hls", "--push", url]).unwrap();
            let err = cli.serve.validate().unwrap_err();
            assert!(err.starts_with("--push: "), "{err}");
            assert!(!err.contains("SECRET"), "the key is in: {err}");
        }
        let cli = Cli::try_parse_from(["rtmp-hls", "--push", "rtmp://host/live/k"]).unwrap();
        assert!(cli.serve.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        let err = Cli::try_parse_from(["rtmp-hls", "--segment-duration", "0"]).unwrap_err();
        assert!(err.to_string().contains("--segment-duration"), "{err}");
        let err = Cli::try_parse_from(["rtmp-hls", "--rtmp-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--rtmp-addr"), "{err}");
    }
}
