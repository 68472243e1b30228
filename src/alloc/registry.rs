//! The registry, and who may use a heap: every heap ever created, the
//! process-wide counters that are not on any fast path, the heap lock and
//! the three capacities it grants (see `Heap`), and claiming and parking.
//!
//! Heaps are only ever added (a lock-free push), never removed, so walking
//! the list needs no lock and is safe at any time, including in a child
//! process after `fork`.
//!
//! # The heap lock and `fork`
//!
//! A heap's lock is taken by its owner only on slow paths, and by keepers
//! and guests; a lock word names the *fork generation* of its holder. A
//! thread that does not hold it never waits for it for long (guests try,
//! then move on) except the owner, which spins and yields: guests hold it
//! for bounded work and unmap arenas only after releasing it. After a
//! `fork`, the child's `pthread_atfork` handler (`thread.rs`) starts a new
//! generation, so a lock held by a thread that did not survive the fork is
//! recognised: nobody waits for it, and the heap it guards, which may have
//! been caught mid-update, is left alone for good (its memory stays
//! mapped in the child). If that heap is the forking thread's own, the
//! handler binds the thread to a fresh heap. A signal handler that
//! allocates while its thread holds its own heap's lock is served from
//! another heap rather than deadlocking.

use core::ptr;

use crossbeam_utils::CachePadded;

use super::arena::{self, Arena};
use super::heap::Heap;
use super::large_count::LargeCounts;
use super::size_class::{ARENA_SIZE, NB_CLASSES};
use crate::sync::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, CasStart, Cell, Ordering};

/// A `Registry` with every counter at zero; `orphans` builds the per-class
/// array (in a `const fn` for the static, at run time under loom).
macro_rules! empty_registry {
    ($orphans:expr) => {
        Registry {
            heaps: AtomicPtr::new(ptr::null_mut()),
            arena_bytes: AtomicUsize::new(0),
            arenas_allocated_total: AtomicUsize::new(0),
            arenas_freed_total: AtomicUsize::new(0),
            arenas_highwater: AtomicUsize::new(0),
            large_orphans: LargeCounts::new(),
            large_reserved: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
            orphan_frees: $orphans,
            flush_requests: CachePadded::new(AtomicUsize::new(0)),
            retained_bytes: AtomicUsize::new(0),
            bytes_returned: AtomicUsize::new(0),
            next_pass_ms: AtomicU64::new(0),
            pass_running: AtomicBool::new(false),
        }
    };
}

/// Process-wide allocator state.
pub(crate) struct Registry {
    heaps: AtomicPtr<Heap>,
    /// Bytes of arenas mapped now.
    pub(crate) arena_bytes: AtomicUsize,
    pub(crate) arenas_allocated_total: AtomicUsize,
    pub(crate) arenas_freed_total: AtomicUsize,
    /// Most arenas mapped at once.
    pub(crate) arenas_highwater: AtomicUsize,
    /// Large blocks counted by threads that have no heap (see
    /// `large_count`).
    pub(crate) large_orphans: LargeCounts,
    /// Bytes of large blocks in use plus every heap's credit (see
    /// `large_count`): what the peak is taken of.
    pub(crate) large_reserved: AtomicUsize,
    /// High-water mark of `arena_bytes + large_reserved`.
    pub(crate) peak_bytes: AtomicUsize,
    /// Frees by threads that have no heap (during thread teardown).
    pub(crate) orphan_frees: [AtomicUsize; NB_CLASSES],
    /// Guests flushing outboxes now (see `Outbox`). Every remote free of
    /// every thread loads it, and guests alone write it: on a cache line of
    /// its own, so that the counters beside it (written by passes and
    /// arena events) do not take the line from the freeing threads.
    pub(crate) flush_requests: CachePadded<AtomicUsize>,
    /// Bytes of empty arenas kept mapped for reuse, all heaps together.
    pub(crate) retained_bytes: AtomicUsize,
    /// Bytes of arenas returned to the OS, ever.
    pub(crate) bytes_returned: AtomicUsize,
    /// When the next process-wide pass may run (see `purge.rs`).
    pub(crate) next_pass_ms: AtomicU64,
    /// A pass is running.
    pub(crate) pass_running: AtomicBool,
}

/// Deliveries into a parked heap after which the deliverer collects it.
const PARKED_COLLECT_EVERY: usize = 16;
/// Attempts a guest makes at a busy lock before moving on.
const GUEST_LOCK_ATTEMPTS: u32 = 256;

/// Who may use a heap (see `Heap`). Written by the holder of its lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Ownership {
    /// A live thread owns it and runs its fast paths.
    Owned = 0,
    /// No thread owns it; whoever holds its lock is its keeper.
    Parked = 1,
}

/// The generation of the process, bumped in a child after `fork`: lock
/// words carry it, so a lock held by a thread that did not survive the
/// fork is told from a lock held by a live one.
#[cfg(not(loom))]
pub(crate) static FORK_GENERATION: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(0);

fn fork_generation() -> usize {
    #[cfg(loom)]
    return 0;
    #[cfg(not(loom))]
    return FORK_GENERATION.load(core::sync::atomic::Ordering::Relaxed);
}

/// The word a lock that knows about `fork` holds while taken:
/// `generation << 1 | 1`, so that a child tells a lock held by a thread
/// that did not survive the fork (an older generation) from one of its
/// own. Used by the heap lock, the large-block cache's lock and
/// `purge_in_background`'s control word.
pub(crate) fn held_tag() -> usize {
    fork_generation() << 1 | 1
}

/// A heap's lock: 0 when free, else `generation << 1 | 1` of its holder.
pub(crate) struct HeapLock(AtomicUsize);

impl HeapLock {
    /// A lock held by its creator.
    pub(crate) fn new_held() -> HeapLock {
        HeapLock(AtomicUsize::new(held_tag()))
    }

    /// One attempt.
    fn try_acquire(&self) -> bool {
        // A plain load first, so that waiters spin reading a shared line
        // rather than writing it (and, under loom, so that a waiter's spin
        // is not a chain of writes for the model to permute). Acquire on
        // the CAS: what the previous holder did happens before what we do.
        self.0.load(Ordering::Relaxed) == 0
            && self
                .0
                .compare_exchange(0, held_tag(), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the holder is a thread that did not survive a `fork`.
    fn holder_vanished(&self) -> bool {
        let word = self.0.load(Ordering::Relaxed);
        word != 0 && word != held_tag()
    }

    fn release(&self) {
        // Release: pairs with the next holder's Acquire.
        self.0.store(0, Ordering::Release);
    }
}

/// In which capacity a [`Locked`] holds its heap (see `Heap`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Capacity {
    /// The heap's owner, on a slow path.
    Owner,
    /// The heap is parked: the holder may do what an owner does.
    Keeper,
    /// Another thread owns the heap.
    Guest,
}

/// What happens to an arena that empties while a [`Locked`] is held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retention {
    /// Keep it mapped for a while, within the process-wide cap (see
    /// `purge.rs`); and keep the last empty pool of each class.
    Retain,
    /// Return it now; give back every empty pool.
    ReturnAll,
}

/// Proof that the heap's lock is held, and in which capacity. Arenas that
/// must go back to the OS are collected while it is held and unmapped once
/// it is released ([`Locked::finish`]), so that the lock is never held
/// across a system call.
pub(crate) struct Locked<'h> {
    heap: &'h Heap,
    capacity: Capacity,
    /// Whether finishing releases the lock (false when nested in a
    /// keeper's visit, which releases it).
    releases: bool,
    retention: Cell<Retention>,
    /// Arenas off every list, to unmap after releasing (through `next`).
    doomed: Cell<*mut Arena>,
}

impl<'h> Locked<'h> {
    fn new(heap: &'h Heap, capacity: Capacity, releases: bool) -> Locked<'h> {
        let retention = if capacity == Capacity::Keeper {
            // Parked heaps keep nothing empty.
            Retention::ReturnAll
        } else {
            Retention::Retain
        };
        Locked {
            heap,
            capacity,
            releases,
            retention: Cell::new(retention),
            doomed: Cell::new(ptr::null_mut()),
        }
    }

    pub(crate) fn heap(&self) -> &'h Heap {
        self.heap
    }

    pub(crate) fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Owner or keeper: may touch class lists and attached pools.
    pub(crate) fn in_owner_capacity(&self) -> bool {
        self.capacity != Capacity::Guest
    }

    pub(crate) fn returns_everything(&self) -> bool {
        self.retention.get() == Retention::ReturnAll
    }

    /// Makes arenas that empty from now on go back at once (and, in owner
    /// capacity, every empty pool).
    pub(crate) fn return_everything(&self) {
        self.retention.set(Retention::ReturnAll);
    }

    /// Queues an arena, already off every list of its heap, to be unmapped
    /// once the lock is released.
    pub(crate) fn doom(&self, arena: *mut Arena) {
        // SAFETY: the arena is off every list (caller's duty), so its `next`
        // link is ours to use.
        unsafe { (*arena).next.set(self.doomed.get()) };
        self.doomed.set(arena);
    }

    /// Releases the lock (if this guard took it) and unmaps the doomed
    /// arenas. Returns the bytes returned to the OS.
    pub(crate) fn finish(self) -> usize {
        let mut this = core::mem::ManuallyDrop::new(self);
        this.release()
    }

    fn release(&mut self) -> usize {
        if self.releases {
            match self.capacity {
                Capacity::Owner => self.heap.held.set(false),
                Capacity::Keeper => self.heap.kept.set(false),
                Capacity::Guest => {}
            }
            self.heap.lock.release();
        }
        let mut returned = 0;
        let mut arena = self.doomed.replace(ptr::null_mut());
        while !arena.is_null() {
            // SAFETY: doomed arenas are empty, off every list, and nobody
            // else knows them any more.
            let next = unsafe { (*arena).next.get() };
            // SAFETY: doomed arenas are empty, off every list and known to
            // no one else, so nothing refers to the mapping any more; one
            // with `huge` set was doomed as the lower half of a span whose
            // buddy is the same (`Heap::doom_retired`).
            returned += unsafe { arena::unmap_arena(self.heap.registry(), arena) };
            arena = next;
        }
        returned
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl Heap {
    /// Takes the lock in owner capacity, for a slow path. `None` when the
    /// lock cannot be had: this thread holds it already (a signal handler
    /// interrupted its own slow path) or its holder vanished in a `fork`.
    ///
    /// # Safety
    /// The caller must be in owner capacity.
    pub(crate) unsafe fn lock_as_owner(&self) -> Option<Locked<'_>> {
        if self.kept.get() {
            // A keeper's visit is in progress on this thread: nested.
            return Some(Locked::new(self, Capacity::Keeper, false));
        }
        if self.held.get() {
            return None;
        }
        let mut attempt = 0;
        while !self.lock.try_acquire() {
            if self.lock.holder_vanished() {
                return None;
            }
            attempt += 1;
            crate::sync::spin_wait(attempt);
        }
        self.held.set(true);
        Some(Locked::new(self, Capacity::Owner, true))
    }

    /// Tries to take the lock of a heap this thread does not own: as its
    /// keeper if it is parked, as a guest if another thread owns it. A few
    /// attempts, then `None`.
    pub(crate) fn visit(&self) -> Option<Locked<'_>> {
        let mut attempt = 0;
        while !self.lock.try_acquire() {
            attempt += 1;
            if attempt > GUEST_LOCK_ATTEMPTS || self.lock.holder_vanished() {
                return None;
            }
            crate::sync::spin_wait(attempt);
        }
        Some(self.locked_visit())
    }

    /// The guard for a visit whose lock was just taken.
    fn locked_visit(&self) -> Locked<'_> {
        if self.state.load(Ordering::Relaxed) == Ownership::Parked as u8 {
            self.kept.set(true);
            Locked::new(self, Capacity::Keeper, true)
        } else {
            Locked::new(self, Capacity::Guest, true)
        }
    }

    /// One attempt at keeping a parked heap.
    pub(crate) fn try_keep(&self) -> Option<Locked<'_>> {
        if self.state.load(Ordering::Relaxed) != Ownership::Parked as u8 || !self.lock.try_acquire()
        {
            return None;
        }
        let locked = self.locked_visit();
        if locked.capacity() == Capacity::Keeper {
            Some(locked)
        } else {
            // Adopted in the meantime.
            drop(locked);
            None
        }
    }

    /// Whether any thread holds the lock (for the `fork` handler).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn lock_is_held(&self) -> bool {
        self.lock.0.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Turns a keeper into the heap's owner, for the calling thread. What
    /// the heap retained when it was parked (see [`Heap::park`]) is the new
    /// owner's to reuse, so the remote frees collected here follow an
    /// owner's retention, not a keeper's.
    fn adopt(&self, locked: Locked<'_>) {
        debug_assert_eq!(locked.capacity(), Capacity::Keeper);
        locked.retention.set(Retention::Retain);
        self.collect_pending(&locked);
        self.state.store(Ownership::Owned as u8, Ordering::Relaxed);
        drop(locked);
    }

    /// Gives the heap up when its thread exits: delivers the outbox and
    /// takes back remote frees, then any thread may keep it. Returns false
    /// if the lock could not be had (see `lock_as_owner`): the heap then
    /// stays owned by nobody, for good.
    ///
    /// A parked heap keeps nothing empty (issue 8): no thread may ever
    /// work in it again, so nothing would come back for what it kept if
    /// every other thread went idle. So parking trims the heap (every
    /// empty pool and arena returned), with one exception: while a
    /// background purge runs ([`purge_in_background`]) and the process
    /// retains no more empty memory than its cap
    /// ([`over_retained_cap`](super::purge::over_retained_cap)), the heap keeps what
    /// its owner's retention left (the one empty pool per small class, the
    /// retired arenas, the free pool slots), because that thread's next
    /// round returns it within its interval whatever the other threads
    /// do. A thread that exits is often followed by one that starts and
    /// adopts the heap: it then takes those arenas back warm, where a heap
    /// trimmed at exit had its arenas unmapped and the next thread mapped
    /// and faulted in fresh ones (`threadchurn` of bench/c: 2.5 `munmap`
    /// and 1.4 `mmap` per thread, 35 page faults).
    ///
    /// [`purge_in_background`]: crate::purge_in_background
    ///
    /// # Safety
    /// The caller must be the heap's owner and must not touch it again.
    pub(crate) unsafe fn park(&self) -> bool {
        // SAFETY: the caller is the heap's owner, which `lock_as_owner`
        // requires.
        let Some(locked) = (unsafe { self.lock_as_owner() }) else {
            return false;
        };
        let registry = self.registry();
        if !super::purge::background_requested() || super::purge::over_retained_cap(registry) {
            // SAFETY: owner capacity with the lock held.
            unsafe { self.trim(&locked) };
        } else {
            self.outbox.flush_locked(&locked);
            self.collect_pending(&locked);
            let now = super::os::now_ms();
            self.purge_retired(&locked, now, super::purge::retention_ms(registry));
        }
        self.parked_deliveries.store(0, Ordering::Relaxed);
        self.state.store(Ownership::Parked as u8, Ordering::Relaxed);
        locked.finish();
        true
    }

    /// A delivery made one of this heap's pools' remote lists non-empty:
    /// if the heap is parked, every so often keep it and collect, so memory
    /// freed into the heaps of exited threads goes back to arenas (and
    /// arenas to the OS) even if no thread adopts them.
    pub(crate) fn note_delivery_to_parked(&self) {
        if self.state.load(Ordering::Relaxed) != Ownership::Parked as u8 {
            return;
        }
        if self.parked_deliveries.fetch_add(1, Ordering::Relaxed) + 1 < PARKED_COLLECT_EVERY {
            return;
        }
        if let Some(locked) = self.try_keep() {
            self.parked_deliveries.store(0, Ordering::Relaxed);
            self.collect_pending(&locked);
            locked.finish();
        }
    }
}

impl Registry {
    /// An empty registry (for the process-wide static).
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Registry {
        empty_registry!([const { AtomicUsize::new(0) }; NB_CLASSES])
    }

    /// An empty registry (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub(crate) fn new() -> Registry {
        empty_registry!(core::array::from_fn(|_| AtomicUsize::new(0)))
    }

    /// Every heap ever created, newest first. Heaps live as long as their
    /// registry.
    pub(crate) fn heaps(&self) -> impl Iterator<Item = &Heap> + '_ {
        // Acquire: pairs with the Release publication in `create_heap`.
        let mut heap = self.heaps.load(Ordering::Acquire);
        core::iter::from_fn(move || {
            // SAFETY: heaps are never unmapped while their registry lives.
            let h = unsafe { heap.as_ref()? };
            heap = h.next_heap.load(Ordering::Acquire);
            Some(h)
        })
    }

    /// A heap for the calling thread to own: a parked one if it can keep
    /// one, else a new one. Null only when the OS refuses memory.
    pub(crate) fn claim_heap(&self) -> *mut Heap {
        for heap in self.heaps() {
            if let Some(locked) = heap.try_keep() {
                heap.adopt(locked);
                return heap.as_mut_ptr();
            }
        }
        let heap = self.create_heap(Ownership::Owned);
        if !heap.is_null() {
            // SAFETY: created with its lock held by us; we own it now.
            unsafe { (*heap).lock.release() };
        }
        heap
    }

    /// A parked heap kept by the caller, a new one if none can be kept.
    fn keep_any(&self) -> Option<Locked<'_>> {
        if let Some(locked) = self.heaps().find_map(Heap::try_keep) {
            return Some(locked);
        }
        let heap = self.create_heap(Ownership::Parked);
        // SAFETY: heaps live as long as their registry.
        let heap = unsafe { heap.as_ref()? };
        // Created with its lock held by us.
        heap.kept.set(true);
        Some(Locked::new(heap, Capacity::Keeper, true))
    }

    /// Serves one allocation from a heap kept for the purpose: for threads
    /// that have no heap (during thread teardown) or cannot use theirs at
    /// the moment (see `Heap::lock_as_owner`). Null when the OS refuses.
    ///
    /// `class` must be below `NB_CLASSES`, which is not checked (though
    /// `Heap::alloc` relies on it): `alloc_unbound` and `Heap::alloc_slow`
    /// pass on a class their own callers vouch for.
    pub(crate) fn alloc_elsewhere(&self, class: usize) -> *mut u8 {
        let Some(locked) = self.keep_any() else {
            return ptr::null_mut();
        };
        // SAFETY: `keep_any` made us the keeper of a parked heap, which is
        // owner capacity. `class < NB_CLASSES` is assumed, not checked: see
        // this function's docs.
        let block = unsafe { locked.heap().alloc(class) };
        locked.finish();
        block
    }

    /// Creates a heap, its lock held by the caller, and publishes it.
    fn create_heap(&self, state: Ownership) -> *mut Heap {
        let heap = Heap::create(self, state);
        if heap.is_null() {
            return heap;
        }
        let mut head = self.heaps.load_for_cas();
        loop {
            // SAFETY: the heap is not published yet; only we see it.
            unsafe { (*heap).next_heap.store(head, Ordering::Relaxed) };
            match self
                .heaps
                .compare_exchange_weak(head, heap, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return heap,
                Err(now) => head = now,
            }
        }
    }

    pub(crate) fn arena_mapped(&self) {
        self.arenas_allocated_total.fetch_add(1, Ordering::Relaxed);
        let bytes = self.arena_bytes.fetch_add(ARENA_SIZE, Ordering::Relaxed) + ARENA_SIZE;
        self.arenas_highwater
            .fetch_max(bytes / ARENA_SIZE, Ordering::Relaxed);
        self.note_footprint(bytes + self.large_reserved.load(Ordering::Relaxed));
    }

    pub(crate) fn arena_unmapped(&self) {
        self.arenas_freed_total.fetch_add(1, Ordering::Relaxed);
        self.arena_bytes.fetch_sub(ARENA_SIZE, Ordering::Relaxed);
        self.bytes_returned.fetch_add(ARENA_SIZE, Ordering::Relaxed);
    }

    pub(crate) fn note_footprint(&self, bytes: usize) {
        // A plain load first: the peak rarely moves, and `fetch_max` is a
        // compare-and-swap loop that writes the shared line every time.
        if bytes > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_orphan_free(&self, class: usize) {
        self.orphan_frees[class].fetch_add(1, Ordering::Release);
    }
}
