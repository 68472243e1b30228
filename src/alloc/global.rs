//! The `GlobalAlloc` front end: routing by layout, the thread's heap, and
//! the process-wide registry.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use super::pool::Pool;
use super::purge::{self, PassKind};
use super::registry::Registry;
use super::size_class::{self, route};
use super::{asan, debug, free, hooks, large, thread, PyMalloc};
use crate::sync::Ordering;

/// The process-wide registry of heaps and counters.
pub(crate) static REGISTRY: Registry = Registry::new();

impl PyMalloc {
    #[inline(always)]
    unsafe fn alloc_small(class: usize, size: usize) -> *mut u8 {
        let heap = thread::current_heap();
        let block = if !heap.is_null() {
            // SAFETY: a thread's bound heap is owned by it; `route` returned
            // a valid class.
            unsafe { (*heap).alloc(class) }
        } else {
            thread::alloc_unbound(class)
        };
        asan::unpoison_block(block, size);
        block
    }

    #[inline(always)]
    unsafe fn dealloc_small(ptr: *mut u8, layout: Layout, class: usize) {
        let heap = thread::current_heap();
        if debug::CHECKS {
            // SAFETY: `ptr` is a live block (GlobalAlloc contract), so its
            // pool header is live and its owner fixed while it is.
            let owned = unsafe { (*Pool::of(ptr)).owner(Ordering::Relaxed).0 } == heap;
            debug::check_small(ptr, layout, class, owned, "dealloc");
            debug::tag_freed(ptr);
        }
        // SAFETY: a live small block, freed by the caller; `heap` is ours.
        unsafe { free::free_block(heap, ptr) }
    }
}

impl PyMalloc {
    /// Every allocation the inlined fast path does not take.
    #[inline(never)]
    unsafe fn alloc_general(layout: Layout) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: forwarded caller contract.
            return unsafe { hooks::alloc(layout, false) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::raw_alloc(layout) }
    }

    /// Every free the inlined fast path does not take.
    #[inline(never)]
    unsafe fn dealloc_general(ptr: *mut u8, layout: Layout) {
        if hooks::enabled() {
            // SAFETY: forwarded caller contract.
            return unsafe { hooks::dealloc(ptr, layout) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::raw_dealloc(ptr, layout) }
    }
}

/// The allocator proper, without the debug hooks. The hooks call these with
/// the layout of a block that has room for their guards.
impl PyMalloc {
    #[inline(always)]
    pub(super) unsafe fn raw_alloc(layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            // SAFETY: a valid class.
            Some(class) => unsafe { Self::alloc_small(class, layout.size()) },
            // SAFETY: forwarded caller contract.
            None => unsafe { large::alloc(&REGISTRY, layout, false) },
        }
    }

    #[inline(always)]
    pub(super) unsafe fn raw_dealloc(ptr: *mut u8, layout: Layout) {
        match route(layout.size(), layout.align()) {
            // SAFETY: the same layout routed the allocation here.
            Some(class) => unsafe { Self::dealloc_small(ptr, layout, class) },
            // SAFETY: the same layout routed the allocation to System.
            None => unsafe { large::dealloc(&REGISTRY, ptr, layout) },
        }
    }

    #[inline]
    pub(super) unsafe fn raw_alloc_zeroed(layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            Some(class) => {
                // SAFETY: a valid class.
                let ptr = unsafe { Self::alloc_small(class, layout.size()) };
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

    pub(super) unsafe fn raw_realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
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
                // (Under AddressSanitizer blocks always move, so the
                // unpoisoned bytes stay exactly those requested.)
                if new_size <= block
                    && (new_class == pool_class || new_size * 4 >= block * 3)
                    && asan::REDZONE == 0
                {
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
        let new = unsafe { Self::raw_alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct and hold the bytes
            // copied; the old one is freed with the layout it was given.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                Self::raw_dealloc(ptr, layout);
            }
        }
        new
    }
}

// SAFETY: every block handed out is a distinct, live range of at least
// `layout.size()` bytes aligned to `layout.align()` (see `size_class`), and
// is not handed out again until freed; large requests are System's. The
// debug hooks hand out the middle of a larger such block.
unsafe impl GlobalAlloc for PyMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The fast path: no hooks, a default-aligned small request, a bound
        // heap. Everything else leaves by a tail call, so this path saves
        // no registers.
        if hooks::known_off() && !debug::CHECKS {
            if let Some(class) = size_class::route_fast(layout.size(), layout.align()) {
                let heap = thread::current_heap();
                if !heap.is_null() {
                    // SAFETY: a thread's bound heap is owned by it; a valid
                    // class.
                    let block = unsafe { (*heap).alloc(class) };
                    asan::unpoison_block(block, layout.size());
                    return block;
                }
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::alloc_general(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The fast path: no hooks, a default-aligned small block. The free
        // dispatch pushes it on its pool's free list inline if this thread
        // owns the pool, and calls out for everything else.
        if hooks::known_off()
            && !debug::CHECKS
            && size_class::route_fast(layout.size(), layout.align()).is_some()
        {
            // SAFETY: a live small block (GlobalAlloc contract: the same
            // layout routed its allocation to a pool), freed by the caller.
            return unsafe { free::free_block(thread::current_heap(), ptr) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::dealloc_general(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: forwarded caller contract.
            return unsafe { hooks::alloc(layout, true) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::raw_alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: forwarded caller contract.
            return unsafe { hooks::realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { Self::raw_realloc(ptr, layout, new_size) }
    }
}

/// Returns memory that PyMalloc holds but does not use to the OS, from
/// every thread's heap, and reports how many bytes were released.
///
/// Delivers the blocks that threads freed into other threads' pools and
/// still hold in their outboxes (also those of threads that are alive but
/// idle), takes them back into their pools, gives back the empty pools and
/// unmaps every empty arena: the calling thread's (including the pool it
/// keeps per size class and its retained arenas), those of the heaps of
/// exited threads, and those of other live threads (all but the pools they
/// are allocating from, which only their owner touches).
///
/// A thread's heap is handed back by its exit hook, which runs as the
/// thread finishes, possibly after `std::thread::scope` has already
/// returned; `join` a thread to be sure its heap is parked.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
///
/// # fn main() {
/// let boxes: Vec<Box<[u8; 64]>> = (0..100_000).map(|_| Box::new([1; 64])).collect();
/// drop(boxes);
/// let released = pymem::release_free_memory();
/// assert!(released >= 5 << 20, "the 6.4 MB the boxes took came back");
/// # }
/// ```
pub fn release_free_memory() -> usize {
    purge::start_from_environment();
    let me = thread::current_heap();
    // SAFETY: the calling thread owns its bound heap; heaps are never
    // unmapped.
    let me = unsafe { me.as_ref() };
    purge::pass(&REGISTRY, me, PassKind::Everything)
}
