//! Retention and purging: how long empty memory stays mapped, and who
//! returns it.
//!
//! * An arena that empties is *retired*: kept mapped, off the usable list,
//!   so a program whose memory swings does not pay `munmap`, `mmap` and a
//!   page fault (with the kernel zeroing the page) per page on every swing
//!   (CPython keeps one such arena; mimalloc delays its purges). It is
//!   returned to the OS once it has been retired for [`RETAIN_MS`]; sooner,
//!   after [`OVER_CAP_MS`], while the empty memory retained by the whole
//!   process is above its cap ([`over_retained_cap`]: 64 MiB, or an
//!   eighth of the arena memory in use if that is more); when a pass finds
//!   its heap parked (parking itself trims unless a background purge runs
//!   and the process is below the cap: `Heap::park`), or while
//!   `release_free_memory()` runs. The cap is enforced after a short
//!   grace rather than at once so that a program that frees a whole
//!   working set and builds it again straight away (the FIFO benchmark:
//!   264 MB per round) reuses its arenas warm; measured, returning
//!   everything above 64 MiB at once made that round three times slower.
//!   A heap that took a retired arena back into use within the last
//!   `RETAIN_MS` (its working set swings) gets the full `RETAIN_MS` over
//!   the cap too ([`Heap::retention_for`]): with the short grace alone, a
//!   round whose free phase took over 50 ms of wall time lost its first
//!   arenas.
//! * A pool slot given back to an arena that stays in use keeps its pages
//!   for the next pool until it has been free for [`DECOMMIT_MS`]; then
//!   the heap's checks decommit it (`MADV_DONTNEED`, the mapping stays:
//!   [`Heap::decommit_idle_slots`]), and `release_free_memory()` decommits
//!   every free slot at once.
//! * In a process whose `malloc` is PyMalloc, retention is brief
//!   ([`retain_briefly`]: [`C_RETAIN_MS`], no swing rule).
//! * Retired arenas are reused oldest first (those closest to expiring),
//!   and a heap that reuses one shows that its demand is back: its other
//!   retired arenas get a new window from then (see
//!   [`Heap::purge_retired`]).
//! * Expired arenas are returned by their owner's tick and whenever an
//!   arena empties, and by a process-wide *pass* ([`pass`]), which also
//!   delivers the outboxes of threads that went idle, collects parked
//!   heaps, and reclaims the pools of live heaps no block of which is held
//!   any more. A pass runs from any thread's allocator activity (a tick, a
//!   pool emptying, a fresh pool; at most every [`PASS_EVERY_MS`]), from
//!   `release_free_memory()` (returning everything, whatever its age), and
//!   from the opt-in background thread ([`purge_in_background`]).

use core::ptr;

use super::arena::Arena;
use super::heap::Heap;
use super::os;
use super::registry::{Capacity, Locked, Registry};
use super::remote::FlushTicket;
use super::size_class::ARENA_SIZE;
use crate::sync::Ordering;

/// How long an empty arena stays mapped for reuse.
pub(crate) const RETAIN_MS: u64 = 200;
/// How long, while the process retains more than its cap ([`over_retained_cap`]).
pub(crate) const OVER_CAP_MS: u64 = 50;
/// The least time between two passes run by ticks.
const PASS_EVERY_MS: u64 = 100;
/// Empty memory the process may keep mapped whatever its size.
const RETAINED_FLOOR: usize = 64 << 20;
/// How long a free pool slot of an arena that stays in use keeps its
/// pages before [`Heap::decommit_idle_slots`] gives them back: a second,
/// memory left idle rather than a swing's. At 100 ms, `fragment` of
/// bench/c (phases that fill and free most of 440 MB, about 150 ms each)
/// decommitted and faulted its slots in again every phase: system time
/// 0.23 -> 0.69 s, wall time 1.8 -> 3.0 s, peak RSS unchanged; at 50 ms
/// (tried for the C entry points, CPython's peak 33.0 MiB against 33.8 at
/// 100 ms) 0.9 s.
pub(crate) const DECOMMIT_MS: u64 = 1000;
/// Operations (allocations and frees) of a heap's wake grace: see
/// [`Heap::in_wake_grace`].
pub(crate) const WAKE_GRACE_OPS: usize = 32 * 1024;

/// How long an empty arena stays mapped in a process whose `malloc` is
/// PyMalloc (the `pymem-malloc` preload, or the `override` feature), once
/// [`retain_briefly`] has been called: see there.
pub(crate) const C_RETAIN_MS: u64 = 20;

/// Set by [`retain_briefly`]. Not under loom (a real static; the models
/// never call it).
#[cfg(not(loom))]
static BRIEF_RETENTION: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Makes empty arenas go back after [`C_RETAIN_MS`] instead of
/// [`RETAIN_MS`], over the cap or not, and without the swing rule
/// ([`Heap::retention_for`]). Called before `main` by the C entry points'
/// constructor (`cabi::prepare_glibc`): in a process whose `malloc` is
/// PyMalloc, the requests above 4 KiB go to glibc, and a program that
/// alternates between phases of small objects and phases of large buffers
/// (CPython running a script: lists, dicts and strings, then their tables
/// and buffers) kept the arenas one phase had emptied resident while the
/// next one grew glibc's side, for 200 ms each time. CPython's own pymalloc
/// returns an empty arena at once; mimalloc delays its purges by 10 ms.
/// The Rust shapes the long retention is for (a working set freed and
/// built again, `alloc_swing_retention`) do not come through `malloc`
/// (with the `override` feature, a Rust program's own allocations follow
/// the brief rule too: the process has one allocator).
#[cfg_attr(loom, allow(dead_code))] // called by the C entry points, absent under loom
pub(crate) fn retain_briefly() {
    // Relaxed: a flag set once before `main`, read as a policy hint by
    // retention decisions; either value is safe at any time.
    #[cfg(not(loom))]
    BRIEF_RETENTION.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Whether [`retain_briefly`] has been called.
pub(crate) fn brief_retention() -> bool {
    // Relaxed: see `retain_briefly`.
    #[cfg(not(loom))]
    return BRIEF_RETENTION.load(core::sync::atomic::Ordering::Relaxed);
    #[cfg(loom)]
    false
}

/// Whether the process keeps more empty arena memory than its cap: 64
/// MiB, or an eighth of the arena memory in use if that is more. Below
/// the cap, retired arenas are kept for [`RETAIN_MS`]; above it, for
/// [`OVER_CAP_MS`] only.
pub(crate) fn over_retained_cap(registry: &Registry) -> bool {
    // Relaxed: two counters read as a policy hint; a stale pair only moves
    // one arena's return to the next pass.
    let mapped = registry.arena_bytes.load(Ordering::Relaxed);
    let retained = registry.retained_bytes.load(Ordering::Relaxed);
    retained > RETAINED_FLOOR.max(mapped.saturating_sub(retained) / 8)
}

/// How long retired arenas may stay now: [`RETAIN_MS`], or [`OVER_CAP_MS`]
/// while the process retains more than its cap; [`C_RETAIN_MS`] after
/// [`retain_briefly`].
pub(crate) fn retention_ms(registry: &Registry) -> u64 {
    if brief_retention() {
        C_RETAIN_MS
    } else if over_retained_cap(registry) {
        OVER_CAP_MS
    } else {
        RETAIN_MS
    }
}

impl Heap {
    /// An arena became empty: retire it, or doom it (see the module docs).
    ///
    /// # Safety
    /// The lock must be held; `arena` must be an empty arena of this heap
    /// on no list but the list of all arenas.
    pub(super) unsafe fn arena_emptied(&self, locked: &Locked<'_>, arena: *mut Arena) {
        // A span's half is retired even now: the `purge_retired(.., 0)`
        // that ends every return of everything takes it, with its buddy
        // if that empties too (see `span.rs`).
        // SAFETY: `arena` is a live arena of this heap (this function's
        // `# Safety`); its header is written under the lock, held.
        if locked.returns_everything() && !unsafe { (*arena).huge.get() } {
            // SAFETY: `arena` is an arena of this heap on the list of all arenas (this
            // function's `# Safety`), which is what `remove` requires; `locked` holds
            // the lock under which that list is written.
            unsafe { self.arenas.remove(arena) };
            locked.doom(arena);
            return;
        }
        let registry = self.registry();
        registry
            .retained_bytes
            .fetch_add(ARENA_SIZE, Ordering::Relaxed);
        let now = os::now_ms();
        // SAFETY: empty, ours, on no usable list; the lock is held.
        unsafe { self.arenas.push_retired(arena, now) };
        self.purge_retired(locked, now, retention_ms(registry));
    }

    /// Takes the oldest retired arena (the closest to expiring) back into
    /// use, or null.
    pub(super) fn unretire(&self, _locked: &Locked<'_>) -> *mut Arena {
        let arena = self.arenas.oldest_retired();
        if !arena.is_null() {
            // SAFETY: a retired arena of ours; the lock is held.
            unsafe { self.arenas.unlink_retired(arena) };
            self.arenas.last_reuse_ms.set(os::now_ms());
            self.registry()
                .retained_bytes
                .fetch_sub(ARENA_SIZE, Ordering::Relaxed);
        }
        arena
    }

    /// Dooms the retired arenas, oldest first, that have been retired for
    /// at least `age_ms` by `now` (all of them for an age of 0). An arena
    /// counts as retired from when it emptied or from when the heap last
    /// took a retired arena back into use, whichever is later: a heap whose
    /// demand has come back (a program that builds its working set again
    /// after a pause) reuses its arenas warm rather than have them unmapped
    /// under it one by one.
    ///
    /// A heap whose working set swings (it took a retired arena back into
    /// use within the last [`RETAIN_MS`]) keeps its arenas for `RETAIN_MS`
    /// even when the process is over the cap (`age_ms` of
    /// [`OVER_CAP_MS`]): see [`Heap::retention_for`].
    pub(super) fn purge_retired(&self, locked: &Locked<'_>, now: u64, age_ms: u64) {
        if age_ms > 0 && locked.in_owner_capacity() && self.in_wake_grace(now) {
            return;
        }
        let age_ms = self.retention_for(now, age_ms);
        if age_ms > 0 {
            self.decommit_idle_slots(locked, now, DECOMMIT_MS);
        }
        loop {
            let oldest = self.arenas.oldest_retired();
            if oldest.is_null() {
                return;
            }
            // SAFETY: retired arenas are live and ours; the lock is held.
            let retired_at =
                unsafe { (*oldest).retired_at.get() }.max(self.arenas.last_reuse_ms.get());
            if age_ms > 0 && now.saturating_sub(retired_at) < age_ms {
                return;
            }
            // SAFETY: `oldest` is `oldest_retired`, so on the retired list
            // (`doom_retired`'s requirement); `locked` holds the lock under
            // which the lists are written. (A span's half whose buddy is in
            // use is kept, with its retention restarted: see `span.rs`.)
            unsafe { self.doom_retired(locked, oldest, now, age_ms) };
        }
    }

    /// Decommits the pool slots that have been free for at least `age_ms`
    /// by `now` (all of them for an `age_ms` of 0) in the arenas this heap
    /// keeps in use; with an age, at most once per `age_ms / 2` (it walks
    /// the arenas with free slots). Returns the slots decommitted.
    ///
    /// An arena goes back to the OS only once its last pool does; until
    /// then, the slots its pools gave back stayed resident, for the next
    /// pool of any class to reuse warm. In a C program whose classes'
    /// counts move up and down (threads that come and go, blocks handed
    /// between threads) those slots are much of the gap to glibc's peak
    /// resident memory. Decommitting a slot as soon as it goes back costs
    /// a system call and its page faults on every return and retake of a
    /// pool (`threadchurn` of bench/c took ten times as long); a slot that
    /// has stayed free for [`DECOMMIT_MS`] (the age the heap's own checks
    /// and the passes ask for) is not part of a pool churn. Retired (empty)
    /// arenas are left to their own retention (`purge_retired`): they are
    /// what the FIFO shape takes back warm. `release_free_memory()` asks
    /// for every free slot (an age of 0); parking a heap does not (a thread
    /// that exits is often replaced at once by one that adopts its heap),
    /// the passes that visit it later do.
    pub(super) fn decommit_idle_slots(&self, _locked: &Locked<'_>, now: u64, age_ms: u64) -> u32 {
        if age_ms > 0 {
            let last = self.arenas.last_decommit_ms.get();
            if last != 0 && now.saturating_sub(last) < age_ms / 2 {
                return 0;
            }
            self.arenas.last_decommit_ms.set(now.max(1));
        }
        let mut decommitted = 0;
        let mut arena = self.arenas.usable_head();
        while !arena.is_null() {
            // SAFETY: arenas on the usable list are live and ours, and
            // their headers are written under the lock, which we hold
            // (`_locked`).
            let a = unsafe { &*arena };
            // SAFETY: `a` is an arena of this heap, whose lock we hold
            // (`_locked`): what `decommit_free_slots` requires.
            decommitted += unsafe { a.decommit_free_slots(now, age_ms) };
            arena = a.next.get();
        }
        decommitted
    }

    /// The retention that applies to this heap's retired arenas when
    /// `age_ms` is asked for: `age_ms`, but [`RETAIN_MS`] instead of the
    /// shorter over-cap grace while the heap is *swinging*, i.e. has taken
    /// a retired arena back into use within the last `RETAIN_MS`.
    ///
    /// The cap is for a spike freed once (a thread that frees a working set
    /// far above what it keeps in use should give the excess back soon).
    /// A heap that frees a working set and builds it again straight away
    /// (the FIFO benchmark: 264 MB freed and reallocated per round) is not
    /// that: with the 50 ms grace, every round whose free phase took more
    /// than 50 ms of wall time (a loaded machine, or a slower program)
    /// unmapped the arenas it emptied first, and the next round faulted
    /// them in again (`peer_shapes pymem fifo 10` at load 11: 398,000 to
    /// 454,000 page faults, six rounds' worth, against 69,400 with this
    /// rule, the first round's). Its retention stays bounded in time: at
    /// most `RETAIN_MS` past its last reuse.
    pub(super) fn retention_for(&self, now: u64, age_ms: u64) -> u64 {
        if brief_retention() {
            return age_ms;
        }
        let reuse = self.arenas.last_reuse_ms.get();
        let swinging = reuse != 0 && now.saturating_sub(reuse) < RETAIN_MS;
        if age_ms > 0 && age_ms < RETAIN_MS && swinging {
            RETAIN_MS
        } else {
            age_ms
        }
    }

    /// Whether the heap is in its *wake grace*, in which its own checks
    /// (ticks, emptied arenas, the passes it runs) leave its retired
    /// arenas alone however long ago they retired. Called in owner
    /// capacity, with the lock held, at each such check.
    ///
    /// A heap whose owner has run no check for [`RETAIN_MS`] or more was
    /// idle; its first check after that starts a grace that ends after
    /// [`WAKE_GRACE_OPS`] more operations or `RETAIN_MS`, whichever comes
    /// first. Without it, a program that builds its working set again
    /// after a pause (a burst of work between other work: the FIFO rounds
    /// of a harness that runs other allocators in between) had its retired
    /// arenas unmapped by the first tick or pass of the new burst, which
    /// comes before the heap needs an arena (the pools kept per class serve
    /// the first few thousand allocations), and then mapped and faulted
    /// the same memory in again: 65,790 page faults per 264 MB round
    /// (`bench/examples/fifo_interleaved.rs`). Within the grace, a heap
    /// whose demand is back takes a retired arena into use, and from then
    /// the swing rule keeps the others ([`Heap::retention_for`]); a heap
    /// that only does light work returns them once the grace is over
    /// (tests/alloc_rss_idle.rs). Other threads' passes and the background
    /// thread ignore the grace (a guest looks at wall time only), so an
    /// idle heap's memory still goes back through them.
    fn in_wake_grace(&self, now: u64) -> bool {
        let last = self.arenas.owner_check_ms.replace(now);
        let ops = self.ops();
        if last != 0 && now.saturating_sub(last) >= RETAIN_MS {
            self.arenas
                .grace_end
                .set((ops.wrapping_add(WAKE_GRACE_OPS), now + RETAIN_MS));
        }
        let (end_ops, end_ms) = self.arenas.grace_end.get();
        // Wrapping comparison: the counters only grow, and `end_ops` is at
        // most WAKE_GRACE_OPS ahead of them.
        let ops_left = end_ops.wrapping_sub(ops) as isize > 0;
        ops_left && now < end_ms
    }

    /// Returns everything this heap can spare: delivers its outbox, takes
    /// back remote frees, gives back every empty pool (the one kept per
    /// class included) and returns every empty arena.
    ///
    /// # Safety
    /// Owner capacity with the lock held (`locked` is this heap's).
    pub(crate) unsafe fn trim(&self, locked: &Locked<'_>) {
        debug_assert!(locked.in_owner_capacity());
        locked.return_everything();
        self.outbox.flush_locked(locked);
        self.collect_pending(locked);
        // SAFETY: owner capacity, lock held, returning everything.
        unsafe { self.release_empty_pools(locked) };
        self.purge_retired(locked, 0, 0);
        // Whoever runs the heap next (a thread adopting it once parked)
        // starts from a small heap; `pass` notes a release by the heap's
        // own thread after this.
        self.arenas.reset_growth();
    }

    /// Notes whether the heap's thread did anything since a lock holder
    /// last looked; returns true if it has been idle for `RETAIN_MS`.
    pub(super) fn note_activity(&self, _locked: &Locked<'_>, now: u64) -> bool {
        let ops = self.ops();
        if ops != self.idle_ops.get() {
            self.idle_ops.set(ops);
            self.idle_since_ms.set(now);
        }
        now.saturating_sub(self.idle_since_ms.get()) >= RETAIN_MS
    }
}

/// What a [`pass`] returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PassKind {
    /// Everything, now, whatever its age (`release_free_memory()`).
    Everything,
    /// Empty arenas retired for at least this many milliseconds (the
    /// background thread, ticks).
    OlderThan(u64),
}

/// The process-wide pass: every heap's free memory goes back, as far as
/// `kind` says. `me` is the calling thread's heap, if it has one: visited
/// in owner capacity, last (so that what others deliver into it on the way
/// is collected too). Returns the bytes returned to the OS.
///
/// 1. Outboxes: the caller's own is delivered under its lock; the others'
///    by visiting each heap (as keeper, or as guest under a
///    [`FlushTicket`] if any live thread's outbox may hold blocks).
/// 2. Every other heap: parked ones are trimmed by their keeper; live ones
///    have their reclaimable pools taken and their retired arenas purged.
/// 3. The caller's heap: trimmed, or collected and purged.
///
/// # Safety
/// `me`, if not `None`, must be the calling thread's own heap, in owner
/// capacity (its owner, or its keeper): `pass` runs its owner paths
/// (delivering its outbox, trimming its pools) without further checks.
pub(crate) unsafe fn pass(registry: &Registry, me: Option<&Heap>, kind: PassKind) -> usize {
    let now = os::now_ms();
    let age = match kind {
        PassKind::Everything => 0,
        PassKind::OlderThan(ms) => ms,
    };
    // Free slots of arenas in use: all of them, or those idle for
    // `DECOMMIT_MS` (see `Heap::decommit_idle_slots`).
    let slot_age = if age == 0 { 0 } else { DECOMMIT_MS };
    let mut returned = 0;
    super::large_cache::pass(registry, now, age);
    #[cfg(not(loom))]
    super::large_map::reclaim(now, age);
    let is_me = |heap: &Heap| me.is_some_and(|m| ptr::eq(m, heap));
    if let Some(me) = me {
        // SAFETY: `me` is the calling thread's own heap in owner capacity
        // (see `pass`'s docs; every caller passes its bound heap): what
        // `lock_as_owner` requires.
        if let Some(locked) = unsafe { me.lock_as_owner() } {
            me.outbox.flush_locked(&locked);
            returned += locked.finish();
        }
    }
    let live_outboxes = registry
        .heaps()
        .any(|heap| !is_me(heap) && heap.outbox.may_hold_blocks());
    let ticket = if live_outboxes {
        FlushTicket::issue(registry)
    } else {
        None
    };
    for heap in registry.heaps().filter(|heap| !is_me(heap)) {
        let Some(locked) = heap.visit() else { continue };
        match (locked.capacity(), &ticket) {
            (Capacity::Guest, Some(ticket)) => {
                heap.outbox.flush_as_guest(&locked, ticket);
            }
            (Capacity::Guest, None) => {}
            _ => heap.outbox.flush_locked(&locked),
        }
        returned += locked.finish();
    }
    drop(ticket);
    for heap in registry.heaps().filter(|heap| !is_me(heap)) {
        let Some(locked) = heap.visit() else { continue };
        if locked.capacity() == Capacity::Keeper {
            // SAFETY: keeper capacity with the lock held.
            unsafe { heap.trim(&locked) };
            heap.decommit_idle_slots(&locked, now, slot_age);
        } else {
            heap.note_activity(&locked, now);
            if kind == PassKind::Everything {
                locked.return_everything();
            }
            heap.reclaim_pending_as_guest(&locked);
            heap.purge_retired(&locked, now, age);
            if kind == PassKind::Everything {
                heap.decommit_idle_slots(&locked, now, 0);
            }
        }
        returned += locked.finish();
    }
    if let Some(me) = me {
        // SAFETY: `me` is the calling thread's own heap, in owner capacity
        // (`lock_as_owner`'s requirement): every caller of `pass` passes its bound
        // heap (`release_free_memory`, `ModelRegistry::release`'s `# Safety`) or,
        // through `pass_if_due`, the heap whose owner-capacity slow path or tick it
        // is running. Not checked: `pass` is a safe fn (see its docs).
        if let Some(locked) = unsafe { me.lock_as_owner() } {
            if kind == PassKind::Everything {
                // The thread releases its memory after having had a large
                // heap: it may well build one again soon (see
                // `span::SPANS_AFTER_RELEASE_MS`).
                let was_large = me.arenas.grew_large();
                // SAFETY: owner capacity with the lock held.
                unsafe { me.trim(&locked) };
                if was_large {
                    me.arenas.large_at_release_ms.set(now.max(1));
                }
                me.decommit_idle_slots(&locked, now, 0);
            } else {
                me.collect_pending(&locked);
                me.purge_retired(&locked, now, age);
            }
            returned += locked.finish();
        }
    }
    returned
}

/// Runs a pass returning arenas retired for [`RETAIN_MS`] (or
/// [`OVER_CAP_MS`], over the cap) if none has run
/// for [`PASS_EVERY_MS`] and no other thread is running one. Called from
/// ticks, with the calling thread's heap.
///
/// # Safety
/// As [`pass`]: `me`, if not `None`, is the calling thread's own heap, in
/// owner capacity.
pub(crate) unsafe fn pass_if_due(registry: &Registry, me: Option<&Heap>) {
    let now = os::now_ms();
    if now < registry.next_pass_ms.load(Ordering::Relaxed) {
        return;
    }
    // Acquire/Release: passes run one at a time (they would only get in
    // each other's way).
    if registry.pass_running.swap(true, Ordering::Acquire) {
        return;
    }
    registry
        .next_pass_ms
        .store(now + PASS_EVERY_MS, Ordering::Relaxed);
    // SAFETY: `me` is the calling thread's heap in owner capacity, or
    // `None` (this function's `# Safety`), which is what `pass` requires.
    unsafe { pass(registry, me, PassKind::OlderThan(retention_ms(registry))) };
    registry.pass_running.store(false, Ordering::Release);
}

#[cfg(not(loom))]
pub use background::purge_in_background;
#[cfg(not(loom))]
pub(crate) use background::{after_fork_in_child, start_from_environment};

/// Whether a background thread has been asked to purge (so memory left
/// empty in a heap nobody works in still goes back within its interval:
/// see `Heap::park`). Always false under loom, which models no such
/// thread.
pub(crate) fn background_requested() -> bool {
    #[cfg(loom)]
    return false;
    #[cfg(not(loom))]
    return background::requested();
}

/// The opt-in background thread (not under loom: it is a real thread).
#[cfg(not(loom))]
mod background {
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{pass, PassKind};
    use crate::alloc::REGISTRY;

    /// The interval asked for, in milliseconds; 0 when stopped.
    static INTERVAL_MS: AtomicU64 = AtomicU64::new(0);
    /// Bumped by every start and stop, and in a child after `fork`: a
    /// thread that sees it change leaves.
    static GENERATION: AtomicUsize = AtomicUsize::new(0);
    /// The thread of the current generation is running.
    static RUNNING: AtomicBool = AtomicBool::new(false);
    /// `PYMEM_PURGE_MS`: not read yet, read and absent, read and present
    /// (then in `ENV_MS`).
    static ENV_STATE: AtomicU8 = AtomicU8::new(ENV_UNREAD);
    static ENV_MS: AtomicU64 = AtomicU64::new(0);
    const ENV_UNREAD: u8 = 0;
    const ENV_ABSENT: u8 = 1;
    const ENV_PRESENT: u8 = 2;
    /// The background thread has been started for `PYMEM_PURGE_MS`.
    static ENV_STARTED: AtomicBool = AtomicBool::new(false);
    /// Serialises [`purge_in_background`]'s calls: 0 when free, else
    /// `fork_generation << 1 | 1` of the caller holding it, so that a
    /// child of `fork` does not wait for a holder that did not survive it
    /// (as the heap lock's word). Without it, a stop and a start racing
    /// could end with an interval set and no thread: the stop cleared
    /// `RUNNING` after the start had found it set and left the purging to
    /// the thread the stop was ending (review finding, by reading).
    static CONTROL: AtomicUsize = AtomicUsize::new(0);

    /// Holds [`CONTROL`] until dropped.
    struct Control;

    impl Control {
        fn take() -> Control {
            // The child's `fork` handler starts a new generation, which
            // frees a word held by a thread the child does not have; a
            // program that never bound a heap has not registered it yet
            // (review finding: such a child waited for ever).
            crate::alloc::thread::set_up_process();
            let tag = crate::alloc::registry::held_tag();
            loop {
                let word = CONTROL.load(Ordering::Relaxed);
                // Free, or held before a `fork` by a thread the child does
                // not have. Acquire: the previous holder's stores to the
                // statics above happen before ours.
                if word != tag
                    && CONTROL
                        .compare_exchange(word, tag, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return Control;
                }
                // Held for a few stores and, at most, a thread's spawn.
                std::thread::yield_now();
            }
        }
    }

    impl Drop for Control {
        fn drop(&mut self) {
            // Release: pairs with the next holder's Acquire.
            CONTROL.store(0, Ordering::Release);
        }
    }

    /// Starts, retunes or stops a background thread that returns every
    /// heap's free memory to the OS at the given interval, as jemalloc's
    /// `background_thread` does: `Some(interval)` starts it (or changes
    /// its interval), `None` stops it (it finishes the pass it may be in).
    ///
    /// Without it, empty memory goes back when the thread that emptied it
    /// next works, when any thread's allocator activity finds it has been
    /// idle for 200 ms, or when [`release_free_memory`] is called. With it,
    /// memory is returned even when every thread has gone quiet: each
    /// round delivers the blocks idle threads freed into other threads'
    /// pools, reclaims pools no block of which is in use any more, and
    /// unmaps arenas that have been empty for one interval.
    ///
    /// The thread is never started from inside an allocation. Setting
    /// `PYMEM_PURGE_MS=<milliseconds>` in the environment does the same as
    /// calling this at start-up: the variable is read once, without
    /// allocating, at the first allocation (or before `main`, whichever
    /// comes first), and the thread is started before `main` (from the
    /// library's constructor) or at the next call of this function,
    /// [`release_free_memory`], [`alloc_stats`](crate::alloc_stats) or
    /// [`heap_map`](crate::heap_map). After `fork`, the child has no
    /// background thread until it asks for one.
    ///
    /// [`release_free_memory`]: crate::release_free_memory
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
    ///
    /// # fn main() {
    /// use std::time::Duration;
    /// pymem::purge_in_background(Some(Duration::from_millis(50)));
    /// let before = pymem::alloc_stats().bytes_returned;
    /// let spike: Vec<Box<[u8; 64]>> = (0..100_000).map(|_| Box::new([0; 64])).collect();
    /// drop(spike);
    /// std::thread::sleep(Duration::from_millis(400));
    /// // The spike's arenas went back without a call.
    /// let stats = pymem::alloc_stats();
    /// assert_eq!(stats.arenas_retired, 0);
    /// assert!(stats.bytes_returned >= before + (5 << 20));
    /// pymem::purge_in_background(None);
    /// # }
    /// ```
    pub fn purge_in_background(interval: Option<Duration>) {
        let ms = match interval {
            Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            None => 0,
        };
        let _control = Control::take();
        let previous = INTERVAL_MS.swap(ms, Ordering::SeqCst);
        if ms == 0 {
            #[cfg(test)]
            std::thread::sleep(Duration::from_millis(
                tests::STOP_PAUSE_MS.load(Ordering::SeqCst),
            ));
            GENERATION.fetch_add(1, Ordering::SeqCst);
            RUNNING.store(false, Ordering::SeqCst);
            return;
        }
        if RUNNING.swap(true, Ordering::SeqCst) && previous == ms {
            // Running with this interval already: nothing to change.
            return;
        }
        // Not running, or running with another interval: a new generation
        // of the thread starts now. A running thread of the old generation
        // sees the generation move at its next step (within a second) and
        // returns without a pass, so a shorter interval takes effect at
        // once instead of after the old one's sleep (an hour, say).
        let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
        let spawned = std::thread::Builder::new()
            .name("pymem-purge".into())
            .spawn(move || run(generation));
        if spawned.is_err() {
            RUNNING.store(false, Ordering::SeqCst);
        }
    }

    fn run(generation: usize) {
        loop {
            let ms = INTERVAL_MS.load(Ordering::SeqCst);
            if ms == 0 || GENERATION.load(Ordering::SeqCst) != generation {
                return;
            }
            // Sleep in steps of at most a second, so a stop or a restart
            // is noticed soon even with a long interval.
            let mut slept = 0;
            while slept < ms {
                let step = (ms - slept).min(1_000);
                std::thread::sleep(Duration::from_millis(step));
                slept += step;
                if GENERATION.load(Ordering::SeqCst) != generation {
                    return;
                }
            }
            // SAFETY: with `me` = `None`, `pass` visits every heap as a
            // keeper or a guest under their locks and requires nothing.
            unsafe { pass(&REGISTRY, None, PassKind::OlderThan(ms)) };
        }
    }

    /// Reads `PYMEM_PURGE_MS` once (without allocating); returns the
    /// interval it asks for, if any.
    pub(crate) fn environment_interval() -> Option<u64> {
        match ENV_STATE.load(Ordering::Acquire) {
            ENV_ABSENT => return None,
            ENV_PRESENT => return Some(ENV_MS.load(Ordering::Relaxed)),
            _ => {}
        }
        // A positive decimal number of milliseconds, nothing else.
        let ms = super::os::with_env(c"PYMEM_PURGE_MS", |value| {
            let digits = value.filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))?;
            let n = digits.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            (n > 0).then_some(n)
        });
        ENV_MS.store(ms.unwrap_or(0), Ordering::Relaxed);
        ENV_STATE.store(
            if ms.is_some() {
                ENV_PRESENT
            } else {
                ENV_ABSENT
            },
            Ordering::Release,
        );
        ms
    }

    /// Starts the background thread if `PYMEM_PURGE_MS` asks for one and
    /// it has not been started for it yet. Never called inside `alloc`.
    pub(crate) fn start_from_environment() {
        if ENV_STARTED.load(Ordering::Relaxed) {
            return;
        }
        if let Some(ms) = environment_interval() {
            if !ENV_STARTED.swap(true, Ordering::SeqCst) {
                purge_in_background(Some(Duration::from_millis(ms)));
            }
        }
    }

    /// Whether a thread has been asked for (an interval set and not
    /// stopped).
    pub(crate) fn requested() -> bool {
        // Relaxed: a policy hint; a stale answer only keeps one parked
        // heap's empty arenas until the next pass, or trims them early.
        INTERVAL_MS.load(Ordering::Relaxed) != 0
    }

    /// In the child after `fork` (single-threaded, from the `atfork`
    /// handler): the parent's background thread did not come along.
    pub(crate) fn after_fork_in_child() {
        GENERATION.fetch_add(1, Ordering::SeqCst);
        INTERVAL_MS.store(0, Ordering::SeqCst);
        RUNNING.store(false, Ordering::SeqCst);
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Barrier;

        /// Widens the window between a stop's two steps, so that the
        /// test below lands a start inside it (0: no pause).
        pub(super) static STOP_PAUSE_MS: AtomicU64 = AtomicU64::new(0);

        /// A stop and a start called at once, from two threads: whichever
        /// goes last, an interval that is set has a thread running for it.
        /// (Before `CONTROL`, the start landed between the stop's two steps
        /// and found `RUNNING` still set: "an interval of 3600000 ms with no
        /// thread".)
        #[test]
        fn a_stop_and_a_start_racing_leave_a_thread_for_any_interval() {
            const HOUR: Duration = Duration::from_secs(3600);
            STOP_PAUSE_MS.store(30, Ordering::SeqCst);
            for _ in 0..3 {
                purge_in_background(Some(HOUR));
                let barrier = Barrier::new(2);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        barrier.wait();
                        purge_in_background(None);
                    });
                    s.spawn(|| {
                        barrier.wait();
                        // Inside the stop's pause.
                        std::thread::sleep(Duration::from_millis(10));
                        purge_in_background(Some(HOUR));
                    });
                });
                let _control = Control::take();
                let interval = INTERVAL_MS.load(Ordering::SeqCst);
                assert!(
                    interval == 0 || RUNNING.load(Ordering::SeqCst),
                    "an interval of {interval} ms with no thread"
                );
            }
            STOP_PAUSE_MS.store(0, Ordering::SeqCst);
            purge_in_background(None);
        }
    }
}

#[cfg(not(loom))]
pub(crate) use background::environment_interval;
