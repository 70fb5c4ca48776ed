//! Nginx-RTMP-compatible HTTP callbacks, for backends that already answer Nginx-RTMP's
//! `on_publish` and `on_publish_done` (nginx-rtmp-module's `ngx_rtmp_notify_module`).
//!
//! Each is an HTTP/1.1 POST of an `application/x-www-form-urlencoded` body (or, with
//! `notify_method get`'s equivalent, a GET with the same fields as the query) with the fields
//! Nginx-RTMP sends: `call` (`publish`, `publish_done`), `app`, `name` (the publishing name
//! without its query), `type` (`live`), `addr` (the client's IP), `clientid`, `flashver`,
//! `swfurl`, `tcurl`, `pageurl`, then the publishing name's query appended as it came.
//! For `on_publish`, a 2xx allows the publish, a 3xx with `Location` renames the stream to
//! the location (as Nginx-RTMP does; an `rtmp://` location, which Nginx-RTMP turns into a
//! relay push, is not supported and keeps the name; a 3xx without one allows, as in
//! Nginx-RTMP), anything else refuses. `on_publish_done`'s answer is ignored. Plain
//! `http://` only, as in Nginx-RTMP.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use rtmp::session::ClientInfo;

/// How long a callback may take, connection included, by default (Nginx-RTMP's
/// `notify_timeout` defaults to 30 s; a publisher waiting that long for an answer gives up).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response head read from a callback backend.
pub const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// Largest response body read (and discarded).
pub const MAX_RESPONSE_BODY: usize = 64 << 10;

/// Whether the hook decides alone or with the key store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HookMode {
    /// The key store authorises, then on_publish must allow too.
    ///
    /// The hook may rename the stream.
    #[default]
    Also,
    /// on_publish alone decides (Nginx-RTMP's model); the key store is not asked.
    ///
    /// The publishing name is the stream name unless the hook renames it.
    Only,
}

/// An `http://host[:port]/path` callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    host: String,
    port: u16,
    path: String,
}

impl FromStr for HookUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // Errors never quote the URL: it may hold a secret (the caller shows it masked).
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            "only http:// callback URLs are supported (as in Nginx-RTMP)".to_owned()
        })?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".to_owned());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse().map_err(|_| "the port is not a number".to_owned())?;
                (host, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        // What hyper will send must parse as a request target now, not at the first publish.
        path.parse::<hyper::Uri>().map_err(|e| format!("bad path: {e}"))?;
        Ok(Self { host: host.to_owned(), port, path: path.to_owned() })
    }
}

impl HookUrl {
    /// `host:port` as a `Host` header and URL authority (IPv6 in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL without its query (which may carry a secret), for logs.
    pub fn redacted(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("http://{}{path}", self.authority())
    }
}

impl fmt::Display for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// How callbacks are sent (Nginx-RTMP's `notify_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HookMethod {
    /// The fields as a form-encoded body (Nginx-RTMP's default).
    #[default]
    Post,
    /// The fields as the URL's query (Nginx-RTMP's `notify_method get`).
    Get,
}

/// Callback settings.
#[derive(Debug, Clone, Default)]
pub struct HookConfig {
    /// Asked before a publish starts.
    pub on_publish: Option<HookUrl>,
    /// Told after a publish ended.
    pub on_publish_done: Option<HookUrl>,
    /// Told after a recording was finished (with its `path`).
    pub on_record_done: Option<HookUrl>,
    /// See [`HOOK_TIMEOUT`].
    pub timeout: Duration,
    /// With or instead of the key store.
    pub mode: HookMode,
    /// POST or GET.
    pub method: HookMethod,
}

/// What a publish callback decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish, under the name given, or the new one.
    Allow(Option<String>),
    /// Refused, with the backend's status code.
    Refuse(u16),
}

/// A callback that could not be made or understood.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
}

/// The Nginx-RTMP fields of a call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `publish`, `publish_done` or `record_done`.
    pub call: &'static str,
    /// RTMP application.
    pub app: &'a str,
    /// The publishing name, query included (its arguments become fields).
    pub name: &'a str,
    /// The client's address.
    pub addr: IpAddr,
    /// The connection id.
    pub client_id: u64,
    /// The client's `connect` properties.
    pub client: &'a ClientInfo,
}

/// What the publisher's arguments may not hold raw in a query (RFC 3986 §3.4: `#` would end
/// it, and what a URI may not hold at all); `%` and `+` stay, so `%XX` and `+` reach the
/// backend as the publisher wrote them.
const NOT_IN_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl Call<'_> {
    /// The form-encoded body: the publishing name's arguments first, then ours. The client
    /// controls the arguments, so none may name one of our fields (such an argument is
    /// dropped), and ours come last: a backend that keeps the first value of a repeated
    /// field and one that keeps the last both see ours.
    pub fn form(&self) -> String {
        let (name, query) = self.name.split_once('?').unwrap_or((self.name, ""));
        let addr = self.addr.to_string();
        let client_id = self.client_id.to_string();
        let fields = [
            ("call", self.call),
            ("app", self.app),
            ("name", name),
            ("type", "live"),
            ("addr", addr.as_str()),
            ("clientid", client_id.as_str()),
            ("flashver", self.client.flash_ver.as_str()),
            ("swfurl", self.client.swf_url.as_str()),
            ("tcurl", self.client.tc_url.as_str()),
            ("pageurl", self.client.page_url.as_str()),
        ];
        let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        // The arguments as they came (tokens keep their %XX and +), as Nginx-RTMP sends them.
        let ours = |argument: &str| {
            let name = argument.split('=').next().unwrap_or_default().replace('+', " ");
            let name = percent_encoding::percent_decode_str(&name).decode_utf8_lossy();
            fields.iter().any(|(field, _)| name.trim().eq_ignore_ascii_case(field))
        };
        // Raw, but nothing that would end or break a URI's query (`#` would cut ours off).
        let arguments = query
            .split('&')
            .filter(|a| !a.is_empty() && !ours(a))
            .map(|a| utf8_percent_encode(a, NOT_IN_QUERY).to_string());
        let fields = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v)));
        arguments.chain(fields).collect::<Vec<_>>().join("&")
    }
}

/// What an `on_publish` answer means.
pub fn verdict(status: u16, location: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Allow(None),
        300..=399 => match location.map(str::trim).filter(|l| !l.is_empty()) {
            Some(location)
                if location.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("rtmp://")) =>
            {
                tracing::warn!(
                    "on_publish redirected to an rtmp:// URL (an Nginx-RTMP relay push), which is \
                     not supported: publishing under the original name"
                );
                Verdict::Allow(None)
            }
            Some(location) => Verdict::Allow(Some(location.to_owned())),
            // Nginx-RTMP goes on with the publish when a redirect names nothing.
            None => Verdict::Allow(None),
        },
        _ => Verdict::Refuse(status),
    }
}

/// Sends the `form` (see [`Call::form`]) to `url` by `method` within `timeout`; the status
/// and `Location` of the answer.
pub async fn send(
    url: &HookUrl,
    method: HookMethod,
    form: String,
    timeout: Duration,
) -> Result<(u16, Option<String>), HookError> {
    tokio::time::timeout(timeout, exchange(url, method, form))
        .await
        .map_err(|_| HookError::Timeout(timeout))?
}

async fn exchange(
    url: &HookUrl,
    method: HookMethod,
    form: String,
) -> Result<(u16, Option<String>), HookError> {
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(HookError::Connect)?;
    let _ = stream.set_nodelay(true);
    exchange_on(stream, url, method, form).await
}

/// The callback's HTTP/1.1 exchange on `io`: the request out, the status and `Location` of
/// the answer back, at most [`MAX_RESPONSE_HEAD`] of head and [`MAX_RESPONSE_BODY`] of body
/// read. Public for the fuzz target that feeds it arbitrary answers.
pub async fn exchange_on<IO>(
    io: IO,
    url: &HookUrl,
    method: HookMethod,
    form: String,
) -> Result<(u16, Option<String>), HookError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD.max(8192))
        .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| HookError::Http(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = match method {
        HookMethod::Post => hyper::Request::post(url.path.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(CONTENT_LENGTH, form.len())
            .body(Full::new(Bytes::from(form))),
        HookMethod::Get => {
            let separator = if url.path.contains('?') { '&' } else { '?' };
            hyper::Request::get(format!("{}{separator}{form}", url.path))
                .body(Full::new(Bytes::new()))
        }
    };
    let mut request = request.map_err(|e| HookError::Http(e.to_string()))?;
    let headers = request.headers_mut();
    let host = url.authority().parse().map_err(|_| HookError::Http("bad host".into()))?;
    headers.insert(HOST, host);
    headers.insert(
        USER_AGENT,
        hyper::header::HeaderValue::from_static(concat!("rtmp-hls/", env!("CARGO_PKG_VERSION"))),
    );
    let response =
        sender.send_request(request).await.map_err(|e| HookError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let location =
        response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Read (a bounded amount of) the body so the backend sees a clean exchange.
    let limited = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BODY);
    let _ = limited.collect().await;
    driver.abort();
    Ok((status, location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url: HookUrl = "http://backend:8000/rtmp/on_publish?x=1".parse().unwrap();
        assert_eq!(url.to_string(), "http://backend:8000/rtmp/on_publish?x=1");
        let url: HookUrl = "http://127.0.0.1".parse().unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        let url: HookUrl = "http://[::1]:9000/a?secret=1".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert_eq!(url.authority(), "[::1]:9000");
        assert_eq!(url.redacted(), "http://[::1]:9000/a");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://:80/",
            "http://u:p@x/",
            "http://x:port/",
            "http://h/a b",
        ] {
            assert!(bad.parse::<HookUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_follow_nginx_rtmp() {
        assert_eq!(verdict(200, None), Verdict::Allow(None));
        assert_eq!(verdict(204, None), Verdict::Allow(None));
        assert_eq!(verdict(302, Some("cam-7")), Verdict::Allow(Some("cam-7".into())));
        assert_eq!(verdict(302, Some("rtmp://relay/live/x")), Verdict::Allow(None));
        assert_eq!(verdict(302, Some("RTMP://relay/live/x")), Verdict::Allow(None));
        assert_eq!(verdict(302, None), Verdict::Allow(None));
        assert_eq!(verdict(403, None), Verdict::Refuse(403));
        assert_eq!(verdict(500, Some("x")), Verdict::Refuse(500));
    }

    #[test]
    fn form_has_nginx_fields_and_query_arguments() {
        let client = ClientInfo {
            tc_url: "rtmp://host/live".into(),
            flash_ver: "FMLE/3.0 (compatible; obs)".into(),
            ..ClientInfo::default()
        };
        let call = Call {
            call: "publish",
            app: "live",
            name: "k3y?user=al+ice&tok=a%2Bb",
            addr: "10.1.2.3".parse().unwrap(),
            client_id: 42,
            client: &client,
        };
        assert_eq!(
            call.form(),
            "user=al+ice&tok=a%2Bb&call=publish&app=live&name=k3y&type=live&addr=10%2E1%2E2%2E3&\
             clientid=42&flashver=FMLE%2F3%2E0%20%28compatible%3B%20obs%29&swfurl=&\
             tcurl=rtmp%3A%2F%2Fhost%2Flive&pageurl="
        );
    }

    /// An `on_publish` call for the publishing name `name` from 10.1.2.3.
    fn publish<'a>(name: &'a str, client: &'a ClientInfo) -> Call<'a> {
        Call {
            call: "publish",
            app: "live",
            name,
            addr: "10.1.2.3".parse().unwrap(),
            client_id: 7,
            client,
        }
    }

    /// `victim?key=K&name=mine`: a backend keeping the last `name` must not see `mine`, nor
    /// one keeping the first; spelled in any case or percent-encoded, the argument goes.
    #[test]
    fn the_client_cannot_set_our_fields() {
        let client = ClientInfo::default();
        for name in [
            "victim?key=K&name=mine",
            "victim?key=K&NAME=mine&call=publish_done",
            "victim?key=K&n%61me=mine&addr=1.2.3.4&&",
            "victim?key=K&name+=mine&app",
        ] {
            let form = publish(name, &client).form();
            assert!(form.starts_with("key=K&call=publish&app=live&name=victim&"), "{form}");
            assert!(!form.contains("mine") && !form.contains("1.2.3.4"), "{form}");
            assert_eq!(form.matches("name=").count(), 1, "{form}");
        }
    }

    /// A `#` (or anything a URI cannot hold) in the arguments is escaped: a GET callback's
    /// URI keeps every field of ours after it.
    #[test]
    fn arguments_cannot_end_the_query() {
        let client = ClientInfo::default();
        let form = publish("cam?x=1#&y=a b\"<>", &client).form();
        assert!(form.starts_with("x=1%23&y=a%20b%22%3C%3E&call=publish&"), "{form}");
        let uri: hyper::Uri = format!("/hook?{form}").parse().unwrap();
        assert_eq!(uri.query(), Some(form.as_str()));
    }

    /// A backend that answers with `head` (raw bytes) to any request.
    async fn backend(head: Vec<u8>) -> HookUrl {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(&head).await;
        });
        format!("http://127.0.0.1:{port}/hook").parse().unwrap()
    }

    fn form() -> String {
        "call=publish&name=x".to_owned()
    }

    #[tokio::test]
    async fn a_redirect_is_read_with_its_location() {
        let url =
            backend(b"HTTP/1.1 302 Found\r\nLocation: cam-2\r\nContent-Length: 0\r\n\r\n".to_vec())
                .await;
        let (status, location) = send(&url, HookMethod::Post, form(), HOOK_TIMEOUT).await.unwrap();
        assert_eq!((status, location.as_deref()), (302, Some("cam-2")));
    }

    #[tokio::test]
    async fn an_oversized_answer_head_is_an_error_not_a_buffer() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert!(head.len() > MAX_RESPONSE_HEAD * 4);
        let url = backend(head).await;
        let error = send(&url, HookMethod::Post, form(), HOOK_TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HookError::Http(_)), "{error}");
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_a_closed_port_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: HookUrl =
            format!("http://{}/hook", listener.local_addr().unwrap()).parse().unwrap();
        let quick = Duration::from_millis(300);
        let error = send(&url, HookMethod::Get, form(), quick).await.unwrap_err();
        assert!(matches!(error, HookError::Timeout(_)), "{error}");
        drop(listener);
        let error = send(&url, HookMethod::Post, form(), HOOK_TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HookError::Connect(_)), "{error}");
    }
}
