//! In-memory protocol tests: a scripted publisher's bytes in, the session's actions and
//! replies out, no sockets. The publisher speaks as ffmpeg does (same command sequence,
//! chunk size 4096 after connect).
//!
//! Test code only: every panicking accessor here works on bytes the test itself wrote, and a
//! failure is a failed test, never a crash of the server.

// ok: already under #[cfg(test)] in session.rs; repeated so the file says what it is.
#![cfg(test)]

use super::*;
use crate::chunk::{ChunkReader, ChunkWriter};
use crate::handshake::HANDSHAKE_PACKET_LEN;

/// A scripted client: builds the bytes a publisher sends, without reading the answers, in
/// any order a test wants. Independent of [`crate::client::Publisher`] on purpose: these
/// tests send what no well-behaved publisher would (commands out of order, bad chunk sizes),
/// and a test of the session must not share its encoder with the code under test's peer.
struct Client {
    writer: ChunkWriter,
    wire: Vec<u8>,
}

impl Client {
    fn new() -> Self {
        let mut wire = vec![3];
        wire.extend((0..HANDSHAKE_PACKET_LEN).map(|i| i as u8)); // C1
        wire.extend(vec![0; HANDSHAKE_PACKET_LEN]); // C2
        Self { writer: ChunkWriter::new(), wire }
    }

    fn command(&mut self, stream_id: u32, values: &[Value]) -> &mut Self {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(v, &mut body);
        }
        let csid = if stream_id == 0 { 3 } else { 8 };
        self.writer.write(csid, 0, message_type::COMMAND_AMF0, stream_id, &body, &mut self.wire);
        self
    }

    fn set_chunk_size(&mut self, size: u32) -> &mut Self {
        self.writer.write(
            2,
            0,
            message_type::SET_CHUNK_SIZE,
            0,
            &size.to_be_bytes(),
            &mut self.wire,
        );
        self.writer.set_chunk_size(size);
        self
    }

    fn connect(&mut self, app: &str) -> &mut Self {
        let object = Value::Object(vec![
            ("app".into(), Value::String(app.into())),
            ("type".into(), Value::String("nonprivate".into())),
            ("tcUrl".into(), Value::String(format!("rtmp://127.0.0.1/{app}"))),
        ]);
        self.command(0, &[s("connect"), Value::Number(1.0), object])
    }

    /// What ffmpeg sends after connect, up to and including publish.
    fn publish(&mut self, key: &str) -> &mut Self {
        self.command(0, &[s("releaseStream"), Value::Number(2.0), Value::Null, s(key)]);
        self.command(0, &[s("FCPublish"), Value::Number(3.0), Value::Null, s(key)]);
        self.command(0, &[s("createStream"), Value::Number(4.0), Value::Null]);
        self.command(1, &[s("publish"), Value::Number(5.0), Value::Null, s(key), s("live")])
    }

    fn media(&mut self, type_id: u8, timestamp: u32, payload: &[u8]) -> &mut Self {
        let csid = if type_id == message_type::AUDIO { 4 } else { 6 };
        self.writer.write(csid, timestamp, type_id, 1, payload, &mut self.wire);
        self
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.wire)
    }
}

/// The fault a fresh session ends with after `bytes` (returned at once, or kept after the
/// actions of the good messages before it).
fn fault(bytes: &[u8]) -> Option<SessionError> {
    let mut session = Session::new(1);
    match session.handle_bytes(bytes) {
        Err(e) => Some(e),
        Ok(_) => session.error().cloned(),
    }
}

fn s(text: &str) -> Value {
    Value::String(text.into())
}

/// Decodes the server's replies (after S0, S1, S2) into (type id, stream id, AMF values).
fn replies(bytes: &[u8]) -> Vec<(u8, u32, Vec<Value>)> {
    let mut reader = ChunkReader::new();
    let mut rest = &bytes[1 + 2 * HANDSHAKE_PACKET_LEN..];
    let mut out = Vec::new();
    loop {
        let (used, message) = reader.read(rest).unwrap();
        rest = &rest[used..];
        let Some(message) = message else { break };
        if message.type_id == message_type::SET_CHUNK_SIZE {
            reader.set_chunk_size(be_u32(&message.payload).unwrap()).unwrap();
        }
        let values = if message.type_id == message_type::COMMAND_AMF0 {
            amf0::decode_all(&message.payload).unwrap()
        } else {
            vec![Value::Number(f64::from(be_u32(&message.payload).unwrap_or(0)))]
        };
        out.push((message.type_id, message.stream_id, values));
    }
    assert!(rest.is_empty(), "trailing reply bytes");
    out
}

fn sent(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn non_send(actions: Vec<Action>) -> Vec<Action> {
    actions.into_iter().filter(|a| !matches!(a, Action::Send(_))).collect()
}

fn status_code(values: &[Value]) -> Option<(&str, &str)> {
    let info = values.get(3)?;
    Some((info.get("level")?.as_str()?, info.get("code")?.as_str()?))
}

#[test]
fn ffmpeg_style_publish_is_requested_then_accepted() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").set_chunk_size(4096).publish("secret-key");
    let actions = session.handle_bytes(&client.take()).unwrap();
    let mut wire = sent(&actions);
    assert_eq!(
        non_send(actions),
        [Action::PublishRequested { request_id: 1, app: "live".into(), key: "secret-key".into() }]
    );

    // Media the client sends before the answer waits for it.
    client.media(message_type::VIDEO, 0, &[0x17, 0, 0, 0, 0]);
    assert_eq!(non_send(session.handle_bytes(&client.take()).unwrap()), []);

    let actions = session.accept_publish(1).unwrap();
    wire.extend(sent(&actions));
    assert_eq!(
        non_send(actions),
        [Action::Media {
            kind: MediaKind::Video,
            timestamp: 0,
            payload: Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        }]
    );
    assert!(session.is_publishing());

    let replies = replies(&wire);
    let types: Vec<u8> = replies.iter().map(|r| r.0).collect();
    // Window ack size, peer bandwidth, chunk size, connect result, releaseStream and
    // FCPublish results, createStream result, Stream Begin, onStatus.
    assert_eq!(types, [5, 6, 1, 20, 20, 20, 20, 4, 20]);
    let connect = &replies[3].2;
    assert_eq!(connect[0].as_str(), Some("_result"));
    assert_eq!(connect[1].as_number(), Some(1.0));
    assert_eq!(
        connect[3].get("code").and_then(Value::as_str),
        Some("NetConnection.Connect.Success")
    );
    let create = &replies[6].2;
    assert_eq!((create[1].as_number(), create[3].as_number()), (Some(4.0), Some(1.0)));
    assert_eq!(replies[8].1, 1);
    assert_eq!(status_code(&replies[8].2), Some(("status", "NetStream.Publish.Start")));
}

#[test]
fn rejected_publish_gets_an_onstatus_error_and_no_media() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("wrong").media(message_type::AUDIO, 0, &[0xaf, 0, 0x12, 0x10]);
    let mut wire = sent(&session.handle_bytes(&client.take()).unwrap());
    let actions =
        session.reject_publish(1, "NetStream.Publish.BadName", "unknown stream key").unwrap();
    wire.extend(sent(&actions));
    assert_eq!(non_send(actions), []);
    let last = replies(&wire).pop().unwrap();
    assert_eq!(last.1, 1);
    assert_eq!(last.2[0].as_str(), Some("onStatus"));
    assert_eq!(status_code(&last.2), Some(("error", "NetStream.Publish.BadName")));
    assert_eq!(last.2[3].get("description").and_then(Value::as_str), Some("unknown stream key"));
    // Whatever follows is ignored.
    client.media(message_type::AUDIO, 20, &[0xaf, 1, 0x21]);
    assert_eq!(non_send(session.handle_bytes(&client.take()).unwrap()), []);
    assert!(!session.is_publishing());
}

#[test]
fn any_split_of_the_input_gives_the_same_actions() {
    let mut client = Client::new();
    client.connect("live/").set_chunk_size(4096).publish("k");
    let head = client.take();
    let frame: Vec<u8> = (0..9000).map(|i| i as u8).collect();
    client.media(message_type::VIDEO, 0, &frame).media(message_type::AUDIO, 5, &[0xaf, 1, 2]);
    client.command(1, &[s("FCUnpublish"), Value::Number(6.0), Value::Null, s("k")]);
    let tail = client.take();

    let run = |step: usize| {
        let mut session = Session::new(1);
        let mut actions = Vec::new();
        for piece in head.chunks(step) {
            actions.extend(non_send(session.handle_bytes(piece).unwrap()));
        }
        actions.extend(non_send(session.accept_publish(1).unwrap()));
        for piece in tail.chunks(step) {
            actions.extend(non_send(session.handle_bytes(piece).unwrap()));
        }
        actions
    };
    let expected = run(head.len().max(tail.len()));
    assert_eq!(expected.len(), 4);
    assert_eq!(
        expected[0],
        Action::PublishRequested { request_id: 1, app: "live".into(), key: "k".into() }
    );
    assert_eq!(expected[3], Action::PublishEnded);
    for step in [1, 2, 3, 13, 128, 1537, 4097] {
        assert_eq!(run(step), expected, "step {step}");
    }
}

#[test]
fn metadata_is_passed_on_while_publishing() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    session.accept_publish(1).unwrap();
    let mut body = Vec::new();
    for v in [
        s("@setDataFrame"),
        s("onMetaData"),
        Value::EcmaArray(vec![("width".into(), Value::Number(1280.0))]),
    ] {
        amf0::encode(&v, &mut body);
    }
    client.writer.write(4, 0, message_type::DATA_AMF0, 1, &body, &mut client.wire);
    assert_eq!(
        non_send(session.handle_bytes(&client.take()).unwrap()),
        [Action::Metadata(vec![("width".into(), Value::Number(1280.0))])]
    );
}

#[test]
fn acknowledgements_carry_the_running_total() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    session.accept_publish(1).unwrap();
    client.writer.write(
        2,
        0,
        message_type::WINDOW_ACK_SIZE,
        0,
        &1000u32.to_be_bytes(),
        &mut client.wire,
    );
    let frame = vec![0x27; 600];
    let mut total = 0u64;
    let mut acks = Vec::new();
    for i in 0..5 {
        client.media(message_type::VIDEO, i * 33, &frame);
        let bytes = client.take();
        total += bytes.len() as u64;
        for action in session.handle_bytes(&bytes).unwrap() {
            if let Action::Send(b) = action {
                // Acknowledgement: type 3 on chunk stream 2, 4-byte body.
                assert_eq!((b[0], b[7]), (2, message_type::ACKNOWLEDGEMENT));
                acks.push(be_u32(&b[12..]).unwrap());
            }
        }
    }
    assert_eq!(acks.len(), 2, "{acks:?}");
    // Each acknowledgement is a running total, and the totals grow.
    assert!(acks[0] >= 1000 && acks[1] >= acks[0] + 1000 && u64::from(acks[1]) <= total);
}

#[test]
fn out_of_order_commands_are_protocol_violations() {
    let mut client = Client::new();
    client.command(1, &[s("publish"), Value::Number(5.0), Value::Null, s("k"), s("live")]);
    assert_eq!(
        fault(&client.take()),
        Some(SessionError::Misbehaved("publish before connect, or twice"))
    );

    let mut client = Client::new();
    client.connect("live");
    client.command(1, &[s("publish"), Value::Number(5.0), Value::Null, s("k"), s("live")]);
    assert_eq!(
        fault(&client.take()),
        Some(SessionError::Misbehaved("publish on a stream never created"))
    );

    let mut client = Client::new();
    client.connect("live").media(message_type::VIDEO, 0, &[0x17]);
    assert_eq!(
        fault(&client.take()),
        Some(SessionError::Misbehaved("media before an accepted publish"))
    );

    let mut client = Client::new();
    client.command(0, &[Value::Number(1.0)]);
    assert_eq!(fault(&client.take()), Some(SessionError::Misbehaved("command without a name")));
}

#[test]
fn a_command_with_missing_values_is_not_a_panic() {
    // rml_rtmp 0.8 panics on an AMF0 command with fewer than three values.
    for values in
        [vec![s("connect")], vec![s("createStream")], vec![s("publish"), Value::Number(1.0)]]
    {
        let mut client = Client::new();
        client.command(0, &values);
        let _ = Session::new(1).handle_bytes(&client.take());
    }
}

#[test]
fn bad_chunk_size_ends_the_session() {
    for size in [0, 1, 0x7fff_ffff] {
        let mut client = Client::new();
        client.writer.write(
            2,
            0,
            message_type::SET_CHUNK_SIZE,
            0,
            &u32::to_be_bytes(size),
            &mut client.wire,
        );
        assert_eq!(
            fault(&client.take()),
            Some(SessionError::Chunk(ChunkError::BadChunkSize(size)))
        );
    }
}

/// Before a publish is granted a client may send only what encoders send then: commands of
/// a few hundred bytes. A large message ends the session; a data message is not decoded.
#[test]
fn before_a_publish_only_small_messages_are_read_and_data_is_not_decoded() {
    use crate::chunk::MAX_MESSAGE_LEN_BEFORE_PUBLISH;
    let mut client = Client::new();
    client.connect("live").set_chunk_size(65_536);
    let big = vec![0x05; MAX_MESSAGE_LEN_BEFORE_PUBLISH + 1];
    client.writer.write(5, 0, message_type::DATA_AMF0, 0, &big, &mut client.wire);
    let limit = MAX_MESSAGE_LEN_BEFORE_PUBLISH;
    assert!(matches!(
        fault(&client.take()),
        Some(SessionError::Chunk(ChunkError::MessageTooLong { limit: l, .. })) if l == limit
    ));

    // At the limit, a data message of nulls (a 32-fold decode) is skipped, not decoded.
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").set_chunk_size(65_536);
    let nulls = vec![0x05; MAX_MESSAGE_LEN_BEFORE_PUBLISH];
    client.writer.write(5, 0, message_type::DATA_AMF0, 0, &nulls, &mut client.wire);
    client.publish("k");
    let actions = non_send(session.handle_bytes(&client.take()).unwrap());
    assert!(matches!(actions[..], [Action::PublishRequested { .. }]), "{actions:?}");

    // Once granted, large messages pass (a keyframe, metadata).
    session.accept_publish(1).unwrap();
    let keyframe = vec![0x17; 1 << 20];
    client.media(message_type::VIDEO, 0, &keyframe);
    let actions = non_send(session.handle_bytes(&client.take()).unwrap());
    assert!(matches!(&actions[..], [Action::Media { payload, .. }] if payload.len() == 1 << 20));
}

#[test]
fn unknown_answer_is_a_caller_error() {
    let mut session = Session::new(1);
    assert_eq!(session.accept_publish(3), Err(SessionError::UnknownRequest(3)));
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    assert_eq!(session.reject_publish(2, "x", "y"), Err(SessionError::UnknownRequest(2)));
    assert!(session.accept_publish(1).is_ok());
}

/// The bytes a publisher sends for a whole clip: handshake, connect, publish, every tag of
/// the clip as RTMP audio/video messages, FCUnpublish.
fn publish_wire(clip: testkit::Clip) -> Vec<u8> {
    let mut client = Client::new();
    client.connect("live").set_chunk_size(4096).publish("k");
    for tag in testkit::flv::read_tags(&testkit::clip(clip)) {
        if tag.tag_type == 8 || tag.tag_type == 9 {
            client.media(tag.tag_type, tag.timestamp, &tag.data);
        }
    }
    client.command(1, &[s("FCUnpublish"), Value::Number(9.0), Value::Null, s("k")]);
    client.take()
}

/// Feeds `wire` in pieces cut at `cuts` (byte counts), accepting the publish when asked, and
/// remuxes the media: returns the segments.
fn segments_of(wire: &[u8], cuts: &[usize]) -> Vec<packager::Segment> {
    let mut session = Session::new(1);
    let mut remuxer = packager::Remuxer::new(packager::RemuxerConfig::default());
    let mut segments = Vec::new();
    let mut handle =
        |actions: Vec<Action>, session: &mut Session, segments: &mut Vec<packager::Segment>| {
            let mut queue: std::collections::VecDeque<Action> = actions.into();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::PublishRequested { request_id, .. } => {
                        queue.extend(session.accept_publish(request_id).unwrap());
                    }
                    Action::Media { kind, timestamp, payload } => {
                        let kind = match kind {
                            MediaKind::Audio => packager::TagKind::Audio,
                            MediaKind::Video => packager::TagKind::Video,
                        };
                        let _ = remuxer.push(kind, timestamp, &payload);
                        segments.extend(std::iter::from_fn(|| remuxer.pull()));
                    }
                    Action::PublishEnded => {
                        remuxer.finish();
                        segments.extend(std::iter::from_fn(|| remuxer.pull()));
                    }
                    _ => {}
                }
            }
        };
    let mut rest = wire;
    for &cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
        let (piece, tail) = rest.split_at(cut.min(rest.len()));
        let actions = session.handle_bytes(piece).unwrap();
        handle(actions, &mut session, &mut segments);
        rest = tail;
    }
    segments
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Bytes in, segments out: how TCP happens to cut the stream never changes the result.
    #[test]
    fn any_split_of_a_real_publish_gives_the_same_segments(
        cuts in proptest::collection::vec(1usize..20_000, 0..40)
    ) {
        use std::sync::OnceLock;
        static REFERENCE: OnceLock<(Vec<u8>, Vec<packager::Segment>)> = OnceLock::new();
        let (wire, expected) = REFERENCE.get_or_init(|| {
            let wire = publish_wire(testkit::Clip::AvSmall);
            let segments = segments_of(&wire, &[]);
            (wire, segments)
        });
        proptest::prop_assert!(expected.len() >= 2);
        proptest::prop_assert_eq!(&segments_of(wire, &cuts), expected);
    }
}

#[test]
fn input_while_a_decision_is_pending_is_bounded() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    let flood = vec![0xc4; 64 << 10];
    let mut result = Ok(Vec::new());
    for _ in 0..=(MAX_PENDING_INPUT / flood.len()) {
        result = session.handle_bytes(&flood);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(SessionError::Misbehaved("too much data while the publish decision was pending"))
    );
    assert!(session.buffered() <= MAX_PENDING_INPUT + flood.len());
}

#[test]
fn nothing_is_buffered_after_a_refusal() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    session.reject_publish(1, "NetStream.Publish.BadName", "no").unwrap();
    for _ in 0..100 {
        session.handle_bytes(&[0; 4096]).unwrap();
    }
    assert_eq!(session.buffered(), 0);
}

#[test]
fn good_messages_before_a_fault_in_the_same_read_are_not_lost() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").publish("k");
    session.handle_bytes(&client.take()).unwrap();
    session.accept_publish(1).unwrap();
    client.media(message_type::VIDEO, 0, &[0x17, 0, 0, 0, 0]);
    let mut bytes = client.take();
    // Then a compressed header on a chunk stream never seen.
    bytes.extend_from_slice(&[0xe1, 0, 0]);
    let actions = non_send(session.handle_bytes(&bytes).unwrap());
    assert_eq!(actions.len(), 1, "the media message before the fault was dropped");
    let fault = SessionError::Chunk(ChunkError::NoPreviousHeader { csid: 33, fmt: 3 });
    assert_eq!(session.error(), Some(&fault));
    assert_eq!(session.handle_bytes(&[0]), Err(fault));
}

#[test]
fn connect_properties_are_kept_for_callbacks_and_cut_to_the_limit() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    let long_page = format!("https://example.com/{}", "é".repeat(MAX_CLIENT_FIELD));
    let object = Value::Object(vec![
        ("app".into(), s("live")),
        ("flashVer".into(), s("FMLE/3.0 (compatible; obs-studio/30.0)")),
        ("tcUrl".into(), s("rtmp://127.0.0.1/live")),
        ("pageUrl".into(), Value::String(long_page)),
    ]);
    client.command(0, &[s("connect"), Value::Number(1.0), object]);
    assert_eq!(session.client_info(), &ClientInfo::default());
    session.handle_bytes(&client.take()).unwrap();
    let info = session.client_info();
    assert_eq!(info.flash_ver, "FMLE/3.0 (compatible; obs-studio/30.0)");
    assert_eq!(info.tc_url, "rtmp://127.0.0.1/live");
    assert_eq!(info.swf_url, "");
    assert!(info.page_url.len() <= MAX_CLIENT_FIELD && info.page_url.len() > MAX_CLIENT_FIELD - 2);
    assert!(info.page_url.starts_with("https://example.com/é"));
}

/// What ffmpeg and ffplay send to play: createStream, then play on the new stream.
#[test]
fn a_play_is_requested_then_accepted_and_media_reaches_the_player() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live").set_chunk_size(4096);
    client.command(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
    client.command(
        1,
        &[s("play"), Value::Number(3.0), Value::Null, s("cam?token=t"), Value::Number(-2000.0)],
    );
    let actions = session.handle_bytes(&client.take()).unwrap();
    let mut wire = sent(&actions);
    assert_eq!(
        non_send(actions),
        [Action::PlayRequested { request_id: 1, app: "live".into(), name: "cam?token=t".into() }]
    );
    let actions = session.accept_play(1).unwrap();
    wire.extend(sent(&actions));
    assert!(session.is_playing() && !session.is_publishing());
    // The player's media, on the played stream.
    session.play_media(MediaKind::Video, 40, &[0x17, 1, 0, 0, 0, 9], &mut wire);
    session.play_media(MediaKind::Audio, 41, &[0xaf, 1, 7], &mut wire);
    let replies = replies(&wire);
    let statuses: Vec<_> = replies.iter().filter_map(|r| status_code(&r.2)).collect();
    assert_eq!(
        statuses[1..],
        [("status", "NetStream.Play.Reset"), ("status", "NetStream.Play.Start")]
    );
    let media: Vec<(u8, u32)> =
        replies.iter().filter(|r| r.0 == 8 || r.0 == 9).map(|r| (r.0, r.1)).collect();
    assert_eq!(media, [(9, 1), (8, 1)]);
    // A player sending media is misbehaving; deleteStream ends the play.
    client.command(0, &[s("deleteStream"), Value::Number(4.0), Value::Null, Value::Number(1.0)]);
    assert_eq!(non_send(session.handle_bytes(&client.take()).unwrap()), [Action::PlayEnded]);
}

#[test]
fn a_refused_play_gets_an_onstatus_error() {
    let mut session = Session::new(1);
    let mut client = Client::new();
    client.connect("live");
    client.command(0, &[s("createStream"), Value::Number(2.0), Value::Null]);
    client.command(1, &[s("play"), Value::Number(3.0), Value::Null, s("nope")]);
    let mut wire = sent(&session.handle_bytes(&client.take()).unwrap());
    wire.extend(sent(
        &session.reject_play(1, "NetStream.Play.StreamNotFound", "no such stream").unwrap(),
    ));
    let last = replies(&wire).pop().unwrap();
    assert_eq!(status_code(&last.2), Some(("error", "NetStream.Play.StreamNotFound")));
    assert!(!session.is_playing());
    assert_eq!(session.accept_play(1), Err(SessionError::UnknownRequest(1)));
    let mut out = Vec::new();
    session.play_media(MediaKind::Video, 0, &[1], &mut out);
    assert!(out.is_empty());
}

#[test]
fn play2_is_refused_once_and_a_repeat_ends_the_session() {
    let mut client = Client::new();
    client.connect("live").command(0, &[s("play2"), Value::Number(0.0), Value::Null]);
    let mut session = Session::new(1);
    let answer = sent(&session.handle_bytes(&client.take()).unwrap());
    let replies = replies(&answer);
    let codes: Vec<_> = replies.iter().filter_map(|(_, _, v)| Some(status_code(v)?.1)).collect();
    assert_eq!(codes, ["NetConnection.Connect.Success", "NetStream.Play.Failed"]);
    // Each repeat would cost ~16 times its bytes in answers: the first ends the session.
    let mut flood = Vec::new();
    for _ in 0..3000 {
        client.command(0, &[s("play2"), Value::Number(0.0), Value::Null]);
        flood.extend(client.take());
    }
    let actions = session.handle_bytes(&flood);
    let answered = actions.as_ref().map_or(0, |actions| sent(actions).len());
    assert!(answered <= flood.len(), "{answered} bytes answered to {}", flood.len());
    assert!(matches!(session.error(), Some(SessionError::Misbehaved(_))), "{:?}", session.error());
}
