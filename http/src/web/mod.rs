//! The built-in web page: `/` lists the streams (live, and ended within `--ended-ttl`) from
//! the same figures as the stats API, and `/watch/{name}` plays one with hls.js, showing how
//! far behind live it plays and how often it stalled.
//!
//! The pages are static files compiled into the binary; their script reads
//! `/web/streams.json`, the public (non-admin) stream list, so the page works when the API
//! lives on `--admin-addr`. hls.js is not copied here: the player page loads the pinned
//! release (the version `tests/browser` pins) from jsDelivr with Subresource Integrity, so a
//! changed file is refused by the browser. Everything the server sends is put in the page as
//! text, never as markup, and the Content-Security-Policy allows scripts from this server
//! and that CDN only.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::Control;
use crate::api::model::StreamList;

const INDEX: &str = include_str!("index.html");
const WATCH: &str = include_str!("watch.html");
const STYLE: &str = include_str!("style.css");
const LIST_JS: &str = include_str!("list.js");
const WATCH_JS: &str = include_str!("watch.js");

/// Scripts from this server and the pinned hls.js on jsDelivr; media and workers from blobs
/// (hls.js feeds Media Source from a worker it makes from a blob).
const POLICY: &str = "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; \
    media-src 'self' blob:; worker-src 'self' blob:; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
/// The pages and their scripts may change with a new binary: revalidated after 5 minutes.
const ASSET_CACHE: &str = "public, max-age=300";

/// The page's routes, reading the streams through `control`.
pub fn router(control: Arc<dyn Control>) -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX) }))
        .route("/watch/{name}", get(|| async { page(WATCH) }))
        .route("/web/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/web/list.js", get(|| async { asset("text/javascript; charset=utf-8", LIST_JS) }))
        .route("/web/watch.js", get(|| async { asset("text/javascript; charset=utf-8", WATCH_JS) }))
        .route("/web/streams.json", get(streams))
        .with_state(control)
}

fn page(html: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, POLICY),
    ];
    (headers, html).into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, kind), (CACHE_CONTROL, ASSET_CACHE)], body).into_response()
}

/// What anyone may see of every stream: the stats API's answer without admin credentials.
async fn streams(State(control): State<Arc<dyn Control>>) -> Response {
    let list = StreamList { streams: control.streams(false) };
    match serde_json::to_string(&list) {
        Ok(text) => ([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-cache")], text)
            .into_response(),
        // Our own types of strings and numbers: cannot fail.
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_player_loads_hls_js_pinned_with_its_integrity() {
        let script = WATCH.lines().find(|l| l.contains("hls.min.js")).unwrap_or_default();
        assert!(script.contains("https://cdn.jsdelivr.net/npm/hls.js@"), "{script}");
        assert!(script.contains("integrity=\"sha384-") && script.contains("crossorigin"));
    }
}
