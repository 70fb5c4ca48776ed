//! HLS requests answered without the router. `GET /hls/<name>/<file>` is nearly every request
//! a live server gets: each viewer reloads its playlist every segment (every part in low
//! latency) and fetches each segment or part. axum's routing around the handler (the matched
//! route's boxed service cloned per request, the path parameters' allocations, the
//! extractors, the request extensions that carry the client's address) cost about 15 % of a
//! playlist request's CPU. [`HlsDirect`] gives the same answers as the router's route, with
//! the same layers (the CORS headers, the request counters); what it does not take (HEAD,
//! OPTIONS, a path with escapes to decode, anything else) goes to the router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use stream_store::StreamStore;

use crate::idle::Answering;
use crate::metrics::HttpMetrics;
use crate::sendfile::SendfileQueue;
use crate::{Hls, HlsOptions};

/// Answers the HLS route's plain GETs straight from the store (see the module's doc).
#[derive(Debug, Clone)]
pub struct HlsDirect {
    hls: Hls,
    metrics: Option<Arc<HttpMetrics>>,
}

impl HlsDirect {
    /// What [`crate::router`] serves over `store` with `options`, for the requests it takes
    /// (made beside the router by [`crate::router_and_direct`]).
    pub(crate) fn new(store: Arc<StreamStore>, options: HlsOptions) -> Self {
        Self { hls: Hls { store, options }, metrics: None }
    }

    /// Counts its requests in `metrics`, as [`HttpMetrics::count`] does the router's.
    #[must_use]
    pub fn counted(mut self, metrics: &HttpMetrics) -> Self {
        self.metrics = Some(Arc::new(metrics.clone()));
        self
    }

    /// Whether it answers `request`: a GET of `/hls/<name>/<file>`, both non-empty, with
    /// nothing to percent-decode (stream and file names need none).
    pub(crate) fn takes<B>(request: &hyper::Request<B>) -> bool {
        request.method() == hyper::Method::GET && target(request.uri().path()).is_some()
    }

    /// The answer to `request` (one it [`takes`](Self::takes)) from `client`, on a
    /// connection that sends memory files with `sendfile` if it has a queue.
    pub(crate) async fn answer(
        &self,
        request: Request,
        client: SocketAddr,
        sendfile: Option<SendfileQueue>,
        answering: Answering,
    ) -> Response {
        // The path, apart from the request it is in: the request goes to the answer.
        let uri = request.uri().clone();
        let path = uri.path();
        let response = match target(path) {
            Some((name, file)) => {
                let answered = crate::answer(
                    &self.hls,
                    name,
                    file,
                    request,
                    Some(client),
                    sendfile,
                    answering,
                )
                .await;
                crate::allow_any_origin(answered)
            }
            None => crate::allow_any_origin(axum::http::StatusCode::NOT_FOUND.into_response()),
        };
        if let Some(metrics) = &self.metrics {
            metrics.record(crate::metrics::kind(path), &response);
        }
        response
    }
}

/// The stream and file of `/hls/<name>/<file>`, if `path` is one with nothing to decode.
fn target(path: &str) -> Option<(&str, &str)> {
    let (name, file) = path.strip_prefix("/hls/")?.split_once('/')?;
    let plain = !name.is_empty() && !file.is_empty() && !file.contains('/');
    (plain && !path.contains('%')).then_some((name, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// The router's route and `HlsDirect` give the same answers: status, headers (but
    /// Content-Length, which axum sets and hyper adds on the wire), body.
    #[tokio::test]
    async fn answers_as_the_router_does() {
        let (store, _publication) = crate::tests::store_with_segment();
        let (router, direct) = crate::router_and_direct(store, crate::tests::options());
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let uris = [
            "/hls/cam/index.m3u8",
            "/hls/cam/index.m3u8?_HLS_msn=0",
            "/hls/cam/5-0.ts",
            "/hls/cam/5-9.ts",
            "/hls/cam/init.mp4",
            "/hls/nobody/index.m3u8",
        ];
        for uri in uris {
            let request = || Request::get(uri).body(Body::empty()).unwrap();
            assert!(HlsDirect::takes(&request()), "{uri}");
            let mut routed = request();
            routed.extensions_mut().insert(crate::ClientAddr(client));
            let routed = router.clone().oneshot(routed).await.unwrap();
            let answered = direct.answer(request(), client, None, Answering::default()).await;
            assert_eq!(routed.status(), answered.status(), "{uri}");
            let mut headers = routed.headers().clone();
            headers.remove(axum::http::header::CONTENT_LENGTH);
            assert_eq!(&headers, answered.headers(), "{uri}");
            let routed = routed.into_body().collect().await.unwrap().to_bytes();
            let answered = answered.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(routed, answered, "{uri}");
        }
        let head = Request::head("/hls/cam/5-0.ts").body(Body::empty()).unwrap();
        assert!(!HlsDirect::takes(&head), "HEAD goes to the router");
    }

    #[test]
    fn only_plain_hls_paths_are_taken() {
        assert_eq!(target("/hls/cam/index.m3u8"), Some(("cam", "index.m3u8")));
        assert_eq!(target("/hls/cam/1-2.3.m4s"), Some(("cam", "1-2.3.m4s")));
        for path in ["/hls/cam/", "/hls//index.m3u8", "/hls/cam/a/b", "/hls/c%61m/index.m3u8"] {
            assert_eq!(target(path), None, "{path}");
        }
        for path in ["/api/v1/streams", "/hls/cam", "/healthz", "/"] {
            assert_eq!(target(path), None, "{path}");
        }
    }
}
