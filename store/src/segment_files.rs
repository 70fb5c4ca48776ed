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
    /// Stores `data`; `None` when it could not (the segment then stays in the heap).
    fn write(&mut self, data: &[u8]) -> Option<Arc<Self::File>>;
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

/// A segment's bytes as the store hands them out.
#[derive(Debug)]
pub enum SegmentBody<F> {
    /// In the heap, shared.
    Memory(Bytes),
    /// In a file.
    File(Arc<F>),
}

impl<F> Clone for SegmentBody<F> {
    fn clone(&self) -> Self {
        match self {
            Self::Memory(bytes) => Self::Memory(bytes.clone()),
            Self::File(file) => Self::File(Arc::clone(file)),
        }
    }
}

impl<F: SegmentFile> SegmentBody<F> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(bytes) => bytes.len(),
            Self::File(file) => file.len(),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in the heap (a copy for a file); `None` if a file cannot be read.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self {
            Self::Memory(bytes) => Some(bytes.clone()),
            Self::File(file) => file.read(),
        }
    }
}
