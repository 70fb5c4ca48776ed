//! What an encoder says of its stream in `@setDataFrame onMetaData` (FLV v10.1 §E.5): the
//! picture size and frame rate, which the stream's first frames do not tell without decoding
//! the SPS; and, in Enhanced RTMP's video Metadata packets, the colour description
//! (`colorInfo.colorConfig`). Values outside what a real encoder sends are ignored.

use rtmp::amf0::Value;

/// Picture size and frame rate as the encoder states them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EncoderMetadata {
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Frames per second.
    pub fps: Option<f64>,
}

/// Largest picture side accepted (the AVC and FLV limits are far above any encoder's).
const MAX_PIXELS: f64 = 65_536.0;
/// Largest frame rate accepted.
const MAX_FPS: f64 = 1_000.0;

impl EncoderMetadata {
    /// Reads `width`, `height` and `framerate` (or `videoframerate`) from the metadata's
    /// properties.
    pub fn from_properties(properties: &[(String, Value)]) -> Self {
        let number = |names: &[&str]| {
            properties
                .iter()
                .find(|(name, _)| names.contains(&name.as_str()))
                .and_then(|(_, value)| value.as_number())
        };
        let pixels = |name: &str| {
            number(&[name]).filter(|n| (1.0..MAX_PIXELS).contains(n)).map(|n| n as u32)
        };
        Self {
            width: pixels("width"),
            height: pixels("height"),
            fps: number(&["framerate", "videoframerate"]).filter(|f| (0.0..MAX_FPS).contains(f)),
        }
    }
}

/// The colour description of an Enhanced RTMP video Metadata body (AMF0: the string
/// `colorInfo`, then an object whose `colorConfig` holds `colorPrimaries`,
/// `transferCharacteristics` and `matrixCoefficients`, ISO/IEC 23091-2 code points). `None`
/// when the body is not that, or a code point is not a whole number below 256 (H.273 defines
/// none above).
pub fn colour(body: &[u8]) -> Option<packager::fmp4::Colour> {
    let values = rtmp::amf0::decode_all(body).ok()?;
    let at = values.iter().position(|v| v.as_str() == Some("colorInfo"))?;
    let config = values.get(at + 1)?.get("colorConfig")?;
    let code = |name: &str| {
        let n = config.get(name)?.as_number()?;
        ((0.0..256.0).contains(&n) && n.fract() == 0.0).then_some(n as u16)
    };
    Some(packager::fmp4::Colour {
        primaries: code("colorPrimaries")?,
        transfer: code("transferCharacteristics")?,
        matrix: code("matrixCoefficients")?,
        full_range: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn size_and_rate_are_read_and_nonsense_is_ignored() {
        let ffmpeg = props(&[
            ("width", Value::Number(1280.0)),
            ("height", Value::Number(720.0)),
            ("framerate", Value::Number(30.0)),
            ("encoder", Value::String("Lavf59.27.100".into())),
        ]);
        let read = EncoderMetadata::from_properties(&ffmpeg);
        assert_eq!(read, EncoderMetadata { width: Some(1280), height: Some(720), fps: Some(30.0) });
        let obs = props(&[("videoframerate", Value::Number(60.0))]);
        assert_eq!(EncoderMetadata::from_properties(&obs).fps, Some(60.0));
        let nonsense = props(&[
            ("width", Value::Number(0.0)),
            ("height", Value::Number(1e9)),
            ("framerate", Value::Number(-1.0)),
        ]);
        assert_eq!(EncoderMetadata::from_properties(&nonsense), EncoderMetadata::default());
        let wrong_type = props(&[("width", Value::String("1280".into()))]);
        assert_eq!(EncoderMetadata::from_properties(&wrong_type).width, None);
    }

    #[test]
    fn colour_comes_from_color_info_and_bad_values_are_ignored() {
        let body = |primaries: f64| {
            let config = Value::Object(vec![
                ("bitDepth".into(), Value::Number(10.0)),
                ("colorPrimaries".into(), Value::Number(primaries)),
                ("transferCharacteristics".into(), Value::Number(16.0)),
                ("matrixCoefficients".into(), Value::Number(9.0)),
            ]);
            let info = Value::Object(vec![("colorConfig".into(), config)]);
            let mut out = Vec::new();
            rtmp::amf0::encode(&Value::String("colorInfo".into()), &mut out);
            rtmp::amf0::encode(&info, &mut out);
            out
        };
        let expected =
            packager::fmp4::Colour { primaries: 9, transfer: 16, matrix: 9, full_range: false };
        assert_eq!(colour(&body(9.0)), Some(expected));
        for bad in [-1.0, 256.0, 9.5, f64::NAN] {
            assert_eq!(colour(&body(bad)), None, "{bad}");
        }
        assert_eq!(colour(b"\x02\x00\x03abc"), None);
        assert_eq!(colour(&[]), None);
    }
}
