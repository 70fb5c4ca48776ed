//! The fMP4 segment being written: its complete parts, and the fragments of the part being
//! written, as low-latency HLS serves them (draft-pantos-hls-rfc8216bis §4.4.4.9 EXT-X-PART,
//! §4.4.5.3 EXT-X-PRELOAD-HINT).
//!
//! A part's fragments are kept as the packager made them while it is written (a request for
//! it, the preload hint, waits until it ends: RFC 8216bis §6.2.6); when it ends they are
//! joined into one recycled buffer of the packagers' pool, and the fragments' buffers go back to it (a part of
//! one fragment keeps that fragment's buffer). A closed segment is its parts back to back
//! ([`Pieces`]), not copied again. (Keeping the fragments instead cost more: a part's response
//! then went out in seven pieces, and a frame-sized buffer per fragment held about 10 % more
//! memory. Joining into fresh heap memory cost a page fault per 4 KiB joined, and the
//! allocator's heap grew and shrank.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use packager::BufferPool;
use packager::playlist::Part;

use crate::segment_files::Pieces;

/// A part is joined into a recycled buffer with at most a sixteenth of its length to spare:
/// parts live as long as their segment, so room to spare is memory held that long (a
/// quarter, the segment buffers' tolerance, held 10 % more memory at 50 low-latency
/// streams), while the sizes of a stream's parts vary enough that one usually fits.
const PART_SLACK_DIVISOR: usize = 16;

/// The URI of part `index` of segment `sequence`: `<generation>-<sequence>.<index>.m4s`
/// ([`crate::StreamStore::part`] reads it back).
pub(crate) fn part_uri(generation: u64, sequence: u64, index: usize) -> String {
    format!("{generation}-{sequence}.{index}.m4s")
}

/// A complete part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldPart {
    pub(crate) pieces: Pieces,
    /// As its segment's playlist entries list it.
    pub(crate) listed: Part,
}

/// What a request for one part of a live stream finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRead {
    /// The part is complete: its bytes.
    Complete(Pieces),
    /// The part is being written, or is the next one: it will be complete soon.
    Pending,
}

/// The segment being written.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    /// Its stream's generation (the first number of its file names).
    generation: u64,
    pub(crate) sequence: u64,
    /// Its init segment's number.
    pub(crate) init: Option<u32>,
    pub(crate) discontinuity: bool,
    pub(crate) program_date_time: Option<SystemTime>,
    pub(crate) parts: Vec<HeldPart>,
    /// Fragments of the part being written.
    current: Vec<Bytes>,
    len: usize,
}

impl OpenSegment {
    pub(crate) fn new(
        generation: u64,
        sequence: u64,
        init: Option<u32>,
        discontinuity: bool,
        program_date_time: Option<SystemTime>,
    ) -> Self {
        Self {
            generation,
            sequence,
            init,
            discontinuity,
            program_date_time,
            parts: Vec::new(),
            current: Vec::new(),
            len: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn add_fragment(&mut self, fragment: Bytes) {
        self.len += fragment.len();
        self.current.push(fragment);
    }

    /// Ends the part being written, joining its fragments into a buffer from `pool` (a part
    /// without fragments is not a part: ignored).
    pub(crate) fn end_part(
        &mut self,
        duration: Duration,
        independent: bool,
        pool: &Arc<BufferPool>,
    ) {
        let joined = match self.current.as_slice() {
            [] => return,
            [one] => one.clone(),
            fragments => {
                let len = fragments.iter().map(Bytes::len).sum();
                let mut buffer = pool.take_fitting(len, len / PART_SLACK_DIVISOR);
                for fragment in fragments {
                    buffer.extend_from_slice(fragment);
                }
                pool.share(buffer)
            }
        };
        self.current.clear();
        let uri = part_uri(self.generation, self.sequence, self.parts.len());
        let listed = Part::new(&uri, duration, independent);
        self.parts.push(HeldPart { pieces: joined.into(), listed });
    }

    /// The segment's bytes and its parts. Fragments of a part that was never ended
    /// (segments without parts) belong to the segment only.
    pub(crate) fn close(self) -> (Pieces, Vec<HeldPart>) {
        let mut pieces: Vec<Bytes> =
            self.parts.iter().flat_map(|part| part.pieces.as_slice().iter().cloned()).collect();
        pieces.extend(self.current);
        (pieces.into(), self.parts)
    }

    /// Part `index` of this segment; `None` for a part that is gone or too far ahead.
    pub(crate) fn read_part(&self, index: usize) -> Option<PartRead> {
        if let Some(part) = self.parts.get(index) {
            return Some(PartRead::Complete(part.pieces.clone()));
        }
        (index - self.parts.len() <= 1).then_some(PartRead::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OpenSegment {
        OpenSegment::new(1, 4, Some(0), false, None)
    }

    fn bytes(text: &'static [u8]) -> Bytes {
        Bytes::from_static(text)
    }

    fn pool() -> Arc<BufferPool> {
        Arc::default()
    }

    #[test]
    fn a_part_is_joined_into_a_recycled_buffer_that_returns_with_it() {
        let pool = pool();
        pool.give(Vec::with_capacity(64));
        pool.give(Vec::with_capacity(5));
        let mut segment = open();
        segment.add_fragment(bytes(b"abc"));
        segment.add_fragment(bytes(b"de"));
        segment.end_part(Duration::from_millis(300), true, &pool);
        assert_eq!(pool.held(), (1, 64), "the fitting buffer holds the part");
        assert_eq!(segment.read_part(0), Some(PartRead::Complete(bytes(b"abcde").into())));
        drop(segment);
        assert_eq!(pool.held(), (2, 69), "back in the pool with the part");
    }

    #[test]
    fn a_part_is_pending_while_written_then_complete() {
        let mut segment = open();
        assert_eq!(segment.read_part(0), Some(PartRead::Pending));
        assert_eq!(segment.read_part(1), Some(PartRead::Pending), "the next one");
        assert_eq!(segment.read_part(2), None);
        segment.add_fragment(bytes(b"abc"));
        segment.add_fragment(bytes(b"de"));
        assert_eq!(segment.read_part(0), Some(PartRead::Pending));
        segment.end_part(Duration::from_millis(300), true, &pool());
        assert_eq!(segment.read_part(0), Some(PartRead::Complete(bytes(b"abcde").into())));
        assert_eq!(segment.read_part(1), Some(PartRead::Pending));
    }

    #[test]
    fn closing_hands_over_the_parts_uncopied() {
        let mut segment = open();
        segment.add_fragment(bytes(b"ab"));
        segment.end_part(Duration::from_millis(300), true, &pool());
        segment.end_part(Duration::from_millis(300), true, &pool());
        segment.add_fragment(bytes(b"cd"));
        segment.add_fragment(bytes(b"e"));
        segment.end_part(Duration::from_millis(200), false, &pool());
        segment.add_fragment(bytes(b"f"));
        assert_eq!(segment.len(), 6);
        let (body, parts) = segment.close();
        assert_eq!(body.to_bytes(), bytes(b"abcdef"));
        assert_eq!(body.as_slice().len(), 3, "two parts and a fragment, not a joined copy");
        assert_eq!(body.as_slice()[1].as_ptr(), parts[1].pieces.as_slice()[0].as_ptr());
        let texts: Vec<Bytes> = parts.iter().map(|p| p.pieces.to_bytes()).collect();
        assert_eq!(texts, [bytes(b"ab"), bytes(b"cde")], "an empty part is no part");
    }
}
