//! What a receiver starting, or resuming after a gap, needs before the first keyframe: the
//! stream's latest metadata and decoder configurations (a push target after a reconnect, a
//! recording's new file). They are sent in the order kept here: metadata, then audio's
//! configuration, then video's.

use bytes::Bytes;
use rtmp::MediaKind;

/// The latest `onMetaData` and decoder configurations of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seed {
    /// `onMetaData`'s AMF0 values.
    pub(crate) metadata: Option<Bytes>,
    /// The audio configuration (AAC AudioSpecificConfig), as its FLV tag body.
    pub(crate) audio: Option<Bytes>,
    /// The video configuration (AVC/HEVC/AV1/VP9 sequence header), as its FLV tag body.
    pub(crate) video: Option<Bytes>,
}

impl Seed {
    /// Keeps `payload` as `kind`'s configuration; whether it differs from the one kept.
    pub(crate) fn keep_config(&mut self, kind: MediaKind, payload: &Bytes) -> bool {
        let kept = match kind {
            MediaKind::Audio => &mut self.audio,
            MediaKind::Video => &mut self.video,
        };
        let changed = kept.as_ref() != Some(payload);
        *kept = Some(payload.clone());
        changed
    }

    /// The configurations kept, in the order they are sent (audio, then video).
    pub(crate) fn configs(&self) -> impl Iterator<Item = (MediaKind, &Bytes)> {
        [(MediaKind::Audio, &self.audio), (MediaKind::Video, &self.video)]
            .into_iter()
            .filter_map(|(kind, payload)| Some((kind, payload.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_configuration_of_each_and_sends_audio_first() {
        let mut seed = Seed::default();
        assert!(seed.keep_config(MediaKind::Video, &Bytes::from_static(b"v1")));
        assert!(!seed.keep_config(MediaKind::Video, &Bytes::from_static(b"v1")), "the same");
        assert!(seed.keep_config(MediaKind::Audio, &Bytes::from_static(b"a1")));
        assert!(seed.keep_config(MediaKind::Video, &Bytes::from_static(b"v2")));
        let sent: Vec<_> = seed.configs().map(|(kind, payload)| (kind, payload.clone())).collect();
        assert_eq!(
            sent,
            [
                (MediaKind::Audio, Bytes::from_static(b"a1")),
                (MediaKind::Video, Bytes::from_static(b"v2"))
            ]
        );
    }
}
