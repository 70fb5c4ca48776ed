//! The publishing side of RTMP (Adobe RTMP specification 2012, §5 chunking, §7 commands), as
//! an encoder speaks it: plain handshake, connect / releaseStream / FCPublish / createStream /
//! publish, then audio and video messages. Enough to drive Nginx-RTMP, rtmp-hls or any RTMP
//! server; it never plays, and reads the server only to see the answers to its commands.

use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

use rtmp::amf0::{self, Value};
use rtmp::chunk::{ChunkReader, DEFAULT_CHUNK_SIZE};
use rtmp::handshake::HANDSHAKE_PACKET_LEN;

/// Chunk size the publisher announces: what ffmpeg and OBS use, so a keyframe is a few dozen
/// chunks and the server's chunk reassembly works as it does in production.
pub(crate) const CHUNK_SIZE: u32 = 4096;
/// RTMP version byte of C0 (§5.2.2).
const RTMP_VERSION: u8 = 3;
/// Timestamp field value announcing an extended timestamp (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xff_ffff;
/// Message types (§5.4, §7.1).
const SET_CHUNK_SIZE: u8 = 1;
const DATA_AMF0: u8 = 18;
const COMMAND_AMF0: u8 = 20;
/// Chunk stream ids: 2 is reserved for protocol control (§5.4); the rest follow ffmpeg.
const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_AUDIO: u8 = 4;
const CSID_DATA: u8 = 5;
const CSID_VIDEO: u8 = 6;
/// Flash version string Nginx-RTMP and FMS expect from an encoder (what FMLE and ffmpeg send).
const FLASH_VER: &str = "FMLE/3.0 (compatible; FMSc/1.0)";

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

/// Header state of one outgoing chunk stream.
#[derive(Debug, Clone, Copy)]
struct OutState {
    timestamp: u32,
    stream_id: u32,
}

/// Cuts messages into chunks. Media chunk streams use a type 0 header first, then type 1
/// (timestamp delta, length, type) for each later message, as encoders do.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    chunk_size: usize,
    /// Indexed by chunk stream id (ours are all below 8).
    last: [Option<OutState>; 8],
}

impl ChunkWriter {
    pub(crate) fn new(chunk_size: u32) -> Self {
        Self { chunk_size: chunk_size as usize, last: [None; 8] }
    }

    /// Appends `payload` as one message on chunk stream `csid` (2..8).
    pub(crate) fn write(
        &mut self,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let slot = &mut self.last[usize::from(csid & 7)];
        let (fmt, field) = match *slot {
            Some(prev) if prev.stream_id == stream_id && timestamp >= prev.timestamp => {
                (1u8, timestamp - prev.timestamp)
            }
            _ => (0u8, timestamp),
        };
        *slot = Some(OutState { timestamp, stream_id });
        let extended = field >= EXTENDED_TIMESTAMP;
        let len = payload.len() as u32;
        out.reserve(payload.len() + 18 + payload.len() / self.chunk_size * 5);
        out.push(fmt << 6 | csid);
        out.extend_from_slice(&field.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(type_id);
        if fmt == 0 {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&field.to_be_bytes());
        }
        let mut chunks = payload.chunks(self.chunk_size);
        out.extend_from_slice(chunks.next().unwrap_or_default());
        for chunk in chunks {
            out.push(3 << 6 | csid);
            if extended {
                // Type 3 chunks repeat the extended timestamp (§5.3.1.3; FFmpeg, librtmp and
                // Nginx-RTMP all expect it).
                out.extend_from_slice(&field.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
    }
}

/// A publishing connection: media goes to `writer` on `stream_id`; `reader` must be drained.
#[derive(Debug)]
pub(crate) struct Publishing {
    pub(crate) reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    pub(crate) chunks: ChunkWriter,
    pub(crate) stream_id: u32,
}

impl ChunkWriter {
    /// Appends an audio or video message (FLV tag type 8 or 9) on `stream_id` to `out`.
    pub(crate) fn media(
        &mut self,
        stream_id: u32,
        kind: u8,
        timestamp: u32,
        body: &[u8],
        out: &mut Vec<u8>,
    ) {
        let csid = if kind == crate::flv::TAG_AUDIO { CSID_AUDIO } else { CSID_VIDEO };
        self.write(csid, timestamp, kind, stream_id, body, out);
    }
}

/// Connection setup: the socket and what the server has sent but we have not read yet.
struct Setup {
    stream: TcpStream,
    chunks: ChunkWriter,
    reader: ChunkReader,
    pending: Vec<u8>,
}

impl Setup {
    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await.context("writing to the server")
    }

    async fn command(&mut self, stream_id: u32, values: &[Value]) -> anyhow::Result<()> {
        let mut body = Vec::new();
        for value in values {
            amf0::encode(value, &mut body);
        }
        let mut out = Vec::new();
        self.chunks.write(CSID_COMMAND, 0, COMMAND_AMF0, stream_id, &body, &mut out);
        self.send(&out).await
    }

    /// The next command message from the server, applying its Set Chunk Size on the way.
    /// The server's chunks are read with rtmp-hls's own reader (its limits bound what a
    /// broken server can make us hold); our chunk writer above is written independently.
    async fn next_command(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut buf = [0u8; 4096];
        loop {
            let (used, message) =
                self.reader.read(&self.pending).context("the server's chunk stream")?;
            self.pending.drain(..used);
            match message {
                Some(message) if message.type_id == COMMAND_AMF0 => {
                    return amf0::decode_all(&message.payload)
                        .context("undecodable command from the server");
                }
                Some(message) if message.type_id == SET_CHUNK_SIZE => {
                    let size = message.payload.get(..4).context("short Set Chunk Size")?;
                    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                    self.reader.set_chunk_size(size & 0x7fff_ffff)?;
                }
                Some(_) => {}
                None => {
                    let n = self.stream.read(&mut buf).await.context("reading from the server")?;
                    ensure!(n > 0, "the server closed the connection");
                    self.pending.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// Waits for the `_result` of `transaction`; an `_error` or an error `onStatus` is a refusal.
    async fn result(&mut self, transaction: f64) -> Result<Vec<Value>, (PublishFailure, String)> {
        loop {
            let values = self.next_command().await.map_err(setup_error)?;
            let name = values.first().and_then(Value::as_str).unwrap_or_default();
            let id = values.get(1).and_then(Value::as_number);
            match name {
                "_result" if id == Some(transaction) => return Ok(values),
                "_error" if id == Some(transaction) => {
                    return Err((PublishFailure::Rejected, describe(&values)));
                }
                "onStatus" if status_level(&values) == Some("error") => {
                    return Err((PublishFailure::Rejected, describe(&values)));
                }
                _ => {}
            }
        }
    }
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn setup_error(error: anyhow::Error) -> (PublishFailure, String) {
    (PublishFailure::Setup, format!("{error:#}"))
}

fn status_level(values: &[Value]) -> Option<&str> {
    values.get(3)?.get("level")?.as_str()
}

fn describe(values: &[Value]) -> String {
    let info = values.get(3);
    let field = |name| info.and_then(|i| i.get(name)).and_then(Value::as_str).unwrap_or("");
    format!("{} {}", field("code"), field("description")).trim().to_owned()
}

/// Connects, handshakes and publishes `key` under `limit`; returns the publishing connection
/// once the server answered `NetStream.Publish.Start`.
pub(crate) async fn publish(
    target: &PublishTarget,
    key: &str,
    metadata: Option<&[u8]>,
    limit: Duration,
    seed: u64,
) -> Result<Publishing, (PublishFailure, String)> {
    let stream = timeout(limit, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| (PublishFailure::Connect, "connect timed out".to_owned()))?
        .map_err(|e| (PublishFailure::Connect, e.to_string()))?;
    // Frames must leave as soon as they are due, as an encoder's would.
    stream.set_nodelay(true).map_err(|e| (PublishFailure::Connect, e.to_string()))?;
    let setup = Setup {
        stream,
        chunks: ChunkWriter::new(DEFAULT_CHUNK_SIZE),
        reader: ChunkReader::new(),
        pending: Vec::new(),
    };
    timeout(limit, negotiate(setup, target, key, metadata, seed))
        .await
        .map_err(|_| (PublishFailure::Setup, "publish setup timed out".to_owned()))?
}

async fn negotiate(
    mut setup: Setup,
    target: &PublishTarget,
    key: &str,
    metadata: Option<&[u8]>,
    seed: u64,
) -> Result<Publishing, (PublishFailure, String)> {
    handshake(&mut setup, seed).await.map_err(setup_error)?;
    let mut out = Vec::new();
    setup.chunks.write(CSID_CONTROL, 0, SET_CHUNK_SIZE, 0, &CHUNK_SIZE.to_be_bytes(), &mut out);
    setup.chunks.chunk_size = CHUNK_SIZE as usize;
    setup.send(&out).await.map_err(setup_error)?;
    let connect = Value::Object(vec![
        ("app".into(), string(&target.app)),
        ("type".into(), string("nonprivate")),
        ("flashVer".into(), string(FLASH_VER)),
        ("swfUrl".into(), string(&target.tc_url)),
        ("tcUrl".into(), string(&target.tc_url)),
    ]);
    setup
        .command(0, &[string("connect"), Value::Number(1.0), connect])
        .await
        .map_err(setup_error)?;
    setup.result(1.0).await?;
    for (name, transaction) in [("releaseStream", 2.0), ("FCPublish", 3.0)] {
        let values = [string(name), Value::Number(transaction), Value::Null, string(key)];
        setup.command(0, &values).await.map_err(setup_error)?;
    }
    setup
        .command(0, &[string("createStream"), Value::Number(4.0), Value::Null])
        .await
        .map_err(setup_error)?;
    let created = setup.result(4.0).await?;
    let stream_id = created
        .get(3)
        .and_then(Value::as_number)
        .filter(|id| (1.0..=f64::from(u32::MAX)).contains(id))
        .ok_or_else(|| (PublishFailure::Setup, "createStream gave no stream id".to_owned()))?
        as u32;
    let publish = [string("publish"), Value::Number(5.0), Value::Null, string(key), string("live")];
    setup.command(stream_id, &publish).await.map_err(setup_error)?;
    loop {
        let values = setup.next_command().await.map_err(setup_error)?;
        let name = values.first().and_then(Value::as_str).unwrap_or_default();
        let code = values.get(3).and_then(|i| i.get("code")).and_then(Value::as_str);
        match (name, code) {
            ("onStatus", Some("NetStream.Publish.Start")) => break,
            ("onStatus", _) if status_level(&values) == Some("error") => {
                return Err((PublishFailure::Rejected, describe(&values)));
            }
            ("_error", _) => return Err((PublishFailure::Rejected, describe(&values))),
            _ => {}
        }
    }
    if let Some(metadata) = metadata {
        // As ffmpeg sends it: "@setDataFrame" then the FLV script tag's values.
        let mut body = Vec::new();
        amf0::encode(&string("@setDataFrame"), &mut body);
        body.extend_from_slice(metadata);
        let mut out = Vec::new();
        setup.chunks.write(CSID_DATA, 0, DATA_AMF0, stream_id, &body, &mut out);
        setup.send(&out).await.map_err(setup_error)?;
    }
    let Setup { stream, chunks, .. } = setup;
    let (reader, writer) = stream.into_split();
    Ok(Publishing { reader, writer, chunks, stream_id })
}

/// The plain handshake (§5.2): C0+C1, S0+S1+S2, C2 echoing S1.
async fn handshake(setup: &mut Setup, seed: u64) -> anyhow::Result<()> {
    let mut c0c1 = Vec::with_capacity(1 + HANDSHAKE_PACKET_LEN);
    c0c1.push(RTMP_VERSION);
    c0c1.extend_from_slice(&[0; 8]); // time, zero
    let mut x = seed | 1;
    while c0c1.len() < 1 + HANDSHAKE_PACKET_LEN {
        // xorshift64: C1's random bytes only need to differ between connections.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c0c1.extend_from_slice(&x.to_le_bytes());
    }
    c0c1.truncate(1 + HANDSHAKE_PACKET_LEN);
    setup.send(&c0c1).await?;
    let mut reply = vec![0; 1 + 2 * HANDSHAKE_PACKET_LEN];
    setup.stream.read_exact(&mut reply).await.context("reading S0+S1+S2")?;
    if reply[0] != RTMP_VERSION {
        bail!("server answered RTMP version {}", reply[0]);
    }
    setup.send(&reply[1..=HANDSHAKE_PACKET_LEN]).await
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

    /// Our chunks, read back by the server's own (independently written) chunk reader:
    /// type 0 then type 1 headers, multi-chunk messages, and extended timestamps.
    #[test]
    fn chunks_read_back_by_an_independent_reader() {
        let mut writer = ChunkWriter::new(CHUNK_SIZE);
        let mut out = Vec::new();
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let messages = [
            (CSID_VIDEO, 0u32, 9u8, &big[..]),
            (CSID_AUDIO, 0, 8, &[0xaf, 1, 2, 3][..]),
            (CSID_VIDEO, 33, 9, &big[..5000]),
            (CSID_VIDEO, 0xff_fffe, 9, &big[..]),
            (CSID_VIDEO, 0x0100_0000, 9, &big[..]),
            (CSID_AUDIO, 0x0200_0000, 8, &[0xaf, 1][..]),
            (CSID_AUDIO, 0x0200_0015, 8, &big[..4096]),
        ];
        for (csid, ts, kind, body) in messages {
            writer.write(csid, ts, kind, 1, body, &mut out);
        }
        let mut reader = ChunkReader::new();
        reader.set_chunk_size(CHUNK_SIZE).unwrap();
        let mut input = &out[..];
        let mut got = Vec::new();
        while !input.is_empty() {
            let (used, message) = reader.read(input).unwrap();
            assert!(used > 0);
            input = &input[used..];
            if let Some(m) = message {
                got.push((m.csid as u8, m.timestamp, m.type_id, m.payload.to_vec()));
            }
        }
        let want: Vec<_> =
            messages.iter().map(|&(c, t, k, b)| (c, t, k, b.to_vec())).collect::<Vec<_>>();
        assert_eq!(got, want);
    }
}
