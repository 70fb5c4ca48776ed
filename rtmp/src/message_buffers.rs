//! Buffers that reassembled message bodies are written into, recycled per thread.
//!
//! A publisher sends ~80 messages a second, of a few hundred bytes (AAC) to tens of KiB, each
//! dropped as soon as the packager has copied the media out; sizes past glibc's per-thread
//! cache make a fresh allocation for each the largest cost of reading a message after the
//! copy itself. A body takes a buffer whose capacity is a power of two, and the buffer goes
//! back, when the last [`Bytes`] of the message is dropped, to the spares of the thread that
//! drops it, if that thread reads messages too: [`SPARES_PER_CLASS`] per power of two and
//! [`MAX_SPARE_BYTES`] in all, however many connections the thread runs. A message kept (a
//! player's queue) keeps its buffer, at most twice its length, as a growing `Vec` would.
//!
//! The spares are thread-local, so no lock is taken: a connection reads its messages on one
//! thread from accept to close and mostly drops them there (with `--connection-threads 0`
//! its task may move between a runtime's threads, which then share the work of recycling).

use std::cell::RefCell;

use bytes::Bytes;

/// Bodies shorter than this are allocated as usual: commands and control messages, rare,
/// which glibc serves from its per-thread cache.
pub const MIN_RECYCLED: usize = 1 << 8;
/// Bodies longer than this are allocated as usual: keyframes, one video frame in sixty at a
/// 2 s GOP, not worth the memory a spare of their size holds.
pub const MAX_RECYCLED: usize = 64 << 10;
/// Spare buffers kept per power of two: the connections of a thread each hold a message being
/// read, of sizes that vary frame to frame, and hand buffers back as they finish them.
pub const SPARES_PER_CLASS: usize = 4;
/// Bytes of spare buffers a thread keeps at most: memory per thread, not per stream, but
/// counted against each stream's share all the same (half a MiB for a two-core server's
/// threads is 8 KiB a stream at 64 streams).
pub const MAX_SPARE_BYTES: usize = 256 << 10;
/// Powers of two from [`MIN_RECYCLED`] to [`MAX_RECYCLED`].
const CLASSES: usize = (MAX_RECYCLED.ilog2() - MIN_RECYCLED.ilog2() + 1) as usize;

/// One thread's spare buffers, by class.
#[derive(Default)]
struct Spares {
    classes: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
    /// Whether this thread ever took a buffer: one that never does (a recording's writer,
    /// dropping what it wrote) keeps none.
    takes: bool,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// The class of a buffer of `capacity` bytes: `None` unless it is a power of two within
/// [`MIN_RECYCLED`]..=[`MAX_RECYCLED`].
fn class_of(capacity: usize) -> Option<usize> {
    (capacity.is_power_of_two() && (MIN_RECYCLED..=MAX_RECYCLED).contains(&capacity))
        .then(|| (capacity.ilog2() - MIN_RECYCLED.ilog2()) as usize)
}

/// An empty buffer with room for `len` bytes: a spare of this thread's if one fits.
pub(crate) fn take(len: usize) -> Vec<u8> {
    if !(MIN_RECYCLED..=MAX_RECYCLED).contains(&len) {
        return Vec::with_capacity(len);
    }
    let capacity = len.next_power_of_two();
    let spare = class_of(capacity).and_then(|class| {
        SPARES
            .try_with(|spares| {
                let mut spares = spares.borrow_mut();
                spares.takes = true;
                let buffer = spares.classes.get_mut(class)?.pop()?;
                spares.bytes -= buffer.capacity();
                Some(buffer)
            })
            .ok()?
    });
    spare.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// `body` as [`Bytes`] that give its buffer back to the spares of the thread dropping the
/// last of them, if it is of a recycled size.
pub(crate) fn freeze(body: Vec<u8>) -> Bytes {
    if class_of(body.capacity()).is_some() {
        Bytes::from_owner(Recycled(body))
    } else {
        Bytes::from(body)
    }
}

/// A message body that returns its buffer to the spares when dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(class) = class_of(self.0.capacity()) else { return };
        let mut buffer = std::mem::take(&mut self.0);
        buffer.clear();
        // A thread being torn down has no spares any more: the buffer is freed.
        let _ = SPARES.try_with(|spares| {
            let spares = &mut *spares.borrow_mut();
            if spares.takes
                && spares.bytes + buffer.capacity() <= MAX_SPARE_BYTES
                && let Some(list) = spares.classes.get_mut(class)
                && list.len() < SPARES_PER_CLASS
            {
                spares.bytes += buffer.capacity();
                list.push(buffer);
            }
        });
    }
}

/// Forgets this thread's spare buffers (a test starts from none).
#[cfg(test)]
pub(crate) fn clear() {
    SPARES.with(|spares| *spares.borrow_mut() = Spares::default());
}

/// This thread's spare buffers: how many, and their bytes.
#[cfg(test)]
pub(crate) fn spares() -> (usize, usize) {
    SPARES.with(|spares| {
        let spares = spares.borrow();
        let all = spares.classes.iter().flatten();
        let (count, bytes) = (all.clone().count(), all.map(Vec::capacity).sum());
        assert_eq!(bytes, spares.bytes);
        (count, bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_serves_the_next_of_its_class() {
        clear();
        let mut body = take(10_000);
        assert_eq!(body.capacity(), 16 << 10);
        body.extend_from_slice(&[1; 10_000]);
        let address = body.as_ptr();
        let bytes = freeze(body);
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(spares().0, 0, "a clone still holds it");
        drop(copy);
        assert_eq!(spares(), (1, 16 << 10));
        // The next body of 8-16 KiB takes it, empty; another class does not.
        assert_eq!(take(20_000).capacity(), 32 << 10);
        let again = take(9_000);
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
        assert_eq!(spares().0, 0);
    }

    /// A thread that never takes a buffer (a recording's writer) keeps none of those it drops.
    #[test]
    fn a_thread_that_only_drops_keeps_nothing() {
        let body = freeze(take(5000));
        std::thread::spawn(move || {
            drop(body);
            assert_eq!(spares(), (0, 0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn small_huge_and_grown_bodies_are_not_kept_and_spares_are_bounded() {
        clear();
        drop(take(MIN_RECYCLED));
        for len in [0, 100, MIN_RECYCLED - 1, MAX_RECYCLED + 1] {
            let body = take(len);
            assert_eq!(body.capacity(), len);
            drop(freeze(body));
        }
        // A body grown past its capacity by a non-power of two is freed.
        let mut odd = take(4096);
        odd.reserve_exact(10_000);
        odd.extend_from_slice(&[0; 10_000]);
        drop(freeze(odd));
        assert_eq!(spares().0, 0);
        let bodies: Vec<Bytes> = (0..SPARES_PER_CLASS + 3).map(|_| freeze(take(2000))).collect();
        drop(bodies);
        assert_eq!(spares(), (SPARES_PER_CLASS, SPARES_PER_CLASS * 2048));
        // Small classes first, then large ones until the bytes run out.
        let all: Vec<Bytes> = (0..CLASSES * SPARES_PER_CLASS)
            .map(|i| freeze(take(MIN_RECYCLED << (i / SPARES_PER_CLASS))))
            .collect();
        drop(all);
        let (count, bytes) = spares();
        assert!(bytes <= MAX_SPARE_BYTES && bytes > MAX_SPARE_BYTES / 2, "{bytes}");
        assert!(count > SPARES_PER_CLASS * (CLASSES - 3), "{count}");
    }
}
