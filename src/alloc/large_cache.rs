//! A per-heap cache of large blocks in front of the system allocator.
//!
//! Rust requests above the small threshold go to the system allocator
//! (`large.rs`). glibc's per-thread cache stops at 1,032 bytes, so above
//! that every `malloc` and `free` takes its arena's lock and walks its
//! bins, and a heap top it trims is faulted in again at the next growth
//! (tokio's channel blocks of 1,056 bytes: 89% of the tokio bench's page
//! faults were glibc's). This cache keeps a few freed blocks per size
//! class in each heap and hands them out again, as jemalloc's thread
//! cache does for these sizes.
//!
//! # Classes
//!
//! Requests of 513 to [`MAX_CACHED`] bytes with an alignment of at most
//! [`SYSTEM_ALIGN`] (what the system allocator gives every block) are
//! rounded up to one of [`NB_LARGE_CLASSES`] sizes, eight per doubling
//! (576, 640, ..., 1,024, 1,152, ..., 8,192: at most an eighth more than
//! asked, against a quarter with four per doubling, which made the tokio
//! bench's 1,056-byte channel blocks 1,280 bytes and its peak RSS 12%
//! larger), and the block is obtained
//! from the system allocator at its class's size. So any block of a class
//! serves any request of that class, and a `realloc` that stays within the
//! class's size is a no-op. The memory stays the system allocator's: a
//! cached block is given back to it with `free`, never unmapped by us.
//!
//! Invariant kept by `large.rs` and `realloc_large` (the *capacity
//! invariant*): a live Rust block whose layout has a class here (size and
//! alignment in range) holds at least that class's size, and was obtained
//! from the system allocator with an alignment of [`SYSTEM_ALIGN`]; so it
//! may go into the cache of its class when freed.
//!
//! # Bounds
//!
//! A class holds at most [`CLASS_BYTES`] (16 KiB, and at least two blocks:
//! 28 blocks of 576 bytes, 14 of 1,152, 2 of 8 KiB), a heap at most [`HEAP_BYTES`]
//! (64 KiB) in all. The figure is what a thread passing buffers needs to
//! absorb the difference between its frees and its allocations over a
//! short stretch (tokio's workers); it is small next to the 1 MiB arenas a
//! heap keeps retired, so a thousand idle threads hold at most 64 MiB,
//! and those bytes go back within the retention window (below).
//!
//! # Who touches a cache: the try-lock
//!
//! The owner of the heap takes and puts blocks on its large path; any
//! thread may empty it: the owner at its exit, and every reclaimer
//! (`release_free_memory()`, the background purge, the passes that any
//! thread's allocator activity runs, see `purge.rs`). Every access to the
//! lists is under the cache's own lock word, [`LargeCache::lock`], which
//! nobody ever waits for: the owner makes one attempt and, if the lock is
//! busy, serves the request from the system allocator directly (a block
//! freed then goes to the system allocator too); a reclaimer makes a few
//! attempts and moves on. The small-block fast paths never look at it.
//! A reclaimer only unlinks the lists under the lock and frees the blocks
//! after releasing it, so the owner finds it busy for a few instructions.
//!
//! A signal handler that allocates while its thread is inside the cache
//! finds the lock busy and uses the system allocator. After `fork`, a lock
//! held by a thread that did not survive is recognised by its fork
//! generation (the lock word is `generation << 1 | 1`, as the heap lock's):
//! it is never taken again, its cache (possibly caught mid-update) is left
//! alone for good, and the child's large blocks of that heap go straight
//! to the system allocator. Nothing waits, so nothing deadlocks.
//!
//! # Retention
//!
//! No block stays in an idle thread's cache indefinitely: a pass
//! (`purge::pass`) empties the cache of a parked heap, and of a live heap
//! whose cache has seen no operation for the pass's age (the arenas'
//! retention, 200 ms, or the background thread's interval); a pass that
//! returns everything (`release_free_memory()`) empties every cache.
//!
//! # Statistics
//!
//! A cached block is not in use: `large.rs` counts a block as allocated
//! when it is handed out and as freed when it is given back, cached or
//! not, by the size requested (`large_count.rs`), exactly as before. The
//! bytes cached are reported apart (`AllocStats::large_bytes_cached`).

use core::ptr;

use super::heap::Heap;
use super::registry::Registry;
use super::size_class::SMALL_REQUEST_THRESHOLD;
use crate::sync::{AtomicUsize, Cell, Ordering};

/// The largest request the cache serves.
pub(crate) const MAX_CACHED: usize = 8192;
/// The alignment the system allocator gives every block, and the most a
/// cached request may ask for.
pub(crate) const SYSTEM_ALIGN: usize = 16;
/// log2 of the classes per doubling.
const PER_DOUBLING_SHIFT: u32 = 3;
/// log2 of the small threshold (512): the first doubling's lower bound.
const FIRST_SHIFT: u32 = SMALL_REQUEST_THRESHOLD.trailing_zeros();
/// Classes: eight per doubling from 512 to [`MAX_CACHED`].
pub(crate) const NB_LARGE_CLASSES: usize =
    ((MAX_CACHED.trailing_zeros() - FIRST_SHIFT) << PER_DOUBLING_SHIFT) as usize;
/// Bytes one class may hold (at least [`MIN_PER_CLASS`] blocks).
pub(crate) const CLASS_BYTES: usize = 16 << 10;
/// Blocks a class may hold whatever its size.
const MIN_PER_CLASS: usize = 2;
/// Bytes one heap's cache may hold.
pub(crate) const HEAP_BYTES: usize = 64 << 10;
/// Attempts a reclaimer (or the exiting owner) makes at a busy lock.
const RECLAIM_ATTEMPTS: u32 = 64;

const _: () = assert!(SMALL_REQUEST_THRESHOLD.is_power_of_two());
const _: () = assert!(NB_LARGE_CLASSES <= 32, "`nonempty` has a bit per class");
const _: () = assert!(MAX_CACHED.is_power_of_two() && MAX_CACHED > SMALL_REQUEST_THRESHOLD);

/// Whether the cache is off in this build: under AddressSanitizer, whose
/// reports need every free to reach the system allocator, and under the
/// `override` feature, where C's `malloc`/`realloc` make blocks that Rust
/// code may free or grow with a layout (`Vec::from_raw_parts` of a C
/// buffer): such a block holds what C asked for, not its class's size, so
/// the capacity invariant would not hold for it (caching a 3,000-byte C
/// block as a 3,072-byte one overwrote glibc's next chunk header).
pub(crate) const DISABLED: bool = super::asan::REDZONE != 0 || cfg!(feature = "override");

/// Whether the cache serves a request: 513 to [`MAX_CACHED`] bytes,
/// aligned to at most [`SYSTEM_ALIGN`]; never when [`DISABLED`].
#[inline(always)]
fn serves(size: usize, align: usize) -> bool {
    !DISABLED && align <= SYSTEM_ALIGN && size > SMALL_REQUEST_THRESHOLD && size <= MAX_CACHED
}

/// The class of a request, if the cache [`serves`] it.
#[inline(always)]
pub(crate) fn class_of(size: usize, align: usize) -> Option<usize> {
    if !serves(size, align) {
        return None;
    }
    Some(class_of_size(size))
}

/// The size of the blocks of the class of a request, if the cache serves
/// it: `class_size(class_of(size, align)?)`, computed in fewer steps (the
/// `realloc` path asks it at every step of a growing buffer).
#[inline(always)]
pub(crate) fn class_capacity(size: usize, align: usize) -> Option<usize> {
    if !serves(size, align) {
        return None;
    }
    let shift = usize::BITS - 1 - (size - 1).leading_zeros() - PER_DOUBLING_SHIFT;
    Some((((size - 1) >> shift) + 1) << shift)
}

/// The largest class whose blocks a block of `usable` bytes can be
/// (`class_size(class) <= usable`), capped at the last class; `None` below
/// the first class's size.
#[inline(always)]
pub(crate) fn class_within(usable: usize) -> Option<usize> {
    if usable < class_size(0) {
        return None;
    }
    let usable = usable.min(MAX_CACHED);
    // The class of `usable` holds it if its size is exactly `usable`, else
    // the class before it is the largest one below.
    let class = class_of_size(usable);
    Some(if class_size(class) == usable {
        class
    } else {
        class - 1
    })
}

/// [`class_of`] without the range test: `size` must lie in 513 to
/// [`MAX_CACHED`].
#[inline(always)]
fn class_of_size(size: usize) -> usize {
    // size - 1 lies in [2^k, 2^(k+1)) with k >= FIRST_SHIFT; its three
    // bits below the leading one pick the eighth of the doubling.
    let k = usize::BITS - 1 - (size - 1).leading_zeros();
    let eighth = ((size - 1) >> (k - PER_DOUBLING_SHIFT)) - (1 << PER_DOUBLING_SHIFT);
    (((k - FIRST_SHIFT) << PER_DOUBLING_SHIFT) as usize) + eighth
}

/// The size of a class's blocks: the largest request of the class.
#[inline(always)]
pub(crate) const fn class_size(class: usize) -> usize {
    let k = (class >> PER_DOUBLING_SHIFT) as u32 + FIRST_SHIFT;
    let quarter = class & ((1 << PER_DOUBLING_SHIFT) - 1);
    ((1 << PER_DOUBLING_SHIFT) + quarter + 1) << (k - PER_DOUBLING_SHIFT)
}

/// Blocks a class may hold.
const fn class_limit(class: usize) -> usize {
    let n = CLASS_BYTES / class_size(class);
    if n < MIN_PER_CLASS {
        MIN_PER_CLASS
    } else {
        n
    }
}

/// One heap's cache of large blocks.
///
/// # Invariant
///
/// Every field but `lock` is read and written only by the holder of
/// `lock` (`bytes` is also read, racily, by statistics). While the lock is
/// free: `heads[c]` is null or the first of `counts[c] <= class_limit(c)`
/// blocks linked through their first word, each a block of the system
/// allocator of `class_size(c)` bytes, aligned to [`SYSTEM_ALIGN`], that
/// no one else uses; `bytes` is the sum of `counts[c] * class_size(c)`,
/// at most [`HEAP_BYTES`]; bit `c` of `nonempty` is set exactly when
/// `heads[c]` is not null.
pub(crate) struct LargeCache {
    /// 0 when free, else `generation << 1 | 1` of its holder.
    lock: AtomicUsize,
    heads: [Cell<*mut u8>; NB_LARGE_CLASSES],
    counts: [Cell<u16>; NB_LARGE_CLASSES],
    /// The classes with a block, one bit each (bit `c` for class `c`):
    /// derivable from `heads`, kept so that a growth past 512 bytes finds
    /// the first non-empty class of up to 17 in one instruction (looking
    /// at the heads cost 110 more instructions per doubling chain 8 ->
    /// 4,096 B in callgrind: 42.56M against 40.34M for 20,000 chains).
    nonempty: Cell<u32>,
    /// Bytes cached, all classes together.
    bytes: AtomicUsize,
    /// Takes and puts, ever (for telling an idle cache from a used one).
    ops: Cell<usize>,
    /// A reclaimer's last look: `ops` then, and when it last changed.
    seen_ops: Cell<usize>,
    seen_ms: Cell<u64>,
}

/// Blocks taken out of a cache, to give back to the system allocator
/// after the lock is released.
struct Detached {
    heads: [*mut u8; NB_LARGE_CLASSES],
    bytes: usize,
}

impl LargeCache {
    /// An empty cache, its lock free.
    pub(crate) fn new() -> LargeCache {
        LargeCache {
            lock: AtomicUsize::new(0),
            heads: core::array::from_fn(|_| Cell::new(ptr::null_mut())),
            counts: core::array::from_fn(|_| Cell::new(0)),
            nonempty: Cell::new(0),
            bytes: AtomicUsize::new(0),
            ops: Cell::new(0),
            seen_ops: Cell::new(0),
            seen_ms: Cell::new(0),
        }
    }

    /// One attempt at the lock.
    #[inline(always)]
    fn try_lock(&self) -> bool {
        // Acquire: what the previous holder did to the lists (and to the
        // link words of the blocks on them) happens before what we do.
        self.lock
            .compare_exchange(
                0,
                super::registry::held_tag(),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// A few attempts, for reclaimers; false if the lock stays busy or
    /// its holder vanished in a `fork`.
    fn lock_patiently(&self) -> bool {
        let mut attempt = 0;
        loop {
            // A plain load first: waiters read the line rather than write it.
            let word = self.lock.load(Ordering::Relaxed);
            if word == 0 && self.try_lock() {
                return true;
            }
            attempt += 1;
            if attempt > RECLAIM_ATTEMPTS || (word != 0 && word != super::registry::held_tag()) {
                return false;
            }
            crate::sync::spin_wait(attempt);
        }
    }

    #[inline(always)]
    fn unlock(&self) {
        // Release: pairs with the next holder's Acquire.
        self.lock.store(0, Ordering::Release);
    }

    /// Bytes cached now (racy: for statistics).
    pub(crate) fn bytes(&self) -> usize {
        // Relaxed: a statistic; nothing is published through it.
        self.bytes.load(Ordering::Relaxed)
    }

    /// A cached block of the first class from `class` to `last` that has
    /// one (`last == class`: of `class` only), or null (none, or the lock
    /// is busy). The block is the caller's: a block of the system
    /// allocator of at least `class_size(class)` bytes aligned to
    /// [`SYSTEM_ALIGN`] (the capacity invariant holds for a request of
    /// `class`, with room to spare when the block comes from a later
    /// class).
    ///
    /// Called by the heap's owner only (any thread holding the lock could,
    /// but only the owner's large path takes blocks).
    #[inline]
    pub(crate) fn take_up_to(&self, class: usize, last: usize) -> *mut u8 {
        debug_assert!(class <= last && last < NB_LARGE_CLASSES);
        if !self.try_lock() {
            return ptr::null_mut();
        }
        // The classes from `class` to `last` that have a block; the first.
        let span = (2u32 << (last - class)).wrapping_sub(1);
        let candidates = (self.nonempty.get() >> class) & span;
        let mut head = ptr::null_mut();
        if candidates != 0 {
            let found = class + candidates.trailing_zeros() as usize;
            head = self.heads[found].get();
            debug_assert!(!head.is_null());
            // SAFETY: `head` is the first block of the class's list (the
            // invariant on `LargeCache`, which the lock we hold lets us
            // rely on): a live block no one else uses, whose first word is
            // the link written by the `put` that cached it, under the lock.
            let next = unsafe { head.cast::<*mut u8>().read() };
            self.heads[found].set(next);
            if next.is_null() {
                self.nonempty.set(self.nonempty.get() & !(1 << found));
            }
            self.counts[found].set(self.counts[found].get() - 1);
            self.bytes.store(
                self.bytes.load(Ordering::Relaxed) - class_size(found),
                Ordering::Relaxed,
            );
        }
        self.ops.set(self.ops.get().wrapping_add(1));
        self.unlock();
        head
    }

    /// Caches `block` in `class` if there is room and the lock is free;
    /// false otherwise (the caller gives it to the system allocator).
    ///
    /// # Safety
    /// `block` must be a block of the system allocator of at least
    /// `class_size(class)` bytes, aligned to [`SYSTEM_ALIGN`], that the
    /// caller owns and gives up (the capacity invariant in the module docs).
    #[inline]
    pub(crate) unsafe fn put(&self, class: usize, block: *mut u8) -> bool {
        debug_assert!(class < NB_LARGE_CLASSES);
        if !self.try_lock() {
            return false;
        }
        let count = self.counts[class].get();
        let bytes = self.bytes.load(Ordering::Relaxed) + class_size(class);
        let room = usize::from(count) < class_limit(class) && bytes <= HEAP_BYTES;
        if room {
            // SAFETY: `block` is the caller's to give up and holds at least
            // one pointer (this function's `# Safety`: at least 576 bytes).
            unsafe { block.cast::<*mut u8>().write(self.heads[class].get()) };
            self.heads[class].set(block);
            self.nonempty.set(self.nonempty.get() | 1 << class);
            self.counts[class].set(count + 1);
            self.bytes.store(bytes, Ordering::Relaxed);
        }
        self.ops.set(self.ops.get().wrapping_add(1));
        self.unlock();
        room
    }

    /// Unlinks every list. The lock must be held.
    fn detach_locked(&self) -> Detached {
        let detached = Detached {
            heads: core::array::from_fn(|class| self.heads[class].replace(ptr::null_mut())),
            bytes: self.bytes.load(Ordering::Relaxed),
        };
        for count in &self.counts {
            count.set(0);
        }
        self.nonempty.set(0);
        self.bytes.store(0, Ordering::Relaxed);
        detached
    }

    /// Empties the cache if `now` shows it idle for `age_ms` (every time
    /// for an age of 0), giving its blocks back to the system allocator.
    /// Any thread may call it. Returns the bytes given back.
    pub(crate) fn reclaim(&self, now: u64, age_ms: u64) -> usize {
        // A plain load: most caches are empty, and a reclaimer should not
        // write their lock lines for nothing. `ops` is not looked at
        // either then, so an idle cache that fills later starts its
        // window from the first pass that sees it used.
        if self.bytes() == 0 || !self.lock_patiently() {
            return 0;
        }
        let ops = self.ops.get();
        if ops != self.seen_ops.get() {
            self.seen_ops.set(ops);
            self.seen_ms.set(now);
        }
        let idle = now.saturating_sub(self.seen_ms.get()) >= age_ms;
        let detached = (age_ms == 0 || idle).then(|| self.detach_locked());
        self.unlock();
        detached.map_or(0, |d| {
            // SAFETY: `detach_locked` took the lists whole under the lock:
            // blocks of the system allocator as the invariant on
            // `LargeCache` says, which no one else knows any more.
            unsafe { give_back(d) }
        })
    }

    /// Empties the cache whatever its age (thread exit). Returns the bytes
    /// given back; 0 if the lock stayed busy (a pass empties it later: the
    /// heap is parked then).
    pub(crate) fn flush(&self) -> usize {
        self.reclaim(0, 0)
    }
}

/// Gives detached blocks back to the system allocator.
///
/// # Safety
/// `detached` must hold lists as the invariant on `LargeCache` describes,
/// taken off their cache, known to no one else.
unsafe fn give_back(detached: Detached) -> usize {
    for (class, &head) in detached.heads.iter().enumerate() {
        let mut block = head;
        while !block.is_null() {
            // SAFETY: a block of the list (this function's `# Safety`): its
            // first word is the link to the next one.
            let next = unsafe { block.cast::<*mut u8>().read() };
            // SAFETY: a block of the system allocator of `class_size(class)`
            // bytes aligned to SYSTEM_ALIGN (`class_layout`), no one else's
            // (this function's `# Safety`).
            unsafe { system_free(block, class_layout(class)) };
            block = next;
        }
    }
    detached.bytes
}

/// Allocates a block for `layout` from the system allocator (zeroed if
/// asked); null on failure. The one door to it for large blocks, cached
/// or not (`large.rs`): under `override` glibc's own entry points (the
/// `malloc` symbol is ours), `System` otherwise.
#[cfg(not(loom))]
#[inline]
pub(crate) fn system_alloc(layout: core::alloc::Layout, zeroed: bool) -> *mut u8 {
    #[cfg(feature = "override")]
    return super::large::glibc::alloc(layout.size(), layout.align(), zeroed);
    #[cfg(not(feature = "override"))]
    {
        use core::alloc::GlobalAlloc;
        // SAFETY: `layout` has a non-zero size (large blocks are above the
        // small threshold).
        unsafe {
            if zeroed {
                std::alloc::System.alloc_zeroed(layout)
            } else {
                std::alloc::System.alloc(layout)
            }
        }
    }
}

/// Gives a block back to the system allocator: the counterpart of
/// [`system_alloc`].
///
/// # Safety
/// `block` must be a live block of the system allocator obtained by
/// [`system_alloc`] with `layout` (or resized by its `realloc` to
/// `layout.size()`), freed by the caller.
#[inline]
pub(crate) unsafe fn system_free(block: *mut u8, layout: core::alloc::Layout) {
    #[cfg(all(feature = "override", not(loom)))]
    {
        let _ = layout;
        // SAFETY: under `override` the system allocator is glibc's, reached
        // by its own entry points; `block` is a live block of it (this
        // function's `# Safety`).
        unsafe { super::large::glibc::free(block) };
    }
    #[cfg(not(all(feature = "override", not(loom))))]
    {
        use core::alloc::GlobalAlloc;
        // SAFETY: `block` is a live block of `System` allocated with
        // `layout` (this function's `# Safety`).
        unsafe { std::alloc::System.dealloc(block, layout) };
    }
}

/// The layout of a class's blocks as the system allocator made them.
#[inline(always)]
pub(crate) fn class_layout(class: usize) -> core::alloc::Layout {
    // SAFETY: SYSTEM_ALIGN is a power of two and a class size (at most
    // MAX_CACHED) does not overflow rounded up to it.
    unsafe { core::alloc::Layout::from_size_align_unchecked(class_size(class), SYSTEM_ALIGN) }
}

/// A pass's part (see `purge::pass`): empties the caches of parked heaps,
/// and of live ones idle for `age_ms` (all of them for an age of 0).
/// Returns the bytes given back to the system allocator.
pub(crate) fn pass(registry: &Registry, now: u64, age_ms: u64) -> usize {
    registry
        .heaps()
        .map(|heap: &Heap| {
            let parked = heap.state() == super::registry::Ownership::Parked as u8;
            heap.large_cache
                .reclaim(now, if parked { 0 } else { age_ms })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_the_range_in_order() {
        if DISABLED {
            return; // no caching under AddressSanitizer or `override`
        }
        let mut last = SMALL_REQUEST_THRESHOLD;
        for class in 0..NB_LARGE_CLASSES {
            let size = class_size(class);
            assert!(size > last, "class {class}: {size}");
            assert_eq!(class_of(last + 1, 8), Some(class));
            assert_eq!(class_of(size, 16), Some(class));
            last = size;
        }
        assert_eq!(last, MAX_CACHED);
        assert_eq!(NB_LARGE_CLASSES, 32);
        assert_eq!(class_size(0), 576);
        assert_eq!(class_size(8), 1152);
        assert_eq!(class_of(1056, 8), Some(8));
        assert_eq!(class_of(MAX_CACHED + 1, 8), None);
        assert_eq!(class_of(SMALL_REQUEST_THRESHOLD, 8), None);
        assert_eq!(class_of(1000, 32), None);
        assert!((0..NB_LARGE_CLASSES).all(|c| class_limit(c) >= MIN_PER_CLASS));
        assert_eq!(class_within(575), None);
        for usable in class_size(0)..2 * MAX_CACHED {
            let largest = (0..NB_LARGE_CLASSES)
                .rev()
                .find(|&c| class_size(c) <= usable);
            assert_eq!(class_within(usable), largest, "{usable}");
        }
        for size in 1..3 * MAX_CACHED {
            for align in [1, 16, 32] {
                assert_eq!(
                    class_capacity(size, align),
                    class_of(size, align).map(class_size),
                    "{size} {align}"
                );
            }
        }
    }
}
