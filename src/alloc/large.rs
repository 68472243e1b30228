//! Large blocks: requests above the small threshold (for C's `malloc`,
//! above the medium and coarse classes' 4,096 bytes), or with an alignment no class
//! honours.
//!
//! # Where they come from
//!
//! As a Rust `#[global_allocator]` alone, PyMalloc passes them to
//! `std::alloc::System`, that is to the process's `malloc`, except those
//! of 1.75 MiB and more (aligned to at most a page), which it maps itself,
//! aligned to 2 MiB and advised for huge pages ([`super::large_map`]).
//!
//! Once PyMalloc *is* the process's `malloc` (the `override` feature, or
//! the `pymem-malloc` preload), `System` would call us again. They then
//! come from glibc's own allocator through the entry points it exports for
//! exactly this purpose (`__libc_malloc`, `__libc_free`, `__libc_realloc`,
//! `__libc_calloc`, `__libc_memalign`, the names glibc's manual gives for
//! wrapping `malloc`), which bypass the `malloc` symbol. The other choice,
//! `mmap` with a header, was rejected: it costs a system call and at least
//! a page per block, where the sizes just above 512 bytes (the bulk of
//! large requests in most programs) need a medium-size allocator to be
//! served well (C's `malloc` now serves those up to 4 KiB from pools, with
//! medium and coarse classes: `size_class::C_POOL_THRESHOLD`); glibc's bins and
//! per-thread cache are one for what lies above, reuse memory the way glibc does (so peak RSS stays glibc's on
//! large-block programs), keep glibc's `mmap` threshold and `mremap` for
//! huge `realloc`s, and, above all, make every pointer that is not in an
//! arena glibc's: a pointer allocated before the override took effect or
//! by glibc itself is freed exactly as a large block of ours is, with no
//! header to forge and no lookup to miss.
//!
//! The C entry points ([`super::cabi`]) always use glibc's entry points
//! (they only exist where PyMalloc is the process's `malloc`); the Rust
//! path uses them under the `override` feature and `System` otherwise.
//!
//! # Statistics
//!
//! Large blocks of the Rust path are counted by requested size, per heap
//! (see `large_count`). Those of the C path are not: `free` has no size,
//! the count would cost a lookup per call on the C fast path, and glibc
//! counts them already (`mallinfo2()` reports both halves).

use core::alloc::Layout;

use super::large_cache;
use super::large_count::{note_alloc, note_free};
use super::large_map;
use super::registry::Registry;
// Used by the glibc entry points, which only glibc targets have.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use super::size_class::ALIGNMENT;

/// glibc's allocator, reached without going through the `malloc` symbol.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) mod glibc {
    use core::ffi::c_void;

    use super::ALIGNMENT;

    extern "C" {
        fn __libc_malloc(size: usize) -> *mut c_void;
        fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
        fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
        fn __libc_free(ptr: *mut c_void);
    }

    /// `size` bytes aligned to `align` (a power of two), zeroed if asked;
    /// null (with `errno` set by glibc) on failure.
    #[inline]
    pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
        // SAFETY: glibc's entry points accept any size and, for memalign,
        // any power-of-two alignment; they do not call `malloc`.
        unsafe {
            if align <= ALIGNMENT {
                if zeroed {
                    __libc_calloc(1, size).cast()
                } else {
                    __libc_malloc(size).cast()
                }
            } else {
                let ptr = __libc_memalign(align, size).cast::<u8>();
                if zeroed && !ptr.is_null() {
                    ptr.write_bytes(0, size);
                }
                ptr
            }
        }
    }

    /// Frees a block of glibc's (null is ignored).
    ///
    /// # Safety
    /// `ptr` must be null or a live block of glibc's allocator.
    #[inline]
    pub(crate) unsafe fn free(ptr: *mut u8) {
        // SAFETY: `ptr` is null or a live block of glibc's allocator (this
        // function's `# Safety`), what `__libc_free` accepts.
        unsafe { __libc_free(ptr.cast()) }
    }

    /// Resizes a block of glibc's, keeping its 16-byte alignment; null on
    /// failure (the block is then untouched).
    ///
    /// # Safety
    /// `ptr` must be a live block of glibc's allocator.
    #[inline]
    pub(crate) unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of glibc's allocator (this function's
        // `# Safety`), what `__libc_realloc` requires.
        unsafe { __libc_realloc(ptr.cast(), size).cast() }
    }

    /// The usable size of a live block of glibc's, read from its chunk
    /// header: the word before the block holds the chunk size with three
    /// flag bits (bit 1, `IS_MMAPPED`), and the chunk's overhead is one
    /// word, or two for a chunk mapped on its own (glibc's `musable()`).
    ///
    /// # Safety
    /// `ptr` must be a live block of glibc's allocator.
    pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
        const WORD: usize = core::mem::size_of::<usize>();
        const IS_MMAPPED: usize = 2;
        // SAFETY: a live glibc chunk is preceded by its size word.
        let header = unsafe { ptr.sub(WORD).cast::<usize>().read() };
        let chunk = header & !7;
        chunk
            - if header & IS_MMAPPED != 0 {
                2 * WORD
            } else {
                WORD
            }
    }
}

/// # Safety
/// As `GlobalAlloc::alloc`.
pub(crate) unsafe fn alloc(registry: &Registry, layout: Layout, zeroed: bool) -> *mut u8 {
    if let Some(class) = large_cache::class_of(layout.size(), layout.align()) {
        return alloc_cached(registry, class, class, layout.size(), zeroed);
    }
    let ptr = if large_map::serves(layout.size(), layout.align()) {
        large_map::alloc(layout.size(), zeroed)
    } else {
        large_cache::system_alloc(layout, zeroed)
    };
    if !ptr.is_null() {
        note_alloc(registry, layout.size());
    }
    ptr
}

/// A block for a `realloc` that grows a pool block past the small
/// threshold to `layout`: as [`alloc`], but a cache miss in the request's
/// class takes a cached block of a larger class, up to four times the
/// request, if the heap holds one. A buffer crossing 512 bytes is
/// likely to grow on (a doubling `Vec` goes 512, 1,024, 2,048, 4,096),
/// and the roomier block lets those steps stay in place
/// (`realloc_large` finds the room with [`usable_size`]) where each would
/// otherwise ask the system allocator to `realloc`; freed, the block is
/// filed by the room it really has (see [`dealloc_cached`]), which is the
/// class its chain ended in, so the next such chain finds it again.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
pub(crate) unsafe fn alloc_for_growth(registry: &Registry, layout: Layout) -> *mut u8 {
    let Some(class) = large_cache::class_of(layout.size(), layout.align()) else {
        // SAFETY: this function's `# Safety` is `alloc`'s.
        return unsafe { alloc(registry, layout, false) };
    };
    let last = if FILED_BY_ROOM {
        large_cache::class_of(
            layout.size().saturating_mul(4).min(large_cache::MAX_CACHED),
            layout.align(),
        )
        .unwrap_or(class)
    } else {
        class
    };
    alloc_cached(registry, class, last, layout.size(), false)
}

/// Whether a freed block of a cache class is filed by the room it has
/// ([`usable_size`], known where `malloc_usable_size` is) rather than by
/// its layout; only then may a cached block serve a smaller class
/// ([`alloc_for_growth`]), since only then does it go back to the class
/// of its real size and count as its real size in the cache's bytes.
const FILED_BY_ROOM: bool = cfg!(target_os = "linux");

/// Whether a block that Rust frees or resizes with a layout above the
/// small threshold is a pool block all the same: under `override`, C's
/// `malloc` serves requests of up to 4,096 bytes from pools (the medium
/// and coarse classes, `size_class::route_c`), and Rust code may take such a block
/// over (`Vec::from_raw_parts` over a malloc'd buffer, a C library handing
/// out a buffer the caller frees) and free or grow it with the layout of
/// its size. The arena bitmap says so, as for C's `free`: a compare, two
/// shifts and a load, on the large paths only. Always false without
/// `override` (only Rust's layouts route blocks then).
#[inline(always)]
pub(crate) fn is_c_pool_block(ptr: *mut u8) -> bool {
    #[cfg(feature = "override")]
    return super::arena_bitmap::contains(ptr);
    #[cfg(not(feature = "override"))]
    {
        let _ = ptr;
        false
    }
}

/// # Safety
/// As `GlobalAlloc::dealloc`, for a pointer from [`alloc`] (or, under
/// `override`, a pool block of C's `malloc` family that the caller took
/// over: see [`is_c_pool_block`]).
pub(crate) unsafe fn dealloc(registry: &Registry, ptr: *mut u8, layout: Layout) {
    #[cfg(feature = "override")]
    if is_c_pool_block(ptr) {
        // Not counted: C's blocks never are (see the module docs).
        // SAFETY: a live block of the process's `malloc` family (this
        // function's `# Safety`) lying in an arena, so a pool block in
        // use, freed by the caller.
        return unsafe { super::cabi::check_and_free_small(ptr) };
    }
    if super::debug::CHECKS {
        super::debug::check_large(ptr, layout);
    }
    note_free(registry, layout.size());
    if let Some(class) = large_cache::class_of(layout.size(), layout.align()) {
        // SAFETY: `dealloc`'s contract: a live block from `alloc` or
        // `realloc` with this layout, which has a class, so the block holds
        // the class's size (the capacity invariant, `large_cache`).
        return unsafe { dealloc_cached(class, ptr) };
    }
    if large_map::serves(layout.size(), layout.align()) {
        // SAFETY: `dealloc`'s contract: a live block of this layout, which
        // `large_map` serves, so a mapped block of its size (the mapping
        // invariant).
        return unsafe { large_map::free(ptr, layout.size()) };
    }
    // SAFETY: `dealloc`'s contract: a live block from `alloc` (so from
    // `system_alloc`) or `realloc` with this layout.
    unsafe { large_cache::system_free(ptr, layout) };
}

/// A block for a request of `size` bytes of cache class `class`: a cached
/// one of the calling thread's heap, of the first class from `class` to
/// `last` that has one, or a fresh one of `class`'s size (the capacity
/// invariant, `large_cache`).
#[inline]
fn alloc_cached(
    registry: &Registry,
    class: usize,
    last: usize,
    size: usize,
    zeroed: bool,
) -> *mut u8 {
    // SAFETY: a heap bound to the calling thread is owned by it and never
    // unmapped; the cache needs no more (it has its own lock).
    let heap = unsafe { super::thread::bind_for_free().as_ref() };
    let mut ptr = heap.map_or(core::ptr::null_mut(), |heap| {
        heap.large_cache.take_up_to(class, last)
    });
    if !ptr.is_null() {
        if zeroed {
            // SAFETY: a cached block of the class holds `class_size(class)
            // >= size` bytes, and is ours now.
            unsafe { ptr.write_bytes(0, size) };
        }
    } else {
        ptr = large_cache::system_alloc(large_cache::class_layout(class), zeroed);
    }
    if !ptr.is_null() {
        note_alloc(registry, size);
    }
    ptr
}

/// Frees a block of cache class `class` (or more: see [`FILED_BY_ROOM`]):
/// into the calling thread's cache if there is room, else to the system
/// allocator.
///
/// # Safety
/// `ptr` must be a live block of the system allocator holding at least
/// `class_size(class)` bytes, aligned to `SYSTEM_ALIGN`, freed by the
/// caller.
#[inline]
unsafe fn dealloc_cached(class: usize, ptr: *mut u8) {
    // Filed by the room the block has: a block that `alloc_for_growth`
    // took from a larger class, or that the system allocator's `realloc`
    // left roomier than asked, goes back to the class it can serve (and
    // counts as that much in the cache's bytes), not to the one its
    // layout names.
    let class = if FILED_BY_ROOM {
        // SAFETY: a live block of the system allocator (this function's
        // `# Safety`), as `usable_size` asks.
        large_cache::class_within(unsafe { usable_size(ptr) }).map_or(class, |c| c.max(class))
    } else {
        class
    };
    // SAFETY: the heap bound to the calling thread (bound already by
    // `note_free`), owned by it and never unmapped.
    let heap = unsafe { super::thread::current_heap().as_ref() };
    // SAFETY: the block is as `put` asks (this function's `# Safety`).
    if heap.is_some_and(|heap| unsafe { heap.large_cache.put(class, ptr) }) {
        return;
    }
    // SAFETY: as this function's `# Safety`: a block of the system
    // allocator of the class's size, which `system_alloc` (or `realloc`
    // to that size) made.
    unsafe { large_cache::system_free(ptr, large_cache::class_layout(class)) }
}

/// Resizes to `new_size` bytes, asking the system allocator for
/// `capacity >= new_size` (headroom for the next steps of a growing
/// buffer); the block is counted as `new_size` bytes.
///
/// # Safety
/// As `GlobalAlloc::realloc`, large to large, for both sizes.
pub(crate) unsafe fn realloc(
    registry: &Registry,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
    capacity: usize,
) -> *mut u8 {
    if super::debug::CHECKS {
        super::debug::check_large(ptr, layout);
    }
    // The caller (`realloc_large`) took C's pool blocks elsewhere.
    debug_assert!(!is_c_pool_block(ptr));
    let old_mapped = large_map::serves(layout.size(), layout.align());
    if old_mapped || large_map::serves(new_size, layout.align()) {
        // SAFETY: `realloc`'s contract: a live block of `layout`, a mapped
        // block if `old_mapped` (the mapping invariant), else the system
        // allocator's; `capacity >= new_size` is a valid size for
        // `layout.align()`.
        let new = unsafe { realloc_mapped(ptr, layout, new_size, capacity, old_mapped) };
        if !new.is_null() {
            super::large_count::note_resize(registry, layout.size(), new_size);
        }
        return new;
    }
    #[cfg(feature = "override")]
    // SAFETY: `realloc`'s contract: a live block from `glibc::alloc` (under
    // `override`) of `layout.size()` bytes, aligned as `layout` says;
    // `capacity >= new_size`, so the copy stays within both blocks.
    let new = unsafe {
        if layout.align() <= ALIGNMENT {
            glibc::realloc(ptr, capacity)
        } else {
            let new = glibc::alloc(capacity, layout.align(), false);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                glibc::free(ptr);
            }
            new
        }
    };
    #[cfg(not(feature = "override"))]
    // SAFETY: `realloc`'s contract: a live block `System` allocated with
    // `layout`; `capacity >= new_size` is a valid layout size for that
    // alignment (`size_class::large_growth_capacity` caps it so).
    let new =
        unsafe { core::alloc::GlobalAlloc::realloc(&std::alloc::System, ptr, layout, capacity) };
    if !new.is_null() {
        super::large_count::note_resize(registry, layout.size(), new_size);
    }
    new
}

/// `realloc` where the old block, the new one or both are mapped blocks
/// (`large_map`): a mapping is resized by the OS (its pages move, nothing
/// is copied); a block crossing [`large_map::MAP_MIN`] moves between the
/// system allocator and a mapping, with a copy. A new system block is
/// asked for `capacity` bytes (so a cache class's block holds its class's
/// size: the capacity invariant), a new mapping for `new_size` (its
/// length follows from the size it will be freed with: the mapping
/// invariant). Null on failure, the old block untouched.
///
/// # Safety
/// `ptr` must be a live block of `layout`, a mapped one exactly when
/// `old_mapped`; `capacity >= new_size` must be a valid layout size for
/// `layout.align()`; `new_size` or `layout` must be served by `large_map`.
#[cold]
unsafe fn realloc_mapped(
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
    capacity: usize,
    old_mapped: bool,
) -> *mut u8 {
    let new_mapped = large_map::serves(new_size, layout.align());
    if old_mapped && new_mapped {
        // SAFETY: a live mapped block of `layout.size()` bytes (this
        // function's `# Safety`).
        return unsafe { large_map::resize(ptr, layout.size(), new_size) };
    }
    let new = if new_mapped {
        large_map::alloc(new_size, false)
    } else {
        // SAFETY: `capacity` is a valid size for the alignment (this
        // function's `# Safety`).
        let new_layout = unsafe { Layout::from_size_align_unchecked(capacity, layout.align()) };
        large_cache::system_alloc(new_layout, false)
    };
    if new.is_null() {
        return new;
    }
    // SAFETY: `ptr` holds `layout.size()` bytes and `new` at least
    // `new_size`; two live blocks, distinct.
    unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
    if old_mapped {
        // SAFETY: a live mapped block of `layout.size()` bytes, given up
        // now that its contents are copied.
        unsafe { large_map::free(ptr, layout.size()) };
    } else {
        // SAFETY: a live block of the system allocator's with `layout`
        // (from `system_alloc` or its `realloc`), given up.
        unsafe { large_cache::system_free(ptr, layout) };
    }
    new
}

/// Bytes the block at `ptr`, live with `layout`, can grow to in place
/// while keeping its routing: a mapped block's whole pages, or what the
/// system allocator's block holds ([`usable_size`]) but less than
/// [`large_map::MAP_MIN`], so that a block routed by its new layout to a
/// mapping is one (the mapping invariant: growth across the threshold
/// moves the block, in [`realloc`]).
///
/// # Safety
/// As [`usable_size`], with `layout` the block's.
#[inline]
pub(crate) unsafe fn room(ptr: *mut u8, layout: Layout) -> usize {
    if large_map::serves(layout.size(), layout.align()) {
        return large_map::mapping_len(layout.size());
    }
    // SAFETY: a live block of the system allocator's (this function's
    // `# Safety`, and not a mapped block).
    let usable = unsafe { usable_size(ptr) };
    if large_map::serves(usable, layout.align()) {
        large_map::MAP_MIN - 1
    } else {
        usable
    }
}

/// Bytes the block at `ptr` can hold without moving (the system allocator's
/// `malloc_usable_size`), or 0 where that is not known.
///
/// # Safety
/// `ptr` must be a live block from [`alloc`] or [`realloc`] (not a pool
/// block of C's: the callers send those elsewhere first, see
/// [`is_c_pool_block`]).
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    debug_assert!(!is_c_pool_block(ptr));
    #[cfg(feature = "override")]
    // SAFETY: under `override` a large block is glibc's (see `alloc`), the
    // kind `glibc::usable_size` reads; the exported `malloc_usable_size`
    // would only come back here through the arena lookup.
    return unsafe { glibc::usable_size(ptr) };
    #[cfg(all(target_os = "linux", not(feature = "override")))]
    // SAFETY: `ptr` is a live block of the system allocator (caller
    // contract), the one `malloc_usable_size` answers for.
    return unsafe { libc::malloc_usable_size(ptr.cast()) };
    #[cfg(not(any(target_os = "linux", feature = "override")))]
    {
        let _ = ptr;
        0
    }
}
