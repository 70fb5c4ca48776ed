//! An RTMP client over a blocking socket, for end-to-end tests.
//!
//! [`RawClient::start_publish`] publishes the way encoders do, through the protocol crate's
//! own publisher ([`rtmp::client::Publisher`], also what the load generator drives), and
//! [`RawClient::media`] then sends media as it would. The other methods write raw messages
//! with a plain chunk writer, so a hostile test can reach each stage of a session and then
//! misbehave in ways no encoder would: that part is independent of the publisher on purpose.
#![allow(unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rtmp::MediaKind;
use rtmp::amf0::{self, Value};
use rtmp::chunk::{ChunkReader, ChunkWriter};
use rtmp::client::{PublishEvent, PublishSettings, Publisher};

/// C1, C2, S1 and S2 length (§5.2).
pub const HANDSHAKE_LEN: usize = 1536;

/// A client connection.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// The plain writer of raw messages.
    pub writer: ChunkWriter,
    /// The publisher, once [`RawClient::start_publish`] ran.
    publisher: Option<Publisher>,
}

fn s(text: &str) -> Value {
    Value::String(text.into())
}

impl RawClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self { stream, writer: ChunkWriter::new(), publisher: None }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// C0+C1, read S0+S1+S2, C2.
    pub fn handshake(&mut self) {
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..HANDSHAKE_LEN).map(|i| i as u8));
        self.send(&c0c1).unwrap();
        let mut reply = vec![0; 1 + 2 * HANDSHAKE_LEN];
        self.stream.read_exact(&mut reply).unwrap();
        self.send(&reply[1..=HANDSHAKE_LEN]).unwrap();
    }

    /// One raw message.
    pub fn message(
        &mut self,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        let mut out = Vec::new();
        self.writer.write(csid, timestamp, type_id, stream_id, payload, &mut out);
        self.send(&out).unwrap();
    }

    /// One raw AMF0 command on message stream `stream_id`.
    pub fn command(&mut self, stream_id: u32, values: &[Value]) {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(v, &mut body);
        }
        self.message(if stream_id == 0 { 3 } else { 8 }, 0, 20, stream_id, &body);
    }

    /// Set Chunk Size, then writes at that size.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.message(2, 0, 1, 0, &size.to_be_bytes());
        self.writer.set_chunk_size(size.clamp(1, 1 << 24));
    }

    /// A raw `connect` to `app`.
    pub fn connect_app(&mut self, app: &str) {
        let object = Value::Object(vec![("app".into(), s(app)), ("tcUrl".into(), s("rtmp://x/"))]);
        self.command(0, &[s("connect"), Value::Number(1.0), object]);
    }

    /// A raw createStream then publish on stream 1, answers unread.
    pub fn publish(&mut self, key: &str) {
        self.command(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
        self.command(1, &[s("publish"), Value::Number(3.0), Value::Null, s(key), s("live")]);
    }

    /// Publishes `key` on `app` as an encoder does; returns the code of the server's
    /// answer (`NetStream.Publish.Start`, or the refusal's code). Raw messages written after
    /// it use the publisher's chunk size.
    pub fn start_publish(&mut self, app: &str, key: &str) -> String {
        let peer = self.stream.peer_addr().unwrap();
        let settings = PublishSettings {
            app: app.to_owned(),
            tc_url: format!("rtmp://{peer}/{app}"),
            key: key.to_owned(),
        };
        let mut publisher = Publisher::new(settings, u64::from(peer.port()));
        let mut buf = [0u8; 4096];
        let code = loop {
            let out = publisher.take_output();
            self.send(&out).unwrap();
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed before the publish was answered");
            match publisher.handle_bytes(&buf[..n]).unwrap() {
                Some(PublishEvent::Started { .. }) => break "NetStream.Publish.Start".to_owned(),
                Some(PublishEvent::Refused { code, .. }) => break code,
                None => {}
            }
        };
        self.writer.set_chunk_size(rtmp::client::CHUNK_SIZE);
        self.publisher = Some(publisher);
        code
    }

    /// Reads server messages until an onStatus arrives; returns its code.
    pub fn read_status(&mut self) -> String {
        let mut reader = ChunkReader::new();
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            loop {
                let (used, message) = reader.read(&pending).unwrap();
                pending.drain(..used);
                let Some(message) = message else { break };
                if message.type_id == 1 {
                    let size = u32::from_be_bytes(message.payload[..4].try_into().unwrap());
                    reader.set_chunk_size(size).unwrap();
                }
                if message.type_id == 20 {
                    let values = amf0::decode_all(&message.payload).unwrap();
                    if values.first().and_then(Value::as_str) == Some("onStatus") {
                        let code =
                            values.get(3).and_then(|v| v.get("code")).and_then(Value::as_str);
                        return code.unwrap_or_default().to_owned();
                    }
                }
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed before onStatus");
            pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends one FLV tag body as an audio (8) or video (9) message: through the publisher
    /// once the publish started, else raw on message stream 1.
    pub fn media(&mut self, tag_type: u8, timestamp: u32, body: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        match &mut self.publisher {
            Some(publisher) if publisher.stream_id().is_some() => {
                let kind = if tag_type == 8 { MediaKind::Audio } else { MediaKind::Video };
                publisher.media(kind, timestamp, body, &mut out);
            }
            _ => {
                let csid = if tag_type == 8 { 4 } else { 6 };
                self.writer.write(csid, timestamp, tag_type, 1, body, &mut out);
            }
        }
        self.send(&out)
    }

    /// Whether the server closes the connection (EOF or reset) within `limit`; reads and
    /// discards whatever it sends meanwhile.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let deadline = std::time::Instant::now() + limit;
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {
                    if std::time::Instant::now() > deadline {
                        return false;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}
