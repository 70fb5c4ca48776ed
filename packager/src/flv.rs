//! FLV audio and video tag bodies, as RTMP carries them in messages 8 and 9.
//!
//! Implements the tag-body headers of the FLV specification v10.1, annex E.4.2.1
//! (AUDIODATA, AACAUDIODATA) and E.4.3.1 (VIDEODATA, AVCVIDEOPACKET), and the extended video
//! tag header of Enhanced RTMP (veovera E-RTMP v1, "ExVideoTagHeader": FourCC `avc1`,
//! `hvc1`, `av01`, `vp09`; packet types SequenceStart, CodedFrames, CodedFramesX,
//! SequenceEnd, Metadata). Headers are parsed; payloads are borrowed, never copied.

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
/// FLV `FrameType` of a keyframe, of a generated keyframe, and of a command frame.
const FRAME_KEY: u8 = 1;
const FRAME_GENERATED_KEY: u8 = 4;
const FRAME_COMMAND: u8 = 5;
/// Enhanced RTMP `VideoPacketType`s.
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const PACKET_SEQUENCE_END: u8 = 2;
const PACKET_CODED_FRAMES_X: u8 = 3;
const PACKET_METADATA: u8 = 4;

/// A video codec RTMP carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264/AVC: legacy CodecID 7, or FourCC `avc1`.
    Avc,
    /// H.265/HEVC: FourCC `hvc1`.
    Hevc,
    /// AV1: FourCC `av01`.
    Av1,
    /// VP9: FourCC `vp09`.
    Vp9,
}

impl VideoCodec {
    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avc => "H.264",
            Self::Hevc => "HEVC",
            Self::Av1 => "AV1",
            Self::Vp9 => "VP9",
        }
    }

    fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        match &fourcc {
            b"avc1" => Some(Self::Avc),
            b"hvc1" => Some(Self::Hevc),
            b"av01" => Some(Self::Av1),
            b"vp09" => Some(Self::Vp9),
            _ => None,
        }
    }

    /// Whether its coded frames carry a composition time (B-frames).
    fn has_composition_time(self) -> bool {
        matches!(self, Self::Avc | Self::Hevc)
    }
}

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
    /// AVCPacketType 0 or SequenceStart: the codec's decoder configuration record
    /// (AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord,
    /// AV1CodecConfigurationRecord, VPCodecConfigurationRecord). Possibly empty (ffmpeg
    /// sends an empty one for AV1 before the real one).
    SequenceHeader {
        /// The codec.
        codec: VideoCodec,
        /// The record.
        record: &'a [u8],
    },
    /// AVCPacketType 1, CodedFrames or CodedFramesX: one access unit (length-prefixed NAL
    /// units for H.264 and HEVC, OBUs for AV1, a frame or superframe for VP9).
    Frame {
        /// The codec.
        codec: VideoCodec,
        /// FrameType 1 (or 4, a generated keyframe).
        keyframe: bool,
        /// CompositionTime: PTS minus DTS, in milliseconds.
        composition_time_ms: i32,
        /// The access unit.
        data: &'a [u8],
    },
    /// AVCPacketType 2, SequenceEnd, Metadata, or a FrameType 5 command frame: nothing to
    /// package.
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
        return parse_extended_video(data);
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    if codec != CODEC_AVC {
        return Err(Unsupported::VideoCodec(codec).into());
    }
    let [_, packet_type, c0, c1, c2, rest @ ..] = data else {
        return Err(Malformed::TruncatedTag { kind: "video", len: data.len() }.into());
    };
    let codec = VideoCodec::Avc;
    match packet_type {
        0 => Ok(VideoTag::SequenceHeader { codec, record: rest }),
        1 => Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY,
            composition_time_ms: si24([*c0, *c1, *c2]),
            data: rest,
        }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// The AMF0 body of an Enhanced RTMP video Metadata packet (`colorInfo`, veovera's E-RTMP
/// spec), or `None` for any other video tag. The remuxer ignores these tags; whoever reads
/// AMF0 may read the body and tell the remuxer ([`crate::Remuxer::set_colour`]).
pub fn video_metadata(data: &[u8]) -> Option<&[u8]> {
    let [first, _, _, _, _, body @ ..] = data else { return None };
    (first & EX_HEADER_BIT != 0 && first & 0x0f == PACKET_METADATA).then_some(body)
}

/// An Enhanced RTMP video tag: `IsExHeader`, FrameType, PacketType, FourCC, then the body.
fn parse_extended_video(data: &[u8]) -> Result<VideoTag<'_>, Error> {
    let [first, f0, f1, f2, f3, body @ ..] = data else {
        return Err(Malformed::TruncatedTag { kind: "video", len: data.len() }.into());
    };
    let frame_type = first >> 4 & 0x07;
    let packet_type = first & 0x0f;
    let fourcc = [*f0, *f1, *f2, *f3];
    // Metadata (colour information as AMF) may carry FrameType 5 without being a command.
    if packet_type == PACKET_METADATA || frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    let codec = VideoCodec::from_fourcc(fourcc).ok_or(Unsupported::VideoFourCc(fourcc))?;
    let keyframe = frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY;
    match packet_type {
        PACKET_SEQUENCE_START => Ok(VideoTag::SequenceHeader { codec, record: body }),
        PACKET_CODED_FRAMES if codec.has_composition_time() => {
            let [c0, c1, c2, rest @ ..] = body else {
                return Err(Malformed::TruncatedTag { kind: "video", len: data.len() }.into());
            };
            let composition_time_ms = si24([*c0, *c1, *c2]);
            Ok(VideoTag::Frame { codec, keyframe, composition_time_ms, data: rest })
        }
        PACKET_CODED_FRAMES | PACKET_CODED_FRAMES_X => {
            Ok(VideoTag::Frame { codec, keyframe, composition_time_ms: 0, data: body })
        }
        PACKET_SEQUENCE_END => Ok(VideoTag::Ignored),
        // MPEG2TSSequenceStart, Multitrack, ModEx and reserved types.
        other => Err(Unsupported::VideoPacketType(other).into()),
    }
}

/// SI24, big endian: sign-extended by shifting through the top byte.
fn si24(bytes: [u8; 3]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], 0]) >> 8
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
            Ok(VideoTag::Frame {
                codec: VideoCodec::Avc,
                keyframe: true,
                composition_time_ms: -33,
                data: &tag[5..]
            })
        );
    }

    #[test]
    fn avc_inter_frame_and_sequence_header() {
        let tag = [0x27, 1, 0, 0, 0x42, 0xaa];
        let codec = VideoCodec::Avc;
        assert_eq!(
            parse_video(&tag),
            Ok(VideoTag::Frame { codec, keyframe: false, composition_time_ms: 66, data: &[0xaa] })
        );
        assert_eq!(
            parse_video(&[0x17, 0, 0, 0, 0, 1, 2]),
            Ok(VideoTag::SequenceHeader { codec, record: &[1, 2] })
        );
        assert_eq!(parse_video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Ignored));
        assert_eq!(parse_video(&[0x57, 0]), Ok(VideoTag::Ignored));
    }

    #[test]
    fn other_video_codecs_are_unsupported() {
        assert_eq!(parse_video(&[0x12, 0, 0]), Err(Unsupported::VideoCodec(2).into()));
        assert_eq!(parse_video(&[0x1c, 0, 0]), Err(Unsupported::VideoCodec(12).into()));
        assert_eq!(
            parse_video(&[0x90, b'v', b'p', b'0', b'8']),
            Err(Unsupported::VideoFourCc(*b"vp08").into())
        );
    }

    /// Tag headers as ffmpeg 7.0 sends them over Enhanced RTMP (libx265, libaom, libvpx).
    #[test]
    fn enhanced_rtmp_video_tags() {
        let hevc = VideoCodec::Hevc;
        assert_eq!(
            parse_video(b"\x90hvc1\x01\x01"),
            Ok(VideoTag::SequenceHeader { codec: hevc, record: &[1, 1] })
        );
        // CodedFrames: SI24 composition time, then NAL units.
        assert_eq!(
            parse_video(b"\x91hvc1\x00\x00\x50\x00\x01"),
            Ok(VideoTag::Frame {
                codec: hevc,
                keyframe: true,
                composition_time_ms: 80,
                data: &[0, 1]
            })
        );
        // CodedFramesX: no composition time.
        assert_eq!(
            parse_video(b"\xa3hvc1\x00\x01"),
            Ok(VideoTag::Frame {
                codec: hevc,
                keyframe: false,
                composition_time_ms: 0,
                data: &[0, 1]
            })
        );
        // AV1 and VP9 frames have no composition time even in CodedFrames.
        assert_eq!(
            parse_video(b"\x91av01\x12\x00"),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Av1,
                keyframe: true,
                composition_time_ms: 0,
                data: &[0x12, 0]
            })
        );
        assert_eq!(
            parse_video(b"\x90av01"),
            Ok(VideoTag::SequenceHeader { codec: VideoCodec::Av1, record: &[] })
        );
        assert_eq!(
            parse_video(b"\xa1vp09\x86"),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Vp9,
                keyframe: false,
                composition_time_ms: 0,
                data: &[0x86]
            })
        );
        // Metadata (FrameType 5, as ffmpeg sends colorInfo) and SequenceEnd: nothing to do.
        assert_eq!(parse_video(b"\xd4hvc1\x02\x00"), Ok(VideoTag::Ignored));
        // Its body is handed out for whoever reads AMF; other tags have none.
        assert_eq!(video_metadata(b"\xd4hvc1\x02\x00"), Some(&b"\x02\x00"[..]));
        assert_eq!(video_metadata(b"\xa1vp09\x86"), None);
        assert_eq!(video_metadata(b"\x17\x01\x00\x00\x00"), None, "legacy AVC");
        assert_eq!(video_metadata(b"\xd4hv"), None);
        assert_eq!(parse_video(b"\x92av01"), Ok(VideoTag::Ignored));
        assert_eq!(parse_video(b"\x96hvc1"), Err(Unsupported::VideoPacketType(6).into()));
        assert_eq!(
            parse_video(b"\x91hvc1\x00"),
            Err(Malformed::TruncatedTag { kind: "video", len: 6 }.into())
        );
        assert_eq!(
            parse_video(b"\x90hvc"),
            Err(Malformed::TruncatedTag { kind: "video", len: 4 }.into())
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
