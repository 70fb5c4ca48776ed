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
    /// How publishers write.
    pub(crate) traffic: Traffic,
}

/// What publishers' traffic looks like (`--traffic`): as real encoders write it, recorded
/// with `scripts/record-encoder-writes.py` (benches/results/2026-12-06-encoder-writes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Traffic {
    /// As ffmpeg 5.1 and 7.0 write: chunk size 4096; each message when it is due, its chunk
    /// header in one `write`, each chunk's payload in a `write` of its own, and the one-byte
    /// header of every further chunk in another; Nagle's algorithm on (ffmpeg sets no
    /// TCP_NODELAY). About 280 writes a second for a 2.5 Mbit/s 720p30 stream.
    Ffmpeg,
    /// As librtmp (rtmpdump's; python3-librtmp) writes: chunk size 128, announced by no Set
    /// Chunk Size; every chunk, header and payload, in one `write`; TCP_NODELAY. About 2,700
    /// writes a second for the same stream.
    Librtmp,
    /// The generator's own, lighter than any encoder: the tags due within 10 ms in one
    /// `write`, chunk size 4096, TCP_NODELAY.
    Batched,
}

impl Traffic {
    /// As the reports name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ffmpeg => "ffmpeg",
            Self::Librtmp => "librtmp",
            Self::Batched => "batched",
        }
    }

    /// The chunk size it publishes in.
    fn chunk_size(self) -> u32 {
        match self {
            Self::Librtmp => rtmp::chunk::DEFAULT_CHUNK_SIZE,
            Self::Ffmpeg | Self::Batched => rtmp::client::CHUNK_SIZE,
        }
    }

    /// Where one encoded message (`message`: chunks of `chunk` bytes of a `payload`-byte
    /// body, each with its header, as `rtmp::chunk::ChunkWriter` writes them; chunk stream
    /// ids under 64) is cut into `write`s.
    pub(crate) fn writes(
        self,
        message: &[u8],
        payload: usize,
        chunk: usize,
    ) -> Vec<std::ops::Range<usize>> {
        // The first chunk's header: the basic header, the message header of its format
        // (§5.3.1.2), and an extended timestamp when the field is saturated (§5.3.1.3), which
        // every further chunk's one-byte header then carries too.
        let format = usize::from(message.first().map_or(3, |b| b >> 6));
        let extended = format < 3 && message.get(1..4) == Some(&[0xff; 3][..]);
        let extension = if extended { 4 } else { 0 };
        let header = 1 + [11, 7, 3, 0][format] + extension;
        let continuation = 1 + extension;
        let chunks = payload.div_ceil(chunk).max(1);
        let mut writes = Vec::with_capacity(2 * chunks);
        let mut at = 0;
        for n in 0..chunks {
            let head = if n == 0 { header } else { continuation };
            let body = chunk.min(payload - n * chunk);
            match self {
                Self::Ffmpeg => {
                    writes.push(at..at + head);
                    writes.push(at + head..at + head + body);
                }
                Self::Librtmp | Self::Batched => writes.push(at..at + head + body),
            }
            at += head + body;
        }
        writes
    }
}

impl PublishTarget {
    pub(crate) fn parse(url: &str, traffic: Traffic) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| anyhow!("{url}: not rtmp://"))?;
        let (authority, app) = rest.split_once('/').unwrap_or((rest, ""));
        let app = app.trim_end_matches('/');
        ensure!(!authority.is_empty() && !app.is_empty(), "{url}: expected rtmp://host[:port]/app");
        let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else {
            format!("{authority}:1935")
        };
        let tc_url = format!("rtmp://{authority}/{app}");
        Ok(Self { addr, app: app.to_owned(), tc_url, traffic })
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
    // ffmpeg leaves Nagle's algorithm on; librtmp and the batched generator turn it off.
    let nodelay = target.traffic != Traffic::Ffmpeg;
    stream.set_nodelay(nodelay).map_err(|e| (PublishFailure::Connect, e.to_string()))?;
    let settings = PublishSettings {
        app: target.app.clone(),
        tc_url: target.tc_url.clone(),
        key: key.to_owned(),
    };
    let mut publisher = Publisher::new(settings, seed).with_chunk_size(target.traffic.chunk_size());
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
    fn messages_are_cut_into_writes_as_encoders_cut_them() {
        let mut writer = rtmp::chunk::ChunkWriter::compressing();
        writer.set_chunk_size(4096);
        let body = vec![7u8; 10_000];
        let mut message = Vec::new();
        writer.write(6, 40, 9, 1, &body, &mut message);
        let sizes = |shape: Traffic, message: &[u8], payload, chunk| -> Vec<usize> {
            shape.writes(message, payload, chunk).into_iter().map(|r| r.len()).collect()
        };
        // ffmpeg: the 12-byte header, then each chunk's payload, one-byte headers apart.
        assert_eq!(sizes(Traffic::Ffmpeg, &message, 10_000, 4096), [12, 4096, 1, 4096, 1, 1808]);
        let mut next = Vec::new();
        writer.write(6, 73, 9, 1, &body[..300], &mut next);
        assert_eq!(Traffic::Ffmpeg.writes(&next, 300, 4096).len(), 2, "an 8-byte header, a body");
        assert_eq!(next.len(), 8 + 300);
        // librtmp: every chunk whole, at 128 bytes.
        let mut small = rtmp::chunk::ChunkWriter::compressing();
        let mut message = Vec::new();
        small.write(4, 0, 8, 1, &body[..300], &mut message);
        assert_eq!(sizes(Traffic::Librtmp, &message, 300, 128), [12 + 128, 1 + 128, 1 + 44]);
    }

    #[test]
    fn urls_parse_with_and_without_a_port() {
        let t = PublishTarget::parse("rtmp://127.0.0.1:19350/live", Traffic::Ffmpeg).unwrap();
        assert_eq!((t.addr.as_str(), t.app.as_str()), ("127.0.0.1:19350", "live"));
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:19350/live");
        let t = PublishTarget::parse("rtmp://example.org/live/", Traffic::Ffmpeg).unwrap();
        assert_eq!((t.addr.as_str(), t.app.as_str()), ("example.org:1935", "live"));
        assert!(PublishTarget::parse("http://x/live", Traffic::Ffmpeg).is_err());
        assert!(PublishTarget::parse("rtmp://x", Traffic::Ffmpeg).is_err());
    }
}
