//! Fetch-through in a cluster: a request for a stream another node publishes is answered
//! with that node's answer, so any node serves any live stream and a plain load balancer
//! can spread viewers.
//!
//! Requests are coalesced: while one fetch of a URL (path and query, so a blocking playlist
//! reload's `_HLS_msn`/`_HLS_part` too) is in flight, every other request for it waits for
//! the same answer instead of asking the origin node again. The fetch runs in its own task,
//! so a viewer that goes away does not cancel it for the others. Forwarded requests carry
//! [`FORWARDED_HEADER`]; a node never forwards such a request again, so two nodes with
//! different views of the registry cannot bounce a request between them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;

/// The header a forwarded request carries (the forwarding node's id).
pub const FORWARDED_HEADER: &str = "x-rtmp-hls-forwarded-by";
/// The header an answer fetched through carries: the node that made it.
pub const ORIGIN_HEADER: &str = "x-rtmp-hls-origin";
/// Distinct URLs fetched at once: beyond, requests are answered 503 (each in-flight fetch
/// holds a task and at most [`MAX_BODY`] bytes).
pub const MAX_IN_FLIGHT: usize = 1024;
/// The largest answer fetched through: segments are a few MiB.
pub const MAX_BODY: usize = 64 << 20;
/// How long a fetch may take: a blocking playlist reload waits up to three target durations
/// at the origin (rfc8216bis §6.2.5.2), and a segment is sent at LAN speed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Public playlists whose last answer is kept (one per stream fetched through).
pub const MAX_HELD_PLAYLISTS: usize = 4096;
/// How long a stream whose origin answered as public (200 without `Cache-Control: private`)
/// is asked for without viewers' credentials, so that its requests with and without tokens
/// share one fetch: a front end that sends every signed-in viewer's token, or a client adding
/// a random one to each request, would otherwise make a fetch per viewer (and fill
/// [`MAX_IN_FLIGHT`]). Each public answer renews it; a 401, a 403 or a private answer ends it,
/// and the requests it refused are asked again with their credentials.
pub const PUBLIC_FOR: Duration = Duration::from_secs(10);
/// Streams known to be public at once (one per stream fetched through, as
/// [`MAX_HELD_PLAYLISTS`]); beyond, streams are asked for with their viewers' credentials.
pub const MAX_KNOWN_PUBLIC: usize = 4096;
/// Idle connections kept per origin node.
const IDLE_PER_ORIGIN: usize = 32;

/// The node that publishes a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its node id.
    pub node: String,
    /// Its URL (`http://host:port`).
    pub url: String,
}

/// Where streams are published, as this node knows it.
pub trait Origins: Send + Sync + fmt::Debug {
    /// The other node publishing `stream`, if one does.
    fn origin(&self, stream: &str) -> Option<Origin>;
}

/// An answer fetched from an origin node, shared by every request that waited for it.
#[derive(Debug)]
struct Fetched {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Fetched {
    /// The origin marked it for this viewer only (a private stream's answer).
    fn private(&self) -> bool {
        self.headers.iter().any(|(name, value)| {
            name == CACHE_CONTROL && value.to_str().is_ok_and(|v| v.contains("private"))
        })
    }
}

type Waiting = watch::Receiver<Option<Arc<Fetched>>>;

/// Fetches of other nodes' streams, coalesced.
#[derive(Debug)]
pub struct FetchThrough {
    origins: Arc<dyn Origins>,
    /// This node's id, sent in [`FORWARDED_HEADER`].
    node: HeaderValue,
    in_flight: Mutex<HashMap<String, Waiting>>,
    idle: Mutex<HashMap<String, Vec<SendRequest<Empty<Bytes>>>>>,
    /// How long a playlist's last good answer stands in for a failed fetch.
    hold: Duration,
    /// The last good answer per public playlist path, and when it was fetched.
    last_playlists: Mutex<HashMap<String, (Arc<Fetched>, std::time::Instant)>>,
    /// Streams the origin last answered as public, and when (see [`PUBLIC_FOR`]).
    public: Mutex<HashMap<String, std::time::Instant>>,
    /// Requests served through, by outcome (`fetched`: caused a fetch; `coalesced`: shared
    /// one in flight; `failed`: the origin node could not be asked).
    pub requests: Family<OutcomeLabel, Counter>,
}

/// A fetch-through request's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `fetched`, `coalesced` or `failed`.
    pub outcome: &'static str,
}

impl FetchThrough {
    /// Fetch-through for node `node`, finding streams with `origins`; a playlist's last
    /// good answer stands in for a failed one for `hold` (the reconnect window).
    pub fn new(node: &str, origins: Arc<dyn Origins>, hold: Duration) -> Self {
        Self {
            hold,
            last_playlists: Mutex::default(),
            public: Mutex::default(),
            origins,
            node: HeaderValue::from_str(node).unwrap_or(HeaderValue::from_static("node")),
            in_flight: Mutex::default(),
            idle: Mutex::default(),
            requests: Family::default(),
        }
    }

    /// Registers the fetch-through counter.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "fetch_through_requests",
            "HLS requests for streams of other nodes, by outcome",
            self.requests.clone(),
        );
    }

    /// The node to fetch `stream` from, unless this request was forwarded already.
    pub(crate) fn origin_for(&self, stream: &str, request: &Request<Body>) -> Option<Origin> {
        if request.headers().contains_key(FORWARDED_HEADER) {
            return None;
        }
        self.origins.origin(stream)
    }

    /// Answers `request` for `stream` with `origin`'s answer, joining a fetch of the same URL
    /// in flight.
    pub(crate) fn serve(
        self: &Arc<Self>,
        stream: &str,
        origin: &Origin,
        request: &Request<Body>,
    ) -> impl Future<Output = Response> + Send + 'static {
        let playlist = request.uri().path().ends_with(".m3u8");
        let headers = request.headers();
        // Of the cookies, only the viewer token's is read by the origin: the others would make
        // each viewer's request its own fetch, and are not the origin's to see.
        let cookie = crate::private::token_cookie(headers).and_then(|token| {
            HeaderValue::from_str(&format!("{}={token}", crate::private::TOKEN_COOKIE)).ok()
        });
        let credentials = [headers.get(AUTHORIZATION).cloned(), cookie];
        let uri = request.uri();
        let asked = forwarded_path(uri, playlist, true).map(|forwarded| {
            let credentialed = forwarded.credentials || credentials.iter().any(Option::is_some);
            // A public playlist may be answered with the last one fetched (see `hold`); a
            // request with a viewer's token or a signed URL, in its headers or its query,
            // never is, nor keeps its answer for others; nor a delta update (`_HLS_skip`).
            let held = |delta: bool| (playlist && !delta).then(|| uri.path().to_owned());
            // A public stream is asked for without credentials, the same for every viewer;
            // if it turned private meanwhile, the refusal is not the answer, the request
            // with them is.
            let bare = (credentialed && self.known_public(stream))
                .then(|| forwarded_path(uri, playlist, false).ok())
                .flatten()
                .map(|bare| (bare.path, held(bare.delta)));
            let held = held(forwarded.delta).filter(|_| !credentialed);
            // What a 200 proves: asked without credentials, that the stream is public; asked
            // with them, only a playlist's (a private stream's playlists say `private`; its
            // media say it too, but an ended stream's media served under a new publish's
            // visibility need not be decisive).
            let shows_public = playlist || !credentialed;
            (forwarded.path, held, bare, shows_public)
        });
        let (this, origin, stream) = (Arc::clone(self), origin.clone(), stream.to_owned());
        async move {
            let (path, held, bare, shows_public) = match asked {
                Ok(asked) => asked,
                // What the origin would answer, without asking it.
                Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
            };
            if let Some((path, held)) = bare {
                let answer = this.answer(&stream, &origin, &path, [None, None], held, true).await;
                if !refused(answer.status()) {
                    return answer;
                }
            }
            this.answer(&stream, &origin, &path, credentials, held, shows_public).await
        }
    }

    /// Whether `stream`'s origin answered as public within [`PUBLIC_FOR`].
    fn known_public(&self, stream: &str) -> bool {
        let public = self.public.lock().unwrap_or_else(PoisonError::into_inner);
        public.get(stream).is_some_and(|at| at.elapsed() < PUBLIC_FOR)
    }

    /// Notes what `fetched` says of `stream`: public (a 200 without `Cache-Control:
    /// private`, if its request `shows_public`), private (a private answer, a 401 or a 403),
    /// or nothing.
    fn learn(&self, stream: &str, fetched: &Fetched, shows_public: bool) {
        let mut public = self.public.lock().unwrap_or_else(PoisonError::into_inner);
        if shows_public && fetched.status == StatusCode::OK && !fetched.private() {
            let now = std::time::Instant::now();
            let fresh = |at: &std::time::Instant| now.duration_since(*at) < PUBLIC_FOR;
            insert_bounded(&mut public, stream, now, MAX_KNOWN_PUBLIC, fresh);
        } else if fetched.private() || refused(fetched.status) {
            public.remove(stream);
        }
    }

    async fn answer(
        self: &Arc<Self>,
        stream: &str,
        origin: &Origin,
        path: &str,
        credentials: [Option<HeaderValue>; 2],
        held: Option<String>,
        shows_public: bool,
    ) -> Response {
        // Viewers with credentials (private streams) share only with the same credentials.
        let mut key = format!("{}{path}", origin.url);
        for (name, value) in ["authorization", "cookie"].iter().zip(&credentials) {
            if let Some(value) = value {
                key.push_str(&format!("\n{name}: {}", String::from_utf8_lossy(value.as_bytes())));
            }
        }
        let (mut waiting, outcome) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(waiting) = in_flight.get(&key) {
                (waiting.clone(), "coalesced")
            } else if in_flight.len() >= MAX_IN_FLIGHT {
                drop(in_flight);
                self.count("failed");
                return busy();
            } else {
                let (done, waiting) = watch::channel(None);
                in_flight.insert(key.clone(), waiting.clone());
                let this = Arc::clone(self);
                let url = format!("{}{path}", origin.url);
                let node = origin.node.clone();
                let stream = stream.to_owned();
                tokio::spawn(async move {
                    // Out of the map whatever happens to this task, so the URL is fetched
                    // again next time.
                    let _leave = Leave { through: Arc::clone(&this), key: key.clone() };
                    let fetched = this.fetch(&url, &node, credentials).await;
                    if fetched.is_none() {
                        this.count("failed");
                    }
                    let fetched = fetched.unwrap_or_else(|| {
                        Arc::new(Fetched {
                            status: StatusCode::BAD_GATEWAY,
                            headers: vec![(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                            body: Bytes::new(),
                        })
                    });
                    this.learn(&stream, &fetched, shows_public);
                    let fetched = match held {
                        Some(playlist) => this.hold(playlist, fetched),
                        None => fetched,
                    };
                    done.send_replace(Some(fetched));
                });
                (waiting, "fetched")
            }
        };
        self.count(outcome);
        let answer = match waiting.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            Err(_) => None,
        };
        let Some(fetched) = answer else { return StatusCode::BAD_GATEWAY.into_response() };
        let mut response = Response::new(Body::from(fetched.body.clone()));
        *response.status_mut() = fetched.status;
        let headers = response.headers_mut();
        for (name, value) in &fetched.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }

    /// Keeps the last good answer for `playlist`, and gives it instead of an answer that
    /// says the stream is not there (404, 502, 503) for [`FetchThrough::hold`] after it was
    /// fetched: while a stream moves between nodes (its node died and its lease has not
    /// expired yet, or the new node is still waiting for it), viewers keep the playlist they
    /// had, unchanged, as one node serves an interrupted stream's playlist during its
    /// reconnect window.
    fn hold(&self, playlist: String, fetched: Arc<Fetched>) -> Arc<Fetched> {
        let mut last = self.last_playlists.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if fetched.status == StatusCode::OK && !fetched.private() {
            let fresh =
                |(_, at): &(Arc<Fetched>, std::time::Instant)| now.duration_since(*at) < self.hold;
            let kept = (Arc::clone(&fetched), now);
            insert_bounded(&mut last, &playlist, kept, MAX_HELD_PLAYLISTS, fresh);
            return fetched;
        }
        let gone =
            [StatusCode::NOT_FOUND, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE];
        match last.get(&playlist) {
            Some((good, at))
                if gone.contains(&fetched.status) && now.duration_since(*at) < self.hold =>
            {
                Arc::clone(good)
            }
            _ => fetched,
        }
    }

    fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// GETs `url` from node `node`; `None` if it could not be asked or did not answer in
    /// time.
    async fn fetch(
        &self,
        url: &str,
        node: &str,
        credentials: [Option<HeaderValue>; 2],
    ) -> Option<Arc<Fetched>> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut request = Request::get(if path.is_empty() { "/" } else { path })
            .header(HOST, authority)
            .header(FORWARDED_HEADER, self.node.clone());
        for (name, value) in [AUTHORIZATION, COOKIE].into_iter().zip(credentials) {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        let request = request.body(Empty::new()).ok()?;
        let answer = tokio::time::timeout(FETCH_TIMEOUT, async {
            let mut sender = self.connection(authority).await?;
            let response = sender.send_request(request).await.ok()?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await.ok()?.to_bytes();
            self.put_back(authority, sender);
            Some((parts, body))
        })
        .await;
        let Ok(Some((parts, body))) = answer else {
            // Without the query: it may hold a viewer's token or a URL signature.
            let url = url.split_once('?').map_or(url, |(path, _)| path);
            tracing::debug!(%url, %node, "fetch through failed");
            return None;
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            [CONTENT_TYPE, CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE]
                .into_iter()
                .filter_map(|name| parts.headers.get(&name).map(|value| (name, value.clone())))
                .collect();
        if let Ok(node) = HeaderValue::from_str(node) {
            headers.push((HeaderName::from_static(ORIGIN_HEADER), node));
        }
        Some(Arc::new(Fetched { status: parts.status, headers, body }))
    }

    /// An idle connection to `authority`, or a new one.
    async fn connection(&self, authority: &str) -> Option<SendRequest<Empty<Bytes>>> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(authority)
                .and_then(Vec::pop);
            match idle {
                Some(sender) if !sender.is_closed() => return Some(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(sender)
    }

    fn put_back(&self, authority: &str, sender: SendRequest<Empty<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = idle.entry(authority.to_owned()).or_default();
        if pool.len() < IDLE_PER_ORIGIN {
            pool.push(sender);
        }
    }
}

/// Removes a fetch from the in-flight map when its task ends, however it ends.
struct Leave {
    through: Arc<FetchThrough>,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.through.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// What of a request is forwarded to the origin.
#[derive(Debug)]
struct Forwarded {
    /// The path and the query parameters the origin reads, as it reads them.
    path: String,
    /// The query carries a viewer's token or a media URL signature.
    credentials: bool,
    /// The query asks for a playlist delta update.
    delta: bool,
}

/// The path of `uri` and the query parameters the origin reads, written the one way it reads
/// them, so that a client cannot make each of its requests a fetch of its own by adding a
/// parameter, reordering them or writing a number otherwise: a playlist's low-latency
/// directives as [`Directives::from_query`] reads them (an error for a request the origin
/// would refuse), the first viewer token (`private::viewer_token`) and the last expiry and
/// signature (`auth::viewer::UrlSigner::check`), unless `credentials` is false. Others are
/// dropped.
fn forwarded_path(
    uri: &axum::http::Uri,
    playlist: bool,
    credentials: bool,
) -> Result<Forwarded, stream_store::DirectiveError> {
    let query = uri.query().unwrap_or_default();
    let mut kept = Vec::new();
    let mut delta = false;
    if playlist {
        let directives = stream_store::Directives::from_query(query)?;
        kept.extend(directives.msn.map(|msn| format!("_HLS_msn={msn}")));
        kept.extend(directives.part.map(|part| format!("_HLS_part={part}")));
        if directives.skip {
            kept.push("_HLS_skip=YES".to_owned());
            delta = true;
        }
    }
    let pairs = || query.split('&').filter_map(|pair| pair.split_once('='));
    let token = pairs().find(|(name, _)| *name == "token");
    let signed = ["exp", "sig"].map(|param| pairs().rfind(|(name, _)| *name == param));
    let credentials: Vec<_> =
        token.into_iter().chain(signed.into_iter().flatten()).filter(|_| credentials).collect();
    kept.extend(credentials.iter().map(|(name, value)| format!("{name}={value}")));
    let path = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    Ok(Forwarded { path, credentials: !credentials.is_empty(), delta })
}

/// Sets `key` to `value` in `map` of at most `max` entries: a new key, when the map is full,
/// first makes room by dropping the entries no longer `fresh`, and is left out if none is.
fn insert_bounded<V>(
    map: &mut HashMap<String, V>,
    key: &str,
    value: V,
    max: usize,
    mut fresh: impl FnMut(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(key) {
        map.retain(|_, value| fresh(value));
    }
    if map.len() < max || map.contains_key(key) {
        map.insert(key.to_owned(), value);
    }
}

/// The origin refused the viewer (no credentials, or not the right ones).
fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// Too many fetches in flight.
fn busy() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1"), (CACHE_CONTROL, "no-store")])
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Everywhere(Origin);

    /// Makes the test origin's stream `flip` private.
    static PRIVATE_FLIP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    impl Origins for Everywhere {
        fn origin(&self, _stream: &str) -> Option<Origin> {
            Some(self.0.clone())
        }
    }

    /// An origin node that answers every GET after `delay`, counting requests and echoing
    /// the credentials it got. Stream `p` is private, as the server answers one: 401 without
    /// credentials, `Cache-Control: private` with them; so is `flip` once `PRIVATE_FLIP` is set.
    async fn origin(delay: Duration) -> (Origin, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let who = request.headers().get(AUTHORIZATION).cloned();
                let cookie = request.headers().get(COOKIE).cloned();
                let query = request.uri().query().unwrap_or_default();
                let forwarded = request.headers().contains_key(FORWARDED_HEADER);
                let mut body = format!("{who:?} {query} forwarded={forwarded}");
                if let Some(cookie) = &cookie {
                    body.push_str(&format!(" cookie={cookie:?}"));
                }
                let path = request.uri().path();
                let private = path.starts_with("/hls/p/")
                    || (path.starts_with("/hls/flip/") && PRIVATE_FLIP.load(Ordering::SeqCst));
                if !private {
                    return ([(CACHE_CONTROL, "no-cache"), (CONTENT_TYPE, "text/plain")], body)
                        .into_response();
                }
                if who.is_none()
                    && cookie.is_none()
                    && !query.contains("token=")
                    && !query.contains("sig=")
                {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                // Media under signed URLs are cached as any segment.
                let cache = if path.ends_with(".m3u8") {
                    "private, no-cache"
                } else {
                    "public, max-age=86400, immutable"
                };
                ([(CACHE_CONTROL, cache), (CONTENT_TYPE, "text/plain")], body).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Origin { node: "node-a".into(), url }, count)
    }

    fn get(path: &str, auth: Option<&str>) -> Request<Body> {
        let mut request = Request::get(path);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    }

    /// Node B, fetching through from `origin` wherever a stream is, holding playlists 20 s.
    fn node_b(origin: &Origin) -> Arc<FetchThrough> {
        let origins = Arc::new(Everywhere(origin.clone()));
        Arc::new(FetchThrough::new("node-b", origins, Duration::from_secs(20)))
    }

    async fn text(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_url_make_one_fetch() {
        let (origin, count) = origin(Duration::from_millis(200)).await;
        let through = node_b(&origin);
        let request = get("/hls/cam/index.m3u8?_HLS_msn=4", None);
        let answers: Vec<_> = (0..50).map(|_| through.serve("cam", &origin, &request)).collect();
        for answer in futures_util::future::join_all(answers).await {
            assert_eq!(answer.headers()[ORIGIN_HEADER], "node-a");
            assert_eq!(answer.headers()[CACHE_CONTROL], "no-cache");
            assert_eq!(
                text(answer).await,
                (StatusCode::OK, "None _HLS_msn=4 forwarded=true".into())
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "one fetch for 50 requests");
        // Another directive is another fetch; a parameter the origin ignores is not.
        text(through.serve("cam", &origin, &get("/hls/cam/index.m3u8?_HLS_msn=5", None)).await)
            .await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Nor are parameters the origin ignores, other orders, or numbers written otherwise.
        let variants = [
            "/hls/cam/index.m3u8?x=1&_HLS_msn=4&y=2",
            "/hls/cam/index.m3u8?_HLS_z=1&_HLS_msn=4",
            "/hls/cam/index.m3u8?_HLS_msn=004&_HLS_z=2",
            "/hls/cam/index.m3u8?_HLS_msn=4",
        ];
        let requests: Vec<_> = variants.iter().map(|uri| get(uri, None)).collect();
        let answers = requests.iter().map(|request| through.serve("cam", &origin, request));
        for answer in futures_util::future::join_all(answers.collect::<Vec<_>>()).await {
            assert_eq!(text(answer).await.0, StatusCode::OK);
        }
        assert_eq!(count.load(Ordering::SeqCst), 3, "one fetch for the four");
        // A request the origin would refuse is refused here, without a fetch.
        for refused in ["_HLS_msn", "_HLS_part=1", "_HLS_msn=4&_HLS_skip=YES&_HLS_skip=NO"] {
            let request = get(&format!("/hls/cam/index.m3u8?{refused}"), None);
            assert_eq!(
                text(through.serve("cam", &origin, &request).await).await.0,
                400,
                "{refused}"
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(through.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn viewers_with_credentials_never_share_an_answer() {
        let (origin, count) = origin(Duration::from_millis(100)).await;
        let through = node_b(&origin);
        let alice = through.serve("p", &origin, &get("/hls/p/index.m3u8", Some("Bearer alice")));
        let bob = through.serve("p", &origin, &get("/hls/p/index.m3u8", Some("Bearer bob")));
        let (alice, bob) = tokio::join!(alice, bob);
        assert!(text(alice).await.1.contains("alice"));
        assert!(text(bob).await.1.contains("bob"));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // A private stream's segment under a signed URL is cached as any segment: that does
        // not make the stream public.
        let segment = get("/hls/p/1-2.ts?exp=1&sig=abc", None);
        assert_eq!(text(through.serve("p", &origin, &segment).await).await.0, StatusCode::OK);
        assert!(!through.known_public("p"));
        // Of the cookies, the viewer token's alone goes to the origin, and decides the key.
        let cookies = ["a=1; access_token_cookie=carol; b=2", "access_token_cookie=carol; c=3"];
        let requests: Vec<_> = cookies
            .iter()
            .map(|cookie| {
                Request::get("/hls/p/index.m3u8")
                    .header(COOKIE, *cookie)
                    .body(Body::empty())
                    .unwrap()
            })
            .collect();
        let answers = requests.iter().map(|request| through.serve("p", &origin, request));
        for answer in futures_util::future::join_all(answers.collect::<Vec<_>>()).await {
            let body = text(answer).await.1;
            assert!(body.ends_with(r#"cookie="access_token_cookie=carol""#), "{body}");
        }
        assert_eq!(count.load(Ordering::SeqCst), 4, "one fetch for the two");
    }

    /// Once the origin answered a stream as public, requests for it with and without
    /// credentials share one fetch, made without them; when the stream turns private, a
    /// request with credentials is refused once by the origin and asked again with them.
    #[tokio::test]
    async fn a_public_stream_is_fetched_once_whatever_credentials_viewers_add() {
        let (origin, count) = origin(Duration::from_millis(200)).await;
        let through = node_b(&origin);
        let first = get("/hls/flip/index.m3u8?_HLS_msn=1", None);
        assert_eq!(text(through.serve("flip", &origin, &first).await).await.0, StatusCode::OK);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let uris: Vec<String> = (0..20)
            .map(|n| format!("/hls/flip/index.m3u8?_HLS_msn=2&token=random-{n}&exp={n}&sig=x{n}"))
            .collect();
        let mut requests: Vec<_> = uris.iter().map(|uri| get(uri, None)).collect();
        requests.push(get("/hls/flip/index.m3u8?_HLS_msn=2", Some("Bearer alice")));
        let answers = requests.iter().map(|request| through.serve("flip", &origin, request));
        for answer in futures_util::future::join_all(answers.collect::<Vec<_>>()).await {
            let (status, body) = text(answer).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "None _HLS_msn=2 forwarded=true"));
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "one fetch for the 21, without credentials");
        PRIVATE_FLIP.store(true, Ordering::SeqCst);
        let with_token = get("/hls/flip/index.m3u8?_HLS_msn=3&token=alice-jwt", None);
        let (status, body) = text(through.serve("flip", &origin, &with_token).await).await;
        PRIVATE_FLIP.store(false, Ordering::SeqCst);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("token=alice-jwt"), "{body}");
        assert_eq!(count.load(Ordering::SeqCst), 4, "refused without it, then asked with it");
        // The refusal ended what the node knew: the next request goes with its credentials.
        assert!(!through.known_public("flip"));
    }

    /// At most [`MAX_KNOWN_PUBLIC`] streams are known public; stale ones make room.
    #[test]
    fn known_public_streams_are_bounded() {
        let dead = Origin { node: "gone".into(), url: "http://127.0.0.1:9".into() };
        let through = FetchThrough::new("node-b", Arc::new(Everywhere(dead)), Duration::ZERO);
        let public = Fetched { status: StatusCode::OK, headers: Vec::new(), body: Bytes::new() };
        for n in 0..MAX_KNOWN_PUBLIC {
            through.learn(&format!("s{n}"), &public, true);
        }
        through.learn("one-more", &public, true);
        assert!(!through.known_public("one-more") && through.known_public("s0"));
        let stale = std::time::Instant::now().checked_sub(PUBLIC_FOR).unwrap();
        through.public.lock().unwrap().insert("s0".into(), stale);
        through.learn("one-more", &public, true);
        assert!(through.known_public("one-more") && !through.known_public("s0"));
        assert_eq!(through.public.lock().unwrap().len(), MAX_KNOWN_PUBLIC);
    }

    /// A live origin, one that died, and a node fetching through from them.
    async fn moving_stream() -> (Origin, Origin, Arc<FetchThrough>) {
        let (live, _) = origin(Duration::ZERO).await;
        let dead = Origin { node: "gone".into(), url: "http://127.0.0.1:9".into() };
        let through = node_b(&live);
        (live, dead, through)
    }

    #[tokio::test]
    async fn a_playlist_keeps_its_last_answer_while_its_stream_moves() {
        let (live, dead, through) = moving_stream().await;
        let playlist = get("/hls/cam/index.m3u8", None);
        let (status, good) = text(through.serve("cam", &live, &playlist).await).await;
        assert_eq!(status, StatusCode::OK);
        // The origin died: the same playlist as before, not an error.
        assert_eq!(
            text(through.serve("cam", &dead, &playlist).await).await,
            (StatusCode::OK, good)
        );
        // Not for segments, nor for viewers with credentials.
        let segment = get("/hls/cam/1-2.ts", None);
        assert_eq!(
            text(through.serve("cam", &dead, &segment).await).await.0,
            StatusCode::BAD_GATEWAY
        );
        let private = get("/hls/p/index.m3u8", Some("Bearer alice"));
        assert_eq!(text(through.serve("p", &live, &private).await).await.0, StatusCode::OK);
        assert_eq!(
            text(through.serve("p", &dead, &private).await).await.0,
            StatusCode::BAD_GATEWAY
        );
    }

    /// A private playlist fetched with a viewer's token in the query is never kept for a
    /// viewer without one (its URIs are signed for anyone who holds them), nor a delta update.
    #[tokio::test]
    async fn a_playlist_fetched_with_a_token_in_its_query_is_not_kept_for_others() {
        let (live, dead, through) = moving_stream().await;
        // Nor a delta update, which a player asking for the playlist could not use.
        for (stream, query) in
            [("p", "token=viewer-jwt"), ("p", "exp=1&sig=abc"), ("cam", "_HLS_msn=1&_HLS_skip=YES")]
        {
            let with_token = get(&format!("/hls/{stream}/index.m3u8?{query}"), None);
            assert_eq!(
                text(through.serve(stream, &live, &with_token).await).await.0,
                StatusCode::OK
            );
            let bare = get(&format!("/hls/{stream}/index.m3u8"), None);
            let (status, _) = text(through.serve(stream, &dead, &bare).await).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{query}: kept for a viewer without it");
        }
        assert!(through.last_playlists.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn forwarded_requests_are_not_forwarded_again() {
        let (origin, _) = origin(Duration::ZERO).await;
        let through =
            FetchThrough::new("node-b", Arc::new(Everywhere(origin)), Duration::from_secs(20));
        assert!(through.origin_for("cam", &get("/hls/cam/index.m3u8", None)).is_some());
        let forwarded = Request::get("/hls/cam/index.m3u8")
            .header(FORWARDED_HEADER, "node-c")
            .body(Body::empty())
            .unwrap();
        assert_eq!(through.origin_for("cam", &forwarded), None);
    }

    #[tokio::test]
    async fn an_unreachable_origin_gives_502_and_the_in_flight_limit_503() {
        let dead = Origin { node: "gone".into(), url: "http://127.0.0.1:9".into() };
        let through = node_b(&dead);
        let (status, _) =
            text(through.serve("cam", &dead, &get("/hls/x/index.m3u8", None)).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        {
            let mut in_flight = through.in_flight.lock().unwrap();
            for n in 0..MAX_IN_FLIGHT {
                in_flight.insert(format!("k{n}"), watch::channel(None).1);
            }
        }
        let (status, _) =
            text(through.serve("cam", &dead, &get("/hls/y/index.m3u8", None)).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A failed fetch is logged without its query: a viewer's token or a URL signature.
    #[tokio::test]
    async fn a_failed_fetch_logs_no_token() {
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let dead = Origin { node: "gone".into(), url: "http://127.0.0.1:9".into() };
        let through = node_b(&dead);
        let request = get("/hls/p/index.m3u8?token=SECRET-JWT&sig=SECRET-SIG&exp=1", None);
        assert_eq!(
            text(through.serve("cam", &dead, &request).await).await.0,
            StatusCode::BAD_GATEWAY
        );
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("fetch through failed") && log.contains("/hls/p/index.m3u8"), "{log}");
        assert!(!log.contains("SECRET"), "{log}");
    }
}
