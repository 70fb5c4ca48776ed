//! VP9: the codec configuration record Enhanced RTMP sends (FourCC `vp09`) and the picture
//! size from a keyframe's uncompressed header.
//!
//! Implements VP-ISOBMFF v1.0 §2.2 (VPCodecConfigurationRecord, sent with the `vpcC` full
//! box's version and flags in front, as ffmpeg writes it) and of the VP9 bitstream
//! specification §6.2 (uncompressed header up to frame_size). VP9 samples, superframes
//! included, go into fMP4 as they come.

use crate::bits::BitReader;
use crate::error::Malformed;

/// Bytes of the record: version and flags (4), then profile, level, bit depth and chroma,
/// colour (3), and the (empty) codec initialisation data's length (2).
const RECORD_LEN: usize = 12;
/// VP9's keyframe sync code (§7.2).
const SYNC_CODE: u64 = 0x49_83_42;

/// The parameters a VP9 stream is decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp9Config {
    /// The record after the full box's version and flags.
    record: Vec<u8>,
    picture_size: Option<(u16, u16)>,
}

impl Vp9Config {
    /// Parses a VPCodecConfigurationRecord with its version 1 full box header.
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        if data.len() < RECORD_LEN {
            return Err(Malformed::VideoConfig("VP9 configuration record too short"));
        }
        if data[0] != 1 {
            return Err(Malformed::VideoConfig("VP9 configuration record version is not 1"));
        }
        Ok(Self { record: data[4..].to_vec(), picture_size: None })
    }

    /// The record's payload (after version and flags), for fMP4's `vpcC`.
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// The picture size, once a keyframe gave it ([`Vp9Config::learn_size`]).
    pub fn picture_size(&self) -> Option<(u16, u16)> {
        self.picture_size
    }

    /// Takes the picture size from `frame` if it is a keyframe and the size is not known
    /// yet; whether it is known now.
    pub fn learn_size(&mut self, frame: &[u8]) -> bool {
        if self.picture_size.is_none() {
            self.picture_size = keyframe_size(frame);
        }
        self.picture_size.is_some()
    }

    /// The RFC 6381 codec string (VP-ISOBMFF §4), e.g. `vp09.00.20.08`.
    pub fn codec_string(&self) -> String {
        let (profile, level, depth) = (self.record[0], self.record[1], self.record[2] >> 4);
        format!("vp09.{profile:02}.{level:02}.{depth:02}")
    }
}

/// The frame size in a VP9 keyframe's uncompressed header (§6.2), or `None` for other
/// frames and bytes that do not parse.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let mut bits = BitReader::new(frame);
    if bits.bits(2)? != 2 {
        return None; // frame_marker
    }
    let low = bits.bits(1)?;
    let profile = bits.bits(1)? << 1 | low;
    if profile == 3 {
        bits.bits(1)?;
    }
    if bits.bits(1)? == 1 || bits.bits(1)? != 0 {
        return None; // show_existing_frame, or not a KEY_FRAME
    }
    bits.bits(2)?; // show_frame, error_resilient_mode
    if bits.bits(24)? != SYNC_CODE {
        return None;
    }
    // color_config()
    if profile >= 2 {
        bits.bits(1)?;
    }
    let rgb = bits.bits(3)? == 7;
    if !rgb {
        bits.bits(1)?; // color_range
    }
    if profile == 1 || profile == 3 {
        bits.skip(if rgb { 1 } else { 3 })?;
    }
    let width = bits.bits(16)? + 1;
    let height = bits.bits(16)? + 1;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record ffmpeg 7.0 sent over Enhanced RTMP for libvpx-vp9, profile 0, level 2,
    /// 8 bits 4:2:0.
    const LIBVPX_RECORD: &[u8] = &[0x01, 0, 0, 0, 0x00, 0x14, 0x82, 0x02, 0x02, 0x02, 0x00, 0x00];
    /// The start of libvpx's first keyframe at 320x240.
    const LIBVPX_KEYFRAME: &[u8] = &[0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x08];

    #[test]
    fn parses_libvpx_output() {
        let mut config = Vp9Config::parse(LIBVPX_RECORD).unwrap();
        assert_eq!(config.codec_string(), "vp09.00.20.08");
        assert_eq!(config.record(), &LIBVPX_RECORD[4..]);
        assert_eq!(config.picture_size(), None);
        // An inter frame (frame_type 1) teaches nothing.
        assert!(!config.learn_size(&[0x86, 0x00, 0x40]));
        assert!(config.learn_size(LIBVPX_KEYFRAME));
        assert_eq!(config.picture_size(), Some((320, 240)));
        for len in 0..LIBVPX_KEYFRAME.len() - 1 {
            assert_eq!(keyframe_size(&LIBVPX_KEYFRAME[..len]), None, "{len}");
        }
        assert!(Vp9Config::parse(&LIBVPX_RECORD[..11]).is_err());
    }
}
