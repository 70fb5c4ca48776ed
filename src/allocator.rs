//! Hands the allocator's free memory back to the kernel.
//!
//! glibc's allocator keeps what is freed in its arenas for later allocations, and returns
//! only the free top of an arena to the kernel. Segments kept in the heap are recycled
//! buffers ([`packager::BufferPool`]); after a peak (the first segments' windows filling,
//! streams that ended) the pool releases what it no longer uses, and those buffers would
//! stay resident in the arenas though nothing uses them. `malloc_trim(3)` returns every
//! whole free page of every arena (`MADV_DONTNEED`), wherever it lies.
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the kernel (glibc; other allocators return their
/// own).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes an integer and only releases the allocator's own free
    // pages, under its own locks; it may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
