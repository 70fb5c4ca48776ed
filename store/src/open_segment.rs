//! The fMP4 segment being written: its complete parts, and the fragments of the part being
//! written, as low-latency HLS serves them (draft-pantos-hls-rfc8216bis §4.4.4.9 EXT-X-PART,
//! §4.4.5.3 EXT-X-PRELOAD-HINT).
//!
//! A part's fragments are kept as they came until the part ends, so a request for the part
//! being written (the preload hint) is sent each fragment as it arrives; then they are joined
//! into one buffer. When the segment ends its parts are joined into the segment's buffer and
//! the parts become views into it: a closed segment's parts cost no memory of their own.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

/// A complete part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldPart {
    pub(crate) bytes: Bytes,
    pub(crate) duration: Duration,
    pub(crate) independent: bool,
}

/// What a read of one part of the open segment finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRead {
    /// The part is complete: its bytes from the offset asked for.
    Complete(Bytes),
    /// The part is being written: the fragments from the offset asked for (possibly none
    /// yet). More will come.
    Growing(Vec<Bytes>),
    /// The part has not started yet, but will soon (the next part or the one after).
    NotYet,
}

/// The segment being written.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub(crate) sequence: u64,
    /// Its init segment's number.
    pub(crate) init: Option<u32>,
    pub(crate) discontinuity: bool,
    pub(crate) program_date_time: Option<SystemTime>,
    pub(crate) parts: Vec<HeldPart>,
    /// Fragments of the part being written.
    current: Vec<Bytes>,
    current_len: usize,
}

impl OpenSegment {
    pub(crate) fn new(
        sequence: u64,
        init: Option<u32>,
        discontinuity: bool,
        program_date_time: Option<SystemTime>,
    ) -> Self {
        Self {
            sequence,
            init,
            discontinuity,
            program_date_time,
            parts: Vec::new(),
            current: Vec::new(),
            current_len: 0,
        }
    }

    /// Bytes held (complete parts and the part being written).
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum::<usize>() + self.current_len
    }

    pub(crate) fn add_fragment(&mut self, fragment: Bytes) {
        self.current_len += fragment.len();
        self.current.push(fragment);
    }

    /// Ends the part being written (a part without fragments is not a part: ignored).
    pub(crate) fn end_part(&mut self, duration: Duration, independent: bool) {
        if self.current.is_empty() {
            return;
        }
        let bytes = join(std::mem::take(&mut self.current), self.current_len);
        self.current_len = 0;
        self.parts.push(HeldPart { bytes, duration, independent });
    }

    /// The segment's bytes, and its parts as views into them. Fragments of a part that was
    /// never ended (segments without parts) belong to the segment only.
    pub(crate) fn close(self) -> (Bytes, Vec<HeldPart>) {
        let total = self.len();
        let mut pieces: Vec<Bytes> = self.parts.iter().map(|p| p.bytes.clone()).collect();
        pieces.extend(self.current);
        let body = join(pieces, total);
        let mut offset = 0;
        let parts = self
            .parts
            .into_iter()
            .map(|part| {
                let end = offset + part.bytes.len();
                let view = body.slice(offset..end);
                offset = end;
                HeldPart { bytes: view, ..part }
            })
            .collect();
        (body, parts)
    }

    /// Part `index` of this segment from byte `offset` on; `None` for a part that is gone
    /// or too far ahead, or an offset beyond what exists.
    pub(crate) fn read_part(&self, index: usize, offset: usize) -> Option<PartRead> {
        if let Some(part) = self.parts.get(index) {
            return (offset <= part.bytes.len())
                .then(|| PartRead::Complete(part.bytes.slice(offset..)));
        }
        match index - self.parts.len() {
            0 => {
                let mut start = 0;
                let mut rest = Vec::new();
                for fragment in &self.current {
                    let end = start + fragment.len();
                    if end > offset {
                        rest.push(fragment.slice(offset.saturating_sub(start)..));
                    }
                    start = end;
                }
                (offset <= start).then_some(PartRead::Growing(rest))
            }
            1 if offset == 0 => Some(PartRead::NotYet),
            _ => None,
        }
    }
}

/// `pieces` as one buffer of `len` bytes (no copy for one piece).
fn join(mut pieces: Vec<Bytes>, len: usize) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(len);
    for piece in pieces {
        joined.extend_from_slice(&piece);
    }
    joined.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OpenSegment {
        OpenSegment::new(4, Some(0), false, None)
    }

    #[test]
    fn a_part_grows_fragment_by_fragment_then_is_complete() {
        let mut segment = open();
        assert_eq!(segment.read_part(0, 0), Some(PartRead::Growing(vec![])));
        assert_eq!(segment.read_part(1, 0), Some(PartRead::NotYet));
        assert_eq!(segment.read_part(2, 0), None);
        segment.add_fragment(Bytes::from_static(b"abc"));
        segment.add_fragment(Bytes::from_static(b"de"));
        assert_eq!(
            segment.read_part(0, 0),
            Some(PartRead::Growing(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]))
        );
        // A reader that has the first fragment gets the rest.
        assert_eq!(
            segment.read_part(0, 3),
            Some(PartRead::Growing(vec![Bytes::from_static(b"de")]))
        );
        assert_eq!(segment.read_part(0, 6), None);
        segment.end_part(Duration::from_millis(300), true);
        assert_eq!(segment.read_part(0, 3), Some(PartRead::Complete(Bytes::from_static(b"de"))));
        assert_eq!(segment.read_part(1, 0), Some(PartRead::Growing(vec![])));
    }

    #[test]
    fn closing_joins_the_parts_and_keeps_them_as_views() {
        let mut segment = open();
        segment.add_fragment(Bytes::from_static(b"ab"));
        segment.end_part(Duration::from_millis(300), true);
        segment.end_part(Duration::from_millis(300), true);
        segment.add_fragment(Bytes::from_static(b"cd"));
        segment.add_fragment(Bytes::from_static(b"e"));
        segment.end_part(Duration::from_millis(200), false);
        segment.add_fragment(Bytes::from_static(b"f"));
        assert_eq!(segment.len(), 6);
        let (body, parts) = segment.close();
        assert_eq!(body, Bytes::from_static(b"abcdef"));
        let texts: Vec<&[u8]> = parts.iter().map(|p| &p.bytes[..]).collect();
        assert_eq!(texts, [&b"ab"[..], b"cde"], "an empty part is no part");
        assert_eq!(parts[1].bytes.as_ptr(), body[2..].as_ptr(), "a view, not a copy");
    }
}
