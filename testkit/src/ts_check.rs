//! An independent look at MPEG-TS bytes, through the `mpeg2ts` crate's reader (not the
//! writer path the packager uses): tables, continuity counters, PCR spacing, and the PES
//! packets with their timestamps and payloads.

use std::collections::HashMap;

use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

/// An elementary stream the PMT lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsEntry {
    /// Its PID.
    pub pid: u16,
    /// Its stream type (0x1B H.264, 0x0F AAC, 0x03/0x04 MPEG audio).
    pub stream_type: u8,
}

/// One PES packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    /// PES stream id (0xE0 video, 0xC0 audio).
    pub stream_id: u8,
    /// Presentation time, 90 kHz.
    pub pts: Option<u64>,
    /// Decode time, 90 kHz (absent when equal to PTS).
    pub dts: Option<u64>,
    /// The elementary stream bytes.
    pub data: Vec<u8>,
}

/// What one segment holds.
#[derive(Debug, Clone)]
pub struct Report {
    /// The first packet is a PAT and the second a PMT.
    pub starts_with_tables: bool,
    /// Elementary streams of the (last) PMT.
    pub streams: Vec<EsEntry>,
    /// The PCR PID of the PMT.
    pub pcr_pid: Option<u16>,
    /// Largest distance between consecutive PCRs, 90 kHz ticks.
    pub max_pcr_gap: u64,
    /// PCRs seen.
    pub pcr_count: usize,
    /// Continuity counter errors.
    pub continuity_errors: usize,
    /// PES packets in order of completion.
    pub pes: Vec<Pes>,
}

/// Reads a whole segment; panics if the reader rejects any packet.
pub fn analyze(ts: &[u8]) -> Report {
    assert_eq!(ts.len() % 188, 0, "not a whole number of TS packets");
    let mut reader = TsPacketReader::new(ts);
    let mut index = 0;
    let mut starts_with_tables = true;
    let mut streams = Vec::new();
    let mut pcr_pid = None;
    let mut last_cc: HashMap<u16, u8> = HashMap::new();
    let mut continuity_errors = 0;
    let mut last_pcr: Option<u64> = None;
    let mut max_pcr_gap = 0;
    let mut pcr_count = 0;
    while let Some(packet) = reader.read_ts_packet().expect("mpeg2ts rejected a packet") {
        let pid = packet.header.pid.as_u16();
        match (&packet.payload, index) {
            (Some(TsPayload::Pat(_)), 0) | (Some(TsPayload::Pmt(_)), 1) => {}
            (_, 0 | 1) => starts_with_tables = false,
            _ => {}
        }
        if let Some(TsPayload::Pmt(pmt)) = &packet.payload {
            streams = pmt
                .es_info
                .iter()
                .map(|e| EsEntry {
                    pid: e.elementary_pid.as_u16(),
                    stream_type: e.stream_type as u8,
                })
                .collect();
            pcr_pid = pmt.pcr_pid.map(|p| p.as_u16());
        }
        let cc = packet.header.continuity_counter.as_u8();
        let expected = match last_cc.get(&pid) {
            None => cc,
            Some(&previous) if packet.payload.is_some() => (previous + 1) & 0x0f,
            Some(&previous) => previous,
        };
        if cc != expected {
            continuity_errors += 1;
        }
        last_cc.insert(pid, cc);
        if let Some(pcr) = packet.adaptation_field.as_ref().and_then(|a| a.pcr) {
            let pcr = pcr.as_u64() / 300;
            if let Some(previous) = last_pcr {
                max_pcr_gap = max_pcr_gap.max(pcr.wrapping_sub(previous) & ((1 << 33) - 1));
            }
            last_pcr = Some(pcr);
            pcr_count += 1;
        }
        index += 1;
    }
    let mut pes = Vec::new();
    let mut reader = PesPacketReader::new(TsPacketReader::new(ts));
    while let Some(packet) = reader.read_pes_packet().expect("mpeg2ts rejected a PES packet") {
        pes.push(Pes {
            stream_id: packet.header.stream_id.as_u8(),
            pts: packet.header.pts.map(|t| t.as_u64()),
            dts: packet.header.dts.map(|t| t.as_u64()),
            data: packet.data,
        });
    }
    Report { starts_with_tables, streams, pcr_pid, max_pcr_gap, pcr_count, continuity_errors, pes }
}
