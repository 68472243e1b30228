//! Heaps: the per-thread allocation state.
//!
//! A heap owns pools and the arenas they come from. At any moment one thread
//! at most owns a heap (see [`HeapState`]); only that thread touches its
//! `Cell` fields, so the fast paths use plain loads and stores. Other
//! threads reach a heap only through its atomic `pending` list (pools that
//! received remote frees) and its single-writer counters, which they read
//! for statistics.
//!
//! Heaps are never unmapped: a thread that exits parks its heap, and the next
//! thread to start adopts it with all its pools. This is what keeps memory
//! bounded however many threads a program creates, and what makes it safe
//! for any thread to follow a pool's `owner` pointer at any time.

use core::cell::Cell;
use core::ptr;

use crossbeam_utils::CachePadded;

use super::arena::Arena;
use super::arena::ArenaSet;
use super::asan;
use super::os;
use super::pool::{Block, Pool, ADDRESS_LIMIT};
use super::registry::Registry;
use super::size_class::{ARENA_SIZE, NB_CLASSES, PAGE_SIZE, POOL_SIZE};
use crate::sync::{AtomicPtr, AtomicU8, AtomicUsize, CasStart, Ordering};

/// Who may use a heap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum HeapState {
    /// A live thread allocates from it.
    Owned = 0,
    /// No thread uses it; any thread may claim it.
    Parked = 1,
    /// Claimed for a moment by a thread that is not its owner (to collect
    /// remote frees, or to serve an allocation during thread teardown).
    Busy = 2,
}

/// Adds one to a counter that only one thread writes. A plain load and
/// store, not a read-modify-write: readers on other threads see a value
/// that is at worst slightly stale, never torn.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicUsize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add(1);
    // Release (a plain store on x86): a snapshot that sees this count also
    // sees everything that happened before it, e.g. a free's allocation.
    counter.store(value, Ordering::Release);
    value
}

#[inline(always)]
fn drop_one(counter: &AtomicUsize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_sub(1),
        Ordering::Relaxed,
    );
}

/// What a heap keeps per size class, in one 32-byte slot so the fast path
/// touches a single cache line of the heap.
#[repr(C, align(32))]
pub(crate) struct ClassSlot {
    /// Head of the list of this class's pools with free blocks, or the
    /// heap's `empty` sentinel.
    current: Cell<*mut Pool>,
    /// Blocks of this class allocated by the owning thread(s), ever.
    pub(crate) allocs: AtomicUsize,
    /// Blocks of this class freed by the owning thread(s), ever, wherever
    /// the block came from. In-use counts are `allocs - frees` summed over
    /// all heaps, so they are exact whoever frees.
    pub(crate) frees: AtomicUsize,
    /// Pools of this class the heap owns.
    pub(crate) pools: AtomicUsize,
}

/// How long an empty arena (beyond the newest) stays mapped for reuse.
const RETAIN_MS: u64 = 200;
/// Every 4,096th allocation or free of a class (read off the statistics
/// counters the fast paths update anyway, so the check costs one test of a
/// register) looks at the age of the heap's retired arenas.
const PURGE_CHECK_MASK: usize = 4096 - 1;

/// Parked heaps are collected by the threads freeing into them once this
/// many of their pools have received remote frees.
const PARKED_COLLECT_EVERY: usize = 16;

/// The per-thread allocation state. See the module docs.
#[repr(C)]
pub(crate) struct Heap {
    classes: [ClassSlot; NB_CLASSES],
    /// The sentinel pool: no free block, so `alloc` falls to the slow path.
    empty: Pool,
    /// Pools with remote frees, pushed by other threads (Treiber stack
    /// linked through `Pool::pending_next`). On its own cache line: other
    /// threads write it.
    pending: CachePadded<AtomicPtr<Pool>>,
    pub(crate) state: AtomicU8,
    parked_pushes: AtomicUsize,
    /// Next heap in the registry; set before the heap is published.
    pub(crate) next_heap: AtomicPtr<Heap>,
    registry: *const Registry,
    arenas: ArenaSet,
    /// While set, emptied arenas go straight back to the OS.
    trimming: Cell<bool>,
    /// Bytes this heap has returned to the OS, ever (single writer).
    bytes_unmapped: Cell<usize>,
}

impl Heap {
    /// Bytes mapped for one heap (heaps are never unmapped, except by the
    /// model checks).
    pub(crate) const MAPPING_SIZE: usize =
        core::mem::size_of::<Heap>().div_ceil(PAGE_SIZE) * PAGE_SIZE;

    /// Maps and initialises a new heap in state `state`. It is not yet in
    /// any registry. Returns null when the OS refuses memory.
    pub(crate) fn create(registry: &Registry, state: HeapState) -> *mut Heap {
        let heap = os::map_aligned(Heap::MAPPING_SIZE, PAGE_SIZE).cast::<Heap>();
        if heap.is_null() {
            return heap;
        }
        let value = Heap {
            classes: core::array::from_fn(|_| ClassSlot {
                current: Cell::new(ptr::null_mut()),
                allocs: AtomicUsize::new(0),
                frees: AtomicUsize::new(0),
                pools: AtomicUsize::new(0),
            }),
            empty: Pool::empty(),
            pending: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
            state: AtomicU8::new(state as u8),
            parked_pushes: AtomicUsize::new(0),
            next_heap: AtomicPtr::new(ptr::null_mut()),
            registry,
            arenas: ArenaSet::new(),
            trimming: Cell::new(false),
            bytes_unmapped: Cell::new(0),
        };
        // SAFETY: `heap` is a fresh mapping large and aligned enough.
        unsafe {
            ptr::write(heap, value);
            let empty = ptr::addr_of_mut!((*heap).empty);
            for slot in &(*heap).classes {
                slot.current.set(empty);
            }
        }
        heap
    }

    #[inline(always)]
    fn empty_pool(&self) -> *mut Pool {
        &self.empty as *const Pool as *mut Pool
    }

    #[inline(always)]
    fn as_mut_ptr(&self) -> *mut Heap {
        self as *const Heap as *mut Heap
    }

    fn registry(&self) -> &Registry {
        // SAFETY: registries outlive their heaps (the global one is static;
        // model checks keep theirs alive for the whole model).
        unsafe { &*self.registry }
    }

    pub(crate) fn class_slot(&self, class: usize) -> &ClassSlot {
        &self.classes[class]
    }

    // ---- allocation ---------------------------------------------------

    /// Allocates a block of `class`. The fast path: pop the current pool's
    /// free list.
    ///
    /// # Safety
    /// The calling thread must own this heap, and `class < NB_CLASSES`.
    #[inline(always)]
    pub(crate) unsafe fn alloc(&self, class: usize) -> *mut u8 {
        // SAFETY: the caller passes a valid class.
        let slot = unsafe { self.classes.get_unchecked(class) };
        // SAFETY: `current` points at one of our pools or at `empty`.
        let block = unsafe { (*slot.current.get()).pop() };
        if !block.is_null() {
            if bump(&slot.allocs) & PURGE_CHECK_MASK == 0 {
                return self.tick_then(block.cast());
            }
            return block.cast();
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.alloc_slow(class) }
    }

    /// The current pool is dry: collect remote frees, carve more of the
    /// pool, move to the next pool of the class, or take a fresh one.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, class: usize) -> *mut u8 {
        // SAFETY: we own the heap (caller contract).
        unsafe { self.collect_pending() };
        let slot = &self.classes[class];
        loop {
            let mut pool = slot.current.get();
            if pool == self.empty_pool() {
                pool = self.new_pool(class);
                if pool.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: a fresh pool of ours, on no list.
                unsafe { self.link_front(pool) };
            }
            // SAFETY: pools on our class lists are live and ours.
            let p = unsafe { &*pool };
            let mut block = p.pop();
            // SAFETY: we own the pool and its free list is empty.
            if block.is_null() && unsafe { p.carve_page() } {
                block = p.pop();
            }
            if !block.is_null() {
                bump(&slot.allocs);
                return block.cast();
            }
            // Nothing left: park it off the list until a block comes back.
            p.full.set(true);
            // SAFETY: the pool is on its class list.
            unsafe { self.unlink(pool) };
        }
    }

    // ---- local free ---------------------------------------------------

    /// Frees a block of a pool this heap owns. The fast path: push on the
    /// pool's free list.
    ///
    /// # Safety
    /// The calling thread must own this heap; `block` must be a block in
    /// use of `pool`, and `pool` must be owned by this heap.
    #[inline(always)]
    pub(crate) unsafe fn free_local(&self, pool: *mut Pool, block: *mut u8) {
        // SAFETY: caller contract.
        let p = unsafe { &*pool };
        // SAFETY: caller contract.
        let used = unsafe { p.push(block.cast()) };
        // SAFETY: a live pool's class is below NB_CLASSES.
        let frees = bump(&unsafe { self.classes.get_unchecked(p.class()) }.frees);
        if used == 0 || p.full.get() || frees & PURGE_CHECK_MASK == 0 {
            // SAFETY: forwarded.
            unsafe { self.free_slow(pool, frees) };
        }
    }

    /// A local free that changed the pool's standing, or fell on the tick.
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&self, pool: *mut Pool, frees: usize) {
        // SAFETY: caller contract of `free_local`.
        unsafe { self.blocks_returned(pool) };
        if frees & PURGE_CHECK_MASK == 0 {
            self.maybe_purge();
        }
    }

    /// Blocks came back to a pool: a full pool goes back on its class list,
    /// an empty one back to its arena (see `pool_emptied`).
    ///
    /// # Safety
    /// The calling thread must own the pool's heap.
    unsafe fn blocks_returned(&self, pool: *mut Pool) {
        // SAFETY: caller contract.
        let p = unsafe { &*pool };
        if p.full.get() {
            p.full.set(false);
            // SAFETY: a full pool is on no list.
            unsafe { self.link_front(pool) };
        }
        if p.used.get() == 0 {
            // SAFETY: the pool is on its class list and empty.
            unsafe { self.pool_emptied(pool) };
        }
    }

    // ---- remote frees -------------------------------------------------

    /// Pushes `pool`, whose remote list just became non-empty, onto this
    /// heap's pending list.
    ///
    /// # Safety
    /// The caller must be the thread whose push made `pool.remote`
    /// non-empty, and `pool` must belong to this heap.
    unsafe fn push_pending(&self, pool: *mut Pool) {
        let mut head = self.pending.load_for_cas();
        loop {
            // SAFETY: until the owner takes the pool off this list, only we
            // write its `pending_next` (see the invariant on `Pool`).
            unsafe { (*pool).pending_next.store(head, Ordering::Relaxed) };
            match self.pending.compare_exchange_weak(
                head,
                pool,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Takes every remote free waiting for this heap back into the pools'
    /// free lists.
    ///
    /// # Safety
    /// The calling thread must own (or have claimed) this heap.
    pub(crate) unsafe fn collect_pending(&self) {
        if self.pending.load(Ordering::Relaxed).is_null() {
            return;
        }
        let mut pool = self.pending.swap(ptr::null_mut(), Ordering::Acquire);
        while !pool.is_null() {
            // SAFETY: pools on our pending list are ours and live (they hold
            // the blocks on their remote list).
            let p = unsafe { &*pool };
            // Read the link before emptying `remote`: once it is empty, a
            // pusher may link the pool into the pending list again.
            let next = p.pending_next.load(Ordering::Relaxed);
            let (blocks, count) = p.remote.take();
            // SAFETY: we own the pool; `blocks` are its blocks.
            unsafe { self.take_remote_blocks(pool, blocks, count) };
            pool = next;
        }
    }

    unsafe fn take_remote_blocks(&self, pool: *mut Pool, blocks: *mut Block, count: u32) {
        if blocks.is_null() {
            return;
        }
        // SAFETY: caller contract: we own the pool and the blocks.
        let p = unsafe { &*pool };
        let free = p.free.get();
        if !free.is_null() {
            // Splice in front of the local list. Pools that receive remote
            // frees are usually full (no local list), so this walk is rare.
            let mut tail = blocks;
            // SAFETY: the list was built by remote pushers and published by
            // the Acquire swap that handed it to us.
            unsafe {
                while !Block::next(tail).is_null() {
                    tail = Block::next(tail);
                }
                Block::set_next(tail, free);
            }
        }
        p.free.set(blocks);
        p.used.set(p.used.get() - count);
        // SAFETY: as for a local free of the same blocks.
        unsafe { self.blocks_returned(pool) };
    }

    // ---- pools and arenas ---------------------------------------------

    /// Links a pool at the head of its class list.
    unsafe fn link_front(&self, pool: *mut Pool) {
        // SAFETY: caller contract: a live pool of ours on no list.
        unsafe {
            let slot = &self.classes[(*pool).class()];
            let head = slot.current.get();
            (*pool).prev.set(ptr::null_mut());
            if head == self.empty_pool() {
                (*pool).next.set(ptr::null_mut());
            } else {
                (*pool).next.set(head);
                (*head).prev.set(pool);
            }
            slot.current.set(pool);
        }
    }

    /// Unlinks a pool from its class list.
    unsafe fn unlink(&self, pool: *mut Pool) {
        // SAFETY: caller contract: a live pool of ours on its class list.
        unsafe {
            let slot = &self.classes[(*pool).class()];
            let (prev, next) = ((*pool).prev.get(), (*pool).next.get());
            if prev.is_null() {
                slot.current.set(if next.is_null() {
                    self.empty_pool()
                } else {
                    next
                });
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
        }
    }

    /// A pool on its class list has no block in use. Keep it if it is the
    /// class's only pool (so a program that allocates and frees one block
    /// in a loop does not take and return a pool each time), else give it
    /// back to its arena.
    unsafe fn pool_emptied(&self, pool: *mut Pool) {
        // SAFETY: caller contract.
        let p = unsafe { &*pool };
        let slot = &self.classes[p.class()];
        if !self.trimming.get() && slot.current.get() == pool && p.next.get().is_null() {
            return;
        }
        // SAFETY: on its class list, empty, ours.
        unsafe {
            self.unlink(pool);
            self.release_pool(pool);
        }
    }

    /// Takes a pool slot from the fullest arena with one free, mapping a new
    /// arena if needed, and initialises it for `class`.
    fn new_pool(&self, class: usize) -> *mut Pool {
        let mut arena = self.arenas.usable_head();
        if arena.is_null() {
            arena = self.arenas.pop_retired();
            if arena.is_null() {
                arena = self.map_arena();
                if arena.is_null() {
                    return ptr::null_mut();
                }
            }
            // SAFETY: a live arena of ours, on no usable list.
            unsafe { self.arenas.insert_usable(arena) };
        }
        // SAFETY: arenas on the usable list are live, ours, with a free slot.
        let pool = unsafe { (*arena).take_slot() };
        // SAFETY: as above.
        if unsafe { (*arena).nfree.get() } == 0 {
            // SAFETY: it is on the usable list.
            unsafe { self.arenas.unlink_usable(arena) };
        }
        // SAFETY: the slot is ours and unused.
        unsafe { Pool::init(pool, class, self.as_mut_ptr()) };
        // SAFETY: a live pool header.
        asan::poison(unsafe { (*pool).base() }, POOL_SIZE);
        bump(&self.classes[class].pools);
        pool
    }

    /// Returns an empty pool, on no list, to its arena.
    unsafe fn release_pool(&self, pool: *mut Pool) {
        // SAFETY: caller contract: an empty pool of ours, on no list.
        let class = unsafe { (*pool).class() };
        drop_one(&self.classes[class].pools);
        let arena = Arena::of(pool.cast());
        // SAFETY: the pool's arena is live and ours.
        let a = unsafe { &*arena };
        let was_full = a.nfree.get() == 0;
        // SAFETY: the slot is one of this arena's, unused now.
        unsafe { a.give_slot(pool) };
        // SAFETY: list operations on our own live arena.
        unsafe {
            if a.is_empty() {
                if !was_full {
                    self.arenas.unlink_usable(arena);
                }
                self.arena_emptied(arena);
            } else if was_full {
                self.arenas.insert_usable(arena);
            } else {
                self.arenas.resort_after_free(arena);
            }
        }
    }

    /// An arena became empty. Keep it mapped for a while rather than
    /// unmapping it at once: a program whose memory use swings by a few
    /// megabytes would otherwise pay `munmap`, `mmap` and a page fault per
    /// page on every swing (CPython keeps one such arena; mimalloc delays
    /// its purges by 10 ms). Any kept for more than `RETAIN_MS` goes back
    /// to the OS at the heap's next arena event, within 4,096 allocations
    /// or frees of any class, or at once when its thread exits; the newest
    /// is kept until [`Heap::trim`] (CPython's one spare arena).
    unsafe fn arena_emptied(&self, arena: *mut Arena) {
        if self.trimming.get() {
            // SAFETY: an empty arena of ours on no usable list.
            unsafe { self.unmap_arena(arena) };
            return;
        }
        let now = os::now_ms();
        // SAFETY: empty, ours, on no usable list.
        unsafe { self.arenas.push_retired(arena, now) };
        self.purge_retired(now);
    }

    /// Runs the periodic tick, then returns `block` (a tail call from the
    /// allocation fast path, so that path keeps no register across a call).
    #[cold]
    #[inline(never)]
    fn tick_then(&self, block: *mut u8) -> *mut u8 {
        self.maybe_purge();
        block
    }

    /// The periodic tick (every 4,096 allocations or frees of a class, and
    /// on the slow paths): takes back blocks other threads freed into our
    /// pools, so a thread that never runs dry still returns them, and
    /// returns retired arenas that have been idle too long, if there are any
    /// beyond the spare (a look at the clock only then).
    #[cold]
    #[inline(never)]
    fn maybe_purge(&self) {
        // SAFETY: only the owning (or claiming) thread runs the tick.
        unsafe { self.collect_pending() };
        if self.arenas.retired_count() > 1 {
            self.purge_retired(os::now_ms());
        }
    }

    /// Unmaps the retired arenas, oldest first, that have been idle for
    /// `RETAIN_MS` by `now`, keeping the newest (pass `u64::MAX` to keep
    /// only that one).
    fn purge_retired(&self, now: u64) {
        while self.arenas.retired_count() > 1 {
            let oldest = self.arenas.oldest_retired();
            // SAFETY: retired arenas are live and ours.
            if now.saturating_sub(unsafe { (*oldest).retired_at.get() }) < RETAIN_MS {
                return;
            }
            // SAFETY: empty, ours, on the retired list only.
            unsafe {
                self.arenas.unlink_retired(oldest);
                self.unmap_arena(oldest);
            }
        }
    }

    fn map_arena(&self) -> *mut Arena {
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE);
        if base.is_null() {
            return ptr::null_mut();
        }
        if base as usize + ARENA_SIZE > ADDRESS_LIMIT {
            os::fatal(format_args!(
                "the OS mapped an arena at {base:p}, above the 48-bit addresses PyMalloc supports"
            ));
        }
        // SAFETY: a fresh aligned mapping of ARENA_SIZE bytes.
        let arena = unsafe { Arena::init(base) };
        // SAFETY: fresh, ours, on no list.
        unsafe { self.arenas.add(arena) };
        self.registry().arena_mapped(base);
        arena
    }

    unsafe fn unmap_arena(&self, arena: *mut Arena) {
        // SAFETY: caller contract: empty, ours, on no usable list.
        unsafe { self.arenas.remove(arena) };
        self.registry().arena_unmapped(arena.cast());
        self.bytes_unmapped
            .set(self.bytes_unmapped.get() + ARENA_SIZE);
        // The next mapping at this address may not be ours.
        asan::unpoison(arena.cast(), ARENA_SIZE);
        // SAFETY: nothing refers to an empty arena.
        unsafe { os::unmap(arena.cast(), ARENA_SIZE) };
    }

    /// Returns everything this heap can spare to the OS: collects remote
    /// frees, gives back the empty pools kept per class, and unmaps every
    /// empty arena including the spare. Returns the bytes unmapped.
    ///
    /// # Safety
    /// The calling thread must own (or have claimed) this heap.
    pub(crate) unsafe fn trim(&self) -> usize {
        let before = self.bytes_unmapped.get();
        self.trimming.set(true);
        // SAFETY: caller contract.
        unsafe { self.collect_pending() };
        for slot in &self.classes {
            // An empty pool kept as a class's last one may have had others
            // linked in front of it since: walk the whole list.
            let mut pool = slot.current.get();
            while pool != self.empty_pool() && !pool.is_null() {
                // SAFETY: pools on our class lists are live and ours.
                let next = unsafe { (*pool).next.get() };
                // SAFETY: as above.
                if unsafe { (*pool).used.get() } == 0 {
                    // SAFETY: as above; `trimming` makes it go back.
                    unsafe { self.pool_emptied(pool) };
                }
                pool = next;
            }
        }
        loop {
            let arena = self.arenas.pop_retired();
            if arena.is_null() {
                break;
            }
            // SAFETY: a retired arena is empty, ours, on no usable list.
            unsafe { self.unmap_arena(arena) };
        }
        self.trimming.set(false);
        self.bytes_unmapped.get() - before
    }

    /// Calls `f` on every arena this heap has mapped.
    ///
    /// # Safety
    /// The calling thread must own (or have claimed) this heap.
    pub(crate) unsafe fn for_each_arena(&self, mut f: impl FnMut(&Arena)) {
        let mut arena = self.arenas.first();
        while !arena.is_null() {
            // SAFETY: arenas on our list are live.
            let a = unsafe { &*arena };
            f(a);
            arena = a.all_next.get();
        }
    }

    // ---- ownership ----------------------------------------------------

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Tries to take a parked heap for `to` (Owned or Busy).
    pub(crate) fn try_claim(&self, to: HeapState) -> bool {
        self.state.load_for_cas() == HeapState::Parked as u8
            && self
                .state
                .compare_exchange(
                    HeapState::Parked as u8,
                    to as u8,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Gives the heap up: any thread may claim it from now on.
    ///
    /// # Safety
    /// The calling thread must own (or have claimed) this heap and must not
    /// touch it again without claiming it.
    pub(crate) unsafe fn park(&self) {
        // SAFETY: caller contract.
        unsafe { self.collect_pending() };
        // No owner will reuse them soon: keep only the spare.
        self.purge_retired(u64::MAX);
        self.parked_pushes.store(0, Ordering::Relaxed);
        self.state.store(HeapState::Parked as u8, Ordering::Release);
    }

    /// A remote free reached a pool of this heap while it may be parked:
    /// every so often, claim it and collect, so memory freed into the heaps
    /// of exited threads goes back to arenas (and arenas to the OS) even if
    /// no thread adopts them.
    fn maybe_collect_parked(&self) {
        if self.state.load(Ordering::Relaxed) != HeapState::Parked as u8 {
            return;
        }
        if self.parked_pushes.fetch_add(1, Ordering::Relaxed) + 1 < PARKED_COLLECT_EVERY {
            return;
        }
        if self.try_claim(HeapState::Busy) {
            // SAFETY: claimed above; parked again right after.
            unsafe { self.park() };
        }
    }
}

/// Frees a block of a pool that the calling thread does not own: push it on
/// the pool's remote list and, if that list was empty, tell the owner by
/// pushing the pool on the owner's pending list.
///
/// `me` is the calling thread's heap, for counting, or null if it has none.
///
/// # Safety
/// `block` must be a block in use of `pool`, which belongs to a heap that
/// `me` is not.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_remote(me: *mut Heap, pool: *mut Pool, block: *mut u8) {
    // SAFETY: a pool with a block in use is live; its class does not change
    // while blocks are in use.
    let p = unsafe { &*pool };
    let class = p.class();
    let owner = p.owner.load(Ordering::Relaxed);
    if me.is_null() {
        // SAFETY: every pool's owner is a live (never unmapped) heap.
        unsafe { (*owner).registry() }.count_orphan_free(class);
    } else {
        // SAFETY: `me` is the caller's own heap.
        bump(&unsafe { &*me }.classes[class].frees);
    }
    if super::debug::CHECKS && p.remote.head() == block.cast::<Block>() {
        os::fatal(format_args!(
            "dealloc of {block:p}: double free (the block is already on its pool's \
             remote free list)"
        ));
    }
    // SAFETY: caller contract: a block of this pool, being freed by us.
    let was_empty = unsafe { p.remote.push(block.cast::<Block>()) };
    if was_empty {
        // SAFETY: our push made `remote` non-empty; the owner is live.
        unsafe {
            (*owner).push_pending(pool);
            (*owner).maybe_collect_parked();
        }
    }
}
