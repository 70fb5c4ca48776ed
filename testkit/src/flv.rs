//! Reads the tags of an FLV file (FLV v10.1 annex E.2, E.3), as a publisher would send them.

use std::path::Path;

/// One FLV tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    /// Milliseconds.
    pub timestamp: u32,
    /// The tag body.
    pub data: Vec<u8>,
}

/// Every tag of the FLV file at `path`.
pub fn read_tags(path: &Path) -> Vec<Tag> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..3], b"FLV", "{} is not FLV", path.display());
    let header_len = u32::from_be_bytes(bytes[5..9].try_into().unwrap()) as usize;
    let mut pos = header_len + 4; // header, PreviousTagSize0
    let mut tags = Vec::new();
    while pos + 11 <= bytes.len() {
        let h = &bytes[pos..pos + 11];
        let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = pos + 11;
        tags.push(Tag { tag_type: h[0] & 0x1f, timestamp, data: bytes[body..body + len].to_vec() });
        pos = body + len + 4;
    }
    tags
}

/// The audio and video tags of the FLV file at `path` (what a publisher sends as media).
pub fn media_tags(path: &Path) -> Vec<Tag> {
    read_tags(path).into_iter().filter(|t| t.tag_type == 8 || t.tag_type == 9).collect()
}
