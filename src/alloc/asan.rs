//! AddressSanitizer annotations, active under `--cfg pymem_asan` (with
//! `-Zsanitizer=address`; see `scripts/asan.sh`), no-ops otherwise.
//!
//! ASan cannot see inside pools: to it, an arena is one mapping. So PyMalloc
//! tells it which bytes are off limits: every free block and every byte of a
//! pool not yet carved is poisoned, a block is unpoisoned for exactly the
//! size requested when it is handed out, and each small request gets a
//! 16-byte poisoned redzone after it (see `size_class::route`). A read of a
//! freed block or a write past the end of a block is then reported as a
//! `use-after-poison`, with the stack of the access.
//!
//! The allocator itself reads and writes the free-list link in the first
//! word of free blocks: it unpoisons that word around each access.

#[cfg(pymem_asan)]
mod sys {
    extern "C" {
        pub(super) fn __asan_poison_memory_region(addr: *const u8, size: usize);
        pub(super) fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
    }
}

/// Extra bytes added after each small request, left poisoned.
pub(crate) const REDZONE: usize = if cfg!(pymem_asan) { 16 } else { 0 };

/// Marks `size` bytes at `addr` as off limits.
#[inline(always)]
pub(crate) fn poison(addr: *const u8, size: usize) {
    #[cfg(pymem_asan)]
    // SAFETY: the ASan runtime accepts any range; it only updates shadow.
    unsafe {
        sys::__asan_poison_memory_region(addr, size)
    };
    #[cfg(not(pymem_asan))]
    let _ = (addr, size);
}

/// Unpoisons a block just handed out (nothing when allocation failed).
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))] // its one caller is the front end
pub(crate) fn unpoison_block(block: *mut u8, size: usize) {
    if cfg!(pymem_asan) && !block.is_null() {
        unpoison(block, size);
    }
}

/// Marks `size` bytes at `addr` as usable.
#[inline(always)]
pub(crate) fn unpoison(addr: *const u8, size: usize) {
    #[cfg(pymem_asan)]
    // SAFETY: the ASan runtime accepts any range; it only updates shadow.
    unsafe {
        sys::__asan_unpoison_memory_region(addr, size)
    };
    #[cfg(not(pymem_asan))]
    let _ = (addr, size);
}
