//! The publishing side of RTMP, sans-IO: what an encoder sends and reads back.
//!
//! [`Publisher`] speaks as ffmpeg and OBS do: the plain handshake (§5.2), Set Chunk Size,
//! `connect`, `releaseStream`, `FCPublish`, `createStream`, `publish` (§7.2), then media and
//! data messages with compressed chunk headers, and `FCUnpublish` / `deleteStream` at the
//! end. It reads the server's answers with the same chunk reader and AMF0 decoder as the
//! server side, under the same limits. Drive it like [`crate::Session`]: feed it what the
//! socket gives ([`Publisher::handle_bytes`]), send what it queues
//! ([`Publisher::take_output`]).

use crate::MediaKind;
use crate::amf0::{self, AmfError, Value};
use crate::chunk::{ChunkError, ChunkReader, ChunkWriter, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
use crate::handshake::HANDSHAKE_PACKET_LEN;
use crate::session::cut;

/// Chunk size the publisher announces: what ffmpeg and OBS use.
pub const CHUNK_SIZE: u32 = 4096;
/// RTMP version byte of C0 (§5.2.2).
const RTMP_VERSION: u8 = 3;
/// Flash version string Nginx-RTMP and FMS expect from an encoder (what FMLE and ffmpeg send).
const FLASH_VER: &str = "FMLE/3.0 (compatible; FMSc/1.0)";
/// Message types (§5.4, §7.1).
const SET_CHUNK_SIZE: u8 = 1;
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const DATA_AMF0: u8 = 18;
const COMMAND_AMF0: u8 = 20;
/// Chunk stream ids, as ffmpeg uses them: 2 is reserved for protocol control (§5.4).
const CSID_CONTROL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_AUDIO: u8 = 4;
const CSID_DATA: u8 = 5;
const CSID_VIDEO: u8 = 6;
/// User Control events (§7.1.7): the server's ping, and our answer.
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;
/// Smallest acknowledgement window honoured: a server asking for acknowledgements every few
/// bytes would have us answer each read.
const MIN_ACK_WINDOW: u32 = 4096;
/// Bytes of a refusal's code and description kept: they go into a log line and a
/// `push_failed` event at every retry, and a server's are a short sentence, while a message
/// may be megabytes.
pub const MAX_REFUSAL_TEXT: usize = 256;
/// Transaction ids of the commands that get answers.
const CONNECT: f64 = 1.0;
const CREATE_STREAM: f64 = 4.0;
const PUBLISH: f64 = 5.0;

/// What to publish and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// The application (`live` in `rtmp://host/live`).
    pub app: String,
    /// The URL the publisher connects to, as `connect` states it (`rtmp://host/live`).
    pub tc_url: String,
    /// The publishing name: the stream key.
    pub key: String,
}

/// What the server's answers meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishEvent {
    /// `NetStream.Publish.Start`: media may go on message stream `stream_id`.
    Started {
        /// The message stream `createStream` gave.
        stream_id: u32,
    },
    /// The server refused: an `_error` answer or an `onStatus` of level `error`.
    Refused {
        /// The status code (`NetStream.Publish.BadName`), if any.
        code: String,
        /// The server's description, if any.
        description: String,
    },
}

/// Why the server's bytes cannot be understood. Every variant is the server's fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// S0 named another version.
    #[error("server answered RTMP version {0}")]
    Version(u8),
    /// The chunk stream is broken.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A command does not decode.
    #[error("undecodable command from the server: {0}")]
    Amf(#[from] AmfError),
    /// A well-formed answer that makes no sense here.
    #[error("server misbehaved: {0}")]
    Misbehaved(&'static str),
}

/// Where the publisher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// C0+C1 sent, waiting for S0+S1+S2.
    Handshaking,
    /// `connect` sent.
    Connecting,
    /// `createStream` sent.
    CreatingStream,
    /// `publish` sent on `stream_id`.
    Publishing { stream_id: u32 },
    /// The server answered the publish (started or refused); media may flow if started.
    Answered { stream_id: Option<u32> },
}

/// One publishing connection's protocol state.
#[derive(Debug)]
pub struct Publisher {
    settings: PublishSettings,
    state: State,
    writer: ChunkWriter,
    reader: ChunkReader,
    /// Server bytes not parsed yet.
    pending: Vec<u8>,
    /// Bytes to send.
    output: Vec<u8>,
    /// Bytes read from the server since the handshake (mod 2^32, as acknowledgements count).
    received: u32,
    /// `received` when the last acknowledgement went out.
    acknowledged: u32,
    /// The server's acknowledgement window (Window Acknowledgement Size, §5.4.4); none: the
    /// server did not ask for acknowledgements.
    ack_window: Option<u32>,
    /// The chunk size media goes out in ([`CHUNK_SIZE`] unless set).
    chunk_size: u32,
}

impl Publisher {
    /// A publisher for `settings`; C0+C1 are queued at once, C1's bytes drawn from `seed`.
    pub fn new(settings: PublishSettings, seed: u64) -> Self {
        let mut output = Vec::with_capacity(1 + HANDSHAKE_PACKET_LEN);
        output.push(RTMP_VERSION);
        output.extend_from_slice(&[0; 8]); // time, zero
        let mut x = seed | 1;
        while output.len() < 1 + HANDSHAKE_PACKET_LEN {
            // xorshift64: C1's random bytes only need to differ between connections.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            output.extend_from_slice(&x.to_le_bytes());
        }
        output.truncate(1 + HANDSHAKE_PACKET_LEN);
        Self {
            settings,
            state: State::Handshaking,
            writer: ChunkWriter::compressing(),
            reader: ChunkReader::new(),
            pending: Vec::new(),
            output,
            received: 0,
            acknowledged: 0,
            ack_window: None,
            chunk_size: CHUNK_SIZE,
        }
    }

    /// Publishes in chunks of `size` bytes instead of [`CHUNK_SIZE`] (at least 128): with
    /// 128, the protocol's default, no Set Chunk Size is sent, as librtmp does.
    pub fn with_chunk_size(mut self, size: u32) -> Self {
        self.chunk_size = size.clamp(DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE);
        self
    }

    /// The chunk size media goes out in.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The bytes to send now (emptied).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The message stream media goes on, once the publish started.
    pub fn stream_id(&self) -> Option<u32> {
        match self.state {
            State::Answered { stream_id } => stream_id,
            _ => None,
        }
    }

    /// Reads the server's bytes; returns the publish's outcome once the server gave it.
    /// Answers queue the next commands (see [`Publisher::take_output`]), and so do the
    /// acknowledgements and ping responses a server asks for (Nginx-RTMP drops a publisher
    /// that does not answer its pings).
    pub fn handle_bytes(&mut self, input: &[u8]) -> Result<Option<PublishEvent>, PublishError> {
        self.pending.extend_from_slice(input);
        if self.state != State::Handshaking {
            self.count_received(input.len());
        }
        if self.state == State::Handshaking {
            if self.pending.len() < 1 + 2 * HANDSHAKE_PACKET_LEN {
                return Ok(None);
            }
            if self.pending[0] != RTMP_VERSION {
                return Err(PublishError::Version(self.pending[0]));
            }
            // C2 echoes S1.
            self.output.extend_from_slice(&self.pending[1..=HANDSHAKE_PACKET_LEN]);
            self.pending.drain(..1 + 2 * HANDSHAKE_PACKET_LEN);
            let after = self.pending.len();
            self.start();
            self.count_received(after);
        }
        let mut outcome = None;
        loop {
            let (used, message) = self.reader.read(&self.pending)?;
            self.pending.drain(..used);
            let Some(message) = message else { break };
            match message.type_id {
                SET_CHUNK_SIZE => {
                    let size = message
                        .payload
                        .get(..4)
                        .ok_or(PublishError::Misbehaved("short Set Chunk Size"))?;
                    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                    self.reader.set_chunk_size(size & 0x7fff_ffff)?;
                }
                COMMAND_AMF0 => {
                    let values = amf0::decode_all(&message.payload)?;
                    if let Some(event) = self.answer(&values)? {
                        outcome = Some(event);
                    }
                }
                WINDOW_ACK_SIZE => {
                    let size = message
                        .payload
                        .get(..4)
                        .ok_or(PublishError::Misbehaved("short Window Acknowledgement Size"))?;
                    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                    self.ack_window = Some(size.max(MIN_ACK_WINDOW));
                }
                USER_CONTROL => {
                    let payload = &message.payload;
                    if payload.len() >= 6
                        && u16::from_be_bytes([payload[0], payload[1]]) == PING_REQUEST
                    {
                        let mut answer = PING_RESPONSE.to_be_bytes().to_vec();
                        answer.extend_from_slice(&payload[2..6]);
                        self.writer.write(
                            CSID_CONTROL,
                            0,
                            USER_CONTROL,
                            0,
                            &answer,
                            &mut self.output,
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// Counts `n` bytes read and acknowledges them once a window's worth arrived (§5.4.3).
    fn count_received(&mut self, n: usize) {
        self.received = self.received.wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(window) = self.ack_window
            && self.received.wrapping_sub(self.acknowledged) >= window
        {
            self.acknowledged = self.received;
            let sequence = self.received.to_be_bytes();
            self.writer.write(CSID_CONTROL, 0, ACKNOWLEDGEMENT, 0, &sequence, &mut self.output);
        }
    }

    /// After the handshake: the chunk size (unless it is the default), then `connect`.
    fn start(&mut self) {
        if self.chunk_size != DEFAULT_CHUNK_SIZE {
            let size = self.chunk_size.to_be_bytes();
            self.writer.write(CSID_CONTROL, 0, SET_CHUNK_SIZE, 0, &size, &mut self.output);
            self.writer.set_chunk_size(self.chunk_size);
        }
        let object = Value::Object(vec![
            ("app".into(), string(&self.settings.app)),
            ("type".into(), string("nonprivate")),
            ("flashVer".into(), string(FLASH_VER)),
            ("swfUrl".into(), string(&self.settings.tc_url)),
            ("tcUrl".into(), string(&self.settings.tc_url)),
        ]);
        self.command(0, &[string("connect"), Value::Number(CONNECT), object]);
        self.state = State::Connecting;
    }

    /// Acts on one command from the server.
    fn answer(&mut self, values: &[Value]) -> Result<Option<PublishEvent>, PublishError> {
        let name = values.first().and_then(Value::as_str).unwrap_or_default();
        let transaction = values.get(1).and_then(Value::as_number);
        let refused = match name {
            // Servers answer releaseStream and FCPublish (transactions 2 and 3) with errors
            // that mean nothing (ffmpeg ignores them too).
            "_error" => !matches!(transaction, Some(2.0 | 3.0)),
            "onStatus" => status_field(values, "level") == Some("error"),
            _ => false,
        };
        if refused && !matches!(self.state, State::Answered { .. }) {
            self.state = State::Answered { stream_id: None };
            let field =
                |name| cut(status_field(values, name).unwrap_or_default(), MAX_REFUSAL_TEXT);
            return Ok(Some(PublishEvent::Refused {
                code: field("code"),
                description: field("description"),
            }));
        }
        match (self.state, name) {
            (State::Connecting, "_result") if transaction == Some(CONNECT) => {
                let key = string(&self.settings.key);
                for (command, transaction) in [("releaseStream", 2.0), ("FCPublish", 3.0)] {
                    let call = [string(command), Value::Number(transaction), Value::Null];
                    self.command(0, &[call[0].clone(), call[1].clone(), Value::Null, key.clone()]);
                }
                let create = [string("createStream"), Value::Number(CREATE_STREAM), Value::Null];
                self.command(0, &create);
                self.state = State::CreatingStream;
            }
            (State::CreatingStream, "_result") if transaction == Some(CREATE_STREAM) => {
                let stream_id = values
                    .get(3)
                    .and_then(Value::as_number)
                    .filter(|id| (1.0..=f64::from(u32::MAX)).contains(id))
                    .ok_or(PublishError::Misbehaved("createStream gave no stream id"))?
                    as u32;
                let publish = [
                    string("publish"),
                    Value::Number(PUBLISH),
                    Value::Null,
                    string(&self.settings.key),
                    string("live"),
                ];
                self.command(stream_id, &publish);
                self.state = State::Publishing { stream_id };
            }
            (State::Publishing { stream_id }, "onStatus")
                if status_field(values, "code") == Some("NetStream.Publish.Start") =>
            {
                self.state = State::Answered { stream_id: Some(stream_id) };
                return Ok(Some(PublishEvent::Started { stream_id }));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Appends an audio or video message (an FLV tag body) to `out`. Before the publish
    /// started there is no message stream: nothing is written.
    pub fn media(&mut self, kind: MediaKind, timestamp: u32, body: &[u8], out: &mut Vec<u8>) {
        let Some(stream_id) = self.stream_id() else { return };
        let (csid, type_id) = match kind {
            MediaKind::Audio => (CSID_AUDIO, AUDIO),
            MediaKind::Video => (CSID_VIDEO, VIDEO),
        };
        self.writer.write(csid, timestamp, type_id, stream_id, body, out);
    }

    /// Appends `@setDataFrame` with `values` (an FLV script tag's AMF0 values, usually
    /// `onMetaData` and its properties) to `out`, as ffmpeg sends it.
    pub fn data_frame(&mut self, values: &[u8], out: &mut Vec<u8>) {
        let Some(stream_id) = self.stream_id() else { return };
        let mut body = Vec::with_capacity(16 + values.len());
        amf0::encode(&string("@setDataFrame"), &mut body);
        body.extend_from_slice(values);
        self.writer.write(CSID_DATA, 0, DATA_AMF0, stream_id, &body, out);
    }

    /// Queues the end of the publish as OBS's "Stop Streaming" sends it: `FCUnpublish` and
    /// `deleteStream`.
    pub fn unpublish(&mut self) {
        let Some(stream_id) = self.stream_id() else { return };
        let key = string(&self.settings.key);
        self.command(0, &[string("FCUnpublish"), Value::Number(6.0), Value::Null, key]);
        let id = Value::Number(f64::from(stream_id));
        self.command(0, &[string("deleteStream"), Value::Number(7.0), Value::Null, id]);
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) {
        let mut body = Vec::new();
        for value in values {
            amf0::encode(value, &mut body);
        }
        self.writer.write(CSID_COMMAND, 0, COMMAND_AMF0, stream_id, &body, &mut self.output);
    }
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// A field of an `onStatus` or `_error` info object (the command's fourth value).
fn status_field<'a>(values: &'a [Value], name: &str) -> Option<&'a str> {
    values.get(3)?.get(name)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Action, Session};

    fn settings(key: &str) -> PublishSettings {
        PublishSettings {
            app: "live".into(),
            tc_url: "rtmp://127.0.0.1/live".into(),
            key: key.into(),
        }
    }

    /// Runs the publisher against the server session in memory until neither has anything
    /// to send; the server's publish requests are answered by `accept`.
    fn exchange(
        publisher: &mut Publisher,
        server: &mut Session,
        accept: bool,
    ) -> (Option<PublishEvent>, Vec<Action>) {
        let mut outcome = None;
        let mut media = Vec::new();
        loop {
            let bytes = publisher.take_output();
            if bytes.is_empty() {
                return (outcome, media);
            }
            let mut queue: std::collections::VecDeque<Action> =
                server.handle_bytes(&bytes).unwrap().into();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Send(reply) => {
                        if let Some(event) = publisher.handle_bytes(&reply).unwrap() {
                            outcome = Some(event);
                        }
                    }
                    Action::PublishRequested { request_id, key, .. } => {
                        assert_eq!(key, "the-key");
                        let answer = if accept {
                            server.accept_publish(request_id)
                        } else {
                            server.reject_publish(request_id, "NetStream.Publish.BadName", "no")
                        };
                        queue.extend(answer.unwrap());
                    }
                    other => media.push(other),
                }
            }
        }
    }

    #[test]
    fn publishes_to_the_server_session_and_sends_media_it_reads_back() {
        let mut publisher = Publisher::new(settings("the-key"), 7);
        let mut server = Session::new(1);
        let (outcome, _) = exchange(&mut publisher, &mut server, true);
        assert_eq!(outcome, Some(PublishEvent::Started { stream_id: 1 }));
        let mut wire = Vec::new();
        // A timestamp past the 24-bit field (extended timestamps) and a multi-chunk frame.
        publisher.media(MediaKind::Video, 0x0100_0000, &[7; 10_000], &mut wire);
        publisher.media(MediaKind::Video, 0x0100_0021, &[8; 100], &mut wire);
        publisher.media(MediaKind::Audio, 0x0100_0010, &[9; 20], &mut wire);
        publisher.unpublish();
        wire.extend(publisher.take_output());
        let actions = server.handle_bytes(&wire).unwrap();
        let media: Vec<(MediaKind, u32, usize)> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Media { kind, timestamp, payload } => {
                    Some((*kind, *timestamp, payload.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            media,
            [
                (MediaKind::Video, 0x0100_0000, 10_000),
                (MediaKind::Video, 0x0100_0021, 100),
                (MediaKind::Audio, 0x0100_0010, 20)
            ]
        );
        assert!(actions.contains(&Action::PublishEnded), "{actions:?}");
    }

    #[test]
    fn a_refusal_is_reported_with_its_code_and_no_media_goes_out() {
        let mut publisher = Publisher::new(settings("the-key"), 7);
        let mut server = Session::new(1);
        let (outcome, _) = exchange(&mut publisher, &mut server, false);
        let Some(PublishEvent::Refused { code, description }) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!((code.as_str(), description.as_str()), ("NetStream.Publish.BadName", "no"));
        let mut wire = Vec::new();
        publisher.media(MediaKind::Video, 0, &[1], &mut wire);
        assert!(wire.is_empty());
    }

    #[test]
    fn a_refusal_keeps_a_short_code_and_description() {
        let mut publisher = Publisher::new(settings("the-key"), 7);
        let long = "é".repeat(1 << 20);
        let info = Value::Object(vec![
            ("level".into(), string("error")),
            ("code".into(), Value::String(long.clone())),
            ("description".into(), Value::String(long)),
        ]);
        let status = [string("onStatus"), Value::Number(0.0), Value::Null, info];
        let Ok(Some(PublishEvent::Refused { code, description })) = publisher.answer(&status)
        else {
            panic!("not a refusal");
        };
        assert_eq!((code.len(), description.len()), (MAX_REFUSAL_TEXT, MAX_REFUSAL_TEXT));
    }

    /// The server's Window Acknowledgement Size gets acknowledgements, and its pings answers
    /// with the same timestamp (§5.4.3, §7.1.7).
    #[test]
    fn acknowledgements_and_ping_responses_go_out_as_the_server_asks() {
        let mut publisher = Publisher::new(settings("the-key"), 7);
        let mut server = Session::new(1);
        let (outcome, _) = exchange(&mut publisher, &mut server, true);
        assert!(matches!(outcome, Some(PublishEvent::Started { .. })));
        // The server side: a chunk writer as a server uses one.
        let mut writer = ChunkWriter::new();
        let mut wire = Vec::new();
        writer.write(2, 0, WINDOW_ACK_SIZE, 0, &5000u32.to_be_bytes(), &mut wire);
        writer.write(2, 0, USER_CONTROL, 0, &[0, 6, 0x12, 0x34, 0x56, 0x78], &mut wire);
        publisher.take_output();
        publisher.handle_bytes(&wire).unwrap();
        // One chunk on the control stream, its header continuing the last one (type 1: a
        // timestamp delta, the length and the type, 8 bytes with the basic header).
        let out = publisher.take_output();
        assert_eq!((out[0], out[7]), (1 << 6 | CSID_CONTROL, USER_CONTROL), "{out:?}");
        assert_eq!(&out[8..], &[0, 7, 0x12, 0x34, 0x56, 0x78]);
        // A window's worth of bytes later, one acknowledgement of everything read.
        let mut filler = Vec::new();
        writer.write(3, 0, 20, 0, &[5; 6000], &mut filler);
        publisher.handle_bytes(&filler).unwrap();
        let out = publisher.take_output();
        assert_eq!(out[7], ACKNOWLEDGEMENT, "{out:?}");
        let acked = u32::from_be_bytes(out[8..12].try_into().unwrap());
        assert!(acked as usize >= 6000 + wire.len(), "{acked}");
        assert!(publisher.take_output().is_empty());
    }

    #[test]
    fn a_server_speaking_another_version_is_an_error() {
        let mut publisher = Publisher::new(settings("k"), 1);
        let mut reply = vec![6u8];
        reply.extend(vec![0; 2 * HANDSHAKE_PACKET_LEN]);
        assert_eq!(publisher.handle_bytes(&reply), Err(PublishError::Version(6)));
    }
}
