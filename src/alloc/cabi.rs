//! The C allocation API over PyMalloc: `malloc`, `free` and the rest of
//! glibc's family, for a process whose `malloc` PyMalloc is (the
//! `override` feature of this crate, or the `pymem-malloc` preload; see
//! `docs/override.md`).
//!
//! # Telling blocks apart without a size
//!
//! `free(p)` carries no layout. A pool block is recognised by its address
//! in the arena bitmap (`arena_bitmap`, a compare, two shifts and a load);
//! every other pointer is glibc's, because large blocks come from glibc's
//! own entry points (see `large`), and so is every pointer allocated
//! before PyMalloc became the process's `malloc` or by glibc itself: they
//! are handed to `__libc_free` untouched. Nothing of a pointer's memory is
//! read before the bitmap says it is a pool block.
//!
//! # Fast paths
//!
//! `malloc` of 1 to 2,048 bytes pops the calling thread's pool, as the
//! Rust fast path does (the classes above 512 bytes, *medium*, are C's
//! alone, four per doubling: see `size_class::C_POOL_THRESHOLD`; the class
//! is a table's, `size_class::C_FAST_CLASS`, read as its slot's offset in
//! the heap, `heap::C_FAST_SLOT`; requests of 2,049 to 4,096
//! bytes take the general path); `free` of a pool block owned by the calling thread
//! pushes it back; `realloc` keeps a pool block in place when it fits.
//! Each is inlined into the exported symbol and is straight-line code: one
//! thread-local load ([`heap_slot::fast`]: null unless the debug allocator
//! is known off and the thread has a heap) stands for the debug switch and
//! the heap, and every other case leaves by a tail call of an `extern "C"`
//! function (which cannot unwind, so the symbol needs no landing pad and
//! no stack frame). See "Eighth round" in `docs/override.md`.
//!
//! # What is glibc's behaviour, and kept
//!
//! * Every block is aligned to 16 bytes (`max_align_t`); `malloc(0)`
//!   returns a unique minimal block; failure returns null with `errno`
//!   set to `ENOMEM`.
//! * `calloc` checks `count * size` for overflow (`ENOMEM`).
//! * `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
//!   returns null (glibc's `REALLOC_ZERO_BYTES_FREES`); on failure the old
//!   block is left untouched. A pool block stays in place while the new
//!   size fits its block and would not waste more than a quarter of it
//!   (CPython's rule); glibc's blocks are resized by `__libc_realloc`.
//!   `reallocarray` checks its product as `calloc` does.
//! * `posix_memalign` returns `EINVAL` for an alignment that is not a
//!   power of two multiple of `sizeof(void *)`, `ENOMEM` on failure, and
//!   leaves `*memptr` alone then. `memalign` rounds a non-power-of-two
//!   alignment up and refuses one above `SIZE_MAX / 2 + 1` (`EINVAL`);
//!   `aligned_alloc` refuses a non-power-of-two alignment (`EINVAL`, as
//!   glibc 2.38 and C17 do). `valloc`/`pvalloc` align to the page;
//!   `pvalloc` rounds the size up to pages (`ENOMEM` on overflow).
//! * `malloc_usable_size(NULL)` is 0; a pool block's usable size is its
//!   block size (the requested size with the debug allocator on).
//! * C23's `free_sized` and `free_aligned_sized` free as `free` does (the
//!   debug allocator checks the size given).
//! * `malloc_trim` returns the pools' free memory
//!   ([`release_free_memory`](super::release_free_memory)) and trims
//!   glibc's heap; `malloc_stats` prints [`alloc_stats`](super::alloc_stats)
//!   then glibc's own report; `mallinfo2`/`mallinfo` add the arenas to
//!   glibc's figures.
//!
//! # Initialisation
//!
//! There is none to run: the arena bitmap is a zeroed static, heaps and
//! arenas come from `mmap`, the debug switch is read with `getenv` at the
//! first call, and glibc's entry points are linked, not looked up. So the
//! first `malloc` of the process, made by the dynamic loader or by libc's
//! start-up code before `main` or before any constructor ran, works, and
//! nothing here ever allocates through the `malloc` it implements. Only
//! `malloc_trim`, `malloc_stats` and `mallinfo*` look up glibc's versions
//! with `dlsym`, outside any allocation.

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr;

use super::free::LocalFree;
use super::heap::{Heap, C_FAST_SLOT};
use super::large::glibc;
use super::pool::Pool;
use super::size_class::{
    block_size, class_of_size, route_c, ALIGNMENT, C_FAST_MAX_REQUEST, C_POOL_MAX_REQUEST,
};
use super::{arena_bitmap, asan, debug, heap_slot, hooks, thread, PyMalloc};
use crate::sync::Ordering;

fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno.
    unsafe { *libc::__errno_location() = code };
}

/// The C path under the debug allocator: outer blocks from the pools or
/// from glibc, freed by address.
pub(crate) struct CApi;

impl hooks::Backend for CApi {
    unsafe fn alloc_outer(layout: Layout) -> *mut u8 {
        // SAFETY: `alloc_raw` has no precondition beyond a power-of-two
        // alignment, which a `Layout` guarantees.
        unsafe { alloc_raw(layout.size(), layout.align(), false) }
    }

    unsafe fn free_outer(base: *mut u8, _layout: Layout) {
        // SAFETY: `Backend::free_outer`'s contract: `base` is a live block
        // from `alloc_outer`, i.e. from `alloc_raw`: a pool block or glibc's.
        unsafe { free_raw(base) }
    }

    fn route(size: usize, align: usize) -> Option<usize> {
        route_c(size, align)
    }

    const C_ORIGIN: bool = true;
}

/// Allocation without the debug hooks: a pool block when a class honours
/// `size` and `align` (a power of two) by C's routing (`route_c`, the one
/// rule of every C entry point: the fast path, this general path and the
/// debug allocator's outer blocks), else glibc's.
///
/// # Safety
/// `align` must be a power of two.
unsafe fn alloc_raw(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let class = route_c(size, align);
    let Some(class) = class else {
        return glibc::alloc(size, align, zeroed);
    };
    // SAFETY: `route_c` gives a class below `NB_CLASSES` whose blocks hold
    // `size` bytes aligned to `align`, what `alloc_class` requires.
    let block = unsafe { PyMalloc::alloc_class(class, size) };
    if zeroed && !block.is_null() {
        // SAFETY: the block holds at least `size` bytes.
        unsafe { block.write_bytes(0, size) };
    }
    block
}

/// Free without the debug hooks, by address.
///
/// # Safety
/// `ptr` must be null or a live block of the process's `malloc` family.
unsafe fn free_raw(ptr: *mut u8) {
    // SAFETY: `ptr` is null or a live block of the malloc family (this
    // function's `# Safety`); the bitmap says whether that is a pool block
    // (ours) or, by elimination, glibc's.
    unsafe {
        if arena_bitmap::contains(ptr) {
            check_and_free_small(ptr);
        } else {
            glibc::free(ptr);
        }
    }
}

/// Frees a pool block given only its address, after the debug checks when
/// they are compiled in, through
/// [`free::free_small`](super::free::free_small): the pointer-only entry of
/// the one free dispatch, whose question the fast path of [`free`] asks
/// through `free::push_if_mine`.
///
/// Also the door of Rust's large `dealloc` to a C pool block it was handed
/// (`large::is_c_pool_block`).
///
/// # Safety
/// `ptr` must be a live pool block.
pub(crate) unsafe fn check_and_free_small(ptr: *mut u8) {
    if debug::CHECKS {
        // SAFETY: a live block's pool header is live; its owner does not
        // change while the block is in use (`Pool`'s invariants).
        let owner = unsafe { (*Pool::of(ptr)).owner(Ordering::Relaxed).0 };
        debug::check_block(
            ptr,
            owner == thread::current_heap(),
            "free",
            format_args!(""),
        );
        // SAFETY: `ptr` is a live pool block being freed (this function's
        // `# Safety`), and `check_block` found it the start of a block.
        unsafe { debug::tag_freed(ptr) };
    }
    // SAFETY: `ptr` is a live pool block (this function's `# Safety`), and
    // it is being freed: what `free_small` requires.
    unsafe { super::free::free_small(ptr) }
}

/// The allocation fast path, for a default-aligned request of 1 to 2,048
/// bytes (a small or medium class) by a thread whose heap the fast paths
/// may use ([`heap_slot::fast`]: bound, and the debug allocator known to
/// be off): pops the current pool of the class. `None` when this path
/// does not apply (`malloc(0)` included, which the general path serves
/// from the smallest class) or the pool is dry; the tick, when due, is
/// run by a tail call of [`tick_then`].
///
/// One load of the thread-local slot stands for the debug switch and the
/// heap; the class's slot in the heap is `C_FAST_SLOT[(size - 1) >> 4]`
/// (a `u16` of a 128-entry table: `size_class::C_FAST_CLASS` scaled to
/// byte offsets), and the unsigned compare of
/// `size - 1` against the threshold excludes 0 and large sizes at once.
/// Every call out of the exported `malloc` is to an `extern "C"` function
/// (which cannot unwind), so the compiler needs no landing pad, keeps no
/// frame, and makes each a tail call.
#[inline(always)]
fn alloc_fast(size: usize) -> Option<*mut u8> {
    let below = size.wrapping_sub(1);
    if debug::CHECKS || below >= C_FAST_MAX_REQUEST {
        return None;
    }
    let heap = heap_slot::fast();
    if heap.is_null() {
        return None;
    }
    // `route_c`'s class, for `size >= 1`: `size + REDZONE` is at most
    // `C_FAST_THRESHOLD`, so the index is within the table.
    // The table holds the class's slot offset in the heap (`C_FAST_SLOT`,
    // `C_FAST_CLASS` scaled), which saves the shift from class to offset.
    let offset = usize::from(C_FAST_SLOT[(below + asan::REDZONE) / ALIGNMENT]);
    // SAFETY: `heap` is the calling thread's bound heap (`fast` gives no
    // other), which it owns; `offset` is an entry of `C_FAST_SLOT`, for
    // `route_c`'s class, whose blocks hold the request and its redzone.
    let (block, tick) = unsafe { (*heap).alloc_pop_at(offset) }?;
    asan::unpoison_block(block, size);
    if tick {
        // SAFETY: `heap` is the calling thread's own heap, outside any busy
        // section (nothing of it is in progress here).
        return Some(unsafe { tick_then(heap, block) });
    }
    Some(block)
}

/// The heap's periodic tick, from the C fast path, then `block`.
///
/// # Safety
/// `heap` must be the calling thread's heap (owner capacity), outside any
/// busy section.
#[cold]
#[inline(never)]
unsafe extern "C" fn tick_then(heap: *mut Heap, block: *mut u8) -> *mut u8 {
    // SAFETY: owner capacity, outside any busy section (this function's
    // `# Safety`): what `tick` requires.
    unsafe { (*heap).tick() };
    block
}

/// `malloc` off the fast path: a large request, `malloc(0)`, a thread
/// without a heap, the debug allocator, or a dry pool.
#[inline(never)]
extern "C" fn malloc_slow(size: usize) -> *mut u8 {
    alloc_slow(size, false)
}

/// `calloc` off the fast path, as [`malloc_slow`].
#[inline(never)]
extern "C" fn calloc_slow(size: usize) -> *mut u8 {
    alloc_slow(size, true)
}

/// A default-aligned request off the fast path: a large one with the
/// debug allocator off goes straight to glibc (which sets `errno` itself
/// on failure), as before this round; the rest takes the general path.
#[inline(always)]
fn alloc_slow(size: usize, zeroed: bool) -> *mut u8 {
    if size > C_POOL_MAX_REQUEST && hooks::known_off() && !debug::CHECKS {
        return glibc::alloc(size, ALIGNMENT, zeroed);
    }
    alloc_general(size, ALIGNMENT, zeroed)
}

/// Every allocation the fast path does not take; sets `errno` on failure.
#[inline(never)]
fn alloc_general(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let ptr = if hooks::enabled() {
        match Layout::from_size_align(size, align) {
            // SAFETY: any layout is accepted by the hooks.
            Ok(layout) => unsafe { hooks::alloc_with::<CApi>(layout, zeroed) },
            Err(_) => ptr::null_mut(),
        }
    } else {
        // SAFETY: `align` is a power of two (callers check).
        unsafe { alloc_raw(size, align, zeroed) }
    };
    if ptr.is_null() {
        set_errno(libc::ENOMEM);
    }
    ptr
}

/// `size` bytes aligned to `align` (a power of two), through the fast path
/// when the default alignment suffices.
fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    let align = align.max(ALIGNMENT);
    if align == ALIGNMENT {
        if let Some(block) = alloc_fast(size) {
            return block;
        }
    }
    alloc_general(size, align, false)
}

/// C's `malloc`.
///
/// # Safety
/// None beyond C's: the result is freed with this family's `free`.
#[inline(always)]
pub unsafe fn malloc(size: usize) -> *mut c_void {
    match alloc_fast(size) {
        Some(block) => block.cast(),
        None => malloc_slow(size).cast(),
    }
}

/// C's `calloc`: `count * size` zeroed bytes, null with `ENOMEM` if the
/// product overflows.
///
/// # Safety
/// As [`malloc`].
#[inline(always)]
pub unsafe fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    match alloc_fast(total) {
        Some(block) => {
            // SAFETY: the block holds at least `total` bytes.
            unsafe { block.write_bytes(0, total) };
            block.cast()
        }
        None => calloc_slow(total).cast(),
    }
}

/// C's `free`: any pointer of the process's `malloc` family, or null.
///
/// The fast path: a pool block (the arena bitmap says so) whose pool the
/// calling thread's heap owns, with the debug allocator off (a null
/// `heap_slot::fast`, as with it on, never equals a pool's owner), is
/// pushed on its pool's free list inline. Everything else leaves by a tail
/// call of an `extern "C"` function, so this path keeps no frame.
///
/// # Safety
/// `ptr` must be null or a live block of the process's `malloc` family
/// (with the debug allocator on, anything else is reported).
#[inline(always)]
pub unsafe fn free(ptr: *mut c_void) {
    let ptr = ptr.cast::<u8>();
    if !arena_bitmap::contains(ptr) {
        // SAFETY: `free`'s contract: null, or a live block of the malloc
        // family that is in no arena.
        return unsafe { free_foreign(ptr) };
    }
    // SAFETY: `free`'s contract, for a pointer the bitmap places in an
    // arena.
    unsafe { free_in_arena(ptr) }
}

/// [`free`] of a pointer in an arena: the free dispatch's question
/// ([`push_if_mine`](super::free::push_if_mine)), its slow answers taken
/// by tail calls.
///
/// # Safety
/// As [`free`], for a pointer that lies in an arena.
#[inline(always)]
unsafe fn free_in_arena(ptr: *mut u8) {
    // `fast` is null with the debug allocator on or no heap bound: such
    // frees take `free_pool_slow` before anything of `ptr` is read.
    let heap = heap_slot::fast();
    if debug::CHECKS || heap.is_null() {
        // SAFETY: `free`'s contract: a live block of the malloc family in
        // an arena, or anything under the debug allocator.
        return unsafe { free_pool_slow(ptr) };
    }
    // SAFETY: `heap` is not null, so the debug allocator is off and `ptr`
    // a live pool block (`free`'s contract, and it lies in an arena) freed
    // by the caller; `heap` is the calling thread's bound heap: what
    // `push_if_mine` requires.
    match unsafe { super::free::push_if_mine(heap, ptr) } {
        LocalFree::Pushed => {}
        // SAFETY: `push_if_mine` just freed into `pool`, an attached pool of
        // the calling thread's heap, leaving `used` blocks in use.
        LocalFree::SlowPath(pool, used, frees) => unsafe { free_slow(heap, pool, used, frees) },
        // SAFETY: a live pool block freed by the caller, untouched by
        // `push_if_mine`; `pool` is its pool, not an attached one of
        // `heap`'s (the owner word differs), and `heap` the calling
        // thread's: what `free_elsewhere` requires (as in `free_block`).
        LocalFree::Elsewhere(pool) => unsafe { super::free::free_elsewhere(heap, pool, ptr) },
    }
}

/// `free` of a pointer in no arena: glibc's (or null), unless the debug
/// allocator is on.
///
/// # Safety
/// As [`free`], for a pointer in no arena.
#[inline(never)]
unsafe extern "C" fn free_foreign(ptr: *mut u8) {
    if hooks::known_off() && !debug::CHECKS {
        // SAFETY: `free`'s contract: null, or a live block of the malloc
        // family that is in no arena, so glibc's.
        return unsafe { glibc::free(ptr) };
    }
    // SAFETY: `free`'s contract: `ptr` is null or a live block of the
    // malloc family, which is `free_general`'s contract too.
    unsafe { free_general(ptr, None) }
}

/// `free` of a pointer in an arena when the fast path has no heap: a
/// thread without a heap, or the debug allocator on. (A block of another
/// heap's pool or of a detached one, freed by a thread with a heap, goes
/// straight to `free::free_elsewhere`.)
///
/// # Safety
/// As [`free`], for a pointer in an arena.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_pool_slow(ptr: *mut u8) {
    if hooks::known_off() && !debug::CHECKS {
        // SAFETY: `free`'s contract: a live block of the malloc family, in
        // an arena, so a live pool block.
        return unsafe { super::free::free_small(ptr) };
    }
    // SAFETY: `free`'s contract: `ptr` is a live block of the malloc
    // family, which is `free_general`'s contract too.
    unsafe { free_general(ptr, None) }
}

/// The heap's work after a local free that emptied its pool or fell on
/// the tick.
///
/// # Safety
/// As [`Heap::free_slow`]: `heap` is the calling thread's heap (owner
/// capacity), `pool` an attached pool of it just freed into, `used` its
/// count of blocks in use after that free.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_slow(heap: *mut Heap, pool: *mut Pool, used: u32, frees: usize) {
    // SAFETY: this function's `# Safety` is `free_slow`'s.
    unsafe { (*heap).free_slow(pool, used, frees) }
}

/// Every free the fast path does not take; `expected` is the layout of
/// `free_sized`/`free_aligned_sized`, checked by the debug allocator.
///
/// # Safety
/// `ptr` must be null or a live block of the process's `malloc` family,
/// freed by the caller.
#[inline(never)]
unsafe fn free_general(ptr: *mut u8, expected: Option<Layout>) {
    if hooks::enabled() {
        if !ptr.is_null() {
            // SAFETY: the hooks check `ptr` before using it.
            unsafe { hooks::free_with::<CApi>(ptr, expected, "free") };
        }
        return;
    }
    // SAFETY: `ptr` is null or a live block of the malloc family (this
    // function's `# Safety`), which is what `free_raw` requires.
    unsafe { free_raw(ptr) }
}

/// C's `realloc`.
///
/// The fast path: a pool block that the new size still fits (as the
/// general path decides, below), with the debug allocator off, stays in
/// place, without a frame; everything else is a tail call of
/// `realloc_slow`.
///
/// # Safety
/// As [`free`] for `ptr`.
#[inline(always)]
pub unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        // CPython grows many of its buffers from nothing this way.
        // SAFETY: `malloc` has no precondition.
        return unsafe { malloc(size) };
    }
    let block = ptr.cast::<u8>();
    // A null `fast` heap may mean the debug allocator is on; a thread
    // without a heap just takes the general path.
    if !debug::CHECKS
        && asan::REDZONE == 0
        && size != 0
        && arena_bitmap::contains(block)
        && !heap_slot::fast().is_null()
    {
        // SAFETY: `block` is a live block of the malloc family (`realloc`'s
        // `# Safety`, as `free`'s) lying in an arena, so a pool block in
        // use: its pool header is live.
        let class = unsafe { (*Pool::of(block)).class() };
        if fits_in_place(class, size) {
            return ptr;
        }
        // SAFETY: `block` is a live pool block (the bitmap test above, and
        // `realloc`'s `# Safety`) of `class` (read from its pool header),
        // with the debug allocator and AddressSanitizer off and `size` not
        // 0 (the conditions tested above): what `realloc_move` requires.
        return unsafe { realloc_move(block, class, size) }.cast();
    }
    // SAFETY: `realloc`'s contract is `realloc_slow`'s.
    unsafe { realloc_slow(ptr, size) }
}

/// `realloc` of a pool block of `class` that does not stay in place: a
/// new block of `size` bytes through `malloc`'s fast path, the prefix
/// copied, the old block freed through `free`'s (the bitmap already said
/// it lies in an arena). On failure the old block is left alone and
/// `errno` is `ENOMEM` (set by `malloc`).
///
/// # Safety
/// `ptr` must be a live pool block of `class`, the debug allocator and
/// AddressSanitizer off, and `size` not 0.
#[inline(never)]
unsafe extern "C" fn realloc_move(ptr: *mut u8, class: usize, size: usize) -> *mut u8 {
    // SAFETY: `malloc` has no precondition.
    let new = unsafe { malloc(size) }.cast::<u8>();
    if new.is_null() {
        return new;
    }
    // SAFETY: both blocks are live and distinct; the old one holds
    // `block_size(class)` bytes, the new one `size`; the old one is a live
    // pool block (this function's `# Safety`), in an arena, freed here.
    unsafe {
        ptr::copy_nonoverlapping(ptr, new, block_size(class).min(size));
        free_in_arena(ptr);
    }
    new
}

/// Whether a block of `class` stays in place for a `realloc` to `size`
/// bytes (not 0): `size` fits it and would not waste more than a quarter
/// of it (CPython's rule).
#[inline(always)]
pub(crate) fn fits_in_place(class: usize, size: usize) -> bool {
    let block = block_size(class);
    size <= block && (class_of_size(size) == class || size * 4 >= block * 3)
}

/// `realloc` off its fast path.
///
/// # Safety
/// As [`realloc`], for a non-null `ptr`.
#[inline(never)]
unsafe extern "C" fn realloc_slow(ptr: *mut c_void, size: usize) -> *mut c_void {
    let ptr = ptr.cast::<u8>();
    // `realloc` took the null pointer before its tail call here.
    debug_assert!(!ptr.is_null());
    if size == 0 {
        // SAFETY: `realloc`'s contract on `ptr` is `free`'s.
        unsafe { free(ptr.cast()) };
        return ptr::null_mut();
    }
    if hooks::enabled() {
        // SAFETY: the hooks check `ptr` before using it.
        let new = unsafe { hooks::realloc_with::<CApi>(ptr, None, size) };
        if new.is_null() {
            set_errno(libc::ENOMEM);
        }
        return new.cast();
    }
    if !arena_bitmap::contains(ptr) {
        if size > C_POOL_MAX_REQUEST {
            // SAFETY: `realloc`'s contract: a live block of the malloc
            // family in no arena, so glibc's.
            return unsafe { glibc::realloc(ptr, size) }.cast();
        }
        // Shrunk to a size the pools serve: moved into a pool block, so
        // that every default-aligned C block of a pool size is a pool
        // block, which Rust code taking it over relies on (its `dealloc`
        // with a small layout goes to the pool free without asking the
        // arena bitmap: `Vec::from_raw_parts` over a block that glibc kept
        // crashed there).
        // SAFETY: `malloc` has no precondition.
        let new = unsafe { malloc(size) }.cast::<u8>();
        if !new.is_null() {
            // SAFETY: `ptr` is a live glibc block (above) holding
            // `usable_size` bytes, `new` a distinct live block of `size`;
            // the old block is freed once, by glibc, whose it is.
            unsafe {
                let old = glibc::usable_size(ptr);
                ptr::copy_nonoverlapping(ptr, new, old.min(size));
                glibc::free(ptr);
            }
        }
        return new.cast();
    }
    if debug::CHECKS {
        debug::check_block(ptr, false, "realloc", format_args!(""));
    }
    // SAFETY: `ptr` is a live block of the malloc family (`realloc`'s
    // `# Safety`, as `free`'s) lying in an arena, so a pool block in use:
    // its pool header is live.
    let class = unsafe { (*Pool::of(ptr)).class() };
    let block = block_size(class);
    if fits_in_place(class, size) && asan::REDZONE == 0 {
        return ptr.cast();
    }
    // SAFETY: `malloc` has no precondition.
    let new = unsafe { malloc(size) }.cast::<u8>();
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; the old one holds
        // `block` bytes, the new one `size`.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new, block.min(size));
            check_and_free_small(ptr);
        }
    }
    new.cast()
}

/// `reallocarray`: `realloc(ptr, count * size)`, null with `ENOMEM` (and
/// `ptr` untouched) if the product overflows.
///
/// # Safety
/// As [`realloc`].
pub unsafe fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: `reallocarray`'s contract on `ptr` is `realloc`'s.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// POSIX's `posix_memalign`.
///
/// # Safety
/// `memptr` must be valid for a pointer write.
pub unsafe fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let block = alloc_aligned(align, size);
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `posix_memalign`'s contract: `memptr` is valid for a write.
    unsafe { *memptr = block.cast() };
    0
}

/// C11's `aligned_alloc`: null with `EINVAL` unless `align` is a power of
/// two.
///
/// # Safety
/// As [`malloc`].
pub unsafe fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    alloc_aligned(align, size).cast()
}

/// glibc's `memalign`: an alignment that is not a power of two is rounded
/// up to one; one above `SIZE_MAX / 2 + 1` is refused with `EINVAL`.
///
/// # Safety
/// As [`malloc`].
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    alloc_aligned(align, size).cast()
}

fn page_size() -> usize {
    // SAFETY: `sysconf` reads a value the loader recorded; no allocation.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `valloc`: page-aligned.
///
/// # Safety
/// As [`malloc`].
pub unsafe fn valloc(size: usize) -> *mut c_void {
    alloc_aligned(page_size(), size).cast()
}

/// `pvalloc`: page-aligned, the size rounded up to whole pages.
///
/// # Safety
/// As [`malloc`].
pub unsafe fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(rounded) = size.checked_add(page - 1) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    alloc_aligned(page, rounded & !(page - 1)).cast()
}

/// `malloc_usable_size`: bytes that may be used in the block, 0 for null.
///
/// # Safety
/// As [`free`] for `ptr`.
pub unsafe fn malloc_usable_size(ptr: *mut c_void) -> usize {
    let ptr = ptr.cast::<u8>();
    if ptr.is_null() {
        return 0;
    }
    if hooks::enabled() {
        return hooks::usable_size::<CApi>(ptr);
    }
    if arena_bitmap::contains(ptr) {
        if debug::CHECKS {
            debug::check_block(ptr, false, "malloc_usable_size", format_args!(""));
        }
        // SAFETY: `ptr` is a live block of the malloc family (this function's
        // `# Safety`, as `free`'s) lying in an arena, so a pool block in use:
        // its pool header is live.
        return unsafe { (*Pool::of(ptr)).block_size() };
    }
    // SAFETY: `ptr` is a live block of the malloc family (this function's
    // `# Safety`, as `free`'s) in no arena, so glibc's: what
    // `glibc::usable_size` requires.
    unsafe { glibc::usable_size(ptr) }
}

/// C23's `free_sized`.
///
/// # Safety
/// As [`free`]; `size` is the size the block was requested with.
pub unsafe fn free_sized(ptr: *mut c_void, size: usize) {
    // SAFETY: `free_sized`'s contract on `ptr` is `free_aligned_sized`'s.
    unsafe { free_aligned_sized(ptr, ALIGNMENT, size) }
}

/// C23's `free_aligned_sized`.
///
/// # Safety
/// As [`free`]; `align` and `size` are those the block was requested with.
pub unsafe fn free_aligned_sized(ptr: *mut c_void, align: usize, size: usize) {
    if hooks::known_off() {
        // SAFETY: `ptr` is null or a live block of the malloc family (this
        // function's `# Safety`, as `free`'s), all `free` requires.
        return unsafe { free(ptr) };
    }
    let expected = Layout::from_size_align(size, align.max(ALIGNMENT)).ok();
    // SAFETY: `ptr` is null or a live block of the malloc family, freed by
    // the caller (this function's `# Safety`, as `free`'s): what
    // `free_general` requires; the hooks check `expected` against the block.
    unsafe { free_general(ptr.cast(), expected) }
}

/// glibc's version of a symbol we replace, found after us in the lookup
/// order (null if there is none).
fn glibc_symbol(name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: `dlsym` with a NUL-terminated name; it may allocate, which
    // comes back to us, outside any allocation of ours. The symbol found
    // after us is the standard function of that name (glibc's), whose C
    // signature the callers transmute to.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
}

/// `malloc_trim`: returns free pool memory to the OS
/// ([`release_free_memory`](super::release_free_memory)), then lets glibc
/// trim the heap its large blocks live in. 1 if memory was released.
pub fn malloc_trim(pad: usize) -> c_int {
    let released = super::release_free_memory();
    let trim = glibc_symbol(c"malloc_trim");
    let glibc_released = if trim.is_null() {
        0
    } else {
        // SAFETY: glibc's `int malloc_trim(size_t)`.
        unsafe { core::mem::transmute::<*mut c_void, extern "C" fn(usize) -> c_int>(trim)(pad) }
    };
    c_int::from(released > 0 || glibc_released != 0)
}

/// `malloc_stats`: PyMalloc's table, then glibc's report on its large
/// blocks, on stderr.
pub fn malloc_stats() {
    use std::io::Write;
    let table = format!("{}", super::alloc_stats());
    let _ = std::io::stderr().write_all(table.as_bytes());
    let stats = glibc_symbol(c"malloc_stats");
    if !stats.is_null() {
        // SAFETY: glibc's `void malloc_stats(void)`.
        unsafe { core::mem::transmute::<*mut c_void, extern "C" fn()>(stats)() };
    }
}

/// `mallinfo2`: glibc's figures for its blocks plus PyMalloc's arenas
/// (`arena`: bytes mapped, `uordblks`: bytes in pool blocks in use,
/// `fordblks`: the rest of the arenas).
pub fn mallinfo2() -> libc::mallinfo2 {
    let info = glibc_symbol(c"mallinfo2");
    let mut total = if info.is_null() {
        libc::mallinfo2 {
            arena: 0,
            ordblks: 0,
            smblks: 0,
            hblks: 0,
            hblkhd: 0,
            usmblks: 0,
            fsmblks: 0,
            uordblks: 0,
            fordblks: 0,
            keepcost: 0,
        }
    } else {
        // SAFETY: glibc's `struct mallinfo2 mallinfo2(void)`.
        unsafe { core::mem::transmute::<*mut c_void, extern "C" fn() -> libc::mallinfo2>(info)() }
    };
    let ours = super::alloc_stats();
    let mapped = ours.arenas_in_use * super::size_class::ARENA_SIZE;
    total.arena += mapped;
    total.uordblks += ours.small_bytes_in_use;
    total.fordblks += mapped.saturating_sub(ours.small_bytes_in_use);
    total
}

/// The old `mallinfo`: [`mallinfo2`] with each figure cut to an `int`.
pub fn mallinfo() -> libc::mallinfo {
    let wide = mallinfo2();
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    libc::mallinfo {
        arena: int(wide.arena),
        ordblks: int(wide.ordblks),
        smblks: int(wide.smblks),
        hblks: int(wide.hblks),
        hblkhd: int(wide.hblkhd),
        usmblks: int(wide.usmblks),
        fsmblks: int(wide.fsmblks),
        uordblks: int(wide.uordblks),
        fordblks: int(wide.fordblks),
        keepcost: int(wide.keepcost),
    }
}

/// Makes glibc's allocator set itself up now, from a constructor, while
/// the process has one thread.
///
/// glibc's `fork` keeps its allocator consistent in the child by locking
/// every arena first, but only once that allocator is initialised: its
/// first call sets it up without any lock, as glibc assumes the process
/// is still single-threaded then. A program normally calls glibc's
/// `malloc` long before it starts a thread (`pthread_create` itself
/// allocates). With PyMalloc as the process's `malloc`, every small
/// request is ours, and glibc's allocator could be reached first by a
/// thread's first large block, while another thread forks: the child then
/// inherits a main arena caught half-extended, and its first large
/// allocation aborts in glibc ("malloc assertion failure in sysmalloc";
/// tests/c/glibc_ready.c checks the set-up, tests/c/fork.c the fork).
/// One block allocated and freed here puts glibc's first call before any
/// thread exists (in a process that loads this library with `dlopen`
/// after starting threads, the caller must be the one to exclude forks).
///
/// It also caps glibc's arenas (`os::cap_glibc_arenas`) and shortens the
/// retention of PyMalloc's empty arenas (`purge::retain_briefly`), both
/// choices for a process whose `malloc` PyMalloc is.
pub extern "C" fn prepare_glibc() {
    super::os::cap_glibc_arenas();
    // Empty arenas go back after 20 ms in a process whose `malloc` we are
    // (see `purge::retain_briefly`).
    super::purge::retain_briefly();
    let block = glibc::alloc(1, ALIGNMENT, false);
    // SAFETY: `block` is null or the live block glibc just returned.
    unsafe { glibc::free(block) };
}

/// With the `override` feature, this crate is the process's `malloc`.
#[cfg(feature = "override")]
mod exports {
    crate::__export_c_allocator!();
}

/// Defines the exported C symbols (`malloc`, `free`, ... `mallinfo2`) in
/// the invoking crate, each a call of the function of the same name in
/// `pymem::__cabi`. Used by the `override` feature and by `pymem-malloc`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_c_allocator {
    () => {
        $crate::__export_c_allocator! {
            malloc(size: usize) -> *mut ::core::ffi::c_void;
            calloc(count: usize, size: usize) -> *mut ::core::ffi::c_void;
            realloc(ptr: *mut ::core::ffi::c_void, size: usize) -> *mut ::core::ffi::c_void;
            reallocarray(ptr: *mut ::core::ffi::c_void, count: usize, size: usize)
                -> *mut ::core::ffi::c_void;
            free(ptr: *mut ::core::ffi::c_void) -> ();
            cfree(ptr: *mut ::core::ffi::c_void) -> () = free;
            free_sized(ptr: *mut ::core::ffi::c_void, size: usize) -> ();
            free_aligned_sized(ptr: *mut ::core::ffi::c_void, align: usize, size: usize) -> ();
            posix_memalign(memptr: *mut *mut ::core::ffi::c_void, align: usize, size: usize)
                -> ::core::ffi::c_int;
            aligned_alloc(align: usize, size: usize) -> *mut ::core::ffi::c_void;
            memalign(align: usize, size: usize) -> *mut ::core::ffi::c_void;
            valloc(size: usize) -> *mut ::core::ffi::c_void;
            pvalloc(size: usize) -> *mut ::core::ffi::c_void;
            malloc_usable_size(ptr: *mut ::core::ffi::c_void) -> usize;
            malloc_trim(pad: usize) -> ::core::ffi::c_int;
            malloc_stats() -> ();
            mallinfo2() -> $crate::__cabi::Mallinfo2;
            mallinfo() -> $crate::__cabi::Mallinfo;
        }
        /// Sets glibc's allocator up before `main`: see
        /// `pymem::__cabi::prepare_glibc`.
        #[used]
        #[link_section = ".init_array"]
        static __PYMEM_PREPARE_GLIBC: extern "C" fn() = $crate::__cabi::prepare_glibc;
    };
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $(= $target:ident)?;)*) => {
        $(
            /// The C function of this name, served by PyMalloc.
            ///
            /// # Safety
            /// As the C function's contract.
            #[no_mangle]
            #[allow(unused_unsafe, clippy::unused_unit)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                // SAFETY: the C function's contract, which is the Rust
                // function's of the same name.
                unsafe { $crate::__export_c_allocator!(@call $name $($target)?; $($arg),*) }
            }
        )*
    };
    (@call $name:ident; $($arg:ident),*) => { $crate::__cabi::$name($($arg),*) };
    (@call $name:ident $target:ident; $($arg:ident),*) => { $crate::__cabi::$target($($arg),*) };
}
