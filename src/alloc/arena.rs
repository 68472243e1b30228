//! Arenas: `ARENA_SIZE` bytes mapped from the OS, aligned to their size,
//! cut into `POOLS_PER_ARENA` pool slots. Slot 0 holds this header and the
//! headers of the other slots' pools, 64 bytes each (only its first page is
//! ever touched); the other slots are pools.
//!
//! Each arena belongs to one heap for its whole life. Everything here is
//! touched only by the holder of that heap's lock (see `Heap`).
//!
//! A heap keeps its arenas with free slots on a list sorted by the number
//! of free slots, fullest first, and takes pools from the head: CPython's
//! `usable_arenas` rule, which lets lightly used arenas drain and go back
//! to the OS.

use core::ptr;

use super::arena_bitmap;
use super::asan;
use super::os;
use super::pool::Pool;
use super::pool::POOL_HEADER_SIZE;
use super::registry::Registry;
use super::remote::ADDRESS_LIMIT;
use super::size_class::{ARENA_MASK, ARENA_SIZE, POOLS_PER_ARENA};
use crate::sync::Cell;

/// A freed slot with at most this many bytes touched (resident) is
/// *sparse*: [`Arena::take_slot`] keeps it for the small classes.
const SPARSE_TOUCHED: usize = 2 * super::size_class::PAGE_SIZE;

/// The header in slot 0 of an arena.
#[repr(C)]
pub(crate) struct Arena {
    /// Freed pool slots, linked through `Pool::next`.
    free_pools: Cell<*mut Pool>,
    /// Index of the first slot never handed out.
    untouched: Cell<u32>,
    /// Slots not in use (freed or untouched).
    pub(crate) nfree: Cell<u32>,
    /// Freed slots whose pages are still committed (not decommitted by
    /// [`Arena::decommit_free_slots`]): the slots on `free_pools` whose
    /// header still has blocks to reuse.
    committed_free: Cell<u32>,
    /// Neighbours in the heap's sorted list of arenas with free slots, or
    /// in its retired list; `next` also links arenas doomed to be unmapped.
    pub(crate) next: Cell<*mut Arena>,
    pub(crate) prev: Cell<*mut Arena>,
    /// Neighbours in the heap's list of every arena it has mapped.
    pub(crate) all_next: Cell<*mut Arena>,
    pub(crate) all_prev: Cell<*mut Arena>,
    /// When the arena last became empty (coarse monotonic milliseconds).
    pub(crate) retired_at: Cell<u64>,
    /// On its heap's retired list.
    retired: Cell<bool>,
    /// Half of a huge-page span (see `span.rs`): mapped with its *buddy*,
    /// the arena at `self ^ ARENA_SIZE`, as one 2 MiB mapping, and
    /// unmapped with it. Both halves belong to the same heap and have the
    /// flag set or cleared together.
    pub(crate) huge: Cell<bool>,
}

/// Maps a new arena and counts it. Returns null when the OS refuses
/// memory.
#[cold]
#[inline(never)]
pub(crate) fn map_arena(registry: &Registry) -> *mut Arena {
    map_arenas(registry, 1, false)
}

/// Maps a huge-page span: two arenas in one mapping of [`SPAN_SIZE`]
/// bytes aligned to its size, advised to be backed by a transparent huge
/// page, and counts both. Returns the lower arena (its buddy is
/// [`Arena::buddy`]), both with `huge` set, or null when the OS refuses
/// memory.
#[cold]
#[inline(never)]
pub(crate) fn map_span(registry: &Registry) -> *mut Arena {
    map_arenas(registry, SPAN_SIZE / ARENA_SIZE, true)
}

/// Maps `count` arenas as one mapping aligned to its size (advised for
/// huge pages, and the arenas flagged `huge`, if `huge`), counts them and
/// enters them in the arena bitmap: the one place arenas come from.
/// Returns the first, or null when the OS refuses memory.
fn map_arenas(registry: &Registry, count: usize, huge: bool) -> *mut Arena {
    let size = count * ARENA_SIZE;
    let base = os::map_aligned(size, size);
    if base.is_null() {
        return ptr::null_mut();
    }
    if base as usize + size > ADDRESS_LIMIT {
        os::fatal(format_args!(
            "the OS mapped an arena at {base:p}, above the 48-bit addresses PyMalloc supports"
        ));
    }
    if huge {
        // SAFETY: a fresh mapping of ours, aligned to its size (so to pages).
        unsafe { os::advise_huge_pages(base, size) };
    }
    let mut first = ptr::null_mut();
    for i in 0..count {
        let at = base.wrapping_add(i * ARENA_SIZE);
        registry.arena_mapped();
        // Before any block of the arena is handed out (see `arena_bitmap`).
        arena_bitmap::insert(at);
        // SAFETY: a fresh, ARENA_SIZE-aligned mapping of ARENA_SIZE bytes
        // (a part of the mapping aligned to `count` times that).
        let arena = unsafe { Arena::init(at) };
        // SAFETY: just initialised, known to no one else yet.
        unsafe { (*arena).huge.set(huge) };
        if i == 0 {
            first = arena;
        }
    }
    first
}

/// Returns an arena to the OS and counts it: the one place arenas go. An
/// arena with `huge` set goes with its buddy, as the whole span. Returns
/// the bytes unmapped.
///
/// # Safety
/// The arena must be empty, off every list of its heap, and known to no
/// one else; if `huge` is set, it must be the lower half of its span and
/// the same must hold of its buddy.
#[cold]
#[inline(never)]
pub(crate) unsafe fn unmap_arena(registry: &Registry, arena: *mut Arena) -> usize {
    // SAFETY: the arena is still mapped (unmapped below); its header is
    // ours (this function's `# Safety`).
    let size = if unsafe { (*arena).huge.get() } {
        debug_assert_eq!(arena as usize & (SPAN_SIZE - 1), 0);
        SPAN_SIZE
    } else {
        ARENA_SIZE
    };
    for offset in (0..size).step_by(ARENA_SIZE) {
        // Before the unmapping: a foreign mapping at this address must not
        // pass for ours (see `arena_bitmap`).
        arena_bitmap::remove(arena.cast::<u8>().wrapping_add(offset));
        registry.arena_unmapped();
    }
    // The next mapping at this address may not be ours.
    asan::unpoison(arena.cast(), size);
    // SAFETY: the arena is a mapping from `map_aligned` (`map_arena`), or
    // the lower half of one (`map_span`) whose `size` bytes are the whole
    // span; empty, off every list and known to no one else, as is its
    // buddy if `huge` (this function's `# Safety`), so nothing refers to
    // the range: what `unmap` requires.
    unsafe { os::unmap(arena.cast(), size) };
    size
}

/// A huge-page span: two arenas, mapped and unmapped as one, the size and
/// alignment of an x86-64 or aarch64 (4 KiB granule) huge page.
pub(crate) const SPAN_SIZE: usize = 2 * ARENA_SIZE;

/// Pool slots an arena can hand out (slot 0 holds the headers).
pub(crate) const USABLE_POOLS: u32 = POOLS_PER_ARENA as u32 - 1;

const _: () = assert!(
    core::mem::size_of::<Arena>() <= POOL_HEADER_SIZE,
    "the arena header takes the place of slot 0's pool header"
);

impl Arena {
    /// Writes a fresh header at the start of a newly mapped arena.
    ///
    /// # Safety
    /// `base` must be a fresh, `ARENA_SIZE`-aligned mapping of `ARENA_SIZE`
    /// bytes.
    pub(crate) unsafe fn init(base: *mut u8) -> *mut Arena {
        let arena = base.cast::<Arena>();
        let header = Arena {
            free_pools: Cell::new(ptr::null_mut()),
            untouched: Cell::new(1),
            nfree: Cell::new(USABLE_POOLS),
            committed_free: Cell::new(0),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            all_next: Cell::new(ptr::null_mut()),
            all_prev: Cell::new(ptr::null_mut()),
            retired_at: Cell::new(0),
            retired: Cell::new(false),
            huge: Cell::new(false),
        };
        // SAFETY: the caller hands us the fresh mapping.
        unsafe { ptr::write(arena, header) };
        arena
    }

    /// The arena a pool (or any address inside one) belongs to.
    #[inline]
    pub(crate) fn of(addr: *mut u8) -> *mut Arena {
        (addr as usize & ARENA_MASK) as *mut Arena
    }

    /// The other half of this arena's huge-page span (meaningful only
    /// while `huge` is set).
    pub(crate) fn buddy(arena: *mut Arena) -> *mut Arena {
        (arena as usize ^ ARENA_SIZE) as *mut Arena
    }

    /// Whether the arena is on its heap's retired list (empty, kept).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.get()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nfree.get() == USABLE_POOLS
    }

    /// Takes a free pool slot; returns its header. The caller checked
    /// `nfree > 0`.
    ///
    /// A freed slot keeps the pages its pools touched (until
    /// [`Arena::decommit_free_slots`]), and the next pool of any class
    /// holds them all: a small class's pool that holds a dozen blocks in
    /// one page would keep four resident after a medium pool had filled the
    /// slot. So a `sparse` pool (a small class: its pools rarely fill)
    /// takes a freed slot with at most [`SPARSE_TOUCHED`] bytes touched,
    /// else a never-used slot, else any; another (a medium class: a few
    /// blocks fill it) takes a freed slot with more touched first, leaving
    /// the sparse ones for the small classes.
    pub(crate) fn take_slot(&self, sparse: bool) -> *mut Pool {
        debug_assert!(self.nfree.get() > 0);
        self.nfree.set(self.nfree.get() - 1);
        let head = self.free_pools.get();
        let mut prev: *mut Pool = ptr::null_mut();
        let mut pool = head;
        while !pool.is_null() {
            // SAFETY: freed slots are linked through their dead headers in
            // slot 0, which only the holder of the heap's lock (the caller)
            // touches.
            let p = unsafe { &*pool };
            if p.touched_at_most(SPARSE_TOUCHED) == sparse {
                break;
            }
            prev = pool;
            pool = p.next.get();
        }
        if pool.is_null()
            && !head.is_null()
            && (!sparse || self.untouched.get() as usize == POOLS_PER_ARENA)
        {
            // None of the kind wanted: the head will do (for a sparse pool,
            // only if no slot was never used).
            prev = ptr::null_mut();
            pool = head;
        }
        if !pool.is_null() {
            // SAFETY: freed slots are linked through their (dead) header,
            // whose `free` says whether the slot is still committed (see
            // `give_slot`).
            unsafe {
                let next = (*pool).next.get();
                if prev.is_null() {
                    self.free_pools.set(next);
                } else {
                    (*prev).next.set(next);
                }
                if !(*pool).free.get().is_null() {
                    self.committed_free.set(self.committed_free.get() - 1);
                }
            }
            return pool;
        }
        let index = self.untouched.get();
        self.untouched.set(index + 1);
        Pool::header_of_slot(self as *const Arena as usize, index as usize)
    }

    /// Gives back a pool slot whose blocks are all free.
    ///
    /// # Safety
    /// `pool` must be the header of a slot of this arena that was taken and
    /// is unused.
    pub(crate) unsafe fn give_slot(&self, pool: *mut Pool) {
        // SAFETY: the slot is ours; its header is dead, so reuse `next`
        // (and `step`, for the time, see `Pool::set_freed_ms`). Its `free`
        // is not null: a pool goes back with every block it handed out on
        // that list, and it handed out at least the one it was taken for.
        unsafe {
            (*pool).magic.set(0);
            (*pool).next.set(self.free_pools.get());
            Pool::set_freed_ms(pool, os::now_ms());
            Pool::note_touched(pool);
            if !(*pool).free.get().is_null() {
                self.committed_free.set(self.committed_free.get() + 1);
            }
        }
        self.free_pools.set(pool);
        self.nfree.set(self.nfree.get() + 1);
    }

    /// Decommits the pages of this arena's free slots that have been free
    /// for at least `age_ms` by `now` (every free slot for an age of 0):
    /// the slot stays free and mapped, and its next pool starts from
    /// fresh zeroed pages instead of reusing the blocks its last pool left
    /// (its header's `free` is cleared, which is also how `take_slot` and
    /// `Pool::init` tell a decommitted slot). Returns the slots decommitted.
    ///
    /// # Safety
    /// The caller must hold the lock of the arena's heap (see the module
    /// docs): no one else may take a slot meanwhile.
    pub(crate) unsafe fn decommit_free_slots(&self, now: u64, age_ms: u64) -> u32 {
        // A half of a huge-page span (see `span`) keeps its idle slots:
        // giving back 16 KiB of a 2 MiB page splits it, and the heap that
        // mapped the span is a large one, whose free slots are soon used
        // again. Only a release (`age_ms` 0) returns them.
        if self.committed_free.get() == 0 || (age_ms > 0 && self.huge.get()) {
            return 0;
        }
        let mut decommitted = 0;
        let mut pool = self.free_pools.get();
        while !pool.is_null() {
            // SAFETY: freed slots are linked through their (dead) headers,
            // which live in slot 0 (never decommitted) and which only the
            // holder of the heap's lock touches: the caller (`# Safety`).
            let p = unsafe { &*pool };
            if !p.free.get().is_null() && (age_ms == 0 || p.free_for_ms(now) >= age_ms) {
                // SAFETY: the slot lies in this arena's mapping (from
                // `map_aligned`) and is `POOL_SIZE`-aligned; it is free and,
                // under the lock we hold (`# Safety`), stays so until we
                // return, so
                // no block of it is in use, and with `free` cleared below no
                // one reads what its blocks held: `Pool::init` starts the
                // slot's next pool with an empty free list, and blocks at or
                // past the bump pointer are never read before being handed
                // out (see `Pool`).
                unsafe { os::decommit(p.base(), super::size_class::POOL_SIZE) };
                p.free.set(ptr::null_mut());
                decommitted += 1;
            }
            pool = p.next.get();
        }
        self.committed_free
            .set(self.committed_free.get() - decommitted);
        decommitted
    }

    /// Pool slots of this arena that have been handed out at least once and
    /// are in use now, for snapshots: calls `f` on each live pool header.
    #[cfg_attr(loom, allow(dead_code))] // used by the heap map, absent under loom
    pub(crate) fn for_each_live_pool(&self, mut f: impl FnMut(&Pool)) {
        let base = self as *const Arena as usize;
        for index in 1..self.untouched.get() as usize {
            // SAFETY: slots below `untouched` have been written as pools;
            // freed ones have magic 0.
            let pool = unsafe { &*Pool::header_of_slot(base, index) };
            if pool.magic.get() == super::pool::POOL_MAGIC {
                f(pool);
            }
        }
    }
}

/// A heap's arenas.
pub(crate) struct ArenaSet {
    /// Arenas with free slots, sorted by `nfree` ascending.
    usable: Cell<*mut Arena>,
    /// Every arena, in no order.
    all: Cell<*mut Arena>,
    /// How many arenas `all` holds.
    count: Cell<usize>,
    /// Empty arenas kept mapped to absorb the next demand (hysteresis),
    /// newest first, linked through `next` and `prev`.
    retired: Cell<*mut Arena>,
    oldest_retired: Cell<*mut Arena>,
    /// When the heap last took a retired arena back into use (coarse
    /// monotonic milliseconds): demand is back, so its other retired
    /// arenas count as retired from then on.
    pub(crate) last_reuse_ms: Cell<u64>,
    /// When the heap last checked its retired arenas in owner capacity
    /// (coarse monotonic milliseconds; 0 before the first check).
    pub(crate) owner_check_ms: Cell<u64>,
    /// The end of the current wake grace, if any: an operation count
    /// ([`Heap::ops`](super::heap::Heap::ops)) and a time, whichever comes
    /// first (see `Heap::in_wake_grace`).
    pub(crate) grace_end: Cell<(usize, u64)>,
    /// When the heap last looked for idle free slots to decommit (coarse
    /// monotonic milliseconds; 0 before the first time), see
    /// `Heap::decommit_idle_slots`.
    pub(crate) last_decommit_ms: Cell<u64>,
    /// Whether `all` held `span::SPANS_FROM_ARENAS` arenas or more since
    /// the last return of everything.
    grew_large: Cell<bool>,
    /// When the heap's thread last released the heap's memory after the
    /// heap had been large (`grew_large`;
    /// coarse monotonic milliseconds, 0 for not since the last return of
    /// everything): see `span::SPANS_AFTER_RELEASE_MS`.
    pub(crate) large_at_release_ms: Cell<u64>,
}

impl ArenaSet {
    pub(crate) fn new() -> ArenaSet {
        ArenaSet {
            usable: Cell::new(ptr::null_mut()),
            all: Cell::new(ptr::null_mut()),
            count: Cell::new(0),
            retired: Cell::new(ptr::null_mut()),
            oldest_retired: Cell::new(ptr::null_mut()),
            last_reuse_ms: Cell::new(0),
            owner_check_ms: Cell::new(0),
            grace_end: Cell::new((0, 0)),
            last_decommit_ms: Cell::new(0),
            grew_large: Cell::new(false),
            large_at_release_ms: Cell::new(0),
        }
    }

    /// The head of the usable list (the fullest arena with a free slot).
    pub(crate) fn usable_head(&self) -> *mut Arena {
        self.usable.get()
    }

    /// Keeps an empty arena, on no other list but `all`, for reuse.
    ///
    /// # Safety
    /// `arena` must be empty, live, ours and not on the usable list.
    pub(crate) unsafe fn push_retired(&self, arena: *mut Arena, now: u64) {
        let head = self.retired.get();
        // SAFETY: `arena` is live and belongs to this heap (the function's
        // requirement), so this thread may write its list fields; the
        // retired head is one of this heap's live arenas too.
        unsafe {
            (*arena).retired_at.set(now);
            (*arena).retired.set(true);
            (*arena).prev.set(ptr::null_mut());
            (*arena).next.set(head);
            if head.is_null() {
                self.oldest_retired.set(arena);
            } else {
                (*head).prev.set(arena);
            }
        }
        self.retired.set(arena);
    }

    /// The arena retired longest ago, or null.
    pub(crate) fn oldest_retired(&self) -> *mut Arena {
        self.oldest_retired.get()
    }

    /// Removes an arena from the retired list (newest first, linked
    /// through `next` and `prev`).
    ///
    /// # Safety
    /// `arena` must be on the retired list.
    pub(crate) unsafe fn unlink_retired(&self, arena: *mut Arena) {
        // SAFETY: retired arenas are live and ours.
        unsafe {
            let (prev, next) = ((*arena).prev.get(), (*arena).next.get());
            if prev.is_null() {
                self.retired.set(next);
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.oldest_retired.set(prev);
            } else {
                (*next).prev.set(prev);
            }
            (*arena).next.set(ptr::null_mut());
            (*arena).prev.set(ptr::null_mut());
            (*arena).retired.set(false);
        }
    }

    pub(crate) fn first(&self) -> *mut Arena {
        self.all.get()
    }

    /// How many arenas the heap has mapped (retired ones included).
    pub(crate) fn count(&self) -> usize {
        self.count.get()
    }

    /// Adds a new arena to the list of all arenas.
    ///
    /// # Safety
    /// `arena` must be a live arena of this set's heap, on no list.
    pub(crate) unsafe fn add(&self, arena: *mut Arena) {
        let head = self.all.get();
        // SAFETY: arenas on our lists are live and ours.
        unsafe {
            (*arena).all_prev.set(ptr::null_mut());
            (*arena).all_next.set(head);
            if !head.is_null() {
                (*head).all_prev.set(arena);
            }
        }
        self.all.set(arena);
        self.count.set(self.count.get() + 1);
        if self.count.get() >= super::span::SPANS_FROM_ARENAS {
            self.grew_large.set(true);
        }
    }

    /// Whether the heap held `span::SPANS_FROM_ARENAS` arenas or more since
    /// the last return of everything.
    pub(crate) fn grew_large(&self) -> bool {
        self.grew_large.get()
    }

    /// Everything went back: growth is counted again from the next arena
    /// mapped (what survives the return is not growth), and no release of
    /// a large heap is remembered (`pass` notes one after this).
    pub(crate) fn reset_growth(&self) {
        self.grew_large.set(false);
        self.large_at_release_ms.set(0);
    }

    /// Removes an arena from the list of all arenas.
    ///
    /// # Safety
    /// `arena` must be on that list.
    pub(crate) unsafe fn remove(&self, arena: *mut Arena) {
        // SAFETY: arenas on our lists are live and ours.
        unsafe {
            let (prev, next) = ((*arena).all_prev.get(), (*arena).all_next.get());
            if prev.is_null() {
                self.all.set(next);
            } else {
                (*prev).all_next.set(next);
            }
            if !next.is_null() {
                (*next).all_prev.set(prev);
            }
        }
        self.count.set(self.count.get() - 1);
    }

    /// Inserts an arena into the usable list at the place its `nfree` sorts.
    ///
    /// # Safety
    /// `arena` must be live, ours, and not on the usable list.
    pub(crate) unsafe fn insert_usable(&self, arena: *mut Arena) {
        // SAFETY: arenas on our lists are live and ours.
        unsafe {
            let nfree = (*arena).nfree.get();
            let mut prev: *mut Arena = ptr::null_mut();
            let mut next = self.usable.get();
            while !next.is_null() && (*next).nfree.get() < nfree {
                prev = next;
                next = (*next).next.get();
            }
            (*arena).prev.set(prev);
            (*arena).next.set(next);
            if prev.is_null() {
                self.usable.set(arena);
            } else {
                (*prev).next.set(arena);
            }
            if !next.is_null() {
                (*next).prev.set(arena);
            }
        }
    }

    /// Removes an arena from the usable list.
    ///
    /// # Safety
    /// `arena` must be on the usable list.
    pub(crate) unsafe fn unlink_usable(&self, arena: *mut Arena) {
        // SAFETY: arenas on our lists are live and ours.
        unsafe {
            let (prev, next) = ((*arena).prev.get(), (*arena).next.get());
            if prev.is_null() {
                self.usable.set(next);
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
            (*arena).next.set(ptr::null_mut());
            (*arena).prev.set(ptr::null_mut());
        }
    }

    /// Restores the sort after `arena`'s `nfree` grew by one, moving it
    /// towards the tail past the arenas that now hold fewer free slots.
    ///
    /// # Safety
    /// `arena` must be on the usable list.
    pub(crate) unsafe fn resort_after_free(&self, arena: *mut Arena) {
        // SAFETY: arenas on our lists are live and ours.
        unsafe {
            let nfree = (*arena).nfree.get();
            let mut after = (*arena).next.get();
            if after.is_null() || (*after).nfree.get() >= nfree {
                return;
            }
            while !(*after).next.get().is_null() && (*(*after).next.get()).nfree.get() < nfree {
                after = (*after).next.get();
            }
            self.unlink_usable(arena);
            let next = (*after).next.get();
            (*arena).prev.set(after);
            (*arena).next.set(next);
            (*after).next.set(arena);
            if !next.is_null() {
                (*next).prev.set(arena);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::alloc::heap::Heap;
    use crate::alloc::size_class::{class_of_size, C_POOL_THRESHOLD};

    /// Gives `pool` (taken from `arena`, initialised for `class`) back as
    /// its heap would after handing out the blocks below `carved` bytes:
    /// every block back, the first on its free list.
    ///
    /// # Safety
    /// `pool` must be a slot of `arena` taken and not given back.
    unsafe fn give_back_carved(arena: &Arena, pool: *mut Pool, class: usize, carved: usize) {
        let owner = ptr::NonNull::<Heap>::dangling().as_ptr();
        // SAFETY: the slot was just taken from a fresh arena (this
        // function's `# Safety`): unused, never written.
        unsafe { Pool::init(pool, class, owner) };
        // SAFETY: a live header nobody else reaches (a test's own arena);
        // the block at `base` is zeroed memory, so a one-block free list.
        unsafe {
            let p = &*pool;
            p.carve.set(p.base().add(carved));
            p.free.set(p.base().cast());
            arena.give_slot(pool);
        }
    }

    #[test]
    fn small_classes_take_the_slots_with_few_pages_touched() {
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE);
        assert!(!base.is_null());
        // SAFETY: a fresh mapping of ARENA_SIZE bytes aligned to its size.
        let arena = unsafe { &*Arena::init(base) };
        let coarse = class_of_size(C_POOL_THRESHOLD);
        // A pool of 4 KiB blocks that filled its slot, given back.
        let full = arena.take_slot(false);
        // SAFETY: just taken from `arena`.
        unsafe { give_back_carved(arena, full, coarse, super::super::size_class::POOL_SIZE) };
        // A small class leaves it for the medium ones and takes a slot
        // never used (before: the last slot given back, whatever its pages).
        let small = arena.take_slot(true);
        assert_ne!(
            small, full,
            "a small class took a slot with every page touched"
        );
        // SAFETY: just taken from `arena`.
        unsafe { give_back_carved(arena, small, 0, 16) };
        // Now `small` heads the free list: a medium class skips it, a
        // small one takes it.
        assert_eq!(arena.take_slot(false), full);
        assert_eq!(arena.take_slot(true), small);
        assert_eq!(arena.nfree.get(), USABLE_POOLS - 2);
        // SAFETY: our own mapping, of which nothing is in use any more.
        unsafe { os::unmap(base, ARENA_SIZE) };
    }
}
