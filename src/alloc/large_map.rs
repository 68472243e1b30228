//! Blocks of [`MAP_MIN`] (7/8 of 2 MiB) and more, mapped by PyMalloc itself
//! rather than obtained from the system allocator, so that they can be
//! backed by transparent huge pages.
//!
//! # Why
//!
//! glibc maps a block this large on its own (or carves it from the top of
//! its heap once its dynamic `mmap` threshold has risen) with no advice,
//! so every 4 KiB page of it faults on first touch: a hash table of 7 MiB
//! rebuilt at each growth, or a `Vec` of a few MiB filled once, cost 512
//! page faults per 2 MiB. The `parse` program of `bench/programs` took
//! half of its 22,700 faults in `hashbrown`'s `reserve_rehash` that way.
//! A mapping of ours is aligned to 2 MiB and advised with `MADV_HUGEPAGE`
//! (where the kernel's THP mode allows it, `os::huge_pages_enabled`), so
//! each aligned 2 MiB of it faults once. A block that fills more than 7/8
//! of its whole huge pages is mapped as that many ([`mapping_len`]), so
//! its tail is a huge page too; the tail of any other keeps 4 KiB pages
//! (the kernel backs only aligned, whole huge pages inside a mapping), so
//! a block's resident set is at most an eighth more than the pages it
//! touches.
//!
//! # Which blocks
//!
//! Rust requests of at least [`MAP_MIN`] bytes with an alignment of at
//! most a page ([`serves`]). The routing is by the layout alone, the same
//! at `alloc`, `realloc` and `dealloc`, so a block is ours exactly when
//! the layout it is freed or resized with says so (the *mapping
//! invariant*: a live Rust block whose layout [`serves`] is a mapping of
//! [`mapping_len`] of its size bytes starting at the block). A `realloc`
//! that crosses [`MAP_MIN`] moves the block between the system allocator
//! and a mapping (`large::realloc`), and growth in place never crosses it
//! (`large::usable_size` caps a system block's room below [`MAP_MIN`]).
//!
//! Off where the large-block cache is off ([`large_cache::DISABLED`]):
//! under `override`, every pointer outside the arenas must be glibc's
//! (C's `free` has no size to route by), and under AddressSanitizer every
//! block must be the system allocator's for its reports. Off under loom.
//!
//! # Memory return
//!
//! A freed block is unmapped at once: nothing is kept, so the resident
//! set falls with the `free` and no pass or release is involved.
//!
//! [`large_cache::DISABLED`]: super::large_cache::DISABLED

use core::ptr;

use super::os;
use super::size_class::PAGE_SIZE;

/// The smallest request mapped by us: 7/8 of a huge page, the smallest
/// that [`mapping_len`] rounds up to a whole one.
pub(crate) const MAP_MIN: usize = HUGE_PAGE - HUGE_PAGE / 8 + 1;

/// The size of a transparent huge page on x86-64 and aarch64 with 4 KiB
/// pages, and the alignment of every mapping made here.
const HUGE_PAGE: usize = 2 << 20;

/// Whether mapped blocks are off in this build (see the module docs).
const DISABLED: bool = super::large_cache::DISABLED || cfg!(loom);

/// Whether a request of `size` bytes aligned to `align` is a mapped block
/// (the routing every large path applies to the layout it is given).
#[inline(always)]
pub(crate) fn serves(size: usize, align: usize) -> bool {
    !DISABLED && size >= MAP_MIN && align <= PAGE_SIZE
}

/// The length of the mapping that holds a mapped block of `size` bytes:
/// `size` rounded up to whole huge pages if it fills more than 7/8 of
/// them, so that its tail is a huge page too (at most an eighth more
/// resident than 4 KiB pages would make it, and 511 page faults fewer),
/// else to whole pages (the tail keeps 4 KiB pages).
///
/// Monotonic and idempotent where it matters: for `size <= s <=
/// mapping_len(size)`, `mapping_len(s) == mapping_len(size)`, so a block
/// grown in place within its mapping ([`large::room`]) is still freed with
/// the mapping's true length. (The 7/8 bound, a whole number of pages,
/// is excluded: a size just below it rounds up to the bound itself, which
/// must round no further.)
///
/// [`large::room`]: super::large::room
#[inline(always)]
pub(crate) fn mapping_len(size: usize) -> usize {
    // A layout's size is at most `isize::MAX` rounded down to its
    // alignment, so adding a huge page less one cannot overflow.
    let huge = (size + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    if size > huge - huge / 8 {
        huge
    } else {
        (size + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
    }
}

/// Maps a block of `size` bytes (which [`serves`]), zeroed (as every fresh
/// anonymous mapping is), aligned to 2 MiB and advised for huge pages.
/// Null when the OS refuses.
pub(crate) fn alloc(size: usize) -> *mut u8 {
    debug_assert!(serves(size, 1));
    let len = mapping_len(size);
    let ptr = os::map_aligned(len, HUGE_PAGE);
    if !ptr.is_null() && os::huge_pages_enabled() {
        // SAFETY: a fresh mapping of ours of `len` bytes, page-aligned.
        unsafe { os::advise_huge_pages(ptr, len) };
    }
    ptr
}

/// Unmaps a mapped block.
///
/// # Safety
/// `ptr` must be a live mapped block of `size` bytes (the mapping
/// invariant: its layout's size), freed by the caller.
pub(crate) unsafe fn free(ptr: *mut u8, size: usize) {
    // SAFETY: the block is the whole mapping of `mapping_len(size)` bytes
    // that `alloc` or `resize` made (this function's `# Safety`), which
    // nobody uses any more.
    unsafe { os::unmap(ptr, mapping_len(size)) }
}

/// Resizes a mapped block of `old_size` bytes to `new_size` (both
/// [`serves`]), keeping its contents: in place where the mapping can shrink
/// or grow where it lies, else by moving its pages (not copying them) to
/// a fresh 2 MiB-aligned range, so the huge pages already faulted stay
/// huge. Null (the block untouched) when the OS refuses.
///
/// # Safety
/// `ptr` must be a live mapped block of `old_size` bytes.
pub(crate) unsafe fn resize(ptr: *mut u8, old_size: usize, new_size: usize) -> *mut u8 {
    let (old_len, new_len) = (mapping_len(old_size), mapping_len(new_size));
    if old_len == new_len {
        return ptr;
    }
    // SAFETY: `ptr..ptr + old_len` is our mapping (this function's
    // `# Safety`); without MREMAP_MAYMOVE the kernel resizes it where it
    // lies or fails, leaving it as it was. The extension joins the same
    // mapping, so it keeps the huge-page advice.
    let same = unsafe { libc::mremap(ptr.cast(), old_len, new_len, 0) };
    if same != libc::MAP_FAILED {
        return ptr;
    }
    let target = os::map_aligned(new_len, HUGE_PAGE);
    if target.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `ptr..ptr + old_len` is our mapping and `target..target +
    // new_len` a fresh one of ours, which MREMAP_FIXED replaces: the pages
    // of the block move there (page tables, not contents) and the old range
    // is unmapped. The advice moves with the mapping.
    let moved = unsafe {
        libc::mremap(
            ptr.cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target.cast::<libc::c_void>(),
        )
    };
    if moved == libc::MAP_FAILED {
        // SAFETY: `target` is the fresh mapping made above, not used.
        unsafe { os::unmap(target, new_len) };
        return ptr::null_mut();
    }
    moved.cast()
}

// The 7/8 bound of `mapping_len` is a whole number of pages for any count
// of huge pages (see its docs).
const _: () = assert!((HUGE_PAGE / 8).is_multiple_of(PAGE_SIZE));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_len_is_stable_within_the_mapping() {
        let sizes = (MAP_MIN..8 * HUGE_PAGE).step_by(PAGE_SIZE / 2 + 3);
        for size in sizes.chain([MAP_MIN, 7 * HUGE_PAGE / 4, 7 * HUGE_PAGE / 4 + 1]) {
            let len = mapping_len(size);
            assert!(len >= size && len.is_multiple_of(PAGE_SIZE), "{size}");
            assert!(len - size <= len / 8 || len - size < PAGE_SIZE, "{size}");
            for s in [size + 1, (size + len) / 2, len] {
                if s <= len {
                    assert_eq!(mapping_len(s), len, "{size} -> {s}");
                }
            }
        }
        assert_eq!(mapping_len(MAP_MIN), HUGE_PAGE);
        assert_eq!(mapping_len(7 * HUGE_PAGE / 4), 7 * HUGE_PAGE / 4);
        assert_eq!(mapping_len(7 * HUGE_PAGE / 4 + 1), 2 * HUGE_PAGE);
    }
}
