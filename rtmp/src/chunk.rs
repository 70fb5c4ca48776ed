//! The RTMP chunk stream: messages reassembled from interleaved chunks, and outgoing
//! messages cut into chunks.
//!
//! Implements the RTMP specification (Adobe, 2012) §5.3.1 (chunk basic and message headers,
//! extended timestamp) and §5.3.2 (chunk stream ids). Each chunk stream keeps its own header
//! state and its own reassembly buffer, so two chunk streams may interleave mid-message as
//! the spec allows. Every size the peer declares is checked against a limit before anything
//! is allocated for it, and allocation follows the bytes actually received.

use std::collections::HashMap;

use bytes::Bytes;

/// Chunk size both directions start with (§5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Smallest chunk size accepted from a peer. Smaller sizes are legal but no encoder uses
/// them, and they only multiply header overhead (SRS refuses them too).
pub const MIN_CHUNK_SIZE: u32 = 128;
/// Largest chunk size accepted from a peer: no chunk holds more than one message, and
/// message lengths are 24-bit (§5.4.1: larger sizes are all equivalent).
pub const MAX_CHUNK_SIZE: u32 = 0xff_ffff;
/// Largest message accepted. A 4K H.264 keyframe at broadcast bitrates stays well under it;
/// Nginx-RTMP's default is 1 MiB, which such keyframes exceed.
pub const MAX_MESSAGE_LEN: usize = 8 << 20;
/// Largest message accepted before a publish is granted: commands (`connect`, `publish`, ...)
/// are a few hundred bytes from every encoder, and nothing a client sends before it is
/// authorised may cost the server much more than it sent.
pub const MAX_MESSAGE_LEN_BEFORE_PUBLISH: usize = 16 << 10;
/// Chunk streams one connection may use. Encoders use fewer than ten.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Bytes of unfinished messages one connection may hold across all its chunk streams.
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;
/// The same before a publish is granted: a few commands' worth.
pub const MAX_BUFFERED_BYTES_BEFORE_PUBLISH: usize = 64 << 10;

/// What a [`ChunkReader`] holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message.
    pub max_message_len: usize,
    /// Bytes of unfinished messages across all chunk streams.
    pub max_buffered: usize,
    /// Whether a message's buffer is made with room for the length its header declares (up
    /// to 64 KiB), or only for the bytes that came (a client not authorised yet).
    pub reserve_declared: bool,
}

impl ChunkLimits {
    /// For a connection whose publish is granted (and for reading a server's answers).
    pub const PUBLISHING: Self = Self {
        max_message_len: MAX_MESSAGE_LEN,
        max_buffered: MAX_BUFFERED_BYTES,
        reserve_declared: true,
    };
    /// For a connection that is not authorised yet.
    pub const BEFORE_PUBLISH: Self = Self {
        max_message_len: MAX_MESSAGE_LEN_BEFORE_PUBLISH,
        max_buffered: MAX_BUFFERED_BYTES_BEFORE_PUBLISH,
        reserve_declared: false,
    };
}

/// Timestamp field value announcing an extended timestamp (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xff_ffff;
/// Message header length by chunk type (§5.3.1.2).
const MESSAGE_HEADER_LEN: [usize; 4] = [11, 7, 3, 0];
/// Most room a message's buffer is given for the length its header declares, once publishing;
/// beyond, the buffer grows with the bytes received. Before a publish is granted, a buffer is
/// given room only for the bytes that came, so a client declaring messages it never sends
/// costs at most twice what it sent.
const INITIAL_MESSAGE_CAPACITY: usize = 64 << 10;

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The chunk stream it arrived on.
    pub csid: u32,
    /// Timestamp in milliseconds (wrapping).
    pub timestamp: u32,
    /// Message type id (§5.4, §7.1).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Why the chunk stream cannot be read further. Every variant is the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A message longer than the reader's limit ([`ChunkLimits`]).
    #[error("chunk stream {csid}: message of {len} bytes exceeds the limit of {limit}")]
    MessageTooLong {
        /// Chunk stream id.
        csid: u32,
        /// Declared length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_CHUNK_STREAMS`] chunk streams.
    #[error("chunk stream {0} would exceed the limit of {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams(u32),
    /// A compressed header on a chunk stream that never had a full one.
    #[error("chunk stream {csid}: type {fmt} chunk with no previous header")]
    NoPreviousHeader {
        /// Chunk stream id.
        csid: u32,
        /// Chunk type (1, 2 or 3).
        fmt: u8,
    },
    /// A new message header while the previous message on the stream is incomplete.
    #[error(
        "chunk stream {csid}: type {fmt} header while {missing} bytes of a message are missing"
    )]
    HeaderMidMessage {
        /// Chunk stream id.
        csid: u32,
        /// Chunk type.
        fmt: u8,
        /// Bytes still expected.
        missing: usize,
    },
    /// More unfinished messages than the reader's limit ([`ChunkLimits`]).
    #[error("more than {0} bytes of unfinished messages")]
    TooMuchBuffered(usize),
    /// A Set Chunk Size outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    BadChunkSize(u32),
}

/// Header state and reassembly buffer of one chunk stream.
#[derive(Debug, Clone, Default)]
struct ChunkStream {
    timestamp: u32,
    /// The delta a type 3 chunk starting a new message adds (§5.3.1.2.4).
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// The extended timestamp field of the last header, when it had one.
    extended: Option<u32>,
    /// The message being reassembled; `None` between messages.
    partial: Option<Vec<u8>>,
}

/// Reassembles messages from the peer's chunks.
///
/// Call [`ChunkReader::read`] with the unread input; it consumes what it can and stops after
/// each complete message so the caller can apply a Set Chunk Size before the next chunk.
#[derive(Debug, Clone)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk whose payload is being read: its chunk stream and the bytes left.
    current: Option<(u32, usize)>,
    buffered: usize,
    limits: ChunkLimits,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    /// A reader at the default chunk size.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE as usize,
            streams: HashMap::new(),
            current: None,
            buffered: 0,
            limits: ChunkLimits::PUBLISHING,
        }
    }

    /// Holds at most `limits` from now on (a message already longer fails at its next chunk).
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// Applies the peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Applies the peer's Abort Message: drops the partial message of `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(partial) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.buffered -= partial.len();
        }
    }

    /// Bytes held in unfinished messages.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Reads from `input`; returns how many bytes were consumed and the message completed, if
    /// any. Bytes not consumed (a partial chunk header) must be offered again with more.
    pub fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), ChunkError> {
        let mut pos = 0;
        loop {
            if let Some((csid, remaining)) = self.current {
                let take = remaining.min(input.len() - pos);
                let stream = self.streams.entry(csid).or_default();
                let partial = stream.partial.get_or_insert_with(Vec::new);
                if partial.capacity() == 0 && take > 0 {
                    let declared = stream.length.min(INITIAL_MESSAGE_CAPACITY);
                    let room = if self.limits.reserve_declared { declared.max(take) } else { take };
                    // A message longer than the largest recycled size grows past any spare:
                    // it leaves the spares to the messages that fit them.
                    *partial = if stream.length > crate::message_buffers::MAX_RECYCLED {
                        Vec::with_capacity(room)
                    } else {
                        crate::message_buffers::take(room)
                    };
                }
                partial.extend_from_slice(&input[pos..pos + take]);
                pos += take;
                self.buffered += take;
                if take < remaining {
                    self.current = Some((csid, remaining - take));
                    return Ok((pos, None));
                }
                self.current = None;
                if partial.len() == stream.length {
                    let payload = stream.partial.take().unwrap_or_default();
                    self.buffered -= payload.len();
                    let message = Message {
                        csid,
                        timestamp: stream.timestamp,
                        type_id: stream.type_id,
                        stream_id: stream.stream_id,
                        payload: crate::message_buffers::freeze(payload),
                    };
                    return Ok((pos, Some(message)));
                }
            }
            match self.read_header(&input[pos..])? {
                Some(len) => pos += len,
                None => return Ok((pos, None)),
            }
        }
    }

    /// Parses one chunk header if `buf` holds all of it, and sets up its payload.
    fn read_header(&mut self, buf: &[u8]) -> Result<Option<usize>, ChunkError> {
        let Some(&first) = buf.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3f {
            0 => match buf.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match buf.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let Some(header) = buf.get(pos..pos + MESSAGE_HEADER_LEN[usize::from(fmt)]) else {
            return Ok(None);
        };
        pos += header.len();

        let known = self.streams.get(&csid);
        let in_progress = known.and_then(|s| s.partial.as_ref()).map(Vec::len);
        if known.is_none() {
            if fmt != 0 {
                return Err(ChunkError::NoPreviousHeader { csid, fmt });
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(ChunkError::TooManyChunkStreams(csid));
            }
        }
        if let (Some(have), true) = (in_progress, fmt < 3) {
            let missing = known.map_or(0, |s| s.length) - have;
            return Err(ChunkError::HeaderMidMessage { csid, fmt, missing });
        }

        let field = if fmt < 3 { u24(&header[0..3]) } else { 0 };
        let previous_extended = known.and_then(|s| s.extended);
        let extended = if fmt < 3 {
            if field == EXTENDED_TIMESTAMP {
                let Some(b) = buf.get(pos..pos + 4) else { return Ok(None) };
                pos += 4;
                Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            } else {
                None
            }
        } else if let Some(value) = previous_extended {
            // Type 3 chunks repeat the extended timestamp of their stream (§5.3.1.3; ffmpeg
            // and librtmp send it). Some encoders omit it on continuation chunks: there,
            // the four bytes are taken as the field only if they match.
            let Some(b) = buf.get(pos..pos + 4) else { return Ok(None) };
            let repeated = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            if in_progress.is_none() || repeated == value {
                pos += 4;
            }
            Some(value)
        } else {
            None
        };
        let timestamp_field = extended.unwrap_or(field);

        let stream = self.streams.entry(csid).or_default();
        match fmt {
            0 => {
                stream.timestamp = timestamp_field;
                stream.delta = timestamp_field;
                stream.length = u24(&header[3..6]) as usize;
                stream.type_id = header[6];
                stream.stream_id =
                    u32::from_le_bytes([header[7], header[8], header[9], header[10]]);
            }
            1 => {
                stream.delta = timestamp_field;
                stream.timestamp = stream.timestamp.wrapping_add(timestamp_field);
                stream.length = u24(&header[3..6]) as usize;
                stream.type_id = header[6];
            }
            2 => {
                stream.delta = timestamp_field;
                stream.timestamp = stream.timestamp.wrapping_add(timestamp_field);
            }
            _ => {
                if in_progress.is_none() {
                    stream.timestamp = stream.timestamp.wrapping_add(stream.delta);
                }
            }
        }
        if fmt < 3 {
            stream.extended = extended;
        }
        if stream.length > self.limits.max_message_len {
            let limit = self.limits.max_message_len;
            return Err(ChunkError::MessageTooLong { csid, len: stream.length, limit });
        }
        let have = in_progress.unwrap_or(0);
        if in_progress.is_none() {
            // Room is made when its first bytes come.
            stream.partial = Some(Vec::new());
        }
        let chunk_len = (stream.length - have).min(self.chunk_size);
        if self.buffered + chunk_len > self.limits.max_buffered {
            return Err(ChunkError::TooMuchBuffered(self.limits.max_buffered));
        }
        self.current = Some((csid, chunk_len));
        Ok(Some(pos))
    }
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// Cuts outgoing messages into chunks: a message header, then type 3 continuations.
///
/// A plain writer starts every message with a full (type 0) header. A compressing one, as
/// encoders write (ffmpeg, librtmp), sends a type 1 header (timestamp delta, length, type)
/// for a message on a chunk stream whose previous message had the same message stream and
/// an earlier or equal timestamp (§5.3.1.2.2).
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    chunk_size: usize,
    /// Per chunk stream, the previous message's header; `None` for a plain writer.
    previous: Option<Box<[Option<Sent>; 64]>>,
}

/// What a compressing writer remembers of a chunk stream's previous message.
#[derive(Debug, Clone, Copy)]
struct Sent {
    timestamp: u32,
    stream_id: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// A plain writer at the default chunk size.
    pub fn new() -> Self {
        Self { chunk_size: DEFAULT_CHUNK_SIZE as usize, previous: None }
    }

    /// A compressing writer at the default chunk size.
    pub fn compressing() -> Self {
        Self { chunk_size: DEFAULT_CHUNK_SIZE as usize, previous: Some(Box::new([None; 64])) }
    }

    /// Uses `size` from now on; the caller has sent Set Chunk Size first.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = (size as usize).max(1);
    }

    /// Appends `payload` as a message on chunk stream `csid` (2..=63).
    pub fn write(
        &mut self,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let csid = csid & 0x3f;
        let previous = self.previous.as_mut().map(|all| &mut all[usize::from(csid)]);
        let delta = match previous {
            Some(slot) => {
                let delta = slot
                    .filter(|sent| sent.stream_id == stream_id && timestamp >= sent.timestamp)
                    .map(|sent| timestamp - sent.timestamp);
                *slot = Some(Sent { timestamp, stream_id });
                delta
            }
            None => None,
        };
        // The field holds the timestamp (type 0) or the delta (type 1).
        let value = delta.unwrap_or(timestamp);
        let extended = value >= EXTENDED_TIMESTAMP;
        let field = if extended { EXTENDED_TIMESTAMP } else { value };
        let fmt: u8 = if delta.is_some() { 1 } else { 0 };
        out.reserve(payload.len() + 18 + payload.len() / self.chunk_size * 5);
        out.push(fmt << 6 | csid);
        out.extend_from_slice(&field.to_be_bytes()[1..]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(type_id);
        if delta.is_none() {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&value.to_be_bytes());
        }
        for (i, chunk) in payload.chunks(self.chunk_size).enumerate() {
            if i > 0 {
                // Type 3 chunks repeat the extended timestamp (§5.3.1.3; ffmpeg, librtmp and
                // Nginx-RTMP all expect it).
                out.push(0xc0 | csid);
                if extended {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            out.extend_from_slice(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every message from `input` offered in pieces of `step` bytes.
    fn read_all(
        reader: &mut ChunkReader,
        input: &[u8],
        step: usize,
    ) -> Result<Vec<Message>, ChunkError> {
        let mut pending = Vec::new();
        let mut messages = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (used, message) = reader.read(&pending)?;
                pending.drain(..used);
                match message {
                    Some(m) => messages.push(m),
                    None => break,
                }
            }
        }
        assert!(pending.is_empty() || reader.current.is_none());
        Ok(messages)
    }

    fn message(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) -> Message {
        Message { csid, timestamp, type_id, stream_id, payload: Bytes::copy_from_slice(payload) }
    }

    #[test]
    fn writer_output_reads_back_at_any_split() {
        let mut writer = ChunkWriter::new();
        let mut wire = Vec::new();
        let big: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        writer.write(3, 0, 20, 0, b"connect", &mut wire);
        writer.write(4, 40, 9, 1, &big, &mut wire);
        writer.set_chunk_size(4096);
        writer.write(4, 0x0100_0000, 8, 1, &big, &mut wire);
        let expected = vec![
            message(3, 0, 20, 0, b"connect"),
            message(4, 40, 9, 1, &big),
            message(4, 0x0100_0000, 8, 1, &big),
        ];
        for step in [1, 2, 3, 7, 128, 129, 1000, wire.len()] {
            let mut reader = ChunkReader::new();
            let mut got = Vec::new();
            // The writer switched chunk size after two messages; so does the reader.
            let (first, rest) = wire.split_at(wire.len() - (1 + 11 + 4 + 1000));
            got.extend(read_all(&mut reader, first, step).unwrap());
            reader.set_chunk_size(4096).unwrap();
            got.extend(read_all(&mut reader, rest, step).unwrap());
            assert_eq!(got, expected, "step {step}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    /// Before a publish is granted, a declared length reserves nothing: sixty chunk streams
    /// each declaring a 16 KiB message and sending its first 128-byte chunk hold what they
    /// sent, not 960 KiB. Once publishing, a message's buffer has room for its length.
    #[test]
    fn declared_lengths_reserve_nothing_before_a_publish() {
        let held = |reader: &ChunkReader| -> usize {
            reader.streams.values().filter_map(|s| s.partial.as_ref()).map(Vec::capacity).sum()
        };
        let mut wire = Vec::new();
        for csid in 3..63u8 {
            wire.extend_from_slice(&[csid, 0, 0, 0, 0, 0x40, 0, 20, 0, 0, 0, 0]);
            wire.extend_from_slice(&[2; 128]);
        }
        let mut reader = ChunkReader::new();
        reader.set_limits(ChunkLimits::BEFORE_PUBLISH);
        let (used, message) = reader.read(&wire).unwrap();
        assert_eq!((used, message), (wire.len(), None));
        assert_eq!(reader.buffered(), 60 * 128);
        assert_eq!(held(&reader), 60 * 128);

        let mut reader = ChunkReader::new();
        let (_, message) = reader.read(&wire[..12 + 128]).unwrap();
        assert!(message.is_none());
        assert_eq!(held(&reader), 16 << 10);

        // At a 4 KiB chunk size, 300 bytes of a declared 16 KiB sent in pieces: what is held
        // stays within twice what came.
        let mut reader = ChunkReader::new();
        reader.set_limits(ChunkLimits::BEFORE_PUBLISH);
        reader.set_chunk_size(4096).unwrap();
        let (used, _) = reader.read(&[3, 0, 0, 0, 0, 0x40, 0, 20, 0, 0, 0, 0]).unwrap();
        assert_eq!(used, 12);
        for piece in [1, 99, 200] {
            let (used, message) = reader.read(&vec![2; piece]).unwrap();
            assert_eq!((used, message), (piece, None));
            assert!(held(&reader) <= 2 * reader.buffered(), "{} held", held(&reader));
        }
        assert_eq!(reader.buffered(), 300);
    }

    /// A message longer than the largest recycled body never takes a spare (it would grow
    /// past it); one that fits takes the spare of its size.
    #[test]
    fn long_messages_leave_the_spares_alone() {
        use crate::message_buffers::{MAX_RECYCLED, spares};
        let mut writer = ChunkWriter::new();
        writer.set_chunk_size(4096);
        let mut wire = Vec::new();
        writer.write(6, 0, 9, 1, &vec![1; 60_000], &mut wire);
        writer.write(6, 33, 9, 1, &vec![1; MAX_RECYCLED * 3], &mut wire);
        writer.write(6, 66, 9, 1, &vec![1; 60_000], &mut wire);
        crate::message_buffers::clear();
        let mut reader = ChunkReader::new();
        reader.set_chunk_size(4096).unwrap();
        let mut input = &wire[..];
        let mut seen = Vec::new();
        while !input.is_empty() {
            let (used, message) = reader.read(input).unwrap();
            input = &input[used..];
            // Each message is dropped before the next is read.
            if let Some(message) = message {
                seen.push((message.payload.len(), spares()));
            }
        }
        // The first's buffer is spare while the long one is read, then the third takes it.
        assert_eq!(seen[0], (60_000, (0, 0)));
        assert_eq!(seen[1], (MAX_RECYCLED * 3, (1, MAX_RECYCLED)));
        assert_eq!(seen[2], (60_000, (0, 0)));
    }

    /// The case rml_rtmp 0.8 gets wrong: the first chunk of a 300-byte message on chunk
    /// stream 4, a whole 10-byte message on chunk stream 6, then the rest of the first.
    #[test]
    fn interleaved_chunk_streams_reassemble_separately() {
        let video: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let audio = [0xaf; 10];
        let mut wire = Vec::new();
        wire.extend_from_slice(&[0x04, 0, 0, 33, 0, 1, 44, 9, 1, 0, 0, 0]);
        wire.extend_from_slice(&video[..128]);
        wire.extend_from_slice(&[0x06, 0, 0, 34, 0, 0, 10, 8, 1, 0, 0, 0]);
        wire.extend_from_slice(&audio);
        wire.push(0xc4);
        wire.extend_from_slice(&video[128..256]);
        wire.push(0xc4);
        wire.extend_from_slice(&video[256..]);
        for step in [1, 5, 140, wire.len()] {
            let got = read_all(&mut ChunkReader::new(), &wire, step).unwrap();
            assert_eq!(
                got,
                [message(6, 34, 8, 1, &audio), message(4, 33, 9, 1, &video)],
                "step {step}"
            );
        }
    }

    #[test]
    fn compressed_headers_carry_deltas() {
        let mut wire = Vec::new();
        // Type 0 at 1000, type 1 (+20, new length/type), type 2 (+20), type 3 (+20 again).
        wire.extend_from_slice(&[0x05, 0, 0x03, 0xe8, 0, 0, 2, 8, 1, 0, 0, 0, 0xaa, 0xbb]);
        wire.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 1, 9, 0xcc]);
        wire.extend_from_slice(&[0x85, 0, 0, 20, 0xdd]);
        wire.extend_from_slice(&[0xc5, 0xee]);
        let got = read_all(&mut ChunkReader::new(), &wire, 1).unwrap();
        assert_eq!(
            got,
            [
                message(5, 1000, 8, 1, &[0xaa, 0xbb]),
                message(5, 1020, 9, 1, &[0xcc]),
                message(5, 1040, 9, 1, &[0xdd]),
                message(5, 1060, 9, 1, &[0xee]),
            ]
        );
    }

    #[test]
    fn two_and_three_byte_chunk_stream_ids() {
        let mut wire = vec![0x00, 10, 0, 0, 1, 0, 0, 1, 8, 1, 0, 0, 0, 0x11];
        wire.extend_from_slice(&[0x01, 0x10, 0x02, 0, 0, 2, 0, 0, 1, 8, 1, 0, 0, 0, 0x22]);
        let got = read_all(&mut ChunkReader::new(), &wire, 1).unwrap();
        assert_eq!(
            got,
            [message(74, 1, 8, 1, &[0x11]), message(64 + 0x10 + 0x200, 2, 8, 1, &[0x22])]
        );
    }

    #[test]
    fn continuation_without_repeated_extended_timestamp_is_tolerated() {
        let payload = [7u8; 200];
        let mut wire = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 200, 9, 1, 0, 0, 0, 0x01, 0, 0, 0];
        wire.extend_from_slice(&payload[..128]);
        wire.push(0xc4);
        wire.extend_from_slice(&payload[128..]);
        let got = read_all(&mut ChunkReader::new(), &wire, 3).unwrap();
        assert_eq!(got, [message(4, 0x0100_0000, 9, 1, &payload)]);
    }

    #[test]
    fn before_a_publish_messages_and_buffers_are_small() {
        let mut reader = ChunkReader::new();
        reader.set_limits(ChunkLimits::BEFORE_PUBLISH);
        let len = MAX_MESSAGE_LEN_BEFORE_PUBLISH as u32 + 1;
        let wire = first_chunk(false, 3, len, 0);
        assert_eq!(
            read_all(&mut reader, &wire, 4),
            Err(ChunkError::MessageTooLong {
                csid: 3,
                len: len as usize,
                limit: MAX_MESSAGE_LEN_BEFORE_PUBLISH
            })
        );
        // Messages at the limit, half sent on many chunk streams, fill the buffer budget.
        let mut reader = ChunkReader::new();
        reader.set_limits(ChunkLimits::BEFORE_PUBLISH);
        reader.set_chunk_size(8192).unwrap();
        let mut result = Ok(Vec::new());
        for csid in 3..40 {
            let wire = first_chunk(false, csid, MAX_MESSAGE_LEN_BEFORE_PUBLISH as u32, 8192);
            result = read_all(&mut reader, &wire, 4);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooMuchBuffered(MAX_BUFFERED_BYTES_BEFORE_PUBLISH)));
        assert!(reader.buffered() <= MAX_BUFFERED_BYTES_BEFORE_PUBLISH);
    }

    #[test]
    fn oversized_message_is_refused_before_allocation() {
        // 16 MiB - 1 declared, 3 bytes sent.
        let wire = [0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 1, 2, 3];
        assert_eq!(
            read_all(&mut ChunkReader::new(), &wire, 64),
            Err(ChunkError::MessageTooLong { csid: 4, len: 0xff_ffff, limit: MAX_MESSAGE_LEN })
        );
        let at_limit = MAX_MESSAGE_LEN as u32;
        let mut wire = vec![0x04, 0, 0, 0];
        wire.extend_from_slice(&at_limit.to_be_bytes()[1..]);
        wire.extend_from_slice(&[9, 1, 0, 0, 0, 1, 2, 3]);
        let mut reader = ChunkReader::new();
        assert_eq!(read_all(&mut reader, &wire, 64), Ok(vec![]));
        assert_eq!(reader.buffered(), 3);
    }

    #[test]
    fn chunk_size_limits() {
        let mut reader = ChunkReader::new();
        for bad in [0, 1, 127, MAX_CHUNK_SIZE + 1, 0x7fff_ffff, u32::MAX] {
            assert_eq!(reader.set_chunk_size(bad), Err(ChunkError::BadChunkSize(bad)));
        }
        for good in [MIN_CHUNK_SIZE, 4096, 65536, MAX_CHUNK_SIZE] {
            assert_eq!(reader.set_chunk_size(good), Ok(()));
        }
    }

    /// A type 0 header on `csid` (one byte id) or `64 + csid` (two byte id) for a message
    /// of `len` bytes, followed by one chunk of its payload.
    fn first_chunk(two_byte_id: bool, csid: u8, len: u32, chunk: usize) -> Vec<u8> {
        let mut wire = if two_byte_id { vec![0x00, csid] } else { vec![csid] };
        wire.extend_from_slice(&[0, 0, 0]);
        wire.extend_from_slice(&len.to_be_bytes()[1..]);
        wire.extend_from_slice(&[9, 1, 0, 0, 0]);
        wire.resize(wire.len() + chunk, 0);
        wire
    }

    #[test]
    fn too_many_chunk_streams() {
        let mut wire = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            // Ids 64.., each opening a message it never finishes.
            wire.extend(first_chunk(true, i, 200, 128));
        }
        assert_eq!(
            read_all(&mut ChunkReader::new(), &wire, wire.len()),
            Err(ChunkError::TooManyChunkStreams(64 + MAX_CHUNK_STREAMS as u32))
        );
    }

    #[test]
    fn buffered_bytes_are_bounded_across_chunk_streams() {
        let mut reader = ChunkReader::new();
        let chunk = 1 << 20;
        reader.set_chunk_size(chunk as u32).unwrap();
        let mut result = Ok(vec![]);
        let mut streams = 0;
        for csid in 3..40u8 {
            let wire = first_chunk(false, csid, MAX_MESSAGE_LEN as u32, chunk);
            result = read_all(&mut reader, &wire, wire.len());
            if result.is_err() {
                break;
            }
            streams += 1;
        }
        assert_eq!(result, Err(ChunkError::TooMuchBuffered(MAX_BUFFERED_BYTES)));
        assert_eq!(streams, MAX_BUFFERED_BYTES / chunk);
        assert_eq!(reader.buffered(), MAX_BUFFERED_BYTES);
    }

    #[test]
    fn protocol_violations() {
        assert_eq!(
            read_all(&mut ChunkReader::new(), &[0x44, 0, 0, 0, 0, 0, 1, 9], 8),
            Err(ChunkError::NoPreviousHeader { csid: 4, fmt: 1 })
        );
        let wire = [0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0, 0, 0x84, 0, 0, 0];
        let mut with_payload = wire[..12].to_vec();
        with_payload.extend_from_slice(&[0; 128]);
        with_payload.extend_from_slice(&wire[13..]);
        assert_eq!(
            read_all(&mut ChunkReader::new(), &with_payload, 512),
            Err(ChunkError::HeaderMidMessage { csid: 4, fmt: 2, missing: 72 })
        );
    }

    #[test]
    fn abort_frees_the_partial_message() {
        let mut reader = ChunkReader::new();
        let wire = [0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0, 1, 2, 3];
        read_all(&mut reader, &wire, 64).unwrap();
        assert_eq!(reader.buffered(), 3);
        reader.abort(4);
        assert_eq!(reader.buffered(), 0);
    }

    /// A compressing writer's chunks (type 0 then type 1 headers, multi-chunk messages,
    /// extended timestamps and deltas) read back by the reader.
    #[test]
    fn compressed_headers_read_back() {
        let mut writer = ChunkWriter::compressing();
        writer.set_chunk_size(4096);
        let mut out = Vec::new();
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let messages = [
            (6u8, 0u32, 9u8, &big[..]),
            (4, 0, 8, &[0xaf, 1, 2, 3][..]),
            (6, 33, 9, &big[..5000]),
            (6, 0xff_fffe, 9, &big[..]),
            (6, 0x0100_0000, 9, &big[..]),
            (4, 0x0200_0000, 8, &[0xaf, 1][..]),
            (4, 0x0200_0015, 8, &big[..4096]),
            // Back in time: a full header again.
            (4, 0x10, 8, &[0xaf, 1][..]),
        ];
        for (csid, ts, kind, body) in messages {
            writer.write(csid, ts, kind, 1, body, &mut out);
        }
        assert_eq!(out[0] >> 6, 0, "the first message has a full header");
        let mut reader = ChunkReader::new();
        reader.set_chunk_size(4096).unwrap();
        let mut input = &out[..];
        let mut got = Vec::new();
        let mut formats = Vec::new();
        while !input.is_empty() {
            formats.push(input[0] >> 6);
            let (used, message) = reader.read(input).unwrap();
            assert!(used > 0);
            input = &input[used..];
            if let Some(m) = message {
                got.push((m.csid as u8, m.timestamp, m.type_id, m.payload.to_vec()));
            }
        }
        let want: Vec<_> = messages.iter().map(|&(c, t, k, b)| (c, t, k, b.to_vec())).collect();
        assert_eq!(got, want);
        assert!(formats.contains(&1), "no type 1 header: {formats:?}");
    }
}
