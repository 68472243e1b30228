//! A facade over the allocator's internals for the loom model checks in
//! `loom-tests/`: the same heaps, pools, registry, free dispatch and
//! passes the global allocator uses, driven explicitly instead of through
//! thread-locals (loom cannot run a global allocator). Every operation
//! here is one call into the code `GlobalAlloc` runs; nothing is copied.
//! Compiled only with `--cfg loom`.
#![allow(missing_docs, clippy::missing_safety_doc)]

use super::heap::Heap;
use super::purge::{self, PassKind};
use super::size_class::{ARENA_SIZE, NB_CLASSES};
use super::{free, os, registry, stats, AllocStats};

/// A registry of heaps private to one model execution.
pub struct Registry(registry::Registry);

/// A heap claimed by a model thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeapRef(*mut Heap);

// SAFETY: a heap is handed between model threads only through the claim
// and park protocol that the models exercise.
unsafe impl Send for HeapRef {}
// SAFETY: sharing a `HeapRef` shares only the pointer; every method that
// dereferences it is `unsafe` and requires the calling thread to own the
// heap, which the claim and park protocol gives to one thread at a time.
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

    /// A heap for a live thread: a parked one if any, else a new one
    /// (what a thread's first allocation does).
    pub fn claim(&self) -> HeapRef {
        HeapRef(self.0.claim_heap())
    }

    pub fn stats(&self) -> AllocStats {
        stats::snapshot(&self.0)
    }

    /// `release_free_memory()` called by a thread whose heap is `me` (or
    /// that has none): returns the bytes unmapped.
    ///
    /// # Safety
    /// The calling thread must own `me`.
    pub unsafe fn release(&self, me: Option<HeapRef>) -> usize {
        // SAFETY: the caller owns `me`, so the heap is live (a claimed heap
        // is never unmapped) and this thread may use its owner paths.
        let me = me.map(|h| unsafe { &*h.0 });
        // SAFETY: the calling thread owns `me` (this function's `# Safety`),
        // which is what `pass` requires of its heap.
        unsafe { purge::pass(&self.0, me, PassKind::Everything) }
    }

    /// A background-purge round (arenas retired for any time go back: the
    /// model clock stands still at 0).
    pub fn background_round(&self) -> usize {
        // SAFETY: with `me` = `None`, `pass` requires nothing.
        unsafe { purge::pass(&self.0, None, PassKind::OlderThan(1)) }
    }

    /// An allocation by a thread that has no heap (thread teardown).
    ///
    /// # Panics
    /// If `class` is not a size class (`alloc_elsewhere` indexes the
    /// class table unchecked: its callers in the allocator pass classes
    /// from `route`).
    pub fn alloc_without_heap(&self, class: usize) -> *mut u8 {
        assert!(class < NB_CLASSES, "no size class {class}");
        self.0.alloc_elsewhere(class)
    }

    pub fn heaps(&self) -> usize {
        self.0.heaps().count()
    }

    /// Unmaps every arena and heap. Call once, after every model thread has
    /// finished, so a model leaves no memory behind.
    ///
    /// # Safety
    /// Nothing may use the registry's memory afterwards.
    pub unsafe fn release_all(&self) {
        let heaps: Vec<*mut Heap> = self.0.heaps().map(Heap::as_mut_ptr).collect();
        for heap in heaps {
            let mut arenas = Vec::new();
            // SAFETY: `release_all` runs after every model thread finished,
            // so no thread uses the heap and its arena list is stable.
            unsafe { (*heap).for_each_arena(|a| arenas.push(a as *const _ as *mut u8)) };
            for arena in arenas {
                // SAFETY: each arena is an `ARENA_SIZE` mapping from
                // `map_aligned` listed by exactly one heap, and nothing uses
                // the registry's memory after `release_all`.
                unsafe { os::unmap(arena, ARENA_SIZE) };
            }
            // SAFETY: the heap is a `MAPPING_SIZE` mapping from
            // `map_aligned`; its arenas were unmapped above and no thread
            // refers to it any more.
            unsafe { os::unmap(heap.cast(), Heap::MAPPING_SIZE) };
        }
    }
}

impl HeapRef {
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// # Safety
    /// The calling thread must own this heap.
    pub unsafe fn alloc(self, class: usize) -> *mut u8 {
        // SAFETY: the calling thread owns the heap, and only the owner
        // runs `Heap::alloc`.
        unsafe { (*self.0).alloc(class) }
    }

    /// Frees a block through the one free dispatch `PyMalloc::dealloc`
    /// uses: locally if this heap owns its pool, through the outbox
    /// otherwise.
    ///
    /// # Safety
    /// The calling thread must own this heap; `block` must be live.
    pub unsafe fn free(self, block: *mut u8) {
        // SAFETY: `free_block` needs `self.0` to be the calling thread's
        // heap and `block` a live pool block: both are this function's
        // requirements.
        unsafe { free::free_block(self.0, block) }
    }

    /// The owner's tick (what every 4,096th operation of a class runs).
    ///
    /// # Safety
    /// The calling thread must own this heap.
    pub unsafe fn tick(self) {
        // SAFETY: the calling thread owns the heap; `tick` is an owner path.
        unsafe { (*self.0).tick() }
    }

    /// The owner's slow-path collection of remote frees.
    ///
    /// # Safety
    /// The calling thread must own this heap.
    pub unsafe fn collect(self) {
        // SAFETY: the calling thread owns the heap, which `lock_as_owner`
        // requires.
        if let Some(locked) = unsafe { (*self.0).lock_as_owner() } {
            // SAFETY: the owner holds the heap's lock (`locked`), which
            // `collect_pending` requires.
            unsafe { (*self.0).collect_pending(&locked) };
            locked.finish();
        }
    }

    /// The thread exits.
    ///
    /// # Safety
    /// The calling thread must own this heap and gives it up.
    pub unsafe fn park(self) {
        // SAFETY: the calling thread owns the heap and gives it up here,
        // as `park` requires.
        assert!(unsafe { (*self.0).park() }, "the heap's lock was lost");
    }

    /// Caches a large block of the cache's class `class` (what the large
    /// path's `dealloc` does); false if there was no room or the cache's
    /// lock was busy.
    ///
    /// # Safety
    /// The calling thread must own this heap; `block` must be a block of
    /// `std::alloc::System` of `large_class_size(class)` bytes aligned to
    /// 16, which the caller gives up.
    pub unsafe fn large_put(self, class: usize, block: *mut u8) -> bool {
        // SAFETY: the heap is live (owned by the caller); `block` is as
        // `put` asks (this function's `# Safety`: under loom the system
        // allocator is `System`).
        unsafe { (*self.0).large_cache.put(class, block) }
    }

    /// Takes a cached large block of `class` (what the large path's
    /// `alloc` does), or null.
    ///
    /// # Safety
    /// The calling thread must own this heap.
    pub unsafe fn large_take(self, class: usize) -> *mut u8 {
        // SAFETY: the heap is live (owned by the caller).
        unsafe { (*self.0).large_cache.take_up_to(class, class) }
    }

    /// Blocks of this heap's outbox (what it freed remotely and has not
    /// delivered), for assertions.
    ///
    /// # Safety
    /// The calling thread must own this heap.
    pub unsafe fn outbox_holds(self) -> u32 {
        // SAFETY: the outbox is written only by its heap's owner, the
        // calling thread.
        unsafe { (*self.0).outbox.held_by_owner() }
    }
}

/// The size class `PyMalloc` serves a request of `size` bytes aligned to
/// `align` from, or `None` for the system allocator.
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    super::size_class::route(size, align)
}

/// The size of the blocks of the large-block cache's class `class`.
pub fn large_class_size(class: usize) -> usize {
    super::large_cache::class_size(class)
}

/// Frees a block from a thread that has no heap (thread teardown).
///
/// # Safety
/// `block` must be live.
pub unsafe fn free_without_heap(block: *mut u8) {
    // SAFETY: `block` is live; a null heap sends it down the path for a
    // thread without a heap, which needs nothing else.
    unsafe { free::free_block(core::ptr::null_mut(), block) }
}

/// Blocks in use in `block`'s pool, as its owner sees them.
///
/// # Safety
/// The calling thread must own the pool's heap.
pub unsafe fn pool_used(block: *mut u8) -> u32 {
    // SAFETY: `block` lies in a live pool (its header is at the masked
    // address), and `used` is written only by the pool's owner, the
    // calling thread.
    unsafe { (*super::pool::Pool::of(block)).used.get() }
}
