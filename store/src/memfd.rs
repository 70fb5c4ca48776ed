//! Segments in memory files (Linux `memfd`), so that the HTTP side can send them to viewers
//! with `sendfile(2)`: the kernel hands the file's pages to the socket, and a response costs
//! no copy from user space (the copy was a third of the server's CPU when serving segments).
//! This is what Nginx gets from segments on tmpfs. MPEG-TS segments are written here as the
//! packager makes them ([`crate::FileSink`]): a stream then holds its segments' bytes once,
//! in pages the kernel allocates as they are written and takes back when they are punched.
//! fMP4 segments move here at their second fetch ([`crate::PROMOTE_AT_FETCH`]).
//!
//! One memory file per stream: each segment starts at a page-aligned offset and, when the
//! last holder drops it, its pages are punched out of the file. Offsets only grow and a
//! segment is written only before it is complete, so a page is never written while it may
//! be sent: a page the kernel is still sending (on loopback, until the receiver reads it)
//! keeps its bytes after its segment is gone, and punching a whole page drops the file's
//! reference without touching the page. That holds for pages of the base
//! size only: punching part of a huge page zeroes the range in place, so where the kernel
//! may give memory files huge pages (`shmem_enabled`), segments stay in the heap.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::segment_files::{SegmentFile, SegmentFileWriter, SegmentFiles};
use bytes::Bytes;
use rustix::fs::{FallocateFlags, MemfdFlags};
use tracing::{debug, warn};

/// Name of the memory files (it shows in `/proc/<pid>/fd` as `/memfd:<name>`).
pub const MEMFD_NAME: &str = "rtmp-hls-segments";
/// A stream moves to a fresh memory file when its offsets pass this: a file's size only
/// grows (freed segments are holes), and a file-size limit (`RLIMIT_FSIZE`, systemd's
/// `LimitFSIZE=`) would end the process with SIGXFSZ. A stream at 2.6 Mbit/s passes it in
/// under an hour; the old file goes when its last segment does.
pub const MAX_FILE_OFFSET: u64 = 1 << 30;
/// Where Linux says whether memory files may get transparent huge pages: the default, then
/// one file per huge page size.
const SHMEM_HUGE_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
const SHMEM_HUGE_SIZES: &str = "/sys/kernel/mm/transparent_hugepage";

/// Makes one memory file per stream.
#[derive(Debug)]
pub struct MemfdSegments {
    /// Memory files may get huge pages: every stream stays in the heap.
    huge_pages: bool,
    /// A failure to create a memory file is logged once, then each stream stays in the heap.
    warned: Arc<AtomicBool>,
}

impl MemfdSegments {
    /// Memory files for segments, unless this kernel may give them huge pages (then every
    /// segment stays in the heap, and a warning says why).
    pub fn new() -> Self {
        let huge_pages = shmem_may_use_huge_pages();
        if huge_pages {
            warn!(
                "transparent huge pages are enabled for shared memory ({SHMEM_HUGE_SETTING}): \
                 segments stay in the heap and are sent with a copy"
            );
        }
        Self { huge_pages, warned: Arc::default() }
    }
}

impl MemfdSegments {
    /// Memory files whatever the huge-page setting. For tests, which make small segments and
    /// check bytes, not page accounting: a server uses [`MemfdSegments::new`].
    pub fn ignoring_huge_pages() -> Self {
        Self { huge_pages: false, warned: Arc::default() }
    }
}

impl Default for MemfdSegments {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh memory file, or `None` (logged once per `warned`).
fn memfd(warned: &AtomicBool) -> Option<Arc<File>> {
    match rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC) {
        Ok(fd) => Some(Arc::new(File::from(fd))),
        Err(e) => {
            if !warned.swap(true, Ordering::Relaxed) {
                warn!(error = %e, "cannot create a memory file: segments stay in the heap and are sent with a copy (logged once)");
            }
            None
        }
    }
}

impl SegmentFiles for MemfdSegments {
    type File = MemfdSegment;
    type Writer = MemfdWriter;

    fn open(&self) -> Option<MemfdWriter> {
        if self.huge_pages {
            return None;
        }
        Some(MemfdWriter {
            file: memfd(&self.warned)?,
            end: 0,
            page: rustix::param::page_size() as u64,
            warned: Arc::clone(&self.warned),
            growing: None,
        })
    }
}

/// Whether this kernel may back memory files with transparent huge pages.
fn shmem_may_use_huge_pages() -> bool {
    let Ok(default) = std::fs::read_to_string(SHMEM_HUGE_SETTING) else {
        // No such setting: a kernel without transparent huge pages.
        return false;
    };
    let per_size: Vec<String> = std::fs::read_dir(SHMEM_HUGE_SIZES)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("shmem_enabled")).ok())
        .collect();
    huge_pages_selected(&default, &per_size)
}

/// Whether the selected (bracketed) values of the default `shmem_enabled` and the per-size
/// ones allow huge pages on a memory file that is never mapped: `always`, `within_size`
/// and `force` do (a per-size `inherit` follows the default); `advise` needs an madvise'd
/// mapping, and `never` and `deny` do not.
fn huge_pages_selected(default: &str, per_size: &[String]) -> bool {
    fn selected(setting: &str) -> &str {
        setting.split('[').nth(1).and_then(|s| s.split(']').next()).unwrap_or("never")
    }
    let allows = |value: &str| matches!(value, "always" | "within_size" | "force");
    allows(selected(default)) || per_size.iter().any(|s| allows(selected(s)))
}

/// Appends one stream's segments to its memory file.
#[derive(Debug)]
pub struct MemfdWriter {
    file: Arc<File>,
    /// Where the next segment starts (page-aligned).
    end: u64,
    page: u64,
    warned: Arc<AtomicBool>,
    /// The segment being written piece by piece, at `end`.
    growing: Option<Growing>,
}

/// A segment being written piece by piece.
#[derive(Debug)]
struct Growing {
    len: u64,
    /// A write failed: the segment is dropped at its end.
    failed: bool,
}

impl MemfdWriter {
    /// The growing segment as a segment of the file (dropping it punches its pages), with
    /// `end` moved past it.
    fn close_growing(&mut self) -> Option<(MemfdSegment, bool)> {
        let growing = self.growing.take()?;
        let span = growing.len.div_ceil(self.page) * self.page;
        let offset = self.end;
        self.end = offset.saturating_add(span);
        let len = usize::try_from(growing.len).ok()?;
        Some((MemfdSegment { file: Arc::clone(&self.file), offset, len, span }, growing.failed))
    }
}

impl SegmentFileWriter for MemfdWriter {
    type File = MemfdSegment;

    fn write(&mut self, pieces: &[Bytes]) -> Option<Arc<MemfdSegment>> {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if len == 0 || self.growing.is_some() {
            return None;
        }
        let span = (len as u64).div_ceil(self.page) * self.page;
        if self.end.saturating_add(span) > MAX_FILE_OFFSET {
            self.file = memfd(&self.warned)?;
            self.end = 0;
        }
        let offset = self.end;
        let segment = MemfdSegment { file: Arc::clone(&self.file), offset, len, span };
        // Past this segment's pages even if the write fails part-way: dropping `segment`
        // then punches whatever was written.
        self.end = offset.checked_add(span)?;
        let mut at = offset;
        for piece in pieces {
            if let Err(e) = self.file.write_all_at(piece, at) {
                warn!(error = %e, bytes = len, "cannot write a segment to its memory file: kept in the heap");
                return None;
            }
            at += piece.len() as u64;
        }
        Some(Arc::new(segment))
    }

    fn begin(&mut self) {
        self.abandon();
        // Room for the largest segment the packager makes before the offset limit (it cuts
        // after that many bytes, so one access unit more: twice is plenty).
        let room = 2 * packager::segmenter::MAX_SEGMENT_BYTES as u64;
        let mut failed = false;
        if self.end.saturating_add(room) > MAX_FILE_OFFSET {
            match memfd(&self.warned) {
                Some(file) => {
                    self.file = file;
                    self.end = 0;
                }
                None => failed = true,
            }
        }
        self.growing = Some(Growing { len: 0, failed });
    }

    fn append(&mut self, bytes: &[u8]) {
        let Some(growing) = self.growing.as_mut() else { return };
        if growing.failed {
            return;
        }
        let at = self.end + growing.len;
        // Counted before the write: a write that fails part-way has written some of it, and
        // the segment's span, punched at its end, must cover that.
        growing.len += bytes.len() as u64;
        if let Err(e) = self.file.write_all_at(bytes, at) {
            warn!(error = %e, at, "cannot write a segment to its memory file: it is skipped");
            growing.failed = true;
        }
    }

    fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        let Some(growing) = self.growing.as_mut() else { return };
        let (offset, len) = (offset as u64, bytes.len() as u64);
        if growing.failed {
            return;
        }
        if offset.saturating_add(len) > growing.len {
            // Bytes that were never appended: the segment would be wrong.
            warn!(offset, len, "a segment rewrite past its end: it is skipped");
            growing.failed = true;
            return;
        }
        if let Err(e) = self.file.write_all_at(bytes, self.end + offset) {
            warn!(error = %e, "cannot write a segment to its memory file: it is skipped");
            growing.failed = true;
        }
    }

    fn end(&mut self) -> Option<Arc<MemfdSegment>> {
        let (segment, failed) = self.close_growing()?;
        // Dropped, a failed or empty one punches whatever was written.
        (!failed && segment.len > 0).then(|| Arc::new(segment))
    }

    fn abandon(&mut self) {
        drop(self.close_growing());
    }

    fn open_len(&self) -> usize {
        self.growing.as_ref().map_or(0, |growing| growing.len as usize)
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
    fn huge_pages_are_detected_from_the_selected_values() {
        let never = "always within_size advise [never] deny force\n";
        let sizes = |v: &str| vec![format!("always inherit within_size advise {v}\n")];
        assert!(!huge_pages_selected(never, &[]));
        assert!(!huge_pages_selected(never, &sizes("[never]")));
        assert!(!huge_pages_selected("always within_size [advise] never deny force", &[]));
        assert!(!huge_pages_selected("always within_size advise never [deny] force", &[]));
        assert!(huge_pages_selected("[always] within_size advise never deny force", &[]));
        assert!(huge_pages_selected("always [within_size] advise never deny force", &[]));
        assert!(huge_pages_selected("always within_size advise never deny [force]", &[]));
        assert!(huge_pages_selected(never, &["[always] inherit within_size advise never".into()]));
        assert!(!huge_pages_selected("", &[]), "unreadable: nothing selected");
    }

    #[test]
    fn a_stream_moves_to_a_fresh_file_past_the_offset_limit() {
        let mut writer = MemfdWriter {
            file: memfd(&AtomicBool::new(false)).unwrap(),
            end: MAX_FILE_OFFSET - 4096,
            page: rustix::param::page_size() as u64,
            warned: Arc::default(),
            growing: None,
        };
        let first = writer.file.clone();
        let segment = writer.write(&[Bytes::from(vec![5; 8192])]).unwrap();
        assert!(!Arc::ptr_eq(&first, &writer.file), "a new file");
        assert_eq!(segment.offset(), 0);
        assert_eq!(segment.read().unwrap(), Bytes::from(vec![5; 8192]));
        assert!(writer.write(&[]).is_none(), "empty segments stay in the heap");
    }

    #[test]
    fn segments_round_trip_and_free_their_pages() {
        let mut writer = MemfdSegments::ignoring_huge_pages().open().unwrap();
        let first = writer.write(&[Bytes::from(vec![1; 10_000])]).unwrap();
        let second = writer.write(&[Bytes::from_static(&[2; 5])]).unwrap();
        assert_eq!(first.read().unwrap(), Bytes::from(vec![1; 10_000]));
        assert_eq!(second.read().unwrap(), Bytes::from_static(&[2; 5]));
        let concrete = Arc::clone(&second);
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

    #[test]
    fn a_segment_written_piece_by_piece_is_one_segment_and_frees_its_pages() {
        let mut writer = MemfdSegments::ignoring_huge_pages().open().unwrap();
        let page = rustix::param::page_size() as u64;
        writer.begin();
        writer.append(&[1; 5000]);
        assert!(writer.write(&[Bytes::from_static(b"promoted")]).is_none(), "one at a time");
        writer.append(&[2; 3000]);
        writer.overwrite(0, &[9; 10]);
        assert_eq!(writer.open_len(), 8000);
        let segment = writer.end().unwrap();
        assert_eq!(writer.open_len(), 0);
        let mut expected = vec![9; 10];
        expected.extend([1; 4990]);
        expected.extend([2; 3000]);
        assert_eq!(segment.read().unwrap(), Bytes::from(expected));
        assert_eq!(segment.offset(), 0);
        // The next starts on the next page after it; an abandoned one is punched.
        writer.begin();
        writer.append(&[3; 100]);
        writer.begin();
        writer.append(&[4; 100]);
        let next = writer.end().unwrap();
        assert_eq!(next.offset(), 8000u64.div_ceil(page) * page + page, "after the abandoned");
        let file = Arc::clone(&next.file);
        let before = allocated(&file);
        drop(segment);
        assert_eq!(allocated(&file), before - 8000u64.div_ceil(page) * page);
        assert_eq!(next.read().unwrap(), Bytes::from(vec![4; 100]));
        drop(next);
        assert_eq!(allocated(&file), 0, "every page punched, the abandoned one's too");
        writer.begin();
        assert!(writer.end().is_none(), "an empty segment is not kept");
        assert!(writer.end().is_none(), "none begun");
        writer.begin();
        writer.append(&[5; 100]);
        writer.overwrite(90, &[9; 20]);
        assert!(writer.end().is_none(), "a rewrite past the end spoils the segment");
    }

    #[test]
    fn a_segment_begun_near_the_offset_limit_starts_a_fresh_file() {
        let mut writer = MemfdSegments::ignoring_huge_pages().open().unwrap();
        writer.end = MAX_FILE_OFFSET - 4096;
        let first = Arc::clone(&writer.file);
        writer.begin();
        writer.append(&[6; 10]);
        let segment = writer.end().unwrap();
        assert!(!Arc::ptr_eq(&first, &segment.file), "a new file");
        assert_eq!(segment.offset(), 0);
        assert_eq!(segment.read().unwrap(), Bytes::from(vec![6; 10]));
    }
}
