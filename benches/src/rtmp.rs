//! Publishing over tokio: the protocol crate's publisher ([`rtmp::client::Publisher`], as an
//! encoder speaks RTMP) driven on a socket until the server answers the publish. Enough to
//! drive Nginx-RTMP, rtmp-hls or any RTMP server; it never plays.

use std::time::Duration;

use anyhow::{anyhow, ensure};
use rtmp::client::{PublishEvent, PublishSettings, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

/// Where to publish: `rtmp://host[:port]/app`.
#[derive(Debug, Clone)]
pub(crate) struct PublishTarget {
    pub(crate) addr: String,
    pub(crate) app: String,
    pub(crate) tc_url: String,
}

impl PublishTarget {
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| anyhow!("{url}: not rtmp://"))?;
        let (authority, app) = rest.split_once('/').unwrap_or((rest, ""));
        let app = app.trim_end_matches('/');
        ensure!(!authority.is_empty() && !app.is_empty(), "{url}: expected rtmp://host[:port]/app");
        let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else {
            format!("{authority}:1935")
        };
        Ok(Self { addr, app: app.to_owned(), tc_url: format!("rtmp://{authority}/{app}") })
    }
}

/// Why a publish failed, as an error kind of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishFailure {
    /// TCP connect failed.
    Connect,
    /// The server refused the publish (an `_error` or an `onStatus` error).
    Rejected,
    /// Handshake or commands went wrong, or timed out.
    Setup,
}

impl PublishFailure {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Connect => "publish_connect",
            Self::Rejected => "publish_rejected",
            Self::Setup => "publish_setup",
        }
    }
}

/// A publishing connection: media is encoded by `publisher` and written to `writer`;
/// `reader` must be drained.
#[derive(Debug)]
pub(crate) struct Publishing {
    pub(crate) reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    pub(crate) publisher: Publisher,
}

/// Connects, handshakes and publishes `key` under `limit`; returns the publishing connection
/// once the server answered `NetStream.Publish.Start`, with `metadata` (the clip's
/// `onMetaData` values) sent as ffmpeg sends it.
pub(crate) async fn publish(
    target: &PublishTarget,
    key: &str,
    metadata: Option<&[u8]>,
    limit: Duration,
    seed: u64,
) -> Result<Publishing, (PublishFailure, String)> {
    let mut stream = timeout(limit, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| (PublishFailure::Connect, "connect timed out".to_owned()))?
        .map_err(|e| (PublishFailure::Connect, e.to_string()))?;
    // Frames must leave as soon as they are due, as an encoder's would.
    stream.set_nodelay(true).map_err(|e| (PublishFailure::Connect, e.to_string()))?;
    let settings = PublishSettings {
        app: target.app.clone(),
        tc_url: target.tc_url.clone(),
        key: key.to_owned(),
    };
    let mut publisher = Publisher::new(settings, seed);
    timeout(limit, negotiate(&mut stream, &mut publisher))
        .await
        .map_err(|_| (PublishFailure::Setup, "publish setup timed out".to_owned()))??;
    if let Some(metadata) = metadata {
        let mut out = Vec::new();
        publisher.data_frame(metadata, &mut out);
        stream.write_all(&out).await.map_err(setup_error)?;
    }
    let (reader, writer) = stream.into_split();
    Ok(Publishing { reader, writer, publisher })
}

/// Moves bytes between the socket and the publisher until the server answers the publish.
async fn negotiate(
    stream: &mut TcpStream,
    publisher: &mut Publisher,
) -> Result<(), (PublishFailure, String)> {
    let mut buf = [0u8; 4096];
    loop {
        let out = publisher.take_output();
        stream.write_all(&out).await.map_err(setup_error)?;
        let n = stream.read(&mut buf).await.map_err(setup_error)?;
        if n == 0 {
            return Err((PublishFailure::Setup, "the server closed the connection".to_owned()));
        }
        match publisher.handle_bytes(&buf[..n]) {
            Ok(Some(PublishEvent::Started { .. })) => return Ok(()),
            Ok(Some(PublishEvent::Refused { code, description })) => {
                let detail = format!("{code} {description}").trim().to_owned();
                return Err((PublishFailure::Rejected, detail));
            }
            Ok(None) => {}
            Err(e) => return Err((PublishFailure::Setup, e.to_string())),
        }
    }
}

fn setup_error(error: std::io::Error) -> (PublishFailure, String) {
    (PublishFailure::Setup, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_a_port() {
        let t = PublishTarget::parse("rtmp://127.0.0.1:19350/live").unwrap();
        assert_eq!((t.addr.as_str(), t.app.as_str()), ("127.0.0.1:19350", "live"));
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:19350/live");
        let t = PublishTarget::parse("rtmp://example.org/live/").unwrap();
        assert_eq!((t.addr.as_str(), t.app.as_str()), ("example.org:1935", "live"));
        assert!(PublishTarget::parse("http://x/live").is_err());
        assert!(PublishTarget::parse("rtmp://x").is_err());
    }
}
