//! H.265/HEVC: the decoder configuration record Enhanced RTMP sends (FourCC `hvc1`) and the
//! picture size from its SPS.
//!
//! Implements ISO/IEC 14496-15 §8.3.3.1 (HEVCDecoderConfigurationRecord), ITU-T H.265
//! §7.3.2.2 up to the conformance window (picture size) and §7.3.3 (profile_tier_level), and
//! the RFC 6381 codec string of ISO/IEC 14496-15 annex E. Frames stay length-prefixed NAL
//! units, as fMP4 carries them; never parses slice data.

use crate::bits::{BitReader, rbsp};
use crate::error::Malformed;

/// NAL unit type of a sequence parameter set (H.265 table 7-1).
const NAL_SPS: u8 = 33;
/// NAL unit types of the video, sequence and picture parameter sets (H.265 table 7-1).
const PARAMETER_SETS: [u8; 3] = [32, NAL_SPS, 34];
/// Bytes of the record before its arrays of NAL units.
const HEADER_LEN: usize = 23;

/// The parameters an HEVC stream is decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    record: Vec<u8>,
    picture_size: Option<(u16, u16)>,
}

impl HevcConfig {
    /// Parses an HEVCDecoderConfigurationRecord: version, a whole header, and whole arrays
    /// holding an SPS.
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        let bad = Malformed::VideoConfig;
        if data.len() < HEADER_LEN {
            return Err(bad("HEVC decoder configuration record shorter than its header"));
        }
        if data[0] != 1 {
            return Err(bad("HEVC configurationVersion is not 1"));
        }
        if data[21] & 0x03 == 2 {
            return Err(bad("HEVC lengthSizeMinusOne is 2"));
        }
        let mut rest = &data[HEADER_LEN..];
        let mut picture_size = None;
        let mut has_sps = false;
        let mut record = data.to_vec();
        for _ in 0..data[22] {
            let at = data.len() - rest.len();
            let [kind, n0, n1, tail @ ..] = rest else {
                return Err(bad("HEVC parameter set array cut short"));
            };
            if PARAMETER_SETS.contains(&(kind & 0x3f)) {
                // array_completeness: every set of the kind is here, as `hvc1` requires.
                record[at] |= 0x80;
            }
            let is_sps = kind & 0x3f == NAL_SPS;
            rest = tail;
            for _ in 0..u16::from_be_bytes([*n0, *n1]) {
                let [l0, l1, tail @ ..] = rest else {
                    return Err(bad("HEVC parameter set cut short"));
                };
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                let Some((nalu, tail)) = tail.split_at_checked(len) else {
                    return Err(bad("HEVC parameter set cut short"));
                };
                if is_sps {
                    has_sps = true;
                    picture_size = picture_size.or_else(|| sps_picture_size(nalu));
                }
                rest = tail;
            }
        }
        if !has_sps {
            return Err(bad("HEVC record without a sequence parameter set"));
        }
        Ok(Self { record, picture_size })
    }

    /// The record as received, for fMP4's `hvcC`, with `array_completeness` set on the
    /// parameter sets' arrays (ISO/IEC 14496-15 §8.4.1.1.1: 1 under an `hvc1` sample entry;
    /// ffmpeg's FLV muxer writes 0, its MP4 muxer 1).
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// Picture width and height (inside the conformance window), when the SPS parses.
    pub fn picture_size(&self) -> Option<(u16, u16)> {
        self.picture_size
    }

    /// The RFC 6381 codec string (ISO/IEC 14496-15 annex E), e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        let r = &self.record;
        let space = ["", "A", "B", "C"][usize::from(r[1] >> 6)];
        let tier = if r[1] & 0x20 != 0 { 'H' } else { 'L' };
        let compatibility = u32::from_be_bytes([r[2], r[3], r[4], r[5]]).reverse_bits();
        let mut text = format!("hvc1.{space}{}.{compatibility:x}.{tier}{}", r[1] & 0x1f, r[12]);
        let constraints = &r[6..12];
        let used = constraints.iter().rposition(|&b| b != 0).map_or(1, |last| last + 1);
        for byte in &constraints[..used] {
            text.push_str(&format!(".{byte:X}"));
        }
        text
    }
}

/// Bytes of an SPS's RBSP read for its picture size: the fields up to the conformance
/// window, after a profile_tier_level of at most seven sub-layers (§7.3.3: 12 bytes, then
/// 2, then up to 11 per sub-layer), about 100 bytes.
const SPS_SIZE_RBSP: usize = 128;

/// Picture width and height of an HEVC SPS NAL unit (H.265 §7.3.2.2, cropped by the
/// conformance window per §7.4.3.2.1), or `None` if it does not parse.
pub fn sps_picture_size(sps: &[u8]) -> Option<(u16, u16)> {
    // Without the two-byte NAL unit header; the fields needed are in the first bytes.
    let rbsp = rbsp(sps.get(2..)?, SPS_SIZE_RBSP);
    let mut bits = BitReader::new(&rbsp);
    bits.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = usize::try_from(bits.bits(3)?).ok()?; // sps_max_sub_layers_minus1
    bits.bits(1)?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, sps_max_sub_layers_minus1): the general profile (88 bits) and
    // level, then per sub-layer presence flags, padding, and what they announce.
    bits.skip(88 + 8)?;
    let mut present = Vec::with_capacity(sub_layers);
    for _ in 0..sub_layers {
        present.push((bits.bits(1)? == 1, bits.bits(1)? == 1));
    }
    if sub_layers > 0 {
        bits.skip(2 * (8 - sub_layers))?;
    }
    for (profile, level) in present {
        bits.skip(if profile { 88 } else { 0 } + if level { 8 } else { 0 })?;
    }
    bits.ue()?; // sps_seq_parameter_set_id
    let chroma_format = bits.ue()?;
    let separate_planes = chroma_format == 3 && bits.bits(1)? == 1;
    let width = bits.ue()?;
    let height = bits.ue()?;
    let (mut crop_x, mut crop_y) = (0, 0);
    if bits.bits(1)? == 1 {
        let (left, right, top, bottom) = (bits.ue()?, bits.ue()?, bits.ue()?, bits.ue()?);
        let (unit_x, unit_y) = match (chroma_format, separate_planes) {
            (1, _) => (2, 2),
            (2, _) => (2, 1),
            _ => (1, 1),
        };
        crop_x = (left + right) * unit_x;
        crop_y = (top + bottom) * unit_y;
    }
    let width = width.checked_sub(crop_x)?;
    let height = height.checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record ffmpeg 7.0 sent over Enhanced RTMP for libx265's 320x240 Main profile
    /// (level 2) with its VPS, SPS and PPS (x265's informational SEI array left out).
    const X265_MAIN_240P: &[u8] = &[
        0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3c, 0xf0, 0x00,
        0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f, 0x03, 0x20, 0x00, 0x01, 0x00, 0x18, 0x40, 0x01,
        0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
        0x00, 0x03, 0x00, 0x3c, 0x95, 0x98, 0x09, 0x21, 0x00, 0x01, 0x00, 0x2a, 0x42, 0x01, 0x01,
        0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x3c,
        0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b, 0xc0, 0x5a, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10, 0x22, 0x00, 0x01, 0x00, 0x07, 0x44,
        0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40,
    ];

    #[test]
    fn parses_an_x265_record() {
        let config = HevcConfig::parse(X265_MAIN_240P).unwrap();
        assert_eq!(config.picture_size(), Some((320, 240)));
        assert_eq!(config.codec_string(), "hvc1.1.6.L60.90");
        // The VPS, SPS and PPS arrays (bytes 23, 52, 99) marked complete; nothing else.
        let mut complete = X265_MAIN_240P.to_vec();
        for at in [23, 52, 99] {
            complete[at] |= 0x80;
        }
        assert_eq!(config.record(), complete);
        assert_eq!(HevcConfig::parse(config.record()).unwrap(), config, "parses as it was");
    }

    #[test]
    fn every_truncation_is_malformed_and_never_panics() {
        for len in 0..X265_MAIN_240P.len() {
            assert!(HevcConfig::parse(&X265_MAIN_240P[..len]).is_err(), "{len}");
        }
    }
}
