//! Closed segments in memory files (Linux `memfd`), so that [`crate::sendfile`] can send them
//! to viewers with `sendfile(2)`: the kernel hands the file's pages to the socket, and a
//! response costs no copy from user space (the copy was a third of the server's CPU when
//! serving segments; BENCHMARKS.md). This is what Nginx gets from segments on tmpfs.
//!
//! One memory file per stream: each segment is appended at a page-aligned offset and, when
//! the last holder drops it, its pages are punched out of the file. Offsets only grow, so a
//! page is never written twice: a page the kernel is still sending (on loopback, until the
//! receiver reads it) keeps its bytes after its segment is gone, and punching a whole page
//! drops the file's reference without touching the page.

use std::any::Any;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use packager::{SegmentFile, SegmentFileWriter, SegmentFiles};
use rustix::fs::{FallocateFlags, MemfdFlags};
use tracing::{debug, warn};

/// Name of the memory files (it shows in `/proc/<pid>/fd` as `/memfd:<name>`).
pub const MEMFD_NAME: &str = "rtmp-hls-segments";

/// Makes one memory file per stream.
#[derive(Debug, Default)]
pub struct MemfdSegments {
    /// A failure to create a memory file is logged once, then each stream stays in the heap.
    warned: AtomicBool,
}

impl MemfdSegments {
    /// Memory files for segments.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SegmentFiles for MemfdSegments {
    fn open(&self) -> Option<Box<dyn SegmentFileWriter>> {
        match rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC) {
            Ok(fd) => Some(Box::new(MemfdWriter {
                file: Arc::new(File::from(fd)),
                end: 0,
                page: rustix::param::page_size() as u64,
            })),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "cannot create a memory file: segments stay in the heap and are sent with a copy (logged once)");
                }
                None
            }
        }
    }
}

/// Appends one stream's segments to its memory file.
#[derive(Debug)]
struct MemfdWriter {
    file: Arc<File>,
    /// Where the next segment starts (page-aligned).
    end: u64,
    page: u64,
}

impl SegmentFileWriter for MemfdWriter {
    fn write(&mut self, data: &[u8]) -> Option<Arc<dyn SegmentFile>> {
        let offset = self.end;
        let span = (data.len() as u64).div_ceil(self.page) * self.page;
        let segment = MemfdSegment { file: Arc::clone(&self.file), offset, len: data.len(), span };
        // Past this segment's pages even if the write fails part-way: dropping `segment`
        // then punches whatever was written.
        self.end = offset.checked_add(span)?;
        if let Err(e) = self.file.write_all_at(data, offset) {
            warn!(error = %e, bytes = data.len(), "cannot write a segment to its memory file: kept in the heap");
            return None;
        }
        Some(Arc::new(segment))
    }
}

/// One segment's bytes in a stream's memory file.
#[derive(Debug)]
pub struct MemfdSegment {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Bytes of whole pages the segment occupies.
    span: u64,
}

impl MemfdSegment {
    /// The memory file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the segment starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl SegmentFile for MemfdSegment {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self) -> Option<Bytes> {
        let mut bytes = vec![0; self.len];
        match self.file.read_exact_at(&mut bytes, self.offset) {
            Ok(()) => Some(Bytes::from(bytes)),
            Err(e) => {
                warn!(error = %e, "cannot read a segment from its memory file");
                None
            }
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl Drop for MemfdSegment {
    fn drop(&mut self) {
        // Whole pages only: the file lets go of them, and a page still being sent stays
        // intact for the socket that holds it.
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&*self.file, flags, self.offset, self.span) {
            debug!(error = %e, "cannot free a segment's pages in its memory file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocated(file: &File) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        file.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn segments_round_trip_and_free_their_pages() {
        let mut writer = MemfdSegments::new().open().unwrap();
        let first = writer.write(&[1; 10_000]).unwrap();
        let second = writer.write(&[2; 5]).unwrap();
        assert_eq!(first.read().unwrap(), Bytes::from(vec![1; 10_000]));
        assert_eq!(second.read().unwrap(), Bytes::from_static(&[2; 5]));
        let concrete = Arc::clone(&second).into_any().downcast::<MemfdSegment>().unwrap();
        let page = rustix::param::page_size() as u64;
        assert_eq!(concrete.offset() % page, 0, "segments start on a page");
        let file = Arc::clone(&concrete.file);
        drop(concrete);
        let before = allocated(&file);
        assert!(before >= 10_000 + 5, "{before}");
        drop(first);
        let after = allocated(&file);
        assert!(after < before && after <= page, "pages freed: {before} -> {after}");
        assert_eq!(second.read().unwrap(), Bytes::from_static(&[2; 5]), "neighbour intact");
        drop(second);
        assert_eq!(allocated(&file), 0);
    }
}
