//! The remote-free protocol: how a block freed by a thread that does not
//! own its pool gets home.
//!
//! ```text
//!  freeing thread T                      pool P (owned by heap H)        heap H
//!  +------------------+   one CAS per    +------------------+  first    +---------+
//!  | outbox of T's    |-- batch -------->| remote: stack of |--block--->| pending |
//!  | heap: per-pool   |   (deliver)      | blocks + count   |  pushes P | list of |
//!  | chains, <= 256   |                  +------------------+           | pools   |
//!  +------------------+                                                 +---------+
//!                                     H's owner, or a lock holder: takes `pending`,
//!                                     then each pool's `remote`, and folds the blocks
//!                                     into the pools' free lists (or reclaims P whole)
//! ```
//!
//! 1. **Outbox** (this thread's side). A remote free puts the block on a
//!    small per-pool chain in the freeing heap's [`Outbox`], with plain
//!    loads and stores. A chain is delivered when another pool needs its
//!    slot, when the outbox holds [`OUTBOX_LIMIT`] blocks, on the freeing
//!    thread's periodic tick and at its exit, and by any reclaimer (which
//!    may flush the outbox of a live thread that has gone idle: see the
//!    protocol on [`Outbox`]).
//! 2. **Delivery**: one compare-and-swap links a whole chain onto the
//!    pool's [`RemoteList`]; the delivery that makes the list non-empty
//!    also pushes the pool onto its heap's pending list.
//! 3. **Collection**: the heap's owner (on its slow paths, under its lock)
//!    takes the pending list and each pool's remote list back into its free
//!    lists. A *guest* (a reclaimer holding the lock of a heap another
//!    thread owns) may take the pending list too; it reclaims the pools that
//!    are detached and whose every block in use is on the remote list (so
//!    no block of them is held anywhere, see `Pool`), and pushes the others
//!    back for the owner.

use core::ptr;

use super::heap::{bump, Heap};
use super::os;
use super::pool::{Block, Pool};
use super::registry::{Locked, Registry};
use crate::sync::{light_barrier, AtomicBool, AtomicUsize, CasStart, Cell, Ordering};

/// Blocks freed into a pool by threads other than its owner: a Treiber
/// stack whose head word also counts the blocks on it, so the owner learns
/// how many it takes without walking them (each is a cache miss, the line
/// last written by another core).
///
/// ```text
///  63        48 47                                 0
/// +-----------+------------------------------------+
/// |   count   |  address of the last block pushed  |
/// +-----------+------------------------------------+
/// ```
///
/// Block addresses fit in 48 bits (arenas are checked when mapped) and a
/// pool holds at most 1,024 blocks. Chains are pushed whole and the list is
/// only ever taken whole, never popped one block at a time, so the push CAS
/// has no ABA hazard.
pub(crate) struct RemoteList(AtomicUsize);

/// Addresses above this are refused for arenas (see [`RemoteList`]).
pub(crate) const ADDRESS_LIMIT: usize = 1 << 48;
const COUNT_SHIFT: u32 = 48;
const ADDRESS_MASK: usize = ADDRESS_LIMIT - 1;

impl RemoteList {
    pub(crate) fn new() -> RemoteList {
        RemoteList(AtomicUsize::new(0))
    }

    /// Pushes the `n` blocks linked from `head` to `tail` (whose link is
    /// overwritten). Returns true if the list was empty before.
    ///
    /// # Safety
    /// The blocks must be blocks of this list's pool, freed by the caller
    /// and reachable by no other thread, below [`ADDRESS_LIMIT`].
    pub(crate) unsafe fn push_chain(&self, head: *mut Block, tail: *mut Block, n: u32) -> bool {
        let mut old = self.0.load_for_cas();
        loop {
            // SAFETY: the chain is ours to write until the CAS publishes it.
            unsafe { Block::set_next(tail, (old & ADDRESS_MASK) as *mut Block) };
            let count = (old >> COUNT_SHIFT) + n as usize;
            let new = head as usize | (count << COUNT_SHIFT);
            // AcqRel: Release publishes the links of the chain; Acquire
            // orders our later push of the pool on the pending list (a
            // write of `pending_next`) after the `take` that emptied this
            // list, which its taker did after reading `pending_next`.
            match self
                .0
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return old == 0,
                Err(now) => old = now,
            }
        }
    }

    /// The block pushed last, for debug checks (it may change at once).
    pub(crate) fn head(&self) -> *mut Block {
        (self.0.load(Ordering::Relaxed) & ADDRESS_MASK) as *mut Block
    }

    /// How many blocks are on the list now (it may grow at once).
    pub(crate) fn count(&self) -> u32 {
        (self.0.load(Ordering::Relaxed) >> COUNT_SHIFT) as u32
    }

    /// Takes every block: the head of their list and how many there are.
    pub(crate) fn take(&self) -> (*mut Block, u32) {
        // AcqRel: Acquire sees the pushers' links; Release orders the
        // taker's earlier read of `pending_next` before the next pusher's
        // write of it (see `push_chain`).
        let word = self.0.swap(0, Ordering::AcqRel);
        (
            (word & ADDRESS_MASK) as *mut Block,
            (word >> COUNT_SHIFT) as u32,
        )
    }
}

/// Chains (one per pool) an outbox holds at most.
const OUTBOX_SLOTS: usize = 64;
/// Blocks an outbox holds at most before it delivers everything: 256
/// blocks are at most 128 KiB.
pub(crate) const OUTBOX_LIMIT: u32 = 256;
/// How long a guest waits for an owner to leave its outbox before it gives
/// up on that outbox for this pass (the owner's busy section is a few
/// dozen instructions, or one delivery of 64 chains).
const BUSY_WAIT_SPINS: u32 = 1 << 14;

/// One chain of an [`Outbox`]: blocks of one pool, linked `head` to `tail`.
#[repr(C)]
struct OutboxSlot {
    pool: Cell<*mut Pool>,
    head: Cell<*mut Block>,
    tail: Cell<*mut Block>,
    count: Cell<u32>,
}

/// Blocks a heap's thread freed into other heaps' pools and has not yet
/// delivered: up to [`OUTBOX_SLOTS`] chains, one per pool, direct-mapped by
/// the pool's address.
///
/// # Protocol
///
/// The slots (and `held`) are touched in one of three ways, never two at
/// once:
///
/// 1. by the owner inside a *busy section*, without any lock:
///    `busy = true` (Relaxed); [`light_barrier`]; load
///    `registry.flush_requests` (Acquire); if it is not 0 the owner leaves
///    at once (`busy = false`) and frees directly; else it works on the
///    slots and leaves with `busy = false` (Release);
/// 2. by a thread in owner capacity that holds the heap's lock (the owner
///    on its way out, a keeper of the parked heap);
/// 3. by a *guest* holding the heap's lock and a [`FlushTicket`] (it raised
///    `flush_requests` and then ran [`crate::sync::heavy_barrier`]), after
///    it read `busy == false` (Acquire).
///
/// 2 and 3 exclude each other by the lock, 1 and 2 are the same thread (or
/// there is no owner), and 1 and 3 exclude each other by Dekker's argument:
/// the owner stores `busy` then loads `flush_requests`, the guest stores
/// `flush_requests` then loads `busy`, with a full barrier between each
/// pair (the heavy barrier supplies the owner's). So either the owner sees
/// the request and stays out, or the guest sees `busy == true` and waits
/// for the Release store that ends the section (which also makes the
/// owner's writes visible to it); and while a ticket is alive, every busy
/// section that starts sees the request. The `Release` decrement that ends
/// a ticket, read by the owner's Acquire load, makes the guest's writes
/// visible to the owner's next section. The owner's section costs two
/// plain stores and a load: no read-modify-write on the remote-free path.
///
/// If the guest's wait times out (the owner was preempted inside), it
/// leaves that outbox alone until its next pass.
pub(crate) struct Outbox {
    /// The owner is inside a busy section.
    busy: AtomicBool,
    /// A hint for reclaimers, which may read it stale: the outbox may hold
    /// blocks. Set by the owner when `held` leaves 0, cleared by whoever
    /// delivers everything.
    nonempty: AtomicBool,
    /// Blocks on all chains.
    held: Cell<u32>,
    slots: [OutboxSlot; OUTBOX_SLOTS],
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            busy: AtomicBool::new(false),
            nonempty: AtomicBool::new(false),
            held: Cell::new(0),
            slots: core::array::from_fn(|_| OutboxSlot {
                pool: Cell::new(ptr::null_mut()),
                head: Cell::new(ptr::null_mut()),
                tail: Cell::new(ptr::null_mut()),
                count: Cell::new(0),
            }),
        }
    }

    /// Enters the owner's busy section (way 1 of the protocol), or returns
    /// `None` if a guest may be flushing: the caller then frees directly.
    ///
    /// # Safety
    /// The caller must be the heap's owner, not inside a busy section.
    #[inline(always)]
    unsafe fn enter(&self, registry: &Registry) -> Option<BusySection<'_>> {
        self.busy.store(true, Ordering::Relaxed);
        light_barrier();
        // Acquire: pairs with the Release decrement that ends a guest's
        // ticket, so the guest's writes to the slots happen before ours.
        if registry.flush_requests.load(Ordering::Acquire) != 0 {
            self.busy.store(false, Ordering::Relaxed);
            return None;
        }
        Some(BusySection(self))
    }

    /// Delivers every chain, in owner capacity (ways 1 and 2).
    ///
    /// # Safety
    /// The caller must be allowed to touch the slots (see the protocol).
    unsafe fn deliver_all(&self) {
        if self.held.get() == 0 {
            return;
        }
        for slot in &self.slots {
            // SAFETY: we may touch the slots (this function's `# Safety`), which is
            // what `deliver_slot` requires.
            unsafe { self.deliver_slot(slot) };
        }
        self.held.set(0);
        self.nonempty.store(false, Ordering::Relaxed);
    }

    /// Delivers one chain and empties its slot.
    ///
    /// # Safety
    /// As [`Outbox::deliver_all`].
    unsafe fn deliver_slot(&self, slot: &OutboxSlot) {
        let pool = slot.pool.get();
        if pool.is_null() {
            return;
        }
        let count = slot.count.get();
        // SAFETY: the chain holds blocks of `pool` freed by this heap's
        // thread; the slots are ours to touch (contract above).
        unsafe { deliver(pool, slot.head.get(), slot.tail.get(), count) };
        slot.pool.set(ptr::null_mut());
        self.held.set(self.held.get() - count);
    }

    /// Adds a freed block to the chain of its pool, delivering what the
    /// slot held for another pool, or everything at the limit. The common
    /// case (the slot already holds the pool's chain) is a few plain stores
    /// and no call; the rest is out of line.
    ///
    /// # Safety
    /// As [`Outbox::deliver_all`]; `block` is a block of `pool` being freed
    /// by the caller.
    ///
    /// Takes the busy section and leaves it: the out-of-line part is then
    /// a tail call, so the caller keeps no register across it.
    #[inline(always)]
    unsafe fn add(section: BusySection<'_>, pool: *mut Pool, block: *mut Block) {
        let this = section.0;
        // SAFETY: `pool` has a block in use (ours, being freed), so its header
        // is live and its `outbox_slot`, written by `Pool::init`, fixed; it is
        // `slot_of(pool)`, below OUTBOX_SLOTS.
        let slot = unsafe { this.slots.get_unchecked((*pool).outbox_slot()) };
        // SAFETY: `pool`'s header is live: the pool has a block in use
        // (the one being freed).
        debug_assert_eq!(unsafe { (*pool).outbox_slot() }, Self::slot_of(pool));
        let held = this.held.get() + 1;
        if slot.pool.get() == pool && held < OUTBOX_LIMIT {
            // SAFETY: the block is being freed by us: nobody else reaches it.
            unsafe { Block::set_next(block, slot.head.get()) };
            slot.head.set(block);
            slot.count.set(slot.count.get() + 1);
            this.held.set(held);
            return;
        }
        // SAFETY: `section` is our busy section and `block` a block of `pool`
        // being freed by the caller (this function's `# Safety`): `add_slow`'s
        // requirements, the same as ours.
        unsafe { Self::add_slow(section, pool, block) }
    }

    /// The slot of `pool`'s chain: the pool's slot index in its arena
    /// (headers are 128 bytes apart from the arena's start) mixed with the
    /// arena's address bits above 1 MiB, so the pools of one arena never
    /// share a slot. Computed once, by [`Pool::init`], and read off the
    /// pool's shared line, which the remote free reads anyway (for the
    /// owner and the class): a load and a shift instead of seven
    /// instructions of hashing on every remote free.
    #[inline(always)]
    pub(crate) fn slot_of(pool: *mut Pool) -> usize {
        let p = pool as usize;
        ((p >> 7) ^ (p >> 20)) % OUTBOX_SLOTS
    }

    /// [`Outbox::add`] when the slot holds another pool's chain (or none),
    /// or the outbox is full.
    ///
    /// # Safety
    /// As [`Outbox::add`].
    ///
    /// `extern "C"` (it does not unwind) so that [`Outbox::add`], inlined
    /// into `free_elsewhere`, reaches it by a tail call (see there).
    #[cold]
    #[inline(never)]
    unsafe extern "C" fn add_slow(section: BusySection<'_>, pool: *mut Pool, block: *mut Block) {
        let this = section.0;
        let slot = &this.slots[Self::slot_of(pool)];
        if slot.pool.get() == pool {
            // SAFETY: `block` is a block of `pool` being freed by the caller (`add`'s
            // `# Safety`, which this function's forwards), so it is on no list and no
            // other thread reaches it; the chain it joins is in our outbox, written
            // only inside our busy section `section`.
            unsafe { Block::set_next(block, slot.head.get()) };
            slot.count.set(slot.count.get() + 1);
        } else {
            // SAFETY: inside our busy section `section`, so the slots are ours to
            // touch (way 1): what `deliver_slot` requires.
            unsafe { this.deliver_slot(slot) };
            slot.pool.set(pool);
            slot.tail.set(block);
            slot.count.set(1);
        }
        slot.head.set(block);
        let held = this.held.get() + 1;
        this.held.set(held);
        if held == 1 {
            this.nonempty.store(true, Ordering::Relaxed);
        } else if held >= OUTBOX_LIMIT {
            // SAFETY: inside our busy section `section`, so the slots are ours to
            // touch (way 1): what `deliver_all` requires.
            unsafe { this.deliver_all() };
        }
    }

    /// Delivers everything, as the owner at a convenient moment (its tick).
    /// Does nothing if a guest may be flushing it right now.
    ///
    /// # Safety
    /// The caller must be the heap's owner, not inside a busy section.
    pub(crate) unsafe fn flush_as_owner(&self, registry: &Registry) {
        if self.held.get() == 0 {
            return;
        }
        // SAFETY: the caller owns the heap and is in no busy section (this
        // function's `# Safety`): what `enter` requires.
        if let Some(section) = unsafe { self.enter(registry) } {
            // SAFETY: inside a busy section (way 1).
            unsafe { section.0.deliver_all() };
        }
    }

    /// Delivers everything, holding the heap's lock in owner capacity
    /// (way 2: the owner leaving, a keeper).
    pub(crate) fn flush_locked(&self, locked: &Locked<'_>) {
        debug_assert!(locked.in_owner_capacity());
        // SAFETY: `locked` holds the lock in owner capacity (asserted
        // above), which lets us touch the slots (way 2): what `deliver_all`
        // requires.
        unsafe { self.deliver_all() };
    }

    /// Delivers everything as a guest (way 3). Returns false if the owner
    /// stayed inside a busy section too long: the outbox is left alone.
    pub(crate) fn flush_as_guest(&self, _locked: &Locked<'_>, _ticket: &FlushTicket<'_>) -> bool {
        if !self.nonempty.load(Ordering::Relaxed) {
            return true;
        }
        let mut spins = 0;
        // Acquire: pairs with the Release store that ends a busy section.
        while self.busy.load(Ordering::Acquire) {
            spins += 1;
            if spins > BUSY_WAIT_SPINS {
                return false;
            }
            crate::sync::spin_wait(spins);
        }
        // SAFETY: way 3: lock held, ticket alive, owner outside.
        unsafe { self.deliver_all() };
        true
    }

    /// Blocks held, as the owner sees them (for the model checks).
    #[cfg(loom)]
    pub(crate) fn held_by_owner(&self) -> u32 {
        self.held.get()
    }

    /// Whether the outbox may hold blocks (a hint: see `nonempty`).
    pub(crate) fn may_hold_blocks(&self) -> bool {
        self.nonempty.load(Ordering::Relaxed)
    }
}

/// The owner inside its outbox (way 1 of the [`Outbox`] protocol).
/// Transparent: a pointer, passed in a register to `Outbox::add_slow`.
#[repr(transparent)]
struct BusySection<'a>(&'a Outbox);

impl Drop for BusySection<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: a guest that reads `false` sees our writes to the slots.
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Proof that the holder raised `registry.flush_requests` and that a heavy
/// barrier ran since, so no owner is in or can enter a busy section unseen
/// (see [`Outbox`]). Dropping it lowers the request again.
pub(crate) struct FlushTicket<'r> {
    registry: &'r Registry,
}

impl<'r> FlushTicket<'r> {
    /// Raises the request and runs the barrier; `None` if the OS offers no
    /// process-wide barrier (then only outboxes reachable in owner capacity
    /// can be flushed).
    pub(crate) fn issue(registry: &'r Registry) -> Option<FlushTicket<'r>> {
        // Relaxed: the heavy barrier orders it before our loads of `busy`
        // (and before every owner's next load of it).
        registry.flush_requests.fetch_add(1, Ordering::Relaxed);
        let ticket = FlushTicket { registry };
        crate::sync::heavy_barrier().then_some(ticket)
    }
}

impl Drop for FlushTicket<'_> {
    fn drop(&mut self) {
        // Release: an owner that reads the lowered count (Acquire) sees
        // what we did to its outbox.
        self.registry.flush_requests.fetch_sub(1, Ordering::Release);
    }
}

/// Hands `n` blocks of `pool`, linked from `head` to `tail`, back to the
/// pool's owner: one push onto the pool's remote list and, if that list
/// was empty, one push of the pool onto the owner's pending list.
///
/// # Safety
/// The blocks must be blocks of `pool` in use, freed by the caller and
/// reachable by no other thread.
pub(crate) unsafe fn deliver(pool: *mut Pool, head: *mut Block, tail: *mut Block, n: u32) {
    // SAFETY: the pool has blocks in use (ours), so its header is live and
    // its owner fixed (see `Pool`); heaps are never unmapped.
    let (p, owner) = unsafe { (&*pool, &*(*pool).owner(Ordering::Relaxed).0) };
    // SAFETY: the blocks are blocks of `pool` in use, freed by the caller
    // and reachable by no other thread (this function's `# Safety`); they lie
    // in an arena, and arenas are mapped below `ADDRESS_LIMIT` (`map_arena`
    // checks): `push_chain`'s requirements.
    if unsafe { p.shared.remote.push_chain(head, tail, n) } {
        // SAFETY: our push made `remote` non-empty, so we alone may link
        // the pool into the pending list (see `Pool`).
        unsafe { owner.push_pending(pool) };
        owner.note_delivery_to_parked();
    }
}

/// Frees a block of a pool that `me`'s heap does not own.
///
/// `me` is the calling thread's heap, in which the free is counted and
/// whose outbox batches it, or null if the thread has none (thread
/// teardown), in which case the block is delivered at once and counted as
/// an orphan free.
///
/// # Safety
/// `block` must be a block in use of `pool`, being freed by the caller;
/// `pool` must not belong to `me`, which, if not null, the caller owns.
#[inline(always)]
pub(crate) unsafe fn free_remote(me: *mut Heap, pool: *mut Pool, block: *mut u8) {
    // SAFETY: a pool with a block in use is live; its class is fixed.
    let p = unsafe { &*pool };
    let class = p.class();
    if super::debug::CHECKS && p.shared.remote.head() == block.cast::<Block>() {
        os::fatal(format_args!(
            "dealloc of {block:p}: double free (the block is already on its pool's \
             remote free list)"
        ));
    }
    let block = block.cast::<Block>();
    if me.is_null() {
        // SAFETY: `block` is a block in use of `pool` freed by the caller (this
        // function's `# Safety`), what `free_orphan` requires.
        return unsafe { free_orphan(pool, block) };
    }
    // SAFETY: the caller owns `me`.
    let me = unsafe { &*me };
    // SAFETY: a live pool's class is below NB_CLASSES.
    bump(&unsafe { me.class_slot_unchecked(class) }.frees);
    // SAFETY: we own `me` and are in no busy section (not re-entrant).
    match unsafe { me.outbox.enter(me.registry()) } {
        // SAFETY: inside our busy section (way 1); the block is ours to free.
        Some(section) => unsafe { Outbox::add(section, pool, block) },
        // SAFETY: `block` is a block in use of `pool` being freed by the caller
        // (this function's `# Safety`), which is all `deliver_one` requires.
        // `enter` refusing the busy section concerns the outbox only, not the
        // block.
        None => unsafe { deliver_one(pool, block) },
    }
}

/// Delivers one block at once (a guest is flushing outboxes, so ours is
/// not ours to touch now). Out of line and `extern "C"` (it does not
/// unwind): the inlined remote free reaches it by a tail call.
///
/// # Safety
/// `block` must be a block in use of `pool`, being freed by the caller.
#[cold]
#[inline(never)]
unsafe extern "C" fn deliver_one(pool: *mut Pool, block: *mut Block) {
    // SAFETY: `block` is a block in use of `pool` being freed by the caller
    // (this function's `# Safety`): a one-block chain (head = tail, n = 1) no
    // other thread reaches, which is all `deliver` requires.
    unsafe { deliver(pool, block, block, 1) }
}

/// A remote free by a thread that has no heap (thread teardown): counted
/// as an orphan free, delivered at once.
///
/// # Safety
/// `block` must be a block in use of `pool`, being freed by the caller.
#[cold]
#[inline(never)]
unsafe fn free_orphan(pool: *mut Pool, block: *mut Block) {
    // SAFETY: a pool with a block in use is live; its owning heap is never
    // unmapped.
    let p = unsafe { &*pool };
    // SAFETY: `block` is in use (this function's `# Safety`), so `pool` is
    // live and its owner fixed; `owner` strips the DETACHED tag, leaving the
    // address of a heap that was mapped and, heaps being never unmapped (see
    // `Heap`), still is.
    unsafe { (*p.owner(Ordering::Relaxed).0).registry() }.count_orphan_free(p.class());
    // SAFETY: `block` is a block in use of `pool` being freed by the caller
    // (this function's `# Safety`): a one-block chain no other thread
    // reaches, as `deliver` requires.
    unsafe { deliver(pool, block, block, 1) }
}

impl Heap {
    /// Pushes `pool`, whose remote list just became non-empty, onto this
    /// heap's pending list.
    ///
    /// # Safety
    /// The caller must be the thread whose push made `pool`'s remote list
    /// non-empty, or hold the pool after taking it off the pending list
    /// with its remote list still non-empty; `pool` must belong to this
    /// heap.
    pub(crate) unsafe fn push_pending(&self, pool: *mut Pool) {
        let mut head = self.pending.load_for_cas();
        loop {
            // SAFETY: until the pool is taken off the list again, only we
            // write its `pending_next` (see `Pool`).
            unsafe { (*pool).shared.pending_next.store(head, Ordering::Relaxed) };
            // Release: whoever takes the list sees the link just written.
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

    /// Whether pools with remote frees are waiting (a hint).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.load(Ordering::Relaxed).is_null()
    }

    /// Takes the whole pending list; each pool on it is then the caller's
    /// to collect or to push back.
    fn take_pending(&self, _locked: &Locked<'_>) -> *mut Pool {
        if !self.has_pending() {
            return ptr::null_mut();
        }
        // Acquire: pairs with the Release of `push_pending`, so the links
        // of the list are visible.
        self.pending.swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// Takes every remote free waiting for this heap back into the pools'
    /// free lists (and pools that empty back to their arenas).
    pub(crate) fn collect_pending(&self, locked: &Locked<'_>) {
        debug_assert!(locked.in_owner_capacity());
        let mut pool = self.take_pending(locked);
        while !pool.is_null() {
            // SAFETY: pools on our pending list are ours and live (they hold
            // the blocks on their remote list).
            let p = unsafe { &*pool };
            // Read the link before emptying `remote`: once it is empty, a
            // pusher may link the pool into the pending list again.
            let next = p.shared.pending_next.load(Ordering::Relaxed);
            let (blocks, count) = p.shared.remote.take();
            // SAFETY: owner capacity under the lock; the blocks are the
            // pool's, taken just now.
            unsafe { self.take_back(locked, pool, blocks, count) };
            pool = next;
        }
    }

    /// Splices `count` blocks taken from `pool`'s remote list into its free
    /// list; the pool rejoins its class list, or its arena if it emptied.
    ///
    /// # Safety
    /// Owner capacity with the lock held; `pool` must be one of this heap's
    /// pools (as those on its pending list are), and `blocks` must have
    /// been taken from `pool`'s remote list just now.
    unsafe fn take_back(
        &self,
        locked: &Locked<'_>,
        pool: *mut Pool,
        blocks: *mut Block,
        count: u32,
    ) {
        if blocks.is_null() {
            return;
        }
        // SAFETY: `blocks` is non-null and was taken from `pool`'s remote list
        // just now (this function's `# Safety`); blocks on the remote list count in
        // `used`, so the pool was not given back to its arena and its header is
        // live. Owner capacity with the lock held (same `# Safety`) makes its free
        // list ours to write: no guest claims it while we hold the lock.
        let p = unsafe { &*pool };
        let free = p.free.get();
        if !free.is_null() {
            // Splice in front of the local list. Pools that receive remote
            // frees are usually detached (no local list), so this walk is
            // rare.
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
        // SAFETY: owner capacity with the lock held, and `pool` one of this
        // heap's pools (this function's `# Safety`): what `blocks_returned`
        // requires.
        unsafe { self.blocks_returned(locked, pool) };
    }

    /// As a guest: takes the pending list, reclaims the pools no block of
    /// which is held anywhere (detached, every block in use on the remote
    /// list) and pushes the others back for the owner. Returns the pools
    /// reclaimed.
    pub(crate) fn reclaim_pending_as_guest(&self, locked: &Locked<'_>) -> usize {
        let mut reclaimed = 0;
        let mut pool = self.take_pending(locked);
        while !pool.is_null() {
            // SAFETY: pools on the pending list are live (they hold blocks).
            let p = unsafe { &*pool };
            let next = p.shared.pending_next.load(Ordering::Relaxed);
            // A claim (see `Pool`): while we hold it, the owner leaves the
            // owner's line alone, so `used` is stable here; and the claim
            // sees the owner's writes before it detached the pool.
            if !p.claim() {
                // Attached (or being taken back by its owner): the owner's.
                // SAFETY: we took the pool off the list with its remote
                // list non-empty (we did not take it): we may link it in
                // again.
                unsafe { self.push_pending(pool) };
            } else if p.shared.remote.count() == p.used.get() {
                // Every block in use is on the remote list: none is handed
                // out or in an outbox, so no thread can push another.
                let (blocks, count) = p.shared.remote.take();
                if super::debug::CHECKS && count != p.used.get() {
                    os::fatal(format_args!(
                        "pool {pool:p}: {count} blocks on its remote list, {} in use",
                        p.used.get()
                    ));
                }
                // A detached pool's free list is empty: the remote list
                // holds every block it carved, and becomes its free list
                // (as `release_pool` requires).
                p.free.set(blocks);
                p.used.set(0);
                // SAFETY: an empty pool of this heap on no list; the lock is
                // held, which is all arena bookkeeping needs. The claim is
                // never lifted: no block of the pool is held, so nobody
                // reads its owner word before the slot is reused.
                unsafe { self.release_pool(locked, pool) };
                reclaimed += 1;
            } else {
                p.unclaim();
                // SAFETY: we took the pool off the list with its remote list
                // non-empty (we did not take it): we may link it in again.
                unsafe { self.push_pending(pool) };
            }
            pool = next;
        }
        reclaimed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Outbox, OUTBOX_SLOTS};
    use crate::alloc::pool::Pool;
    use crate::alloc::size_class::{ARENA_SIZE, POOLS_PER_ARENA};

    /// The pools of one arena never share an outbox slot, wherever the
    /// arena lies, so a thread freeing into several pools of one arena
    /// keeps one chain per pool.
    #[test]
    fn the_pools_of_one_arena_have_distinct_outbox_slots() {
        for arena in [
            ARENA_SIZE,
            7 * ARENA_SIZE,
            0x7f3a_5c00_0000,
            0x5555_5550_0000,
        ] {
            let mut seen = [false; OUTBOX_SLOTS];
            for index in 1..POOLS_PER_ARENA {
                let slot = Outbox::slot_of(Pool::header_of_slot(arena, index));
                assert!(slot < OUTBOX_SLOTS);
                assert!(
                    !seen[slot],
                    "arena {arena:#x}: pool {index} shares slot {slot}"
                );
                seen[slot] = true;
            }
        }
    }

    /// `Pool::init` records the pool's outbox slot on its shared line, the
    /// one the remote free indexes the outbox with.
    #[test]
    fn init_records_the_outbox_slot() {
        #[repr(C, align(128))]
        struct Header(core::mem::MaybeUninit<Pool>);
        // A zeroed header, as a fresh slot's is (what `init` may read).
        let mut headers: Vec<Header> = (0..3)
            .map(|_| Header(core::mem::MaybeUninit::zeroed()))
            .collect();
        // A stand-in owner: `init` only stores the (page-aligned) address.
        let owner = 0x1000 as *mut crate::alloc::heap::Heap;
        for h in &mut headers {
            let pool = h.0.as_mut_ptr();
            // SAFETY: `pool` is a zeroed, aligned header that nothing else
            // uses, which is what `init` requires of a fresh slot's header;
            // `init` does not touch the pool's blocks.
            unsafe { Pool::init(pool, 3, owner) };
            // SAFETY: `init` just wrote the header.
            assert_eq!(unsafe { (*pool).outbox_slot() }, Outbox::slot_of(pool));
        }
    }
}
