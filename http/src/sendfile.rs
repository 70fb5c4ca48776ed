//! Segment responses sent with `sendfile(2)` from their memory file, through an unmodified
//! hyper, which can only write bodies from memory (hyper issue #3026).
//!
//! A response to be sent from a file gets a [`SendfileBody`]: as hyper polls it, it queues
//! the file range on its connection's [`SendfileQueue`], then yields placeholder chunks (of
//! one shared, never-written, zero-page allocation) whose lengths add up to the range's.
//! Hyper frames them as any body (Content-Length from the size hint) and passes them down,
//! with the head, in vectored writes to the connection's [`SendfileStream`]: which writes
//! ordinary chunks as they are and replaces each placeholder run by `sendfile` from the
//! front of the queue. Hyper writes a connection's responses in order and a placeholder
//! never reaches the socket, so the queue and the writes stay in step. Hyper buffers a
//! response's head only once the previous response is all written, so at most one file is
//! queued at a time, and anything else is an error that closes the connection, never wrong
//! bytes on the wire: a placeholder with no file queued, a file queued while another still
//! is (a body polled and dropped unsent), or a write without placeholders while a file is
//! queued (the placeholders were copied, as hyper's flattening write strategy would).
//! This relies on hyper queueing body chunks for vectored writes, which it does for any
//! IO that is write-vectored (ours is, always); the tests check every byte served.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use stream_store::MemfdSegment;

/// Largest placeholder chunk: one allocation of zeros, never touched (its pages are never
/// faulted in), shared by every response. A segment larger than this is several chunks.
const PLACEHOLDER_LEN: usize = 4 << 20;

fn placeholder() -> &'static Bytes {
    static PLACEHOLDER: OnceLock<Bytes> = OnceLock::new();
    PLACEHOLDER.get_or_init(|| Bytes::from(vec![0; PLACEHOLDER_LEN]))
}

fn is_placeholder(slice: &[u8]) -> bool {
    let range = placeholder().as_ptr_range();
    !slice.is_empty() && range.contains(&slice.as_ptr())
}

/// The file range a connection's current response is to send, if any.
#[derive(Debug, Clone, Default)]
pub struct SendfileQueue(Arc<Mutex<Option<Pending>>>);

#[derive(Debug)]
struct Pending {
    segment: Arc<MemfdSegment>,
    /// Next file offset to send.
    offset: u64,
    remaining: usize,
}

impl SendfileQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A response body sent from `segment`'s memory file by the connection's [`SendfileStream`].
#[derive(Debug)]
pub struct SendfileBody {
    queue: SendfileQueue,
    /// Taken when queued (at the first poll: a body hyper never polls, as for HEAD, never
    /// queues anything).
    segment: Option<Arc<MemfdSegment>>,
    /// Body bytes not yet yielded.
    remaining: usize,
}

impl SendfileBody {
    /// The body for `segment`, on the connection of `queue`.
    pub fn new(queue: SendfileQueue, segment: Arc<MemfdSegment>) -> Self {
        let remaining = stream_store::SegmentFile::len(&*segment);
        Self { queue, segment: Some(segment), remaining }
    }
}

impl Body for SendfileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(segment) = self.segment.take()
            && self.remaining > 0
        {
            let offset = segment.offset();
            let remaining = self.remaining;
            let mut queued = self.queue.lock();
            if queued.is_some() {
                return Poll::Ready(Some(Err(io::Error::other(
                    "a segment file response began before the previous one was sent",
                ))));
            }
            *queued = Some(Pending { segment, offset, remaining });
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(PLACEHOLDER_LEN);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(placeholder().slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

/// Bytes read from a memory file per frame of a [`CopyBody`]: the size of one `sendfile`
/// step, in buffers the allocator hands out again, not one the size of the segment.
const COPY_CHUNK: usize = 64 << 10;

/// A response body read from `segment`'s memory file as the connection takes it, for
/// connections that cannot send from a file (TLS, HTTP/2): one copy, as a heap segment's
/// response costs once TLS encrypts it, in [`COPY_CHUNK`] frames.
#[derive(Debug)]
pub struct CopyBody {
    segment: Arc<MemfdSegment>,
    /// Bytes yielded.
    sent: usize,
    len: usize,
}

impl CopyBody {
    /// The body for `segment`.
    pub fn new(segment: Arc<MemfdSegment>) -> Self {
        let len = stream_store::SegmentFile::len(&*segment);
        Self { segment, sent: 0, len }
    }
}

impl Body for CopyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let n = (this.len - this.sent).min(COPY_CHUNK);
        if n == 0 {
            return Poll::Ready(None);
        }
        let mut chunk = vec![0; n];
        // A memory file: the read copies from RAM and never blocks.
        let at = this.segment.offset() + this.sent as u64;
        if let Err(e) =
            std::os::unix::fs::FileExt::read_exact_at(this.segment.file(), &mut chunk, at)
        {
            return Poll::Ready(Some(Err(e)));
        }
        this.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.len - self.sent) as u64)
    }
}

/// A TCP connection whose placeholder chunks are sent from the files queued on its
/// [`SendfileQueue`].
#[derive(Debug)]
pub struct SendfileStream {
    stream: TcpStream,
    queue: SendfileQueue,
    /// TCP_CORK is set: from a file response's head to its last byte, so the head and the
    /// file go out in full-sized packets (Nginx's `tcp_nopush`). Without it, on a
    /// TCP_NODELAY socket each 64 KiB that `sendfile` moves leaves as a full packet and a
    /// runt, and the viewer's kernel pays for twice the packets (wrk: a quarter fewer
    /// segment requests/s).
    corked: bool,
}

impl SendfileStream {
    /// Wraps `stream`; responses on it queue their files on the returned queue.
    pub fn new(stream: TcpStream) -> (Self, SendfileQueue) {
        let queue = SendfileQueue::default();
        (Self { stream, queue: queue.clone(), corked: false }, queue)
    }

    fn cork(&mut self, on: bool) {
        if self.corked != on {
            // Only packet sizes depend on it: a failure costs efficiency, not bytes.
            if let Err(e) = rustix::net::sockopt::set_tcp_cork(&self.stream, on) {
                tracing::debug!(error = %e, "cannot set TCP_CORK");
            }
            self.corked = on;
        }
    }

    /// Sends up to `count` bytes from the front of the queue; also whether that finished
    /// the front file.
    fn poll_sendfile(&self, cx: &mut Context<'_>, count: usize) -> Poll<io::Result<(usize, bool)>> {
        let mut queue = self.queue.lock();
        let Some(front) = queue.as_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a placeholder body chunk with no segment file queued",
            )));
        };
        let count = count.min(front.remaining);
        let sent = loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut offset = front.offset;
            let result = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, front.segment.file(), Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match result {
                Ok(0) if count > 0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "segment file ended early",
                    )));
                }
                Ok(sent) => break sent,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        front.offset += sent as u64;
        front.remaining -= sent;
        let finished = front.remaining == 0;
        if finished {
            *queue = None;
        }
        Poll::Ready(Ok((sent, finished)))
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One run per call, ordinary chunks or placeholders; the caller comes back for
        // the rest, as after any partial write.
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => &bufs[first..],
            None => return Poll::Ready(Ok(0)),
        };
        if is_placeholder(&bufs[0]) {
            let run = bufs.iter().take_while(|b| is_placeholder(b)).map(|b| b.len()).sum();
            self.cork(true);
            let (sent, finished) = ready!(self.poll_sendfile(cx, run))?;
            if finished {
                self.cork(false);
            }
            Poll::Ready(Ok(sent))
        } else {
            let end = bufs.iter().position(|b| is_placeholder(b));
            if end.is_none() && self.queue.lock().is_some() {
                return Poll::Ready(Err(io::Error::other(
                    "a segment file is queued but its placeholder bytes are not being written",
                )));
            }
            if end.is_some() {
                // A file response's head: held back until its file follows.
                self.cork(true);
            }
            let end = end.unwrap_or(bufs.len());
            Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..end])
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use packager::Segment;
    use stream_store::{SegmentBody, SegmentFiles as _, StoreConfig, StreamStore};
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;
    use stream_store::{MemfdSegment, MemfdSegments, SegmentFileWriter as _};

    /// Bytes that differ at every offset modulo a large prime, so a shifted or zeroed range
    /// cannot compare equal.
    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len).map(|i| ((i % 251) as u8).wrapping_add(seed)).collect::<Vec<_>>().into()
    }

    /// Reads one response: status line, Content-Length and (unless `head`) the body.
    async fn response(
        reader: &mut BufReader<TcpStream>,
        head: bool,
    ) -> (String, usize, Option<Vec<u8>>) {
        let mut status = String::new();
        reader.read_line(&mut status).await.unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        if head {
            return (status, length, None);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();
        (status, length, Some(body))
    }

    /// Through the router only, and with [`crate::HlsDirect`] as the server runs (GETs there,
    /// HEADs through the router, on one connection).
    #[tokio::test]
    async fn pipelined_responses_from_memory_files_are_byte_exact() {
        pipelined_responses(false).await;
        pipelined_responses(true).await;
    }

    async fn pipelined_responses(direct: bool) {
        let store = StreamStore::with_segment_files(
            StoreConfig::default(),
            MemfdSegments::ignoring_huge_pages(),
        );
        let store = Arc::new(store);
        let publication = store.begin("cam", 1, 10).unwrap();
        // A small one, a typical one, and one of several placeholder chunks.
        let segments =
            [pattern(188 * 3, 1), pattern(1_500_000, 2), pattern(PLACEHOLDER_LEN + 18_800, 3)];
        for data in &segments {
            let segment = Segment {
                data: data.clone(),
                sink_len: 0,
                sink_id: 0,
                duration: Duration::from_secs(2),
                discontinuity: false,
                independent: true,
                start: 0,
            };
            publication.push(segment, SystemTime::UNIX_EPOCH);
        }
        // Fetched twice, segments move to the stream's memory file; 1-1 moves during the
        // pipeline below, so one connection sends it from the heap and then from the file.
        for file in ["1-0.ts", "1-2.ts"] {
            assert!(matches!(store.segment("cam", file), Some(SegmentBody::Memory(_))));
            assert!(matches!(store.segment("cam", file), Some(SegmentBody::File(_))));
        }
        let in_file = |file| matches!(store.segment("cam", file), Some(SegmentBody::File(_)));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = crate::HttpLimits::default();
        let (router, hls_direct) =
            crate::router_and_direct(Arc::clone(&store), crate::tests::options());
        let direct = direct.then_some(hls_direct);
        let server = crate::serve_router(
            listener,
            rtmp_hls_threads::Spread::here(),
            router,
            direct,
            limits,
            std::future::pending(),
            Duration::ZERO,
        );
        tokio::spawn(server);

        let mut client = TcpStream::connect(addr).await.unwrap();
        // All at once: hyper answers them in order on the one connection.
        let requests = [
            ("GET", "1-1.ts"),
            ("HEAD", "1-0.ts"),
            ("GET", "1-2.ts"),
            ("GET", "index.m3u8"),
            ("GET", "1-0.ts"),
            ("GET", "1-9.ts"),
            ("GET", "1-1.ts"),
        ];
        let mut batch = String::new();
        for (method, file) in requests {
            batch.push_str(&format!("{method} /hls/cam/{file} HTTP/1.1\r\nHost: test\r\n\r\n"));
        }
        client.write_all(batch.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(client);
        for (method, file) in requests {
            let (status, length, body) = response(&mut reader, method == "HEAD").await;
            let expected = match file {
                "1-0.ts" => Some(&segments[0]),
                "1-1.ts" => Some(&segments[1]),
                "1-2.ts" => Some(&segments[2]),
                _ => None,
            };
            match (file, expected) {
                ("index.m3u8", _) => assert!(status.contains(" 200 "), "{status}"),
                (_, Some(expected)) => {
                    assert!(status.contains(" 200 "), "{method} {file}: {status}");
                    assert_eq!(length, expected.len(), "{method} {file}");
                    if let Some(body) = body {
                        assert!(body == expected[..], "{method} {file}: body differs");
                    }
                }
                (_, None) => assert!(status.contains(" 404 "), "{file}: {status}"),
            }
        }
        assert!(in_file("1-1.ts"), "moved at its second fetch");
    }

    /// Both ends of a real loopback connection, the server's wrapped.
    async fn connection() -> (SendfileStream, SendfileQueue, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (stream, queue) = SendfileStream::new(server);
        (stream, queue, client)
    }

    fn memfd_segment(data: &[u8]) -> Arc<MemfdSegment> {
        let mut writer = MemfdSegments::ignoring_huge_pages().open().unwrap();
        writer.write(&[Bytes::copy_from_slice(data)]).unwrap()
    }

    async fn first_frame(body: &mut SendfileBody) -> Result<Frame<Bytes>, io::Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await.unwrap()
    }

    #[tokio::test]
    async fn a_copy_body_reads_the_file_in_chunks() {
        use http_body_util::BodyExt as _;
        let data = pattern(3 * COPY_CHUNK + 1000, 7);
        let mut body = CopyBody::new(memfd_segment(&data));
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        assert_eq!(
            frames.iter().map(Bytes::len).collect::<Vec<_>>(),
            [COPY_CHUNK, COPY_CHUNK, COPY_CHUNK, 1000]
        );
        assert!(frames.concat() == data, "the segment's bytes");
    }

    #[tokio::test]
    async fn placeholders_never_reach_the_wire_as_zeros() {
        // Nothing queued: an error, not 100 zero bytes.
        let (mut stream, queue, mut client) = connection().await;
        let error = stream.write(&placeholder()[..100]).await.unwrap_err();
        assert!(error.to_string().contains("no segment file queued"), "{error}");

        // A file queued, then a write without its placeholders (as if hyper had copied
        // them): an error.
        let mut body = SendfileBody::new(queue.clone(), memfd_segment(&[9; 300]));
        let frame = first_frame(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(frame.len(), 300);
        let error = stream.write(b"0000").await.unwrap_err();
        assert!(error.to_string().contains("not being written"), "{error}");

        // A second file response while the first is queued (a body polled, then dropped
        // unsent): an error on the second body, not the first file's bytes for it.
        let mut second = SendfileBody::new(queue.clone(), memfd_segment(&[8; 10]));
        let error = first_frame(&mut second).await.unwrap_err();
        assert!(error.to_string().contains("before the previous one was sent"), "{error}");

        // The queued file itself goes out intact, then ordinary writes work again.
        stream.write_all(&frame).await.unwrap();
        assert!(queue.lock().is_none(), "sent and dequeued");
        stream.write_all(b"tail").await.unwrap();
        drop(stream);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let mut expected = vec![9; 300];
        expected.extend_from_slice(b"tail");
        assert!(received == expected, "{} bytes received", received.len());
    }
}
