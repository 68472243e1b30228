//! Counting large blocks (the system allocator's) without a shared
//! read-modify-write per allocation.
//!
//! `alloc_stats()` reports the large blocks in use and their bytes, and a
//! peak that includes them. Counting both in two process-wide atomics
//! costs two read-modify-writes of one shared cache line per `alloc` and
//! per `free`: on two threads passing buffers, as a tokio program's
//! workers do, that line moves between cores at every call. Measured on a
//! 2-vCPU AMD EPYC, two threads each allocating and freeing 520..1,020-byte
//! blocks (glibc's thread cache), PyMalloc the global allocator: 98-116 ns
//! per pair with the shared counters, 28-39 ns with these, glibc alone
//! 17-23 ns (docs/performance.md, "Large blocks: counted per heap"). So
//! the counting is split:
//!
//! # Exact figures: each heap's counters
//!
//! A heap counts in [`LargeCounts`] the large blocks its owner allocates
//! and frees, and their bytes: four counters that only the owner writes,
//! with a load and a store (no read-modify-write), as the class counters
//! are kept. `alloc_stats()` sums them over every heap, live or parked,
//! and the registry's `large_orphans` (counted with read-modify-writes by
//! threads that cannot have a heap: during their teardown, or when the OS
//! refuses memory; a thread whose first allocation is large is given its
//! heap then). It reads every heap's losses before any heap's gains,
//! with a fence between, as it does for the classes: a block's free is
//! counted after its allocation (the block passed from one to the other),
//! so every free it sees has its allocation seen too, and the figures
//! never go below zero.
//!
//! # The peak: reserved bytes and credits
//!
//! A high-water mark needs a process-wide total at the moment it is
//! reached, which the per-heap counters cannot give without summing them
//! all. So the registry also keeps `large_reserved`, the bytes of the large
//! blocks in use plus every heap's *credit*: bytes already counted there
//! that none of the heap's blocks use. An allocation (or a `realloc`
//! growth) that fits the heap's credit only spends it; one that does not
//! reserves what is missing plus a fresh [`GRANT`] in one read-modify-write
//! and updates the peak; a free (or a shrink) adds its bytes to the credit
//! and gives back all but [`GRANT`] once the credit passes twice that.
//!
//! Invariant: `large_reserved` = bytes of large blocks in use + the credits
//! of all heaps, each at most `2 * GRANT`. A credit is added to
//! `large_reserved` before it is spent, so the peak (taken of
//! `arena_bytes + large_reserved`) is never below the true high-water mark,
//! and at most the heaps' credits above it. `release_free_memory()` gives
//! the calling thread's credit back; a parked heap keeps its credit for the
//! thread that adopts it.

#[cfg(not(loom))]
use super::heap::add_single_writer;
use super::heap::Heap;
use super::registry::Registry;
use crate::sync::{AtomicUsize, Ordering};

/// Bytes a heap reserves ahead when its credit runs out.
pub(crate) const GRANT: usize = 64 << 10;

/// Large blocks counted by one heap (or, for the registry's orphans, by
/// every thread without a heap).
///
/// Monotonic counters (wrapping): the in-use figures are gains minus
/// losses summed over all heaps, exact whoever frees what. In a heap only
/// the owner writes them (owner capacity, one writer at a time); the
/// registry's orphans are written with read-modify-writes.
pub(crate) struct LargeCounts {
    /// Blocks allocated, ever.
    allocs: AtomicUsize,
    /// Blocks freed, ever, wherever they were allocated.
    frees: AtomicUsize,
    /// Requested bytes of the blocks allocated, plus `realloc` growth.
    bytes_in: AtomicUsize,
    /// Requested bytes of the blocks freed, plus `realloc` shrinkage.
    bytes_out: AtomicUsize,
}

/// A sum of [`LargeCounts`]: blocks and bytes.
#[derive(Clone, Copy, Default)]
pub(crate) struct LargeSum {
    pub(crate) blocks: usize,
    pub(crate) bytes: usize,
}

impl LargeSum {
    /// In use: `gains - losses`, never below zero.
    pub(crate) fn in_use(gains: LargeSum, losses: LargeSum) -> LargeSum {
        let diff = |a: usize, b: usize| (a.wrapping_sub(b) as isize).max(0) as usize;
        LargeSum {
            blocks: diff(gains.blocks, losses.blocks),
            bytes: diff(gains.bytes, losses.bytes),
        }
    }
}

/// `LargeCounts` at zero (a `const fn` for the registry's static, at run
/// time under loom, whose atomics have no `const` constructor).
macro_rules! zero_counts {
    () => {
        LargeCounts {
            allocs: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
            bytes_in: AtomicUsize::new(0),
            bytes_out: AtomicUsize::new(0),
        }
    };
}

impl LargeCounts {
    /// All zero.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> LargeCounts {
        zero_counts!()
    }

    /// All zero.
    #[cfg(loom)]
    pub(crate) fn new() -> LargeCounts {
        zero_counts!()
    }

    /// Adds the losses (frees, bytes out) to `sum`. Acquire: pairs with
    /// the Release stores, so the gains of every block whose loss is seen
    /// are seen by a read of the gains after a fence.
    pub(crate) fn add_losses(&self, sum: &mut LargeSum) {
        sum.blocks = sum.blocks.wrapping_add(self.frees.load(Ordering::Acquire));
        sum.bytes = sum
            .bytes
            .wrapping_add(self.bytes_out.load(Ordering::Acquire));
    }

    /// Adds the gains (allocations, bytes in) to `sum` (see `add_losses`).
    pub(crate) fn add_gains(&self, sum: &mut LargeSum) {
        sum.blocks = sum.blocks.wrapping_add(self.allocs.load(Ordering::Acquire));
        sum.bytes = sum
            .bytes
            .wrapping_add(self.bytes_in.load(Ordering::Acquire));
    }

    /// The block and byte counters of gains (`true`) or of losses.
    #[inline(always)]
    fn side(&self, gained: bool) -> (&AtomicUsize, &AtomicUsize) {
        if gained {
            (&self.allocs, &self.bytes_in)
        } else {
            (&self.frees, &self.bytes_out)
        }
    }

    /// Adds `n` to a counter any thread writes.
    fn add_shared(counter: &AtomicUsize, n: usize) {
        // Release: as in `add_single_writer`; an RMW because writers
        // race here.
        counter.fetch_add(n, Ordering::Release);
    }
}

/// Adds `bytes` to the reservation and moves the peak.
fn reserve(registry: &Registry, bytes: usize) {
    // Relaxed: a statistic; no memory is published through it.
    let total = registry.large_reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
    registry.note_footprint(total + registry.arena_bytes.load(Ordering::Relaxed));
}

/// Takes `bytes` off the reservation, stopping at zero.
///
/// Under `override`, Rust code may free with its layout a large block
/// that C's `malloc` allocated, which nothing counted (C's blocks are not
/// counted: see `large`'s module docs): that free takes off bytes never
/// reserved. Stopping at zero keeps the reservation, and so the peak, a
/// figure rather than a wrapped-around one (the in-use sums stop at zero
/// the same way, `LargeSum::in_use`), at the price of exactness after
/// such hand-overs (docs/override.md).
fn unreserve(registry: &Registry, bytes: usize) {
    if bytes > 0 {
        // Relaxed: a statistic, as in `reserve`; a read-modify-write loop
        // because the subtraction must not pass zero (taken only when a
        // heap gives back credit, not per block).
        let _ = registry
            .large_reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(bytes))
            });
    }
}

/// `bytes` more are used by the calling thread's large blocks: spent from
/// its heap's credit, or reserved with a fresh grant.
#[inline(always)]
fn gain(registry: &Registry, heap: &Heap, bytes: usize) {
    let credit = heap.large_credit.get();
    if bytes <= credit {
        heap.large_credit.set(credit - bytes);
    } else {
        reserve(registry, bytes - credit + GRANT);
        heap.large_credit.set(GRANT);
    }
}

/// `bytes` fewer are used: added to the heap's credit, all but a grant
/// given back once it passes two.
#[inline(always)]
fn lose(registry: &Registry, heap: &Heap, bytes: usize) {
    let credit = heap.large_credit.get() + bytes;
    if credit > 2 * GRANT {
        unreserve(registry, credit - GRANT);
        heap.large_credit.set(GRANT);
    } else {
        heap.large_credit.set(credit);
    }
}

/// The calling thread's heap, bound now if it had none (a thread whose
/// first allocations are large counts in its own heap too, not in the
/// shared orphan counters); `None` only during the thread's teardown or
/// when the OS refuses memory.
#[cfg(not(loom))]
#[inline(always)]
fn own_heap() -> Option<&'static Heap> {
    // SAFETY: a heap bound to the calling thread is owned by it (only the
    // owner writes its large counters and credit) and never unmapped.
    unsafe { super::thread::bind_for_free().as_ref() }
}

/// Counts a change in the calling thread's large blocks: `blocks` more or
/// fewer blocks (1 for an allocation or a free, 0 for a `realloc`) and
/// `bytes` more (`gained`) or fewer.
#[cfg(not(loom))]
#[inline(always)]
fn count(registry: &Registry, gained: bool, blocks: usize, bytes: usize) {
    match own_heap() {
        Some(heap) => {
            let (n, b) = heap.large.side(gained);
            if blocks != 0 {
                add_single_writer(n, blocks);
            }
            add_single_writer(b, bytes);
            if gained {
                gain(registry, heap, bytes);
            } else {
                lose(registry, heap, bytes);
            }
        }
        None => {
            let (n, b) = registry.large_orphans.side(gained);
            if blocks != 0 {
                LargeCounts::add_shared(n, blocks);
            }
            LargeCounts::add_shared(b, bytes);
            if gained {
                reserve(registry, bytes);
            } else {
                unreserve(registry, bytes);
            }
        }
    }
}

/// Counts a large block of `size` requested bytes just allocated.
#[cfg(not(loom))]
#[inline]
pub(crate) fn note_alloc(registry: &Registry, size: usize) {
    count(registry, true, 1, size);
}

/// Counts a large block of `size` requested bytes about to be freed.
#[cfg(not(loom))]
#[inline]
pub(crate) fn note_free(registry: &Registry, size: usize) {
    count(registry, false, 1, size);
}

/// Counts a large block resized from `old` to `new` requested bytes by
/// `realloc` (the block count does not change).
#[cfg(not(loom))]
#[inline]
pub(crate) fn note_resize(registry: &Registry, old: usize, new: usize) {
    if new >= old {
        count(registry, true, 0, new - old);
    } else {
        count(registry, false, 0, old - new);
    }
}

/// Gives the calling thread's credit back to the reservation, so that the
/// peak measured from now on is the true one to within the other heaps'
/// credits.
#[cfg(not(loom))]
pub(crate) fn give_back_current(registry: &Registry) {
    if let Some(heap) = own_heap() {
        unreserve(registry, heap.large_credit.replace(0));
    }
}
