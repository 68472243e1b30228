//! Heaps: the per-thread allocation state, and its owner's paths (the fast
//! paths, and the slow paths that take pools from arenas and give them
//! back). Remote frees are in `remote.rs`, retention and purging in
//! `purge.rs`, locking, claiming and parking in `registry.rs`.

use core::ptr;

use crossbeam_utils::CachePadded;

use super::arena::{Arena, ArenaSet};
use super::asan;
use super::large_cache::LargeCache;
use super::large_count::LargeCounts;
use super::os;
use super::pool::Pool;
use super::registry::{HeapLock, Locked, Ownership, Registry};
use super::remote::Outbox;
use super::size_class::{C_FAST_CLASS, NB_CLASSES, NB_SMALL_CLASSES, PAGE_SIZE, POOL_SIZE};
use crate::sync::{AtomicPtr, AtomicU8, AtomicUsize, Cell, Ordering};

/// Adds `n` to a counter that only one thread writes at a time (the
/// heap's owner, or the holder of its lock), and returns the new value. A
/// plain load and store, not a read-modify-write: readers on other threads
/// see a value that is at worst slightly stale, never torn.
#[inline(always)]
pub(crate) fn add_single_writer(counter: &AtomicUsize, n: usize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add(n);
    // Release (a plain store on x86): a snapshot that sees this count also
    // sees everything that happened before it, e.g. a free's allocation.
    counter.store(value, Ordering::Release);
    value
}

/// Adds one to a single-writer counter (see [`add_single_writer`]).
#[inline(always)]
pub(crate) fn bump(counter: &AtomicUsize) -> usize {
    add_single_writer(counter, 1)
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
    /// Head of the list of this class's attached pools (those that had free
    /// blocks when last looked at), or the heap's `empty` sentinel.
    current: Cell<*mut Pool>,
    /// Blocks of this class allocated in owner capacity, ever.
    pub(crate) allocs: AtomicUsize,
    /// Blocks of this class freed by this heap's thread(s), ever, wherever
    /// the block came from. In-use counts are `allocs - frees` summed over
    /// all heaps, so they are exact whoever frees.
    pub(crate) frees: AtomicUsize,
    /// Pools of this class the heap owns (written under the lock).
    pub(crate) pools: AtomicUsize,
}

/// Every 4,096th allocation or free of a class (read off the statistics
/// counters the fast paths update anyway, so the check costs one test of a
/// register) runs the heap's tick (see [`Heap::tick`]).
const TICK_MASK: usize = 4096 - 1;

/// For each entry of [`C_FAST_CLASS`] (C's fast path, requests of 1 to
/// 2,048 bytes by `(size - 1) / 16`), the byte offset of that class's
/// [`ClassSlot`] in a [`Heap`]: the table C's `malloc` reads (see
/// [`Heap::alloc_pop_at`]). Every offset fits a `u16` (256 classes of 32
/// bytes).
#[cfg_attr(loom, allow(dead_code))] // only C's malloc uses it
pub(crate) const C_FAST_SLOT: [u16; C_FAST_CLASS.len()] = {
    let mut table = [0; C_FAST_CLASS.len()];
    let mut i = 0;
    while i < table.len() {
        table[i] = (C_FAST_CLASS[i] as usize * core::mem::size_of::<ClassSlot>()) as u16;
        i += 1;
    }
    table
};

const _: () = assert!(
    core::mem::offset_of!(Heap, classes) == 0
        && NB_CLASSES * core::mem::size_of::<ClassSlot>() <= u16::MAX as usize + 1,
    "C_FAST_SLOT's offsets address `classes` from the heap's start"
);

/// The per-thread allocation state.
///
/// # Capacities
///
/// At any moment a heap is used in one of three capacities:
///
/// * **owner**: the thread bound to it while its `state` is `Owned`. It
///   runs the fast paths with no lock at all, and takes `lock` on the slow
///   paths that touch what guests touch (arenas, the pending list); a
///   detached pool it frees into it takes back with a compare-and-swap
///   that a guest's claim excludes (see `Pool`), not with the lock.
/// * **keeper**: whoever holds `lock` of a heap whose `state` is `Parked`
///   (no thread owns it): a thread adopting it, one borrowing it for an
///   allocation during thread teardown, a reclaimer trimming it. A keeper
///   may do all an owner does.
/// * **guest**: a thread holding `lock` of a heap that another thread owns:
///   a reclaimer (`release_free_memory()`, the background purge, a pass run
///   by some thread's tick). A guest touches only what the owner touches
///   under the lock: the arenas and their retired list, the pools it takes
///   off the pending list (claiming the detached ones, and reclaiming
///   those no block of which is held, see `Pool`), and the outbox (see `Outbox`). It never touches
///   a class list or a pool attached to one, which is what lets the owner's
///   fast paths run without the lock.
///
/// "Owner capacity" below means owner or keeper.
///
/// # Who writes what
///
/// | field | written by |
/// |---|---|
/// | `classes[].current`, attached pools' owner lines | owner capacity, no lock |
/// | `classes[].allocs`, `frees`, `large`, `large_credit` | owner capacity (one writer at a time) |
/// | `classes[].pools`, `arenas`, `idle_*` | lock holder |
/// | `outbox` | see `Outbox` |
/// | `pending` | any thread pushes; a lock holder takes |
/// | `state` | lock holder (`registry.rs`) |
/// | `held`, `kept` | owner capacity |
/// | `large_cache` | the holder of its own lock (see `LargeCache`) |
///
/// Heaps are never unmapped: a thread that exits parks its heap, and the
/// next thread to start adopts it with all its pools. This is what keeps
/// memory bounded however many threads a program creates, and what makes
/// it safe for any thread to follow a pool's `owner` pointer at any time.
#[repr(C)]
pub(crate) struct Heap {
    classes: [ClassSlot; NB_CLASSES],
    /// The last pool of each class list (null while the list is empty),
    /// for linking a pool at the back (see [`Heap::free_to_detached`]).
    /// Owner capacity, as `current`; apart from `classes` because only
    /// slow paths read it.
    last: [Cell<*mut Pool>; NB_CLASSES],
    /// The sentinel pool: no free block, so `alloc` falls to the slow path.
    empty: Pool,
    /// Remote frees not yet delivered (see `remote.rs`).
    pub(super) outbox: Outbox,
    /// Pools with remote frees, pushed by other threads (Treiber stack
    /// linked through `Pool::pending_next`). On its own cache line: other
    /// threads write it.
    pub(super) pending: CachePadded<AtomicPtr<Pool>>,
    /// Taken by the owner on slow paths and by keepers and guests.
    pub(super) lock: CachePadded<HeapLock>,
    pub(super) state: AtomicU8,
    /// Owner capacity: this heap's accessor holds `lock` in a slow path.
    pub(super) held: Cell<bool>,
    /// Owner capacity: a keeper holds `lock` for its whole visit.
    pub(super) kept: Cell<bool>,
    /// Deliveries that made a pool's remote list non-empty while parked.
    pub(super) parked_deliveries: AtomicUsize,
    /// Next heap in the registry; set before the heap is published.
    pub(crate) next_heap: AtomicPtr<Heap>,
    registry: *const Registry,
    /// The heap's arenas (under the lock).
    pub(super) arenas: ArenaSet,
    /// For telling idle heaps from working ones (under the lock): the sum
    /// of the operation counters when a lock holder last looked, and when
    /// it last saw it change.
    pub(super) idle_ops: Cell<usize>,
    pub(super) idle_since_ms: Cell<u64>,
    /// Large blocks the owner allocated and freed (see `large_count`).
    pub(super) large: LargeCounts,
    /// Bytes counted in the registry's `large_reserved` that none of this
    /// heap's large blocks use (see `large_count`).
    pub(super) large_credit: Cell<usize>,
    /// Freed large blocks kept for reuse (see `large_cache`: its own lock).
    pub(super) large_cache: LargeCache,
}

impl Heap {
    /// Bytes mapped for one heap (heaps are never unmapped, except by the
    /// model checks).
    pub(crate) const MAPPING_SIZE: usize =
        core::mem::size_of::<Heap>().div_ceil(PAGE_SIZE) * PAGE_SIZE;

    /// Maps and initialises a new heap in state `state`, its lock held by
    /// the caller (who is its keeper, or its owner once it publishes
    /// `Owned`). It is not yet in any registry. Returns null when the OS
    /// refuses memory.
    pub(crate) fn create(registry: &Registry, state: Ownership) -> *mut Heap {
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
            last: core::array::from_fn(|_| Cell::new(ptr::null_mut())),
            empty: Pool::empty(),
            outbox: Outbox::new(),
            pending: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
            lock: CachePadded::new(HeapLock::new_held()),
            state: AtomicU8::new(state as u8),
            held: Cell::new(false),
            kept: Cell::new(false),
            parked_deliveries: AtomicUsize::new(0),
            next_heap: AtomicPtr::new(ptr::null_mut()),
            registry,
            arenas: ArenaSet::new(),
            idle_ops: Cell::new(0),
            idle_since_ms: Cell::new(0),
            large: LargeCounts::new(),
            large_credit: Cell::new(0),
            large_cache: LargeCache::new(),
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
    pub(super) fn as_mut_ptr(&self) -> *mut Heap {
        self as *const Heap as *mut Heap
    }

    pub(crate) fn registry(&self) -> &Registry {
        // SAFETY: registries outlive their heaps (the global one is static;
        // model checks keep theirs alive for the whole model).
        unsafe { &*self.registry }
    }

    pub(crate) fn class_slot(&self, class: usize) -> &ClassSlot {
        &self.classes[class]
    }

    /// [`Heap::class_slot`] without the bounds check.
    ///
    /// # Safety
    /// `class < NB_CLASSES` (the class of a live pool is).
    #[inline(always)]
    pub(crate) unsafe fn class_slot_unchecked(&self, class: usize) -> &ClassSlot {
        debug_assert!(class < NB_CLASSES);
        // SAFETY: `class < NB_CLASSES` (this function's `# Safety`): in bounds of
        // `classes`.
        unsafe { self.classes.get_unchecked(class) }
    }

    /// Allocations and frees counted in this heap, all classes together
    /// (a racy sum, for telling idle heaps from working ones).
    pub(crate) fn ops(&self) -> usize {
        self.classes.iter().fold(0usize, |sum, slot| {
            sum.wrapping_add(slot.allocs.load(Ordering::Relaxed))
                .wrapping_add(slot.frees.load(Ordering::Relaxed))
        })
    }

    // ---- allocation ---------------------------------------------------

    /// Allocates a block of `class`. The fast path: pop the current pool's
    /// free list, or bump past its next never-used block.
    ///
    /// # Safety
    /// The caller must be in owner capacity, and `class < NB_CLASSES`.
    #[inline(always)]
    pub(crate) unsafe fn alloc(&self, class: usize) -> *mut u8 {
        // SAFETY: owner capacity and `class < NB_CLASSES` (this function's
        // `# Safety`): what `alloc_pop` requires.
        match unsafe { self.alloc_pop(class) } {
            Some((block, false)) => block,
            // SAFETY: owner capacity (this function's `# Safety`), outside
            // any busy section: what `tick_then` requires.
            Some((block, true)) => unsafe { self.tick_then(block) },
            // SAFETY: owner capacity and `class < NB_CLASSES` (this
            // function's `# Safety`): what `alloc_slow` requires.
            None => unsafe { self.alloc_slow(class) },
        }
    }

    /// [`Heap::alloc`] without its calls: pops the current pool of `class`
    /// and counts the block, or `None` if that pool is dry. The flag says
    /// the tick is due (the caller runs [`Heap::tick`] before it returns
    /// the block). C's `malloc` inlines this, so that its slow paths are
    /// tail calls of its own.
    ///
    /// # Safety
    /// As [`Heap::alloc`].
    #[inline(always)]
    pub(crate) unsafe fn alloc_pop(&self, class: usize) -> Option<(*mut u8, bool)> {
        // SAFETY: `class < NB_CLASSES` (this function's `# Safety`).
        let slot = unsafe { self.classes.get_unchecked(class) };
        // SAFETY: `current` points at one of our attached pools or at
        // `empty`; owner capacity may pop from them.
        let block = unsafe { (*slot.current.get()).pop() }?;
        Some((block.as_ptr().cast(), bump(&slot.allocs) & TICK_MASK == 0))
    }

    /// [`Heap::alloc_pop`] of the class whose slot lies `offset` bytes into
    /// the heap ([`C_FAST_SLOT`]'s entries): C's fast path reads this
    /// offset from its table where it read the class, which saves the
    /// shift that turned a class into an offset.
    ///
    /// # Safety
    /// As [`Heap::alloc`], with `offset` an entry of [`C_FAST_SLOT`].
    #[cfg_attr(loom, allow(dead_code))] // only C's malloc uses it
    #[inline(always)]
    pub(crate) unsafe fn alloc_pop_at(&self, offset: usize) -> Option<(*mut u8, bool)> {
        // SAFETY: `offset` is `class * size_of::<ClassSlot>()` for a class
        // below `NB_CLASSES` (this function's `# Safety`), and `classes`
        // is the heap's first field (`repr(C)`, checked below
        // `C_FAST_SLOT`): the slot of that class.
        let slot = unsafe {
            &*ptr::from_ref(self)
                .cast::<u8>()
                .add(offset)
                .cast::<ClassSlot>()
        };
        // SAFETY: `current` points at one of our attached pools or at
        // `empty`; owner capacity may pop from them.
        let block = unsafe { (*slot.current.get()).pop_reuse_first() }?;
        Some((block.as_ptr().cast(), bump(&slot.allocs) & TICK_MASK == 0))
    }

    /// The current pool is dry (no free block, none left to bump): take
    /// back remote frees if any wait, move to the next pool of the class,
    /// or take a fresh pool from an arena.
    ///
    /// # Safety
    /// As [`Heap::alloc`]: the caller must be in owner capacity, and
    /// `class < NB_CLASSES`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, class: usize) -> *mut u8 {
        if self.has_pending() {
            // SAFETY: owner capacity (this function's `# Safety`), what
            // `lock_as_owner` requires.
            if let Some(locked) = unsafe { self.lock_as_owner() } {
                self.collect_pending(&locked);
            }
        }
        let slot = &self.classes[class];
        loop {
            let pool = slot.current.get();
            if pool == self.empty_pool() {
                // The sentinel must stay one that `pop` returns null from
                // without writing it: no free block, nothing to bump.
                debug_assert!(
                    self.empty.free.get().is_null()
                        && self.empty.carve.get().is_null()
                        && self.empty.carve_end.get().is_null()
                        && self.empty.used.get() == 0
                );
                break;
            }
            // SAFETY: pools on our class lists are live, ours, attached.
            let p = unsafe { &*pool };
            // SAFETY: owner capacity (this function's `# Safety`), and `p`
            // is attached (on our class list): what `assert_valid` requires.
            unsafe { p.assert_valid() };
            // SAFETY: owner capacity (this function's `# Safety`), and `p` is on our
            // class list, so attached: what `pop` requires.
            if let Some(block) = unsafe { p.pop() } {
                bump(&slot.allocs);
                return block.as_ptr().cast();
            }
            // Nothing left: detach it until a block comes back. Unlink
            // first: detaching is the last write, with Release, after
            // which the pool is written only under the lock or after
            // taking it back (see `Pool`).
            // SAFETY: owner capacity (this function's `# Safety`), and
            // `pool` is a live pool of ours on its class list (it was
            // `current`): what `unlink` requires.
            unsafe { self.unlink(pool) };
            p.detach(self.as_mut_ptr());
        }
        // SAFETY: owner capacity (this function's `# Safety`), what
        // `lock_as_owner` requires.
        let Some(locked) = (unsafe { self.lock_as_owner() }) else {
            // The lock is ours already (a signal handler interrupted our
            // own slow path) or lost in a fork: serve this one elsewhere.
            return self.registry().alloc_elsewhere(class);
        };
        let pool = self.new_pool(&locked, class);
        if pool.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a fresh pool of ours, on no list.
        unsafe { self.link_front(pool) };
        drop(locked);
        // SAFETY: owner capacity (this function's `# Safety`), what
        // `pass_if_due` requires of the heap it is given.
        unsafe { super::purge::pass_if_due(self.registry(), Some(self)) };
        // SAFETY: a fresh attached pool of ours: pop the free
        // list it kept from its slot's last use (see `Pool::init`), or bump
        // past its first block (a fresh pool has room for at least one).
        let block = unsafe { (*pool).pop() };
        debug_assert!(block.is_some());
        bump(&slot.allocs);
        block.map_or(ptr::null_mut(), |b| b.as_ptr().cast())
    }

    // ---- local free ---------------------------------------------------

    /// Frees a block of an attached pool this heap owns. The fast path:
    /// push on the pool's free list.
    ///
    /// # Safety
    /// The caller must be in owner capacity; `block` must be a block in use
    /// of `pool`, and `pool` an attached pool of this heap (its owner word
    /// equal to this heap, which is what the free dispatch tests).
    #[inline(always)]
    pub(crate) unsafe fn free_local(&self, pool: *mut Pool, block: *mut u8) {
        // SAFETY: as `free_push` requires (this function's `# Safety`).
        if let Some((used, frees)) = unsafe { self.free_push(pool, block) } {
            // SAFETY: owner capacity (this function's `# Safety`), and `pool` an
            // attached pool of this heap that we just freed into, `used` its count
            // after the push: what `free_slow` requires.
            unsafe { self.free_slow(pool, used, frees) };
        }
    }

    /// [`Heap::free_local`] without its call: pushes the block and counts
    /// the free; `Some((used, frees))` when [`Heap::free_slow`] must run
    /// (the pool emptied, or the tick is due). C's `free` inlines this, so
    /// that its slow path is a tail call of its own.
    ///
    /// # Safety
    /// As [`Heap::free_local`].
    #[inline(always)]
    pub(crate) unsafe fn free_push(&self, pool: *mut Pool, block: *mut u8) -> Option<(u32, usize)> {
        // SAFETY: `block` is a block in use of `pool` (this function's
        // `# Safety`), so the pool was not given back to its arena: its header is
        // live.
        let p = unsafe { &*pool };
        // SAFETY: owner capacity, an attached pool, a block being freed.
        let used = unsafe { p.push(block.cast()) };
        // SAFETY: a live pool's class is below NB_CLASSES.
        let frees = bump(&unsafe { self.classes.get_unchecked(p.class()) }.frees);
        (used == 0 || frees & TICK_MASK == 0).then_some((used, frees))
    }

    /// A local free that emptied its pool, or fell on the tick.
    ///
    /// # Safety
    /// The caller must be in owner capacity; `pool` must be an attached pool
    /// of this heap (the pool `free_local` or `free_to_detached` just freed
    /// into), `used` its count of blocks in use after that free.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_slow(&self, pool: *mut Pool, used: u32, frees: usize) {
        // An emptied pool that is its class's only one is kept, which only
        // reads our class list: no lock (a program that allocates and frees
        // one block in a loop comes here every time).
        // SAFETY: owner capacity, and `pool` an attached pool of ours
        // (this function's `# Safety`): what `keeps_when_empty` requires.
        if used == 0 && !unsafe { self.keeps_when_empty(pool) } {
            // SAFETY: owner capacity (this function's `# Safety`), what
            // `lock_as_owner` requires.
            if let Some(locked) = unsafe { self.lock_as_owner() } {
                // SAFETY: an attached (so linked) pool of ours, now empty.
                unsafe { self.pool_emptied(&locked, pool) };
                locked.finish();
                // A pool going back is allocator activity: let a due pass
                // run. SAFETY: owner capacity (this function's `# Safety`),
                // what `pass_if_due` requires of the heap it is given.
                unsafe { super::purge::pass_if_due(self.registry(), Some(self)) };
            }
            // Without the lock the empty pool just stays attached.
        }
        if frees & TICK_MASK == 0 {
            // SAFETY: owner capacity (this function's `# Safety`), outside
            // any busy section of the outbox: what `tick` requires.
            unsafe { self.tick() };
        }
    }

    /// Whether an empty attached pool stays on its class list: it is the
    /// class's only pool (see [`Heap::pool_emptied`]), and the class is a
    /// small one.
    ///
    /// A medium class's emptied pool (C's `malloc` only, 640..4,096 bytes)
    /// goes back to its arena, where any class takes it next: C programs
    /// spread their medium requests over many of the classes, a few
    /// blocks each, and one kept pool per class held a resident page or
    /// more in each (`threadchurn` of bench/c: peak RSS 5.5 MiB against
    /// glibc's 2.8; tests/cabi_medium_pools.rs). A loop that allocates and
    /// frees one medium block pays the slow paths instead.
    ///
    /// # Safety
    /// Owner capacity; `pool` must be an attached pool of ours.
    unsafe fn keeps_when_empty(&self, pool: *mut Pool) -> bool {
        // SAFETY: `pool` is an attached pool of ours (this function's `# Safety`),
        // so live: pools leave a class list before going back to their arena.
        let p = unsafe { &*pool };
        p.class() < NB_SMALL_CLASSES
            && self.classes[p.class()].current.get() == pool
            && p.next.get().is_null()
    }

    /// A local free into a detached pool (one that ran out of blocks): the
    /// pool is taken back without the lock ([`Pool::reattach`]) and rejoins
    /// its class list at the *back*. If a guest is looking at it (a claim,
    /// see `Pool`), the block goes to the pool's remote list instead, as
    /// another thread's free would, and we collect it later.
    ///
    /// At the back, because the class goes on with the pools it was using,
    /// and by the time it reaches this one, the pool has gathered every
    /// block freed into it since. At the front (as CPython links a pool
    /// that was full), the block just freed was handed out again by the
    /// next allocation, the pool ran dry again at once, and each such
    /// block cost a trip through `alloc_slow` and one through this
    /// function: churn over 10,000 live blocks entered `alloc_slow` at 293
    /// allocations in 1,000 and this function at 366 frees in 1,000; at the
    /// back, 46 and 45 (callgrind, `examples/slowpath_shapes.rs`). No
    /// memory is held back by this: a pool with a free block is on the
    /// list, and a fresh pool is taken only when every pool of the class
    /// is dry, as before.
    ///
    /// Without the lock because this is common: a program whose live
    /// blocks fill whole pools frees into a full pool about once per pool's
    /// worth of frees (taking the lock here made the churn over 10,000 live
    /// blocks 15% slower in instructions, 154.2M against 134.2M, when every
    /// third free came here).
    ///
    /// # Safety
    /// As [`Heap::free_local`], but `pool` is detached.
    ///
    /// `extern "C"` (it does not unwind) so that `free_elsewhere` reaches it
    /// by a tail call (see there).
    #[inline(never)]
    pub(crate) unsafe extern "C" fn free_to_detached(&self, pool: *mut Pool, block: *mut u8) {
        // SAFETY: `block` is a block in use of `pool` (this function's
        // `# Safety`, as `free_local`'s), so the pool header is live.
        let p = unsafe { &*pool };
        // SAFETY: `reattach` needs its caller to be the heap's owner and `pool` one
        // of its detached pools: this function's `# Safety` gives owner capacity
        // (a keeper may do all an owner does, see `Heap`) and `pool` a detached
        // pool of this heap.
        if unsafe { p.reattach(self.as_mut_ptr()) } {
            // SAFETY: the pool is attached again, so its owner line is ours
            // (see `Pool`); the block is ours to free; an attached pool that
            // was detached is on no list.
            unsafe {
                let used = p.push(block.cast());
                self.link_back(pool);
                let frees = bump(&self.classes.get_unchecked(p.class()).frees);
                if used == 0 || frees & TICK_MASK == 0 {
                    self.free_slow(pool, used, frees);
                }
            }
        } else {
            // SAFETY: a live pool's class is below NB_CLASSES.
            bump(&unsafe { self.classes.get_unchecked(p.class()) }.frees);
            // SAFETY: a block of `pool` we are freeing: hand it to the pool
            // as another thread would (a guest holds a claim on the pool,
            // so we must not touch its owner line).
            unsafe { super::remote::deliver(pool, block.cast(), block.cast(), 1) };
        }
    }

    /// Blocks came back to a pool: a detached pool rejoins its class list,
    /// an empty one goes back to its arena (see `pool_emptied`).
    ///
    /// # Safety
    /// Owner capacity with the lock held; `pool` must be one of this heap's.
    pub(super) unsafe fn blocks_returned(&self, locked: &Locked<'_>, pool: *mut Pool) {
        // SAFETY: `pool` is one of this heap's pools (this function's `# Safety`),
        // so live: a pool goes back to its arena only through `release_pool`,
        // under the lock, which we hold (`locked`).
        let p = unsafe { &*pool };
        if p.is_detached() {
            p.attach(self.as_mut_ptr());
            // SAFETY: a detached pool is on no list.
            unsafe { self.link_front(pool) };
        }
        // SAFETY: owner capacity with the lock held (this function's
        // `# Safety`): what `assert_valid` requires.
        unsafe { p.assert_valid() };
        if p.used.get() == 0 {
            // SAFETY: the pool is on its class list and empty.
            unsafe { self.pool_emptied(locked, pool) };
        }
    }

    // ---- pools --------------------------------------------------------

    /// Links a pool at the head of its class list.
    ///
    /// # Safety
    /// Owner capacity; `pool` must be a live pool of ours on no list.
    unsafe fn link_front(&self, pool: *mut Pool) {
        // SAFETY: owner capacity, and `pool` a live pool of ours on no list (this
        // function's `# Safety`), so its links are ours to write; `head`, unless
        // it is the `empty` sentinel, is a live pool on the same class list, whose
        // links only owner capacity writes (guests never touch class lists).
        unsafe {
            let slot = &self.classes[(*pool).class()];
            let head = slot.current.get();
            (*pool).prev.set(ptr::null_mut());
            if head == self.empty_pool() {
                (*pool).next.set(ptr::null_mut());
                self.last[(*pool).class()].set(pool);
            } else {
                (*pool).next.set(head);
                (*head).prev.set(pool);
            }
            slot.current.set(pool);
        }
    }

    /// Unlinks a pool from its class list.
    ///
    /// # Safety
    /// Owner capacity; `pool` must be a live pool of ours on its class list.
    unsafe fn unlink(&self, pool: *mut Pool) {
        // SAFETY: owner capacity, and `pool` a live pool of ours on its class list
        // (this function's `# Safety`): its `prev` and `next` are null or live pools
        // on the same list, whose links only owner capacity writes (guests never
        // touch class lists, see `Heap`).
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
            if next.is_null() {
                self.last[(*pool).class()].set(prev);
            } else {
                (*next).prev.set(prev);
            }
        }
    }

    /// Links a pool at the back of its class list.
    ///
    /// # Safety
    /// Owner capacity; `pool` must be a live pool of ours on no list.
    unsafe fn link_back(&self, pool: *mut Pool) {
        // SAFETY: a live pool of ours (this function's `# Safety`).
        let class = unsafe { (*pool).class() };
        let tail = self.last[class].get();
        if tail.is_null() {
            // SAFETY: as this function's `# Safety`: what `link_front` requires.
            return unsafe { self.link_front(pool) };
        }
        // SAFETY: owner capacity, and `pool` a live pool of ours on no list (this
        // function's `# Safety`), so its links are ours to write; `tail` is the
        // last pool of the same class list, live and ours, whose links only owner
        // capacity writes (guests never touch class lists).
        unsafe {
            debug_assert!((*tail).next.get().is_null(), "`last` is not the last pool");
            (*pool).prev.set(tail);
            (*pool).next.set(ptr::null_mut());
            (*tail).next.set(pool);
        }
        self.last[class].set(pool);
    }

    /// A pool on its class list has no block in use. Keep it if it is the
    /// class's only pool (so a program that allocates and frees one block
    /// in a loop does not take and return a pool each time), unless the
    /// lock holder returns everything; else give it back to its arena.
    ///
    /// # Safety
    /// Owner capacity with the lock held; `pool` an attached pool of this
    /// heap, empty.
    pub(super) unsafe fn pool_emptied(&self, locked: &Locked<'_>, pool: *mut Pool) {
        // SAFETY: owner capacity, and `pool` an attached pool of ours (this
        // function's `# Safety`): what `keeps_when_empty` requires.
        if !locked.returns_everything() && unsafe { self.keeps_when_empty(pool) } {
            return;
        }
        // SAFETY: on its class list, empty, ours.
        unsafe {
            self.unlink(pool);
            self.release_pool(locked, pool);
        }
    }

    /// Gives back every empty pool on the class lists (the one kept per
    /// class included).
    ///
    /// # Safety
    /// Owner capacity with the lock held, in a mode that returns
    /// everything.
    pub(super) unsafe fn release_empty_pools(&self, locked: &Locked<'_>) {
        debug_assert!(locked.returns_everything());
        for slot in &self.classes {
            // An empty pool kept as a class's last one may have had others
            // linked in front of it since: walk the whole list.
            let mut pool = slot.current.get();
            while pool != self.empty_pool() && !pool.is_null() {
                // SAFETY: pools on our class lists are live and ours.
                let next = unsafe { (*pool).next.get() };
                // SAFETY: `pool` is on our class list, so live; an attached pool's `used`
                // is written only in owner capacity, which is ours (this function's
                // `# Safety`).
                if unsafe { (*pool).used.get() } == 0 {
                    // SAFETY: owner capacity with the lock held (this function's
                    // `# Safety`); `pool` is ours, attached (on our class list) and empty
                    // (`used` is 0): what `pool_emptied` requires. `next` was read first,
                    // as the pool may go back to its arena.
                    unsafe { self.pool_emptied(locked, pool) };
                }
                pool = next;
            }
        }
    }

    /// Takes a pool slot from the fullest arena with one free, reusing a
    /// retired arena or mapping a new one if needed, and initialises it for
    /// `class`. Null when the OS refuses memory.
    fn new_pool(&self, locked: &Locked<'_>, class: usize) -> *mut Pool {
        let mut arena = self.arenas.usable_head();
        if arena.is_null() {
            arena = self.unretire(locked);
            if arena.is_null() {
                arena = self.map_fresh_arena(locked);
                if arena.is_null() {
                    return ptr::null_mut();
                }
            }
            // SAFETY: a live arena of ours, on no usable list.
            unsafe { self.arenas.insert_usable(arena) };
        }
        // A small class's first pool is likely to stay sparse (a few
        // blocks); one the class takes while it has others is filling up,
        // as a medium class's does (see `Arena::take_slot`). Relaxed: the
        // count is written by lock holders only, and we hold the lock.
        let sparse =
            class < NB_SMALL_CLASSES && self.classes[class].pools.load(Ordering::Relaxed) == 0;
        // SAFETY: arenas on the usable list are live, ours, with a free slot.
        let pool = unsafe { (*arena).take_slot(sparse) };
        // SAFETY: `arena` was the usable list's head or was just inserted in it,
        // so it is a live arena of ours; its `nfree` is written only under the
        // lock, which we hold (`locked`).
        if unsafe { (*arena).nfree.get() } == 0 {
            // SAFETY: it is on the usable list.
            unsafe { self.arenas.unlink_usable(arena) };
        }
        // SAFETY: the slot is ours and unused; the lock is held.
        unsafe { Pool::init(pool, class, self.as_mut_ptr()) };
        // SAFETY: a live pool header.
        asan::poison(unsafe { (*pool).base() }, POOL_SIZE);
        bump(&self.classes[class].pools);
        pool
    }

    /// Returns an empty pool, on no list, to its arena. Its blocks must all
    /// be on its free list: the slot keeps them for its next use by the
    /// same class (see `Pool::init`).
    ///
    /// # Safety
    /// The lock must be held (in any capacity); `pool` must be an empty
    /// pool of this heap on no list.
    pub(super) unsafe fn release_pool(&self, locked: &Locked<'_>, pool: *mut Pool) {
        // SAFETY: `pool` is an empty pool of this heap on no list (this
        // function's `# Safety`); it has not gone back to its arena yet, so its
        // header is live.
        let class = unsafe { (*pool).class() };
        // SAFETY: the same live header; `pool` is empty and on no list (this
        // function's `# Safety`), so no block of it is handed out and nobody
        // writes its `used`.
        debug_assert_eq!(unsafe { (*pool).used.get() }, 0);
        drop_one(&self.classes[class].pools);
        let arena = Arena::of(pool.cast());
        // SAFETY: the pool's arena is live and ours; the lock is held.
        let a = unsafe { &*arena };
        let was_full = a.nfree.get() == 0;
        // SAFETY: the slot is one of this arena's, unused now.
        unsafe { a.give_slot(pool) };
        // SAFETY: list operations on our own live arena, under the lock.
        unsafe {
            if a.is_empty() {
                if !was_full {
                    self.arenas.unlink_usable(arena);
                }
                self.arena_emptied(locked, arena);
            } else if was_full {
                self.arenas.insert_usable(arena);
            } else {
                self.arenas.resort_after_free(arena);
            }
        }
    }

    /// Calls `f` on every arena this heap has mapped.
    ///
    /// # Safety
    /// The caller must hold the lock (or be the last user of the heap).
    pub(crate) unsafe fn for_each_arena(&self, mut f: impl FnMut(&Arena)) {
        let mut arena = self.arenas.first();
        while !arena.is_null() {
            // SAFETY: arenas on our list are live.
            let a = unsafe { &*arena };
            f(a);
            arena = a.all_next.get();
        }
    }

    // ---- the tick -----------------------------------------------------

    /// Runs the periodic tick, then returns `block` (a tail call from the
    /// allocation fast path, so that path keeps no register across a call).
    ///
    /// # Safety
    /// As [`Heap::tick`].
    #[cold]
    #[inline(never)]
    unsafe fn tick_then(&self, block: *mut u8) -> *mut u8 {
        // SAFETY: `tick`'s requirements are this function's.
        unsafe { self.tick() };
        block
    }

    /// The periodic tick of the owner (every 4,096 allocations or frees of
    /// a class): delivers its outbox, so blocks it freed go home even if it
    /// never frees into another pool again; takes back blocks other threads
    /// freed into its pools, so a thread that never runs dry still returns
    /// them; returns its retired arenas that have been idle too long; and
    /// lets the process-wide pass run if it is due (see `purge.rs`).
    ///
    /// # Safety
    /// The caller must be in owner capacity, outside any busy section of
    /// the outbox.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn tick(&self) {
        // SAFETY: owner capacity, outside any busy section (this
        // function's `# Safety`): what `flush_as_owner` requires.
        unsafe { self.outbox.flush_as_owner(self.registry()) };
        // SAFETY: owner capacity (this function's `# Safety`), what
        // `lock_as_owner` requires.
        if let Some(locked) = unsafe { self.lock_as_owner() } {
            self.collect_pending(&locked);
            let age = super::purge::retention_ms(self.registry());
            self.purge_retired(&locked, os::now_ms(), age);
        }
        // SAFETY: owner capacity (this function's `# Safety`), what
        // `pass_if_due` requires of the heap it is given.
        unsafe { super::purge::pass_if_due(self.registry(), Some(self)) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::mem::MaybeUninit;

    /// C's fast path finds a class's slot by the offset in `C_FAST_SLOT`:
    /// every entry must be the address of `classes[C_FAST_CLASS[i]]`
    /// relative to the heap, as `alloc_pop(class)` would index it.
    #[test]
    fn c_fast_slot_is_the_offset_of_the_class_slot() {
        let heap = MaybeUninit::<Heap>::uninit();
        let base = heap.as_ptr();
        for (i, (&offset, &class)) in C_FAST_SLOT.iter().zip(C_FAST_CLASS.iter()).enumerate() {
            // SAFETY: only the address of a field of the (uninitialised)
            // heap is taken; nothing is read.
            let slot = unsafe { ptr::addr_of!((*base).classes[usize::from(class)]) };
            assert_eq!(
                slot as usize - base as usize,
                usize::from(offset),
                "entry {i} (requests of {} to {} bytes), class {class}",
                i * 16 + 1,
                (i + 1) * 16
            );
        }
    }
}
