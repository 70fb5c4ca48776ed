//! The HTTP side's Prometheus metrics: requests by kind (playlist, segment, api, metrics,
//! other) and status, and response bytes by kind. Counted by a middleware around every
//! route, from the response's exact body size (bodies are whole `Bytes`, never streamed).

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
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
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    /// Requests by kind and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Response body bytes by kind.
    pub bytes: Family<KindLabel, Counter>,
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
        router.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }
}

/// The kind of a request path.
fn kind(path: &str) -> &'static str {
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

async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let kind = kind(request.uri().path());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.requests.get_or_create(&RequestLabels { kind, status }).inc();
    if let Some(bytes) = response.body().size_hint().exact() {
        metrics.bytes.get_or_create(&KindLabel { kind }).inc_by(bytes);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
