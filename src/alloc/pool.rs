//! Pools: one size class's blocks in a `POOL_SIZE`-aligned slot of an
//! arena. Their headers are not in the pools but side by side at the start
//! of the arena, two 64-byte cache lines each, as mimalloc keeps its page
//! descriptors:
//!
//! ```text
//!  arena                                     slot i (16 KiB)
//! +--------+--------+-----+---------+ ... ---+---------+---------+-----+---------+-----------+
//! | arena  | pool 1 | ... | pool 63 |        | block 0 | block 1 | ... | block k | never used|
//! | header | header |     | header  |        |         |         |     |         |           |
//! +--------+--------+-----+---------+ ... ---+---------+---------+-----+---------+-----------+
//!  \__ slot 0: 64 x 128 bytes ___/                                               ^ carve
//!                                                         (the bump pointer)
//!
//!  header of block p = (p & ARENA_MASK) + 128 * ((p & !ARENA_MASK) >> POOL_SHIFT)
//! ```
//!
//! Two reasons for keeping headers apart. Headers at the front of 16 KiB
//! pools would all fall in the same few L1 cache sets (addresses 16 KiB apart
//! alias), so a program using many classes at once would keep evicting its
//! own pool headers; side by side they use distinct sets. And with no header
//! inside, a pool is all blocks, so every block is naturally aligned with
//! nothing lost to padding.
//!
//! A header is two cache lines: the owner's line, written by every
//! allocation and local free, and the shared line, which other threads read
//! (owner, class) and push to (the remote list). Were they one line, every
//! free by another thread would read a line the owner had just written, and
//! the line would travel between the two cores once per block.

use core::ptr::{self, NonNull};

use super::asan;
use super::heap::Heap;
use super::remote::RemoteList;
/// Arenas lie below this address (the remote list packs block addresses in
/// 48 bits); also what the debug allocator's arena bitmap covers.
pub(crate) use super::remote::ADDRESS_LIMIT;
use super::size_class::{
    block_size, blocks_per_pool, ARENA_MASK, NB_CLASSES, POOLS_PER_ARENA, POOL_SHIFT, POOL_SIZE,
};
use crate::sync::{AtomicPtr, Cell, Ordering};

/// A free block; its first word links it into a free list.
#[repr(C)]
pub(crate) struct Block {
    next: *mut Block,
}

impl Block {
    /// The block after `this` on its list.
    ///
    /// # Safety
    /// `this` must be a free block the caller may read: on a list the
    /// caller has taken or owns (see `Pool` and `RemoteList`).
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Block) -> *mut Block {
        asan::unpoison(this.cast(), LINK);
        // SAFETY: the caller may read the block (contract above), and every
        // block is at least one word long.
        let next = unsafe { (*this).next };
        asan::poison(this.cast(), LINK);
        next
    }

    /// Links `this` to `next`.
    ///
    /// # Safety
    /// `this` must be a free block no other thread can reach: one being
    /// freed by the caller, or on a list the caller owns.
    #[inline(always)]
    pub(crate) unsafe fn set_next(this: *mut Block, next: *mut Block) {
        asan::unpoison(this.cast(), LINK);
        // SAFETY: nobody else reaches the block (contract above).
        unsafe { (*this).next = next };
        asan::poison(this.cast(), LINK);
    }
}

const LINK: usize = core::mem::size_of::<*mut Block>();

/// The low bit of `owner`: the pool is detached (heaps are page-aligned,
/// so the low bits are free).
pub(crate) const DETACHED: usize = 1;
/// The next bit of `owner`: a guest is looking at the detached pool (see
/// [`Pool`]); only ever set together with [`DETACHED`].
pub(crate) const CLAIMED: usize = 2;
const TAGS: usize = DETACHED | CLAIMED;

/// Written into every pool header in use, so debug builds and snapshots
/// can tell a pool in use from a free slot.
pub(crate) const POOL_MAGIC: u16 = 0x9E3A;

/// The header of a pool.
///
/// # Where a block is
///
/// Every block of a pool is in exactly one of five places: handed out to
/// the program; on `free` (the owner's list); on `remote` (pushed by other
/// threads, not yet taken back); in some thread's outbox (freed by another
/// thread and not yet pushed, see `Outbox`); or at or past `carve` (never
/// handed out). `used` counts the first, third and fourth kinds, so, with
/// `carved = (carve - base) / block_size`,
///
/// * `used + len(free) == carved`,
/// * `remote.count() <= used`,
/// * a detached pool has an empty `free` list and no room left to carve,
/// * `step == block_size`, `carve_end == base + blocks_per_pool * block_size` (the end of the
///   pool's last block), and `carve` is a block start at or below it: the
///   blocks below `carve` have been handed out at least once, those from
///   it on never (nothing links or reads them; they are handed out in
///   address order by bumping `carve`, see [`Pool::pop`]),
///
/// and the pool is empty, every block back, exactly when `used == 0`.
/// [`Pool::assert_valid`] checks all four on slow paths in debug builds.
/// (The [`Pool::empty`] sentinel has both `carve` and `carve_end` null:
/// nothing to bump, so the fast path pops null from it without a check of
/// its own.)
///
/// # Who writes what
///
/// * `class`, `owner` and `magic` are written by [`Pool::init`] when the heap
///   takes the slot (under its lock), before any block is handed out, and
///   do not change while a block is in use: pools never move between heaps.
///   Whoever holds a block may read them. `magic` is cleared when the slot
///   goes back to its arena (under the lock).
/// * The owner's line (`free`, `used`, `carve`, `next`, `prev`) is written
///   (`step` and `carve_end` are written by [`Pool::init`] only, as `class` is)
///   only in *owner capacity* (the heap's owning thread, or whoever holds
///   the lock of a parked heap; see `Heap`). While the pool is *detached*,
///   the owner writes it only under the heap's lock or after taking the
///   pool back with [`Pool::reattach`], and a guest reads (or, reclaiming
///   the pool, writes) it only while it holds a claim (see below).
/// * *Detached*: the pool is on no class list (it ran out of blocks). The
///   state is the [`DETACHED`] bit of `owner`, so that the owner's
///   fast-path free, which compares `owner` with its heap anyway, goes to
///   its slow path for a detached pool at no extra cost. The owner sets the
///   bit with Release as its last write to the pool after unlinking it.
///   Because a detached pool is on no list, its owner's allocations never
///   reach it.
/// * *Claimed*: a guest (a lock holder of a heap another thread owns, see
///   `Heap`) that wants to look at a detached pool's owner line first sets
///   the [`CLAIMED`] bit beside `DETACHED`, with a compare-and-swap that
///   expects the pool detached and unclaimed ([`Pool::claim`], Acquire:
///   it sees everything the owner wrote before detaching). It clears the
///   bit with Release ([`Pool::unclaim`]) when done, unless it reclaimed
///   the pool (then no block of the pool is held anywhere, so no thread
///   ever reads the word again before the slot is reused).
/// * The owner clears `DETACHED` in one of two ways: under the lock
///   ([`Pool::attach`]: no guest holds a claim then, claims being taken
///   under the lock), or without it, when it frees a block into the pool
///   ([`Pool::reattach`]): a compare-and-swap that expects the pool
///   detached and *unclaimed* (Acquire: it sees the guest's reads of the
///   last claim as done). So at any moment exactly one of the owner (pool
///   attached, or detached and unclaimed) and one guest (claimed) may write
///   or read the owner's line; a free that finds the pool claimed hands its
///   block over as a remote free instead of touching the line.
/// * `remote` is pushed to by any thread (see `RemoteList`); it is taken by
///   whoever took the pool off its heap's pending list.
/// * `pending_next` links the pool into its heap's pending list. The pool
///   is on that list exactly when `remote` is non-empty, except between a
///   push that found `remote` empty and that pusher's push of the pool onto
///   the list, and while a lock holder that took the pool off the list
///   decides what to do with it. Only the thread whose push made `remote`
///   non-empty links the pool in, and whoever takes the list reads each
///   `pending_next` before taking that pool's `remote`, so a link is never
///   written by two threads at once.
#[repr(C, align(64))]
pub(crate) struct Pool {
    // ---- the owner's line ---------------------------------------------
    /// Owner-local free list (LIFO).
    pub(crate) free: Cell<*mut Block>,
    /// Blocks handed out, on `remote`, or in an outbox.
    pub(crate) used: Cell<u32>,
    /// The block size, by which `carve` is bumped (a copy of the class's
    /// on the owner's line, where the allocation fast path reads it).
    step: Cell<u32>,
    /// The first never-used block: the bump pointer.
    pub(crate) carve: Cell<*mut u8>,
    /// The end of the pool's last block: the bump limit.
    pub(crate) carve_end: Cell<*mut u8>,
    /// Neighbours in the heap's list of pools of this class.
    pub(crate) next: Cell<*mut Pool>,
    pub(crate) prev: Cell<*mut Pool>,
    /// [`POOL_MAGIC`] while the pool is in use, 0 once its slot is free.
    pub(crate) magic: Cell<u16>,
    /// How far from the pool's start the slot's pages may be resident: the
    /// furthest bump pointer of the slot's pools since its pages were last
    /// fresh (mapped or decommitted), in bytes. Brought over by
    /// [`Pool::init`] from the slot's last pool and raised by
    /// [`Pool::note_touched`] when a pool goes back, so that the arena can
    /// give a sparse class a slot with few resident pages
    /// (`Arena::take_slot`).
    touched: Cell<u16>,
    /// The second cache line: what other threads read and write.
    pub(crate) shared: PoolShared,
}

/// The shared line of a pool header (see [`Pool`] for who writes what).
#[repr(C, align(64))]
pub(crate) struct PoolShared {
    /// The heap the pool belongs to, tagged with [`DETACHED`] while the
    /// pool is detached and [`CLAIMED`] while a guest looks at it (see
    /// [`Pool`]). Read it through [`Pool::owner`].
    owner: AtomicPtr<Heap>,
    /// Blocks freed by threads other than the owner.
    pub(crate) remote: RemoteList,
    /// Link in the owner's list of pools with remote frees.
    pub(crate) pending_next: AtomicPtr<Pool>,
    class: Cell<u8>,
    /// The pool's slot in every thread's outbox (`Outbox::slot_of`),
    /// written with `class` and fixed as it is.
    outbox_slot: Cell<u8>,
}

/// Bytes of each pool header in an arena's slot 0.
pub(crate) const POOL_HEADER_SIZE: usize = core::mem::size_of::<Pool>();

#[cfg(not(loom))]
const _: () = assert!(
    POOL_HEADER_SIZE == 128,
    "the pool header must be two cache lines"
);
const _: () = assert!(
    POOL_HEADER_SIZE * POOLS_PER_ARENA <= POOL_SIZE,
    "an arena's pool headers must fit in its slot 0"
);

impl Pool {
    /// A header describing no blocks: the sentinel a heap's class list
    /// points at while the class has no pool, so the allocation fast path
    /// needs no null check. Its `carve` and `carve_end` are both null:
    /// nothing is left to bump (see [`Pool::pop`]).
    pub(crate) fn empty() -> Pool {
        Pool {
            free: Cell::new(ptr::null_mut()),
            used: Cell::new(0),
            step: Cell::new(0),
            carve: Cell::new(ptr::null_mut()),
            carve_end: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            magic: Cell::new(0),
            touched: Cell::new(0),
            shared: PoolShared {
                owner: AtomicPtr::new(ptr::null_mut()),
                remote: RemoteList::new(),
                pending_next: AtomicPtr::new(ptr::null_mut()),
                class: Cell::new(0),
                outbox_slot: Cell::new(0),
            },
        }
    }

    /// Writes a fresh header for `class` at `pool`, owned by `owner`.
    ///
    /// A slot that last held a pool of the same class, given back with
    /// every block on its free list (see `Heap::release_pool`), keeps
    /// that list and its bump pointer: its blocks are handed out again
    /// without being carved (linked) anew. A producer whose blocks another
    /// thread frees gets its pools back whole, and carving each again cost
    /// 22 of the 162 instructions per block of the cross-thread bench.
    ///
    /// # Safety
    /// `pool` must be the header of a pool slot that no thread is using
    /// (just taken from its arena by the holder of `owner`'s lock): a fresh
    /// slot (zeroed by the OS) or one given back to its arena since, whose
    /// memory nobody has written.
    pub(crate) unsafe fn init(pool: *mut Pool, class: usize, owner: *mut Heap) {
        let header = Pool::empty();
        let base = Pool::base_of(pool);
        // A fresh pool: every block is at or past the bump pointer.
        header.carve.set(base);
        header
            .carve_end
            .set(base.wrapping_add(blocks_per_pool(class) * block_size(class)));
        header.step.set(block_size(class) as u32);
        // Not under loom, whose cells are objects of its own that a slot's
        // stale (or zeroed) header is not.
        #[cfg(not(loom))]
        {
            // SAFETY: the slot's header is mapped and nobody writes it
            // (contract above).
            let old = unsafe { &*pool };
            // A committed slot (a freed one whose `free` list is there,
            // see `Arena::decommit_free_slots`) keeps its resident pages.
            if old.magic.get() == 0 && !old.free.get().is_null() {
                header.touched.set(old.touched.get());
            }
            if old.magic.get() == 0
                && old.used.get() == 0
                && !old.free.get().is_null()
                && old.shared.class.get() as usize == class
            {
                // Every block the slot's last pool handed out is on this
                // list (a pool goes back to its arena only once `used` is
                // 0, with its blocks on `free`, see `release_pool`); the
                // blocks are untouched since, and the bump pointer says
                // where the never-used rest of the slot starts.
                header.free.set(old.free.get());
                header.carve.set(old.carve.get());
            }
        }
        header.shared.class.set(class as u8);
        header
            .shared
            .outbox_slot
            .set(super::remote::Outbox::slot_of(pool) as u8);
        header.magic.set(POOL_MAGIC);
        header.shared.owner.store(owner, Ordering::Relaxed);
        debug_assert_eq!(owner as usize & TAGS, 0);
        // SAFETY: the slot is unused (contract above), so nothing reads the
        // header while it is replaced.
        unsafe { ptr::write(pool, header) };
    }

    /// The header of the pool a block lives in.
    #[inline(always)]
    pub(crate) fn of(block: *mut u8) -> *mut Pool {
        let addr = block as usize;
        let index = (addr & !ARENA_MASK) >> POOL_SHIFT;
        ((addr & ARENA_MASK) + index * POOL_HEADER_SIZE) as *mut Pool
    }

    /// The header for pool slot `index` of the arena at `arena`.
    pub(crate) fn header_of_slot(arena: usize, index: usize) -> *mut Pool {
        (arena + index * POOL_HEADER_SIZE) as *mut Pool
    }

    /// The slot index of this header in its arena.
    pub(crate) fn slot_index(&self) -> usize {
        (self as *const Pool as usize & !ARENA_MASK) / POOL_HEADER_SIZE
    }

    /// The first byte of the pool this header describes.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        Pool::base_of(self)
    }

    /// The first byte of the pool the header at `pool` describes (only its
    /// address is used).
    #[inline]
    fn base_of(pool: *const Pool) -> *mut u8 {
        let arena = pool as usize & ARENA_MASK;
        let index = (pool as usize & !ARENA_MASK) / POOL_HEADER_SIZE;
        (arena + index * POOL_SIZE) as *mut u8
    }

    /// Raises [`Pool::touched`](Pool) to cover every block this pool carved,
    /// as its slot goes back to its arena.
    ///
    /// # Safety
    /// As [`Pool::set_freed_ms`].
    pub(crate) unsafe fn note_touched(pool: *mut Pool) {
        // SAFETY: a free slot's header, ours under the lock (contract above).
        let p = unsafe { &*pool };
        // At most `POOL_SIZE`, so it fits the field (asserted below).
        const _: () = assert!(POOL_SIZE <= u16::MAX as usize);
        let carved = (p.carve.get() as usize).wrapping_sub(p.base() as usize) as u16;
        p.touched.set(p.touched.get().max(carved));
    }

    /// Whether at most `bytes` of the free slot whose header this is may
    /// be resident (see [`Pool::note_touched`]); a decommitted slot (its
    /// `free` cleared) has none.
    pub(crate) fn touched_at_most(&self, bytes: usize) -> bool {
        self.free.get().is_null() || usize::from(self.touched.get()) <= bytes
    }

    /// Notes, in the header of a slot just given back to its arena, when
    /// (coarse monotonic milliseconds) it went back. A free slot's header
    /// is dead but for `next` (the arena's list of free slots) and what
    /// [`Pool::init`] may reuse (`free`, `carve`, the class), so the time
    /// is kept in `step`, which `init` writes again before any block is
    /// handed out. Only the low 32 bits are kept: ages are taken with
    /// wrapping arithmetic ([`Pool::free_for_ms`]) and are short.
    ///
    /// # Safety
    /// `pool` must be the header of a free slot, written only by the
    /// holder of its heap's lock, which the caller holds.
    pub(crate) unsafe fn set_freed_ms(pool: *mut Pool, now: u64) {
        // SAFETY: a free slot's header, ours under the lock (contract above).
        unsafe { (*pool).step.set(now as u32) };
    }

    /// How long, in milliseconds, the free slot whose header this is has
    /// been free at `now` (see [`Pool::set_freed_ms`]).
    pub(crate) fn free_for_ms(&self, now: u64) -> u64 {
        u64::from((now as u32).wrapping_sub(self.step.get()))
    }

    /// The heap the pool belongs to, and whether the pool is detached.
    /// `order` is Relaxed except where a caller explains otherwise.
    #[inline(always)]
    pub(crate) fn owner(&self, order: Ordering) -> (*mut Heap, bool) {
        let word = self.shared.owner.load(order) as usize;
        ((word & !TAGS) as *mut Heap, word & DETACHED != 0)
    }

    /// The owner word as the fast-path free compares it: the owning heap
    /// while the pool is attached, a tagged pointer no heap equals while it
    /// is detached.
    #[inline(always)]
    pub(crate) fn owner_word(&self) -> *mut Heap {
        self.shared.owner.load(Ordering::Relaxed)
    }

    /// Marks the pool detached: the owner's last write to it outside the
    /// lock, after unlinking it (see [`Pool`]).
    pub(crate) fn detach(&self, owner: *mut Heap) {
        // Release: a guest whose claim reads this (Acquire) sees every
        // write before it, `used` above all.
        self.shared
            .owner
            .store((owner as usize | DETACHED) as *mut Heap, Ordering::Release);
    }

    /// Marks the pool attached again, under the heap's lock (so unclaimed:
    /// guests claim only under the lock).
    pub(crate) fn attach(&self, owner: *mut Heap) {
        debug_assert_eq!(self.owner_word() as usize, owner as usize | DETACHED);
        // Relaxed: the lock the caller holds orders this against every
        // guest's claim.
        self.shared.owner.store(owner, Ordering::Relaxed);
    }

    /// The owner, without the lock, marks its detached pool attached again
    /// (to free a block into it); false if a guest has claimed it (the
    /// caller then must not touch the owner's line). See [`Pool`].
    ///
    /// # Safety
    /// The caller must be `owner`'s owner, and the pool one of its detached
    /// pools.
    #[inline(always)]
    pub(crate) unsafe fn reattach(&self, owner: *mut Heap) -> bool {
        let detached = (owner as usize | DETACHED) as *mut Heap;
        // Acquire on success: pairs with the Release of the last guest's
        // `unclaim`, so that guest's reads of the owner's line happen
        // before our writes. Relaxed on failure: we leave the pool alone.
        self.shared
            .owner
            .compare_exchange(detached, owner, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// A guest holding the heap's lock claims a detached pool, to read its
    /// owner line; false if the pool is attached (or the owner is taking it
    /// back right now). See [`Pool`].
    pub(crate) fn claim(&self) -> bool {
        let word = self.shared.owner.load(Ordering::Relaxed) as usize;
        if word & TAGS != DETACHED {
            return false;
        }
        // Acquire: pairs with the owner's Release in `detach`, so the owner
        // line as it left it is visible. (No Release needed: the guest has
        // written nothing the owner reads.)
        self.shared
            .owner
            .compare_exchange(
                word as *mut Heap,
                (word | CLAIMED) as *mut Heap,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Ends a guest's claim (see [`Pool::claim`]).
    pub(crate) fn unclaim(&self) {
        let word = self.shared.owner.load(Ordering::Relaxed) as usize;
        debug_assert_eq!(word & TAGS, TAGS);
        // Release: pairs with the owner's Acquire in `reattach`: our reads
        // of the owner line happen before its next writes.
        self.shared
            .owner
            .store((word & !CLAIMED) as *mut Heap, Ordering::Release);
    }

    /// Whether the pool is detached, as its owner (or a lock holder) sees it.
    pub(crate) fn is_detached(&self) -> bool {
        self.owner(Ordering::Relaxed).1
    }

    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        self.shared.class.get() as usize
    }

    /// The pool's slot in an outbox (see `Outbox::slot_of`), below the
    /// outbox's slot count.
    #[inline(always)]
    pub(crate) fn outbox_slot(&self) -> usize {
        self.shared.outbox_slot.get() as usize
    }

    #[inline(always)]
    pub(crate) fn block_size(&self) -> usize {
        block_size(self.class())
    }

    /// Hands out a block: pops the local free list or, when it is empty,
    /// bumps `carve` past the next never-used block. `None` when the pool
    /// has neither (always for the [`Pool::empty`] sentinel, whose `carve`
    /// and `carve_end` are null).
    ///
    /// Bumping reads nothing but this header's owner line: a fresh pool's
    /// blocks are not linked into a list first (the whole page written,
    /// then each block's link read back as it is popped, a cache miss per
    /// block once the page has left the cache), and a block's memory is
    /// first touched by the program it is handed to. The free list goes
    /// first, so freed blocks, warm in cache, are reused before new ones.
    ///
    /// # Safety
    /// The caller must be in owner capacity and the pool attached (or the
    /// caller hold the heap's lock).
    #[inline(always)]
    pub(crate) unsafe fn pop(&self) -> Option<NonNull<Block>> {
        if let Some(block) = NonNull::new(self.free.get()) {
            // SAFETY: `block` heads the free list; owner capacity (this
            // function's `# Safety`).
            return Some(unsafe { self.unlink_free(block) });
        }
        self.carve_one()
    }

    /// [`Pool::pop`] laid out for reuse: the free list's pop falls through
    /// to the caller's code with no jump, and the bump path carries the
    /// jump instead. For C's `malloc`, whose programs mostly reuse freed
    /// blocks (CPython); Rust's fast path keeps [`Pool::pop`], whose bench
    /// shapes that allocate fresh blocks (`lifo`, `fifo` of
    /// `examples/slowpath_shapes.rs`) cost 1% more instructions this way.
    ///
    /// # Safety
    /// As [`Pool::pop`].
    #[cfg_attr(loom, allow(dead_code))] // only C's malloc uses it
    #[inline(always)]
    pub(crate) unsafe fn pop_reuse_first(&self) -> Option<NonNull<Block>> {
        if let Some(block) = NonNull::new(self.free.get()) {
            // SAFETY: `block` heads the free list; owner capacity (this
            // function's `# Safety`).
            return Some(unsafe { self.unlink_free(block) });
        }
        crate::cold_path();
        self.carve_one()
    }

    /// Takes `block`, the head of the free list, off it and counts it.
    ///
    /// # Safety
    /// `block` must be the free list's head; the caller in owner capacity
    /// with the pool attached (or holding the heap's lock).
    #[inline(always)]
    unsafe fn unlink_free(&self, block: NonNull<Block>) -> NonNull<Block> {
        // SAFETY: blocks on the free list are the owner's (this function's
        // `# Safety`, `pop`'s contract) and start with a link.
        self.free.set(unsafe { Block::next(block.as_ptr()) });
        self.used.set(self.used.get() + 1);
        block
    }

    /// Bumps past the next never-used block, if any (`pop`'s second way).
    #[inline(always)]
    fn carve_one(&self) -> Option<NonNull<Block>> {
        let block = self.carve.get();
        if block >= self.carve_end.get() {
            return None;
        }
        // `carve` is a block start below `carve_end`, the end of the last
        // block (invariants at the type), so the block ends at or before it.
        self.carve.set(block.wrapping_add(self.step.get() as usize));
        self.used.set(self.used.get() + 1);
        // SAFETY: `block` is below `carve_end`, which is null only in the
        // sentinel (where `carve` is null too, so we returned above): it
        // lies in a live pool, not at address 0.
        Some(unsafe { NonNull::new_unchecked(block.cast()) })
    }

    /// Pushes a block onto the local free list. Returns the new `used`.
    ///
    /// # Safety
    /// `block` must be a block of this pool that is handed out and being
    /// freed by the caller, which must be in owner capacity, and hold the
    /// heap's lock if the pool is detached.
    #[inline(always)]
    pub(crate) unsafe fn push(&self, block: *mut Block) -> u32 {
        // SAFETY: the block is being freed, so nobody else reaches it.
        unsafe { Block::set_next(block, self.free.get()) };
        self.free.set(block);
        let used = self.used.get() - 1;
        self.used.set(used);
        used
    }

    /// Whether the pool has a never-used block left to bump.
    pub(crate) fn can_carve(&self) -> bool {
        self.carve.get() < self.carve_end.get()
    }

    /// Whether `block` is the start of a block of this pool: a multiple of
    /// the block size from its base, below the end of its last block
    /// (`carve_end`: where the block size does not divide the pool, the
    /// slack after the last block is no block; review finding, a `free`
    /// of it was accepted and the address handed out again, running past
    /// the pool).
    pub(crate) fn is_block_start(&self, block: *mut u8) -> bool {
        let offset = (block as usize).wrapping_sub(self.base() as usize);
        offset < POOL_SIZE && block < self.carve_end.get() && offset % self.block_size() == 0
    }

    /// Checks the invariants stated on [`Pool`] (debug builds; a no-op
    /// otherwise). Walks the free list, so it runs on slow paths only.
    ///
    /// # Safety
    /// The caller must be in owner capacity, or hold the heap's lock with
    /// the pool detached.
    pub(crate) unsafe fn assert_valid(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let broken = |what: &str| -> ! {
            super::os::fatal(format_args!(
                "pool {:p} (class {}, used {}, carve {:p}, end {:p}): invariant broken: {what}",
                self as *const Pool,
                self.shared.class.get(),
                self.used.get(),
                self.carve.get(),
                self.carve_end.get()
            ))
        };
        if self.magic.get() != POOL_MAGIC || self.class() >= NB_CLASSES {
            broken("not a live pool header");
        }
        let size = self.block_size();
        let capacity = blocks_per_pool(self.class());
        let base = self.base() as usize;
        if self.carve_end.get() as usize != base + capacity * size {
            broken("the bump limit is not the end of the pool's last block");
        }
        if self.step.get() as usize != size {
            broken("the bump step is not the block size");
        }
        let carve = (self.carve.get() as usize).wrapping_sub(base);
        if carve % size != 0 || carve / size > capacity {
            broken("the bump pointer is not a block start within the pool");
        }
        let mut len = 0usize;
        let mut block = self.free.get();
        while !block.is_null() {
            let offset = (block as usize).wrapping_sub(base);
            if offset >= carve || offset % size != 0 {
                broken("a free-list block outside the carved part, or misaligned");
            }
            len += 1;
            if len > capacity {
                broken("the free list is longer than the pool (a cycle)");
            }
            // SAFETY: owner capacity (contract above): the list is ours.
            block = unsafe { Block::next(block) };
        }
        if self.used.get() as usize + len != carve / size {
            broken("used + free != carved");
        }
        if self.shared.remote.count() > self.used.get() {
            broken("more blocks on the remote list than in use");
        }
        if self.is_detached() && (len != 0 || self.can_carve()) {
            broken("a detached pool with free blocks");
        }
    }
}
