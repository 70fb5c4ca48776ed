//! AAC: the AudioSpecificConfig FLV sends once, and the ADTS header MPEG-TS needs on every
//! frame.
//!
//! Implements ISO/IEC 14496-3 §1.6.2.1 (AudioSpecificConfig, including the explicit HE-AAC
//! and HE-AACv2 extension) and §1.A.2.2 (adts_fixed_header, adts_variable_header). HE-AAC is
//! written as its AAC-LC core, which decoders upgrade by implicit SBR/PS signalling, as
//! ISO/IEC 14496-3 §1.6.5.2 allows. Never touches raw_data_block contents.

use crate::error::{Malformed, Unsupported};

/// Sampling frequencies by index (ISO/IEC 14496-3 table 1.18).
const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Audio object types (ISO/IEC 14496-3 table 1.17) that get special treatment.
const AOT_SBR: u8 = 5;
const AOT_PS: u8 = 29;
/// ADTS `profile_ObjectType` has two bits: object types 1 to 4 only.
const ADTS_MAX_OBJECT_TYPE: u8 = 4;

/// Size of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;
/// Largest `aac_frame_length`, header included (13 bits).
const ADTS_MAX_FRAME_LEN: usize = (1 << 13) - 1;
/// PCM samples per AAC frame (the 960-sample variant is not used by FLV encoders).
pub const SAMPLES_PER_FRAME: u32 = 1024;

/// What an ADTS header must say about an AAC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The object type as published (2 for AAC-LC, 5 for HE-AAC, 29 for HE-AACv2).
    pub object_type: u8,
    /// The output sampling rate in Hz (the SBR rate for explicit HE-AAC).
    pub sample_rate: u32,
    /// `channelConfiguration` (1 mono, 2 stereo, 0 when a PCE describes the channels).
    pub channel_config: u8,
    /// Object type written into ADTS: the core coder's.
    core_object_type: u8,
    /// Sampling frequency index written into ADTS: the core coder's.
    core_frequency_index: u8,
    /// The AudioSpecificConfig as received, for fragmented MP4's `esds`.
    config: Vec<u8>,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig.
    pub fn parse(data: &[u8]) -> Result<Self, crate::Error> {
        let mut bits = BitReader::new(data);
        let object_type = read_object_type(&mut bits)?;
        let (frequency_index, sample_rate) = frequency(&mut bits)?;
        let channel_config = bits.read(4)? as u8;
        let (core_object_type, core_frequency_index, sample_rate) =
            if object_type == AOT_SBR || object_type == AOT_PS {
                let (_, extension_rate) = frequency(&mut bits)?;
                (read_object_type(&mut bits)?, frequency_index, extension_rate)
            } else {
                (object_type, frequency_index, sample_rate)
            };
        if core_object_type == 0 || core_object_type > ADTS_MAX_OBJECT_TYPE {
            return Err(Unsupported::AacObjectType(object_type).into());
        }
        let Some(core_frequency_index) = core_frequency_index else {
            return Err(Unsupported::AacSampleRate(sample_rate).into());
        };
        Ok(Self {
            object_type,
            sample_rate,
            channel_config,
            core_object_type,
            core_frequency_index,
            config: data.to_vec(),
        })
    }

    /// The AudioSpecificConfig as received.
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.config
    }

    /// The sampling rate of the AAC core, which sets the frame duration.
    pub fn core_sample_rate(&self) -> u32 {
        SAMPLE_RATES[usize::from(self.core_frequency_index)]
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The ADTS header for a raw frame of `payload_len` bytes.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], Malformed> {
        let len = payload_len + ADTS_HEADER_LEN;
        if len > ADTS_MAX_FRAME_LEN {
            return Err(Malformed::AacFrameTooLarge(payload_len));
        }
        let profile = self.core_object_type - 1;
        let channels = self.channel_config & 0x07;
        Ok([
            0xff,
            0xf1, // syncword end, MPEG-4, layer 0, no CRC
            (profile << 6) | (self.core_frequency_index << 2) | (channels >> 2),
            ((channels & 0x03) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1f, // buffer fullness 0x7ff: variable rate
            0xfc,
        ])
    }
}

/// Reads `audioObjectType` (GetAudioObjectType(), with its escape to 6 more bits).
fn read_object_type(bits: &mut BitReader<'_>) -> Result<u8, crate::Error> {
    let aot = bits.read(5)?;
    let aot = if aot == 31 { 32 + bits.read(6)? } else { aot };
    Ok(aot as u8)
}

/// Reads `samplingFrequencyIndex` (and the explicit 24-bit rate when the index is 15).
/// Returns the index ADTS can carry, if any, and the rate.
fn frequency(bits: &mut BitReader<'_>) -> Result<(Option<u8>, u32), crate::Error> {
    let index = bits.read(4)?;
    if index == 0x0f {
        let rate = bits.read(24)?;
        let index = SAMPLE_RATES.iter().position(|&r| r == rate).map(|i| i as u8);
        return Ok((index, rate));
    }
    match SAMPLE_RATES.get(index as usize) {
        Some(&rate) => Ok((Some(index as u8), rate)),
        None => Err(Malformed::AacConfig("reserved samplingFrequencyIndex").into()),
    }
}

/// An MSB-first bit reader for the AudioSpecificConfig.
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    /// Reads `n` ≤ 32 bits.
    fn read(&mut self, n: usize) -> Result<u32, Malformed> {
        if self.bit + n > self.data.len() * 8 {
            return Err(Malformed::AacConfig("config ends early"));
        }
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data[self.bit / 8];
            value = (value << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_44100_stereo() {
        // ffmpeg's native AAC encoder at 44.1 kHz stereo: 0x12 0x10.
        let cfg = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((cfg.object_type, cfg.sample_rate, cfg.channel_config), (2, 44100, 2));
        assert_eq!(cfg.codec_string(), "mp4a.40.2");
        // The header every ADTS file of that shape starts with: FF F1 50 80.
        let h = cfg.adts_header(371).unwrap();
        assert_eq!(h, [0xff, 0xf1, 0x50, 0x80, 0x2f, 0x5f, 0xfc]);
        assert_eq!(
            ((usize::from(h[3]) & 3) << 11) | (usize::from(h[4]) << 3) | (usize::from(h[5]) >> 5),
            378
        );
    }

    #[test]
    fn lc_48000_mono() {
        let cfg = AacConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!((cfg.sample_rate, cfg.channel_config), (48000, 1));
        assert_eq!(&cfg.adts_header(0).unwrap()[..4], &[0xff, 0xf1, 0x4c, 0x40]);
    }

    #[test]
    fn explicit_he_aac_is_written_as_its_lc_core() {
        // AOT 5, 24 kHz core, stereo, extension 48 kHz, core AOT 2.
        let cfg = AacConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(cfg.object_type, 5);
        assert_eq!(cfg.sample_rate, 48000);
        assert_eq!(cfg.core_sample_rate(), 24000);
        assert_eq!(&cfg.adts_header(0).unwrap()[..3], &[0xff, 0xf1, 0x58]);
    }

    #[test]
    fn bad_configs() {
        assert!(matches!(AacConfig::parse(&[0x12]), Err(crate::Error::Malformed(_))));
        assert!(matches!(AacConfig::parse(&[]), Err(crate::Error::Malformed(_))));
        // Index 13 is reserved.
        assert_eq!(
            AacConfig::parse(&[0x16, 0x90]),
            Err(Malformed::AacConfig("reserved samplingFrequencyIndex").into())
        );
        // AOT 42 (USAC) cannot be carried in ADTS.
        assert_eq!(
            AacConfig::parse(&[0xf9, 0x48, 0x40]),
            Err(Unsupported::AacObjectType(42).into())
        );
    }

    #[test]
    fn oversized_frame_is_refused() {
        let cfg = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert!(cfg.adts_header(ADTS_MAX_FRAME_LEN - ADTS_HEADER_LEN).is_ok());
        assert_eq!(
            cfg.adts_header(ADTS_MAX_FRAME_LEN - ADTS_HEADER_LEN + 1),
            Err(Malformed::AacFrameTooLarge(ADTS_MAX_FRAME_LEN - ADTS_HEADER_LEN + 1))
        );
    }
}
