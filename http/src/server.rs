//! The HTTP server loop: hyper's HTTP/1.1 and HTTP/2 connection drivers under explicit
//! limits, so slow, silent or greedy clients cannot hold the server.
//!
//! Each connection gets a header read timeout and a header size limit (hyper), and an idle
//! timeout on every read and write (a viewer that reads one byte a second is dropped);
//! connections beyond [`HttpLimits::max_connections`] are closed at once. The plain listener
//! speaks HTTP/1.1 and sends memory-file segments with `sendfile`; the HTTPS listener
//! ([`serve_router_tls`]) speaks HTTP/2 or HTTP/1.1 as ALPN chose, and copies (TLS encrypts
//! in this process).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rtmp_hls_threads::Spread;
use rtmp_hls_tls::ReloadingCert;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::HlsDirect;
use crate::idle::{Answering, IdleTimeout};
use crate::send_progress::Sends;
use crate::sendfile::{SendfileQueue, SendfileStream};

/// Open HTTP connections: each costs a task and a buffer; viewers poll with one keep-alive
/// connection each.
pub const MAX_CONNECTIONS: usize = 8192;
/// Open HTTP connections from one address (an IPv6 /64, see [`auth::address`]): a player
/// uses one to a few; an office or a carrier NAT holds many viewers, but one client must
/// not hold every place.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// Time allowed for a request's headers to arrive (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which nothing can be read or written for this long is closed: idle
/// keep-alive connections, and viewers that stopped reading.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (hyper's buffer; it cannot go below 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// hyper refuses buffers smaller than this.
const HYPER_MIN_BUF: usize = 8192;
/// Requests one HTTP/2 connection may have open at once: a low-latency player holds a
/// blocked playlist request and a part or two; a CDN edge multiplexes more.
pub const MAX_HTTP2_STREAMS: u32 = 100;

/// Limits of the HTTP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per prefix of this many bits.
    pub ipv6_prefix: u8,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Viewers admitted per stream (0: no limit); beyond it new viewers get 503.
    pub max_viewers_per_stream: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            ipv6_prefix: auth::address::IPV6_PREFIX,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_viewers_per_stream: 0,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish
/// for up to `grace`; `direct`, if given, answers the HLS requests it takes without the
/// router (see [`HlsDirect`]).
///
/// Each connection runs where `spread` places it.
pub async fn serve_router(
    listener: TcpListener,
    spread: Spread,
    router: Router,
    direct: Option<HlsDirect>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let site = Site { router, direct: direct.map(Arc::new) };
    serve_on(listener, spread, site, limits, None, shutdown, grace).await
}

/// ALPN protocols HTTPS offers, most preferred first: Apple's players ask for HTTP/2 for
/// low-latency HLS (RFC 9113 §3.2).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// [`serve_router`] over TLS with `cert` (see [`rtmp_hls_tls`]): HTTP/2 when the client
/// offers it in ALPN, else HTTP/1.1.
#[allow(clippy::too_many_arguments)]
pub async fn serve_router_tls(
    listener: TcpListener,
    spread: Spread,
    router: Router,
    direct: Option<HlsDirect>,
    limits: HttpLimits,
    cert: Arc<ReloadingCert>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let tls = TlsAcceptor::from(rtmp_hls_tls::server_config(cert, &ALPN));
    let site = Site { router, direct: direct.map(Arc::new) };
    serve_on(listener, spread, site, limits, Some(tls), shutdown, grace).await
}

/// What a listener answers with.
#[derive(Clone)]
struct Site {
    router: Router,
    direct: Option<Arc<HlsDirect>>,
}

impl Site {
    /// The service of a connection from `peer`: [`HlsDirect`] answers what it takes, the
    /// router the rest, its handlers finding the client's address (and the connection's
    /// sendfile queue, if it has one) in the request's extensions.
    /// `answering` counts the requests waiting for the stream (see [`Answering`]), which
    /// the low-latency waits hold.
    fn service(
        self,
        peer: SocketAddr,
        sendfile: Option<SendfileQueue>,
        answering: Answering,
        sends: Option<Sends>,
    ) -> impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > {
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            match &self.direct {
                Some(direct) if HlsDirect::takes(&request) => {
                    let (direct, sendfile) = (Arc::clone(direct), sendfile.clone());
                    let (answering, sends) = (answering.clone(), sends.clone());
                    Either::Left(async move {
                        let response = direct.answer(request, peer, sendfile, answering).await;
                        Ok::<_, Infallible>(watched(sends.as_ref(), response))
                    })
                }
                _ => {
                    request.extensions_mut().insert(crate::ClientAddr(peer));
                    if let Some(queue) = &sendfile {
                        request.extensions_mut().insert(queue.clone());
                    }
                    request.extensions_mut().insert(answering.clone());
                    let sends = sends.clone();
                    Either::Right(self.router.clone().oneshot(request).map(move |answer| {
                        answer.map(|response| watched(sends.as_ref(), response))
                    }))
                }
            }
        })
    }
}

async fn serve_on(
    listener: TcpListener,
    spread: Spread,
    site: Site,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            debug!(%peer, "HTTP connection refused: at the connection limit");
            continue;
        };
        let address = auth::address::group(peer.ip(), limits.ipv6_prefix);
        let Some(place) = per_address.admit(address, limits.max_connections_per_ip) else {
            debug!(%peer, "HTTP connection refused: at the per-address limit");
            continue;
        };
        let http1 = {
            let mut builder = http1::Builder::new();
            // With a header read timeout hyper polls the read again once a response is
            // done (to time the next head), so the idle timeout sees the keep-alive wait
            // after a request that held it off (see `Answering`).
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF));
            builder
        };
        let (site, idle) = (site.clone(), limits.idle_timeout);
        let Some(tls) = tls.clone() else {
            spread.spawn(&mut connections, socket, move |socket| async move {
                let _permit = (permit, place);
                let _ = socket.set_nodelay(true);
                let (stream, sendfile) = SendfileStream::new(socket);
                let answering = Answering::default();
                let io = IdleTimeout::new(stream, idle, answering.clone());
                let service = site.service(peer, Some(sendfile), answering, None);
                if let Err(e) = http1.serve_connection(TokioIo::new(io), service).await {
                    debug!(%peer, error = %e, "HTTP connection ended");
                }
            });
            continue;
        };
        let answering = Answering::default();
        let handshake_limit = limits.header_read_timeout;
        let max_header_bytes = limits.max_header_bytes;
        spread.spawn(&mut connections, socket, move |socket| async move {
            let _permit = (permit, place);
            let _ = socket.set_nodelay(true);
            let io = IdleTimeout::new(socket, idle, answering.clone());
            // The handshake, like a request's head, must arrive in time.
            let stream = match tokio::time::timeout(handshake_limit, tls.accept(io)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let served = if h2 {
                let sends = Sends::default();
                let service = site.service(peer, None, answering, Some(sends.clone()));
                serve_h2(TokioIo::new(stream), service, max_header_bytes, (&sends, idle), peer)
                    .await
            } else {
                let service = site.service(peer, None, answering, None);
                http1.serve_connection(TokioIo::new(stream), service).await
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
    Ok(())
}

/// `response` with its body watched by `sends`, if given (HTTP/2: see [`Sends`]).
fn watched(sends: Option<&Sends>, response: Response) -> Response {
    match sends {
        Some(sends) => response.map(|body| sends.watch(body)),
        None => response,
    }
}

/// How long the other streams of an HTTP/2 connection whose peer left a response waiting
/// may take to finish once it is told to go away (GOAWAY): they are being read.
const STALLED_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Serves one HTTP/2 connection from `peer` until it ends, or until a response's body has
/// waited `idle` for the connection to take from it (a peer keeping its window shut; see
/// [`Sends`]): then the peer is told to go away, and the connection ends once its other
/// streams are done or [`STALLED_CONNECTION_GRACE`] has passed.
async fn serve_h2<I, S>(
    io: I,
    service: S,
    max_header_bytes: usize,
    (sends, idle): (&Sends, Duration),
    peer: SocketAddr,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send + 'static,
{
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_HTTP2_STREAMS)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => return served,
        () = sends.stalled(idle) => {}
    }
    debug!(%peer, "HTTP/2 connection going away: a response waited {idle:?} for its peer");
    connection.as_mut().graceful_shutdown();
    tokio::time::timeout(STALLED_CONNECTION_GRACE, connection).await.unwrap_or(Ok(()))
}

/// Open connections per address group.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in its address's count.
#[derive(Debug)]
struct Place {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// A place for a connection from `address`, if fewer than `limit` are open.
    fn admit(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<Place> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Place { counts: Arc::clone(self), address })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_are_limited_and_freed() {
        let counts = Arc::new(PerAddress::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.admit(a, 2).unwrap();
        let _second = counts.admit(a, 2).unwrap();
        assert!(counts.admit(a, 2).is_none());
        assert!(counts.admit("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(counts.admit(a, 2).is_some());
        assert!(counts.0.lock().unwrap().values().all(|n| *n > 0));
    }

    /// A real HTTP/2 peer (hyper's client) that keeps its stream window shut (or open by one
    /// byte) and pings: the socket's own idle timeout sees reads complete, and the connection
    /// ends once the response has waited the idle timeout; without the watched body it would
    /// stay open.
    #[tokio::test(start_paused = true)]
    async fn an_http2_response_the_peer_never_takes_ends_the_connection() {
        const IDLE: Duration = Duration::from_secs(30);
        for (watch, window) in [(true, 0), (true, 1), (false, 0), (false, 1)] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let server = IdleTimeout::new(server, IDLE, Answering::default());
            let sends = Sends::default();
            let watching = watch.then(|| sends.clone());
            let service = hyper::service::service_fn(move |_request| {
                let response = Response::new(Body::from(vec![7u8; 1 << 20]));
                let response = watched(watching.as_ref(), response);
                async move { Ok::<_, Infallible>(response) }
            });
            let peer = SocketAddr::from(([192, 0, 2, 1], 443));
            let served = tokio::spawn(async move {
                serve_h2(TokioIo::new(server), service, 16 << 10, (&sends, IDLE), peer).await
            });
            let (mut sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(window)
                    .keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .handshake::<_, Body>(TokioIo::new(client))
                    .await
                    .unwrap();
            let connection = tokio::spawn(connection);
            let request = hyper::Request::get("/hls/cam/1-0.ts").body(Body::empty()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let ended = tokio::time::timeout(IDLE * 4, served).await;
            if watch {
                assert!(matches!(ended, Ok(Ok(Ok(())))), "window {window}: {ended:?}");
            } else {
                assert!(ended.is_err(), "window {window}: ended without the watch: {ended:?}");
            }
            drop(response);
            connection.abort();
        }
    }
}
