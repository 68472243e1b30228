//! Cheap misuse detection, on in debug builds and with the `debug` feature.
//!
//! Every arena is registered in a bitmap indexed by `address >> ARENA_SHIFT`
//! (16 MiB of address space reserved once, touched only where arenas are).
//! On free, the bitmap, the pool header's magic and the block geometry tell
//! whether the pointer is a block PyMalloc handed out; a freed block carries
//! a tag in its second word, and a free of a tagged block is confirmed as a
//! double free by finding it on the pool's free list.

use core::alloc::Layout;
use core::ptr;

use super::asan;
use super::os;
use super::pool::{Block, Pool, POOL_MAGIC};
use super::size_class::{block_size, ARENA_MASK, ARENA_SHIFT, POOL_SIZE};
// Not model-checked (it only observes), and a static: plain std atomics.
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Whether frees are checked.
pub(crate) const CHECKS: bool = cfg!(any(debug_assertions, feature = "debug"));

/// Arenas lie below `pool::ADDRESS_LIMIT` (2^48; checked when mapped),
/// which covers x86-64 (47-bit user space) and aarch64 (48-bit).
const ADDRESS_BITS: u32 = super::pool::ADDRESS_LIMIT.trailing_zeros();
const BITMAP_WORDS: usize = 1 << (ADDRESS_BITS - ARENA_SHIFT - 6);
const BITMAP_BYTES: usize = BITMAP_WORDS * core::mem::size_of::<usize>();

static ARENA_BITMAP: AtomicPtr<AtomicUsize> = AtomicPtr::new(ptr::null_mut());

/// Written into the second word of a freed block, xor-ed with its address.
const FREED_TAG: usize = 0xDEAD_F4EE_B10C_0000;

fn bitmap() -> *mut AtomicUsize {
    let map = ARENA_BITMAP.load(Ordering::Acquire);
    if !map.is_null() {
        return map;
    }
    let fresh = os::map_aligned(BITMAP_BYTES, 4096).cast::<AtomicUsize>();
    if fresh.is_null() {
        os::fatal(format_args!("cannot reserve the debug arena bitmap"));
    }
    match ARENA_BITMAP.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => fresh,
        Err(winner) => {
            // SAFETY: our mapping lost the race and was never shared.
            unsafe { os::unmap(fresh.cast(), BITMAP_BYTES) };
            winner
        }
    }
}

fn bit(addr: usize) -> Option<(&'static AtomicUsize, usize)> {
    let index = addr >> ARENA_SHIFT;
    if index >= BITMAP_WORDS * 64 {
        return None;
    }
    // SAFETY: the bitmap is BITMAP_WORDS words long, mapped zeroed, never
    // unmapped; zeroed memory is a valid AtomicUsize.
    let word = unsafe { &*bitmap().add(index / 64) };
    Some((word, 1 << (index % 64)))
}

// Arenas are registered in every build (one atomic OR per mapped
// megabyte), so the debug allocator can be switched on at run time.
pub(crate) fn register_arena(base: *mut u8) {
    if let Some((word, mask)) = bit(base as usize) {
        word.fetch_or(mask, Ordering::Release);
    }
}

pub(crate) fn unregister_arena(base: *mut u8) {
    if let Some((word, mask)) = bit(base as usize) {
        word.fetch_and(!mask, Ordering::Release);
    }
}

/// Whether `ptr` lies in an arena PyMalloc has mapped now.
pub(crate) fn in_arena(ptr: *mut u8) -> bool {
    match bit(ptr as usize & ARENA_MASK) {
        Some((word, mask)) => word.load(Ordering::Acquire) & mask != 0,
        None => false,
    }
}

/// Checks a small free (or a realloc of a small block) before it happens.
/// `owned` tells whether the calling thread owns the block's pool, in which
/// case its free list may be searched.
///
/// A layout smaller than the block's class is accepted: `realloc` grows a
/// block into a class with headroom (`size_class::growth_class`), and the
/// program then frees or reallocates it with the layout it asked for. Only
/// a layout larger than the block is an error.
pub(crate) fn check_small(ptr: *mut u8, layout: Layout, class: usize, owned: bool, what: &str) {
    let (size, align) = (layout.size(), layout.align());
    if !in_arena(ptr) {
        os::fatal(format_args!(
            "{what} of {ptr:p} (size {size}, align {align}): not a pointer PyMalloc handed out"
        ));
    }
    let pool = Pool::of(ptr);
    let offset_in_arena = ptr as usize & !ARENA_MASK;
    // SAFETY: the address is inside a mapped arena, so the pool slot's
    // first bytes are readable; a freed slot has magic 0.
    let magic = unsafe { (*pool).magic.get() };
    if offset_in_arena < POOL_SIZE || magic != POOL_MAGIC {
        os::fatal(format_args!(
            "{what} of {ptr:p} (size {size}, align {align}): not in a pool in use \
             (freed twice, or never allocated)"
        ));
    }
    // SAFETY: a pool in use; its class is stable while it has blocks in use.
    let pool_class = unsafe { (*pool).class() };
    // SAFETY: as above.
    if !unsafe { (*pool).is_block_start(ptr) } {
        os::fatal(format_args!(
            "{what} of {ptr:p} (size {size}, align {align}): not the start of a block \
             (the pool's blocks are {} bytes)",
            block_size(pool_class)
        ));
    }
    if block_size(pool_class) < block_size(class) {
        os::fatal(format_args!(
            "{what} of {ptr:p}: layout of {size} bytes is larger than its {}-byte block \
             (wrong layout passed to dealloc)",
            block_size(pool_class)
        ));
    }
    if owned && is_tagged(ptr) && on_free_list(pool, ptr) {
        os::fatal(format_args!(
            "{what} of {ptr:p} (size {size}, align {align}): double free \
             (the block is already free)"
        ));
    }
}

/// Checks a large free: it must not be a pool block.
pub(crate) fn check_large(ptr: *mut u8, layout: Layout) {
    if in_arena(ptr) {
        os::fatal(format_args!(
            "dealloc of {ptr:p}: a pool block freed with a {}-byte layout (wrong layout)",
            layout.size()
        ));
    }
}

fn is_tagged(ptr: *mut u8) -> bool {
    let tag = ptr.wrapping_add(TAG_OFFSET);
    asan::unpoison(tag, TAG_SIZE);
    // SAFETY: blocks are at least 16 bytes; the caller checked `ptr` is the
    // start of a block.
    let tagged = unsafe { tag.cast::<usize>().read() } == FREED_TAG ^ ptr as usize;
    asan::poison(tag, TAG_SIZE);
    tagged
}

const TAG_OFFSET: usize = core::mem::size_of::<usize>();
const TAG_SIZE: usize = core::mem::size_of::<usize>();

/// Marks a block as freed (its second word; the first is the free link).
pub(crate) fn tag_freed(ptr: *mut u8) {
    let tag = ptr.wrapping_add(TAG_OFFSET);
    asan::unpoison(tag, TAG_SIZE);
    // SAFETY: as in `is_tagged`; the block is being freed by its holder.
    unsafe { tag.cast::<usize>().write(FREED_TAG ^ ptr as usize) };
    asan::poison(tag, TAG_SIZE);
}

fn on_free_list(pool: *mut Pool, ptr: *mut u8) -> bool {
    // SAFETY: the caller owns the pool, so its free list is stable.
    let mut block = unsafe { (*pool).free.get() };
    while !block.is_null() {
        if block == ptr.cast::<Block>() {
            return true;
        }
        // SAFETY: as above.
        block = unsafe { Block::next(block) };
    }
    false
}
