//! Response bodies of the store's [`Pieces`]: an fMP4 segment or part is its fragments, sent
//! one after the other with their total length, never joined by a copy.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use stream_store::Pieces;

/// The body of `pieces`, with a `Content-Length`.
pub(crate) fn body(pieces: Pieces) -> Body {
    match pieces.as_slice() {
        [one] => Body::from(one.clone()),
        _ => {
            let left = pieces.len() as u64;
            Body::new(PiecesBody { pieces, next: 0, left })
        }
    }
}

/// Sends each piece as a frame.
struct PiecesBody {
    pieces: Pieces,
    next: usize,
    /// Bytes not sent yet.
    left: u64,
}

impl http_body::Body for PiecesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let Some(piece) = this.pieces.as_slice().get(this.next).cloned() else {
            return Poll::Ready(None);
        };
        this.next += 1;
        this.left -= piece.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.pieces.as_slice().len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn pieces_go_out_in_order_with_their_length() {
        let pieces = Pieces::from(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        let body = body(pieces);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"abcde"));
    }
}
