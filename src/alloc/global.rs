//! The `GlobalAlloc` front end: routing by layout, the thread's heap, and
//! the process-wide registry.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use super::pool::Pool;
use super::purge::{self, PassKind};
use super::registry::Registry;
use super::size_class::{self, route, SMALL_REQUEST_THRESHOLD};
use super::{
    asan, debug, free, heap_slot, hooks, large, large_cache, large_count, thread, PyMalloc,
};
use crate::sync::Ordering;

/// The process-wide registry of heaps and counters.
pub(crate) static REGISTRY: Registry = Registry::new();

impl PyMalloc {
    /// Allocates a block of `class` (small, or medium for C's `malloc`)
    /// for a request of `size` bytes.
    ///
    /// # Safety
    /// `class < NB_CLASSES`, and its blocks hold `size` bytes.
    #[inline(always)]
    pub(super) unsafe fn alloc_class(class: usize, size: usize) -> *mut u8 {
        let heap = thread::current_heap();
        let block = if !heap.is_null() {
            // SAFETY: a thread's bound heap is owned by it (only `bind` and
            // the fork handler set the slot, each to a heap just claimed);
            // `class < NB_CLASSES` (this function's `# Safety`).
            unsafe { (*heap).alloc(class) }
        } else {
            // `class < NB_CLASSES` (this function's `# Safety`), as
            // `alloc_unbound` assumes.
            thread::alloc_unbound(class)
        };
        asan::unpoison_block(block, size);
        block
    }

    /// Frees a pool block.
    ///
    /// # Safety
    /// `ptr` must be a pool block in use, allocated with `layout` (which
    /// routes to `class`) and freed by the caller.
    #[inline(always)]
    unsafe fn dealloc_small(ptr: *mut u8, layout: Layout, class: usize) {
        let heap = thread::current_heap();
        if debug::CHECKS {
            // SAFETY: `ptr` is a live block (GlobalAlloc contract), so its
            // pool header is live and its owner fixed while it is.
            let owned = unsafe { (*Pool::of(ptr)).owner(Ordering::Relaxed).0 } == heap;
            debug::check_small(ptr, layout, class, owned, "dealloc");
            // SAFETY: `ptr` is a pool block in use freed by the caller (this
            // function's `# Safety`), checked by `check_small` just above.
            unsafe { debug::tag_freed(ptr) };
        }
        // SAFETY: a live small block, freed by the caller; `heap` is ours.
        unsafe { free::free_block(heap, ptr) }
    }
}

impl PyMalloc {
    /// Every allocation the inlined fast path does not take.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(never)]
    unsafe fn alloc_general(layout: Layout) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: `layout` has a non-zero size (this function's
            // `# Safety`, `GlobalAlloc::alloc`'s), all `hooks::alloc` asks.
            return unsafe { hooks::alloc(layout, false) };
        }
        // SAFETY: `layout` has a non-zero size (this function's `# Safety`),
        // all `raw_alloc` asks.
        unsafe { Self::raw_alloc(layout) }
    }

    /// Every free the inlined fast path does not take.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_general(ptr: *mut u8, layout: Layout) {
        if hooks::enabled() {
            // SAFETY: the hooks are on, and were for the whole process (they
            // are decided once, at the first allocation), so `ptr` came from
            // `hooks::alloc` with `layout` (this function's `# Safety`).
            return unsafe { hooks::dealloc(ptr, layout) };
        }
        // SAFETY: the hooks are off, and were for the whole process, so `ptr`
        // came from a `raw_*` function with `layout` and is freed by the
        // caller (this function's `# Safety`): what `raw_dealloc` asks.
        unsafe { Self::raw_dealloc(ptr, layout) }
    }
}

/// The allocator proper, without the debug hooks. The hooks call these with
/// the layout of a block that has room for their guards.
impl PyMalloc {
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    pub(super) unsafe fn raw_alloc(layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            // SAFETY: `route` returns a class below NB_CLASSES whose blocks
            // hold `layout.size()` bytes aligned to `layout.align()`.
            Some(class) => unsafe { Self::alloc_class(class, layout.size()) },
            // SAFETY: `layout` has a non-zero size (this function's
            // `# Safety`), as `large::alloc` asks.
            None => unsafe { large::alloc(&REGISTRY, layout, false) },
        }
    }

    /// # Safety
    /// As `GlobalAlloc::dealloc`, for a block from [`PyMalloc::raw_alloc`],
    /// [`PyMalloc::raw_alloc_zeroed`] or [`PyMalloc::raw_realloc`].
    #[inline(always)]
    pub(super) unsafe fn raw_dealloc(ptr: *mut u8, layout: Layout) {
        match route(layout.size(), layout.align()) {
            // SAFETY: the same layout routed the allocation here.
            Some(class) => unsafe { Self::dealloc_small(ptr, layout, class) },
            // SAFETY: the same layout routed the allocation to System.
            None => unsafe { large::dealloc(&REGISTRY, ptr, layout) },
        }
    }

    /// # Safety
    /// As `GlobalAlloc::alloc_zeroed`.
    #[inline]
    pub(super) unsafe fn raw_alloc_zeroed(layout: Layout) -> *mut u8 {
        match route(layout.size(), layout.align()) {
            Some(class) => {
                // SAFETY: `route` returns a class below NB_CLASSES whose
                // blocks hold `layout.size()` bytes.
                let ptr = unsafe { Self::alloc_class(class, layout.size()) };
                if !ptr.is_null() {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { ptr.write_bytes(0, layout.size()) };
                }
                ptr
            }
            // SAFETY: `layout` has a non-zero size (this function's
            // `# Safety`), as `large::alloc` asks.
            None => unsafe { large::alloc(&REGISTRY, layout, true) },
        }
    }

    /// `realloc` without the debug hooks: in place where the block allows
    /// it, otherwise a move (see [`PyMalloc::realloc_small`] for small to
    /// small; large to large is the system allocator's `realloc`).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, for a block from the `raw_*` functions.
    pub(super) unsafe fn raw_realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // Both sizes above the threshold route to System whatever the
        // alignment: skip `route`'s look at the alignment.
        const LARGE: usize = SMALL_REQUEST_THRESHOLD - asan::REDZONE;
        if layout.size() > LARGE && new_size > LARGE {
            // SAFETY: `ptr`, `layout` and `new_size` meet
            // `GlobalAlloc::realloc`'s contract (this function's `# Safety`);
            // both sizes exceed LARGE, so both route to the system allocator.
            return unsafe { Self::realloc_large(ptr, layout, new_size) };
        }
        match (route(layout.size(), align), route(new_size, align)) {
            // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
            // `# Safety`); `layout` routes to `class`, so the block is a pool
            // block, and `new_size` to `new_class`.
            (Some(class), Some(new_class)) => unsafe {
                Self::realloc_small(ptr, layout, class, new_size, new_class)
            },
            // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
            // `# Safety`); neither size routes to a pool, so both are the
            // system allocator's.
            (None, None) => unsafe { Self::realloc_large(ptr, layout, new_size) },
            // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
            // `# Safety`); `layout` routes to a pool and `new_size` does not.
            (Some(_), None) => unsafe { Self::realloc_into_large(ptr, layout, new_size) },
            // Across the threshold downward: a move.
            // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
            // `# Safety`), all `realloc_move` asks with no class.
            _ => unsafe { Self::realloc_move(ptr, layout, new_size, None) },
        }
    }

    /// `realloc` of a pool block (allocated with `layout`, so of class
    /// `class` or, after an earlier growth, a larger one) to `new_size`
    /// bytes, whose exact class is `new_class`.
    ///
    /// The block stays where it is when `new_size` fits it and is not a
    /// shrink by more than a quarter into another class (CPython's rule).
    /// A move upward takes a class with headroom
    /// ([`size_class::growth_class`]); the pool header records the real
    /// class, so the caller's later `dealloc` or `realloc` with the smaller
    /// layout frees or measures the real block.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, for a pool block (`layout` routes to
    /// `class`, `new_size` to `new_class`).
    unsafe fn realloc_small(
        ptr: *mut u8,
        layout: Layout,
        class: usize,
        new_size: usize,
        new_class: usize,
    ) -> *mut u8 {
        if debug::CHECKS {
            debug::check_small(ptr, layout, class, false, "realloc");
        }
        // SAFETY: a live block's pool header is live, and its class does
        // not change while the block is in use (`Pool` invariants).
        let pool_class = unsafe { (*Pool::of(ptr)).class() };
        let block = size_class::block_size(pool_class);
        // Under AddressSanitizer blocks always move, so the unpoisoned
        // bytes stay exactly those requested.
        if asan::REDZONE == 0
            && new_size <= block
            && (new_size >= layout.size() || new_class == pool_class || new_size * 4 >= block * 3)
        {
            return ptr;
        }
        let target = if new_size > layout.size() {
            size_class::growth_class(layout.size(), new_size, layout.align(), new_class)
        } else {
            new_class
        };
        // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
        // `# Safety`); `target` is `new_class` (from `route(new_size, align)`)
        // or `growth_class`'s pick for it, a class below NB_CLASSES whose
        // blocks hold `new_size` bytes aligned to `layout.align()`.
        unsafe { Self::realloc_move(ptr, layout, new_size, Some(target)) }
    }

    /// `realloc` of a large block (the system allocator's, or a mapping of
    /// ours: `large_map`) to a size above the small threshold.
    ///
    /// A block of a cache class ([`large_cache`]: up to 8 KiB) holds its
    /// class's size, so a new size within it returns the same block; a new
    /// size of another class asks the system allocator's `realloc` for that
    /// class's size (or, after a small step, a roomier class's).
    /// Growth that fits the block as the system allocator made it (its
    /// `malloc_usable_size`) stays in place without a call. A
    /// [small step](size_class::is_small_step) asks for a quarter more than
    /// `new_size`, so that the next steps fit; the bytes counted are those
    /// requested, through [`large_count`], so a step costs no shared
    /// atomic either.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, with both `layout.size()` and `new_size`
    /// routed to the system allocator.
    unsafe fn realloc_large(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(feature = "override")]
        if large::is_c_pool_block(ptr) {
            // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
            // `# Safety`) for a block the arena bitmap places in a pool.
            return unsafe { Self::realloc_c_pool_block(ptr, layout, new_size) };
        }
        let old_size = layout.size();
        if stays_in_cache_class(layout, new_size) {
            if debug::CHECKS {
                debug::check_large(ptr, layout);
            }
            large_count::note_resize(&REGISTRY, old_size, new_size);
            return ptr;
        }
        let new_class = large_cache::class_of(new_size, layout.align());
        if asan::REDZONE == 0 && new_size > old_size {
            if debug::CHECKS {
                debug::check_large(ptr, layout);
            }
            // The block may hold more than its class (after a growth with
            // headroom): growth that fits stays, if the block holds the
            // new class's size too (the capacity invariant).
            let needed = new_class.map_or(new_size, large_cache::class_size);
            // SAFETY: `ptr` is a live large block with `layout` (the layout
            // routed it to the large path, and C's pool blocks went
            // elsewhere above).
            if needed <= unsafe { large::room(ptr, layout) } {
                large_count::note_resize(&REGISTRY, old_size, new_size);
                return ptr;
            }
        }
        let capacity = if let Some(class) = new_class {
            // Into or within the cache's range: the system allocator's
            // `realloc` (in place when it can: no copy) to the size of the
            // new class, or after a small step of one with a quarter more
            // room, so the block holds its class's size (the capacity
            // invariant). Moving through the cache instead (a cached block
            // of the new class, a copy, the old block cached) made the +8 B
            // chain from 520 to 4,096 bytes 1.3-1.5x glibc's time, from
            // 0.9-1.1x: 24 copies.
            let roomy = size_class::large_growth_capacity(old_size, new_size);
            large_cache::class_of(roomy.min(large_cache::MAX_CACHED), layout.align())
                .map_or(large_cache::class_size(class), large_cache::class_size)
        } else if asan::REDZONE == 0 {
            size_class::large_growth_capacity(old_size, new_size)
        } else {
            new_size
        };
        // SAFETY: `GlobalAlloc::realloc`'s contract, large to large (this
        // function's `# Safety`); `capacity` is `new_size` or, after
        // a small step, a quarter more and at most `isize::MAX / 2`, a valid
        // layout size (`large_growth_capacity`), or a cache class's size (at
        // most 8 KiB).
        // The block of `realloc`'s contract need not be one of the cache:
        // a cache class's block is a block of the system allocator too.
        let new = unsafe { large::realloc(&REGISTRY, ptr, layout, new_size, capacity) };
        if new.is_null() && capacity > new_size && new_class.is_none() {
            // Refused (out of memory): try for exactly what was asked.
            // SAFETY: the block is untouched by the refused attempt.
            return unsafe { large::realloc(&REGISTRY, ptr, layout, new_size, new_size) };
        }
        new
    }

    /// `realloc` with a layout above the small threshold of a pool block
    /// of C's (a medium class's, `size_class::route_c`) that Rust took
    /// over (see `large::is_c_pool_block`): in place when `new_size` fits
    /// the block as C's `realloc` would keep it, else a move to a block of
    /// the new layout's (the copy is of `layout.size()` bytes at most, all
    /// the caller may have written), the pool block freed by its address
    /// (`raw_dealloc` of a layout above 512 bytes finds it in the bitmap).
    /// The caller's later `dealloc` or `realloc` with a layout of
    /// `new_size` works either way.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, for a pool block in use.
    #[cfg(feature = "override")]
    #[cold]
    unsafe fn realloc_c_pool_block(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if debug::CHECKS {
            debug::check_block(ptr, false, "realloc", format_args!(""));
        }
        // SAFETY: a live block (this function's `# Safety`) in a pool: its
        // pool header is live and its class fixed while the block is in use.
        let class = unsafe { (*Pool::of(ptr)).class() };
        if asan::REDZONE == 0 && super::cabi::fits_in_place(class, new_size) {
            return ptr;
        }
        // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
        // `# Safety`); the old block is freed by `raw_dealloc` with
        // `layout`, which routes a pool block above the threshold to
        // `large::dealloc`, and that to the pool by the bitmap.
        unsafe { Self::realloc_move(ptr, layout, new_size, None) }
    }

    /// `realloc` of a pool block to a size the pools do not serve (above
    /// the small threshold, or aligned beyond what a class gives): a move
    /// to a large block from [`large::alloc_for_growth`], which may be
    /// roomier than asked so that the buffer's next steps stay in place.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, for a pool block (`layout` routes to a
    /// class) and a `new_size` that routes to no class.
    unsafe fn realloc_into_large(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `layout.align()` is a valid alignment and the caller
        // guarantees `new_size` does not overflow when rounded up to it
        // (`GlobalAlloc::realloc`'s contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_size` is non-zero (`GlobalAlloc::realloc`'s
        // contract), all `alloc_for_growth` asks.
        let new = unsafe { large::alloc_for_growth(&REGISTRY, new_layout) };
        // SAFETY: `ptr` is live with `layout` (this function's `# Safety`),
        // `new` null or a fresh block of `new_size` bytes.
        unsafe { Self::finish_move(ptr, layout, new, new_size) }
    }

    /// The end of a move: unless `new` is null (the allocation failed, the
    /// old block stays), copies the prefix the two blocks share and frees
    /// the old block with the layout it was given; returns `new`.
    ///
    /// # Safety
    /// `ptr` is a live block of `layout` the caller gives up once `new` is
    /// not null; `new` is null or a live block of at least `new_size`
    /// bytes, distinct from it.
    #[inline(always)]
    unsafe fn finish_move(ptr: *mut u8, layout: Layout, new: *mut u8, new_size: usize) -> *mut u8 {
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct and hold the bytes
            // copied (the shorter of the two sizes); the old one is freed
            // with the layout it was given (this function's `# Safety`).
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                Self::raw_dealloc(ptr, layout);
            }
        }
        new
    }

    /// Moves a block to a new one of `new_size` bytes (from class `class`,
    /// or wherever the new layout routes when `None`), copying the prefix
    /// and freeing the old block with the layout it was given.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `class`, if given, must be below
    /// `NB_CLASSES` with blocks that hold `new_size` bytes aligned to
    /// `layout.align()`.
    unsafe fn realloc_move(
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        class: Option<usize>,
    ) -> *mut u8 {
        let new = match class {
            // SAFETY: `class` is below NB_CLASSES with blocks that hold
            // `new_size` bytes (this function's `# Safety`).
            Some(class) => unsafe { Self::alloc_class(class, new_size) },
            None => {
                // SAFETY: `layout.align()` is a valid alignment and the
                // caller guarantees `new_size` does not overflow when
                // rounded up to it.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: `new_size` is non-zero (`GlobalAlloc::realloc`'s
                // contract, this function's `# Safety`), all `raw_alloc` asks.
                unsafe { Self::raw_alloc(new_layout) }
            }
        };
        // SAFETY: `ptr` is live with `layout` (`GlobalAlloc::realloc`'s
        // contract), `new` null or a fresh block of `new_size` bytes.
        unsafe { Self::finish_move(ptr, layout, new, new_size) }
    }

    /// `realloc` of a large block with the hooks known off: growth within
    /// the block's cache class (the block holds the class's size: the
    /// capacity invariant), most steps of a buffer growing by small
    /// increments, returns at once, its bytes counted; anything else goes
    /// on to [`PyMalloc::realloc_general`] by a tail call. A function of
    /// its own, so that this path saves few registers and a pool block's
    /// `realloc` (a doubling `Vec` below 512 bytes) never passes here.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, with the hooks known off.
    #[inline(never)]
    unsafe fn realloc_large_step(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A class's size is at most an eighth above any request of the
        // class, so a growth by more than that (a doubling) cannot fit:
        // two instructions spare it the class computation.
        // Never true under `override` (the cache is off: no block has a
        // class), where a C pool block may come here.
        if new_size >= layout.size()
            && new_size - layout.size() <= layout.size() / 8
            && stays_in_cache_class(layout, new_size)
        {
            large_count::note_resize(&REGISTRY, layout.size(), new_size);
            return ptr;
        }
        // SAFETY: `GlobalAlloc::realloc`'s contract (this function's
        // `# Safety`) is `realloc_general`'s.
        unsafe { Self::realloc_general(ptr, layout, new_size) }
    }

    /// Every `realloc` the inlined fast path does not take.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(never)]
    unsafe fn realloc_general(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: the hooks are on for the whole process, so `ptr` came
            // from `hooks::alloc`; `GlobalAlloc::realloc`'s contract (this
            // function's `# Safety`) is what `hooks::realloc` asks.
            return unsafe { hooks::realloc(ptr, layout, new_size) };
        }
        // SAFETY: the hooks are off for the whole process, so `ptr` came from
        // a `raw_*` function; `GlobalAlloc::realloc`'s contract (this
        // function's `# Safety`) is what `raw_realloc` asks.
        unsafe { Self::raw_realloc(ptr, layout, new_size) }
    }
}

/// Whether a large block of `layout` keeps its place when resized to
/// `new_size` within its cache class: the block holds its class's size
/// (the capacity invariant, `large_cache`), so it stays while the new size
/// fits and is not a shrink by more than a quarter. False for a layout
/// the cache has no class for (and for every layout while the cache is
/// off).
#[inline(always)]
fn stays_in_cache_class(layout: Layout, new_size: usize) -> bool {
    large_cache::class_capacity(layout.size(), layout.align()).is_some_and(|capacity| {
        new_size <= capacity && (new_size >= layout.size() || new_size * 4 >= capacity * 3)
    })
}

// SAFETY: every block handed out is a distinct, live range of at least
// `layout.size()` bytes aligned to `layout.align()` (see `size_class`), and
// is not handed out again until freed; a large request's block is the
// system allocator's, or a mapping of ours for 1.75 MiB and more
// (`large_map`, routed by the layout, so freed the way it was made: the
// mapping invariant). The debug hooks hand out the middle of a larger such
// block.
unsafe impl GlobalAlloc for PyMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The fast path: no hooks, a default-aligned small request, a bound
        // heap. Everything else leaves by a tail call, so this path saves
        // no registers.
        // `heap_slot::fast` is null unless the hooks are known off and the
        // thread has a heap: one load tests both.
        let heap = heap_slot::fast();
        if !debug::CHECKS && !heap.is_null() {
            if let Some(class) = size_class::route_fast(layout.size(), layout.align()) {
                // SAFETY: `fast` gives only the calling thread's bound heap,
                // which it owns; `route_fast` gives a valid class.
                let block = unsafe { (*heap).alloc(class) };
                asan::unpoison_block(block, layout.size());
                return block;
            }
        }
        // SAFETY: `GlobalAlloc::alloc`'s contract, which the caller meets,
        // is `alloc_general`'s.
        unsafe { Self::alloc_general(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The fast path: no hooks, a default-aligned small block. The free
        // dispatch pushes it on its pool's free list inline if this thread
        // owns the pool, and calls out for everything else.
        let heap = heap_slot::fast();
        if !debug::CHECKS
            && !heap.is_null()
            && size_class::route_fast(layout.size(), layout.align()).is_some()
        {
            // SAFETY: a live small block (GlobalAlloc contract: the same
            // layout routed its allocation to a pool), freed by the caller;
            // `fast` gives only the calling thread's bound heap, which it
            // owns.
            return unsafe { free::free_block(heap, ptr) };
        }
        // SAFETY: `GlobalAlloc::dealloc`'s contract, which the caller meets,
        // is `dealloc_general`'s.
        unsafe { Self::dealloc_general(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if hooks::enabled() {
            // SAFETY: `layout` has a non-zero size (`GlobalAlloc`'s contract,
            // which the caller meets), all `hooks::alloc` asks.
            return unsafe { hooks::alloc(layout, true) };
        }
        // SAFETY: `layout` has a non-zero size (`GlobalAlloc`'s contract,
        // which the caller meets), all `raw_alloc_zeroed` asks.
        unsafe { Self::raw_alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The fast path: a default-aligned pool block growing within its
        // block (which, after a move with headroom, is most steps of a
        // growing buffer) costs a read of the pool header.
        if hooks::known_off() && !debug::CHECKS && asan::REDZONE == 0 {
            if size_class::route_fast(layout.size(), layout.align()).is_some() {
                // SAFETY: `ptr` is live with `layout` (GlobalAlloc
                // contract), which routes to a pool, so its pool header is
                // live.
                if new_size >= layout.size() && new_size <= unsafe { (*Pool::of(ptr)).block_size() }
                {
                    return ptr;
                }
            } else if layout.size() > SMALL_REQUEST_THRESHOLD {
                // SAFETY: `GlobalAlloc::realloc`'s contract, which the
                // caller meets, with the hooks known off: what
                // `realloc_large_step` asks.
                return unsafe { Self::realloc_large_step(ptr, layout, new_size) };
            }
        }
        // SAFETY: `GlobalAlloc::realloc`'s contract, which the caller meets,
        // is `realloc_general`'s.
        unsafe { Self::realloc_general(ptr, layout, new_size) }
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
/// are allocating from, which only their owner touches). The free pool
/// slots of arenas that stay in use give their pages back too
/// (`MADV_DONTNEED`; not counted in the bytes reported, which are those of
/// the arenas unmapped), and every thread's cache of large blocks goes
/// back to the system allocator (not counted either: see
/// [`AllocStats::large_bytes_cached`](crate::AllocStats::large_bytes_cached)).
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
    // The calling thread's credit of large bytes first, so that the peak
    // measured from now on is the true one, to within other heaps' credits.
    large_count::give_back_current(&REGISTRY);
    let me = thread::current_heap();
    // SAFETY: the calling thread owns its bound heap; heaps are never
    // unmapped.
    let me = unsafe { me.as_ref() };
    // SAFETY: `me` is the heap bound to the calling thread, which owns it
    // (owner capacity), or `None`: what `pass` requires.
    unsafe { purge::pass(&REGISTRY, me, PassKind::Everything) }
}
