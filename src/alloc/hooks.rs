//! The debug allocator, in the manner of CPython's `PYTHONMALLOC=debug`
//! hooks: on with `PYMEM_DEBUG=1` in the environment (read once, at the
//! first allocation, without allocating) or always with the `debug` cargo
//! feature.
//!
//! Every block is wrapped in guards and its contents are poisoned with
//! recognisable bytes:
//!
//! ```text
//!          front (max(32, align) bytes)            size bytes          8 bytes
//! +---------------------+----------+-------------------------------+----------+
//! | (links)     | size  | FD x 8   | CD CD CD ... (fresh)          | FD x 8   |
//! | (padding)   | (u64) | guard    | DD DD DD ... (after free)     | guard    |
//! +---------------------+----------+-------------------------------+----------+
//!                                  ^ pointer handed out
//! ```
//!
//! On free the guards are checked (an underrun damages the front one, an
//! overrun the rear one), the recorded size is compared with the layout's,
//! and the size word is replaced by a marker so that a second free of the
//! same block is recognised. A pointer PyMalloc never handed out is caught
//! by the arena registry (small blocks) or by its missing guard (large
//! ones). Each mistake aborts with a message naming the block.

use core::alloc::Layout;
use core::sync::atomic::{AtomicU8, Ordering};

use super::{asan, debug, os, size_class, PyMalloc};

/// Byte written into the guards (CPython's `PYMEM_FORBIDDENBYTE`).
pub const FORBIDDEN_BYTE: u8 = 0xFD;
/// Byte that fills fresh memory (CPython's `PYMEM_CLEANBYTE`).
pub const CLEAN_BYTE: u8 = 0xCD;
/// Byte that fills freed memory (CPython's `PYMEM_DEADBYTE`).
pub const DEAD_BYTE: u8 = 0xDD;

const GUARD: usize = 8;
const WORD: usize = core::mem::size_of::<usize>();
/// Replaces the size word of a freed block.
const FREED_MARK: usize = usize::MAX ^ 0xDEAD;

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the debug hooks are on. Decided once per process.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    if cfg!(feature = "debug") {
        return true;
    }
    match MODE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => decide(),
    }
}

/// Whether the hooks are known to be off (decided, and not the feature):
/// the allocator's fast paths test this one byte and nothing else.
#[inline(always)]
pub(crate) fn known_off() -> bool {
    !cfg!(feature = "debug") && MODE.load(Ordering::Relaxed) == OFF
}

#[cold]
#[inline(never)]
fn decide() -> bool {
    // SAFETY: `getenv` reads the environment without allocating; the name
    // is a NUL-terminated literal.
    let value = unsafe { libc::getenv(c"PYMEM_DEBUG".as_ptr()) };
    // SAFETY: a non-null result is a NUL-terminated string.
    let on = !value.is_null() && unsafe { *value == b'1' as libc::c_char && *value.add(1) == 0 };
    let mode = if on { ON } else { OFF };
    // The first thread to decide wins; every thread then agrees.
    match MODE.compare_exchange(UNKNOWN, mode, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => on,
        Err(decided) => decided == ON,
    }
}

/// Whether the debug hooks are on in this process: the `debug` feature, or
/// `PYMEM_DEBUG=1` in the environment when the first allocation happened.
///
/// ```
/// // Nothing set in a doctest's environment, and no `debug` feature:
/// assert_eq!(pymem::debug_allocator_enabled(), cfg!(feature = "debug") ||
///     std::env::var("PYMEM_DEBUG").as_deref() == Ok("1"));
/// ```
pub fn debug_allocator_enabled() -> bool {
    enabled()
}

/// Bytes before the pointer handed out: room for the free-list words the
/// allocator writes into a freed block (so they do not clobber what follows),
/// the size word and the front guard, rounded up to the alignment.
#[inline]
fn front(align: usize) -> usize {
    align.max(2 * WORD + WORD + GUARD)
}

/// The layout of the block that carries a user block and its guards, or
/// `None` if that would overflow.
#[inline]
fn outer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(front(layout.align()) + GUARD)?;
    Layout::from_size_align(size, layout.align()).ok()
}

/// # Safety
/// As `GlobalAlloc::alloc`.
pub(crate) unsafe fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let Some(outer) = outer(layout) else {
        return core::ptr::null_mut();
    };
    // SAFETY: a valid, non-zero layout.
    let base = unsafe { PyMalloc::raw_alloc(outer) };
    if base.is_null() {
        return base;
    }
    let front = front(layout.align());
    let size = layout.size();
    // SAFETY: `base` holds `front + size + GUARD` bytes.
    unsafe {
        let user = base.add(front);
        user.sub(GUARD + WORD).cast::<usize>().write_unaligned(size);
        user.sub(GUARD).write_bytes(FORBIDDEN_BYTE, GUARD);
        user.write_bytes(if zeroed { 0 } else { CLEAN_BYTE }, size);
        user.add(size).write_bytes(FORBIDDEN_BYTE, GUARD);
        user
    }
}

/// # Safety
/// As `GlobalAlloc::dealloc`, for a pointer from [`alloc`].
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded caller contract; `check` aborts on what it can see
    // is not a live block of ours.
    unsafe {
        let base = check(ptr, layout, "free");
        ptr.write_bytes(DEAD_BYTE, layout.size());
        ptr.sub(GUARD + WORD)
            .cast::<usize>()
            .write_unaligned(FREED_MARK);
        // `check` passed, so the block was allocated with this outer layout.
        PyMalloc::raw_dealloc(base, outer(layout).unwrap_unchecked());
    }
}

/// # Safety
/// As `GlobalAlloc::realloc`, for a pointer from [`alloc`].
pub(crate) unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded caller contract.
    unsafe {
        check(ptr, layout, "realloc");
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = alloc(new_layout, false);
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            dealloc(ptr, layout);
        }
        new
    }
}

/// Checks the guards and size word of a block about to be freed; returns
/// the start of its outer block.
unsafe fn check(ptr: *mut u8, layout: Layout, what: &str) -> *mut u8 {
    let size = layout.size();
    let base = ptr.wrapping_sub(front(layout.align()));
    let small = outer(layout).is_some_and(|o| size_class::route(o.size(), o.align()).is_some());
    if small && !debug::in_arena(base) {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p} (size {size}): \
             not a pointer PyMalloc handed out"
        ));
    }
    // A freed block is poisoned for AddressSanitizer; the header must stay
    // readable for the double-free check.
    asan::unpoison(ptr.wrapping_sub(GUARD + WORD), GUARD + WORD);
    // SAFETY: the header before a block is readable: small blocks lie in a
    // mapped arena (checked above), large ones in the system allocator's.
    let (recorded, front_guard) = unsafe {
        (
            ptr.sub(GUARD + WORD).cast::<usize>().read_unaligned(),
            ptr.sub(GUARD).cast::<[u8; GUARD]>().read(),
        )
    };
    if recorded == FREED_MARK {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p} (size {size}): double free \
             (the block was already freed)"
        ));
    }
    if front_guard != [FORBIDDEN_BYTE; GUARD] {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p} (size {size}): front guard damaged \
             (buffer underrun, or not a block of PyMalloc's): expected {:02x?}, found {:02x?}",
            [FORBIDDEN_BYTE; GUARD], front_guard
        ));
    }
    if recorded != size {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p}: freed with size {size} but allocated \
             with size {recorded} (wrong layout)"
        ));
    }
    // SAFETY: the block was allocated with `size` bytes plus the rear guard.
    let rear_guard = unsafe { ptr.add(size).cast::<[u8; GUARD]>().read_unaligned() };
    if rear_guard != [FORBIDDEN_BYTE; GUARD] {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p} (size {size}): rear guard damaged \
             (buffer overrun) at {:p}: expected {:02x?}, found {:02x?}",
            ptr.wrapping_add(size),
            [FORBIDDEN_BYTE; GUARD],
            rear_guard
        ));
    }
    base
}
