//! Cheap misuse detection, on in debug builds and with the `debug` feature.
//!
//! On free, the arena bitmap (`arena_bitmap`), the pool header's magic and
//! the block geometry tell whether the pointer is a block PyMalloc handed
//! out; a freed block carries
//! a tag in its second word, and a free of a tagged block is confirmed as a
//! double free by finding it on the pool's free list.

use core::alloc::Layout;

use super::arena_bitmap;
use super::asan;
use super::os;
use super::pool::{Block, Pool, POOL_MAGIC};
use super::size_class::{block_size, ARENA_MASK, POOL_SIZE};

/// Whether frees are checked.
pub(crate) const CHECKS: bool = cfg!(any(debug_assertions, feature = "debug"));

/// Written into the second word of a freed block, xor-ed with its address.
const FREED_TAG: usize = 0xDEAD_F4EE_B10C_0000;

/// Whether `ptr` lies in an arena PyMalloc has mapped now.
pub(crate) fn in_arena(ptr: *mut u8) -> bool {
    arena_bitmap::contains(ptr)
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
    let shown = format_args!(" (size {size}, align {align})");
    let pool_class = check_block(ptr, owned, what, shown);
    if block_size(pool_class) < block_size(class) {
        os::fatal(format_args!(
            "{what} of {ptr:p}: layout of {size} bytes is larger than its {}-byte block \
             (wrong layout passed to dealloc)",
            block_size(pool_class)
        ));
    }
}

/// Checks that `ptr` is a block in use of a live pool, reading nothing
/// before it is known to lie in an arena; returns the pool's class. For
/// frees without a layout (C's `free`), and the first half of
/// [`check_small`]. `shown` describes the request in messages.
pub(crate) fn check_block(
    ptr: *mut u8,
    owned: bool,
    what: &str,
    shown: core::fmt::Arguments<'_>,
) -> usize {
    if !in_arena(ptr) {
        os::fatal(format_args!(
            "{what} of {ptr:p}{shown}: not a pointer PyMalloc handed out"
        ));
    }
    let pool = Pool::of(ptr);
    let offset_in_arena = ptr as usize & !ARENA_MASK;
    // SAFETY: the address is inside a mapped arena, so the pool slot's
    // first bytes are readable; a freed slot has magic 0.
    let magic = unsafe { (*pool).magic.get() };
    if offset_in_arena < POOL_SIZE || magic != POOL_MAGIC {
        os::fatal(format_args!(
            "{what} of {ptr:p}{shown}: not in a pool in use \
             (freed twice, or never allocated)"
        ));
    }
    // SAFETY: a pool in use; its class is stable while it has blocks in use.
    let pool_class = unsafe { (*pool).class() };
    // SAFETY: the magic check above found a pool in use at `pool`, whose
    // header is readable (inside a mapped arena); `is_block_start` reads
    // only its class, as the line above did, and computes.
    if !unsafe { (*pool).is_block_start(ptr) } {
        os::fatal(format_args!(
            "{what} of {ptr:p}{shown}: not the start of a block \
             (the pool's blocks are {} bytes)",
            block_size(pool_class)
        ));
    }
    if owned && is_tagged(ptr) && on_free_list(pool, ptr) {
        os::fatal(format_args!(
            "{what} of {ptr:p}{shown}: double free (the block is already free)"
        ));
    }
    pool_class
}

/// Checks a large free: it must not be a pool block, nor a pointer read
/// from freed memory (which the system allocator would dereference; such a
/// pointer is odd, so no block of any allocator's).
#[cfg(not(loom))] // large blocks and the hooks are not modelled
pub(crate) fn check_large(ptr: *mut u8, layout: Layout) {
    if in_arena(ptr) {
        os::fatal(format_args!(
            "dealloc of {ptr:p}: a pool block freed with a {}-byte layout (wrong layout)",
            layout.size()
        ));
    }
    if super::hooks::looks_dead(ptr as usize) {
        os::fatal(format_args!(
            "dealloc of {ptr:p} (size {}): use after free: the pointer is made of \
             the dead-fill byte {:#x} (read from a freed block)",
            layout.size(),
            super::hooks::DEAD_BYTE
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
///
/// # Safety
/// `ptr` must be the start of a pool block in use that the caller is
/// freeing (checked by [`check_small`] or [`check_block`] just before).
pub(crate) unsafe fn tag_freed(ptr: *mut u8) {
    let tag = ptr.wrapping_add(TAG_OFFSET);
    asan::unpoison(tag, TAG_SIZE);
    // SAFETY: `ptr` is the start of a block in use being freed by the
    // caller (this function's `# Safety`); blocks are at least 16 bytes, so
    // the second word is inside the block, which nobody else reaches.
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
        // SAFETY: `block` is on the pool's free list, which only owner capacity
        // writes while a block of the pool is held (a guest reclaiming a detached
        // pool sets it only when none is held, and we hold `ptr`); free blocks
        // start with their link: `next`'s requirement.
        block = unsafe { Block::next(block) };
    }
    false
}
