//! MPEG-TS multiplexing: PAT/PMT, PES packetisation, continuity counters and PCR.
//!
//! Implements ISO/IEC 13818-1 §2.4.3 (transport packets), §2.4.3.7 (PCR in the adaptation
//! field), §2.4.4 (PAT, PMT) and §2.4.3.6 (PES headers). The `mpeg2ts` crate encodes single
//! 188-byte packets and their stuffing; this module decides what goes in each one. The PIDs
//! match ffmpeg's defaults so captures are easy to compare.

use mpeg2ts::es::{StreamId, StreamType};
use mpeg2ts::pes::PesHeader;
use mpeg2ts::time::{ClockReference, Timestamp};
use mpeg2ts::ts::payload::{self, Pat, Pmt};
use mpeg2ts::ts::{
    AdaptationField, ContinuityCounter, EsInfo, Pid, ProgramAssociation,
    TransportScramblingControl, TsHeader, TsPacket, TsPacketWriter, TsPayload, VersionNumber,
    WriteTsPacket,
};

const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x100;
const PID_AUDIO: u16 = 0x101;
const PROGRAM_NUMBER: u16 = 1;
/// TS packet payload capacity (188 minus the 4-byte header).
const PACKET_PAYLOAD: usize = 184;
/// Adaptation field with flags only (length byte + flags byte).
const AF_BASE_LEN: usize = 2;
/// A PCR adds 6 bytes to the adaptation field.
const AF_PCR_LEN: usize = 6;
/// PES header up to PES_header_data_length, before PTS/DTS.
const PES_HEADER_BASE_LEN: usize = 9;
/// PTS or DTS field length.
const PES_TIMESTAMP_LEN: usize = 5;
/// 33-bit PTS/DTS wrap.
const TIMESTAMP_MASK: i64 = (1 << 33) - 1;

/// An elementary stream of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// H.264 on PID 0x100.
    Video,
    /// ADTS AAC on PID 0x101.
    Audio,
}

/// How the audio elementary stream is coded (its PMT stream type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioStream {
    /// AAC in ADTS (stream type 0x0F).
    Adts,
    /// MPEG-1 audio, e.g. MP3 at 32 to 48 kHz (stream type 0x03).
    Mpeg1,
    /// MPEG-2 lower-sampling-frequency audio, e.g. MP3 at 24 kHz and below (stream type 0x04).
    Mpeg2,
}

impl AudioStream {
    fn stream_type(self) -> StreamType {
        match self {
            Self::Adts => StreamType::AdtsAac,
            Self::Mpeg1 => StreamType::Mpeg1Audio,
            Self::Mpeg2 => StreamType::Mpeg2HalvedSampleRateAudio,
        }
    }
}

/// Timestamps of one PES packet, in 90 kHz ticks (wrapped to 33 bits here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesTiming {
    /// Presentation time.
    pub pts: i64,
    /// Decode time, written only when it differs from `pts`.
    pub dts: i64,
    /// The program clock to announce in this packet, if it carries the PCR.
    pub pcr: Option<i64>,
}

/// Errors the TS encoder reports; all are bugs in this module, never input faults.
#[derive(Debug, thiserror::Error)]
#[error("MPEG-TS encoding failed: {0}")]
pub struct MuxError(#[from] mpeg2ts::Error);

/// Packetises elementary streams into one program. Keeps a continuity counter per PID.
#[derive(Debug)]
pub struct TsMuxer {
    has_video: bool,
    audio: Option<AudioStream>,
    pmt_version: VersionNumber,
    cc_pat: ContinuityCounter,
    cc_pmt: ContinuityCounter,
    cc_video: ContinuityCounter,
    cc_audio: ContinuityCounter,
}

impl TsMuxer {
    /// A muxer with no tracks; call [`TsMuxer::set_tracks`] before writing.
    pub fn new() -> Self {
        Self {
            has_video: false,
            audio: None,
            pmt_version: VersionNumber::new(),
            cc_pat: ContinuityCounter::new(),
            cc_pmt: ContinuityCounter::new(),
            cc_video: ContinuityCounter::new(),
            cc_audio: ContinuityCounter::new(),
        }
    }

    /// Sets which tracks the PMT announces; a change bumps the PMT version.
    pub fn set_tracks(&mut self, video: bool, audio: Option<AudioStream>) {
        if (video, audio) != (self.has_video, self.audio) {
            self.has_video = video;
            self.audio = audio;
            self.pmt_version.increment();
        }
    }

    /// The audio track the PMT announces.
    pub fn audio(&self) -> Option<AudioStream> {
        self.audio
    }

    /// The track that carries the PCR: video when present, as players expect.
    pub fn pcr_track(&self) -> Track {
        if self.has_video { Track::Video } else { Track::Audio }
    }

    /// Appends a PAT and a PMT to `out`.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) -> Result<(), MuxError> {
        let mut writer = TsPacketWriter::new(out);
        let pat = Pat {
            transport_stream_id: 1,
            version_number: VersionNumber::new(),
            table: vec![ProgramAssociation {
                program_num: PROGRAM_NUMBER,
                program_map_pid: pid(PID_PMT)?,
            }],
        };
        writer.write_ts_packet(&packet(PID_PAT, &mut self.cc_pat, None, TsPayload::Pat(pat))?)?;

        let mut es_info = Vec::with_capacity(2);
        if self.has_video {
            es_info.push(EsInfo {
                stream_type: StreamType::H264,
                elementary_pid: pid(PID_VIDEO)?,
                descriptors: Vec::new(),
            });
        }
        if let Some(audio) = self.audio {
            es_info.push(EsInfo {
                stream_type: audio.stream_type(),
                elementary_pid: pid(PID_AUDIO)?,
                descriptors: Vec::new(),
            });
        }
        let pmt = Pmt {
            program_num: PROGRAM_NUMBER,
            pcr_pid: Some(pid(self.track_pid(self.pcr_track()))?),
            version_number: self.pmt_version,
            program_info: Vec::new(),
            es_info,
        };
        writer.write_ts_packet(&packet(PID_PMT, &mut self.cc_pmt, None, TsPayload::Pmt(pmt))?)?;
        Ok(())
    }

    /// Appends one PES packet holding `data` (one access unit, its pieces back to back) to
    /// `out`, split across as many TS packets as it needs. `random_access` marks a keyframe in
    /// the adaptation field.
    pub fn write_pes(
        &mut self,
        track: Track,
        timing: PesTiming,
        random_access: bool,
        data: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        self.write_pes_within(track, timing, random_access, data, out, usize::MAX, &mut |_| {})
    }

    /// [`TsMuxer::write_pes`] into a buffer of at most `limit` bytes: whenever the next
    /// packet would take `out` past it, `spill` is called to take its bytes and empty it
    /// (`limit` is at least one packet).
    #[allow(clippy::too_many_arguments)]
    pub fn write_pes_within(
        &mut self,
        track: Track,
        timing: PesTiming,
        random_access: bool,
        data: &[&[u8]],
        out: &mut Vec<u8>,
        limit: usize,
        spill: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Result<(), MuxError> {
        let limit = limit.max(TS_PACKET_LEN);
        let mut room = |out: &mut Vec<u8>| {
            if out.len().saturating_add(TS_PACKET_LEN) > limit {
                spill(out);
            }
        };
        let data_len = total_len(data);
        let pts = timing.pts & TIMESTAMP_MASK;
        let dts = timing.dts & TIMESTAMP_MASK;
        let with_dts = pts != dts;
        let header = PesHeader {
            stream_id: StreamId::new(match track {
                Track::Video => StreamId::VIDEO_MIN,
                Track::Audio => StreamId::AUDIO_MIN,
            }),
            priority: false,
            data_alignment_indicator: true,
            copyright: false,
            original_or_copy: false,
            pts: Some(Timestamp::new(pts as u64)?),
            dts: if with_dts { Some(Timestamp::new(dts as u64)?) } else { None },
            escr: None,
        };
        let header_len = PES_HEADER_BASE_LEN + PES_TIMESTAMP_LEN * if with_dts { 2 } else { 1 };
        // PES_packet_length counts from after the field; 0 ("unbounded") is allowed for video.
        let pes_packet_len = u16::try_from(header_len - 6 + data_len).unwrap_or(0);

        let adaptation = (timing.pcr.is_some() || random_access).then(|| AdaptationField {
            discontinuity_indicator: false,
            random_access_indicator: random_access,
            es_priority_indicator: false,
            pcr: timing
                .pcr
                .and_then(|pcr| ClockReference::new((pcr & TIMESTAMP_MASK) as u64 * 300).ok()),
            opcr: None,
            splice_countdown: None,
            transport_private_data: Vec::new(),
            extension: None,
        });
        let af_len = adaptation
            .as_ref()
            .map_or(0, |af| AF_BASE_LEN + if af.pcr.is_some() { AF_PCR_LEN } else { 0 });

        let pid_value = self.track_pid(track);
        let cc = match track {
            Track::Video => &mut self.cc_video,
            Track::Audio => &mut self.cc_audio,
        };
        let first_len = data_len.min(PACKET_PAYLOAD - af_len - header_len);
        let rest_len = data_len - first_len;
        out.reserve(pes_bytes_bound(rest_len).min(limit.saturating_sub(out.len())));
        let mut pieces = Pieces::new(data);
        let mut joined = [0; PACKET_PAYLOAD];
        let first = payload::Bytes::new(pieces.take(first_len, &mut joined))?;
        let pes = payload::Pes { header, pes_packet_len, data: first };
        let start = packet(pid_value, cc, adaptation, TsPayload::PesStart(pes))?;
        room(out);
        TsPacketWriter::new(&mut *out).write_ts_packet(&start)?;
        for _ in 0..rest_len / PACKET_PAYLOAD {
            room(out);
            write_full_continuation(pid_value, cc, pieces.take(PACKET_PAYLOAD, &mut joined), out);
        }
        let tail_len = rest_len % PACKET_PAYLOAD;
        if tail_len > 0 {
            room(out);
            // A partial packet needs adaptation-field stuffing: left to the crate.
            let tail = payload::Bytes::new(pieces.take(tail_len, &mut joined))?;
            let body = TsPayload::PesContinuation(tail);
            TsPacketWriter::new(out).write_ts_packet(&packet(pid_value, cc, None, body)?)?;
        }
        Ok(())
    }

    /// Appends a packet that carries only a PCR (an adaptation field, no payload) on the PID
    /// of `track`, for when its own packets are too far apart (§2.7.2: at most 100 ms).
    pub fn write_pcr(&mut self, track: Track, pcr: i64, out: &mut Vec<u8>) -> Result<(), MuxError> {
        let cc = match track {
            Track::Video => self.cc_video,
            Track::Audio => self.cc_audio,
        };
        // A packet without payload repeats the counter of the previous one (§2.4.3.3).
        let previous =
            ContinuityCounter::from_u8(cc.as_u8().wrapping_sub(1) & ContinuityCounter::MAX)?;
        let packet = TsPacket {
            header: TsHeader {
                transport_error_indicator: false,
                transport_priority: false,
                pid: pid(self.track_pid(track))?,
                transport_scrambling_control: TransportScramblingControl::NotScrambled,
                continuity_counter: previous,
            },
            adaptation_field: Some(AdaptationField {
                discontinuity_indicator: false,
                random_access_indicator: false,
                es_priority_indicator: false,
                pcr: Some(ClockReference::new((pcr & TIMESTAMP_MASK) as u64 * 300)?),
                opcr: None,
                splice_countdown: None,
                transport_private_data: Vec::new(),
                extension: None,
            }),
            payload: None,
        };
        TsPacketWriter::new(out).write_ts_packet(&packet)?;
        Ok(())
    }

    fn track_pid(&self, track: Track) -> u16 {
        match track {
            Track::Video => PID_VIDEO,
            Track::Audio => PID_AUDIO,
        }
    }
}

impl Default for TsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

/// At most how many bytes [`TsMuxer::write_pes`] appends for `data_len` bytes of payload.
pub(crate) fn pes_bytes_bound(data_len: usize) -> usize {
    (data_len / PACKET_PAYLOAD + 2) * TS_PACKET_LEN
}

const PID_PAT: u16 = Pid::PAT;
const TS_PACKET_LEN: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// adaptation_field_control 01: payload only (ISO/IEC 13818-1 table 2-5).
const PAYLOAD_ONLY: u8 = 0x10;

/// Bytes in `pieces`, all together.
pub(crate) fn total_len(pieces: &[&[u8]]) -> usize {
    pieces.iter().map(|piece| piece.len()).sum()
}

/// A cursor over an access unit given in pieces (e.g. start codes and the NAL units of the
/// FLV tag they precede), so the bytes go from where they are straight into TS packets.
struct Pieces<'a> {
    rest: &'a [&'a [u8]],
    /// Bytes of `rest[0]` already taken.
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(pieces: &'a [&'a [u8]]) -> Self {
        let mut new = Self { rest: pieces, at: 0 };
        // Past leading empty pieces, so a first packet inside one piece is borrowed too.
        new.advance(0);
        new
    }

    /// The next `n` bytes (`n` ≤ [`PACKET_PAYLOAD`], and no more than remain): borrowed from
    /// the piece when it holds them all, else joined in `joined`.
    fn take<'s>(&mut self, n: usize, joined: &'s mut [u8; PACKET_PAYLOAD]) -> &'s [u8]
    where
        'a: 's,
    {
        if let Some(piece) = self.rest.first()
            && piece.len() - self.at >= n
        {
            let bytes = &piece[self.at..self.at + n];
            self.advance(n);
            return bytes;
        }
        let mut filled = 0;
        while filled < n {
            let Some(piece) = self.rest.first() else { break };
            let count = (piece.len() - self.at).min(n - filled);
            joined[filled..filled + count].copy_from_slice(&piece[self.at..self.at + count]);
            filled += count;
            self.advance(count);
        }
        debug_assert_eq!(filled, n, "asked for more than the pieces hold");
        &joined[..filled]
    }

    /// Moves past `n` bytes of the current piece, and past every piece used up.
    fn advance(&mut self, n: usize) {
        self.at += n;
        while let Some(piece) = self.rest.first()
            && self.at >= piece.len()
        {
            self.at -= piece.len();
            self.rest = &self.rest[1..];
        }
    }
}

/// Appends a PES continuation packet whose payload fills the packet: a 4-byte header (no
/// payload_unit_start, no adaptation field) and 184 bytes. This is most packets of a stream,
/// so it is written directly rather than through `mpeg2ts`'s packet struct (2.5 against 1.0
/// GiB/s of remux in the criterion benchmark); `fast_path_matches_the_crate_byte_for_byte`
/// pins the bytes to what the crate writes.
fn write_full_continuation(pid: u16, cc: &mut ContinuityCounter, chunk: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        SYNC_BYTE,
        (pid >> 8) as u8 & 0x1f,
        pid as u8,
        PAYLOAD_ONLY | cc.as_u8(),
    ]);
    out.extend_from_slice(chunk);
    cc.increment();
}

fn pid(value: u16) -> Result<Pid, MuxError> {
    Ok(Pid::new(value)?)
}

/// Builds one packet and advances the PID's continuity counter (every packet here carries a
/// payload, so each one increments it, ISO/IEC 13818-1 §2.4.3.3).
fn packet(
    pid_value: u16,
    cc: &mut ContinuityCounter,
    adaptation_field: Option<AdaptationField>,
    payload: TsPayload,
) -> Result<TsPacket, MuxError> {
    let packet = TsPacket {
        header: TsHeader {
            transport_error_indicator: false,
            transport_priority: false,
            pid: pid(pid_value)?,
            transport_scrambling_control: TransportScramblingControl::NotScrambled,
            continuity_counter: *cc,
        },
        adaptation_field,
        payload: Some(payload),
    };
    cc.increment();
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
    use mpeg2ts::ts::{ReadTsPacket, TsPacketReader};

    fn timing(pts: i64, dts: i64, pcr: Option<i64>) -> PesTiming {
        PesTiming { pts, dts, pcr }
    }

    #[test]
    fn tables_list_only_the_tracks_present() {
        for (video, audio) in [(true, true), (true, false), (false, true)] {
            let mut mux = TsMuxer::new();
            mux.set_tracks(video, audio.then_some(AudioStream::Adts));
            let mut out = Vec::new();
            mux.write_tables(&mut out).unwrap();
            assert_eq!(out.len(), 2 * 188);
            let mut reader = TsPacketReader::new(&out[..]);
            let _pat = reader.read_ts_packet().unwrap().unwrap();
            let pmt = reader.read_ts_packet().unwrap().unwrap();
            let Some(TsPayload::Pmt(pmt)) = pmt.payload else { panic!("no PMT") };
            let types: Vec<_> = pmt.es_info.iter().map(|e| e.stream_type).collect();
            let mut expected = Vec::new();
            if video {
                expected.push(StreamType::H264);
            }
            if audio {
                expected.push(StreamType::AdtsAac);
            }
            assert_eq!(types, expected);
            let pcr_pid = if video { PID_VIDEO } else { PID_AUDIO };
            assert_eq!(pmt.pcr_pid.map(|p| p.as_u16()), Some(pcr_pid));
        }
    }

    #[test]
    fn pes_round_trips_through_an_independent_reader() {
        let mut mux = TsMuxer::new();
        mux.set_tracks(true, Some(AudioStream::Adts));
        let mut out = Vec::new();
        mux.write_tables(&mut out).unwrap();
        // Sizes around every packet boundary, for both header shapes.
        let sizes = [0, 1, 150, 151, 152, 160, 176, 183, 184, 185, 335, 336, 337, 5000, 70000];
        let mut expected = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            let t = 90_000 + i as i64 * 3000;
            // Video in pieces cut across packet boundaries (with empty ones), audio whole.
            let pieces = cut_into_pieces(&data, i);
            mux.write_pes(Track::Video, timing(t + 6000, t, Some(t)), i == 0, &pieces, &mut out)
                .unwrap();
            mux.write_pes(
                Track::Audio,
                timing(t, t, None),
                false,
                &[&data[..size.min(4000)]],
                &mut out,
            )
            .unwrap();
            expected.push((StreamId::VIDEO_MIN, t + 6000, Some(t), data.clone()));
            expected.push((StreamId::AUDIO_MIN, t, None, data[..size.min(4000)].to_vec()));
        }
        assert_eq!(out.len() % 188, 0);
        let mut reader = PesPacketReader::new(TsPacketReader::new(&out[..]));
        let mut got = Vec::new();
        while let Some(pes) = reader.read_pes_packet().unwrap() {
            got.push((
                pes.header.stream_id.as_u8(),
                pes.header.pts.unwrap().as_u64() as i64,
                pes.header.dts.map(|d| d.as_u64() as i64),
                pes.data,
            ));
        }
        // The reader yields PES packets in completion order; compare as sets per stream.
        for stream in [StreamId::VIDEO_MIN, StreamId::AUDIO_MIN] {
            let a: Vec<_> = got.iter().filter(|g| g.0 == stream).collect();
            let b: Vec<_> = expected.iter().filter(|e| e.0 == stream).collect();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert_eq!((x.1, x.2, &x.3), (y.1, y.2, &y.3));
            }
        }
    }

    /// `data` cut into pieces of varied lengths (1 byte to a few packets, and empty ones).
    fn cut_into_pieces(data: &[u8], seed: usize) -> Vec<&[u8]> {
        let lengths = [0, 4, 1, 183, 0, 185, 6, 367, 2, 90];
        let mut pieces = Vec::new();
        let mut rest = data;
        for turn in seed.. {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at(lengths[turn % lengths.len()].min(rest.len()));
            pieces.push(piece);
            rest = after;
        }
        pieces.push(&[]);
        pieces
    }

    #[test]
    fn pieces_write_the_same_packets_as_the_whole() {
        // With a PCR and random access, the first packet carries 184 - 8 (adaptation field)
        // - 14 (PES header with PTS) = 162 bytes; later ones 184.
        const FIRST: usize = 162;
        let boundaries = [FIRST, FIRST + PACKET_PAYLOAD, FIRST + 2 * PACKET_PAYLOAD];
        let sizes = [0, 1, 161, 162, 163, 345, 346, 347, 400, 5000];
        for size in sizes {
            let data: Vec<u8> = (0..size).map(|b| (b * 11) as u8).collect();
            let whole = written_after_tables(|mux, out| {
                mux.write_pes(Track::Video, timing(0, 0, Some(0)), true, &[&data], out).unwrap();
            });
            // Cuts exactly at packet boundaries, one byte either side, and varied lengths.
            let mut cuttings: Vec<Vec<&[u8]>> =
                (0..10).map(|seed| cut_into_pieces(&data, seed)).collect();
            for at in boundaries.iter().flat_map(|&b| [b - 1, b, b + 1]).filter(|&at| at <= size) {
                let (head, tail) = data.split_at(at);
                cuttings.push(vec![head, tail]);
                cuttings.push(vec![&[], head, &[], tail, &[]]);
            }
            for (i, pieces) in cuttings.iter().enumerate() {
                let cut = written_after_tables(|mux, out| {
                    mux.write_pes(Track::Video, timing(0, 0, Some(0)), true, pieces, out).unwrap();
                });
                assert_eq!(whole, cut, "size {size}, cutting {i}");
            }
        }
    }

    /// The packets `f` writes after PAT/PMT for a video-only program, read back.
    fn written_after_tables(f: impl FnOnce(&mut TsMuxer, &mut Vec<u8>)) -> Vec<TsPacket> {
        let mut mux = TsMuxer::new();
        mux.set_tracks(true, None);
        let mut out = Vec::new();
        mux.write_tables(&mut out).unwrap();
        f(&mut mux, &mut out);
        let mut reader = TsPacketReader::new(&out[..]);
        let mut packets = Vec::new();
        while let Some(p) = reader.read_ts_packet().unwrap() {
            packets.push(p);
        }
        packets.split_off(2)
    }

    #[test]
    fn fast_path_matches_the_crate_byte_for_byte() {
        for len in [184, 368, 1000, 65536] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            let (mut cc_fast, mut cc_reference) =
                (ContinuityCounter::new(), ContinuityCounter::new());
            let mut writer = TsPacketWriter::new(&mut reference);
            for part in chunk.chunks_exact(PACKET_PAYLOAD) {
                write_full_continuation(PID_VIDEO, &mut cc_fast, part, &mut fast);
                let body = TsPayload::PesContinuation(payload::Bytes::new(part).unwrap());
                writer
                    .write_ts_packet(&packet(PID_VIDEO, &mut cc_reference, None, body).unwrap())
                    .unwrap();
            }
            assert_eq!(fast, reference, "{len} bytes");
            assert_eq!(cc_fast, cc_reference);
        }
    }

    #[test]
    fn a_pes_within_a_limit_is_spilled_packet_aligned_and_unchanged() {
        let data: Vec<u8> = (0..100_000).map(|i| (i * 7) as u8).collect();
        let timing = timing(900, 900, Some(900));
        let muxer = || {
            let mut mux = TsMuxer::new();
            mux.set_tracks(true, None);
            mux.write_tables(&mut Vec::new()).unwrap();
            mux
        };
        let mut whole = Vec::new();
        muxer().write_pes(Track::Video, timing, true, &[&data], &mut whole).unwrap();
        let (mut out, mut spilled) = (Vec::new(), Vec::new());
        let limit = 10 * TS_PACKET_LEN + 100;
        let mut spill = |buffer: &mut Vec<u8>| {
            assert!(buffer.len() <= limit && buffer.len().is_multiple_of(TS_PACKET_LEN));
            spilled.extend_from_slice(buffer);
            buffer.clear();
        };
        muxer()
            .write_pes_within(Track::Video, timing, true, &[&data], &mut out, limit, &mut spill)
            .unwrap();
        assert!(out.capacity() <= limit, "never grown past the limit");
        spilled.extend_from_slice(&out);
        assert!(whole.len() > 50 * limit);
        assert!(spilled == whole, "the same packets");
    }

    #[test]
    fn continuity_counters_advance_per_pid() {
        let packets = written_after_tables(|mux, out| {
            for i in 0..40 {
                mux.write_pes(Track::Video, timing(i, i, Some(i)), false, &[&[0; 400]], out)
                    .unwrap();
            }
        });
        assert_eq!(packets.len(), 40 * 3);
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(usize::from(p.header.continuity_counter.as_u8()), i % 16);
        }
    }

    #[test]
    fn pcr_only_packet_keeps_the_continuity_counter() {
        let packets = written_after_tables(|mux, out| {
            mux.write_pes(Track::Video, timing(0, 0, Some(0)), true, &[&[1; 10]], out).unwrap();
            mux.write_pcr(Track::Video, 9000, out).unwrap();
            mux.write_pes(Track::Video, timing(9000, 9000, Some(9000)), false, &[&[1; 10]], out)
                .unwrap();
        });
        let counters: Vec<u8> =
            packets.iter().map(|p| p.header.continuity_counter.as_u8()).collect();
        assert_eq!(counters, [0, 0, 1]);
        assert!(packets[1].payload.is_none());
        assert_eq!(packets[1].adaptation_field.as_ref().unwrap().pcr.unwrap().as_u64(), 9000 * 300);
    }

    #[test]
    fn mp3_stream_types() {
        for (audio, expected) in [(AudioStream::Mpeg1, 0x03), (AudioStream::Mpeg2, 0x04)] {
            let mut mux = TsMuxer::new();
            mux.set_tracks(false, Some(audio));
            let mut out = Vec::new();
            mux.write_tables(&mut out).unwrap();
            let mut reader = TsPacketReader::new(&out[..]);
            reader.read_ts_packet().unwrap();
            let Some(TsPayload::Pmt(pmt)) = reader.read_ts_packet().unwrap().unwrap().payload
            else {
                panic!()
            };
            assert_eq!(pmt.es_info[0].stream_type as u8, expected);
        }
    }

    #[test]
    fn pcr_and_timestamps_wrap_at_33_bits() {
        let t = (1i64 << 33) + 5;
        let packets = written_after_tables(|mux, out| {
            mux.write_pes(Track::Video, timing(t, t, Some(t)), true, &[&[1, 2, 3]], out).unwrap();
        });
        let p = &packets[0];
        let af = p.adaptation_field.clone().unwrap();
        assert!(af.random_access_indicator);
        assert_eq!(af.pcr.unwrap().as_u64(), 5 * 300);
        let Some(TsPayload::PesStart(pes)) = &p.payload else { panic!("not a PES start") };
        assert_eq!(pes.header.pts.unwrap().as_u64(), 5);
        assert_eq!(pes.header.dts, None);
    }
}
