//! The registry: every heap ever created, and the process-wide counters
//! that are not on any fast path (arenas, large allocations, peak).
//!
//! Heaps are only ever added (a lock-free push), never removed, so walking
//! the list needs no lock and is safe at any time, including in a child
//! process after `fork`. There is no lock anywhere in the allocator.

use core::ptr;

use super::heap::{Heap, HeapState};
use super::size_class::{ARENA_SIZE, NB_CLASSES};
use crate::sync::{AtomicPtr, AtomicUsize, CasStart, Ordering};

/// A `Registry` with every counter at zero; `orphans` builds the per-class
/// array (in a `const fn` for the static, at run time under loom).
macro_rules! empty_registry {
    ($orphans:expr) => {
        Registry {
            heaps: AtomicPtr::new(ptr::null_mut()),
            arena_bytes: AtomicUsize::new(0),
            arenas_allocated_total: AtomicUsize::new(0),
            arenas_freed_total: AtomicUsize::new(0),
            arenas_highwater: AtomicUsize::new(0),
            large_allocs: AtomicUsize::new(0),
            large_bytes: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
            orphan_frees: $orphans,
        }
    };
}

/// Process-wide allocator state.
pub(crate) struct Registry {
    heaps: AtomicPtr<Heap>,
    /// Bytes of arenas mapped now.
    pub(crate) arena_bytes: AtomicUsize,
    pub(crate) arenas_allocated_total: AtomicUsize,
    pub(crate) arenas_freed_total: AtomicUsize,
    /// Most arenas mapped at once.
    pub(crate) arenas_highwater: AtomicUsize,
    pub(crate) large_allocs: AtomicUsize,
    pub(crate) large_bytes: AtomicUsize,
    /// High-water mark of `arena_bytes + large_bytes`.
    pub(crate) peak_bytes: AtomicUsize,
    /// Frees by threads that have no heap (during thread teardown).
    pub(crate) orphan_frees: [AtomicUsize; NB_CLASSES],
}

impl Registry {
    /// An empty registry (for the process-wide static).
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Registry {
        empty_registry!([const { AtomicUsize::new(0) }; NB_CLASSES])
    }

    /// An empty registry (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub(crate) fn new() -> Registry {
        empty_registry!(core::array::from_fn(|_| AtomicUsize::new(0)))
    }

    /// Walks every heap ever created.
    pub(crate) fn for_each_heap(&self, mut f: impl FnMut(&Heap)) {
        let mut heap = self.heaps.load(Ordering::Acquire);
        while !heap.is_null() {
            // SAFETY: heaps are never unmapped; the Acquire loads pair with
            // the Release publication in `create_heap`.
            let h = unsafe { &*heap };
            f(h);
            heap = h.next_heap.load(Ordering::Acquire);
        }
    }

    /// A heap for a thread to use as `to` (Owned or Busy): a parked one if
    /// there is one, else a new one. Null only when the OS refuses memory.
    pub(crate) fn claim_heap(&self, to: HeapState) -> *mut Heap {
        let mut heap = self.heaps.load(Ordering::Acquire);
        while !heap.is_null() {
            // SAFETY: as in `for_each_heap`.
            let h = unsafe { &*heap };
            if h.try_claim(to) {
                // SAFETY: claimed just now.
                unsafe { h.collect_pending() };
                return heap;
            }
            heap = h.next_heap.load(Ordering::Acquire);
        }
        self.create_heap(to)
    }

    fn create_heap(&self, state: HeapState) -> *mut Heap {
        let heap = Heap::create(self, state);
        if heap.is_null() {
            return heap;
        }
        let mut head = self.heaps.load_for_cas();
        loop {
            // SAFETY: the heap is not published yet; only we see it.
            unsafe { (*heap).next_heap.store(head, Ordering::Relaxed) };
            match self
                .heaps
                .compare_exchange_weak(head, heap, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return heap,
                Err(now) => head = now,
            }
        }
    }

    /// Claims every parked heap in turn and trims it. Returns bytes unmapped.
    pub(crate) fn trim_parked(&self) -> usize {
        let mut released = 0;
        self.for_each_heap(|heap| {
            if heap.try_claim(HeapState::Busy) {
                // SAFETY: claimed just now; parked again right after.
                unsafe {
                    released += heap.trim();
                    heap.park();
                }
            }
        });
        released
    }

    pub(crate) fn arena_mapped(&self, base: *mut u8) {
        self.arenas_allocated_total.fetch_add(1, Ordering::Relaxed);
        let bytes = self.arena_bytes.fetch_add(ARENA_SIZE, Ordering::Relaxed) + ARENA_SIZE;
        self.arenas_highwater
            .fetch_max(bytes / ARENA_SIZE, Ordering::Relaxed);
        self.note_footprint(bytes + self.large_bytes.load(Ordering::Relaxed));
        super::arena_bitmap::insert(base);
    }

    pub(crate) fn arena_unmapped(&self, base: *mut u8) {
        super::arena_bitmap::remove(base);
        self.arenas_freed_total.fetch_add(1, Ordering::Relaxed);
        self.arena_bytes.fetch_sub(ARENA_SIZE, Ordering::Relaxed);
    }

    pub(crate) fn note_footprint(&self, bytes: usize) {
        // A plain load first: the peak rarely moves, and `fetch_max` is a
        // compare-and-swap loop that writes the shared line every time.
        if bytes > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_orphan_free(&self, class: usize) {
        self.orphan_frees[class].fetch_add(1, Ordering::Release);
    }
}
