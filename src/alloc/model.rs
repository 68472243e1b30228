//! A facade over the allocator's internals for the loom model checks in
//! `loom-tests/`: the same heaps, pools and registry the global allocator
//! uses, driven explicitly instead of through thread-locals (loom cannot
//! run a global allocator). Compiled only with `--cfg loom`.
#![allow(missing_docs, clippy::missing_safety_doc)]

use super::heap::{self, Heap, HeapState};
use super::pool::Pool;
use super::size_class::ARENA_SIZE;
use super::{os, registry, stats, AllocStats};
use crate::sync::Ordering;

/// A registry of heaps private to one model execution.
pub struct Registry(registry::Registry);

/// A heap claimed by a model thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeapRef(*mut Heap);

// SAFETY: a heap is handed between model threads only through the claim
// and park protocol that the models exercise.
unsafe impl Send for HeapRef {}
// SAFETY: as above.
unsafe impl Sync for HeapRef {}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry(registry::Registry::new())
    }

    /// A heap for a live thread: a parked one if any, else a new one.
    pub fn claim_owned(&self) -> HeapRef {
        HeapRef(self.0.claim_heap(HeapState::Owned))
    }

    /// A heap borrowed for one operation (thread teardown).
    pub fn claim_busy(&self) -> HeapRef {
        HeapRef(self.0.claim_heap(HeapState::Busy))
    }

    pub fn stats(&self) -> AllocStats {
        stats::snapshot(&self.0)
    }

    /// Trims every parked heap; bytes unmapped.
    pub fn trim_parked(&self) -> usize {
        self.0.trim_parked()
    }

    pub fn heaps(&self) -> usize {
        let mut n = 0;
        self.0.for_each_heap(|_| n += 1);
        n
    }

    /// Unmaps every arena and heap. Call once, after every model thread has
    /// finished, so a model leaves no memory behind.
    ///
    /// # Safety
    /// Nothing may use the registry's memory afterwards.
    pub unsafe fn release_all(&self) {
        let mut heaps = Vec::new();
        self.0
            .for_each_heap(|h| heaps.push(h as *const Heap as *mut Heap));
        for heap in heaps {
            let mut arenas = Vec::new();
            // SAFETY: no thread uses the heap any more (caller contract).
            unsafe { (*heap).for_each_arena(|a| arenas.push(a as *const _ as *mut u8)) };
            for arena in arenas {
                // SAFETY: as above.
                unsafe { os::unmap(arena, ARENA_SIZE) };
            }
            // SAFETY: as above.
            unsafe { os::unmap(heap.cast(), Heap::MAPPING_SIZE) };
        }
    }
}

impl HeapRef {
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// # Safety
    /// The calling thread must have claimed this heap.
    pub unsafe fn alloc(self, class: usize) -> *mut u8 {
        // SAFETY: caller contract.
        unsafe { (*self.0).alloc(class) }
    }

    /// Frees a block as `PyMalloc::dealloc` does: locally if this heap owns
    /// its pool, remotely otherwise.
    ///
    /// # Safety
    /// The calling thread must have claimed this heap; `block` must be live.
    pub unsafe fn free(self, block: *mut u8) {
        let pool = Pool::of(block);
        // SAFETY: caller contract.
        unsafe {
            if (*pool).owner.load(Ordering::Relaxed) == self.0 {
                (*self.0).free_local(pool, block);
            } else {
                heap::free_remote(self.0, pool, block);
            }
        }
    }

    /// # Safety
    /// The calling thread must have claimed this heap.
    pub unsafe fn collect(self) {
        // SAFETY: caller contract.
        unsafe { (*self.0).collect_pending() }
    }

    /// # Safety
    /// The calling thread must have claimed this heap and gives it up.
    pub unsafe fn park(self) {
        // SAFETY: caller contract.
        unsafe { (*self.0).park() }
    }

    /// # Safety
    /// The calling thread must have claimed this heap.
    pub unsafe fn trim(self) -> usize {
        // SAFETY: caller contract.
        unsafe { (*self.0).trim() }
    }
}

/// The size class `PyMalloc` serves a request of `size` bytes aligned to
/// `align` from, or `None` for the system allocator.
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    super::size_class::route(size, align)
}

/// Frees a block from a thread that has no heap (thread teardown).
///
/// # Safety
/// `block` must be live.
pub unsafe fn free_without_heap(block: *mut u8) {
    // SAFETY: caller contract.
    unsafe { heap::free_remote(core::ptr::null_mut(), Pool::of(block), block) }
}

/// Blocks handed out from `block`'s pool, as its owner sees them.
///
/// # Safety
/// The calling thread must own the pool's heap.
pub unsafe fn pool_used(block: *mut u8) -> u32 {
    // SAFETY: caller contract.
    unsafe { (*Pool::of(block)).used.get() }
}
