//! HTTP delivery: HLS straight from the in-memory [`StreamStore`], the operator's API
//! ([`api`], `/api/v1`) and `/metrics`, on hyper connections with their own limits
//! ([`server`]).
//!
//! This crate owns the HTTP surface: routes, status codes, headers, caching, CORS, viewer
//! admission, connection limits, and sending memory files with `sendfile` ([`sendfile`]).
//! It never writes the store and never decides what the API shows: stream data comes from
//! the store, and the API's answers from the binary through [`api::Control`].
//!
//! `GET /hls/<name>/index.m3u8` and `GET /hls/<name>/<segment>.ts` (HEAD too). Playlists are
//! `application/vnd.apple.mpegurl` with `Cache-Control: no-cache` (they change every
//! segment); segments are `video/mp2t` and cacheable for long, since a segment name is never
//! reused (RFC 8216 §6.2.2). Every response allows any origin, so players on other sites
//! (hls.js) can fetch. Bodies are the store's shared bytes, or for segments in memory files
//! `sendfile` from them ([`sendfile`]): no copy per viewer. The servers answer plain GETs of
//! those paths with [`HlsDirect`], the same answers without the router's cost per request.

use std::sync::Arc;

use auth::viewer::ViewerAccess;
pub use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use stream_store::{SegmentBody, StreamStore, ViewerSession};

use crate::idle::Answering;
use crate::sendfile::{CopyBody, SendfileBody, SendfileQueue};

pub mod api;
mod direct;
pub mod fetch_through;
mod idle;
mod low_latency;
pub mod metrics;
mod pieces;
pub mod private;
pub mod recordings;
mod send_progress;
pub mod sendfile;
pub mod server;
mod variants;
pub mod web;
pub use direct::HlsDirect;
pub use server::{HttpLimits, serve_router, serve_router_tls};

/// Playlist file name under each stream.
pub const PLAYLIST_FILE: &str = "index.m3u8";
/// MIME type of playlists (RFC 8216 §4).
pub const PLAYLIST_MIME: &str = "application/vnd.apple.mpegurl";
/// MIME type of MPEG-TS segments.
pub const SEGMENT_MIME: &str = "video/mp2t";
/// MIME type of fMP4 init segments, segments and parts (RFC 8216 §3.3).
pub const FMP4_MIME: &str = "video/mp4";
/// Playlists change with every segment: revalidate always.
const PLAYLIST_CACHE: &str = "no-cache";
/// Segments never change under their name (names carry a per-stream generation).
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";
/// A private stream's media: the same, for the viewer's own cache only (their signed URLs
/// expire within minutes, and a shared cache whose key ignores the query would serve them
/// to anyone).
const PRIVATE_SEGMENT_CACHE: &str = "private, max-age=86400, immutable";
/// The Cache-Control of a stream's media: [`PRIVATE_SEGMENT_CACHE`] if it is `private`.
fn media_cache(private: bool) -> &'static str {
    if private { PRIVATE_SEGMENT_CACHE } else { SEGMENT_CACHE }
}
/// Answers that are not the resource (404, 400, 503 without its own): asked again each time.
const ERROR_CACHE: &str = "no-cache";
/// Seconds a refused viewer is asked to wait: a few target durations, long enough for an
/// idle viewer's place to free up (see `StreamStore::viewers`).
const VIEWER_RETRY_AFTER: &str = "10";

/// The address of the client a request came from (set by the server loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// How the HLS routes serve.
#[derive(Debug, Clone)]
pub struct HlsOptions {
    /// Viewers admitted per stream (0: no limit).
    pub max_viewers: usize,
    /// Who watches private streams, and their media URLs' signatures.
    pub access: Arc<ViewerAccess>,
    /// Suffixes of streams published as renditions of one another (`_720p`), in the order
    /// multivariant playlists list them (see [`variants`]).
    pub variants: Arc<[String]>,
    /// In a cluster: streams published on other nodes are fetched from them.
    pub fetch_through: Option<Arc<fetch_through::FetchThrough>>,
    /// Viewers without a token are counted per address group: IPv6 addresses by this
    /// prefix (one subscriber holds a whole /64), as the connection limits count them.
    pub ipv6_prefix: u8,
}

/// What the HLS routes need.
#[derive(Debug, Clone)]
struct Hls {
    store: Arc<StreamStore>,
    options: HlsOptions,
}

/// The HTTP routes over `store` and the [`HlsDirect`] that answers their plain HLS GETs
/// without the router, both served as `options` say: made together, so a server passing
/// both to [`server::serve_router`] gets the same answers either way.
pub fn router_and_direct(store: Arc<StreamStore>, options: HlsOptions) -> (Router, HlsDirect) {
    let direct = HlsDirect::new(Arc::clone(&store), options.clone());
    (router(store, options), direct)
}

/// The HTTP routes over `store`, served as `options` say.
pub fn router(store: Arc<StreamStore>, options: HlsOptions) -> Router {
    Router::new()
        .route("/hls/{name}/{file}", get(hls).options(preflight))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        // tower's layer, not axum's `middleware::map_response`, which boxes a future per
        // request.
        .layer(tower::util::MapResponseLayer::new(allow_any_origin))
        .with_state(Hls { store, options })
}

async fn hls(
    State(state): State<Hls>,
    Path((name, file)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let client = request.extensions().get::<ClientAddr>().map(|ClientAddr(addr)| *addr);
    let sendfile = request.extensions().get::<SendfileQueue>().cloned();
    let answering = request.extensions().get::<Answering>().cloned().unwrap_or_default();
    answer(&state, &name, &file, request, client, sendfile, answering).await
}

/// The answer to `GET /hls/<name>/<file>`, for a request from `client` on a connection that
/// sends memory files with `sendfile` if it has a queue and whose idle timeout `answering`
/// holds off while the request waits for the stream (the router's route and [`HlsDirect`]
/// both answer with it).
async fn answer(
    Hls { store, options }: &Hls,
    name: &str,
    file: &str,
    request: axum::extract::Request,
    client: Option<std::net::SocketAddr>,
    sendfile: Option<SendfileQueue>,
    answering: Answering,
) -> Response {
    let HlsOptions { max_viewers, access, variants, fetch_through, ipv6_prefix } = options;
    if let Some(through) = fetch_through
        && !store.is_live(name)
        && let Some(origin) = through.origin_for(name, &request)
    {
        return through.serve(name, &origin, &request).await;
    }
    let private = store.is_private(name);
    let query = request.uri().query().unwrap_or_default();
    if file == PLAYLIST_FILE {
        if !variants.is_empty()
            && !store.contains(name)
            && let Some(master) =
                variants::master(store, name, variants, access, request.headers(), query)
        {
            return master;
        }
        // The request by reference: a `HeaderMap` extractor would copy every header.
        let token = private::viewer_token(request.headers(), query);
        let subject = if private {
            match access.admit(name, token) {
                Ok(viewer) => viewer.subject,
                Err(refused) => {
                    tracing::debug!(stream = %name, %refused, "viewer of a private stream refused");
                    return private::refusal(&refused);
                }
            }
        } else {
            token.and_then(|token| access.subject(token))
        };
        if let Some(addr) = client {
            let viewer = viewer_session(subject.as_deref(), addr, *ipv6_prefix, request.headers());
            if !store.admit_viewer(name, viewer, std::time::Instant::now(), *max_viewers) {
                // Debug, as a private stream's refusals: a client retrying costs a line each
                // time, and the stream's viewer count shows it full.
                tracing::debug!(stream = %name, limit = max_viewers, "viewer refused: stream is full");
                return (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, VIEWER_RETRY_AFTER)])
                    .into_response();
            }
        }
        let signing = private.then(|| access.signer().query(name, std::time::SystemTime::now()));
        let signing = signing.as_deref();
        return low_latency::playlist(store, name, query, signing, variants, answering).await;
    }
    if private && let Err(refused) = private::media_allowed(access, name, request.headers(), query)
    {
        return private::refusal(&refused);
    }
    let media_cache = media_cache(private);
    if file.ends_with(".mp4") {
        return match store.init(name, file) {
            Some(init) => {
                ([(CONTENT_TYPE, FMP4_MIME), (CACHE_CONTROL, media_cache)], init).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let mime = match file.rsplit_once('.') {
        // `<generation>-<sequence>.<part>.m4s`: a part.
        Some((stem, "m4s")) if stem.contains('.') => {
            return low_latency::part(store, name, file, !private, answering)
                .await
                .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response());
        }
        Some((_, "m4s")) => FMP4_MIME,
        _ => SEGMENT_MIME,
    };
    let headers = [(CONTENT_TYPE, mime), (CACHE_CONTROL, media_cache)];
    let file = match store.segment(name, file) {
        Some(SegmentBody::Memory(pieces)) => {
            return (headers, pieces::body(pieces)).into_response();
        }
        Some(SegmentBody::File(file)) => file,
        None => return StatusCode::NOT_FOUND.into_response(),
    };
    match sendfile {
        Some(queue) => (headers, Body::new(SendfileBody::new(queue, file))).into_response(),
        // Not on a connection that can send from a file (TLS, HTTP/2): a copy, as it goes.
        None => (headers, Body::new(CopyBody::new(file))).into_response(),
    }
}

/// A viewer's session: the subject of its valid viewer token (one person on several
/// addresses or players is one viewer), else its address and user agent (players behind
/// one NAT usually differ in the latter; the store counts at most a few such sessions per
/// address, [`stream_store::viewers`]). Only hashes are kept.
fn viewer_session(
    subject: Option<&str>,
    addr: std::net::SocketAddr,
    ipv6_prefix: u8,
    headers: &axum::http::HeaderMap,
) -> ViewerSession {
    fn hash(value: impl std::hash::Hash) -> u64 {
        use std::hash::Hasher as _;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }
    match subject {
        Some(subject) => ViewerSession { id: hash(("subject", subject)), address: None },
        None => {
            let agent = headers.get(axum::http::header::USER_AGENT).map(|v| v.as_bytes());
            let group = auth::address::group(addr.ip(), ipv6_prefix);
            ViewerSession { id: hash((addr.ip(), agent)), address: Some(hash(group)) }
        }
    }
}

async fn preflight() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
            // `*` does not cover Authorization (Fetch standard, CORS-preflight): a player on
            // another origin sends a private stream's viewer token in it.
            (ACCESS_CONTROL_ALLOW_HEADERS, "*, Authorization"),
            (ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
}

/// W3C Resource Timing §4.5's header, named once (a name given as a string is parsed at
/// every insert: 0.7 % of the server's CPU under low-latency viewers).
const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");

/// Any origin may fetch, and see the timing of what it fetched (W3C Resource Timing
/// §4.5: players on other sites measure download speed and the HTTP version with it).
fn allow_any_origin(mut response: Response) -> Response {
    let failed = !response.status().is_success();
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(TIMING_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if failed && !headers.contains_key(CACHE_CONTROL) {
        // A 404 is cacheable by default (RFC 9111 §4.2.2: Varnish keeps one 120 s): a
        // stream's playlist asked for just before its first segment must not stay missing
        // at a CDN once it exists.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(ERROR_CACHE));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use packager::Segment;
    use std::time::Duration;
    use stream_store::StoreConfig;
    use tower::ServiceExt;

    /// Sessions without a token are an address and a user agent; their address is its
    /// group (an IPv6 /64), so one subscriber's addresses share one per-address share.
    #[test]
    fn viewer_sessions_group_ipv6_addresses_by_prefix() {
        let agent = |name: &'static str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::USER_AGENT, name.parse().unwrap());
            headers
        };
        let session = |addr: &str, name| {
            viewer_session(None, addr.parse().unwrap(), auth::address::IPV6_PREFIX, &agent(name))
        };
        let (a, b) = (session("[2001:db8::1]:1000", "x"), session("[2001:db8::2]:2000", "x"));
        assert_ne!(a.id, b.id, "two addresses are two sessions");
        assert_eq!(a.address, b.address, "of one /64");
        let other = session("[2001:db8:0:1::1]:1000", "x");
        assert_ne!(a.address, other.address, "another /64");
        let v4 = (session("192.0.2.1:1", "x"), session("192.0.2.2:1", "x"));
        assert_ne!(v4.0.address, v4.1.address);
        assert_ne!(session("192.0.2.1:1", "x").id, session("192.0.2.1:1", "y").id);
        let token = viewer_session(Some("alice"), "192.0.2.1:1".parse().unwrap(), 64, &agent("x"));
        assert_eq!(token.address, None, "a token's subject is nobody's address");
    }

    async fn request(
        router: &Router,
        method: Method,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Bytes) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    /// Options with no viewer limit, no token key (public streams only), no variants.
    pub(crate) fn options() -> HlsOptions {
        let signer = auth::viewer::UrlSigner::random(auth::viewer::SIGNED_URL_TTL).unwrap();
        HlsOptions {
            max_viewers: 0,
            access: Arc::new(ViewerAccess::new(None, None, signer)),
            variants: Arc::new([]),
            fetch_through: None,
            ipv6_prefix: auth::address::IPV6_PREFIX,
        }
    }

    pub(crate) fn store_with_segment() -> (Arc<StreamStore>, stream_store::Publication) {
        let store = Arc::new(StreamStore::new(StoreConfig::default()));
        let publication = store.begin("cam", 5, 10).unwrap();
        publication.push(
            Segment {
                data: Bytes::from_static(&[0x47; 188]),
                sink_len: 0,
                sink_id: 0,
                duration: Duration::from_secs(2),
                discontinuity: false,
                independent: true,
                start: 0,
            },
            std::time::SystemTime::UNIX_EPOCH,
        );
        (store, publication)
    }

    #[tokio::test]
    async fn playlist_and_segment_headers() {
        let (store, _publication) = store_with_segment();
        let router = router(store, options());
        let (status, headers, body) = request(&router, Method::GET, "/hls/cam/index.m3u8").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], PLAYLIST_MIME);
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(headers[TIMING_ALLOW_ORIGIN], "*");
        assert!(body.ends_with(b"5-0.ts\n"));

        let (status, headers, body) = request(&router, Method::GET, "/hls/cam/5-0.ts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], SEGMENT_MIME);
        assert!(headers[CACHE_CONTROL].to_str().unwrap().contains("max-age="));
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(body.len(), 188);
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let (store, _publication) = store_with_segment();
        let (status, headers, body) =
            request(&router(store, options()), Method::HEAD, "/hls/cam/5-0.ts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], SEGMENT_MIME);
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn unknown_things_are_404() {
        let (store, _publication) = store_with_segment();
        let router = router(store, options());
        for uri in [
            "/hls/nope/index.m3u8",
            "/hls/cam/5-1.ts",
            "/hls/cam/other.txt",
            "/hls/cam",
            "/",
            "/hls/cam/4-0.ts",
        ] {
            let (status, headers, _) = request(&router, Method::GET, uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{uri}");
            // Not kept by a CDN: the stream's playlist may exist a moment later.
            assert_eq!(headers[CACHE_CONTROL], "no-cache", "{uri}");
        }
    }

    #[tokio::test]
    async fn preflight_is_answered() {
        let (store, _publication) = store_with_segment();
        let (status, headers, _) =
            request(&router(store, options()), Method::OPTIONS, "/hls/cam/index.m3u8").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(headers[ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("GET"));
    }
}
