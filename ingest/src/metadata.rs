//! What an encoder says of its stream in `@setDataFrame onMetaData` (FLV v10.1 §E.5): the
//! picture size and frame rate, which the stream's first frames do not tell without decoding
//! the SPS. Values outside what a real encoder sends are ignored.

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
}
