//! The video track's decoder configuration, whatever the codec: what the remuxer keeps of a
//! sequence header, and what fMP4's sample entry and the RFC 6381 codec string are made
//! from.

use crate::av1::Av1Config;
use crate::avc::AvcConfig;
use crate::error::Malformed;
use crate::flv::VideoCodec;
use crate::fmp4::{Colour, SampleEntry};
use crate::hevc::HevcConfig;
use crate::vp9::Vp9Config;

/// A video stream's decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoConfig {
    /// H.264.
    Avc(AvcConfig),
    /// H.265.
    Hevc(HevcConfig),
    /// AV1.
    Av1(Av1Config),
    /// VP9.
    Vp9(Vp9Config),
}

impl VideoConfig {
    /// Parses the decoder configuration record `codec`'s sequence header carries.
    pub fn parse(codec: VideoCodec, record: &[u8]) -> Result<Self, Malformed> {
        Ok(match codec {
            VideoCodec::Avc => Self::Avc(AvcConfig::parse(record)?),
            VideoCodec::Hevc => Self::Hevc(HevcConfig::parse(record)?),
            VideoCodec::Av1 => Self::Av1(Av1Config::parse(record)?),
            VideoCodec::Vp9 => Self::Vp9(Vp9Config::parse(record)?),
        })
    }

    /// The codec.
    pub fn codec(&self) -> VideoCodec {
        match self {
            Self::Avc(_) => VideoCodec::Avc,
            Self::Hevc(_) => VideoCodec::Hevc,
            Self::Av1(_) => VideoCodec::Av1,
            Self::Vp9(_) => VideoCodec::Vp9,
        }
    }

    /// The RFC 6381 codec string (`avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.04M.08`,
    /// `vp09.00.20.08`).
    pub fn codec_string(&self) -> String {
        match self {
            Self::Avc(config) => config.codec_string(),
            Self::Hevc(config) => config.codec_string(),
            Self::Av1(config) => config.codec_string(),
            Self::Vp9(config) => config.codec_string(),
        }
    }

    /// Picture width and height, when known.
    pub fn picture_size(&self) -> Option<(u16, u16)> {
        match self {
            Self::Avc(config) => config.picture_size(),
            Self::Hevc(config) => config.picture_size(),
            Self::Av1(config) => config.picture_size(),
            Self::Vp9(config) => config.picture_size(),
        }
    }

    /// The fMP4 sample entry of the track, with `colour` when the publisher described it.
    pub fn sample_entry(&self, colour: Option<Colour>) -> SampleEntry {
        let (width, height) = self.picture_size().unwrap_or((0, 0));
        match self {
            Self::Avc(config) => {
                SampleEntry::Avc { record: config.record().to_vec(), width, height, colour }
            }
            Self::Hevc(config) => {
                SampleEntry::Hevc { record: config.record().to_vec(), width, height, colour }
            }
            Self::Av1(config) => {
                SampleEntry::Av1 { record: config.record().to_vec(), width, height, colour }
            }
            Self::Vp9(config) => {
                SampleEntry::Vp9 { record: config.record().to_vec(), width, height, colour }
            }
        }
    }
}
