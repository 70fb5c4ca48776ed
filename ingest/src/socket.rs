//! A publisher's connection: plain TCP (RTMP) or TLS over TCP (RTMPS), read and written the
//! same way; the TCP socket underneath stays reachable for its options.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Bytes one read takes at most. Merged reads gather a pause's worth between reads and
/// wake at most [`crate::merged_read::MAX_LOW_WATER`] (128 KiB, half of it) in, so at
/// encoder bit rates a read rarely fills it, and a burst (a keyframe sent at once) takes a
/// few reads. A read that fills it is taken for a backlog. One buffer per connection
/// thread, not per connection.
pub(crate) const READ_BUFFER: usize = 256 << 10;

thread_local! {
    /// The read buffer of every connection this thread runs: a read's bytes are handled
    /// before the next read (the session copies what it keeps), so a connection holds no
    /// buffer of its own, and one that has sent nothing costs no read buffer.
    static READ: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

/// An accepted RTMP or RTMPS connection.
#[derive(Debug)]
pub(crate) enum Socket {
    /// RTMP.
    Plain(TcpStream),
    /// RTMPS, its TLS handshake done (boxed: rustls's state is ~1 KB).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Waits for bytes, reads up to [`READ_BUFFER`] of them into this thread's read buffer
    /// and hands them to `take` at once; `None` when the peer closed the connection.
    pub(crate) async fn read_with<T>(
        &mut self,
        take: impl FnOnce(&[u8]) -> T,
    ) -> io::Result<Option<T>> {
        let mut take = Some(take);
        std::future::poll_fn(|cx| {
            READ.with_borrow_mut(|buf| {
                let mut read = ReadBuf::new(buf);
                ready!(Pin::new(&mut *self).poll_read(cx, &mut read))?;
                let bytes = read.filled();
                Poll::Ready(Ok(match take.take() {
                    Some(take) if !bytes.is_empty() => Some(take(bytes)),
                    _ => None,
                }))
            })
        })
        .await
    }

    /// Reads what is queued now, without waiting for the runtime to report the socket
    /// readable, and hands it to `take` with when its last bytes arrived (if the socket
    /// stamps arrivals); `Ok(None)` when the peer closed, `WouldBlock` when nothing is queued
    /// (and always over TLS).
    pub(crate) fn read_queued<T>(
        &mut self,
        take: impl FnOnce(&[u8], Option<SystemTime>) -> T,
    ) -> io::Result<Option<T>> {
        let Self::Plain(tcp) = self else { return Err(io::ErrorKind::WouldBlock.into()) };
        READ.with_borrow_mut(|buf| {
            let (n, arrived) = crate::low_water::recv_queued(tcp, buf)?;
            Ok((n > 0).then(|| take(&buf[..n], arrived)))
        })
    }

    /// Whether the kernel sees the RTMP bytes themselves (no TLS records around them): the
    /// receive low-water mark of merged reads counts those bytes.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Self::Plain(_))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Reads of a real connection: at most [`READ_BUFFER`] bytes each, every byte in order,
    /// and `None` (without calling `take`) once the peer closed.
    #[tokio::test]
    async fn reads_hand_over_at_most_a_buffer_and_end_at_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut socket = Socket::Plain(listener.accept().await.unwrap().0);
        let sent: Vec<u8> = (0..3 * READ_BUFFER + 100).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut received = Vec::new();
        let mut reads = 0;
        while let Some(len) = socket
            .read_with(|bytes| {
                received.extend_from_slice(bytes);
                bytes.len()
            })
            .await
            .unwrap()
        {
            assert!(len > 0 && len <= READ_BUFFER, "a read of {len} bytes");
            reads += 1;
        }
        assert_eq!(received, sent);
        assert!(reads >= 4, "{reads} reads for more than three buffers");
        let mut called = false;
        assert_eq!(socket.read_with(|_| called = true).await.unwrap(), None);
        assert!(!called);
    }
}
