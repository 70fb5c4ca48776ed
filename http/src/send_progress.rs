//! The idle timeout of an HTTP/2 response: a response whose body the connection has not
//! taken for the idle timeout ends the connection, as a write pending that long ends an
//! HTTP/1.1 one ([`crate::idle`]).
//!
//! HTTP/2 sends a body only as the peer's flow-control window lets it (RFC 9113 §5.2). A
//! peer that keeps its window shut and answers pings has no read or write pending at the
//! socket, so the socket's idle timeout never fires, while each of its up to 100 streams holds
//! its response (a segment kept past its eviction, a recording's open file). Here each
//! response body notes when the connection last took from it; [`Sends::stalled`] completes
//! once one has waited the timeout.
//!
//! hyper hands h2 a body's chunk whole once the stream has any send capacity, and h2 queues it
//! whatever the window: a body is given out in pieces of at most [`PIECE`], so that once the
//! stream's send buffer is full hyper stops taking from it and the wait shows, and each piece
//! keeps its body counted as being sent while h2 holds it (the last piece outlives the body,
//! and shares its buffer with the whole response).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// Largest piece of a body handed to hyper at once: under h2's per-stream send buffer (400 KB
/// by default), so a stream whose window is shut leaves its body waiting.
pub(crate) const PIECE: usize = 64 << 10;

/// The response bodies of one connection being sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sends(Arc<Mutex<Vec<Weak<Taken>>>>);

/// When the connection last took from a body.
#[derive(Debug)]
struct Taken(Mutex<Instant>);

impl Taken {
    fn now() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Instant::now())))
    }

    fn at(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

impl Sends {
    /// `body`, noting each time the connection takes from it.
    pub(crate) fn watch(&self, body: Body) -> Body {
        let taken = Taken::now();
        let mut bodies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Bodies sent (and dropped) leave only their dead handles: at most 100 live at once.
        bodies.retain(|body| body.strong_count() > 0);
        bodies.push(Arc::downgrade(&taken));
        Body::new(Watched { inner: body, rest: None, taken })
    }

    /// The longest any body being sent has waited since the connection last took from it.
    fn longest_wait_since(&self) -> Option<Instant> {
        let bodies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.iter().filter_map(Weak::upgrade).map(|taken| taken.at()).min()
    }

    /// Completes once a body has waited `timeout` without the connection taking from it.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            let since = self.longest_wait_since().unwrap_or_else(Instant::now);
            tokio::time::sleep_until(since + timeout).await;
            if self.longest_wait_since().is_some_and(|since| since.elapsed() >= timeout) {
                return;
            }
        }
    }
}

/// A body that notes when it is polled and gives its data in pieces of at most [`PIECE`].
struct Watched {
    inner: Body,
    /// What is left of the data frame being given out.
    rest: Option<Bytes>,
    taken: Arc<Taken>,
}

impl Watched {
    /// The next piece of `data`, keeping what is left; the piece holds the body's clock.
    fn piece(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > PIECE {
            self.rest = Some(data.split_off(PIECE));
        }
        Frame::data(Bytes::from_owner(Piece { data, _taken: Arc::clone(&self.taken) }))
    }
}

/// A piece of a body as h2 holds it until sent: while it does, the body counts as being
/// sent, with the time the connection last took from it.
struct Piece {
    data: Bytes,
    _taken: Arc<Taken>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.taken.note();
        if let Some(rest) = this.rest.take() {
            return Poll::Ready(Some(Ok(this.piece(rest))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_data() {
                Ok(data) => this.piece(data),
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |rest| rest.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_body_is_given_whole_in_pieces_with_its_length() {
        let data = Bytes::from((0..PIECE * 2 + 10).map(|i| i as u8).collect::<Vec<_>>());
        let body = Sends::default().watch(Body::from(data.clone()));
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut body = std::pin::pin!(body);
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            pieces.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [PIECE, PIECE, 10]);
        assert_eq!(pieces.concat(), data);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_taken_for_the_timeout_is_a_stall_and_a_sent_one_is_not() {
        let sends = Sends::default();
        let timeout = Duration::from_secs(30);
        // Nothing being sent: never stalled.
        assert!(tokio::time::timeout(timeout * 3, sends.stalled(timeout)).await.is_err());
        let sent = sends.watch(Body::from("sent"));
        let _ = sent.collect().await.unwrap();
        assert!(tokio::time::timeout(timeout * 3, sends.stalled(timeout)).await.is_err());
        // A piece the connection holds (the body is gone) counts until it is dropped.
        let mut last = Box::pin(sends.watch(Body::from("last piece")));
        let piece = last.frame().await.unwrap().unwrap().into_data().unwrap();
        drop(last);
        assert!(tokio::time::timeout(timeout * 2, sends.stalled(timeout)).await.is_ok());
        drop(piece);
        assert!(tokio::time::timeout(timeout * 3, sends.stalled(timeout)).await.is_err());
        // A body taken from now and then is not stalled; one left alone is, at the timeout.
        let mut slow = std::pin::pin!(sends.watch(Body::from(vec![0; PIECE * 3])));
        let started = Instant::now();
        let stalled = sends.stalled(timeout);
        let mut stalled = std::pin::pin!(stalled);
        for _ in 0..3 {
            assert!(tokio::time::timeout(timeout / 2, stalled.as_mut()).await.is_err());
            let _ = slow.frame().await;
        }
        stalled.await;
        assert_eq!(started.elapsed(), timeout / 2 * 3 + timeout);
    }
}
