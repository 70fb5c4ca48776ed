//! The multivariant (master) playlist: the renditions of one stream for a player to choose
//! between (RFC 8216 §4.3.4.2, EXT-X-STREAM-INF, and §4.3.5.1, EXT-X-INDEPENDENT-SEGMENTS),
//! and the rendition reports a low-latency media playlist carries for its siblings
//! (draft-pantos-hls-rfc8216bis §4.4.5.4, EXT-X-RENDITION-REPORT). Text only: the figures
//! are the caller's.

use std::fmt::Write as _;

/// One rendition as the multivariant playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Its media playlist's URI, relative to the multivariant playlist.
    pub uri: String,
    /// BANDWIDTH: the peak segment bit rate, bits per second (required).
    pub bandwidth: u64,
    /// AVERAGE-BANDWIDTH: the average segment bit rate.
    pub average_bandwidth: Option<u64>,
    /// CODECS: RFC 6381 codec strings of every track (`avc1.64001f`, `mp4a.40.2`).
    pub codecs: Vec<String>,
    /// RESOLUTION: width and height in pixels.
    pub resolution: Option<(u32, u32)>,
    /// FRAME-RATE: frames per second, written with three decimals.
    pub frame_rate: Option<f64>,
}

/// The multivariant playlist of `variants`, in the order given (players start with the
/// first they can play). Whether segments start with keyframes is each media playlist's to
/// say (a forced cut may not).
pub fn render(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n");
    for variant in variants {
        // Writing to a String cannot fail.
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", variant.bandwidth.max(1));
        if let Some(average) = variant.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={}", average.max(1));
        }
        if !variant.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", variant.codecs.join(","));
        }
        if let Some((width, height)) = variant.resolution {
            let _ = write!(out, ",RESOLUTION={width}x{height}");
        }
        if let Some(rate) = variant.frame_rate.filter(|r| r.is_finite() && *r > 0.0) {
            let _ = write!(out, ",FRAME-RATE={rate:.3}");
        }
        let _ = write!(out, "\n{}\n", variant.uri);
    }
    out
}

/// An EXT-X-RENDITION-REPORT line: rendition `uri`'s last segment (LAST-MSN) and, when it
/// has parts, its last part (LAST-PART).
pub fn rendition_report(uri: &str, last_msn: u64, last_part: Option<usize>) -> String {
    match last_part {
        Some(part) => {
            format!("#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={last_msn},LAST-PART={part}\n")
        }
        None => format!("#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={last_msn}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renditions_are_listed_with_their_attributes_in_order() {
        let text = render(&[
            Variant {
                uri: "../cam_720p/index.m3u8".into(),
                bandwidth: 2_800_000,
                average_bandwidth: Some(2_500_000),
                codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
                resolution: Some((1280, 720)),
                frame_rate: Some(29.97),
            },
            Variant {
                uri: "../cam_audio/index.m3u8".into(),
                bandwidth: 0,
                average_bandwidth: None,
                codecs: vec!["mp4a.40.2".into()],
                resolution: None,
                frame_rate: Some(f64::NAN),
            },
        ]);
        assert_eq!(
            text,
            "#EXTM3U\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2800000,AVERAGE-BANDWIDTH=2500000,\
             CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970\n\
             ../cam_720p/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"mp4a.40.2\"\n../cam_audio/index.m3u8\n"
        );
    }

    #[test]
    fn rendition_reports() {
        assert_eq!(
            rendition_report("../cam_480p/index.m3u8", 41, Some(3)),
            "#EXT-X-RENDITION-REPORT:URI=\"../cam_480p/index.m3u8\",LAST-MSN=41,LAST-PART=3\n"
        );
        assert!(!rendition_report("x", 2, None).contains("LAST-PART"));
    }
}
