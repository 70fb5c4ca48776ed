//! AV1: the codec configuration record Enhanced RTMP sends (FourCC `av01`), the picture
//! size from its sequence header OBU, and temporal units as ISOBMFF samples.
//!
//! Implements AV1-ISOBMFF v1.2.0 §2.3.3 (AV1CodecConfigurationRecord) and §2.4 (samples: no
//! temporal delimiter or padding OBUs), and of the AV1 bitstream specification §5.3 (OBU
//! header, leb128 sizes) and §5.5 (sequence header, up to the maximum frame size). The
//! RFC 6381 codec string follows AV1-ISOBMFF annex A. Never parses frame data.

use crate::bits::BitReader;
use crate::error::Malformed;

/// OBU types (AV1 §6.2.2).
const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_PADDING: u8 = 15;
/// The first byte of a version 1 record: marker bit and version.
const RECORD_MARKER_VERSION: u8 = 0x81;
/// Bytes of the record before its configOBUs.
const HEADER_LEN: usize = 4;

/// The parameters an AV1 stream is decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    record: Vec<u8>,
    picture_size: Option<(u16, u16)>,
}

impl Av1Config {
    /// Parses an AV1CodecConfigurationRecord (its configOBUs usually hold the sequence
    /// header, which gives the picture size).
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        if data.len() < HEADER_LEN {
            return Err(Malformed::VideoConfig("AV1 configuration record shorter than its header"));
        }
        if data[0] != RECORD_MARKER_VERSION {
            return Err(Malformed::VideoConfig("AV1 configuration record marker or version"));
        }
        let picture_size = obus(&data[HEADER_LEN..])
            .find(|obu| obu.kind == OBU_SEQUENCE_HEADER)
            .and_then(|obu| sequence_header_size(obu.payload));
        Ok(Self { record: data.to_vec(), picture_size })
    }

    /// The record as received, for fMP4's `av1C`.
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// The maximum frame size of the sequence header, when the record holds one.
    pub fn picture_size(&self) -> Option<(u16, u16)> {
        self.picture_size
    }

    /// The RFC 6381 codec string (AV1-ISOBMFF annex A), e.g. `av01.0.04M.08`.
    pub fn codec_string(&self) -> String {
        let (profile, level) = (self.record[1] >> 5, self.record[1] & 0x1f);
        let tier = if self.record[2] & 0x80 != 0 { 'H' } else { 'M' };
        let depth = match (self.record[2] >> 6 & 1, self.record[2] >> 5 & 1) {
            (1, 1) => 12,
            (1, 0) => 10,
            _ => 8,
        };
        format!("av01.{profile}.{level:02}{tier}.{depth:02}")
    }
}

/// Appends the OBUs of temporal unit `data` that an ISOBMFF sample keeps to `pieces` (the
/// temporal delimiter and padding go, AV1-ISOBMFF §2.4), borrowed, not copied. Data whose
/// OBUs cannot all be delimited (one without a size field before the last) goes whole.
pub fn sample_pieces<'a>(data: &'a [u8], pieces: &mut Vec<&'a [u8]>) {
    let first = pieces.len();
    let mut covered = 0;
    for obu in obus(data) {
        covered += obu.whole.len();
        if obu.kind != OBU_TEMPORAL_DELIMITER && obu.kind != OBU_PADDING {
            pieces.push(obu.whole);
        }
    }
    if covered != data.len() {
        pieces.truncate(first);
        pieces.push(data);
    }
}

/// One OBU: its type, all its bytes, and its payload.
struct Obu<'a> {
    kind: u8,
    whole: &'a [u8],
    payload: &'a [u8],
}

/// The OBUs of `data`, in order, until one does not parse.
fn obus(mut data: &[u8]) -> impl Iterator<Item = Obu<'_>> {
    std::iter::from_fn(move || {
        let (&header, rest) = data.split_first()?;
        let kind = header >> 3 & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let rest = if has_extension { rest.get(1..)? } else { rest };
        let (size, rest) = if has_size {
            let (size, used) = leb128(rest)?;
            (usize::try_from(size).ok()?, rest.get(used..)?)
        } else {
            (rest.len(), rest)
        };
        let payload = rest.get(..size)?;
        let header_len = data.len() - rest.len();
        let whole = &data[..header_len + size];
        data = &data[header_len + size..];
        Some(Obu { kind, whole, payload })
    })
}

/// An unsigned LEB128 value of at most 8 bytes (AV1 §4.10.5) and the bytes it used.
fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The maximum frame width and height of a sequence header OBU's payload (AV1 §5.5.1).
fn sequence_header_size(payload: &[u8]) -> Option<(u16, u16)> {
    let mut bits = BitReader::new(payload);
    bits.bits(3)?; // seq_profile
    bits.bits(1)?; // still_picture
    if bits.bits(1)? == 1 {
        // reduced_still_picture_header
        bits.bits(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_bits = 0;
        if bits.bits(1)? == 1 {
            // timing_info()
            bits.skip(64)?;
            if bits.bits(1)? == 1 {
                uvlc(&mut bits)?; // num_ticks_per_picture_minus_1
            }
            decoder_model = bits.bits(1)? == 1;
            if decoder_model {
                // decoder_model_info()
                buffer_delay_bits = bits.bits(5)? as usize + 1;
                bits.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = bits.bits(1)? == 1;
        for _ in 0..=bits.bits(5)? {
            bits.bits(12)?; // operating_point_idc
            if bits.bits(5)? > 7 {
                bits.bits(1)?; // seq_tier
            }
            if decoder_model && bits.bits(1)? == 1 {
                bits.skip(2 * buffer_delay_bits + 1)?; // operating_parameters_info()
            }
            if initial_display_delay && bits.bits(1)? == 1 {
                bits.bits(4)?;
            }
        }
    }
    let width_bits = bits.bits(4)? as u32 + 1;
    let height_bits = bits.bits(4)? as u32 + 1;
    let width = bits.bits(width_bits)? + 1;
    let height = bits.bits(height_bits)? + 1;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// uvlc() (AV1 §4.10.3).
fn uvlc(bits: &mut BitReader<'_>) -> Option<u64> {
    let mut zeros = 0;
    while bits.bits(1)? == 0 {
        zeros += 1;
        if zeros >= 32 {
            return Some(u64::from(u32::MAX));
        }
    }
    Some(bits.bits(zeros)? + (1 << zeros) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record ffmpeg 7.0 sent over Enhanced RTMP for libaom's 320x240 main profile
    /// (level 2.0, 8 bits): the header and a sequence header OBU.
    const LIBAOM_240P: &[u8] = &[
        0x81, 0x00, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xda, 0xf9,
        0x00, 0x40,
    ];

    #[test]
    fn parses_a_libaom_record() {
        let config = Av1Config::parse(LIBAOM_240P).unwrap();
        assert_eq!(config.picture_size(), Some((320, 240)));
        assert_eq!(config.codec_string(), "av01.0.00M.08");
        assert_eq!(config.record(), LIBAOM_240P);
        assert!(Av1Config::parse(&LIBAOM_240P[..3]).is_err());
        assert!(Av1Config::parse(&[0x01, 0, 0, 0]).is_err());
        for len in HEADER_LEN..LIBAOM_240P.len() {
            // A cut sequence header costs the size, never a panic.
            assert_eq!(Av1Config::parse(&LIBAOM_240P[..len]).unwrap().picture_size(), None);
        }
    }

    #[test]
    fn samples_lose_the_temporal_delimiter_and_padding() {
        // A temporal delimiter, a frame OBU of 3 bytes, padding of 1 byte.
        let unit = [0x12, 0x00, 0x32, 0x03, 1, 2, 3, 0x7a, 0x01, 0xff];
        let mut pieces = Vec::new();
        sample_pieces(&unit, &mut pieces);
        assert_eq!(pieces, [&unit[2..7]]);
        // The last OBU without a size field runs to the end.
        let unsized_last = [0x12, 0x00, 0x30, 1, 2];
        let mut pieces = Vec::new();
        sample_pieces(&unsized_last, &mut pieces);
        assert_eq!(pieces, [&unsized_last[2..]]);
        // A size running past the end: sent whole.
        let overrun = [0x12, 0x00, 0x32, 0x09, 1];
        let mut pieces = Vec::new();
        sample_pieces(&overrun, &mut pieces);
        assert_eq!(pieces, [&overrun[..]]);
    }
}
