//! The idle timeout of an HTTP connection: once a read or a write has been pending for the
//! timeout, the connection's next read or write fails with `TimedOut`, which ends it (idle
//! keep-alive connections, viewers that stopped reading). Hyper keeps a read pending while
//! it writes a response, to notice a client going away: a write that goes through counts
//! that read from then, so a long response that keeps moving (a recording downloaded whole
//! over minutes) is not idle, where `tokio-io-timeout`, which this replaces, cut it. While a
//! request waits for the stream ([`Answering`]: a blocked playlist reload or a hinted part
//! waits up to three target durations, 30 s and more with 10 s segments), a pending read is
//! not idleness but the client waiting. Only those bounded waits hold it off: a request
//! whose body stalls, or a handler that takes long, still counts as idle.
//!
//! One timer per connection, moved only when it fires: an operation that goes pending notes
//! when (a clock read), and the timer, set for the earliest pending operation's deadline or
//! earlier, re-arms itself to the right deadline when it fires early. Resetting a timer at
//! every read and write (as `tokio-io-timeout` does) touched the runtime's timer for every
//! request on a keep-alive connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests of a connection waiting for the stream, shared with its [`IdleTimeout`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Answering(Arc<AtomicUsize>);

impl Answering {
    /// A request waits (a bounded wait) until the guard is dropped.
    pub(crate) fn begin(&self) -> Answer {
        self.0.fetch_add(1, Ordering::Relaxed);
        Answer(Arc::clone(&self.0))
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// See [`Answering::begin`].
#[derive(Debug)]
pub(crate) struct Answer(Arc<AtomicUsize>);

impl Drop for Answer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `S` with the idle timeout.
#[derive(Debug)]
pub(crate) struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    /// While a request waits for the stream, a pending read does not count.
    answering: Answering,
    /// Since when a read has been pending, if one is.
    read_since: Option<Instant>,
    /// Since when a write (or flush, or shutdown) has been pending, if one is.
    write_since: Option<Instant>,
    /// Fires at or before the earliest pending operation's deadline.
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    /// `inner`, whose reads and writes may each stay pending for at most `timeout`; reads
    /// while `answering` has a request waiting do not count.
    pub(crate) fn new(inner: S, timeout: Duration, answering: Answering) -> Self {
        let timer = Box::pin(tokio::time::sleep(timeout));
        Self { inner, timeout, answering, read_since: None, write_since: None, timer }
    }

    /// After an operation went pending: an error once the earliest pending one has been
    /// pending for the timeout, else the timer armed to wake the task by then.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(since) = self.read_since.into_iter().chain(self.write_since).min() else {
            return Ok(());
        };
        let deadline = since + self.timeout;
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            // Fired for an operation that has finished since; a later one is pending.
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }
}

/// Notes when an operation went pending, or forgets it once it completed.
fn track<T>(since: &mut Option<Instant>, result: &Poll<T>) {
    match result {
        Poll::Pending => {
            since.get_or_insert_with(Instant::now);
        }
        Poll::Ready(_) => *since = None,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if result.is_pending() && this.answering.any() {
            // The client waits for an answer: counted from the next read after it.
            this.read_since = None;
        } else {
            track(&mut this.read_since, &result);
        }
        if result.is_pending() {
            this.check(cx)?;
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> IdleTimeout<S> {
    fn write_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let result = op(Pin::new(&mut self.inner), cx);
        track(&mut self.write_since, &result);
        if result.is_pending() {
            self.check(cx)?;
        }
        result
    }

    /// After a write: bytes that went out mean the response moves, so the read pending
    /// meanwhile is the client listening, not idleness.
    fn wrote(&mut self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) && self.read_since.is_some() {
            self.read_since = Some(Instant::now());
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.write_op(cx, |inner, cx| inner.poll_write(cx, buf));
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.write_op(cx, |inner, cx| inner.poll_write_vectored(cx, bufs));
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_op(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_op(cx, AsyncWrite::poll_shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// `op`'s error, which must come within `limit` (time is paused: this is instant).
    async fn fails_within<T: std::fmt::Debug>(
        limit: Duration,
        op: impl Future<Output = io::Result<T>>,
    ) -> io::Error {
        match tokio::time::timeout(limit, op).await {
            Ok(result) => result.unwrap_err(),
            Err(_) => panic!("still pending after {limit:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_pending_for_the_timeout_fails() {
        let (client, server) = duplex(64);
        let mut server = IdleTimeout::new(server, TIMEOUT, Answering::default());
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let error = fails_within(TIMEOUT * 2, server.read(&mut byte)).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_pending_while_a_request_is_answered_does_not_count() {
        let (client, server) = duplex(64);
        let answering = Answering::default();
        let mut server = IdleTimeout::new(server, TIMEOUT, answering.clone());
        let mut byte = [0u8; 1];
        // A blocked reload answered after three times the timeout: the read stays pending.
        let answer = answering.begin();
        let waited = tokio::time::timeout(TIMEOUT * 3, server.read(&mut byte)).await;
        assert!(waited.is_err(), "{waited:?}");
        drop(answer);
        // Answered: idle from the next read on.
        let started = Instant::now();
        let error = fails_within(TIMEOUT * 2, server.read(&mut byte)).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
        drop(client);
    }

    /// A response that keeps moving for longer than the timeout, while the client sends
    /// nothing (a whole recording downloaded over HTTP/1.1), is not idle.
    #[tokio::test(start_paused = true)]
    async fn a_long_response_that_moves_is_not_idle() {
        let (mut client, server) = duplex(1024);
        let mut server = IdleTimeout::new(server, TIMEOUT, Answering::default());
        let mut byte = [0u8; 1];
        // The read hyper keeps pending, polled once so it counts from now.
        let pending = tokio::time::timeout(Duration::from_millis(1), server.read(&mut byte));
        assert!(pending.await.is_err());
        for _ in 0..90 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            server.write_all(&[7; 512]).await.unwrap();
            client.read_exact(&mut [0; 512]).await.unwrap();
        }
        // 90 s of sending, three timeouts: still open; idle from the last write on.
        let started = Instant::now();
        let error = fails_within(TIMEOUT * 2, server.read(&mut byte)).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_in_use_is_never_idle() {
        let (mut client, server) = duplex(64);
        let mut server = IdleTimeout::new(server, TIMEOUT, Answering::default());
        // A byte every 20 s for two minutes: each read waits less than the timeout, while
        // the timer set at the start (and each one after it) fires with a read pending.
        let writer = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut byte = [0u8; 1];
        for _ in 0..6 {
            server.read_exact(&mut byte).await.unwrap();
        }
        let _client = writer.await.unwrap();
        // Then nothing: 30 s after the last byte.
        let started = Instant::now();
        let error = fails_within(TIMEOUT * 2, server.read(&mut byte)).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_timeout() {
        let (mut client, server) = duplex(64);
        let mut server = IdleTimeout::new(server, TIMEOUT, Answering::default());
        // The peer reads 64 bytes after 10 s, then never again.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let mut some = [0u8; 64];
            client.read_exact(&mut some).await.unwrap();
            client
        });
        let started = Instant::now();
        let error = fails_within(TIMEOUT * 2, server.write_all(&[0; 1000])).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // Pending from 0 to 10 s, then from 10 s (the second write) to 40 s.
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        assert!(server.is_write_vectored() == server.inner.is_write_vectored());
        drop(reader.await.unwrap());
    }
}
