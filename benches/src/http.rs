//! A minimal HTTP/1.1 client for players' GETs (RFC 9112): one keep-alive connection per
//! viewer, `Content-Length` or chunked bodies, reconnect when the server closes. It sends
//! GET only and reads bodies into a caller's buffer (or discards them), so a viewer costs a
//! socket and two small buffers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Largest response head accepted; HLS servers send a few hundred bytes.
const MAX_HEAD: usize = 16 << 10;
/// Largest body accepted: an HLS segment at broadcast bitrates is a few MB.
const MAX_BODY: u64 = 256 << 20;
/// Read size; the unread rest of a read is kept for the next response.
const READ_SIZE: usize = 64 << 10;

/// Why a request failed, as an error kind of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpError {
    Connect,
    Timeout,
    /// Reset or closed mid-response.
    Io,
    /// A response this client cannot read (or larger than its limits).
    Malformed,
}

impl HttpError {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Connect => "http_connect",
            Self::Timeout => "http_timeout",
            Self::Io => "http_io",
            Self::Malformed => "http_malformed",
        }
    }
}

/// What happened to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Body length in bytes.
    pub(crate) length: u64,
    /// The first body byte (an MPEG-TS segment starts with the sync byte 0x47).
    pub(crate) first_byte: Option<u8>,
}

/// One keep-alive connection to `addr`.
#[derive(Debug)]
pub(crate) struct Client {
    addr: String,
    host: String,
    stream: Option<TcpStream>,
    /// Bytes read past the previous response (pipelining never happens, but a server may send
    /// a response early).
    buf: Vec<u8>,
}

/// How a response body is framed.
#[derive(Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes (HTTP/1.0 style).
    Close,
}

impl Client {
    /// `host` is `host[:port]` as in the URL; connections go to it.
    pub(crate) fn new(host: &str) -> Self {
        let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
        Self { addr, host: host.to_owned(), stream: None, buf: Vec::with_capacity(READ_SIZE) }
    }

    /// GETs `path` under `limit`. The body goes to `body` when given (cleared first),
    /// otherwise it is read and dropped.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        body: Option<&mut Vec<u8>>,
        limit: Duration,
    ) -> Result<Response, HttpError> {
        let result = timeout(limit, self.exchange(path, body)).await;
        let result = result.unwrap_or(Err(HttpError::Timeout));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        path: &str,
        mut body: Option<&mut Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n", self.host);
        // A kept-alive connection the server has since closed fails before any response byte:
        // that one failure is retried on a new connection.
        let reused = self.stream.is_some();
        match self.attempt(&request, body.as_deref_mut()).await {
            Err(Retry::Fresh) if reused => {
                self.stream = None;
                self.attempt(&request, body).await.map_err(Retry::error)
            }
            result => result.map_err(Retry::error),
        }
    }

    async fn attempt(
        &mut self,
        request: &str,
        body: Option<&mut Vec<u8>>,
    ) -> Result<Response, Retry> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await.map_err(|_| Retry::Connect)?;
            stream.set_nodelay(true).map_err(|_| Retry::Connect)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or(Retry::Connect)?;
        stream.write_all(request.as_bytes()).await.map_err(|_| Retry::Fresh)?;
        let (status, framing, close) = read_head(stream, &mut self.buf).await?;
        let response = read_body(stream, &mut self.buf, framing, status, body).await?;
        if close || matches!(framing, Framing::Close) {
            self.stream = None;
        }
        Ok(response)
    }
}

/// Internal failure: `Fresh` is a kept-alive connection that died before answering.
enum Retry {
    Fresh,
    Connect,
    Failed(HttpError),
}

impl Retry {
    fn error(self) -> HttpError {
        match self {
            Self::Fresh => HttpError::Io,
            Self::Connect => HttpError::Connect,
            Self::Failed(e) => e,
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HttpError> {
    // Into spare capacity: nothing is zeroed or copied twice.
    buf.reserve(READ_SIZE);
    stream.read_buf(buf).await.map_err(|_| HttpError::Io)
}

async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, Framing, bool), Retry> {
    let mut got_any = !buf.is_empty();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Retry::Failed(HttpError::Malformed));
        }
        match fill(stream, buf).await {
            Ok(0) | Err(_) if !got_any => return Err(Retry::Fresh),
            Ok(0) | Err(_) => return Err(Retry::Failed(HttpError::Io)),
            Ok(_) => got_any = true,
        }
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Retry::Failed(HttpError::Malformed))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or(Retry::Failed(HttpError::Malformed))?;
    let mut framing = Framing::Close;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = value.parse().map_err(|_| Retry::Failed(HttpError::Malformed))?;
            framing = Framing::Length(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    buf.drain(..end);
    Ok((status, framing, close))
}

/// Moves up to `limit` buffered bytes into the body; returns how many.
fn consume(
    buf: &mut Vec<u8>,
    limit: u64,
    body: &mut Option<&mut Vec<u8>>,
    first: &mut Option<u8>,
) -> u64 {
    let n = (buf.len() as u64).min(limit) as usize;
    if n > 0 {
        first.get_or_insert(buf[0]);
        if let Some(body) = body.as_deref_mut() {
            body.extend_from_slice(&buf[..n]);
        }
        buf.drain(..n);
    }
    n as u64
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
    status: u16,
    mut body: Option<&mut Vec<u8>>,
) -> Result<Response, Retry> {
    if let Some(body) = body.as_deref_mut() {
        body.clear();
    }
    let failed = Retry::Failed;
    let mut first = None;
    let mut length = 0u64;
    match framing {
        Framing::Length(len) => {
            if len > MAX_BODY {
                return Err(failed(HttpError::Malformed));
            }
            while length < len {
                if buf.is_empty() && fill(stream, buf).await.map_err(failed)? == 0 {
                    return Err(failed(HttpError::Io));
                }
                length += consume(buf, len - length, &mut body, &mut first);
            }
        }
        Framing::Close => loop {
            length += consume(buf, MAX_BODY - length, &mut body, &mut first);
            if length >= MAX_BODY {
                return Err(failed(HttpError::Malformed));
            }
            if fill(stream, buf).await.map_err(failed)? == 0 {
                break;
            }
        },
        Framing::Chunked => loop {
            let line_end = loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                if buf.len() > MAX_HEAD || fill(stream, buf).await.map_err(failed)? == 0 {
                    return Err(failed(HttpError::Malformed));
                }
            };
            let size_text = std::str::from_utf8(&buf[..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size =
                u64::from_str_radix(size_text, 16).map_err(|_| failed(HttpError::Malformed))?;
            buf.drain(..line_end + 2);
            if length + size > MAX_BODY {
                return Err(failed(HttpError::Malformed));
            }
            // The chunk and its CRLF (after the last chunk: the empty trailer's CRLF).
            let mut left = size;
            while left > 0 {
                if buf.is_empty() && fill(stream, buf).await.map_err(failed)? == 0 {
                    return Err(failed(HttpError::Io));
                }
                let n = consume(buf, left, &mut body, &mut first);
                left -= n;
                length += n;
            }
            while buf.len() < 2 {
                if fill(stream, buf).await.map_err(failed)? == 0 {
                    return Err(failed(HttpError::Io));
                }
            }
            buf.drain(..2);
            if size == 0 {
                break;
            }
        },
    }
    Ok(Response { status, length, first_byte: first })
}

/// Splits `http://host[:port]/path` into host and path.
pub(crate) fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on one connection with the next canned response,
    /// then closes.
    async fn serve(responses: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            for response in responses {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                socket.write_all(response).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn content_length_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let mut client = Client::new(&addr);
        let limit = Duration::from_secs(5);
        let mut body = Vec::new();
        let r = client.get("/a", Some(&mut body), limit).await.unwrap();
        assert_eq!((r.status, r.length, body.as_slice()), (200, 5, &b"hello"[..]));
        let r = client.get("/b", Some(&mut body), limit).await.unwrap();
        assert_eq!((r.status, r.length, body.as_slice()), (200, 5, &b"abcde"[..]));
        let r = client.get("/c", None, limit).await.unwrap();
        assert_eq!((r.status, r.length), (404, 0));
    }

    #[tokio::test]
    async fn a_closed_keep_alive_connection_is_retried_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let _ = socket.read(&mut buf).await.unwrap();
                socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx").await.unwrap();
                // Then close, as an idle timeout would.
            }
        });
        let mut client = Client::new(&addr);
        let limit = Duration::from_secs(5);
        assert_eq!(client.get("/", None, limit).await.unwrap().first_byte, Some(b'x'));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.get("/", None, limit).await.unwrap().status, 200);
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(split_url("http://h:8080/hls/a.m3u8"), Some(("h:8080", "/hls/a.m3u8")));
        assert_eq!(split_url("https://h/x"), None);
    }
}
