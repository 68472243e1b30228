//! `PyMalloc`: CPython's small-object allocator, one heap per thread.
//!
//! # Arenas, pools and blocks
//!
//! Requests of at most [`SMALL_REQUEST_THRESHOLD`] (512) bytes are rounded
//! up to a multiple of 16 and served from the matching *size class*. Memory
//! comes from the OS in *arenas* of 1 MiB, each cut into 64 *pools* of
//! 16 KiB; a pool serves one size class and is cut into equal *blocks*.
//!
//! ```text
//!  arena (1 MiB, aligned to 1 MiB, mmap'd)
//! +--------+--------+--------+--------+-- ... --+--------+
//! | arena  | pool   | pool   | pool   |         | pool   |
//! | header | 32 B   | 512 B  | (free) |         | 32 B   |
//! +--------+--------+--------+--------+-- ... --+--------+
//!              |
//!              v  pool (16 KiB, aligned to 16 KiB)
//!          +--------+-------+-------+-------+-----+-------+-----------+
//!          | header | block | block | block | ... | block | untouched |
//!          +--------+-------+-------+-------+-----+-------+-----------+
//!            owner, free list, remote list, class, counts
//! ```
//!
//! Arenas and pools are aligned to their own size, so the pool of any block
//! is `addr & !(POOL_SIZE - 1)` and its arena `addr & !(ARENA_SIZE - 1)`:
//! no per-object header, and no lookup. Because `dealloc` is given the
//! layout, the choice between pool and system allocator is recomputed from
//! it (CPython needs `address_in_range` for that; Rust callers tell us).
//!
//! # Threads
//!
//! Every thread allocates from its own *heap*: for each class a list of
//! pools with free blocks, the arenas those pools come from, and counters.
//! The fast paths are CPython's, with no atomic read-modify-write:
//!
//! * `alloc`: pop the first block of the current pool of the class;
//! * `dealloc` by the owning thread: push the block on its pool's list.
//!
//! A block freed by another thread goes on the pool's atomic *remote* list
//! (mimalloc's `thread_free`); the first such free also pushes the pool on
//! the owner's *pending* list, which the owner drains whenever its fast
//! path runs dry. When a thread exits, its heap is *parked* with its pools,
//! live blocks included; the next thread to start adopts it, and threads
//! freeing into a parked heap collect it from time to time, so memory does
//! not grow with the number of threads a program creates. There is no lock
//! anywhere, which also makes `fork` safe: the child can always allocate.
//!
//! # Sizes, and returning memory
//!
//! 16 KiB pools and 1 MiB arenas are CPython 3.12's choice on 64-bit and
//! ours: with 16 KiB pools no class loses a block to the pool header
//! (`size_class` tests this), per-pool overheads are paid a quarter as often
//! as with 4 KiB pools, and a pool is carved one OS page at a time, so its
//! untouched pages never become resident. Larger arenas would make it
//! rarer for an arena to empty completely and go back to the OS.
//!
//! Empty pools go back to their arena at once (except the last pool of a
//! class, kept to avoid churn at a pool boundary). Pools are taken from the
//! fullest arena first (CPython's `usable_arenas` order) so lightly used
//! arenas drain; an arena whose pools are all free is unmapped with
//! `munmap`, keeping one spare per heap (CPython's hysteresis).
//! [`release_free_memory`] returns the spares too.
//!
//! # Alignment
//!
//! Blocks are aligned to the largest power of two dividing their size, so a
//! small request with an alignment above 16 is served from a class that is
//! a multiple of that alignment; alignments above 512 go to the system
//! allocator.
//!
//! # Misuse
//!
//! In debug builds (and with the `debug` feature), `dealloc` checks that the
//! pointer is the start of a block of a live pool and that the layout fits
//! it, and catches double frees, aborting with a message on stderr.

mod arena;
mod debug;
mod heap;
mod large;
mod os;
mod pool;
mod registry;
mod size_class;
mod stats;
#[cfg(not(loom))]
mod thread;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use pool::Pool;
use registry::Registry;
use size_class::route;

pub use size_class::SMALL_REQUEST_THRESHOLD;
pub use stats::{alloc_stats, AllocStats, ClassStats};

/// The process-wide registry of heaps and counters.
#[cfg(not(loom))]
static REGISTRY: Registry = Registry::new();

/// CPython's `pymalloc` as a Rust global allocator.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
///
/// # fn main() {
/// let names: Vec<String> = (0..1000).map(|i| format!("object {i}")).collect();
/// assert_eq!(names[999], "object 999");
/// assert!(pymem::alloc_stats().small_blocks_in_use >= 1000);
/// # }
/// ```
///
/// It can also be driven directly, beside another allocator:
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(48, 8).unwrap();
/// unsafe {
///     let p = pymem::PyMalloc.alloc(layout);
///     assert!(!p.is_null());
///     p.write_bytes(0xAB, 48);
///     pymem::PyMalloc.dealloc(p, layout);
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PyMalloc;

#[cfg(not(loom))]
impl PyMalloc {
    #[inline(always)]
    unsafe fn alloc_small(class: usize) -> *mut u8 {
        let heap = thread::current_heap();
        if !heap.is_null() {
            // SAFETY: a thread's bound heap is owned by it; `route` returned
            // a valid class.
            return unsafe { (*heap).alloc(class) };
        }
        thread::alloc_unbound(class)
    }

    #[inline(always)]
    unsafe fn dealloc_small(ptr: *mut u8, layout: Layout, class: usize) {
        let pool = Pool::of(ptr);
        let heap = thread::current_heap();
        // SAFETY: `ptr` is a live block (GlobalAlloc contract), so its pool
        // header is live and its owner never changes while it is.
        let owned = unsafe { (*pool).owner.load(crate::sync::Ordering::Relaxed) } == heap;
        if debug::CHECKS {
            debug::check_small(ptr, layout, class, owned, "dealloc");
            debug::tag_freed(ptr);
        }
        // SAFETY: as above; the owner check picks the path that may touch
        // the pool's owner-only fields.
        unsafe {
            if owned {
                (*heap).free_local(pool, ptr);
            } else {
                thread::free_remote(heap, pool, ptr);
            }
        }
    }
}

// SAFETY: every block handed out is a distinct, live range of at least
// `layout.size()` bytes aligned to `layout.align()` (see `size_class`), and
// is not handed out again until freed; large requests are System's.
#[cfg(not(loom))]
unsafe impl GlobalAlloc for PyMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            // SAFETY: a valid class.
            Some(class) => unsafe { Self::alloc_small(class) },
            // SAFETY: forwarded caller contract.
            None => unsafe { large::alloc(&REGISTRY, layout, false) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match route(layout.size(), layout.align()) {
            // SAFETY: the same layout routed the allocation here.
            Some(class) => unsafe { Self::dealloc_small(ptr, layout, class) },
            // SAFETY: the same layout routed the allocation to System.
            None => unsafe { large::dealloc(&REGISTRY, ptr, layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            Some(class) => {
                // SAFETY: a valid class.
                let ptr = unsafe { Self::alloc_small(class) };
                if !ptr.is_null() {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { ptr.write_bytes(0, layout.size()) };
                }
                ptr
            }
            // SAFETY: forwarded caller contract.
            None => unsafe { large::alloc(&REGISTRY, layout, true) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let old_class = route(layout.size(), align);
        let new_class = route(new_size, align);
        match (old_class, new_class) {
            (Some(class), Some(new_class)) => {
                if debug::CHECKS {
                    debug::check_small(ptr, layout, class, false, "realloc");
                }
                // SAFETY: a live block's pool header is live.
                let (block, pool_class) =
                    unsafe { ((*Pool::of(ptr)).block_size(), (*Pool::of(ptr)).class()) };
                // Stay in place while the block is big enough and would not
                // shrink by more than a quarter (CPython's rule), or when the
                // new size maps to the same class anyway.
                if new_size <= block && (new_class == pool_class || new_size * 4 >= block * 3) {
                    return ptr;
                }
            }
            // SAFETY: forwarded caller contract; both sizes are System's.
            (None, None) => return unsafe { large::realloc(&REGISTRY, ptr, layout, new_size) },
            _ => {}
        }
        // SAFETY: `align` is a valid alignment and the caller guarantees
        // `new_size` does not overflow when rounded up to it.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a valid layout of non-zero size (caller contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct and hold the bytes
            // copied; the old one is freed with the layout it was given.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Returns memory that PyMalloc holds but does not use to the OS, and
/// reports how many bytes were released.
///
/// Collects the blocks other threads freed into the calling thread's pools,
/// gives back the empty pool it keeps per size class, and unmaps every empty
/// arena, including the spare kept for hysteresis; then does the same for
/// the heaps of exited threads. Heaps of other live threads are left to
/// their owners, which return empty arenas as they go.
///
/// ```
/// let boxes: Vec<Box<[u8; 64]>> = (0..100_000).map(|_| Box::new([1; 64])).collect();
/// drop(boxes);
/// let released = pymem::release_free_memory();
/// println!("released {released} bytes");
/// ```
#[cfg(not(loom))]
pub fn release_free_memory() -> usize {
    thread::trim_current() + REGISTRY.trim_parked()
}

/// Internals exposed for the loom model checks in `loom-tests/`.
#[cfg(loom)]
#[doc(hidden)]
pub mod model {
    pub use super::heap::{free_remote, Heap, HeapState};
    pub use super::pool::Pool;
    pub use super::registry::Registry;
    pub use super::stats::snapshot;
}
