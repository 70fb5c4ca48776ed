//! The operator's API under `/api/v1` (documented in `docs/openapi.yaml`): stream stats,
//! like Nginx-RTMP's `/stat` but JSON, open to read (publisher addresses and owners only
//! with admin credentials); and the admin routes (kick a publisher,
//! create, list and revoke keys), which need a bearer token. Plus `/metrics` (Prometheus).
//!
//! What the routes show and do is the binary's [`Control`]: this module owns the HTTP
//! surface (paths, status codes, authentication, error bodies), not the data. The bodies are
//! the types of [`model`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Serialize;

use crate::private::bearer;

pub mod model;

use model::{CreatedKey, KeyChange, KeyInfo, KeyList, NewKey, Stream, StreamList};

/// Largest request body (a key creation is a few dozen bytes of JSON).
pub const MAX_BODY_BYTES: usize = 16 << 10;
/// Content type of `/metrics` (OpenMetrics text, which Prometheus scrapes natively).
pub const METRICS_MIME: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a request may use the admin routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// It may.
    Granted,
    /// No usable credentials: 401. The text says what is wrong (never echoing the token).
    Unauthenticated(String),
    /// Valid credentials without the admin role: 403.
    Forbidden(String),
}

/// Why an admin operation failed, by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request is wrong (a bad stream name): 400.
    #[error("{0}")]
    Invalid(String),
    /// It conflicts with what exists (the stream has a key already): 409.
    #[error("{0}")]
    Conflict(String),
    /// The key store cannot answer now: 503.
    #[error("{0}")]
    Unavailable(String),
}

/// What the API shows and does; implemented by the binary over ingest, the stream store and
/// the key store.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    /// Every stream, live or recently ended, by name; with `detailed`, who publishes
    /// (address, owner) too.
    fn streams(&self, detailed: bool) -> Vec<Stream>;
    /// One stream, if the server knows it.
    fn stream(&self, name: &str, detailed: bool) -> Option<Stream>;
    /// Whether the bearer token (if any) grants the admin routes.
    fn check_admin(&self, bearer: Option<&str>) -> Access;
    /// Disconnects the publisher of `name` (on whichever node of a cluster publishes it);
    /// whether one was live.
    async fn kick(&self, name: &str) -> bool;
    /// Every key's stream, owner and creation time, never keys.
    async fn keys(&self) -> Result<Vec<KeyInfo>, ControlError>;
    /// Creates a key for a new stream `name`, private or not; returns the key (shown this
    /// once).
    async fn create_key(
        &self,
        name: &str,
        owner: Option<&str>,
        private: bool,
    ) -> Result<String, ControlError>;
    /// Makes stream `name` private or public, live at once; whether it has a key or is live.
    async fn set_private(&self, name: &str, private: bool) -> Result<bool, ControlError>;
    /// Sets where stream `name` is pushed on to (from its next publish); whether it has a
    /// key. An unusable URL is [`ControlError::Invalid`].
    async fn set_push(&self, name: &str, push: &[String]) -> Result<bool, ControlError>;
    /// Sets whether stream `name`'s publishes are recorded (from its next publish); whether
    /// it has a key.
    async fn set_record(&self, name: &str, record: bool) -> Result<bool, ControlError>;
    /// Revokes the key of `name`; whether there was a live key.
    async fn revoke_key(&self, name: &str) -> Result<bool, ControlError>;
    /// Revokes the publish token with id `jti`; whether it was not revoked before.
    async fn revoke_token(&self, jti: &str) -> Result<bool, ControlError>;
    /// The metrics, in OpenMetrics text.
    fn metrics(&self) -> String;
}

type Shared = Arc<dyn Control>;

/// The API routes over `control`.
pub fn router(control: Arc<dyn Control>) -> Router {
    Router::new()
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/streams/{name}", get(stream))
        .route("/api/v1/streams/{name}/publisher", delete(kick))
        .route("/api/v1/keys", get(keys).post(create_key))
        .route("/api/v1/keys/{name}", delete(revoke_key).patch(change_key))
        .route("/api/v1/tokens/{jti}", delete(revoke_token))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(control)
}

async fn streams(State(control): State<Shared>, headers: HeaderMap) -> Response {
    let detailed = control.check_admin(bearer(&headers)) == Access::Granted;
    json_response(StatusCode::OK, &StreamList { streams: control.streams(detailed) })
}

async fn stream(
    State(control): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let detailed = control.check_admin(bearer(&headers)) == Access::Granted;
    match control.stream(&name, detailed) {
        Some(stream) => json_response(StatusCode::OK, &stream),
        None => error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}")),
    }
}

async fn kick(
    State(control): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    if control.kick(&name).await {
        tracing::info!(stream = %name, "publisher kicked through the admin API");
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, &format!("{name:?} has no live publisher"))
    }
}

async fn keys(State(control): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    match control.keys().await {
        Ok(keys) => json_response(StatusCode::OK, &KeyList { keys }),
        Err(e) => control_error(&e),
    }
}

async fn create_key(State(control): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    let request: NewKey = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"stream\": <name>, \"owner\": <id, optional>, \"private\": \
                     <bool, optional>}}: {e}"
                ),
            );
        }
    };
    match control.create_key(&request.stream, request.owner.as_deref(), request.private).await {
        Ok(key) => {
            tracing::info!(stream = %request.stream, "key created through the admin API");
            let created = CreatedKey { stream: request.stream, key };
            let mut response = json_response(StatusCode::CREATED, &created);
            // The key is shown once: no cache may keep it.
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => control_error(&e),
    }
}

async fn change_key(
    State(control): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    let expected = "expected {\"private\": <bool>, \"push\": [<rtmp:// URL>, ...], \"record\": <bool>} (any of them)";
    let change: KeyChange = match serde_json::from_slice(&body) {
        Ok(change) if change != KeyChange::default() => change,
        Ok(_) => return error(StatusCode::BAD_REQUEST, expected),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{expected}: {e}")),
    };
    if let Some(push) = &change.push {
        match control.set_push(&name, push).await {
            Ok(true) => {
                tracing::info!(stream = %name, targets = push.len(), "push targets set through the admin API");
            }
            Ok(false) => return error(StatusCode::NOT_FOUND, &format!("{name:?} has no key")),
            Err(e) => return control_error(&e),
        }
    }
    if let Some(record) = change.record {
        match control.set_record(&name, record).await {
            Ok(true) => {
                tracing::info!(stream = %name, record, "recording set through the admin API")
            }
            Ok(false) => return error(StatusCode::NOT_FOUND, &format!("{name:?} has no key")),
            Err(e) => return control_error(&e),
        }
    }
    if let Some(private) = change.private {
        match control.set_private(&name, private).await {
            Ok(true) => {
                let visibility = if private { "private" } else { "public" };
                tracing::info!(stream = %name, visibility, "stream visibility changed through the admin API");
            }
            Ok(false) => {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("{name:?} has no key and is not live"),
                );
            }
            Err(e) => return control_error(&e),
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke_token(
    State(control): State<Shared>,
    Path(jti): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    match control.revoke_token(&jti).await {
        Ok(_) => {
            tracing::info!("publish token revoked through the admin API");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => control_error(&e),
    }
}

async fn revoke_key(
    State(control): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse(control.as_ref(), &headers) {
        return refusal;
    }
    match control.revoke_key(&name).await {
        Ok(true) => {
            tracing::info!(stream = %name, "key revoked through the admin API");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("{name:?} has no live key")),
        Err(e) => control_error(&e),
    }
}

async fn metrics(State(control): State<Shared>) -> Response {
    ([(CONTENT_TYPE, METRICS_MIME)], control.metrics()).into_response()
}

/// The 401 or 403 response for a request without admin access; `None` when it has access.
fn refuse(control: &dyn Control, headers: &HeaderMap) -> Option<Response> {
    match control.check_admin(bearer(headers)) {
        Access::Granted => None,
        Access::Unauthenticated(why) => {
            let mut response = error(StatusCode::UNAUTHORIZED, &why);
            let challenge = HeaderValue::from_static("Bearer realm=\"rtmp-hls admin\"");
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            Some(response)
        }
        Access::Forbidden(why) => Some(error(StatusCode::FORBIDDEN, &why)),
    }
}

fn control_error(e: &ControlError) -> Response {
    let status = match e {
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

/// An error body: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &model::Error { error: message.to_owned() })
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => {
            let headers = [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-cache")];
            (status, headers, text).into_response()
        }
        // Our own types of strings and numbers: cannot fail.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// A control with one live stream `cam`, keys in memory, and the token `good` as admin,
    /// `viewer` as a valid token without the role.
    #[derive(Default)]
    struct Fake {
        keys: Mutex<Vec<String>>,
        private: Mutex<Vec<String>>,
    }

    /// Stream `cam`; its publisher's address shows only when `detailed`.
    fn cam(detailed: bool) -> Stream {
        Stream {
            name: "cam".into(),
            live: true,
            reconnecting: false,
            playlist: "/hls/cam/index.m3u8".into(),
            viewers: 0,
            segments_listed: 0,
            media_sequence: 0,
            target_duration: 2,
            node: None,
            publisher: Some(model::Publisher {
                remote_addr: detailed.then(|| "192.0.2.1:5000".into()),
                app: "live".into(),
                owner: None,
                since: "2026-12-06T00:00:00.000Z".into(),
                duration_seconds: 1.0,
                ended_at: None,
                stop_reason: None,
                bitrate_bps: 0,
                fps: 0.0,
                keyframe_interval_ms: None,
                bytes: 0,
                frames: 0,
                segments: 0,
            }),
            private: false,
            video: None,
            audio: None,
        }
    }

    #[async_trait::async_trait]
    impl Control for Fake {
        fn streams(&self, detailed: bool) -> Vec<Stream> {
            vec![cam(detailed)]
        }
        fn stream(&self, name: &str, detailed: bool) -> Option<Stream> {
            (name == "cam").then(|| cam(detailed))
        }
        fn check_admin(&self, bearer: Option<&str>) -> Access {
            match bearer {
                Some("good") => Access::Granted,
                Some("viewer") => Access::Forbidden("no admin role".into()),
                Some(_) => Access::Unauthenticated("invalid token".into()),
                None => Access::Unauthenticated("no token".into()),
            }
        }
        async fn kick(&self, name: &str) -> bool {
            name == "cam"
        }
        async fn keys(&self) -> Result<Vec<KeyInfo>, ControlError> {
            let keys = self.keys.lock().unwrap();
            let info = |k: &String| KeyInfo {
                stream: k.clone(),
                owner: None,
                created_at: "2026-12-06T00:00:00Z".into(),
                revoked: false,
                private: self.private.lock().unwrap().contains(k),
                push: Vec::new(),
                record: None,
            };
            Ok(keys.iter().map(info).collect())
        }
        async fn create_key(
            &self,
            name: &str,
            _: Option<&str>,
            private: bool,
        ) -> Result<String, ControlError> {
            let mut keys = self.keys.lock().unwrap();
            if keys.iter().any(|k| k == name) {
                return Err(ControlError::Conflict("exists".into()));
            }
            keys.push(name.to_owned());
            if private {
                self.private.lock().unwrap().push(name.to_owned());
            }
            Ok("the-key".into())
        }
        async fn set_private(&self, name: &str, private: bool) -> Result<bool, ControlError> {
            if !self.keys.lock().unwrap().iter().any(|k| k == name) {
                return Ok(false);
            }
            let mut set = self.private.lock().unwrap();
            set.retain(|k| k != name);
            if private {
                set.push(name.to_owned());
            }
            Ok(true)
        }
        async fn set_push(&self, name: &str, push: &[String]) -> Result<bool, ControlError> {
            if push.iter().any(|url| !url.starts_with("rtmp")) {
                return Err(ControlError::Invalid("not an rtmp:// URL".into()));
            }
            Ok(self.keys.lock().unwrap().iter().any(|k| k == name))
        }
        async fn set_record(&self, name: &str, _: bool) -> Result<bool, ControlError> {
            Ok(self.keys.lock().unwrap().iter().any(|k| k == name))
        }
        async fn revoke_token(&self, jti: &str) -> Result<bool, ControlError> {
            Ok(!jti.is_empty())
        }
        async fn revoke_key(&self, name: &str) -> Result<bool, ControlError> {
            let mut keys = self.keys.lock().unwrap();
            let before = keys.len();
            keys.retain(|k| k != name);
            Ok(keys.len() < before)
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
    }

    async fn call(
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let router = router(Arc::new(Fake::default()));
        call_on(&router, method, uri, token, body).await
    }

    async fn call_on(
        router: &Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// A body read back as the API type it should be.
    fn read<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not the expected body ({e}): {text}"))
    }

    #[tokio::test]
    async fn stats_are_open_and_json() {
        let (status, headers, body) = call(Method::GET, "/api/v1/streams", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(read::<StreamList>(&body), StreamList { streams: vec![cam(false)] });
        let (status, _, body) = call(Method::GET, "/api/v1/streams/cam", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read::<Stream>(&body), cam(false));
        // Details (who publishes) only with admin credentials.
        let (_, _, body) = call(Method::GET, "/api/v1/streams/cam", Some("good"), "").await;
        assert_eq!(read::<Stream>(&body), cam(true));
        let (_, _, body) = call(Method::GET, "/api/v1/streams", Some("viewer"), "").await;
        assert_eq!(read::<StreamList>(&body).streams, [cam(false)]);
        let (status, _, body) = call(Method::GET, "/api/v1/streams/nope", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(read::<model::Error>(&body).error.contains("nope"), "{body}");
    }

    #[tokio::test]
    async fn admin_routes_need_a_token_with_the_role() {
        for (method, uri, body) in [
            (Method::DELETE, "/api/v1/streams/cam/publisher", ""),
            (Method::GET, "/api/v1/keys", ""),
            (Method::POST, "/api/v1/keys", r#"{"stream":"new"}"#),
            (Method::DELETE, "/api/v1/keys/cam", ""),
            (Method::PATCH, "/api/v1/keys/cam", r#"{"private":true}"#),
        ] {
            let (status, headers, _) = call(method.clone(), uri, None, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert!(headers[WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
            let (status, _, _) = call(method.clone(), uri, Some("forged"), body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            let (status, _, _) = call(method.clone(), uri, Some("viewer"), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn kick_and_keys_with_the_role() {
        let router = router(Arc::new(Fake::default()));
        let good = Some("good");
        let (status, _, _) =
            call_on(&router, Method::DELETE, "/api/v1/streams/cam/publisher", good, "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) =
            call_on(&router, Method::DELETE, "/api/v1/streams/nope/publisher", good, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, headers, body) =
            call_on(&router, Method::POST, "/api/v1/keys", good, r#"{"stream":"new"}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        let created = CreatedKey { stream: "new".into(), key: "the-key".into() };
        assert_eq!(read::<CreatedKey>(&body), created);
        let (status, _, _) =
            call_on(&router, Method::POST, "/api/v1/keys", good, r#"{"stream":"new"}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        for bad in ["", "{", r#"{"name":"x"}"#, r#"{"stream":"x","extra":1}"#] {
            let (status, _, _) = call_on(&router, Method::POST, "/api/v1/keys", good, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (status, _, body) = call_on(&router, Method::GET, "/api/v1/keys", good, "").await;
        assert_eq!(status, StatusCode::OK);
        let keys = read::<KeyList>(&body).keys;
        assert_eq!(keys.iter().map(|k| k.stream.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(!keys[0].private);
        // Private at creation, or changed later.
        let body = r#"{"stream":"hidden","private":true}"#;
        let (status, _, _) = call_on(&router, Method::POST, "/api/v1/keys", good, body).await;
        assert_eq!(status, StatusCode::CREATED);
        let private = r#"{"private":true}"#;
        let (status, _, _) =
            call_on(&router, Method::PATCH, "/api/v1/keys/new", good, private).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, _, body) = call_on(&router, Method::GET, "/api/v1/keys", good, "").await;
        assert!(read::<KeyList>(&body).keys.iter().all(|k| k.private), "{body}");
        let (status, _, _) =
            call_on(&router, Method::PATCH, "/api/v1/keys/nope", good, private).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let push = r#"{"push":["rtmp://a.example/live2/k"]}"#;
        let (status, _, _) = call_on(&router, Method::PATCH, "/api/v1/keys/new", good, push).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let push = r#"{"push":["http://a.example/live2/k"]}"#;
        let (status, _, _) = call_on(&router, Method::PATCH, "/api/v1/keys/new", good, push).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        for bad in ["", "{}", r#"{"private":"yes"}"#, r#"{"private":true,"x":1}"#] {
            let (status, _, _) =
                call_on(&router, Method::PATCH, "/api/v1/keys/new", good, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (status, _, _) = call_on(&router, Method::DELETE, "/api/v1/keys/new", good, "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = call_on(&router, Method::DELETE, "/api/v1/keys/new", good, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let big = format!(r#"{{"stream":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let (status, _, _) = call(Method::POST, "/api/v1/keys", Some("good"), &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let (status, headers, body) = call(Method::GET, "/metrics", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], METRICS_MIME);
        assert_eq!(body, "# EOF\n");
    }
}
