//! The debug allocator, in the manner of CPython's `PYTHONMALLOC=debug`
//! hooks: on with `PYMEM_DEBUG=1` (or `true`, `yes`, `on`) in the
//! environment, read once at the first allocation without allocating and
//! announced on stderr, or always with the `debug` cargo feature.
//!
//! Every block is wrapped in guards and its contents are poisoned with
//! recognisable bytes:
//!
//! ```text
//!          front (max(32, align) bytes)            size bytes          8 bytes
//! +---------------------+----------+-------------------------------+----------+
//! | (links)     | size, | FD x 8   | CD CD CD ... (fresh)          | FD x 8   |
//! | (padding)   | align | guard    | DD DD DD ... (after free)     | guard    |
//! +---------------------+----------+-------------------------------+----------+
//!                                  ^ pointer handed out
//! ```
//!
//! # Never crash on a bad pointer
//!
//! A free is checked before any byte of the block is read: the pointer
//! must lie in one of PyMalloc's arenas (`arena_bitmap`: a pool block) or
//! be recorded in the table of live large blocks (`debug_large`). Anything
//! else is reported, not dereferenced; a pointer or size made of the
//! dead-fill byte (`0xDD`, what a field of a freed block reads as) is named
//! for what it almost always is, a use after free (the classic case: a
//! `Box<String>` dropped twice hands `dealloc` the freed `String`'s
//! `0xDDDD...` pointer and capacity).
//!
//! Then the header word (size and alignment) and the guards are checked
//! (an underrun damages the front guard, an overrun the rear one), the
//! recorded size is compared with the layout's (Rust) or taken as the
//! block's (C's `free`, which has no layout), and the header is replaced by
//! a marker so that a second free of the same block is recognised. Each
//! mistake aborts with a message naming the block.
//!
//! The same wrapping serves both front ends, through [`Backend`]: the Rust
//! `GlobalAlloc` path (`PyMalloc`), whose large blocks go where `large`
//! says, and the C API (`cabi`), whose large blocks are glibc's.

use core::alloc::Layout;
use core::sync::atomic::{AtomicU8, Ordering};

use super::pool::{Pool, POOL_MAGIC};
use super::size_class::{ARENA_MASK, POOL_SIZE};
use super::{arena_bitmap, asan, debug_large, os, size_class, PyMalloc};

/// Byte written into the guards (CPython's `PYMEM_FORBIDDENBYTE`).
pub const FORBIDDEN_BYTE: u8 = 0xFD;
/// Byte that fills fresh memory (CPython's `PYMEM_CLEANBYTE`).
pub const CLEAN_BYTE: u8 = 0xCD;
/// Byte that fills freed memory (CPython's `PYMEM_DEADBYTE`).
pub const DEAD_BYTE: u8 = 0xDD;

const GUARD: usize = 8;
const WORD: usize = core::mem::size_of::<usize>();
/// Replaces the header word of a freed block. Its top byte (0xFF) is no
/// alignment's, so it never reads as a header.
const FREED_MARK: usize = usize::MAX ^ 0xDEAD;
/// The header word: the size in the low 56 bits; in the top byte, log2 of
/// the alignment in the low six bits and [`C_ORIGIN`] above them. No block
/// can be 2^56 bytes long.
const SIZE_BITS: u32 = 56;
/// The header bit of a block the C entry points handed out (`cabi`): such
/// a block may be freed by Rust code that took it over under the
/// `override` feature, with a layout of its own alignment (see
/// [`validate`]).
const C_ORIGIN: usize = 0x40 << SIZE_BITS;
/// The header bits of log2 of the alignment.
const ALIGN_SHIFT_MASK: usize = 0x3F;

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

/// Whether an environment value switches the debug allocator on.
fn switches_on(value: &[u8]) -> bool {
    [&b"1"[..], b"true", b"yes", b"on"]
        .iter()
        .any(|word| value.eq_ignore_ascii_case(word))
}

#[cold]
#[inline(never)]
fn decide() -> bool {
    os::with_env(c"PYMEM_DEBUG", |value| {
        let value = value.unwrap_or(&[]);
        let on = switches_on(value);
        let mode = if on { ON } else { OFF };
        // The first thread to decide wins; every thread then agrees.
        match MODE.compare_exchange(UNKNOWN, mode, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                if on {
                    os::report(format_args!(
                        "debug allocator on (PYMEM_DEBUG={}): guard bytes, fill patterns \
                         and checked frees",
                        core::str::from_utf8(value).unwrap_or("?")
                    ));
                }
                on
            }
            Err(decided) => decided == ON,
        }
    })
}

/// Whether the debug hooks are on in this process: the `debug` feature, or
/// `PYMEM_DEBUG` set to `1`, `true`, `yes` or `on` (in any case) in the
/// environment when the first allocation happened. Switching on is
/// announced on stderr.
///
/// ```
/// // Nothing set in a doctest's environment, and no `debug` feature:
/// let on = std::env::var("PYMEM_DEBUG")
///     .is_ok_and(|v| ["1", "true", "yes", "on"].contains(&v.to_lowercase().as_str()));
/// assert_eq!(pymem::debug_allocator_enabled(), cfg!(feature = "debug") || on);
/// ```
pub fn debug_allocator_enabled() -> bool {
    enabled()
}

/// Whether a word is most likely made of the dead-fill byte, i.e. was read
/// from a freed block: its low byte and half or more of its bytes are
/// `DEAD_BYTE` (a whole word, or a 32-bit field). Such a pointer is odd,
/// so it can be no block of any allocator's.
pub(crate) fn looks_dead(value: usize) -> bool {
    let bytes = value.to_le_bytes();
    bytes[0] == DEAD_BYTE && bytes.iter().filter(|&&b| b == DEAD_BYTE).count() * 2 >= WORD
}

/// Bytes before the pointer handed out: room for the free-list words the
/// allocator writes into a freed block (so they do not clobber what follows),
/// the header word and the front guard, rounded up to the alignment.
#[inline]
fn front(align: usize) -> usize {
    align.max(2 * WORD + WORD + GUARD)
}

/// The layout of the block that carries a user block and its guards, or
/// `None` if that would overflow or the size cannot be recorded.
#[inline]
fn outer(layout: Layout) -> Option<Layout> {
    if layout.size() >> SIZE_BITS != 0 {
        return None;
    }
    let size = layout.size().checked_add(front(layout.align()) + GUARD)?;
    Layout::from_size_align(size, layout.align()).ok()
}

/// The header word of a block of `layout` handed out by the front end
/// whose [`Backend::C_ORIGIN`] is `c_origin`.
fn encode(layout: Layout, c_origin: bool) -> usize {
    let origin = if c_origin { C_ORIGIN } else { 0 };
    layout.size() | (layout.align().trailing_zeros() as usize) << SIZE_BITS | origin
}

/// The layout and origin (C's entry points or not) a header word records,
/// or `None` if it is no header.
fn decode(header: usize) -> Option<(Layout, bool)> {
    let top = header >> SIZE_BITS;
    if top & !(ALIGN_SHIFT_MASK | C_ORIGIN >> SIZE_BITS) != 0 {
        return None;
    }
    let layout = Layout::from_size_align(
        header & ((1 << SIZE_BITS) - 1),
        1 << (top & ALIGN_SHIFT_MASK),
    );
    Some((layout.ok()?, header & C_ORIGIN != 0))
}

/// The allocator under the hooks: hands out and takes back the outer
/// blocks (user block plus guards).
pub(crate) trait Backend {
    /// An outer block for `layout` (non-zero size), or null.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    unsafe fn alloc_outer(layout: Layout) -> *mut u8;

    /// Frees an outer block.
    ///
    /// # Safety
    /// `base` must come from `alloc_outer(layout)` and not be freed yet.
    unsafe fn free_outer(base: *mut u8, layout: Layout);

    /// The class `alloc_outer` serves an outer block of `size` bytes
    /// aligned to `align` from, `None` for a large one (the checks of a
    /// free compare it with what the arena bitmap says).
    fn route(size: usize, align: usize) -> Option<usize>;

    /// Whether this is the C entry points' front end (`cabi`), recorded in
    /// each block's header so that a free from the other front end is
    /// recognised as a hand-over (see [`validate`]).
    const C_ORIGIN: bool = false;
}

/// The Rust path: the allocator proper, without the hooks.
impl Backend for PyMalloc {
    unsafe fn alloc_outer(layout: Layout) -> *mut u8 {
        // SAFETY: `alloc_outer`'s contract (a `GlobalAlloc::alloc` layout)
        // is `raw_alloc`'s.
        unsafe { PyMalloc::raw_alloc(layout) }
    }

    unsafe fn free_outer(base: *mut u8, layout: Layout) {
        // SAFETY: `free_outer`'s contract: `base` came from `raw_alloc`
        // with this layout, as `raw_dealloc` requires.
        unsafe { PyMalloc::raw_dealloc(base, layout) }
    }

    fn route(size: usize, align: usize) -> Option<usize> {
        size_class::route(size, align)
    }
}

/// # Safety
/// As `GlobalAlloc::alloc`.
pub(crate) unsafe fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    // SAFETY: `GlobalAlloc::alloc`'s contract, which `alloc_with` asks.
    unsafe { alloc_with::<PyMalloc>(layout, zeroed) }
}

/// # Safety
/// As `GlobalAlloc::dealloc`, for a pointer from [`alloc`]; anything else
/// is reported.
pub(crate) unsafe fn dealloc(ptr: *mut u8, layout: Layout) {
    // SAFETY: `free_with` checks `ptr` and `layout` before using them.
    unsafe { free_with::<PyMalloc>(ptr, Some(layout), "free") }
}

/// # Safety
/// As `GlobalAlloc::realloc`, for a pointer from [`alloc`].
pub(crate) unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: `realloc_with` checks `ptr` and `layout` before using them.
    unsafe { realloc_with::<PyMalloc>(ptr, Some(layout), new_size) }
}

/// Allocates a guarded block from `B`.
///
/// # Safety
/// As `GlobalAlloc::alloc` (any size, zero included, is accepted).
pub(crate) unsafe fn alloc_with<B: Backend>(layout: Layout, zeroed: bool) -> *mut u8 {
    let Some(outer) = outer(layout) else {
        return core::ptr::null_mut();
    };
    // SAFETY: a valid, non-zero layout.
    let base = unsafe { B::alloc_outer(outer) };
    if base.is_null() {
        return base;
    }
    let front = front(layout.align());
    let size = layout.size();
    // SAFETY: `base` holds `front + size + GUARD` bytes.
    let user = unsafe {
        let user = base.add(front);
        user.sub(GUARD + WORD)
            .cast::<usize>()
            .write_unaligned(encode(layout, B::C_ORIGIN));
        user.sub(GUARD).write_bytes(FORBIDDEN_BYTE, GUARD);
        user.write_bytes(if zeroed { 0 } else { CLEAN_BYTE }, size);
        user.add(size).write_bytes(FORBIDDEN_BYTE, GUARD);
        user
    };
    if !arena_bitmap::contains(user) && !debug_large::insert(user, encode(layout, B::C_ORIGIN)) {
        // SAFETY: allocated just above, never handed out.
        unsafe { B::free_outer(base, outer) };
        return core::ptr::null_mut();
    }
    user
}

/// Frees a guarded block of `B`'s, checked against `expected` if the
/// caller knows the layout (Rust) and on its own header if not (C).
///
/// # Safety
/// None for the caller: whatever `ptr` is, it is checked before use and a
/// mistake aborts with a message.
pub(crate) unsafe fn free_with<B: Backend>(ptr: *mut u8, expected: Option<Layout>, what: &str) {
    let block = validate::<B>(ptr, expected, what);
    // SAFETY: `validate` proved `ptr` a live block of `block.layout`, at
    // `block.front` bytes into an outer block of `block.outer`.
    unsafe {
        ptr.write_bytes(DEAD_BYTE, block.layout.size());
        ptr.sub(GUARD + WORD)
            .cast::<usize>()
            .write_unaligned(FREED_MARK);
        if block.large {
            debug_large::remove(ptr);
        }
        B::free_outer(ptr.sub(block.front), block.outer);
    }
}

/// Resizes a guarded block of `B`'s (always by moving it, so that the old
/// block's misuse stays visible).
///
/// # Safety
/// As [`free_with`]; a `new_size` that cannot be allocated returns null
/// and leaves the block alone.
pub(crate) unsafe fn realloc_with<B: Backend>(
    ptr: *mut u8,
    expected: Option<Layout>,
    new_size: usize,
) -> *mut u8 {
    let block = validate::<B>(ptr, expected, "realloc");
    // The new block is `B`'s, recorded with the alignment its caller will
    // name: the layout's for Rust (which may be below the recorded one, for
    // a C block Rust took over: see `validate`), the block's for C.
    let align = expected.map_or(block.layout.align(), |l| l.align());
    let Ok(new_layout) = Layout::from_size_align(new_size, align) else {
        return core::ptr::null_mut();
    };
    // SAFETY: a valid layout; `ptr` holds `block.layout.size()` bytes and
    // the new block `new_size`; `ptr` is freed with its checked layout.
    unsafe {
        let new = alloc_with::<B>(new_layout, false);
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, block.layout.size().min(new_size));
            free_with::<B>(ptr, Some(block.layout), "realloc");
        }
        new
    }
}

/// The size a guarded block was allocated with (what may be written
/// without damaging its guard), after the checks of a free (for the C
/// API's `malloc_usable_size`, which only glibc targets export).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn usable_size<B: Backend>(ptr: *mut u8) -> usize {
    validate::<B>(ptr, None, "malloc_usable_size").layout.size()
}

/// A block that passed [`validate`].
struct Checked {
    /// The layout it was allocated with.
    layout: Layout,
    /// The outer block's layout, and the user block's offset in it.
    outer: Layout,
    front: usize,
    /// Recorded in `debug_large` (not a pool block).
    large: bool,
}

/// Describes the size a caller passed, if any, for messages.
struct SizeNote(Option<Layout>);

impl core::fmt::Display for SizeNote {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(layout) => write!(f, " (size {})", layout.size()),
            None => Ok(()),
        }
    }
}

/// Proves `ptr` a live block handed out by the hooks, reading nothing
/// before it is known to be one, or aborts with a message.
fn validate<B: Backend>(ptr: *mut u8, expected: Option<Layout>, what: &str) -> Checked {
    let note = SizeNote(expected);
    let small = arena_bitmap::contains(ptr);
    let registered = if small { None } else { debug_large::get(ptr) };
    if !small && registered.is_none() {
        let dead_size = expected.is_some_and(|l| looks_dead(l.size()));
        if looks_dead(ptr as usize) || dead_size {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p}{note}: use after free: the {} is made of \
                 the dead-fill byte {DEAD_BYTE:#x}, so it was read from a block already freed \
                 (a double drop, or a value used after its owner was dropped)",
                if looks_dead(ptr as usize) {
                    "pointer"
                } else {
                    "size"
                }
            ));
        }
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p}{note}: not a pointer PyMalloc handed out, \
             or one already freed (in no arena and no live large block)"
        ));
    }
    if small {
        let pool = Pool::of(ptr);
        // SAFETY: `ptr` lies in a mapped arena (checked above), and so does
        // its pool header slot; a free slot has magic 0.
        let magic = unsafe { (*pool).magic.get() };
        if ptr as usize & !ARENA_MASK < POOL_SIZE || magic != POOL_MAGIC {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p}{note}: not a pointer PyMalloc handed out \
                 (not in a pool in use: freed twice, or never allocated)"
            ));
        }
    }
    // A freed block is poisoned for AddressSanitizer; the header must stay
    // readable for the double-free check.
    asan::unpoison(ptr.wrapping_sub(GUARD + WORD), GUARD + WORD);
    // SAFETY: the 16 bytes before `ptr` are mapped: a pool block's user
    // pointer lies at least one pool slot into its arena (checked above),
    // and a registered large block was handed out with its header there.
    let (header, front_guard) = unsafe {
        (
            ptr.sub(GUARD + WORD).cast::<usize>().read_unaligned(),
            ptr.sub(GUARD).cast::<[u8; GUARD]>().read(),
        )
    };
    if header == FREED_MARK {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p}{note}: double free \
             (the block was already freed)"
        ));
    }
    if let Some(recorded) = registered {
        if header != recorded {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p}{note}: header overwritten \
                 (buffer underrun): expected {recorded:#x}, found {header:#x}"
            ));
        }
    }
    let Some((layout, c_origin)) = decode(header) else {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p}{note}: not a pointer PyMalloc handed out \
             (no valid debug header before it; or a buffer underrun)"
        ));
    };
    let size = layout.size();
    let front = front(layout.align());
    let outer = outer(layout).unwrap_or(layout);
    if small {
        let base = ptr.wrapping_sub(front);
        let pool = Pool::of(ptr);
        // SAFETY: a pool in use (checked above).
        let (starts, block) = unsafe { ((*pool).is_block_start(base), (*pool).block_size()) };
        if Pool::of(base) != pool || !starts || outer.size() > block {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p}{note}: not a pointer PyMalloc handed out \
                 (not where a block of its pool begins, or a buffer underrun)"
            ));
        }
    }
    if front_guard != [FORBIDDEN_BYTE; GUARD] {
        os::fatal(format_args!(
            "debug allocator: {what} of {ptr:p} (size {size}): front guard damaged \
             (buffer underrun, or not a block of PyMalloc's): expected {:02x?}, found {:02x?}",
            [FORBIDDEN_BYTE; GUARD], front_guard
        ));
    }
    if let Some(expected) = expected {
        if expected.size() != size {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p}: freed with size {} but allocated \
                 with size {size} (wrong layout{})",
                expected.size(),
                if looks_dead(expected.size()) {
                    "; the size is made of the dead-fill byte: a use after free"
                } else {
                    ""
                }
            ));
        }
        // Between the two front ends (C code's block freed by Rust code
        // that took it over, or the reverse through `free_sized`), C's
        // `malloc` promises `ALIGNMENT` (16 bytes) whatever the layout the
        // other side names, so alignments are compared from 16 up; within
        // one front end, exactly.
        let (asked, had) = if c_origin == B::C_ORIGIN {
            (expected.align(), layout.align())
        } else {
            (
                expected.align().max(size_class::ALIGNMENT),
                layout.align().max(size_class::ALIGNMENT),
            )
        };
        if asked != had {
            os::fatal(format_args!(
                "debug allocator: {what} of {ptr:p} (size {size}): freed with alignment {} \
                 but allocated with alignment {} (wrong layout)",
                expected.align(),
                layout.align()
            ));
        }
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
    let large = !small;
    // A block outside the arenas that `B` handed out is one no class of
    // `B`'s serves (the other front end routes by other rules). The
    // converse does not hold across the two front ends: a pool block of a
    // C medium class (`size_class::route_c`) that Rust took over is freed
    // with a layout Rust's routing sends to the large path, which finds it
    // in the bitmap (`large::is_c_pool_block`).
    debug_assert!(
        !large || c_origin != B::C_ORIGIN || B::route(outer.size(), outer.align()).is_none()
    );
    Checked {
        layout,
        outer,
        front,
        large,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_that_switch_it_on() {
        for on in ["1", "true", "TRUE", "yes", "Yes", "on", "ON"] {
            assert!(switches_on(on.as_bytes()), "{on}");
        }
        for off in ["", "0", "false", "no", "off", "2", "onn", " 1"] {
            assert!(!switches_on(off.as_bytes()), "{off:?}");
        }
    }

    #[test]
    fn dead_fill_words_are_recognised() {
        assert!(looks_dead(0xDDDD_DDDD_DDDD_DDDD));
        assert!(looks_dead(0x0000_0000_DDDD_DDDD));
        assert!(!looks_dead(0x0000_7F12_3456_7890));
        assert!(!looks_dead(48));
        assert!(!looks_dead(0xDD));
        assert!(!looks_dead(0xDDDD_DDDD_0000_0000));
    }

    #[test]
    fn headers_round_trip() {
        for (size, align) in [(0, 1), (48, 8), (5000, 16), (1 << 40, 4096), (3, 1 << 20)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            for c in [false, true] {
                assert_eq!(decode(encode(layout, c)), Some((layout, c)));
            }
        }
        assert_eq!(decode(FREED_MARK), None);
    }
}
