//! Reads the tags of an FLV file (FLV v10.1 annex E.2, E.3), as a publisher would send them:
//! the one FLV reader of the tests and of the load generator (`rtmp-hls-bench`), which keeps
//! the bodies as slices of the file's one buffer.

use std::path::Path;

use bytes::Bytes;

/// FLV file header length (annex E.2) plus PreviousTagSize0.
const MIN_FILE_LEN: usize = 9 + 4;
/// FLV tag header length (annex E.4.1).
const TAG_HEADER_LEN: usize = 11;

/// One FLV tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    /// Milliseconds.
    pub timestamp: u32,
    /// The tag body (a slice of the file).
    pub data: Bytes,
}

/// Why a file is not FLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFlv;

impl std::fmt::Display for NotFlv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not an FLV file")
    }
}

impl std::error::Error for NotFlv {}

/// Every whole tag of the FLV file held in `data`; a truncated last tag (a file cut while
/// recording) is left out.
pub fn parse(data: &Bytes) -> Result<Vec<Tag>, NotFlv> {
    if data.len() < MIN_FILE_LEN || &data[..3] != b"FLV" {
        return Err(NotFlv);
    }
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len.saturating_add(4);
    let mut tags = Vec::new();
    while pos.saturating_add(TAG_HEADER_LEN) <= data.len() {
        let h = &data[pos..pos + TAG_HEADER_LEN];
        let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = pos + TAG_HEADER_LEN;
        let Some(end) = start.checked_add(len).filter(|&end| end <= data.len()) else { break };
        tags.push(Tag { tag_type: h[0] & 0x1f, timestamp, data: data.slice(start..end) });
        pos = end + 4;
    }
    Ok(tags)
}

/// Every tag of the FLV file at `path`.
pub fn read_tags(path: &Path) -> Vec<Tag> {
    let bytes = Bytes::from(std::fs::read(path).unwrap());
    parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The audio and video tags of the FLV file at `path` (what a publisher sends as media).
pub fn media_tags(path: &Path) -> Vec<Tag> {
    read_tags(path).into_iter().filter(|t| t.tag_type == 8 || t.tag_type == 9).collect()
}
