//! Low-latency HLS delivery (draft-pantos-hls-rfc8216bis §6.2.5): playlist requests that
//! block until the part they name exists, and parts sent while they are written.
//!
//! A blocked request costs a task parked on the stream's change counter
//! ([`stream_store::Changes`]): no CPU until the stream's playlist changes, once a part
//! (four times a second with 0.25 s parts). A request for the part being written (the
//! playlist's EXT-X-PRELOAD-HINT) is answered at once with a chunked body that gets each
//! fragment as the packager makes it, so a player has a frame about as soon as the encoder
//! sent it; the connection's task itself waits for the fragments (no task or queue per
//! request), and reads no further ahead than the socket takes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use stream_store::{Directives, PartRead, Reload, StreamStore};
use tokio::time::{Instant, Sleep};

use crate::{FMP4_MIME, PLAYLIST_CACHE, PLAYLIST_MIME, SEGMENT_CACHE};

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
) -> Response {
    let directives = match Directives::from_query(query) {
        Ok(directives) => directives,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    // Subscribed before the first look, so a change in between is not missed.
    let Some(mut changes) = store.changes(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut deadline = None;
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
                let cache = if directives.blocks() {
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
            Some(Reload::Wait { timeout }) => {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                tokio::select! {
                    alive = changes.changed() => if !alive {
                        return StatusCode::NOT_FOUND.into_response();
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                }
            }
        }
    }
}

/// Part `file` of `name`: complete, or sent as it is written. `None`: no such part.
/// `admitted_public`: the request had no credential (the stream was public), so a part
/// still being written stops if the stream turns private meanwhile.
pub(crate) fn part(
    store: &Arc<StreamStore>,
    name: &str,
    file: &str,
    admitted_public: bool,
) -> Option<Response> {
    let headers = [(CONTENT_TYPE, FMP4_MIME), (CACHE_CONTROL, SEGMENT_CACHE)];
    match store.part(name, file, 0)? {
        PartRead::Complete(pieces) => Some((headers, crate::pieces::body(pieces)).into_response()),
        PartRead::Growing(_) | PartRead::NotYet => {
            let growing = Growing {
                changes: store.part_changes(name)?,
                deadline: Box::pin(tokio::time::sleep(store.block_timeout(name)?)),
                store: Arc::clone(store),
                name: name.to_owned(),
                file: file.to_owned(),
                offset: 0,
                queue: VecDeque::new(),
                done: false,
                admitted_public,
            };
            let body = Body::from_stream(futures_util::stream::unfold(growing, Growing::next));
            Some((headers, body).into_response())
        }
    }
}

/// A part being written, as its response body reads it: the connection's own task waits on
/// the stream's part counter, takes what was added, and sends it.
struct Growing {
    store: Arc<StreamStore>,
    name: String,
    file: String,
    changes: stream_store::Changes,
    /// When the part is given up on. Armed once: a timer made at each wait (several a
    /// part) went in and out of the runtime's timer wheel each time.
    deadline: Pin<Box<Sleep>>,
    /// Bytes of the part taken so far.
    offset: usize,
    /// Taken, not sent yet.
    queue: VecDeque<Bytes>,
    /// The part is complete (or will never be): the queue is the rest.
    done: bool,
    /// See [`part`].
    admitted_public: bool,
}

impl Growing {
    /// The next bytes of the part; an error ends the body when the part will not be
    /// completed (the stream ended or stalled), so a player does not take a cut part for a
    /// whole one.
    async fn next(mut self) -> Option<(Result<Bytes, PartAborted>, Self)> {
        loop {
            if let Some(bytes) = self.queue.pop_front() {
                return Some((Ok(bytes), self));
            }
            if self.done {
                return None;
            }
            if self.admitted_public && self.store.is_private(&self.name) {
                return self.abort();
            }
            match self.store.part(&self.name, &self.file, self.offset) {
                Some(PartRead::Complete(rest)) => {
                    self.queue.extend(rest.as_slice().iter().filter(|p| !p.is_empty()).cloned());
                    self.done = true;
                    continue;
                }
                Some(PartRead::Growing(fragments)) if !fragments.is_empty() => {
                    self.offset += fragments.iter().map(Bytes::len).sum::<usize>();
                    self.queue.extend(fragments);
                    continue;
                }
                Some(PartRead::Growing(_) | PartRead::NotYet) => {}
                None => return self.abort(),
            }
            tokio::select! {
                alive = self.changes.changed() => if !alive { return self.abort() },
                () = self.deadline.as_mut() => return self.abort(),
            }
        }
    }

    fn abort(mut self) -> Option<(Result<Bytes, PartAborted>, Self)> {
        self.done = true;
        Some((Err(PartAborted), self))
    }
}

/// The part being sent will not be completed (the stream ended or stalled).
#[derive(Debug, thiserror::Error)]
#[error("the part being sent will not be completed")]
struct PartAborted;

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::http::Request;
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
        Some(FragmentOutput::SegmentStart { discontinuity: false, start: 0 })
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

    #[tokio::test]
    async fn the_hinted_part_is_sent_fragment_by_fragment() {
        let (store, publication) = live_stream();
        let response = get(&store, "/hls/cam/1-1.0.m4s").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], FMP4_MIME);
        let mut body = response.into_body();
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, Bytes::from_static(b"ab"), "the first fragment before the part ends");
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"cd")), part_end()]);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, Bytes::from_static(b"cd"));
        // Complete now: sent whole.
        assert_eq!(text(get(&store, "/hls/cam/1-1.0.m4s").await).await, "abcd");
        assert_eq!(text(get(&store, "/hls/cam/1-init0.mp4").await).await, "init");
        let segment = get(&store, "/hls/cam/1-0.m4s").await;
        assert_eq!(segment.headers()[CONTENT_TYPE], FMP4_MIME);
        assert_eq!(text(segment).await.as_bytes(), [[1u8; 4], [2; 4]].concat());
    }

    #[tokio::test]
    async fn a_part_that_will_never_complete_ends_its_response_with_an_error() {
        let (store, publication) = live_stream();
        let response = get(&store, "/hls/cam/1-1.0.m4s").await;
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        // The publisher goes without finishing the packager (a crash): the part is dropped.
        drop(publication);
        assert!(response.into_body().collect().await.is_err());
    }

    /// A stalled stream: the part is given up three target durations after it was asked
    /// for, however many fragments came meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_part_that_stalls_ends_with_an_error_when_its_request_times_out() {
        let (store, publication) = live_stream();
        let asked = Instant::now();
        let timeout = store.block_timeout("cam").unwrap();
        let mut body = get(&store, "/hls/cam/1-1.0.m4s").await.into_body();
        tokio::time::sleep(timeout / 2).await;
        push(&publication, vec![FragmentOutput::Fragment(Bytes::from_static(b"ab"))]);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, Bytes::from_static(b"ab"));
        assert!(body.collect().await.is_err());
        assert_eq!(asked.elapsed(), timeout, "from the request, not from the last fragment");
    }
}
