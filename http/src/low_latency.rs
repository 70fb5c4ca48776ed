//! Low-latency HLS delivery (draft-pantos-hls-rfc8216bis §6.2.5, §6.2.6): playlist requests
//! that block until the part they name exists, and part requests that block until the part
//! is complete.
//!
//! A blocked request costs a task parked on the stream's change counter
//! ([`stream_store::Changes`]): no CPU until the stream's playlist changes, once a part
//! (four times a second with 0.25 s parts). A request for the part being written (the
//! playlist's EXT-X-PRELOAD-HINT) waits the same way and gets the part whole when it ends:
//! §6.2.6 forbids sending any byte of a part before all of it can be sent at the link's
//! full speed, so that players measure the link, not the encoder, when they choose a
//! bit rate. Its last byte leaves when it would have streamed as written (the part ends
//! with its last frame), in one write instead of one per frame.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use stream_store::{Changes, Directives, PartRead, Reload, StreamStore};
use tokio::time::Instant;

use crate::idle::{Answer, Answering};
use crate::{FMP4_MIME, PLAYLIST_CACHE, PLAYLIST_MIME};

/// A blocked playlist response may be cached this many target durations: any later request
/// with the same directives is satisfied by it, and a delta update made from it stays
/// within CAN-SKIP-UNTIL (six target durations).
const BLOCKED_CACHE_TARGETS: u64 = 6;

/// The playlist of `name` for a request with `query`: at once, or once the stream reaches
/// the part or segment it names (400 if it is too far ahead, 503 if that takes more than
/// three target durations). With `signing` (a private stream's), every URI it lists gets
/// that query and no shared cache keeps it.
pub(crate) async fn playlist(
    store: &StreamStore,
    name: &str,
    query: &str,
    signing: Option<&str>,
    variants: &[String],
    answering: Answering,
) -> Response {
    let directives = match Directives::from_query(query) {
        Ok(directives) => directives,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    // Subscribed before the first look, so a change in between is not missed.
    let Some(changes) = store.changes(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut wait = BoundedWait::new(changes, answering);
    loop {
        match store.reload(name, directives) {
            None => return StatusCode::NOT_FOUND.into_response(),
            Some(Reload::Ready(_)) if signing.is_none() && store.is_private(name) => {
                // Made private while the request waited: it was admitted as public.
                return crate::private::refusal(&auth::viewer::ViewerRefused::Unauthenticated(
                    "this stream became private: log in (a viewer token is needed)".into(),
                ));
            }
            Some(Reload::Ready(body)) => {
                let visibility = if signing.is_some() { "private" } else { "public" };
                // Only a low-latency store blocks; elsewhere the directives are ignored and
                // the answer is the current playlist, which must not be cached as the one the
                // directives name.
                let cache = if directives.blocks() && store.is_low_latency() {
                    let target = store.target_duration(name).unwrap_or(Duration::from_secs(2));
                    format!("{visibility}, max-age={}", target.as_secs() * BLOCKED_CACHE_TARGETS)
                } else if signing.is_some() {
                    format!("private, {PLAYLIST_CACHE}")
                } else {
                    PLAYLIST_CACHE.to_owned()
                };
                // A live low-latency rendition reports its siblings' live edges.
                let body = if variants.is_empty()
                    || !store.is_low_latency()
                    || body.ends_with(b"#EXT-X-ENDLIST\n")
                {
                    body
                } else {
                    let reports = crate::variants::reports(store, name, variants);
                    if reports.is_empty() {
                        body
                    } else {
                        let mut joined = Vec::with_capacity(body.len() + reports.len());
                        joined.extend_from_slice(&body);
                        joined.extend_from_slice(reports.as_bytes());
                        Bytes::from(joined)
                    }
                };
                let body = match signing {
                    Some(query) => crate::private::sign_playlist(&body, query),
                    None => body,
                };
                return ([(CONTENT_TYPE, PLAYLIST_MIME.to_owned()), (CACHE_CONTROL, cache)], body)
                    .into_response();
            }
            Some(Reload::TooFarAhead) => {
                return (StatusCode::BAD_REQUEST, "the request is too far ahead of the stream\n")
                    .into_response();
            }
            Some(Reload::Wait { timeout }) => match wait.next_change(timeout).await {
                Waited::Changed => {}
                Waited::Gone => return StatusCode::NOT_FOUND.into_response(),
                Waited::TimedOut => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            },
        }
    }
}

/// What a [`BoundedWait`] ended with.
enum Waited {
    /// The stream changed: look again.
    Changed,
    /// The stream is gone from the store.
    Gone,
    /// The wait's deadline passed.
    TimedOut,
}

/// A request's wait on its stream's change counter, bounded by a deadline set at its first
/// wait. The connection is not idle while it lasts (see [`crate::idle`]).
struct BoundedWait {
    changes: Changes,
    deadline: Option<Instant>,
    answering: Answering,
    waiting: Option<Answer>,
}

impl BoundedWait {
    fn new(changes: Changes, answering: Answering) -> Self {
        Self { changes, deadline: None, answering, waiting: None }
    }

    /// Waits for the next change, or until `timeout` after the first wait.
    async fn next_change(&mut self, timeout: Duration) -> Waited {
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + timeout);
        let answering = &self.answering;
        self.waiting.get_or_insert_with(|| answering.begin());
        tokio::select! {
            alive = self.changes.changed() => {
                if alive { Waited::Changed } else { Waited::Gone }
            }
            () = tokio::time::sleep_until(deadline) => Waited::TimedOut,
        }
    }
}

/// Part `file` of `name`, whole once it is complete: at once, or, for the part being
/// written (the playlist's EXT-X-PRELOAD-HINT) or the next one, when it ends. `None`: no
/// such part, or one that will never be complete (the stream ended). A part still pending
/// after three target durations (the stream stalled) is 503, as a blocked playlist request.
/// `admitted_public`: the request had no credential (the stream was public), so a part
/// that completes after the stream turned private is not sent.
pub(crate) async fn part(
    store: &Arc<StreamStore>,
    name: &str,
    file: &str,
    admitted_public: bool,
    answering: Answering,
) -> Option<Response> {
    // Taken before the first look, so a part completing in between is not missed.
    let mut wait = BoundedWait::new(store.changes(name)?, answering);
    loop {
        match store.part(name, file)? {
            PartRead::Complete(pieces) => {
                if admitted_public && store.is_private(name) {
                    return None;
                }
                let cache = crate::media_cache(!admitted_public);
                let headers = [(CONTENT_TYPE, FMP4_MIME), (CACHE_CONTROL, cache)];
                return Some((headers, crate::pieces::body(pieces)).into_response());
            }
            PartRead::Pending => {}
        }
        // A part ends with a change of the playlist, which lists it from then on.
        match wait.next_change(store.block_timeout(name)?).await {
            Waited::Changed => {}
            Waited::Gone => return None,
            Waited::TimedOut => return Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::body::Body;
    use axum::http::Request;
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    use packager::FragmentOutput;
    use stream_store::{Publication, StoreConfig};
    use tower::ServiceExt as _;

    use super::*;

    /// A low-latency stream with one complete segment (two 1 s parts) and the next open.
    fn live_stream() -> (Arc<StreamStore>, Publication) {
        let store = Arc::new(StreamStore::new(StoreConfig {
            part_target: Some(Duration::from_secs(1)),
            ..StoreConfig::default()
        }));
        let publication = store.begin("cam", 1, 10).unwrap();
        let mut outputs = vec![FragmentOutput::Init(Bytes::from_static(b"init"))];
        outputs.extend(segment_start());
        for byte in [1, 2] {
            outputs.push(FragmentOutput::Fragment(Bytes::from(vec![byte; 4])));
            outputs.push(part_end());
        }
        outputs.push(FragmentOutput::SegmentEnd {
            duration: Duration::from_secs(2),
            discontinuity: false,
            independent: true,
            start: 0,
        });
        outputs.extend(segment_start());
        push(&publication, outputs);
        (store, publication)
    }

    fn segment_start() -> Option<FragmentOutput> {
        let part_target = Some(Duration::from_secs(1));
        Some(FragmentOutput::SegmentStart { discontinuity: false, start: 0, part_target })
    }

    fn part_end() -> FragmentOutput {
        FragmentOutput::PartEnd { duration: Duration::from_secs(1), independent: true }
    }

    fn push(publication: &Publication, outputs: Vec<FragmentOutput>) {
        for output in outputs {
            publication.push_fmp4(output, SystemTime::UNIX_EPOCH);
        }
    }

    async fn get(store: &Arc<StreamStore>, uri: &str) -> Response {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        crate::router(Arc::clone(store), crate::tests::options()).oneshot(request).await.unwrap()
    }

    async fn text(response: Response) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap()
    }

    #[tokio::test]
    async fn a_blocked_reload_is_answered_when_its_part_exists() {
        let (store, publication) = live_stream();
        let blocked = {
            let store = Arc::clone(&store);
            tokio::spawn(
                async move { get(&store, "/hls/cam/index.m3u8?_HLS_msn=1&_HLS_part=0").await },
            )
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!blocked.is_finished(), "answered before its part existed");
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"abc")), part_end()]);
        let response = blocked.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CACHE_CONTROL], "public, max-age=12");
        let playlist = text(response).await;
        assert!(playlist.contains("URI=\"1-1.0.m4s\""), "{playlist}");
        assert!(playlist.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1-1.1.m4s\"\n"));
    }

    /// Without low latency the directives are ignored: the answer is the playlist as it is,
    /// cached as every playlist is, not for target durations under the query's key.
    #[tokio::test]
    async fn directives_to_a_stream_without_low_latency_are_not_cached_as_blocked() {
        let store = Arc::new(StreamStore::new(StoreConfig::default()));
        let publication = store.begin("cam", 1, 10).unwrap();
        let start =
            FragmentOutput::SegmentStart { discontinuity: false, start: 0, part_target: None };
        let mut outputs = vec![FragmentOutput::Init(Bytes::from_static(b"init")), start];
        outputs.push(FragmentOutput::Fragment(Bytes::from(vec![1; 4])));
        outputs.push(FragmentOutput::SegmentEnd {
            duration: Duration::from_secs(2),
            discontinuity: false,
            independent: true,
            start: 0,
        });
        push(&publication, outputs);
        let response = get(&store, "/hls/cam/index.m3u8?_HLS_msn=7&_HLS_part=1").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CACHE_CONTROL], PLAYLIST_CACHE);
    }

    #[tokio::test]
    async fn directives_out_of_reach_or_malformed_are_400() {
        let (store, _publication) = live_stream();
        for query in ["_HLS_msn=3", "_HLS_part=1", "_HLS_msn=x", "_HLS_msn=1&_HLS_part=99"] {
            let response = get(&store, &format!("/hls/cam/index.m3u8?{query}")).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        }
        let response = get(&store, "/hls/cam/index.m3u8?_HLS_msn=0&_HLS_skip=YES").await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_not_satisfied_in_three_target_durations_is_503() {
        let (store, _publication) = live_stream();
        let response = get(&store, "/hls/cam/index.m3u8?_HLS_msn=1").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// The hinted part, asked for while it is written, is sent whole once it ends (with its
    /// length: nothing of it went out before), never a fragment at a time.
    #[tokio::test]
    async fn the_hinted_part_is_sent_whole_when_it_ends() {
        let (store, publication) = live_stream();
        let hinted = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { get(&store, "/hls/cam/1-1.0.m4s").await })
        };
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!hinted.is_finished(), "answered before the part was complete");
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"cd")), part_end()]);
        let response = hinted.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], FMP4_MIME);
        assert_eq!(response.body().size_hint().exact(), Some(4), "sent with its length");
        assert_eq!(text(response).await, "abcd");
        // Complete now: sent at once, the same.
        assert_eq!(text(get(&store, "/hls/cam/1-1.0.m4s").await).await, "abcd");
        assert_eq!(text(get(&store, "/hls/cam/1-init0.mp4").await).await, "init");
        let segment = get(&store, "/hls/cam/1-0.m4s").await;
        assert_eq!(segment.headers()[CONTENT_TYPE], FMP4_MIME);
        assert_eq!(text(segment).await.as_bytes(), [[1u8; 4], [2; 4]].concat());
    }

    /// Requests admitted while the stream was public and still waiting when it turned
    /// private get nothing of what completes after: the hinted part is not found, the
    /// blocked reload is refused as an unauthenticated request for a private stream is.
    #[tokio::test]
    async fn a_stream_turned_private_while_requests_wait_sends_them_nothing() {
        let (store, publication) = live_stream();
        let spawn = |uri: &'static str| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { get(&store, uri).await })
        };
        let hinted = spawn("/hls/cam/1-1.0.m4s");
        let reload = spawn("/hls/cam/index.m3u8?_HLS_msn=1&_HLS_part=0");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!hinted.is_finished() && !reload.is_finished(), "answered before the part");
        assert!(store.set_private("cam", true));
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab")), part_end()]);
        assert_eq!(hinted.await.unwrap().status(), StatusCode::NOT_FOUND);
        let refused = reload.await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[CACHE_CONTROL], "no-store");
        let text_refused = text(refused).await;
        assert!(text_refused.contains("became private"), "refused after waiting: {text_refused}");
        // Asked for now, the complete part is refused too.
        assert_eq!(get(&store, "/hls/cam/1-1.0.m4s").await.status(), StatusCode::UNAUTHORIZED);
    }

    /// A part that will never be complete (the publisher went without finishing the
    /// packager: a crash) is not found, not a cut part.
    #[tokio::test]
    async fn a_part_that_will_never_complete_is_not_found() {
        let (store, publication) = live_stream();
        let hinted = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { get(&store, "/hls/cam/1-1.0.m4s").await })
        };
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        drop(publication);
        assert_eq!(hinted.await.unwrap().status(), StatusCode::NOT_FOUND);
    }

    /// A stalled stream: the part is given up three target durations after it was asked
    /// for (503, as a blocked playlist request), however many fragments came meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_part_that_stalls_is_503_when_its_request_times_out() {
        let (store, publication) = live_stream();
        let asked = Instant::now();
        let timeout = store.block_timeout("cam").unwrap();
        let hinted = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { get(&store, "/hls/cam/1-1.0.m4s").await })
        };
        tokio::time::sleep(timeout / 2).await;
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        assert_eq!(hinted.await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(asked.elapsed(), timeout, "from the request, not from the last fragment");
    }
}
