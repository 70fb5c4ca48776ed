//! H.264/AVC: the decoder configuration record and the conversion of FLV's length-prefixed
//! access units to the Annex B byte stream MPEG-TS carries.
//!
//! Implements ISO/IEC 14496-15 §5.3.3.1 (AVCDecoderConfigurationRecord) and the Annex B
//! byte-stream format of ITU-T H.264, with the access unit delimiter (§7.3.2.4) that
//! ISO/IEC 13818-1 §2.14 asks for. Never parses slice data.

use crate::error::Malformed;

/// NAL unit types this module looks at (ITU-T H.264 table 7-1).
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// An access unit delimiter with primary_pic_type 7 ("any slice type").
const AUD: [u8; 6] = [0, 0, 0, 1, NAL_AUD, 0xf0];

/// The parameters an AVC stream is decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication`.
    pub profile: u8,
    /// `profile_compatibility`.
    pub compatibility: u8,
    /// `AVCLevelIndication`.
    pub level: u8,
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    nalu_length_size: usize,
    /// SPS and PPS, in that order, each prefixed with a start code.
    parameter_sets: Vec<u8>,
    /// The record as received, for fragmented MP4's `avcC`.
    record: Vec<u8>,
    /// Picture width and height from the first SPS, when it parses.
    picture_size: Option<(u16, u16)>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord.
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(data);
        let version = r.u8()?;
        if version != 1 {
            return Err(Malformed::AvcConfig("configurationVersion is not 1"));
        }
        let profile = r.u8()?;
        let compatibility = r.u8()?;
        let level = r.u8()?;
        let nalu_length_size = usize::from(r.u8()? & 0x03) + 1;
        if nalu_length_size == 3 {
            return Err(Malformed::AvcConfig("lengthSizeMinusOne is 2"));
        }
        let mut parameter_sets = Vec::new();
        let sps_count = r.u8()? & 0x1f;
        if sps_count == 0 {
            return Err(Malformed::AvcConfig("no sequence parameter set"));
        }
        let (mut picture_size, mut formats) = (None, None);
        for _ in 0..sps_count {
            let len = usize::from(r.u16()?);
            let sps = r.take(len)?;
            if picture_size.is_none() {
                picture_size = sps_picture_size(sps);
                formats = sps_formats(sps);
            }
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(sps);
        }
        let pps_count = r.u8()?;
        if pps_count == 0 {
            return Err(Malformed::AvcConfig("no picture parameter set"));
        }
        for _ in 0..pps_count {
            let len = usize::from(r.u16()?);
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(r.take(len)?);
        }
        let mut record = data.to_vec();
        // ISO/IEC 14496-15 §5.3.3.1.2: the High profiles' record ends with the chroma format
        // and bit depths, which x264 through ffmpeg's FLV muxer and OBS leave out; fMP4's
        // `avcC` gets them from the SPS, as ffmpeg's MP4 muxer writes them.
        if HIGH_PROFILES.contains(&profile)
            && r.0.is_empty()
            && let Some((chroma_format, luma, chroma)) = formats
        {
            record.extend_from_slice(&[0xfc | chroma_format, 0xf8 | luma, 0xf8 | chroma, 0]);
        }
        Ok(Self {
            profile,
            compatibility,
            level,
            nalu_length_size,
            parameter_sets,
            record,
            picture_size,
        })
    }

    /// The AVCDecoderConfigurationRecord as received, with the High profiles' trailing
    /// fields added when they were left out.
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// Picture width and height (after cropping) from the SPS, when it could be read.
    pub fn picture_size(&self) -> Option<(u16, u16)> {
        self.picture_size
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile, self.compatibility, self.level)
    }

    /// Appends one access unit in Annex B form to `pieces`, as pieces to be written back to
    /// back (the NAL units are borrowed from `nalus`, not copied): an access unit delimiter,
    /// then SPS and PPS when the unit is a place to start decoding (an IDR slice, or the
    /// publisher's `keyframe` flag: with open GOPs that is an I-frame that is not IDR, and a
    /// segment starts there) without both of its own, then every NAL unit of `nalus` except
    /// delimiters, each after a start code. On error `pieces` may hold a partial unit; the
    /// caller discards it.
    pub fn annex_b<'a>(
        &'a self,
        nalus: &'a [u8],
        keyframe: bool,
        pieces: &mut Vec<&'a [u8]>,
    ) -> Result<(), Malformed> {
        pieces.push(&AUD);
        let (has_idr, has_sps, has_pps) = self.scan(nalus)?;
        if (has_idr || keyframe) && !(has_sps && has_pps) {
            pieces.push(&self.parameter_sets);
        }
        self.for_each_nalu(nalus, |nalu| {
            if nalu[0] & 0x1f != NAL_AUD {
                pieces.extend([&START_CODE[..], nalu]);
            }
        })
    }

    /// Whether the unit holds an IDR slice, and whether it carries its own SPS and PPS.
    fn scan(&self, nalus: &[u8]) -> Result<(bool, bool, bool), Malformed> {
        let (mut idr, mut sps, mut pps) = (false, false, false);
        self.for_each_nalu(nalus, |nalu| match nalu[0] & 0x1f {
            NAL_IDR => idr = true,
            NAL_SPS => sps = true,
            NAL_PPS => pps = true,
            _ => {}
        })?;
        Ok((idr, sps, pps))
    }

    /// Calls `f` with each non-empty NAL unit.
    fn for_each_nalu<'a>(
        &self,
        nalus: &'a [u8],
        mut f: impl FnMut(&'a [u8]),
    ) -> Result<(), Malformed> {
        let mut offset = 0;
        while offset < nalus.len() {
            let prefix_end = offset + self.nalu_length_size;
            let Some(prefix) = nalus.get(offset..prefix_end) else {
                return Err(Malformed::NaluOverrun {
                    offset,
                    declared: self.nalu_length_size,
                    available: nalus.len() - offset,
                });
            };
            let declared = prefix.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            let Some(nalu) = nalus.get(prefix_end..prefix_end + declared) else {
                return Err(Malformed::NaluOverrun {
                    offset,
                    declared,
                    available: nalus.len() - prefix_end,
                });
            };
            if !nalu.is_empty() {
                f(nalu);
            }
            offset = prefix_end + declared;
        }
        Ok(())
    }
}

/// A bounds-checked big-endian cursor over the configuration record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::AvcConfig("record ends early"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Bytes of an SPS NAL unit's payload (emulation prevention bytes included) read for its
/// picture size: the fields up to frame cropping. Most SPSs are under 30 bytes, but High
/// profiles may carry scaling lists before those fields (§7.3.2.1.1.1: up to twelve lists,
/// 480 coefficients of up to 17 bits each, about 1 KiB), so twice that. A POC type 1 SPS
/// may list up to 255 offsets of up to 65 bits besides: one with long offsets and full
/// scaling lists is past this bound, and its picture size is not read.
const SPS_SIZE_RBSP: usize = 2048;

/// Profiles whose AVCDecoderConfigurationRecord ends with the chroma format and bit depths
/// (ISO/IEC 14496-15 §5.3.3.1.2).
const HIGH_PROFILES: [u8; 4] = [100, 110, 122, 144];

/// `chroma_format_idc`, `bit_depth_luma_minus8` and `bit_depth_chroma_minus8` of an SPS NAL
/// unit of a High profile (ITU-T H.264 §7.3.2.1.1), each within the record's field (2, 3 and 3
/// bits); `None` if it does not parse or is not of one.
fn sps_formats(sps: &[u8]) -> Option<(u8, u8, u8)> {
    let rbsp = crate::bits::rbsp(sps.get(1..)?, 16);
    let mut bits = crate::bits::BitReader::new(&rbsp);
    let profile = u8::try_from(bits.bits(8)?).ok()?;
    if !HIGH_PROFILES.contains(&profile) {
        return None;
    }
    bits.bits(16)?; // constraint flags, level
    bits.ue()?; // seq_parameter_set_id
    let chroma_format = bits.ue()?;
    if chroma_format == 3 {
        bits.bits(1)?; // separate_colour_plane_flag
    }
    let (luma, chroma) = (bits.ue()?, bits.ue()?);
    Some((
        u8::try_from(chroma_format).ok().filter(|&f| f < 4)?,
        u8::try_from(luma).ok().filter(|&d| d < 8)?,
        u8::try_from(chroma).ok().filter(|&d| d < 8)?,
    ))
}

/// Picture width and height of an SPS NAL unit (ITU-T H.264 §7.3.2.1.1, cropping per
/// §7.4.2.1.1), or `None` if it does not parse. Reads only up to the frame cropping fields.
pub fn sps_picture_size(sps: &[u8]) -> Option<(u16, u16)> {
    // The RBSP: without the NAL header byte and emulation prevention bytes (§7.4.1).
    let rbsp = crate::bits::rbsp(sps.get(1..)?, SPS_SIZE_RBSP);
    let mut bits = crate::bits::BitReader::new(&rbsp);
    let profile = bits.bits(8)?;
    bits.bits(16)?; // constraint flags, level
    bits.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = bits.ue()?;
        if chroma_format == 3 {
            bits.bits(1)?; // separate_colour_plane_flag
        }
        bits.ue()?; // bit_depth_luma_minus8
        bits.ue()?; // bit_depth_chroma_minus8
        bits.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if bits.bits(1)? == 1 {
            // seq_scaling_matrix_present_flag: skip the scaling lists (§7.3.2.1.1.1).
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if bits.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + bits.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    bits.ue()?; // log2_max_frame_num_minus4
    match bits.ue()? {
        0 => {
            bits.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.bits(1)?;
            bits.se()?;
            bits.se()?;
            for _ in 0..bits.ue()?.min(255) {
                bits.se()?;
            }
        }
        _ => {}
    }
    bits.ue()?; // max_num_ref_frames
    bits.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = bits.ue()? + 1;
    let height_map_units = bits.ue()? + 1;
    let frame_mbs_only = bits.bits(1)?;
    if frame_mbs_only == 0 {
        bits.bits(1)?; // mb_adaptive_frame_field_flag
    }
    bits.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if bits.bits(1)? == 1 {
        let (left, right, top, bottom) = (bits.ue()?, bits.ue()?, bits.ue()?, bits.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = (left + right) * unit_x;
        crop_y = (top + bottom) * unit_y;
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = (height_map_units * 16 * (2 - frame_mbs_only)).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record shaped as x264 writes it for 1280x720 High profile, level 3.1: one 26-byte
    /// SPS, one 6-byte PPS. Real encoder output is checked by `tests/ffprobe.rs`.
    const X264_HIGH_720P: &[u8] = &[
        0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40,
        0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0,
        0xf1, 0x83, 0x19, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    #[test]
    fn parses_x264_record() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        assert_eq!((cfg.profile, cfg.compatibility, cfg.level), (0x64, 0, 0x1f));
        assert_eq!(cfg.nalu_length_size, 4);
        assert_eq!(cfg.codec_string(), "avc1.64001f");
        assert_eq!(&cfg.parameter_sets[..5], &[0, 0, 0, 1, 0x67]);
        assert_eq!(cfg.parameter_sets.len(), 4 + 26 + 4 + 6);
        // High profile, 4:2:0, 8 bits: the trailing fields x264's record left out.
        assert_eq!(cfg.record()[..X264_HIGH_720P.len()], *X264_HIGH_720P);
        assert_eq!(cfg.record()[X264_HIGH_720P.len()..], [0xfd, 0xf8, 0xf8, 0x00]);
        let again = AvcConfig::parse(cfg.record()).unwrap();
        assert_eq!(again.record(), cfg.record(), "a record that has them keeps them as they are");
    }

    #[test]
    fn every_truncation_of_the_record_is_malformed() {
        for len in 0..X264_HIGH_720P.len() {
            assert!(AvcConfig::parse(&X264_HIGH_720P[..len]).is_err(), "length {len}");
        }
    }

    /// The unit `annex_b` writes for a frame not flagged a keyframe, joined.
    fn annex_b(cfg: &AvcConfig, nalus: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut pieces = Vec::new();
        cfg.annex_b(nalus, false, &mut pieces)?;
        Ok(pieces.concat())
    }

    /// A keyframe that is not IDR (an open GOP's I-frame, where segments start) and an IDR
    /// with an in-band PPS but no SPS get the parameter sets too; an inter frame never.
    #[test]
    fn every_place_to_start_decoding_gets_parameter_sets() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        let i_slice = [0, 0, 0, 2, 0x41, 0x88];
        let mut pieces = Vec::new();
        cfg.annex_b(&i_slice, true, &mut pieces).unwrap();
        let mut expected = AUD.to_vec();
        expected.extend_from_slice(&cfg.parameter_sets);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x88]);
        assert_eq!(pieces.concat(), expected);
        let pps_only = [0, 0, 0, 2, 0x68, 0xeb, 0, 0, 0, 2, 0x65, 0x88];
        let out = annex_b(&cfg, &pps_only).unwrap();
        assert_eq!(out.len(), AUD.len() + cfg.parameter_sets.len() + 2 * 6);
        assert_eq!(annex_b(&cfg, &i_slice).unwrap().len(), AUD.len() + 6);
    }

    #[test]
    fn idr_gets_aud_and_parameter_sets() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        // An AUD from the encoder (dropped), then an IDR slice.
        let nalus = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        let out = annex_b(&cfg, &nalus).unwrap();
        let mut expected = AUD.to_vec();
        expected.extend_from_slice(&cfg.parameter_sets);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        assert_eq!(out, expected);
    }

    /// Bits written most significant first, with Exp-Golomb codes (§9.1).
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn bits(&mut self, value: u64, count: u32) -> &mut Self {
            self.bits.extend((0..count).rev().map(|i| value >> i & 1 == 1));
            self
        }

        fn ue(&mut self, value: u64) -> &mut Self {
            let coded = value + 1;
            let len = 64 - coded.leading_zeros();
            self.bits(0, len - 1).bits(coded, len)
        }

        fn se(&mut self, value: i64) -> &mut Self {
            let mapped = if value > 0 { 2 * value - 1 } else { -2 * value };
            self.ue(mapped as u64)
        }

        /// The bytes, with the stop bit, and emulation prevention bytes (§7.4.1).
        fn nal_unit(&mut self, header: u8) -> Vec<u8> {
            self.bits(1, 1);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let rbsp =
                self.bits.chunks(8).map(|b| b.iter().fold(0u8, |n, &bit| n << 1 | u8::from(bit)));
            let mut nal = vec![header];
            let mut zeros = 0;
            for byte in rbsp {
                if zeros == 2 && byte <= 3 {
                    nal.push(3);
                    zeros = 0;
                }
                zeros = if byte == 0 { zeros + 1 } else { 0 };
                nal.push(byte);
            }
            nal
        }
    }

    /// A High profile SPS whose scaling lists (eight, full, as a hardware encoder may send
    /// them) put the picture size hundreds of bytes in.
    #[test]
    fn the_picture_size_is_read_past_scaling_lists() {
        let mut sps = BitWriter::default();
        sps.bits(100, 8).bits(0, 8).bits(40, 8).ue(0); // High, level 4.0, id 0
        sps.ue(1).ue(0).ue(0).bits(0, 1); // 4:2:0, 8 bits
        sps.bits(1, 1); // seq_scaling_matrix_present_flag
        for list in 0..8 {
            sps.bits(1, 1);
            for n in 0..if list < 6 { 16 } else { 64 } {
                sps.se(if n % 2 == 0 { 40 } else { -40 });
            }
        }
        sps.ue(0).ue(0).ue(0).ue(1).bits(0, 1); // frame_num, POC type 0, one reference
        sps.ue(1280 / 16 - 1).ue(720 / 16 - 1).bits(1, 1).bits(1, 1).bits(0, 1);
        let nal = sps.nal_unit(0x67);
        assert!(nal.len() > 300, "{} bytes", nal.len());
        assert_eq!(sps_picture_size(&nal), Some((1280, 720)));
    }

    /// The SPS read for the picture size is bounded ([`SPS_SIZE_RBSP`]): the largest scaling
    /// lists a 4:4:4 SPS can carry (twelve, every coefficient 17 bits) are within it; an SPS
    /// whose size fields lie past it (POC type 1 with 255 long offsets too) is not read on.
    #[test]
    fn the_sps_read_is_bounded_past_the_largest_scaling_lists() {
        let sps = |offsets: u64| {
            let mut sps = BitWriter::default();
            sps.bits(244, 8).bits(0, 8).bits(51, 8).ue(0); // High 4:4:4, level 5.1, id 0
            sps.ue(3).bits(0, 1).ue(0).ue(0).bits(0, 1); // 4:4:4, one plane, 8 bits
            sps.bits(1, 1); // seq_scaling_matrix_present_flag
            for list in 0..12 {
                sps.bits(1, 1);
                for _ in 0..if list < 6 { 16 } else { 64 } {
                    sps.se(-128); // 17 bits; 8, 136, 8, ...: never 0
                }
            }
            sps.ue(0).ue(1).bits(0, 1).se(0).se(0).ue(offsets); // frame_num, POC type 1
            for _ in 0..offsets {
                sps.se(1 << 20);
            }
            sps.ue(1).bits(0, 1); // one reference
            sps.ue(1280 / 16 - 1).ue(720 / 16 - 1).bits(1, 1).bits(1, 1).bits(0, 1);
            sps.nal_unit(0x67)
        };
        let lists = sps(0);
        assert!((900..SPS_SIZE_RBSP).contains(&lists.len()), "{} bytes", lists.len());
        assert_eq!(sps_picture_size(&lists), Some((1280, 720)));
        // POC type 1 with a few offsets is read.
        assert_eq!(sps_picture_size(&sps(8)), Some((1280, 720)));
        let past = sps(255);
        assert!(past.len() > SPS_SIZE_RBSP, "{} bytes", past.len());
        assert_eq!(sps_picture_size(&past), None);
    }

    #[test]
    fn inter_frame_gets_only_aud() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        let out = annex_b(&cfg, &[0, 0, 0, 2, 0x41, 0x9a]).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x41, 0x9a]);
    }

    #[test]
    fn idr_with_inband_sps_is_not_given_a_second_copy() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        let nalus = [0, 0, 0, 2, 0x67, 0x64, 0, 0, 0, 2, 0x68, 0xeb, 0, 0, 0, 2, 0x65, 0x88];
        let out = annex_b(&cfg, &nalus).unwrap();
        assert_eq!(out.len(), AUD.len() + 3 * 6);
    }

    #[test]
    fn overrunning_length_prefix_is_malformed() {
        let cfg = AvcConfig::parse(X264_HIGH_720P).unwrap();
        assert_eq!(
            annex_b(&cfg, &[0, 0, 0, 9, 0x65, 1]),
            Err(Malformed::NaluOverrun { offset: 0, declared: 9, available: 2 })
        );
        assert_eq!(
            annex_b(&cfg, &[0, 0, 0, 1, 0x41, 0, 0]),
            Err(Malformed::NaluOverrun { offset: 5, declared: 4, available: 2 })
        );
    }
}
