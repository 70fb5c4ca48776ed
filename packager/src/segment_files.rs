//! Where a closed segment's bytes live: in this process's heap, or in a file outside it (a
//! memory file on Linux) that the HTTP side can hand to the kernel with `sendfile`, so a
//! viewer's response costs no copy.
//!
//! The packager only moves bytes through these traits; the files themselves are made by the
//! HTTP side (`http_server::segment_files`), which alone knows how to send them.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Makes one writer per published stream.
pub trait SegmentFiles: Send + Sync + fmt::Debug {
    /// A writer for one stream's segments, or `None` to keep them in the heap.
    fn open(&self) -> Option<Box<dyn SegmentFileWriter>>;
}

/// Moves one stream's finished segments out of the heap, one at a time.
pub trait SegmentFileWriter: Send + Sync + fmt::Debug {
    /// Stores `data`; `None` when it could not (the segment then stays in the heap).
    fn write(&mut self, data: &[u8]) -> Option<Arc<dyn SegmentFile>>;
}

/// One segment's bytes in a file. Its storage is released when the last holder drops it.
pub trait SegmentFile: Send + Sync + fmt::Debug + Any {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Never true for a stored segment (segments hold at least one packet).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the bytes, for senders that cannot send from the file; `None` if the file
    /// cannot be read.
    fn read(&self) -> Option<Bytes>;
    /// For the sender to recover its concrete type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// A segment's bytes as the store hands them out.
#[derive(Debug, Clone)]
pub enum SegmentBody {
    /// In the heap, shared.
    Memory(Bytes),
    /// In a file.
    File(Arc<dyn SegmentFile>),
}

impl SegmentBody {
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
