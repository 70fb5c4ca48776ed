//! One RTMP connection's protocol state, from the handshake to the end of a publish.
//!
//! Implements the server side of the RTMP specification (Adobe, 2012) §5.4 (protocol
//! control messages, including acknowledgements), §6.2 (user control: Stream Begin) and
//! §7.2 (NetConnection `connect`, `createStream`; NetStream `publish`, `deleteStream`),
//! plus the `releaseStream`/`FCPublish`/`FCUnpublish` calls FMLE-style encoders (OBS,
//! ffmpeg) make, and NetStream `play` (§7.2.2.1) for players that pull a live stream
//! (ffplay, VLC, OBS's media source).
//!
//! The session never decides whether a publish or a play is allowed: it raises
//! [`Action::PublishRequested`] or [`Action::PlayRequested`] and waits for the caller's
//! answer, reading no further input meanwhile. A player's media is written by the caller
//! through [`Session::play_media`], straight into its output buffer.

use bytes::Bytes;

use crate::amf0::{self, AmfError, Value};
use crate::chunk::{ChunkError, ChunkLimits, ChunkReader, ChunkWriter, Message};
use crate::handshake::{Handshake, HandshakeError, Progress};

/// Message type ids (§5.4, §7.1).
mod message_type {
    pub(super) const SET_CHUNK_SIZE: u8 = 1;
    pub(super) const ABORT: u8 = 2;
    pub(super) const ACKNOWLEDGEMENT: u8 = 3;
    pub(super) const USER_CONTROL: u8 = 4;
    pub(super) const WINDOW_ACK_SIZE: u8 = 5;
    pub(super) const SET_PEER_BANDWIDTH: u8 = 6;
    pub(super) const AUDIO: u8 = 8;
    pub(super) const VIDEO: u8 = 9;
    pub(super) const DATA_AMF3: u8 = 15;
    pub(super) const COMMAND_AMF3: u8 = 17;
    pub(super) const DATA_AMF0: u8 = 18;
    pub(super) const COMMAND_AMF0: u8 = 20;
}

/// Chunk size this server sends with (ffmpeg and OBS use the same).
const OUTGOING_CHUNK_SIZE: u32 = 4096;
/// Acknowledgement window and peer bandwidth announced to the client (§5.4.4, §5.4.5).
const ACK_WINDOW: u32 = 2_500_000;
/// Chunk streams this server sends on (a player's media as ffmpeg and Nginx-RTMP send it:
/// audio and video on their own chunk streams, so their headers compress).
const CSID_PROTOCOL: u8 = 2;
const CSID_COMMAND: u8 = 3;
const CSID_STREAM: u8 = 5;
const CSID_AUDIO: u8 = 6;
const CSID_VIDEO: u8 = 7;
const CSID_DATA: u8 = 8;
/// Message streams one connection may create. Publishers create one.
const MAX_MESSAGE_STREAMS: u32 = 8;
/// Input held unparsed while a publish decision is pending. Encoders wait for
/// NetStream.Publish.Start before sending media, so anything near this is a flood.
pub const MAX_PENDING_INPUT: usize = 1 << 20;

/// Which kind of media a message carries (message types 8 and 9, §7.1.4 and §7.1.5); its
/// payload is an FLV tag body of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An FLV audio tag body.
    Audio,
    /// An FLV video tag body.
    Video,
}

/// A publisher's media or data, or a request the caller must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Bytes to write to the client, in order.
    Send(Bytes),
    /// The client asks to publish. Answer with [`Session::accept_publish`] or
    /// [`Session::reject_publish`]; the session reads no more input until then.
    PublishRequested {
        /// Identifies the request in the answer.
        request_id: u32,
        /// The application from `connect` (`live` in `rtmp://host/live`).
        app: String,
        /// The publishing name: the stream key. Secret: never log it.
        key: String,
    },
    /// An audio (type 8) or video (type 9) message of the accepted publish.
    Media {
        /// Audio or video.
        kind: MediaKind,
        /// RTMP timestamp in milliseconds.
        timestamp: u32,
        /// The FLV tag body.
        payload: Bytes,
    },
    /// `@setDataFrame onMetaData` from the publisher: encoder settings as it states them.
    Metadata(Vec<(String, Value)>),
    /// The client ended the publish (`FCUnpublish` or `deleteStream`).
    PublishEnded,
    /// The client asks to play a stream. Answer with [`Session::accept_play`] or
    /// [`Session::reject_play`]; the session reads no more input until then.
    PlayRequested {
        /// Identifies the request in the answer.
        request_id: u32,
        /// The application from `connect`.
        app: String,
        /// The stream name as the player gave it, with any `?query` (a viewer token).
        name: String,
    },
    /// The player stopped (`deleteStream`, `closeStream`).
    PlayEnded,
}

/// Why a session ended. Variants are the peer's fault unless stated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The chunk stream is broken or crossed a limit.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A command or data message does not decode.
    #[error("message type {type_id} on chunk stream {csid}: {source}")]
    Amf {
        /// Message type.
        type_id: u8,
        /// Chunk stream.
        csid: u32,
        /// The decoding error.
        source: AmfError,
    },
    /// Well-formed messages in an order the protocol does not allow.
    #[error("protocol violation: {0}")]
    Misbehaved(&'static str),
    /// The caller answered a request that is not pending (a bug in the caller).
    #[error("no pending publish request {0}")]
    UnknownRequest(u32),
}

/// Where the connection is.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Handshaking,
    /// Handshake done, waiting for `connect`.
    Connecting,
    /// `connect` accepted.
    Connected {
        app: String,
    },
    /// `publish` received, decision pending.
    AwaitingDecision {
        app: String,
        request_id: u32,
        stream_id: u32,
    },
    /// Publishing on `stream_id`.
    Publishing {
        app: String,
        stream_id: u32,
    },
    /// `play` received, decision pending.
    AwaitingPlay {
        request_id: u32,
        stream_id: u32,
    },
    /// Playing on `stream_id`: the caller writes media with [`Session::play_media`].
    Playing {
        stream_id: u32,
    },
    /// A publish was refused; input is ignored until the caller closes.
    Refused,
}

/// The protocol state of one connection.
///
/// Call [`Session::handle_bytes`] with everything read from the socket and perform the
/// returned actions in order. While a publish decision is pending, input is buffered, not
/// parsed; answering the request returns the actions of the buffered input.
#[derive(Debug, Clone)]
pub struct Session {
    state: State,
    handshake: Handshake,
    reader: ChunkReader,
    writer: ChunkWriter,
    /// Input not yet parsed: a partial chunk header, or everything while a decision is pending.
    input: Vec<u8>,
    /// Pending output, flushed into an [`Action::Send`] before any other action.
    output: Vec<u8>,
    actions: Vec<Action>,
    next_request_id: u32,
    next_stream_id: u32,
    /// `play2` was answered (once: each answer is ~16 times the request that asked for it).
    play2_answered: bool,
    /// The fault that ended the session; reported by every later call.
    failed: Option<SessionError>,
    /// Acknowledgement window the peer asked for (§5.4.4), once it did.
    peer_window: Option<u32>,
    /// Bytes received (after the handshake) and the count at the last acknowledgement.
    received: u64,
    last_ack: u64,
    /// What the client said about itself in `connect`.
    client: ClientInfo,
}

/// The client's `connect` properties that Nginx-RTMP passes to its callbacks; each cut to
/// [`MAX_CLIENT_FIELD`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// `tcUrl`: the URL the client connected to.
    pub tc_url: String,
    /// `flashVer`: the client's name and version (`FMLE/3.0 (compatible; obs-studio/30.0)`).
    pub flash_ver: String,
    /// `swfUrl`.
    pub swf_url: String,
    /// `pageUrl`.
    pub page_url: String,
}

/// The Enhanced RTMP video codecs (FourCC) this server takes, announced in the `connect`
/// answer to a client that sent its own `fourCcList` (E-RTMP v1, "Enhancing NetConnection
/// connect Command"). Whether the HLS variant can carry them is the packager's business.
pub const VIDEO_FOURCCS: [&str; 4] = ["hvc1", "av01", "vp09", "avc1"];

/// Longest `connect` property kept in [`ClientInfo`] (real ones are under 200 bytes).
pub const MAX_CLIENT_FIELD: usize = 1024;
/// Bytes of the `connect` application kept (`live`; OBS may append a slash or a query): it is
/// logged, sent in events and callbacks, and compared with the configured one.
pub const MAX_APP_LEN: usize = 128;
/// Bytes of the publishing name kept: the stream key, or a stream name with `?token=<jwt>`
/// (a JWT is a few hundred bytes). A longer name is cut, and no key or token then matches.
pub const MAX_PUBLISHING_NAME_LEN: usize = 4096;

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Session {
    /// A session waiting for the client's handshake. `seed` varies handshake filler bytes.
    pub fn new(seed: u32) -> Self {
        Self {
            state: State::Handshaking,
            handshake: Handshake::new(seed),
            reader: {
                // Nothing larger than a few commands until a publish is granted.
                let mut reader = ChunkReader::new();
                reader.set_limits(ChunkLimits::BEFORE_PUBLISH);
                reader
            },
            writer: ChunkWriter::new(),
            input: Vec::new(),
            output: Vec::new(),
            actions: Vec::new(),
            next_request_id: 1,
            next_stream_id: 1,
            play2_answered: false,
            failed: None,
            peer_window: None,
            received: 0,
            last_ack: 0,
            client: ClientInfo::default(),
        }
    }

    /// What the client said about itself in `connect` (empty before it).
    pub fn client_info(&self) -> &ClientInfo {
        &self.client
    }

    /// Whether the handshake has completed.
    pub fn handshake_done(&self) -> bool {
        self.state != State::Handshaking
    }

    /// Whether the client's `connect` was accepted (it may be publishing since).
    pub fn is_connected(&self) -> bool {
        !matches!(self.state, State::Handshaking | State::Connecting | State::Refused)
    }

    /// Whether the client is publishing (a publish was accepted and has not ended).
    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing { .. })
    }

    /// Whether the client is playing (a play was accepted).
    pub fn is_playing(&self) -> bool {
        matches!(self.state, State::Playing { .. })
    }

    /// Accepts the pending play `request_id`: the player is told Stream Begin,
    /// NetStream.Play.Reset and NetStream.Play.Start (what ffmpeg and VLC wait for), and
    /// buffered input is processed. Media follows through [`Session::play_media`].
    pub fn accept_play(&mut self, request_id: u32) -> Result<Vec<Action>, SessionError> {
        let State::AwaitingPlay { request_id: pending, stream_id } = self.state else {
            return Err(SessionError::UnknownRequest(request_id));
        };
        if pending != request_id {
            return Err(SessionError::UnknownRequest(request_id));
        }
        self.user_control_stream_begin(stream_id);
        self.on_status(stream_id, "status", "NetStream.Play.Reset", "Playing and resetting.");
        self.on_status(stream_id, "status", "NetStream.Play.Start", "Started playing.");
        let mut access = Vec::new();
        amf0::encode(&Value::String("|RtmpSampleAccess".into()), &mut access);
        amf0::encode(&Value::Boolean(true), &mut access);
        amf0::encode(&Value::Boolean(true), &mut access);
        let mut out = std::mem::take(&mut self.output);
        self.writer.write(CSID_DATA, 0, message_type::DATA_AMF0, stream_id, &access, &mut out);
        self.output = out;
        self.state = State::Playing { stream_id };
        let result = self.drive();
        self.finish(result)
    }

    /// Refuses the pending play `request_id` with an `onStatus` error carrying `code`
    /// (`NetStream.Play.StreamNotFound`, `NetStream.Play.Failed`) and `description`.
    /// Returns the bytes to send before closing the connection.
    pub fn reject_play(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<Action>, SessionError> {
        let State::AwaitingPlay { request_id: pending, stream_id } = self.state else {
            return Err(SessionError::UnknownRequest(request_id));
        };
        if pending != request_id {
            return Err(SessionError::UnknownRequest(request_id));
        }
        self.on_status(stream_id, "error", code, description);
        self.state = State::Refused;
        self.input.clear();
        Ok(self.take_actions())
    }

    /// Appends a player's audio or video message (an FLV tag body) to `out`; nothing unless
    /// a play was accepted.
    pub fn play_media(&mut self, kind: MediaKind, timestamp: u32, body: &[u8], out: &mut Vec<u8>) {
        let State::Playing { stream_id } = self.state else { return };
        let (csid, type_id) = match kind {
            MediaKind::Audio => (CSID_AUDIO, message_type::AUDIO),
            MediaKind::Video => (CSID_VIDEO, message_type::VIDEO),
        };
        self.writer.write(csid, timestamp, type_id, stream_id, body, out);
    }

    /// Appends `onMetaData` (its AMF0 values: the name and the properties) for a player.
    pub fn play_metadata(&mut self, values: &[u8], out: &mut Vec<u8>) {
        let State::Playing { stream_id } = self.state else { return };
        self.writer.write(CSID_DATA, 0, message_type::DATA_AMF0, stream_id, values, out);
    }

    /// Tells a player the stream ended (`NetStream.Play.UnpublishNotify`, then
    /// `NetStream.Play.Stop`), appended to `out`.
    pub fn play_ended(&mut self, out: &mut Vec<u8>) {
        let State::Playing { stream_id } = self.state else { return };
        self.on_status(stream_id, "status", "NetStream.Play.UnpublishNotify", "The stream ended.");
        self.on_status(stream_id, "status", "NetStream.Play.Stop", "Stopped playing.");
        out.append(&mut self.output);
        self.state = State::Refused;
    }

    /// Bytes queued for the client outside actions (answers while playing), appended to
    /// `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// Bytes of input held: partial messages plus unparsed bytes.
    pub fn buffered(&self) -> usize {
        self.reader.buffered() + self.input.len()
    }

    /// Feeds bytes read from the client.
    ///
    /// When the bytes hold good messages and then a fault, the good messages' actions are
    /// returned (nothing already accepted is lost) and the fault is kept: [`Session::error`]
    /// reports it, and every later call returns it.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<Vec<Action>, SessionError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.receive(bytes);
        self.finish(result)
    }

    /// The fault that ended the session, if one did.
    pub fn error(&self) -> Option<&SessionError> {
        self.failed.as_ref()
    }

    /// Returns the actions so far; a fault is kept, and returned at once if there are none.
    fn finish(&mut self, result: Result<(), SessionError>) -> Result<Vec<Action>, SessionError> {
        let actions = self.take_actions();
        match result {
            Ok(()) => Ok(actions),
            Err(error) => {
                self.failed = Some(error.clone());
                if actions.is_empty() { Err(error) } else { Ok(actions) }
            }
        }
    }

    fn receive(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if self.state == State::Handshaking {
            match self.handshake.handle_bytes(bytes)? {
                Progress::InProgress { reply } => {
                    self.output.extend_from_slice(&reply);
                }
                Progress::Done { consumed, reply } => {
                    self.output.extend_from_slice(&reply);
                    self.state = State::Connecting;
                    self.input.extend_from_slice(&bytes[consumed..]);
                    self.received += (bytes.len() - consumed) as u64;
                }
            }
        } else if self.state == State::Refused {
            // The refusal is sent; whatever follows is not even buffered.
            return Ok(());
        } else if self.input.is_empty()
            && !matches!(self.state, State::AwaitingDecision { .. } | State::AwaitingPlay { .. })
        {
            // The usual case: parsed straight from the caller's buffer, only the tail (a
            // partial chunk header, or what follows a publish request) is kept.
            self.received += bytes.len() as u64;
            self.acknowledge();
            let (used, result) = self.parse(bytes);
            self.input.extend_from_slice(&bytes[used..]);
            return result;
        } else {
            self.input.extend_from_slice(bytes);
            self.received += bytes.len() as u64;
            if matches!(self.state, State::AwaitingDecision { .. } | State::AwaitingPlay { .. })
                && self.input.len() > MAX_PENDING_INPUT
            {
                return Err(SessionError::Misbehaved(
                    "too much data while the publish decision was pending",
                ));
            }
        }
        self.acknowledge();
        self.drive()
    }

    /// Accepts the pending publish `request_id`: the client is told NetStream.Publish.Start
    /// and buffered input is processed.
    pub fn accept_publish(&mut self, request_id: u32) -> Result<Vec<Action>, SessionError> {
        let State::AwaitingDecision { app, request_id: pending, stream_id } = &self.state else {
            return Err(SessionError::UnknownRequest(request_id));
        };
        if *pending != request_id {
            return Err(SessionError::UnknownRequest(request_id));
        }
        let (app, stream_id) = (app.clone(), *stream_id);
        self.user_control_stream_begin(stream_id);
        self.on_status(stream_id, "status", "NetStream.Publish.Start", "Publishing started.");
        self.state = State::Publishing { app, stream_id };
        self.reader.set_limits(ChunkLimits::PUBLISHING);
        let result = self.drive();
        self.finish(result)
    }

    /// Refuses the pending publish `request_id` with an `onStatus` error carrying `code`
    /// (e.g. `NetStream.Publish.BadName`) and `description`, which encoders show to users.
    /// Returns the bytes to send before closing the connection.
    pub fn reject_publish(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<Action>, SessionError> {
        let State::AwaitingDecision { request_id: pending, stream_id, .. } = &self.state else {
            return Err(SessionError::UnknownRequest(request_id));
        };
        if *pending != request_id {
            return Err(SessionError::UnknownRequest(request_id));
        }
        let stream_id = *stream_id;
        self.on_status(stream_id, "error", code, description);
        self.state = State::Refused;
        self.input.clear();
        Ok(self.take_actions())
    }

    /// Parses buffered input until it runs out or a decision is needed.
    fn drive(&mut self) -> Result<(), SessionError> {
        let input = std::mem::take(&mut self.input);
        let (used, result) = self.parse(&input);
        self.input = input;
        self.input.drain(..used.min(self.input.len()));
        result
    }

    /// Parses `input` until it runs out or a decision is needed; returns the bytes used.
    fn parse(&mut self, input: &[u8]) -> (usize, Result<(), SessionError>) {
        let mut pos = 0;
        let result = loop {
            if matches!(
                self.state,
                State::AwaitingDecision { .. } | State::AwaitingPlay { .. } | State::Refused
            ) {
                break Ok(());
            }
            match self.reader.read(&input[pos..]) {
                Ok((used, message)) => {
                    pos += used;
                    match message {
                        Some(message) => {
                            if let Err(e) = self.handle_message(message) {
                                break Err(e);
                            }
                        }
                        None => break Ok(()),
                    }
                }
                Err(e) => break Err(e.into()),
            }
        };
        (pos, result)
    }

    fn handle_message(&mut self, message: Message) -> Result<(), SessionError> {
        use message_type::*;
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size = be_u32(&message.payload)
                    .ok_or(SessionError::Misbehaved("short Set Chunk Size"))?;
                self.reader.set_chunk_size(size)?;
            }
            ABORT => {
                let csid =
                    be_u32(&message.payload).ok_or(SessionError::Misbehaved("short Abort"))?;
                self.reader.abort(csid);
            }
            WINDOW_ACK_SIZE => {
                let size = be_u32(&message.payload)
                    .ok_or(SessionError::Misbehaved("short Window Acknowledgement Size"))?;
                self.peer_window = Some(size.max(1));
            }
            ACKNOWLEDGEMENT | USER_CONTROL | SET_PEER_BANDWIDTH => {}
            AUDIO | VIDEO => {
                let State::Publishing { stream_id, .. } = self.state else {
                    return Err(SessionError::Misbehaved("media before an accepted publish"));
                };
                if message.stream_id == stream_id {
                    self.flush_output();
                    let kind =
                        if message.type_id == AUDIO { MediaKind::Audio } else { MediaKind::Video };
                    self.actions.push(Action::Media {
                        kind,
                        timestamp: message.timestamp,
                        payload: message.payload,
                    });
                }
            }
            COMMAND_AMF0 | COMMAND_AMF3 => {
                let body = skip_amf3_marker(&message);
                let values = amf0::decode_all(body).map_err(|source| SessionError::Amf {
                    type_id: message.type_id,
                    csid: message.csid,
                    source,
                })?;
                self.handle_command(message.stream_id, values)?;
            }
            // Data messages matter only while publishing: before, they are not even decoded.
            DATA_AMF0 | DATA_AMF3 if self.is_publishing() => {
                let body = skip_amf3_marker(&message);
                // Data messages are informational: one that does not decode is dropped.
                if let Ok(values) = amf0::decode_all(body) {
                    self.handle_data(values);
                }
            }
            // Shared objects, aggregates and unknown types carry nothing a publisher needs.
            _ => {}
        }
        Ok(())
    }

    fn handle_command(&mut self, stream_id: u32, values: Vec<Value>) -> Result<(), SessionError> {
        let mut values = values.into_iter();
        let Some(Value::String(name)) = values.next() else {
            return Err(SessionError::Misbehaved("command without a name"));
        };
        let transaction = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Value::Null);
        let args: Vec<Value> = values.collect();
        match name.as_str() {
            "connect" => {
                if self.state != State::Connecting {
                    return Err(SessionError::Misbehaved("second connect"));
                }
                let app = command_object
                    .get("app")
                    .and_then(Value::as_str)
                    .ok_or(SessionError::Misbehaved("connect without an app"))?;
                // OBS and some tools append a slash or a query string to the app.
                let app = app.split('?').next().unwrap_or_default().trim_end_matches('/');
                let app = cut(app, MAX_APP_LEN);
                let property = |name: &str| {
                    let text = command_object.get(name).and_then(Value::as_str).unwrap_or_default();
                    cut(text, MAX_CLIENT_FIELD)
                };
                self.client = ClientInfo {
                    tc_url: property("tcUrl"),
                    flash_ver: property("flashVer"),
                    swf_url: property("swfUrl"),
                    page_url: property("pageUrl"),
                };
                let encoding = command_object.get("objectEncoding").and_then(Value::as_number);
                // An Enhanced RTMP client lists the codecs it can send; it is told ours.
                let enhanced = command_object.get("fourCcList").is_some();
                self.accept_connect(transaction, encoding.unwrap_or(0.0), enhanced);
                self.state = State::Connected { app };
            }
            "createStream" => {
                self.require_connected()?;
                if self.next_stream_id > MAX_MESSAGE_STREAMS {
                    return Err(SessionError::Misbehaved("too many createStream calls"));
                }
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                self.result(transaction, vec![Value::Null, Value::Number(f64::from(id))]);
            }
            "releaseStream" | "FCPublish" => {
                self.require_connected()?;
                if transaction != 0.0 {
                    self.result(transaction, vec![Value::Null, Value::Undefined]);
                }
            }
            "publish" => {
                let State::Connected { app } = &self.state else {
                    return Err(SessionError::Misbehaved("publish before connect, or twice"));
                };
                if stream_id == 0 || stream_id >= self.next_stream_id {
                    return Err(SessionError::Misbehaved("publish on a stream never created"));
                }
                let key = args.first().and_then(Value::as_str).unwrap_or_default();
                let key = cut(key, MAX_PUBLISHING_NAME_LEN);
                let app = app.clone();
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                self.state = State::AwaitingDecision { app: app.clone(), request_id, stream_id };
                self.flush_output();
                self.actions.push(Action::PublishRequested { request_id, app, key });
            }
            "closeStream" | "deleteStream" if self.is_playing() => {
                self.state = State::Refused;
                self.flush_output();
                self.actions.push(Action::PlayEnded);
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if let State::Publishing { app, stream_id } = &self.state {
                    let (app, stream_id) = (app.clone(), *stream_id);
                    self.on_status(
                        stream_id,
                        "status",
                        "NetStream.Unpublish.Success",
                        "Stopped publishing.",
                    );
                    self.state = State::Connected { app };
                    self.flush_output();
                    self.actions.push(Action::PublishEnded);
                }
            }
            "play" => {
                let State::Connected { app } = &self.state else {
                    return Err(SessionError::Misbehaved("play before connect, or twice"));
                };
                if stream_id == 0 || stream_id >= self.next_stream_id {
                    return Err(SessionError::Misbehaved("play on a stream never created"));
                }
                let name = args.first().and_then(Value::as_str).unwrap_or_default();
                let name = cut(name, MAX_PUBLISHING_NAME_LEN);
                let app = app.clone();
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                self.state = State::AwaitingPlay { request_id, stream_id };
                self.flush_output();
                self.actions.push(Action::PlayRequested { request_id, app, name });
            }
            "play2" => {
                self.require_connected()?;
                // Answered once: an answer costs ~16 times its request, and a client that
                // asks again after being refused is not switching bit rates but flooding.
                if std::mem::replace(&mut self.play2_answered, true) {
                    return Err(SessionError::Misbehaved("play2 repeated after its refusal"));
                }
                self.on_status(
                    stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "play2 (bitrate switching) is not served; use play.",
                );
            }

            // getStreamLength, _checkbw, ping replies and other calls: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn handle_data(&mut self, values: Vec<Value>) {
        let mut values = values.into_iter();
        let mut first = values.next();
        if first.as_ref().and_then(Value::as_str) == Some("@setDataFrame") {
            first = values.next();
        }
        if first.as_ref().and_then(Value::as_str) != Some("onMetaData") {
            return;
        }
        if let Some(Value::EcmaArray(props) | Value::Object(props)) = values.next() {
            self.flush_output();
            self.actions.push(Action::Metadata(props));
        }
    }

    fn require_connected(&self) -> Result<(), SessionError> {
        match self.state {
            State::Handshaking | State::Connecting => {
                Err(SessionError::Misbehaved("command before connect"))
            }
            _ => Ok(()),
        }
    }

    fn accept_connect(&mut self, transaction: f64, object_encoding: f64, enhanced: bool) {
        use message_type::*;
        let mut out = std::mem::take(&mut self.output);
        self.writer.write(
            CSID_PROTOCOL,
            0,
            WINDOW_ACK_SIZE,
            0,
            &ACK_WINDOW.to_be_bytes(),
            &mut out,
        );
        let mut bandwidth = ACK_WINDOW.to_be_bytes().to_vec();
        bandwidth.push(2); // dynamic
        self.writer.write(CSID_PROTOCOL, 0, SET_PEER_BANDWIDTH, 0, &bandwidth, &mut out);
        self.writer.write(
            CSID_PROTOCOL,
            0,
            SET_CHUNK_SIZE,
            0,
            &OUTGOING_CHUNK_SIZE.to_be_bytes(),
            &mut out,
        );
        self.output = out;
        self.writer.set_chunk_size(OUTGOING_CHUNK_SIZE);
        let mut properties = vec![
            ("fmsVer".into(), Value::String("FMS/3,5,7,7009".into())),
            ("capabilities".into(), Value::Number(31.0)),
        ];
        if enhanced {
            let codecs = VIDEO_FOURCCS.iter().map(|c| Value::String((*c).into())).collect();
            properties.push(("fourCcList".into(), Value::StrictArray(codecs)));
        }
        let properties = Value::Object(properties);
        let information = Value::Object(vec![
            ("level".into(), Value::String("status".into())),
            ("code".into(), Value::String("NetConnection.Connect.Success".into())),
            ("description".into(), Value::String("Connection succeeded.".into())),
            ("objectEncoding".into(), Value::Number(object_encoding)),
        ]);
        self.result(transaction, vec![properties, information]);
    }

    fn result(&mut self, transaction: f64, mut values: Vec<Value>) {
        values.insert(0, Value::Number(transaction));
        values.insert(0, Value::String("_result".into()));
        self.command(CSID_COMMAND, 0, &values);
    }

    fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = Value::Object(vec![
            ("level".into(), Value::String(level.into())),
            ("code".into(), Value::String(code.into())),
            ("description".into(), Value::String(description.into())),
        ]);
        let values = [Value::String("onStatus".into()), Value::Number(0.0), Value::Null, info];
        self.command(CSID_STREAM, stream_id, &values);
    }

    fn user_control_stream_begin(&mut self, stream_id: u32) {
        let mut payload = vec![0, 0]; // event type 0: Stream Begin
        payload.extend_from_slice(&stream_id.to_be_bytes());
        let mut out = std::mem::take(&mut self.output);
        self.writer.write(CSID_PROTOCOL, 0, message_type::USER_CONTROL, 0, &payload, &mut out);
        self.output = out;
    }

    fn command(&mut self, csid: u8, stream_id: u32, values: &[Value]) {
        let mut body = Vec::with_capacity(256);
        for value in values {
            amf0::encode(value, &mut body);
        }
        let mut out = std::mem::take(&mut self.output);
        self.writer.write(csid, 0, message_type::COMMAND_AMF0, stream_id, &body, &mut out);
        self.output = out;
    }

    /// Sends an Acknowledgement each time another window of bytes has arrived (§5.4.3); its
    /// sequence number is the total received so far, modulo 2^32.
    fn acknowledge(&mut self) {
        let Some(window) = self.peer_window else { return };
        if self.received - self.last_ack >= u64::from(window) {
            self.last_ack = self.received;
            let sequence = (self.received & 0xffff_ffff) as u32;
            let mut out = std::mem::take(&mut self.output);
            self.writer.write(
                CSID_PROTOCOL,
                0,
                message_type::ACKNOWLEDGEMENT,
                0,
                &sequence.to_be_bytes(),
                &mut out,
            );
            self.output = out;
        }
    }

    fn flush_output(&mut self) {
        if !self.output.is_empty() {
            let bytes = Bytes::from(std::mem::take(&mut self.output));
            self.actions.push(Action::Send(bytes));
        }
    }

    fn take_actions(&mut self) -> Vec<Action> {
        self.flush_output();
        std::mem::take(&mut self.actions)
    }
}

fn be_u32(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// AMF3 command and data messages (types 17 and 15) start with a format byte, then AMF0.
fn skip_amf3_marker(message: &Message) -> &[u8] {
    if matches!(message.type_id, message_type::COMMAND_AMF3 | message_type::DATA_AMF3) {
        message.payload.get(1..).unwrap_or_default()
    } else {
        &message.payload
    }
}

#[cfg(test)]
mod tests;
