//! Where a closed segment's bytes live: in this process's heap, or in a file outside it that
//! the HTTP side can hand to the kernel (`sendfile`), so a viewer's response costs no copy.
//!
//! The store is generic over [`SegmentFiles`]: the server uses [`crate::memfd`], tests use
//! files of their own (one that fails on purpose, say). Whoever sends a segment gets the
//! concrete file type back from [`SegmentBody::File`], never a type to downcast.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Makes one writer per published stream.
pub trait SegmentFiles: Send + Sync + fmt::Debug + 'static {
    /// One segment's bytes in a file.
    type File: SegmentFile;
    /// Writes one stream's segments.
    type Writer: SegmentFileWriter<File = Self::File>;
    /// A writer for one stream's segments, or `None` to keep them in the heap.
    fn open(&self) -> Option<Self::Writer>;
}

/// Moves one stream's finished segments out of the heap, one at a time.
pub trait SegmentFileWriter: Send + fmt::Debug {
    /// What it writes.
    type File;
    /// Stores the segment made of `pieces`, back to back; `None` when it could not (the
    /// segment then stays in the heap), or while a segment begun is not ended.
    fn write(&mut self, pieces: &[Bytes]) -> Option<Arc<Self::File>>;
    /// Starts a segment written as the packager makes it, abandoning one begun and not
    /// ended.
    fn begin(&mut self);
    /// Appends `bytes` to the segment begun last (a failure shows at its end).
    fn append(&mut self, bytes: &[u8]);
    /// Replaces bytes already appended to the segment begun last, from `offset`.
    fn overwrite(&mut self, offset: usize, bytes: &[u8]);
    /// The segment begun last, complete; `None` if none was begun or a write failed (its
    /// storage is then released).
    fn end(&mut self) -> Option<Arc<Self::File>>;
    /// Releases the segment begun and not ended, if any.
    fn abandon(&mut self);
    /// Bytes appended to the segment begun and not ended.
    fn open_len(&self) -> usize;
}

/// One segment's bytes in a file. Its storage is released when the last holder drops it.
pub trait SegmentFile: Send + Sync + fmt::Debug + 'static {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Never true for a stored segment (segments hold at least one packet).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the bytes, for senders that cannot send from the file; `None` if the file
    /// cannot be read.
    fn read(&self) -> Option<Bytes>;
}

/// Bytes in the heap as one buffer or several back to back: an MPEG-TS segment's staging
/// buffers as they filled, an fMP4 segment's parts or fragments as the packager made them. A
/// segment in pieces fetched a second time is joined into one buffer (see
/// [`crate::PROMOTE_AT_FETCH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces(PiecesInner);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PiecesInner {
    One(Bytes),
    Many(Arc<[Bytes]>),
}

impl Pieces {
    /// The pieces, in order.
    pub fn as_slice(&self) -> &[Bytes] {
        match &self.0 {
            PiecesInner::One(bytes) => std::slice::from_ref(bytes),
            PiecesInner::Many(pieces) => pieces,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().iter().map(Bytes::len).sum()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.as_slice().iter().all(Bytes::is_empty)
    }

    /// The bytes as one buffer (a copy when there are several pieces).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            PiecesInner::One(bytes) => bytes.clone(),
            PiecesInner::Many(pieces) => Bytes::from(pieces.concat()),
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Self(PiecesInner::One(bytes))
    }
}

impl From<Vec<Bytes>> for Pieces {
    fn from(mut pieces: Vec<Bytes>) -> Self {
        if pieces.len() == 1 {
            return Self(PiecesInner::One(pieces.pop().unwrap_or_default()));
        }
        Self(PiecesInner::Many(pieces.into()))
    }
}

/// A segment's bytes as the store hands them out.
#[derive(Debug)]
pub enum SegmentBody<F> {
    /// In the heap, shared.
    Memory(Pieces),
    /// In a file.
    File(Arc<F>),
}

impl<F> Clone for SegmentBody<F> {
    fn clone(&self) -> Self {
        match self {
            Self::Memory(pieces) => Self::Memory(pieces.clone()),
            Self::File(file) => Self::File(Arc::clone(file)),
        }
    }
}

impl<F: SegmentFile> SegmentBody<F> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(pieces) => pieces.len(),
            Self::File(file) => file.len(),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in the heap as one buffer (a copy for a file or several pieces); `None` if
    /// a file cannot be read.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self {
            Self::Memory(pieces) => Some(pieces.to_bytes()),
            Self::File(file) => file.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_their_bytes_back_to_back() {
        let pieces = Pieces::from(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        assert_eq!(pieces.len(), 5);
        assert_eq!(pieces.to_bytes(), Bytes::from_static(b"abcde"));
        assert_eq!(Pieces::from(Bytes::from_static(b"x")).as_slice().len(), 1);
    }
}
