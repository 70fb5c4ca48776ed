//! MPEG audio (MP3) frame headers, for MP3 carried in FLV (SoundFormat 2 and 14).
//!
//! Implements the frame header of ISO/IEC 11172-3 §2.4.1.3 and ISO/IEC 13818-3 §2.4.1.3
//! (lower sampling frequencies), plus the common MPEG-2.5 extension. Only what timing and
//! the PMT need is read; frames pass to MPEG-TS unchanged.

use crate::error::Malformed;

/// Sampling rates by version and index: MPEG-1, MPEG-2, MPEG-2.5.
const SAMPLE_RATES: [[u32; 3]; 3] =
    [[44100, 48000, 32000], [22050, 24000, 16000], [11025, 12000, 8000]];

/// What an MP3 stream's PMT entry and timing depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpegAudioConfig {
    /// MPEG-1 (stream type 0x03) rather than MPEG-2/2.5 (stream type 0x04).
    pub mpeg1: bool,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Samples per frame (1152 for MPEG-1 layer III, 576 for MPEG-2 layer III, 1152 for
    /// layer II, 384 for layer I).
    pub samples_per_frame: u32,
    /// Channel mode (0 stereo, 1 joint, 2 dual, 3 mono).
    pub channel_mode: u8,
}

impl MpegAudioConfig {
    /// Reads the header of the frame at the start of `frame`.
    pub fn parse(frame: &[u8]) -> Result<Self, Malformed> {
        let [b0, b1, b2, b3, ..] = *frame else {
            return Err(Malformed::MpegAudio("frame shorter than its header"));
        };
        if b0 != 0xff || b1 & 0xe0 != 0xe0 {
            return Err(Malformed::MpegAudio("no frame sync"));
        }
        let version = match (b1 >> 3) & 0x03 {
            0b11 => 0, // MPEG-1
            0b10 => 1, // MPEG-2
            0b00 => 2, // MPEG-2.5
            _ => return Err(Malformed::MpegAudio("reserved version")),
        };
        let layer = match (b1 >> 1) & 0x03 {
            0b11 => 1,
            0b10 => 2,
            0b01 => 3,
            _ => return Err(Malformed::MpegAudio("reserved layer")),
        };
        let rate_index = usize::from((b2 >> 2) & 0x03);
        let Some(&sample_rate) = SAMPLE_RATES[version].get(rate_index) else {
            return Err(Malformed::MpegAudio("reserved sampling frequency"));
        };
        let samples_per_frame = match (layer, version) {
            (1, _) => 384,
            (2, _) | (3, 0) => 1152,
            _ => 576,
        };
        Ok(Self { mpeg1: version == 0, sample_rate, samples_per_frame, channel_mode: b3 >> 6 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lame_frame_headers() {
        // MPEG-1 layer III, 128 kbit/s, 44.1 kHz, joint stereo: FF FB 90 64.
        let cfg = MpegAudioConfig::parse(&[0xff, 0xfb, 0x90, 0x64]).unwrap();
        assert_eq!(
            cfg,
            MpegAudioConfig {
                mpeg1: true,
                sample_rate: 44100,
                samples_per_frame: 1152,
                channel_mode: 1
            }
        );
        // MPEG-2 layer III, 64 kbit/s, 22.05 kHz, mono: FF F3 80 C4.
        let cfg = MpegAudioConfig::parse(&[0xff, 0xf3, 0x80, 0xc4]).unwrap();
        assert_eq!(
            cfg,
            MpegAudioConfig {
                mpeg1: false,
                sample_rate: 22050,
                samples_per_frame: 576,
                channel_mode: 3
            }
        );
    }

    #[test]
    fn bad_headers() {
        assert_eq!(
            MpegAudioConfig::parse(&[0xff, 0xfb]),
            Err(Malformed::MpegAudio("frame shorter than its header"))
        );
        assert_eq!(
            MpegAudioConfig::parse(&[0x00, 0xfb, 0x90, 0]),
            Err(Malformed::MpegAudio("no frame sync"))
        );
        assert_eq!(
            MpegAudioConfig::parse(&[0xff, 0xeb, 0x90, 0]),
            Err(Malformed::MpegAudio("reserved version"))
        );
        assert_eq!(
            MpegAudioConfig::parse(&[0xff, 0xf9, 0x90, 0]),
            Err(Malformed::MpegAudio("reserved layer"))
        );
        assert_eq!(
            MpegAudioConfig::parse(&[0xff, 0xfb, 0x9c, 0]),
            Err(Malformed::MpegAudio("reserved sampling frequency"))
        );
    }
}
