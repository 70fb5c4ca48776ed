//! Errors of the packager, typed by who is at fault: the publisher's bytes (`Malformed`),
//! or a legal stream we do not handle (`Unsupported`). Every variant is `Copy + PartialEq`
//! so tests can assert the exact error.

/// Why a tag could not be packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The publisher sent bytes that do not parse.
    #[error("malformed input: {0}")]
    Malformed(#[from] Malformed),
    /// The publisher sent a legal stream this server does not package.
    #[error("unsupported input: {0}")]
    Unsupported(#[from] Unsupported),
    /// A bug in the packager, never caused by input; the tag is dropped.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// Which error this is, without the values it carries: a publisher can vary those at
    /// will (a new FourCC or length in every tag), so whatever is logged or counted once
    /// per error is keyed on this.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(e) => match e {
                Malformed::TruncatedTag { .. } => "truncated tag",
                Malformed::AvcConfig(_) => "AVC configuration",
                Malformed::NaluOverrun { .. } => "NAL unit overrun",
                Malformed::VideoConfig(_) => "video configuration",
                Malformed::AacConfig(_) => "AAC configuration",
                Malformed::MpegAudio(_) => "MPEG audio frame",
                Malformed::AacFrameTooLarge(_) => "AAC frame too large",
            },
            Self::Unsupported(e) => match e {
                Unsupported::VideoCodec(_) => "video codec",
                Unsupported::VideoFourCc(_) => "video FourCC",
                Unsupported::VideoPacketType(_) => "video packet type",
                Unsupported::VideoCodecInTs(_) => "video codec in MPEG-TS",
                Unsupported::AudioFormat(_) => "audio format",
                Unsupported::AacObjectType(_) => "AAC object type",
                Unsupported::AacSampleRate(_) => "AAC sample rate",
                Unsupported::AacChannelsInTs(_) => "AAC channels in MPEG-TS",
            },
            Self::Internal(_) => "internal",
        }
    }
}

/// Bytes that break the format they claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// A tag body shorter than its fixed header.
    #[error("{kind} tag of {len} bytes is shorter than its header")]
    TruncatedTag {
        /// "audio" or "video".
        kind: &'static str,
        /// Length of the tag body.
        len: usize,
    },
    /// An AVCDecoderConfigurationRecord that ends early or has a bad version.
    #[error("AVC decoder configuration record: {0}")]
    AvcConfig(&'static str),
    /// A NAL unit length prefix that runs past the end of the tag.
    #[error("NAL unit of {declared} bytes at offset {offset} overruns the {available}-byte tag")]
    NaluOverrun {
        /// Offset of the length prefix inside the NAL data.
        offset: usize,
        /// Length the prefix declares.
        declared: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// An HEVC, AV1 or VP9 configuration record that ends early or has a bad version.
    #[error("video configuration record: {0}")]
    VideoConfig(&'static str),
    /// An AudioSpecificConfig that ends early or names a reserved value.
    #[error("AAC AudioSpecificConfig: {0}")]
    AacConfig(&'static str),
    /// An MP3 frame header that is not one.
    #[error("MPEG audio frame: {0}")]
    MpegAudio(&'static str),
    /// An AAC frame too large for the 13-bit ADTS frame length.
    #[error("AAC frame of {0} bytes does not fit an ADTS header")]
    AacFrameTooLarge(usize),
}

/// Legal input outside what the packager handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// A legacy FLV video codec id other than AVC (7).
    #[error("video codec id {0} (only H.264/AVC, id 7, is packaged)")]
    VideoCodec(u8),
    /// An Enhanced RTMP video tag (FourCC codec).
    #[error("Enhanced RTMP video FourCC {0:?}")]
    VideoFourCc([u8; 4]),
    /// An Enhanced RTMP video packet type other than those of one coded track
    /// (MPEG2TSSequenceStart, Multitrack, ModEx, reserved).
    #[error("Enhanced RTMP video packet type {0}")]
    VideoPacketType(u8),
    /// A video codec the chosen HLS variant cannot carry (HEVC, AV1, VP9 in MPEG-TS).
    #[error("{0} video is not carried in MPEG-TS segments (use --hls-variant fmp4 or low-latency)")]
    VideoCodecInTs(&'static str),
    /// An FLV audio format other than AAC (10) and MP3 (2, 14).
    #[error("audio format {0} (only AAC, format 10, and MP3, formats 2 and 14, are packaged)")]
    AudioFormat(u8),
    /// An AAC object type ADTS cannot signal.
    #[error("AAC audio object type {0}")]
    AacObjectType(u8),
    /// A sampling frequency with no ADTS index.
    #[error("AAC sampling frequency {0} Hz has no ADTS index")]
    AacSampleRate(u32),
    /// An AAC channel configuration ADTS headers cannot say: 0 (the channels are in a
    /// program config element of the AudioSpecificConfig, which frames do not carry) or above
    /// 7.
    #[error(
        "AAC channel configuration {0} (a program config element, or more than 7) has no ADTS \
         form, which MPEG-TS segments carry (use --hls-variant fmp4 or low-latency)"
    )]
    AacChannelsInTs(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_differing_only_in_their_values_are_one_kind() {
        let fourcc = |code: &[u8; 4]| Error::from(Unsupported::VideoFourCc(*code));
        assert_eq!(fourcc(b"abcd").kind(), fourcc(b"efgh").kind());
        let truncated = |len| Error::from(Malformed::TruncatedTag { kind: "video", len });
        assert_eq!(truncated(1).kind(), truncated(2).kind());
        assert_ne!(fourcc(b"abcd").kind(), truncated(1).kind());
    }
}
