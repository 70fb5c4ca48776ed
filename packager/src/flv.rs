//! FLV audio and video tag bodies, as RTMP carries them in messages 8 and 9.
//!
//! Implements the tag-body headers of the FLV specification v10.1, annex E.4.2.1
//! (AUDIODATA, AACAUDIODATA) and E.4.3.1 (VIDEODATA, AVCVIDEOPACKET), and recognises the
//! Enhanced RTMP extended video header only to refuse it. Headers are parsed; payloads are
//! borrowed, never copied.

use crate::Error;
use crate::error::{Malformed, Unsupported};

/// FLV `CodecID` of H.264/AVC.
const CODEC_AVC: u8 = 7;
/// FLV `SoundFormat` of AAC.
const SOUND_FORMAT_AAC: u8 = 10;
/// FLV `SoundFormat` of MP3, and of MP3 at 8 kHz.
const SOUND_FORMAT_MP3: u8 = 2;
const SOUND_FORMAT_MP3_8K: u8 = 14;
/// Enhanced RTMP sets this bit of the first video byte (`IsExHeader`).
const EX_HEADER_BIT: u8 = 0x80;

/// Whether a message carries audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// RTMP message type 8.
    Audio,
    /// RTMP message type 9.
    Video,
}

/// A parsed video tag body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVCPacketType 0: an AVCDecoderConfigurationRecord.
    SequenceHeader(&'a [u8]),
    /// AVCPacketType 1: one access unit as length-prefixed NAL units.
    Frame {
        /// FrameType 1 (or 4, a generated keyframe).
        keyframe: bool,
        /// CompositionTime: PTS minus DTS, in milliseconds.
        composition_time_ms: i32,
        /// Length-prefixed NAL units.
        nalus: &'a [u8],
    },
    /// AVCPacketType 2, or a FrameType 5 command frame: nothing to package.
    Ignored,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AACPacketType 0: an AudioSpecificConfig.
    AacSequenceHeader(&'a [u8]),
    /// AACPacketType 1: one raw AAC frame.
    AacFrame(&'a [u8]),
    /// MP3 frames, headers included.
    Mp3(&'a [u8]),
}

/// Parses a video tag body (the payload of an RTMP video message).
pub fn parse_video(data: &[u8]) -> Result<VideoTag<'_>, Error> {
    let Some(&first) = data.first() else {
        return Err(Malformed::TruncatedTag { kind: "video", len: 0 }.into());
    };
    if first & EX_HEADER_BIT != 0 {
        let mut fourcc = [0; 4];
        if let Some(bytes) = data.get(1..5) {
            fourcc.copy_from_slice(bytes);
        }
        return Err(Unsupported::VideoFourCc(fourcc).into());
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    if codec != CODEC_AVC {
        return Err(Unsupported::VideoCodec(codec).into());
    }
    let [_, packet_type, c0, c1, c2, rest @ ..] = data else {
        return Err(Malformed::TruncatedTag { kind: "video", len: data.len() }.into());
    };
    match packet_type {
        0 => Ok(VideoTag::SequenceHeader(rest)),
        1 => {
            // SI24, big endian: sign-extend by shifting through the top byte.
            let composition_time_ms = i32::from_be_bytes([*c0, *c1, *c2, 0]) >> 8;
            Ok(VideoTag::Frame {
                keyframe: frame_type == 1 || frame_type == 4,
                composition_time_ms,
                nalus: rest,
            })
        }
        _ => Ok(VideoTag::Ignored),
    }
}

/// Parses an audio tag body (the payload of an RTMP audio message).
pub fn parse_audio(data: &[u8]) -> Result<AudioTag<'_>, Error> {
    let Some(&first) = data.first() else {
        return Err(Malformed::TruncatedTag { kind: "audio", len: 0 }.into());
    };
    match first >> 4 {
        SOUND_FORMAT_AAC => match data {
            [_, 0, rest @ ..] => Ok(AudioTag::AacSequenceHeader(rest)),
            [_, _, rest @ ..] => Ok(AudioTag::AacFrame(rest)),
            _ => Err(Malformed::TruncatedTag { kind: "audio", len: data.len() }.into()),
        },
        SOUND_FORMAT_MP3 | SOUND_FORMAT_MP3_8K => Ok(AudioTag::Mp3(&data[1..])),
        format => Err(Unsupported::AudioFormat(format).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_keyframe_with_negative_composition_time() {
        // FrameType 1, CodecID 7, NALU, CTS -33 ms.
        let tag = [0x17, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 1, 0x65];
        assert_eq!(
            parse_video(&tag),
            Ok(VideoTag::Frame { keyframe: true, composition_time_ms: -33, nalus: &tag[5..] })
        );
    }

    #[test]
    fn avc_inter_frame_and_sequence_header() {
        let tag = [0x27, 1, 0, 0, 0x42, 0xaa];
        assert_eq!(
            parse_video(&tag),
            Ok(VideoTag::Frame { keyframe: false, composition_time_ms: 66, nalus: &[0xaa] })
        );
        assert_eq!(parse_video(&[0x17, 0, 0, 0, 0, 1, 2]), Ok(VideoTag::SequenceHeader(&[1, 2])));
        assert_eq!(parse_video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Ignored));
        assert_eq!(parse_video(&[0x57, 0]), Ok(VideoTag::Ignored));
    }

    #[test]
    fn other_video_codecs_are_unsupported() {
        assert_eq!(parse_video(&[0x12, 0, 0]), Err(Unsupported::VideoCodec(2).into()));
        assert_eq!(parse_video(&[0x1c, 0, 0]), Err(Unsupported::VideoCodec(12).into()));
        assert_eq!(
            parse_video(&[0x90, b'h', b'v', b'c', b'1']),
            Err(Unsupported::VideoFourCc(*b"hvc1").into())
        );
    }

    #[test]
    fn truncated_tags_are_malformed() {
        assert_eq!(parse_video(&[]), Err(Malformed::TruncatedTag { kind: "video", len: 0 }.into()));
        assert_eq!(
            parse_video(&[0x17, 1, 0]),
            Err(Malformed::TruncatedTag { kind: "video", len: 3 }.into())
        );
        assert_eq!(
            parse_audio(&[0xaf]),
            Err(Malformed::TruncatedTag { kind: "audio", len: 1 }.into())
        );
    }

    #[test]
    fn audio_tags() {
        assert_eq!(
            parse_audio(&[0xaf, 0, 0x12, 0x10]),
            Ok(AudioTag::AacSequenceHeader(&[0x12, 0x10]))
        );
        assert_eq!(parse_audio(&[0xaf, 1, 0x21]), Ok(AudioTag::AacFrame(&[0x21])));
        assert_eq!(parse_audio(&[0x2f, 0xff, 0xfb]), Ok(AudioTag::Mp3(&[0xff, 0xfb])));
        assert_eq!(parse_audio(&[0xe2, 0xff, 0xf3]), Ok(AudioTag::Mp3(&[0xff, 0xf3])));
        // Speex (11), Nellymoser (6), linear PCM (3), G.711 (7).
        for format in [11u8, 6, 3, 7] {
            assert_eq!(
                parse_audio(&[format << 4, 1]),
                Err(Unsupported::AudioFormat(format).into())
            );
        }
    }
}
