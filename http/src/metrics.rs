//! The HTTP side's Prometheus metrics: requests by kind (playlist, segment, api, metrics,
//! other) and status, and response bytes by kind. Counted by a layer around every route and
//! by [`crate::HlsDirect`] for the requests it answers, from the response's exact body size
//! (every body's size is known before it is sent).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use http_body::Body as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

/// A request's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// What was asked for.
    pub kind: &'static str,
    /// The status code.
    pub status: u16,
}

/// A response's kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What was asked for.
    pub kind: &'static str,
}

/// The HTTP side's metrics.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Requests by kind and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Response body bytes by kind.
    pub bytes: Family<KindLabel, Counter>,
    /// The family members of successful playlist and segment requests, held.
    hot: Hot,
}

/// (requests, bytes) counters of one kind's 200 responses.
type HotPair = (Counter, Counter);

#[derive(Debug, Clone)]
struct Hot {
    playlist_ok: HotPair,
    segment_ok: HotPair,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let bytes = Family::<KindLabel, Counter>::default();
        let pair = |kind| {
            (
                requests.get_or_create(&RequestLabels { kind, status: 200 }).clone(),
                bytes.get_or_create(&KindLabel { kind }).clone(),
            )
        };
        let hot = Hot { playlist_ok: pair("playlist"), segment_ok: pair("segment") };
        Self { requests, bytes, hot }
    }
}

impl HttpMetrics {
    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests by kind (playlist, segment, api, metrics, other) and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_response",
            "HTTP response body bytes by kind",
            Unit::Bytes,
            self.bytes.clone(),
        );
    }

    /// `router` with every request counted here.
    pub fn count(&self, router: Router) -> Router {
        router.layer(CountLayer(Arc::new(self.clone())))
    }

    /// Counts one answered request.
    pub(crate) fn record(&self, kind: &'static str, response: &Response) {
        let status = response.status().as_u16();
        let bytes = response.body().size_hint().exact();
        // The two answers a live stream's viewers get all the time are counted without a
        // family lookup (a lock and a hash each).
        let hot = match (kind, status) {
            ("playlist", 200) => Some(&self.hot.playlist_ok),
            ("segment", 200) => Some(&self.hot.segment_ok),
            _ => None,
        };
        match hot {
            Some((requests, sent)) => {
                requests.inc();
                sent.inc_by(bytes.unwrap_or(0));
            }
            None => {
                self.requests.get_or_create(&RequestLabels { kind, status }).inc();
                if let Some(bytes) = bytes {
                    self.bytes.get_or_create(&KindLabel { kind }).inc_by(bytes);
                }
            }
        }
    }
}

/// The kind of a request path.
pub(crate) fn kind(path: &str) -> &'static str {
    if path.starts_with("/hls/") {
        if path.ends_with(".m3u8") {
            "playlist"
        } else if path.ends_with(".ts") {
            "segment"
        } else {
            "other"
        }
    } else if path.starts_with("/api/") {
        "api"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    }
}

/// Counts the requests of the service it wraps. A tower layer of its own rather than
/// `axum::middleware::from_fn`, which boxes a future and clones the inner service per
/// request.
#[derive(Debug, Clone)]
struct CountLayer(Arc<HttpMetrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count { inner, metrics: Arc::clone(&self.0) }
    }
}

#[derive(Debug, Clone)]
struct Count<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Service<Request> for Count<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counting<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let kind = kind(request.uri().path());
        Counting { inner: self.inner.call(request), kind, metrics: Arc::clone(&self.metrics) }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, counted when it is ready.
    struct Counting<F> {
        #[pin]
        inner: F,
        kind: &'static str,
        metrics: Arc<HttpMetrics>,
    }
}

impl<F, E> Future for Counting<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.metrics.record(this.kind, response);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hot_counters_are_the_families_members() {
        use axum::body::Body;
        use tower::ServiceExt as _;
        let metrics = HttpMetrics::default();
        let router = metrics.count(
            Router::new()
                .route("/hls/cam/index.m3u8", axum::routing::get(|| async { "#EXTM3U\n" }))
                .route("/hls/cam/1.ts", axum::routing::get(|| async { "x" })),
        );
        for uri in
            ["/hls/cam/index.m3u8", "/hls/cam/index.m3u8", "/hls/cam/1.ts", "/hls/x/index.m3u8"]
        {
            let request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let count =
            |kind, status| metrics.requests.get_or_create(&RequestLabels { kind, status }).get();
        assert_eq!(count("playlist", 200), 2);
        assert_eq!(count("segment", 200), 1);
        assert_eq!(count("playlist", 404), 1);
        assert_eq!(metrics.bytes.get_or_create(&KindLabel { kind: "playlist" }).get(), 16);
        assert_eq!(metrics.bytes.get_or_create(&KindLabel { kind: "segment" }).get(), 1);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("/hls/cam/index.m3u8"), "playlist");
        assert_eq!(kind("/hls/cam/5-1.ts"), "segment");
        assert_eq!(kind("/hls/cam/x"), "other");
        assert_eq!(kind("/api/v1/streams"), "api");
        assert_eq!(kind("/metrics"), "metrics");
        assert_eq!(kind("/"), "other");
    }
}
