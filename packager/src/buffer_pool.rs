//! Recycled segment buffers.
//!
//! Segments kept in the heap (fMP4 fragments and joined parts; MPEG-TS segments as the
//! store's 32 KiB staging buffers, or one buffer once joined) are written into buffers
//! opened as the stream is packaged and freed when a segment leaves the store. Left to the
//! allocator, the freed memory goes back to the kernel and the next buffer faults fresh
//! zeroed pages in: page faults were ~15 % of the server's CPU under load. A segment's bytes
//! here are owned by a [`Recycled`] buffer that returns to its pool when the last reference
//! (the store's, or an HTTP response still being sent) is dropped, and the next buffer opened
//! by any stream sharing the pool takes it. The server gives every stream one pool: streams
//! cut at different moments, so what one frees the others take within a fraction of a
//! second. The pool is bounded in buffers and bytes (oldest dropped first), and
//! [`BufferPool::release_unused`], called periodically, frees what a peak left in it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Buffers kept at most: [`MAX_POOLED_BYTES`] of the store's 32 KiB segment buffers. Streams
/// cut at random phases, so in steady state a freed segment's buffers are taken by the
/// streams writing within a fraction of a second, and the pool holds a few hundred at most;
/// what it holds beyond that goes at the next [`BufferPool::release_unused`].
pub const MAX_POOLED_BUFFERS: usize = 2048;
/// Bytes of capacity kept at most (a burst of streams ending frees many at once; those
/// beyond this go back to the allocator).
pub const MAX_POOLED_BYTES: usize = 64 << 20;

/// A pool of byte buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    buffers: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The fewest buffers held since the last [`BufferPool::release_unused`]: at every
    /// moment since, at least that many sat idle.
    low: usize,
}

impl BufferPool {
    /// An empty pool.
    pub const fn new() -> Self {
        Self { free: Mutex::new(Free { buffers: VecDeque::new(), bytes: 0, low: 0 }) }
    }

    /// An empty buffer: a pooled one with room for at least `min` bytes and at most `size`
    /// plus a quarter (a retained segment keeps its buffer's whole capacity, so a much larger
    /// one would waste memory for as long as the segment lives), or a new one of `size`
    /// rounded up to a [`size_class`] (streams of similar bitrates then make buffers of the
    /// same few sizes, which serve each other).
    pub fn take(&self, min: usize, size: usize) -> Vec<u8> {
        let max = size.saturating_add(size / 4).max(min);
        let fits = |b: &Vec<u8>| b.capacity() >= min && b.capacity() <= max;
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        // Newest first: its pages are the most likely to be in cache.
        if let Some(i) = free.buffers.iter().rposition(fits)
            && let Some(buffer) = free.buffers.remove(i)
        {
            free.bytes -= buffer.capacity();
            free.low = free.low.min(free.buffers.len());
            return buffer;
        }
        drop(free);
        Vec::with_capacity(size_class(size.max(min)))
    }

    /// An empty buffer for `len` bytes that will be kept as long as what is written into it
    /// lives: a pooled one with at most `slack` bytes of room beyond, or a new one of exactly
    /// `len`.
    pub fn take_fitting(&self, len: usize, slack: usize) -> Vec<u8> {
        let max = len.saturating_add(slack);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = free.buffers.iter().rposition(|b| (len..=max).contains(&b.capacity()))
            && let Some(buffer) = free.buffers.remove(i)
        {
            free.bytes -= buffer.capacity();
            free.low = free.low.min(free.buffers.len());
            return buffer;
        }
        drop(free);
        Vec::with_capacity(len)
    }

    /// Keeps `buffer` for a later [`BufferPool::take`], dropping the oldest beyond the bounds.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > MAX_POOLED_BYTES {
            return;
        }
        buffer.clear();
        let mut dropped = Vec::new();
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.bytes += buffer.capacity();
        free.buffers.push_back(buffer);
        while free.buffers.len() > MAX_POOLED_BUFFERS || free.bytes > MAX_POOLED_BYTES {
            let Some(old) = free.buffers.pop_front() else { break };
            free.bytes -= old.capacity();
            dropped.push(old);
        }
        free.low = free.low.min(free.buffers.len());
        drop(free);
        // Freed outside the lock.
        drop(dropped);
    }

    /// Frees as many buffers as the pool never went below since the last call (that many sat
    /// idle throughout; the oldest go) and returns their bytes of capacity. Called
    /// periodically, it keeps what the streams' cuts take and give back within a period,
    /// and hands back what a peak left (streams that ended, the first segments' windows
    /// filling): a recycled buffer is resident memory, used or not.
    pub fn release_unused(&self) -> usize {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let unused = free.low.min(free.buffers.len());
        let released: Vec<Vec<u8>> = free.buffers.drain(..unused).collect();
        let bytes = released.iter().map(Vec::capacity).sum();
        free.bytes -= bytes;
        free.low = free.buffers.len();
        drop(free);
        // Freed outside the lock.
        drop(released);
        bytes
    }

    /// Buffers and bytes of capacity held.
    pub fn held(&self) -> (usize, usize) {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        (free.buffers.len(), free.bytes)
    }

    /// Shared bytes over `buffer`, which returns to this pool when the last reference drops.
    pub fn share(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Recycled { buffer, pool: Arc::clone(self) })
    }
}

/// `n` rounded up to a multiple of an eighth of the largest power of two not above it
/// (at most 12.5 % more than asked).
pub fn size_class(n: usize) -> usize {
    if n <= 8 {
        return n;
    }
    let step = (1usize << n.ilog2()) / 8;
    n.div_ceil(step).saturating_mul(step)
}

/// A buffer that goes back to its pool when dropped.
struct Recycled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<BufferPool> {
        Arc::default()
    }

    #[test]
    fn a_dropped_segment_buffer_serves_the_next_request() {
        let pool = pool();
        let mut buffer = pool.take(1000, 1000);
        buffer.extend_from_slice(&[7; 600]);
        let address = buffer.as_ptr();
        let shared = pool.share(buffer);
        let reader = shared.clone();
        drop(shared);
        assert_eq!(pool.held().0, 0, "a reader still holds it");
        assert_eq!(&reader[..], &[7; 600][..]);
        drop(reader);
        assert_eq!(pool.held().0, 1);
        let again = pool.take(900, 1000);
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
        assert_eq!(pool.held(), (0, 0));
    }

    #[test]
    fn a_buffer_too_small_or_far_too_large_is_not_used() {
        let pool = pool();
        pool.give(Vec::with_capacity(1000));
        assert!(pool.take(1001, 1100).capacity() >= 1001);
        assert!(pool.take(300, 700).capacity() < 1000, "1000 > 700 + a quarter");
        assert_eq!(pool.held().0, 1);
        assert_eq!(pool.take(900, 1100).capacity(), 1000, "smaller than wanted but enough");
    }

    #[test]
    fn a_fitting_buffer_has_at_most_the_slack_to_spare() {
        let pool = pool();
        pool.give(Vec::with_capacity(1100));
        pool.give(Vec::with_capacity(1040));
        assert_eq!(pool.take_fitting(1000, 50).capacity(), 1040);
        // None fits: a new one of exactly the length.
        assert_eq!(pool.take_fitting(1000, 50).capacity(), 1000);
        assert_eq!(pool.held(), (1, 1100));
    }

    #[test]
    fn new_buffers_are_rounded_up_to_size_classes() {
        let pool = pool();
        assert_eq!(pool.take(900, 1000).capacity(), 1024);
        assert_eq!(pool.take(600_000, 700_000).capacity(), 720_896);
        assert_eq!(pool.take(2000, 1000).capacity(), 2048);
    }

    #[test]
    fn size_classes_are_eighths_of_powers_of_two() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(8), 8);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1152);
        assert_eq!(size_class(700_000), 720_896);
        for n in [9, 100, 4097, 65_535, 700_001, 1 << 27] {
            let class = size_class(n);
            assert!(class >= n && class - n <= n / 8, "{n} -> {class}");
        }
    }

    #[test]
    fn holds_at_most_the_buffer_limit_dropping_the_oldest() {
        let pool = pool();
        for i in 0..=MAX_POOLED_BUFFERS {
            pool.give(Vec::with_capacity(100 + i));
        }
        let kept: usize = (1..=MAX_POOLED_BUFFERS).map(|i| 100 + i).sum();
        assert_eq!(pool.held(), (MAX_POOLED_BUFFERS, kept), "the oldest (capacity 100) went");
    }

    #[test]
    fn buffers_that_served_no_request_in_a_period_are_released() {
        let pool = pool();
        for _ in 0..5 {
            pool.give(Vec::with_capacity(1000));
        }
        assert_eq!(pool.release_unused(), 0, "the first period starts here");
        pool.take(1000, 1000);
        pool.take(1000, 1000);
        pool.give(Vec::with_capacity(1000));
        // Three were held all period long: the oldest three go.
        assert_eq!(pool.release_unused(), 3000);
        assert_eq!(pool.held(), (1, 1000));
        pool.take(1000, 1000);
        pool.give(Vec::with_capacity(1000));
        assert_eq!(pool.release_unused(), 0, "the pool emptied during the period");
        assert_eq!(pool.held(), (1, 1000));
    }

    #[test]
    fn holds_at_most_the_byte_limit() {
        let pool = pool();
        let big = MAX_POOLED_BYTES / 3 + 1;
        for _ in 0..3 {
            pool.give(Vec::with_capacity(big));
        }
        let (buffers, bytes) = pool.held();
        assert_eq!(buffers, 2);
        assert!(bytes <= MAX_POOLED_BYTES);
        pool.give(Vec::with_capacity(MAX_POOLED_BYTES + 1));
        assert_eq!(pool.held().0, 2, "a buffer over the whole limit is not kept");
    }
}
