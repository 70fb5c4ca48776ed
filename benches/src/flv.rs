//! The clip a publisher replays: an FLV file (FLV v10.1 annex E) read once by the workspace's
//! FLV reader ([`testkit::flv`]) into tags whose bodies share the file's one buffer, so N
//! publishers replay it with no copy and no parsing.
//! It never rewrites tag bodies: only timestamps change, per loop, at send time.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use rtmp::MediaKind;

/// FLV tag types (annex E.4.1).
const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;
const TAG_SCRIPT: u8 = 18;

/// One audio or video tag of the clip.
#[derive(Debug, Clone)]
pub(crate) struct ClipTag {
    /// Audio or video.
    pub(crate) kind: MediaKind,
    /// Milliseconds from the clip's first media tag.
    pub(crate) timestamp: u32,
    /// The tag body, a slice of the file.
    pub(crate) body: Bytes,
    /// A video keyframe: where HLS servers cut segments.
    pub(crate) keyframe: bool,
    /// A sequence header (AVCDecoderConfigurationRecord, AudioSpecificConfig): sent once per
    /// connection, not on every loop, as an encoder does.
    pub(crate) config: bool,
}

/// A parsed clip.
#[derive(Debug)]
pub(crate) struct Clip {
    /// Audio and video tags in file order (the muxer's interleave).
    pub(crate) tags: Vec<ClipTag>,
    /// The `onMetaData` script tag body, sent once after publish as ffmpeg does.
    pub(crate) metadata: Option<Bytes>,
    /// Timestamp offset added per loop: the clip's length, so timestamps stay monotonic and
    /// frame spacing holds across the seam.
    pub(crate) loop_ms: u32,
    /// Bytes of media per loop, for the report.
    pub(crate) media_bytes: u64,
}

impl Clip {
    /// Reads and parses the FLV file at `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(Bytes::from(data)).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a whole FLV file held in `data`.
    pub(crate) fn parse(data: Bytes) -> anyhow::Result<Self> {
        let mut tags = Vec::new();
        let mut metadata = None;
        let mut first_ts: Option<u32> = None;
        for tag in testkit::flv::parse(&data)? {
            let kind = match tag.tag_type {
                TAG_AUDIO => MediaKind::Audio,
                TAG_VIDEO => MediaKind::Video,
                TAG_SCRIPT if metadata.is_none() => {
                    metadata = Some(tag.data);
                    continue;
                }
                _ => continue,
            };
            if tag.data.is_empty() {
                continue;
            }
            let first = *first_ts.get_or_insert(tag.timestamp);
            let (keyframe, config) = classify(kind, &tag.data);
            tags.push(ClipTag {
                kind,
                timestamp: tag.timestamp.wrapping_sub(first),
                body: tag.data,
                keyframe,
                config,
            });
        }
        if !tags.iter().any(|t| t.keyframe) {
            bail!("the clip has no H.264 keyframe: HLS servers cut segments on keyframes");
        }
        let loop_ms = loop_length(&tags);
        let media_bytes = tags.iter().map(|t| t.body.len() as u64).sum();
        Ok(Self { tags, metadata, loop_ms, media_bytes })
    }
}

/// Whether an FLV audio/video body is a keyframe and whether it is a sequence header
/// (annex E.4.2.1 AudioTagHeader, E.4.3.1 VideoTagHeader).
fn classify(kind: MediaKind, body: &[u8]) -> (bool, bool) {
    const SOUND_FORMAT_AAC: u8 = 10;
    const CODEC_AVC: u8 = 7;
    const FRAME_KEY: u8 = 1;
    if kind == MediaKind::Audio {
        let config = body[0] >> 4 == SOUND_FORMAT_AAC && body.get(1) == Some(&0);
        return (false, config);
    }
    let avc = body[0] & 0x0f == CODEC_AVC;
    let config = avc && body.get(1) == Some(&0);
    (avc && body[0] >> 4 == FRAME_KEY && !config, config)
}

/// The clip's length: the latest end of a frame (its timestamp plus its track's last frame
/// interval), so the next loop starts where this one ends.
fn loop_length(tags: &[ClipTag]) -> u32 {
    let mut end = 0;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let mut track = tags.iter().filter(|t| t.kind == kind && !t.config).map(|t| t.timestamp);
        let Some(mut last) = track.next() else { continue };
        let mut interval = 0;
        for ts in track {
            interval = ts.saturating_sub(last);
            last = ts;
        }
        end = end.max(last + interval.max(1));
    }
    end.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&ts.to_be_bytes()[1..]);
        out.push((ts >> 24) as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(body);
        out.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
        out
    }

    #[test]
    fn tags_are_classified_and_the_loop_length_covers_the_last_frame() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend(tag(TAG_SCRIPT, 0, b"meta"));
        file.extend(tag(TAG_VIDEO, 1000, &[0x17, 0, 0, 0, 0, 1])); // AVC sequence header
        file.extend(tag(TAG_AUDIO, 1000, &[0xaf, 0, 0x12, 0x10])); // AAC sequence header
        file.extend(tag(TAG_VIDEO, 1000, &[0x17, 1, 0, 0, 0, 9])); // keyframe
        file.extend(tag(TAG_AUDIO, 1000, &[0xaf, 1, 7]));
        file.extend(tag(TAG_VIDEO, 1040, &[0x27, 1, 0, 0, 0, 9]));
        file.extend(tag(TAG_AUDIO, 1021, &[0xaf, 1, 7]));
        file.extend(&tag(TAG_AUDIO, 1042, &[0xaf, 1, 7])[..12]); // truncated
        let clip = Clip::parse(Bytes::from(file)).unwrap();
        assert_eq!(clip.metadata.as_deref(), Some(&b"meta"[..]));
        let shape: Vec<_> =
            clip.tags.iter().map(|t| (t.kind, t.timestamp, t.keyframe, t.config)).collect();
        assert_eq!(
            shape,
            [
                (MediaKind::Video, 0, false, true),
                (MediaKind::Audio, 0, false, true),
                (MediaKind::Video, 0, true, false),
                (MediaKind::Audio, 0, false, false),
                (MediaKind::Video, 40, false, false),
                (MediaKind::Audio, 21, false, false),
            ]
        );
        // Video ends at 40 + 40, audio at 21 + 21.
        assert_eq!(clip.loop_ms, 80);
    }

    #[test]
    fn a_clip_without_keyframes_is_refused() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend(tag(TAG_AUDIO, 0, &[0xaf, 1, 7]));
        assert!(Clip::parse(Bytes::from(file)).is_err());
    }
}
