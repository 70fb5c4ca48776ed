//! Low-latency HLS delivery (draft-pantos-hls-rfc8216bis §6.2.5): playlist requests that
//! block until the part they name exists, and parts sent while they are written.
//!
//! A blocked request costs a task parked on the stream's change counter
//! ([`stream_store::Changes`]): no CPU until the stream's playlist changes, about three times
//! a second. A request for the part being written (the playlist's EXT-X-PRELOAD-HINT) is
//! answered at once with a chunked body that gets each fragment as the packager makes it, so
//! a player has a frame about as soon as the encoder sent it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use stream_store::{Directives, PartRead, Reload, StreamStore};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{FMP4_MIME, PLAYLIST_CACHE, PLAYLIST_MIME, SEGMENT_CACHE};

/// A blocked playlist response may be cached this many target durations: any later request
/// with the same directives is satisfied by it, and a delta update made from it stays
/// within CAN-SKIP-UNTIL (six target durations).
const BLOCKED_CACHE_TARGETS: u64 = 6;
/// Fragments queued for one part request whose viewer reads slowly; the task filling it
/// waits beyond that (it holds no more than these).
const PART_QUEUE: usize = 8;

/// The playlist of `name` for a request with `query`: at once, or once the stream reaches
/// the part or segment it names (400 if it is too far ahead, 503 if that takes more than
/// three target durations).
pub(crate) async fn playlist(store: &StreamStore, name: &str, query: &str) -> Response {
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
            Some(Reload::Ready(body)) => {
                let cache = if directives.blocks() {
                    let target = store.target_duration(name).unwrap_or(Duration::from_secs(2));
                    format!("public, max-age={}", target.as_secs() * BLOCKED_CACHE_TARGETS)
                } else {
                    PLAYLIST_CACHE.to_owned()
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
pub(crate) fn part(store: &Arc<StreamStore>, name: &str, file: &str) -> Option<Response> {
    let headers = [(CONTENT_TYPE, FMP4_MIME), (CACHE_CONTROL, SEGMENT_CACHE)];
    match store.part(name, file, 0)? {
        PartRead::Complete(bytes) => Some((headers, bytes).into_response()),
        PartRead::Growing(_) | PartRead::NotYet => {
            let changes = store.part_changes(name)?;
            let timeout = store.block_timeout(name)?;
            let (sender, receiver) = mpsc::channel(PART_QUEUE);
            tokio::spawn(stream_part(
                Arc::clone(store),
                name.to_owned(),
                file.to_owned(),
                changes,
                sender,
                Instant::now() + timeout,
            ));
            Some((headers, Body::new(PartBody(receiver))).into_response())
        }
    }
}

/// Sends part `file` of `name` into `sender` as it grows, until it is complete. A part that
/// does not complete by `deadline`, or goes, ends the response with an error, so the player
/// does not take a cut part for a whole one.
async fn stream_part(
    store: Arc<StreamStore>,
    name: String,
    file: String,
    mut changes: stream_store::Changes,
    sender: mpsc::Sender<Result<Bytes, PartAborted>>,
    deadline: Instant,
) {
    let mut offset = 0;
    loop {
        match store.part(&name, &file, offset) {
            Some(PartRead::Complete(rest)) => {
                if !rest.is_empty() {
                    let _ = sender.send(Ok(rest)).await;
                }
                return;
            }
            Some(PartRead::Growing(fragments)) => {
                for fragment in fragments {
                    offset += fragment.len();
                    if sender.send(Ok(fragment)).await.is_err() {
                        return;
                    }
                }
            }
            Some(PartRead::NotYet) => {}
            None => break,
        }
        tokio::select! {
            alive = changes.changed() => if !alive { break },
            () = tokio::time::sleep_until(deadline) => break,
            () = sender.closed() => return,
        }
    }
    let _ = sender.send(Err(PartAborted)).await;
}

/// The part being sent will not be completed (the stream ended or stalled).
#[derive(Debug, thiserror::Error)]
#[error("the part being sent will not be completed")]
struct PartAborted;

/// A response body fed by [`stream_part`].
struct PartBody(mpsc::Receiver<Result<Bytes, PartAborted>>);

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = PartAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PartAborted>>> {
        self.0.poll_recv(cx).map(|next| next.map(|data| data.map(Frame::data)))
    }
}

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
        crate::router(Arc::clone(store), 0).oneshot(request).await.unwrap()
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
}
