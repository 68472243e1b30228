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
//! (`large::room` caps a system block's room below [`MAP_MIN`]).
//!
//! Off where the large-block cache is off ([`large_cache::DISABLED`]):
//! under `override`, every pointer outside the arenas must be glibc's
//! (C's `free` has no size to route by), and under AddressSanitizer every
//! block must be the system allocator's for its reports. Off under loom.
//!
//! # Memory return, and the few mappings kept
//!
//! A freed block of at most [`KEEP_MAX_LEN`] bytes goes into one of
//! [`KEEP_SLOTS`] slots of a process-wide cache when one is free, else it
//! is unmapped at once. `alloc` takes a kept mapping before it maps a new
//! one: a longer one is split (the block at its start, the rest from the
//! next huge page on kept when it can serve a request), a
//! shorter one grown by `mremap`. A block that grows takes the kept
//! mapping that starts where it ends, if that is long enough (the rest of
//! a split, typically), without a system call. So a program that
//! allocates and frees a scratch buffer of a few MiB in a loop (a `Vec`
//! of 2 MiB, or one grown by `push` to 16 MiB, say) pays neither the
//! system calls nor the kernel's zeroing of fresh huge pages per round:
//! review 7 measured such loops 1.5 to 20 times slower when every free
//! unmapped. The cache holds
//! at most `KEEP_SLOTS * KEEP_MAX_LEN` (64 MiB, the cap issue 8 puts on
//! retained empty memory), it is reported in
//! [`AllocStats::large_bytes_cached`](crate::AllocStats::large_bytes_cached),
//! and every pass returns what has been kept longer than the pass's age
//! ([`reclaim`]: the arenas' retention of 200 ms, the background thread's
//! interval, or everything for `release_free_memory()`).
//!
//! The slots are lock-free: a slot is a pointer, swapped out by the one
//! thread that takes its mapping and set by a compare-and-swap from null
//! by the one that puts one in. A kept mapping describes itself in its
//! first two words (its length and the time it was freed), written before
//! the release that publishes it and read after the acquire that takes
//! it. A `fork` in the middle of a take or a put leaves at most one
//! mapping unreachable in the child (a leak of that mapping, no more).
//!
//! [`large_cache::DISABLED`]: super::large_cache::DISABLED

use core::ptr;
// Not `crate::sync`'s: statics, and this module is off under loom.
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

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

/// How many freed mappings the process keeps for reuse (see the module
/// docs, "Memory return").
const KEEP_SLOTS: usize = 4;

/// The longest mapping kept (longer ones are unmapped at free).
const KEEP_MAX_LEN: usize = 16 << 20;

/// The kept mappings: null, or a mapping of ours that no block uses, whose
/// first word is its length and second the `os::now_ms()` of its free
/// (the *kept-mapping invariant*).
static KEPT: [AtomicPtr<u8>; KEEP_SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; KEEP_SLOTS];

/// Bytes of the mappings in [`KEPT`] (while a put runs, it may count one
/// mapping that is not in a slot yet; never less than the slots hold once
/// every take has finished, never below zero).
static KEPT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Takes the mapping out of slot `i`, if any: (its start, its length).
fn take_slot(i: usize) -> Option<(*mut u8, usize)> {
    // Acquire: pairs with the Release of `put`, so the length written into
    // the mapping before it was published is read here. A swap, so that
    // exactly one thread owns what it took.
    let p = KEPT[i].swap(ptr::null_mut(), Ordering::Acquire);
    // SAFETY: taken from its slot by the swap, with its Acquire.
    (!p.is_null()).then(|| (p, unsafe { claimed(p) }))
}

/// The length of the kept mapping `p`, just taken from its slot, which
/// leaves [`KEPT_BYTES`].
///
/// # Safety
/// `p` must have been taken from a slot of [`KEPT`] by the caller, with
/// an Acquire operation on that slot.
unsafe fn claimed(p: *mut u8) -> usize {
    // SAFETY: a kept mapping's first word is its length (the kept-mapping
    // invariant), written before the Release that published it, which the
    // caller's Acquire saw; the mapping is the caller's alone now.
    let len = unsafe { p.cast::<usize>().read() };
    // Relaxed: a statistic.
    KEPT_BYTES.fetch_sub(len, Ordering::Relaxed);
    len
}

/// Keeps the unused mapping `p` of `len` bytes in a free slot, stamped
/// `now`; false (the mapping still the caller's) when every slot is full.
///
/// # Safety
/// `p..p + len` must be a mapping of ours that nothing uses.
unsafe fn put(p: *mut u8, len: usize, now: u64) -> bool {
    // SAFETY: the mapping is ours and unused (this function's `# Safety`),
    // at least a page long, so its first two words may be written.
    unsafe {
        p.cast::<usize>().write(len);
        p.cast::<u64>().add(1).write(now);
    }
    // Counted before it is published (Relaxed: a statistic), so that the
    // taker's subtraction, which the slot's Release/Acquire orders after
    // this addition, never takes the figure below zero (a wrap to 2^64
    // that `alloc_stats` could read).
    KEPT_BYTES.fetch_add(len, Ordering::Relaxed);
    for slot in &KEPT {
        // Release: publishes the two words written above (and the count)
        // to the taker's Acquire. Relaxed on failure: nothing published.
        if slot
            .compare_exchange(ptr::null_mut(), p, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
    }
    KEPT_BYTES.fetch_sub(len, Ordering::Relaxed);
    false
}

/// Maps a block of `size` bytes (which [`serves`]), aligned to 2 MiB and
/// advised for huge pages: a kept mapping if there is one (resized to the
/// block's length; zeroed again if `zeroed`), else a fresh one (zeroed, as
/// every fresh anonymous mapping is). Null when the OS refuses.
pub(crate) fn alloc(size: usize, zeroed: bool) -> *mut u8 {
    debug_assert!(serves(size, 1));
    let len = mapping_len(size);
    for i in 0..KEEP_SLOTS {
        let Some((p, kept_len)) = take_slot(i) else {
            continue;
        };
        let p = if kept_len > len {
            // Split: the tail from the next huge page on stays kept (or
            // goes back to the OS), so that a block that grows next finds
            // its resident pages there (`resize_len`).
            // SAFETY: `p + len..p + kept_len` is the unused rest of the
            // mapping taken from its slot (`len` < `kept_len`, both whole
            // pages).
            unsafe { keep_rest(p, len, kept_len) };
            p
        } else {
            // SAFETY: `p..p + kept_len` is a mapping of ours that nothing
            // uses (taken from its slot), and `len` a whole number of pages.
            unsafe { remap(p, kept_len, len) }
        };
        if p.is_null() {
            // The OS refused (the mapping was unmapped): map a fresh one.
            break;
        }
        if zeroed {
            // SAFETY: `p..p + len` is ours now, the block's mapping.
            unsafe { p.write_bytes(0, size) };
        }
        return p;
    }
    let ptr = os::map_aligned(len, HUGE_PAGE);
    if !ptr.is_null() && os::huge_pages_enabled() {
        // SAFETY: a fresh mapping of ours of `len` bytes, page-aligned.
        unsafe { os::advise_huge_pages(ptr, len) };
    }
    ptr
}

/// Frees a mapped block: kept for reuse if it is short enough and a slot
/// is free, else unmapped.
///
/// # Safety
/// `ptr` must be a live mapped block of `size` bytes (the mapping
/// invariant: its layout's size), freed by the caller.
pub(crate) unsafe fn free(ptr: *mut u8, size: usize) {
    // SAFETY: the block is the whole mapping of `mapping_len(size)` bytes
    // that `alloc` or `resize` made (this function's `# Safety`), page
    // aligned, which nobody uses any more.
    unsafe { keep_or_unmap(ptr, mapping_len(size)) }
}

/// A pass's part (see `purge::pass`): unmaps the kept mappings freed at
/// least `age_ms` before `now` (all of them for an age of 0). Returns the
/// bytes unmapped.
pub(crate) fn reclaim(now: u64, age_ms: u64) -> usize {
    let mut returned = 0;
    for i in 0..KEEP_SLOTS {
        let Some((p, len)) = take_slot(i) else {
            continue;
        };
        // SAFETY: the second word of a kept mapping is its free's time
        // (the kept-mapping invariant); it is ours alone (taken).
        let freed = unsafe { p.cast::<u64>().add(1).read() };
        // SAFETY: `p..p + len` is a mapping of ours nobody uses (taken).
        if age_ms == 0 || now.saturating_sub(freed) >= age_ms || !unsafe { put(p, len, freed) } {
            // SAFETY: as above, and not put back.
            unsafe { unmap(p, len) };
            returned += len;
        }
    }
    returned
}

/// Takes the kept mapping that starts at `at`, if there is one: its length.
fn take_at(at: *mut u8) -> Option<usize> {
    for slot in &KEPT {
        // Acquire on success: as in `take_slot` (the length written before
        // the mapping was published). Relaxed on failure: nothing is read.
        if slot
            .compare_exchange(at, ptr::null_mut(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: taken from its slot by the exchange, with its Acquire.
            return Some(unsafe { claimed(at) });
        }
    }
    None
}

/// Keeps the unused range `p..p + len` of a mapping of ours (whole pages)
/// if it is short enough and a slot is free, else unmaps it.
///
/// # Safety
/// `p..p + len` must be mapped by us, page-aligned, and used by nothing.
unsafe fn keep_or_unmap(p: *mut u8, len: usize) {
    // SAFETY: mapped by us and unused (this function's `# Safety`).
    if len <= KEEP_MAX_LEN && unsafe { put(p, len, os::now_ms()) } {
        return;
    }
    // SAFETY: as above, and not kept.
    unsafe { unmap(p, len) }
}

/// Gives up `block + from..block + to`, the unused end of a range of ours
/// (whole pages): the part from the next 2 MiB boundary on is kept if it
/// is at least [`MAP_MIN`] long, the rest unmapped. So every kept mapping
/// starts on a huge page, and a block made from one is aligned as a fresh
/// mapping is (review 8: a tail split at a page-rounded length handed out
/// blocks off the 2 MiB grid, their heads without huge pages), and no slot
/// holds a tail too short to serve a request.
///
/// # Safety
/// `block + from..block + to` must be mapped by us and used by nothing,
/// `from <= to` both whole pages.
unsafe fn keep_rest(block: *mut u8, from: usize, to: usize) {
    let start = block as usize + from;
    let cut = ((start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1)) - block as usize;
    if cut < to && to - cut >= MAP_MIN {
        // SAFETY: `block + from..block + cut` and `block + cut..block + to`
        // are parts of the range this function's `# Safety` makes ours and
        // unused, split at whole pages (`cut` is 2 MiB-aligned within the
        // range, `from` and `to` whole pages).
        unsafe {
            if cut > from {
                unmap(block.add(from), cut - from);
            }
            keep_or_unmap(block.add(cut), to - cut);
        }
    } else if to > from {
        // SAFETY: the whole range, ours and unused (this function's
        // `# Safety`), whole pages.
        unsafe { unmap(block.add(from), to - from) };
    }
}

/// Bytes of the mappings kept for reuse (in
/// [`AllocStats::large_bytes_cached`](crate::AllocStats::large_bytes_cached)).
pub(crate) fn kept_bytes() -> usize {
    KEPT_BYTES.load(Ordering::Relaxed)
}

/// Unmaps `p..p + len`, a range of one or more of our mappings (whole
/// pages) that nothing uses. Unlike `os::unmap`, a failure is not fatal:
/// unmapping the middle of a mapping splits it in two, which the kernel
/// refuses (`ENOMEM`) once the process has `vm.max_map_count` mappings
/// (review 7, by reading; the kept mappings' splits add mappings). The
/// pages are then dropped with `MADV_DONTNEED` (the resident set falls
/// all the same) and the address range is left reserved, as glibc does
/// with a failed `munmap`.
///
/// # Safety
/// `p..p + len` must be mapped by us, page-aligned, and used by nothing.
unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: ours and unused (this function's `# Safety`).
    if unsafe { libc::munmap(p.cast(), len) } != 0 {
        // SAFETY: as above; the range is still mapped (munmap failed and
        // changed nothing), and nobody reads it before writing.
        unsafe { os::decommit(p, len) };
    }
}

/// Resizes the unused mapping `p` of `old_len` bytes to `new_len` (both
/// whole pages), where it lies or by moving its pages to a fresh 2
/// MiB-aligned range. Null when the OS refuses, the mapping then
/// unmapped.
///
/// # Safety
/// `p..p + old_len` must be a mapping of ours that nothing uses.
unsafe fn remap(p: *mut u8, old_len: usize, new_len: usize) -> *mut u8 {
    // SAFETY: a mapping of ours of `old_len` bytes (this function's
    // `# Safety`); its contents do not matter.
    let q = unsafe { resize_len(p, old_len, new_len) };
    if q.is_null() {
        // SAFETY: as above: `resize_len` left it as it was.
        unsafe { unmap(p, old_len) };
    }
    q
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
    // SAFETY: a live mapped block of `old_size` bytes is a mapping of
    // `mapping_len(old_size)` bytes (the mapping invariant).
    unsafe { resize_len(ptr, mapping_len(old_size), mapping_len(new_size)) }
}

/// [`resize`] by the mappings' lengths (whole pages).
///
/// # Safety
/// `ptr..ptr + old_len` must be a mapping of ours.
unsafe fn resize_len(ptr: *mut u8, old_len: usize, new_len: usize) -> *mut u8 {
    if old_len == new_len {
        return ptr;
    }
    if new_len > old_len {
        // SAFETY: `ptr + old_len` is the end of our mapping (this
        // function's `# Safety`), an address a kept mapping may start at.
        let at = unsafe { ptr.add(old_len) };
        if let Some(next) = take_at(at) {
            if old_len + next >= new_len {
                // The kept mapping right after the block (the tail of a
                // split, typically) holds the growth: its pages are
                // resident, and no system call is needed.
                if old_len + next > new_len {
                    // SAFETY: the rest of the kept mapping taken, unused,
                    // whole pages (both lengths are).
                    unsafe { keep_rest(ptr, new_len, old_len + next) };
                }
                return ptr;
            }
            // Too short: back where it was (or to the OS), and the block
            // moves as below.
            // SAFETY: the kept mapping just taken, unused.
            unsafe { keep_or_unmap(at, next) };
        }
    }
    // SAFETY: `ptr..ptr + old_len` is our mapping (this function's
    // `# Safety`); without MREMAP_MAYMOVE the kernel resizes it where it
    // lies or fails, leaving it as it was. The extension joins the same
    // mapping, so it keeps the huge-page advice.
    let same = unsafe { libc::mremap(ptr.cast(), old_len, new_len, 0) };
    if same != libc::MAP_FAILED {
        return ptr;
    }
    // EFAULT: the block spans two of the kernel's mappings (a kept
    // neighbour the kernel did not merge with it joined it above), which
    // `mremap` can neither grow nor move: it is copied. (`last_os_error`
    // reads errno; it does not allocate.)
    let spans = std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT);
    let mut target = os::map_aligned(new_len, HUGE_PAGE);
    if target.is_null() {
        return ptr::null_mut();
    }
    if !spans {
        // SAFETY: `ptr..ptr + old_len` is one mapping of ours and `target..
        // target + new_len` a fresh one, which MREMAP_FIXED replaces: the
        // pages of the block move there (page tables, not contents) and
        // the old range is unmapped. The advice moves with the mapping.
        let moved = unsafe {
            libc::mremap(
                ptr.cast(),
                old_len,
                new_len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.cast::<libc::c_void>(),
            )
        };
        if moved != libc::MAP_FAILED {
            return moved.cast();
        }
        // Failed, the block untouched; but kernels before 6.x unmap the
        // target before they check the rest (review 8), so `target` may
        // not be ours any more (another thread's `mmap` may hold it now):
        // it is left alone (at worst an address range stays reserved), and
        // the block is copied into another fresh mapping.
        target = os::map_aligned(new_len, HUGE_PAGE);
        if target.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: `ptr..ptr + old_len` is ours and `target..target + new_len` a
    // fresh mapping of ours: two distinct ranges; the block is given up
    // once copied.
    unsafe {
        ptr::copy_nonoverlapping(ptr, target, old_len.min(new_len));
        unmap(ptr, old_len);
    }
    target
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
