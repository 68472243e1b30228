//! Requests above the small threshold (or with an alignment no class
//! honours) go to the system allocator, counted.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use super::registry::Registry;
use crate::sync::Ordering;

fn note_alloc(registry: &Registry, size: usize) {
    registry.large_allocs.fetch_add(1, Ordering::Relaxed);
    let bytes = registry.large_bytes.fetch_add(size, Ordering::Relaxed) + size;
    registry.note_footprint(bytes + registry.arena_bytes.load(Ordering::Relaxed));
}

fn note_free(registry: &Registry, size: usize) {
    registry.large_allocs.fetch_sub(1, Ordering::Relaxed);
    registry.large_bytes.fetch_sub(size, Ordering::Relaxed);
}

/// # Safety
/// As `GlobalAlloc::alloc`.
pub(crate) unsafe fn alloc(registry: &Registry, layout: Layout, zeroed: bool) -> *mut u8 {
    // SAFETY: forwarded caller contract.
    let ptr = unsafe {
        if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    };
    if !ptr.is_null() {
        note_alloc(registry, layout.size());
    }
    ptr
}

/// # Safety
/// As `GlobalAlloc::dealloc`, for a pointer from [`alloc`].
pub(crate) unsafe fn dealloc(registry: &Registry, ptr: *mut u8, layout: Layout) {
    if super::debug::CHECKS {
        super::debug::check_large(ptr, layout);
    }
    note_free(registry, layout.size());
    // SAFETY: forwarded caller contract.
    unsafe { System.dealloc(ptr, layout) }
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
    // SAFETY: forwarded caller contract.
    let new = unsafe { System.realloc(ptr, layout, capacity) };
    if !new.is_null() {
        super::large_credit::note_resize(registry, layout.size(), new_size);
    }
    new
}

/// Bytes the block at `ptr` can hold without moving (the system allocator's
/// `malloc_usable_size`), or 0 where that is not known.
///
/// # Safety
/// `ptr` must be a live block from [`alloc`] or [`realloc`].
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    #[cfg(target_os = "linux")]
    // SAFETY: `ptr` is a live block of the system allocator (caller
    // contract), the one `malloc_usable_size` answers for.
    return unsafe { libc::malloc_usable_size(ptr.cast()) };
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ptr;
        0
    }
}
