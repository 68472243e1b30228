//! The per-thread collector [`State`]: one list of tracked objects ordered
//! by age, the generations being contiguous ranges of it, with the
//! counts, thresholds and flags of CPython's `GCState`.
//!
//! ```text
//!  list: [ permanent (frozen) | generation 2 | generation 1 | generation 0 ]
//!        0                    start[0]       start[1]       start[2]       len
//! ```
//!
//! `Gc::new` pushes at the end (generation 0) and writes the slot index
//! into the object's gc word; a refcount free nulls its slot (a *hole*) in
//! O(1); promoting a generation, `freeze` and `unfreeze` move a boundary
//! in O(1). Holes are squeezed out by each collection of the range it
//! covers, and by the whole list when it would otherwise have to grow
//! while at least half of it is holes, so the list stays within twice
//! the live count plus the growth slack.
//!
//! Only this file reads or writes the fields; the collector, the
//! trashcan and the `gc` module functions go through the methods.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::collector::Outcome;
use super::header::{Counts, GcHeader, ObjPtr, CLEAN, LENT_MUT, SHIFT, UNTRACKED};
use super::ptr_vec::PtrVec;
use super::slot_bits::SlotBits;
use super::trashcan::LIMIT;
use super::GenStats;

/// Every dirty bit of generations 0..=2 (see the skip rule in
/// `collector`).
pub(crate) const ALL_DIRTY: u8 = 0b111;

/// Full collections that scan their whole range after one whose closure
/// covered most of it (see [`State::closure_size`]), at first and at most.
pub(crate) const RANGE_SCANS: u8 = 3;
pub(crate) const MAX_RANGE_SCANS: u8 = 48;

/// Range scans of a generation made without parent links after links
/// failed to settle one (see [`State::links_pay`]).
pub(crate) const LINKS_REST: u8 = 8;

/// [`LIMIT`] as the countdown's type (it is 64).
const TRASHCAN_LIMIT: i32 = LIMIT as i32;

/// Most collections run at thread exit (see [`State::tear_down`]).
pub(crate) const TEARDOWN_ROUNDS: usize = 16;

/// Everything one thread's collector knows.
///
/// # Invariants
///
/// Outside the phases of a collection (`in_phases` false):
/// * `start[0] <= start[1] <= start[2] <= list.len()`;
/// * every non-null list entry `i` is a live tracked object, not
///   `UNTRACKED`, whose gc word holds index `i`; no object is listed
///   twice;
/// * `live` is the number of non-null entries, `frozen` the number of
///   those below `start[0]`;
/// * every tracked object not flagged `UNTRACKED` is listed (at the index
///   its gc word holds): the refcount free takes that index on trust
///   (the garbage a rebuild takes out of the list is flagged by
///   `handle_weakrefs` before any other code runs; the teardown flags
///   what is left);
/// * `room <= cap - len` (the fast path of `Gc::new` pushes without
///   looking at the capacity), and while an automatic collection can
///   happen (enabled, threshold 0 non-zero, collector alive), `room` is 0
///   or `count[0] + room <= threshold[0] + 1`, so that the fast path never
///   carries count 0 past the point where CPython collects (the slow
///   path then collects, or recomputes `room`: [`reset_room`]);
/// * the `dirty` bit of generation `g` is set if an object of `g` has had
///   its strong count decremented to a non-zero value since `g` was last
///   examined (the skip rule relies on it; extra bits are allowed); in
///   particular, if an object of `g` is dirty (not flagged `CLEAN`);
/// * a dirty object has had its strong count decremented to a non-zero
///   value since the last full collection that examined it (young
///   collections leave the flag), and if it is listed at `i`,
///   `dirty_slots` bit `i` is set (extra bits are allowed: a seed is a
///   listed dirty object whose bit is set). Unless `range_scan_next` is
///   set, every garbage object is reachable from such a seed (see
///   `collector`, "Full collections").
///
/// [`reset_room`]: Self::reset_room
///
/// During the phases entries are only appended within the capacity (by
/// a `trace` that breaks its contract), never moved, and the buffer never
/// grows, so indices and the buffer stay valid until the rebuild.
/// [`assert_valid`](Self::assert_valid) checks the list invariants in
/// debug builds after collections.
///
/// `#[repr(C)]` with the fields `Gc::new` and the refcount free touch
/// first (the room, the list's ptr/len/cap, the counts, the generation
/// boundaries, the trashcan depth and the state flags), so that the hot
/// paths read one or two adjacent cache lines.
#[repr(C, align(64))]
pub(crate) struct State {
    /// Tracked allocations `Gc::new` may make before its slow path runs:
    /// one countdown for the list's capacity and threshold 0 (see the
    /// invariants).
    room: Cell<usize>,
    /// Tracked objects, oldest first (see the module docs).
    list: PtrVec,
    /// CPython's `generations[i].count` for generations 1 and 2; entry 0
    /// is the *base* of count 0, which is `live - base` (wrapping: see
    /// [`count0`](Self::count0)). Count 0 rises and falls with the live
    /// count in `Gc::new` and the refcount free, so those paths update
    /// `live` alone, and the base only when a free finds count 0 at 0
    /// (CPython lowers it only while it is positive).
    count: [Cell<usize>; 3],
    threshold: [Cell<usize>; 3],
    /// Start of generation 2, 1 and 0 in `list`; `[0, start[0])` is the
    /// permanent generation.
    start: [Cell<usize>; 3],
    /// Live (non-hole) entries of the list, and of the permanent
    /// generation.
    live: Cell<usize>,
    frozen: Cell<usize>,
    /// Trashcan frames left before drops are deferred: `LIMIT` minus
    /// the nesting depth (see `trashcan`). A countdown, so that entering
    /// a frame is one `sub` of memory and a branch on its sign.
    budget: Cell<i32>,
    /// `budget` as it was when the phases began: while they run, `budget`
    /// is 0, so that every drop is deferred (see
    /// [`enter_phases`](Self::enter_phases)).
    budget_before_phases: Cell<i32>,
    enabled: Cell<bool>,
    /// A collection is running (re-entrant collections return 0).
    collecting: Cell<bool>,
    /// Between the start of a collection and its rebuild: the list must
    /// not move.
    in_phases: Cell<bool>,
    /// The thread's collector has been torn down (thread exit).
    dead: Cell<bool>,
    /// Generation i may hold new cyclic garbage (see `collector`).
    dirty: Cell<u8>,
    /// An object became dirty during the phases.
    dirty_in_phases: Cell<bool>,
    /// One bit per list slot: set where a dirty object is listed (see the
    /// invariants).
    dirty_slots: SlotBits,
    /// The next full collection must examine its whole range, not only
    /// what is reachable from the dirty objects (after `unfreeze`, a
    /// conservative or abandoned full collection).
    range_scan_next: Cell<bool>,
    /// Full collections left that scan their whole range because the
    /// closure of the seeds covered most of it last time (a whole-range
    /// scan then costs less than discovering the closure).
    range_scans_left: Cell<u8>,
    /// How many whole-range scans the next large closure buys: doubles
    /// (up to [`MAX_RANGE_SCANS`]) each time the closure is large again,
    /// back to [`RANGE_SCANS`] when it is not.
    range_scans_next: Cell<u8>,
    /// The trashcan's deferred objects.
    deferred: PtrVec,
    /// CPython's long-lived heuristic. Objects promoted by a collection
    /// the skip rule proved empty are counted with the holes of their
    /// range (an over-estimate that only makes full collections, which
    /// are then usually skipped too, a little more frequent).
    long_lived_total: Cell<usize>,
    long_lived_pending: Cell<usize>,
    stats: [Cell<GenStats>; 3],
    /// Collections per generation that the skip rule proved empty.
    skipped: [Cell<usize>; 3],
    /// The skip rule is in force (tests turn it off to check it).
    skip_enabled: Cell<bool>,
    /// Bit `g`: the next range scan of generation `g` follows the parent
    /// links, if `links_rest[g]` is 0 (see [`State::links_pay`]).
    links: Cell<u8>,
    /// Range scans of generation `g` left to make without links after
    /// links did not settle one.
    links_rest: [Cell<u8>; 3],
}

const GS0: GenStats = GenStats {
    collections: 0,
    collected: 0,
    uncollectable: 0,
};

thread_local! {
    static STATE: State = const {
        State {
            room: Cell::new(0),
            list: PtrVec::new(),
            count: [Cell::new(0), Cell::new(0), Cell::new(0)],
            threshold: [Cell::new(700), Cell::new(10), Cell::new(10)],
            start: [Cell::new(0), Cell::new(0), Cell::new(0)],
            live: Cell::new(0),
            frozen: Cell::new(0),
            budget: Cell::new(TRASHCAN_LIMIT),
            budget_before_phases: Cell::new(TRASHCAN_LIMIT),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            in_phases: Cell::new(false),
            dead: Cell::new(false),
            dirty: Cell::new(0),
            dirty_in_phases: Cell::new(false),
            dirty_slots: SlotBits::new(),
            range_scan_next: Cell::new(false),
            range_scans_left: Cell::new(0),
            range_scans_next: Cell::new(RANGE_SCANS),
            deferred: PtrVec::new(),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            stats: [Cell::new(GS0), Cell::new(GS0), Cell::new(GS0)],
            skipped: [Cell::new(0), Cell::new(0), Cell::new(0)],
            skip_enabled: Cell::new(true),
            links: Cell::new(ALL_DIRTY),
            links_rest: [Cell::new(0), Cell::new(0), Cell::new(0)],
        }
    };
    static OWNER: Owner = const { Owner };
}

/// Runs the collector's exit collections from its thread-local
/// destructor, while the tables its callbacks use are still alive (see
/// [`register_owner`]).
struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        EXITING.with(|e| e.set(true));
        let _ = STATE.try_with(|st| {
            if EXIT_ARMED.with(Cell::get) {
                st.collect_at_exit();
            } else {
                st.tear_down();
            }
        });
    }
}

thread_local! {
    /// The thread armed [`EXIT`]: its teardown runs there, after every
    /// thread-local destructor.
    static EXIT_ARMED: Cell<bool> = const { Cell::new(false) };
    /// [`Owner`]'s destructor has begun: the thread is exiting, and what
    /// runs user code from now on runs inside thread-exit destructors.
    static EXITING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the thread is exiting (see `EXITING`): a panic of user code
/// must then be contained, not resumed
/// (`weak_callbacks::resume_unless_unwinding`).
pub(crate) fn exiting() -> bool {
    EXITING.with(Cell::get)
}

/// Tears the thread's collector down once every thread-local destructor
/// has run (see `exit_key`): a thread-local that was set up before the
/// thread's first `Gc` is destroyed after [`Owner`], and a cycle it held
/// becomes garbage only then.
#[cfg(unix)]
static EXIT: crate::exit_key::ExitKey = crate::exit_key::ExitKey::new(on_thread_exit);

#[cfg(unix)]
extern "C" fn on_thread_exit(_value: *mut libc::c_void) {
    let _ = STATE.try_with(|st| st.tear_down());
}

/// Registers the exit collections and the teardown (once per thread;
/// later calls are no-ops).
///
/// Thread-local destructors run in the reverse order of their
/// registration, so the thread-locals the exit collections use (saved
/// garbage, callbacks and the kept work arrays) are touched first: they
/// are destroyed after [`Owner`]. (The weak callbacks' table has no
/// destructor: the teardown empties it.) The teardown itself runs from a `pthread`
/// key's destructor, after all of them ([`EXIT`]); where there is no such
/// key, [`Owner`] tears down.
fn register_owner() {
    super::saved_garbage::keep_through_teardown();
    super::callbacks::keep_through_teardown();
    super::collector::keep_through_teardown();
    // May fail once the thread's thread-local destructors have begun;
    // the key still runs the teardown then.
    let _ = OWNER.try_with(|_| ());
    #[cfg(unix)]
    if !EXIT_ARMED.with(Cell::get)
        && EXIT.arm(core::ptr::NonNull::<libc::c_void>::dangling().as_ptr())
    {
        EXIT_ARMED.with(|a| a.set(true));
    }
}

/// This thread's state.
///
/// `STATE` is `const`-initialised and has no destructor, so it is a plain
/// thread-local static: no lazy-init check, no registration, never torn
/// down; its address is valid for the whole life of the thread. Taking
/// the address through a tiny closure lets LLVM inline `LocalKey::with`
/// into a single `%fs`-relative address computation on every call site.
#[inline(always)]
pub(crate) fn state() -> &'static State {
    let p: *const State = STATE.with(|s| s as *const State);
    // SAFETY: `STATE` is `const`-initialised without a destructor, so the
    // thread-local lives (and is never dropped)
    // for the whole thread, and `State` is `!Sync` (its `Cell`s), so the
    // reference cannot leave this thread.
    unsafe { &*p }
}

/// Runs `f` on this thread's state.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&State) -> R) -> R {
    f(state())
}

/// Reads `obj`'s strong count.
#[inline(always)]
pub(crate) fn strong(obj: ObjPtr) -> &'static Cell<usize> {
    // SAFETY: callers pass live objects; the 'static is a local fiction
    // never held across a free.
    unsafe { &(*obj.cast::<Counts>()).strong }
}

// ---------------------------------------------------------------------------
// settings and statistics (the `gc` module functions)

impl State {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.get()
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.set(on);
        self.reset_room();
    }

    pub(crate) fn thresholds(&self) -> (usize, usize, usize) {
        let t = &self.threshold;
        (t[0].get(), t[1].get(), t[2].get())
    }

    pub(crate) fn set_thresholds(&self, t0: usize, t1: usize, t2: usize) {
        self.threshold[0].set(t0);
        self.threshold[1].set(t1);
        self.threshold[2].set(t2);
        self.reset_room();
    }

    /// CPython's `gc.get_count()`.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let c = &self.count;
        (self.count0(), c[1].get(), c[2].get())
    }

    /// Count 0: tracked allocations minus deallocations since the last
    /// collection (CPython's `generations[0].count`), from the live count
    /// and its base (see `count`).
    #[inline(always)]
    fn count0(&self) -> usize {
        self.live.get().wrapping_sub(self.count[0].get())
    }

    /// Sets count 0 to `c` (moves its base).
    #[inline(always)]
    fn set_count0(&self, c: usize) {
        self.count[0].set(self.live.get().wrapping_sub(c))
    }

    /// Sets the live count without moving count 0: for what is neither an
    /// allocation nor a free in CPython's sense (a resurrection, garbage
    /// taken out of the list, the teardown).
    fn set_live_keeping_count0(&self, live: usize) {
        let c = self.count0();
        self.live.set(live);
        self.set_count0(c);
    }

    /// CPython's `generations[g].count`.
    #[inline(always)]
    fn gen_count(&self, g: usize) -> usize {
        if g == 0 {
            self.count0()
        } else {
            self.count[g].get()
        }
    }

    /// A snapshot of the statistics.
    pub(crate) fn stats(&self) -> [GenStats; 3] {
        [
            self.stats[0].get(),
            self.stats[1].get(),
            self.stats[2].get(),
        ]
    }

    pub(crate) fn skipped(&self) -> [usize; 3] {
        [
            self.skipped[0].get(),
            self.skipped[1].get(),
            self.skipped[2].get(),
        ]
    }

    /// Number of live tracked objects outside the permanent generation.
    pub(crate) fn tracked(&self) -> usize {
        self.live.get() - self.frozen.get()
    }

    /// Number of objects in the permanent generation.
    pub(crate) fn frozen_count(&self) -> usize {
        self.frozen.get()
    }

    /// The list of tracked objects (holes are null).
    #[inline(always)]
    pub(crate) fn list(&self) -> &PtrVec {
        &self.list
    }

    /// `[start[0], start[1], start[2], len]`: the generation boundaries.
    pub(crate) fn boundaries(&self) -> [usize; 4] {
        [
            self.start[0].get(),
            self.start[1].get(),
            self.start[2].get(),
            self.list.len(),
        ]
    }

    /// Index where generation `g`'s range (with the younger ones) begins.
    #[inline]
    pub(crate) fn range_start(&self, g: usize) -> usize {
        self.start[2 - g].get()
    }

    /// The phases of a collection are running (the list must not move,
    /// and nothing may look at the gc words' indices but the collector).
    #[inline(always)]
    pub(crate) fn in_phases(&self) -> bool {
        self.in_phases.get()
    }

    /// Turns the skip rule off or on (tests).
    #[cfg(test)]
    pub(crate) fn set_skip_enabled(&self, on: bool) {
        self.skip_enabled.set(on)
    }

    /// `(long_lived_total, long_lived_pending)` (tests).
    #[cfg(test)]
    pub(crate) fn long_lived(&self) -> (usize, usize) {
        (self.long_lived_total.get(), self.long_lived_pending.get())
    }

    /// The dirty mask (tests).
    #[cfg(test)]
    pub(crate) fn dirty_mask(&self) -> u8 {
        self.dirty.get()
    }
}

// ---------------------------------------------------------------------------
// the trashcan's fields

impl State {
    #[inline(always)]
    pub(crate) fn trashcan_depth(&self) -> u32 {
        (TRASHCAN_LIMIT - self.budget.get()) as u32
    }

    #[inline(always)]
    pub(crate) fn set_trashcan_depth(&self, d: u32) {
        self.budget.set(TRASHCAN_LIMIT - d as i32)
    }

    /// Enters a trashcan frame (the depth rises by one), or returns
    /// `false` with nothing changed if the depth has reached the limit.
    /// The decrement comes before the test so that LLVM folds the load,
    /// the decrement, the store and the test into one `sub` of memory
    /// (issue 9, eighth round).
    #[inline(always)]
    pub(crate) fn trashcan_enter(&self) -> bool {
        let b = self.budget.get() - 1;
        self.budget.set(b);
        if b < 0 {
            self.trashcan_refuse();
            return false;
        }
        true
    }

    /// Undoes the decrement of a [`trashcan_enter`] that found the limit
    /// reached. Out of line: inlined, LLVM keeps the old value in a
    /// register to store it back, which undoes the fold.
    ///
    /// [`trashcan_enter`]: Self::trashcan_enter
    #[cold]
    #[inline(never)]
    fn trashcan_refuse(&self) {
        self.budget.set(self.budget.get() + 1)
    }

    /// Leaves a frame [`trashcan_enter`](Self::trashcan_enter) entered.
    #[inline(always)]
    pub(crate) fn trashcan_leave(&self) {
        // A volatile load: when no nested frame can have run in between
        // (a value whose drop reached no other object), LLVM would
        // otherwise store back the value `trashcan_enter` loaded, and to
        // keep it in a register it gives up the fold of
        // `trashcan_enter`'s decrement (3 instructions more per frame
        // than the increment of memory this costs).
        // SAFETY: the pointer is the `Cell`'s own (aligned, initialised,
        // in this thread's live `State`), and `State` is `!Sync`, so no
        // other thread writes it.
        let b = unsafe { self.budget.as_ptr().read_volatile() };
        self.budget.set(b + 1)
    }

    /// Objects whose drop the trashcan deferred.
    #[inline(always)]
    pub(crate) fn deferred(&self) -> &PtrVec {
        &self.deferred
    }
}

// ---------------------------------------------------------------------------
// tracking: the hot paths of `Gc::new` and the refcount free

impl State {
    /// Runs CPython's automatic collection check, then tracks `obj` (a
    /// fresh allocation) in generation 0, clean.
    ///
    /// The fast path (room left: no collection due, no growth needed) is
    /// a handful of instructions inlined into `Gc::new`, one countdown
    /// instead of the count, threshold, length and capacity; everything
    /// else is in [`track_slow`](Self::track_slow). The object's gc word
    /// need not be written yet (`Gc::new` leaves it to this): the fast
    /// path writes it once (the index), the slow path writes `UNTRACKED`
    /// before anything else, so that a handle dropped as an automatic
    /// collection's panic unwinds finds no index (one store fewer per
    /// tracked `Gc::new`: issue 9, fifth round).
    ///
    /// # Safety
    /// `obj` is a fresh tracked object (its header written by
    /// `allocate_with`, with or without a gc word), not listed, its value
    /// initialised.
    #[inline(always)]
    pub(crate) unsafe fn track_fresh(&self, obj: ObjPtr) {
        // SAFETY: tracked, so a header precedes the counts; the reference
        // does not read the unwritten gc word (a reference's validity does
        // not depend on the memory behind it, t-opsem's decision in
        // rust-lang/unsafe-code-guidelines#414), and every path below
        // writes the word (through its raw pointer: `Cell::set` would
        // read the old, unwritten value) before anything reads it.
        let h = unsafe { GcHeader::of(obj) };
        // The countdown is decremented before its test, so that the
        // decrement, its store and the test are one `sub` of memory and
        // a branch on its borrow (issue 9, eighth round); from 0 it wraps
        // to `usize::MAX`, which the slow path puts back to 0 before
        // anything else.
        let room = self.room.get();
        self.room.set(room.wrapping_sub(1));
        if room == 0 {
            self.room.set(0);
            // SAFETY: the word is in the live header, aligned, and no
            // reference to its contents exists (only to the `Cell`).
            unsafe { h.gc.as_ptr().write(UNTRACKED) };
            return self.track_slow(obj, h);
        }
        let len = self.list.len();
        // SAFETY: room <= cap - len (the invariant), and room > 0.
        unsafe { self.list.push_within_cap(obj) };
        // SAFETY: as for `UNTRACKED` above.
        unsafe { h.gc.as_ptr().write((len << SHIFT) | CLEAN) };
        // Count 0 rises with it (see `count`).
        self.live.set(self.live.get() + 1);
    }

    /// `track_fresh` when the room ran out: a collection may
    /// be due, or the list full.
    #[cold]
    #[inline(never)]
    fn track_slow(&self, obj: ObjPtr, h: &GcHeader) {
        if self.count0() > self.threshold[0].get() {
            self.collect_automatic();
        }
        self.track(obj, h);
        self.reset_room();
    }

    /// Recomputes `room` (see the invariants): what the list holds
    /// without growing, and, while an automatic collection can happen,
    /// no more than brings count 0 past threshold 0. Called wherever the
    /// list's length or capacity, count 0 or the settings change other
    /// than by the fast path (a smaller room than this is never wrong:
    /// the slow path recomputes it).
    pub(crate) fn reset_room(&self) {
        let free = self.list.cap() - self.list.len();
        let t0 = self.threshold[0].get();
        let due = if self.enabled.get() && t0 != 0 && !self.dead.get() {
            t0.saturating_add(1).saturating_sub(self.count0())
        } else {
            usize::MAX
        };
        self.room.set(free.min(due));
    }

    /// Adds a freshly allocated tracked object to generation 0, clean.
    ///
    /// The list never grows during the phases of a collection (the
    /// collector reads its range through a pointer taken when they
    /// begin): an object created then (by a `trace` that breaks its
    /// contract) when the list is full stays untracked, as do objects
    /// created after the collector's teardown.
    #[inline(always)]
    fn track(&self, obj: ObjPtr, h: &GcHeader) {
        let len = self.list.len();
        if len == self.list.cap() {
            if self.dead.get() || self.in_phases.get() {
                h.gc.set(UNTRACKED);
                return;
            }
            self.make_room();
        }
        let len = self.list.len();
        // SAFETY: `make_room` left len < cap.
        unsafe { self.list.push_within_cap(obj) };
        h.gc.set((len << SHIFT) | CLEAN);
        // Count 0 rises with it (see `count`).
        self.live.set(self.live.get() + 1);
    }

    /// Tracks again, in generation 0, an object a collection had taken out
    /// of the list (resurrected by a finalizer), dirty (it is examined
    /// again by the next collections).
    pub(crate) fn retrack(&self, obj: ObjPtr, h: &GcHeader) {
        debug_assert!(!self.in_phases.get());
        h.clear_flags(UNTRACKED);
        // Clean for a moment, so that `note_dirty` registers it.
        h.set_flags(CLEAN);
        if self.list.len() == self.list.cap() && self.dead.get() {
            h.set_flags(UNTRACKED);
            return;
        }
        // A loop, and the index read after it: growing allocates, and a
        // global allocator that creates `Gc`s may push to the list (and
        // fill it) meanwhile (see `PtrVec::grow`).
        while self.list.len() == self.list.cap() {
            self.grow_list();
        }
        let i = self.list.len();
        // SAFETY: len < cap, the loop's exit condition.
        unsafe { self.list.push_within_cap(obj) };
        h.set_index(i);
        // A resurrection is no allocation.
        self.set_live_keeping_count0(self.live.get() + 1);
        self.reset_room();
        self.note_dirty(h);
    }

    /// The list is full: compact it if at least half of it is holes, or
    /// grow it. Never called during the phases.
    #[cold]
    #[inline(never)]
    fn make_room(&self) {
        debug_assert!(!self.in_phases.get());
        // A loop: growing allocates, and a global allocator that creates
        // `Gc`s may fill the list again meanwhile (see `PtrVec::grow`).
        while self.list.len() == self.list.cap() {
            let len = self.list.len();
            if len >= 256 && self.live.get() * 2 <= len {
                self.compact_all();
            } else {
                self.grow_list();
            }
        }
    }

    /// Grows the list (and its slot bits).
    fn grow_list(&self) {
        if self.list.grow() {
            register_owner();
        }
        self.dirty_slots.reserve(self.list.cap());
    }

    /// Removes a tracked object whose strong count reached zero from the
    /// list, if it is listed (not `UNTRACKED`).
    #[inline(always)]
    pub(crate) fn untrack(&self, h: &GcHeader) {
        if !h.has(UNTRACKED) {
            self.untrack_at(h.index());
        }
    }

    /// Removes the object listed at index `i` (its strong count reached
    /// zero): the refcount free's path, which takes the index from the
    /// gc word of an object not flagged `UNTRACKED` (so listed there: the
    /// invariants).
    ///
    /// The youngest entry (the last) is popped, with the holes below it,
    /// and the frozen count and generation bounds are looked at only when
    /// the pop goes below generation 0's start ([`lower_starts`], cold):
    /// an entry of the permanent generation lies below it. Any other
    /// entry becomes a hole (issue 9, eleventh round: -5 instructions
    /// on the last drop of a young object).
    ///
    /// [`lower_starts`]: Self::lower_starts
    #[inline(always)]
    pub(crate) fn untrack_at(&self, i: usize) {
        // No UNTRACKED flag is needed: once out of the list the object has
        // no strong handle left that could reach the collector.
        let len = self.list.len();
        debug_assert!(i < len, "untrack_at({i}) past the list's end ({len})");
        let old = self.live.get();
        let live = old - 1;
        self.live.set(live);
        // Count 0 (`live - base`) falls with the live count, except from
        // 0, where it stays (CPython lowers it only while positive): the
        // base follows the live count down.
        if old == self.count[0].get() {
            self.count[0].set(live);
        }
        if i + 1 == len && !self.in_phases.get() {
            // The last entry: pop it (no need to null it first).
            self.pop_last(i, live);
        } else if i < len {
            if i < self.start[0].get() {
                self.frozen.set(self.frozen.get() - 1);
            }
            // SAFETY: i < len, checked (the invariants promise it; the
            // check keeps a broken promise from writing out of bounds).
            unsafe { self.list.set_unchecked(i, ptr::null()) };
        }
    }

    /// Pops the last entry, `i` (`len - 1`), whose object just left the
    /// list, and the holes below it, so that churn (allocate, free in
    /// reverse order) never grows the list nor needs compaction. `live`
    /// is the live count without that object, the number of non-null
    /// entries below `i`: when it is `i`, the entries below hold no hole
    /// and there is nothing more to pop (one compare instead of a load of
    /// the entry below; were the count ever wrong, the only effect would
    /// be holes left at the end, which the list allows anywhere). The test
    /// is `live < i` rather than `!=`: it implies `i > 0`, so the loop's
    /// first bound check folds into it.
    #[inline(always)]
    fn pop_last(&self, i: usize, live: usize) {
        let mut len = i;
        if live < i {
            // SAFETY: len - 1 < len <= list.len().
            while len > 0 && unsafe { self.list.get_unchecked(len - 1) }.is_null() {
                len -= 1;
            }
        }
        // SAFETY: len <= i < list.len(), initialised.
        unsafe { self.list.set_len(len) };
        // An entry of generation 1, 2 or the permanent one was popped
        // (or holes of them): `len` fell below generation 0's start.
        if len < self.start[2].get() {
            self.lower_starts(i, len);
        }
    }

    /// The pop of entry `i` left the list `len` long, below generation
    /// 0's start: the bounds above `len` come down to it, and if `i` was
    /// in the permanent generation, the frozen count loses it.
    #[cold]
    #[inline(never)]
    fn lower_starts(&self, i: usize, len: usize) {
        if i < self.start[0].get() {
            self.frozen.set(self.frozen.get() - 1);
        }
        for s in &self.start {
            if s.get() > len {
                s.set(len);
            }
        }
    }

    /// Records that `obj`'s strong count dropped to a non-zero value (see
    /// the skip rule in `collector`): it is dirty (`CLEAN` cleared); that
    /// use of a handle also proves a `&mut` from `Gc::get_mut` (which
    /// borrows the only handle) ended. (Inlined into the one cold caller,
    /// `ptr::note_dirty`.)
    #[inline(always)]
    pub(crate) fn note_dirty(&self, h: &GcHeader) {
        let old = h.gc.get();
        let w = old & !(CLEAN | LENT_MUT);
        h.gc.set(w);
        if old & CLEAN == 0 || w & UNTRACKED != 0 {
            return;
        }
        // Listed: its index is valid (also during the phases).
        self.dirty_slots.assign(h.index(), true);
        if self.in_phases.get() {
            self.dirty_in_phases.set(true);
        } else {
            let r = self.region(h.index());
            self.dirty.set(self.dirty.get() | (1 << r));
        }
    }

    /// Region of list index `i`: 0, 1, 2 = generation, 3 = permanent.
    #[inline(always)]
    fn region(&self, i: usize) -> usize {
        if i >= self.start[2].get() {
            0
        } else if i >= self.start[1].get() {
            1
        } else if i >= self.start[0].get() {
            2
        } else {
            3
        }
    }
}

// ---------------------------------------------------------------------------
// the collector's bookkeeping

impl State {
    /// CPython's `collect_generations`: the generation an automatic
    /// collection should examine now, if any.
    pub(crate) fn automatic_generation(&self) -> Option<usize> {
        if !self.enabled.get()
            || self.collecting.get()
            || self.dead.get()
            || self.threshold[0].get() == 0
        {
            return None;
        }
        (0..3).rev().find(|&g| {
            self.gen_count(g) > self.threshold[g].get()
                // The long-lived rule: a full collection only when what was
                // promoted since the last one exceeds 25% of its survivors.
                && (g < 2 || self.long_lived_pending.get() >= self.long_lived_total.get() / 4)
        })
    }

    /// Starts a collection of generation `g`: `false` (and nothing
    /// changes) if one is running or the collector is torn down. Updates
    /// the counts as CPython does.
    pub(crate) fn begin_collection(&self, g: usize) -> bool {
        if self.collecting.get() || self.dead.get() {
            return false;
        }
        self.collecting.set(true);
        if g + 1 < 3 {
            self.count[g + 1].set(self.count[g + 1].get() + 1);
        }
        self.set_count0(0);
        for i in 1..=g {
            self.count[i].set(0);
        }
        true
    }

    /// Whether the skip rule proves that a collection of `g` finds
    /// nothing: no object of generations `0..=g` was decremented to a
    /// non-zero count since they were examined.
    pub(crate) fn can_skip(&self, g: usize) -> bool {
        let mask = (1u8 << (g + 1)) - 1;
        self.skip_enabled.get() && self.dirty.get() & mask == 0
    }

    /// A collection of `g` the skip rule proved empty: promotes its range
    /// and returns the number of survivors (holes included).
    pub(crate) fn skip_collection(&self, g: usize) -> usize {
        let survivors = self.list.len() - self.range_start(g);
        self.promote(g, self.list.len());
        self.skipped[g].set(self.skipped[g].get() + 1);
        survivors
    }

    /// Ends the collection of `g`: the long-lived counters, the
    /// statistics; the debug hooks still run before [`end_collection`].
    ///
    /// [`end_collection`]: Self::end_collection
    pub(crate) fn account_collection(&self, g: usize, found: usize, survivors: usize) {
        if g == 1 {
            self.long_lived_pending
                .set(self.long_lived_pending.get() + survivors);
        } else if g == 2 {
            self.long_lived_pending.set(0);
            self.long_lived_total.set(survivors);
        }
        let mut s = self.stats[g].get();
        s.collections += 1;
        s.collected += found;
        self.stats[g].set(s);
    }

    /// The collection is over: collections may start again.
    pub(crate) fn end_collection(&self) {
        self.collecting.set(false);
        self.reset_room();
    }

    /// The phases start: the list must not move until
    /// [`leave_phases`](Self::leave_phases).
    ///
    /// While they run, the trashcan refuses every frame, so a drop that a
    /// `trace` breaking rule 5 of `Trace` causes (it released the last
    /// handle of an object, perhaps of the very object being traced, whose
    /// `&self` that `trace` still holds) only takes the object out of the
    /// list (a hole) and defers its value's drop and its memory: the
    /// collection drains them once its reclaim holds the garbage (see
    /// `trashcan::drain_after_phases`).
    pub(crate) fn enter_phases(&self) -> bool {
        let was = self.in_phases.replace(true);
        if !was {
            self.budget_before_phases.set(self.budget.get());
            self.budget.set(0);
        }
        was
    }

    /// The phases are over (`was` is what [`enter_phases`] returned).
    ///
    /// [`enter_phases`]: Self::enter_phases
    pub(crate) fn leave_phases(&self, was: bool) {
        self.in_phases.set(was);
        if !was {
            self.budget.set(self.budget_before_phases.get());
            if self.dirty_in_phases.replace(false) {
                self.dirty.set(ALL_DIRTY);
                self.range_scan_next.set(true);
            }
        }
    }

    /// Whether this full collection examines its whole range: because it
    /// must (the request is consumed), or because the closure of the
    /// seeds covered most of the range lately (see
    /// [`closure_size`](Self::closure_size)).
    pub(crate) fn take_range_scan(&self) -> bool {
        let left = self.range_scans_left.get();
        self.range_scans_left.set(left.saturating_sub(1));
        self.range_scan_next.replace(false) || left > 0
    }

    /// A full collection from `seeds` seeds examined `examined` of the `n`
    /// members of its range. When a few seeds (under a quarter of the
    /// range) reached most of it, the heap is so connected that later
    /// seeds will too: the next full collections scan the whole range
    /// instead (as much tracing, without the bookkeeping of discovering
    /// the closure), [`RANGE_SCANS`] of them, twice as many each time the
    /// closure is found large again (up to [`MAX_RANGE_SCANS`]); then the
    /// closure is tried again. (Many seeds say little: in a growing heap
    /// they are what was added since the last full collection.)
    pub(crate) fn closure_size(&self, seeds: usize, examined: usize, n: usize) {
        let next = self.range_scans_next.get();
        if examined * 2 > n && seeds * 4 < n {
            self.range_scans_left.set(next);
            self.range_scans_next
                .set(next.saturating_mul(2).min(MAX_RANGE_SCANS));
        } else {
            self.range_scans_next.set(RANGE_SCANS);
        }
    }

    /// Whether the next range scan of generation `g` (a young collection,
    /// or a full one that examines its whole range) should trace the
    /// newest member first and follow the parent links in phase 2 (see
    /// `collector::finish`). Yes if the last one
    /// found candidates, at least a quarter of them reachable (objects
    /// still being built, which the links settle without a second
    /// trace); no if it found none (every member referenced from outside,
    /// as a full scan of a live heap: no link would be followed), or
    /// found them mostly garbage (which tracing does not
    /// touch and the links would cost for), and for the next
    /// [`LINKS_REST`] scans after links failed to settle one (garbage
    /// with several references each, as doubly linked lists: phase 2
    /// traced anyway). Only a matter of speed: both ways give the same
    /// answer.
    pub(crate) fn links_pay(&self, g: usize) -> bool {
        let rest = self.links_rest[g].get();
        if rest > 0 {
            self.links_rest[g].set(rest - 1);
            return false;
        }
        self.links.get() & (1 << g) != 0
    }

    /// A range scan of generation `g` found `outcome` (with parent links
    /// if `links`): sets the hints [`links_pay`](Self::links_pay) reads.
    pub(crate) fn note_candidates(&self, g: usize, outcome: &Outcome, links: bool) {
        let reachable = outcome.candidates - outcome.unreachable;
        // No candidate at all: no link would have been followed.
        let pay = outcome.candidates > 0 && reachable * 4 >= outcome.candidates;
        let bit = 1u8 << g;
        let l = self.links.get();
        self.links.set(if pay { l | bit } else { l & !bit });
        if links && outcome.traced {
            self.links_rest[g].set(LINKS_REST);
        }
    }

    /// A full collection could not prove its answer exact (it was
    /// conservative): the next one examines the whole range.
    pub(crate) fn request_range_scan(&self) {
        self.range_scan_next.set(true);
    }

    /// The seeds of a full collection of the list range `[start, len)`:
    /// appends to `seeds` the range position of every listed dirty object
    /// whose slot bit is set, and clears every bit of the range: the
    /// collection examines each seed and makes it clean (see
    /// `collector::find_reachable_from_dirty`), so no bit of the range
    /// stays due (an object made dirty during the phases sets its bit
    /// again).
    pub(crate) fn dirty_seeds(&self, start: usize, seeds: &mut Vec<usize>) {
        let len = self.list.len();
        if start >= len {
            return;
        }
        // The words of `[start, len)`, the bits outside it masked off.
        let (first, last) = (start / 64, (len - 1) / 64);
        for w in first..=last {
            let mut bits = self.dirty_slots.word(w);
            if w == first {
                bits &= u64::MAX << (start % 64);
            }
            if w == last {
                bits &= u64::MAX >> (63 - (len - 1) % 64);
            }
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // SAFETY: start <= i < len (the bits outside were masked).
                let p = unsafe { self.list.get_unchecked(i) };
                // SAFETY: non-null list entries are live tracked objects.
                if !p.is_null() && !unsafe { GcHeader::of(p) }.has(CLEAN) {
                    seeds.push(i - start);
                }
            }
        }
        self.dirty_slots.clear_range(start, len);
    }

    /// A full collection of the list range `[start, len)` examined it
    /// whole (and made its members clean): clears its slot bits.
    pub(crate) fn clear_dirty_slots(&self, start: usize, end: usize) {
        self.dirty_slots.clear_range(start, end);
    }

    /// The rebuild moves the entry at `from` to `to` (`to < from`): its
    /// slot bit follows.
    #[inline(always)]
    pub(crate) fn move_slot_bit(&self, from: usize, to: usize) {
        self.dirty_slots.assign(to, self.dirty_slots.get(from));
    }

    /// A collection's phases were abandoned (a `trace` panicked): headers
    /// hold their indices throughout, so only the flags need resetting;
    /// every generation is marked dirty (some members were made clean).
    pub(crate) fn abandon_collection(&self) {
        if self.in_phases.replace(false) {
            self.budget.set(self.budget_before_phases.get());
        }
        self.dirty_in_phases.set(false);
        self.dirty.set(ALL_DIRTY);
        self.range_scan_next.set(true);
        self.collecting.set(false);
        self.reset_room();
    }

    /// Generations `0..=g` were examined: their dirty bits are cleared,
    /// and, if any was set, generation `g + 1` (where their survivors
    /// went, and where garbage spanning older generations may now lie)
    /// becomes dirty; so does it if the collection was conservative (it
    /// may have kept garbage alive).
    pub(crate) fn examined(&self, g: usize, conservative: bool) {
        let mask = (1u8 << (g + 1)) - 1;
        let mut d = self.dirty.get();
        if d & mask != 0 && g < 2 {
            d |= 1 << (g + 1);
        }
        d &= !mask;
        if conservative {
            d |= 1 << (g + 1).min(2);
        }
        self.dirty.set(d);
    }

    /// `n` listed objects were found unreachable and taken out of the
    /// list by the rebuild.
    pub(crate) fn forget_unreachable(&self, n: usize) {
        // Garbage is no deallocation for count 0 (CPython's rule).
        self.set_live_keeping_count0(self.live.get() - n);
    }

    /// Moves the generations 0..=g into g + 1 (or leaves them in 2 when
    /// `g == 2`) by moving boundaries: the range ends at `end`, whatever
    /// follows is generation 0.
    pub(crate) fn promote(&self, g: usize, end: usize) {
        for k in (2 - g).max(1)..3 {
            self.start[k].set(end);
        }
    }

    /// Squeezes every hole out of the list, keeping the order and the
    /// generation boundaries, and rewrites the moved objects' indices.
    fn compact_all(&self) {
        let bounds = self.boundaries();
        let mut j = 0;
        let mut new_start = [0usize; 3];
        let mut i = 0;
        for (b, &end) in bounds.iter().enumerate() {
            while i < end {
                // SAFETY: i < len (the last bound), and j <= i.
                let p = unsafe { self.list.get_unchecked(i) };
                if !p.is_null() {
                    if i != j {
                        // SAFETY: j < i < len; non-null list entries are
                        // live tracked objects.
                        unsafe {
                            self.list.set_unchecked(j, p);
                            GcHeader::of(p).set_index(j);
                        }
                        self.move_slot_bit(i, j);
                    }
                    j += 1;
                }
                i += 1;
            }
            if b < 3 {
                new_start[b] = j;
            }
        }
        self.dirty_slots.clear_range(j, bounds[3]);
        self.list.truncate(j);
        for (s, n) in self.start.iter().zip(new_start) {
            s.set(n);
        }
    }

    /// `gc.freeze()`: every generation joins the permanent one.
    pub(crate) fn freeze(&self) {
        if self.in_phases.get() {
            return;
        }
        let n = self.list.len();
        for s in &self.start {
            s.set(n);
        }
        self.frozen.set(self.live.get());
        self.set_count0(0);
    }

    /// `gc.unfreeze()`: the permanent generation joins generation 2.
    pub(crate) fn unfreeze(&self) {
        if self.in_phases.get() {
            return;
        }
        let moved = self.frozen.replace(0);
        self.start[0].set(0);
        // Frozen objects may complete cycles with generation 2, with no
        // dirty member left (a full collection cleaned them while the
        // permanent generation hid the rest): examine it whole.
        if moved > 0 {
            self.dirty.set(self.dirty.get() | 0b100);
            self.range_scan_next.set(true);
        }
    }

    /// The thread is exiting (its collector's thread-local destructor
    /// runs): drains the trashcan, brings the permanent generation back,
    /// and collects until a collection finds nothing (at most
    /// [`TEARDOWN_ROUNDS`] times: a `Drop` that makes a new cycle every
    /// time could otherwise loop forever), so that cycles still alive now
    /// have their `Drop` impls run, as dumpster does.
    ///
    /// A panic from a `Drop`, finalizer or callback run here cannot be
    /// allowed to leave a thread-local destructor (the process would
    /// abort): it is caught, reported on stderr, and the teardown goes on.
    fn collect_at_exit(&self) {
        if self.dead.get() || self.collecting.get() {
            return;
        }
        for round in 0..TEARDOWN_ROUNDS {
            let r = catch_unwind(AssertUnwindSafe(|| {
                if self.deferred.len() != 0 && self.trashcan_depth() == 0 {
                    super::trashcan::drain_unwinding(self);
                }
                self.unfreeze();
                self.collect(2)
            }));
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => eprintln!(
                    "pymem: a Drop, finalizer or callback panicked in the collection run at \
                     thread exit (round {round}); the panic was contained"
                ),
            }
        }
    }

    /// The thread's last act with its collector, once every thread-local
    /// destructor has run (see [`EXIT`]): the exit collections again (for
    /// cycles that thread-locals destroyed after [`Owner`] let go of),
    /// then frees the list: objects still reachable now (from the
    /// thread's keys, say) are dropped by refcounting later, untracked,
    /// or leaked.
    fn tear_down(&self) {
        if self.dead.get() || self.collecting.get() {
            return;
        }
        self.collect_at_exit();
        self.dead.set(true);
        // Objects still listed leave the list unflagged otherwise: the
        // refcount free, which trusts the index of an object not flagged
        // UNTRACKED, must not look for them in a list that is gone.
        for i in 0..self.list.len() {
            // SAFETY: i < len.
            let p = unsafe { self.list.get_unchecked(i) };
            if !p.is_null() {
                // SAFETY: non-null list entries are live tracked objects.
                unsafe { GcHeader::of(p) }.set_flags(UNTRACKED);
            }
        }
        // No room from now on (`dead` keeps it at 0), set before the
        // buffers go: their frees may re-enter (a `dealloc` creating
        // `Gc`s), and an object created then must take the slow path,
        // which sees `dead` and leaves it unlisted, instead of pushing
        // into a buffer being freed.
        self.room.set(0);
        self.list.free();
        self.dirty_slots.free();
        // Deferred drops queued after the last round (by a later
        // refcount drop during this teardown) are leaked.
        self.deferred.free();
        self.set_live_keeping_count0(0);
        self.frozen.set(0);
        for s in &self.start {
            s.set(0);
        }
        super::weak_callbacks::drop_table();
    }

    /// Whether the thread's collector has been torn down (thread exit).
    pub(crate) fn torn_down(&self) -> bool {
        self.dead.get()
    }

    /// Checks the list invariants (see the type's docs) over the list
    /// range `[from, len)`, and the counts too when `from == 0`. Debug
    /// builds only; O(len - from).
    pub(crate) fn assert_valid(&self, from: usize) {
        if !cfg!(debug_assertions) || self.in_phases.get() || self.dead.get() {
            return;
        }
        let [s0, s1, s2, len] = self.boundaries();
        assert!(
            s0 <= s1 && s1 <= s2 && s2 <= len,
            "generation bounds {s0} {s1} {s2} {len}"
        );
        let mut live = 0;
        let mut frozen = 0;
        for i in from..len {
            let p = self.list.get(i);
            if p.is_null() {
                continue;
            }
            live += 1;
            frozen += usize::from(i < s0);
            // SAFETY: non-null list entries are live tracked objects.
            let h = unsafe { GcHeader::of(p) };
            assert_eq!(h.index(), i, "list entry {i} holds another index");
            assert!(!h.has(UNTRACKED), "list entry {i} is flagged UNTRACKED");
        }
        if from == 0 {
            assert_eq!(live, self.live.get(), "live count");
            assert_eq!(frozen, self.frozen.get(), "frozen count");
        }
        let room = self.room.get();
        assert!(
            room <= self.list.cap() - len,
            "room {room} past the capacity"
        );
        let t0 = self.threshold[0].get();
        if self.enabled.get() && t0 != 0 && room != 0 {
            assert!(
                self.count0() + room <= t0.saturating_add(1),
                "room {room} past threshold 0"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The untrack path's shortcuts (issue 9, eleventh round): count 0 kept
    //! as the live count minus a base, the youngest entry popped without a
    //! look below it, the frozen count left to `lower_starts`.
    use std::cell::RefCell;

    use super::with;
    use crate::{gc, Gc, Trace};

    #[derive(Trace, Default)]
    struct N {
        e: RefCell<Option<Gc<N>>>,
    }

    fn n() -> Gc<N> {
        Gc::new(N::default())
    }

    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }

    /// Count 0 stops at 0 when older objects are freed, and rises again
    /// from there (CPython lowers it only while positive); collected
    /// garbage and freezing move it as CPython does.
    #[test]
    fn count0_saturates_and_follows_cpython() {
        on_fresh_thread(|| {
            let old: Vec<Gc<N>> = (0..5).map(|_| n()).collect();
            assert_eq!(gc::get_count(), (5, 0, 0));
            gc::collect();
            assert_eq!(gc::get_count(), (0, 0, 0));
            drop(old);
            assert_eq!(gc::get_count(), (0, 0, 0));
            let a = n();
            let b = n();
            assert_eq!(gc::get_count(), (2, 0, 0));
            drop(a);
            assert_eq!(gc::get_count(), (1, 0, 0));
            // A cycle found by a young collection: the count restarts at 0
            // and the garbage taken out of the list does not lower it.
            let x = n();
            let y = n();
            *x.e.borrow_mut() = Some(y.clone());
            *y.e.borrow_mut() = Some(x.clone());
            drop((x, y));
            assert_eq!(gc::collect_generation(0), 2);
            assert_eq!(gc::get_count(), (0, 1, 0));
            let c = n();
            assert_eq!(gc::get_count(), (1, 1, 0));
            drop(b);
            drop(c);
            assert_eq!(gc::get_count(), (0, 1, 0));
            let d = n();
            gc::freeze();
            assert_eq!(gc::get_count(), (0, 1, 0));
            let e = n();
            assert_eq!(gc::get_count(), (1, 1, 0));
            drop((d, e));
            assert_eq!(gc::get_count(), (0, 1, 0));
            gc::unfreeze();
        });
    }

    /// Freeing the youngest frozen object (the list's last entry) and an
    /// older one both leave the permanent generation's count; a pop over
    /// holes takes them off the list's end.
    #[test]
    fn pops_keep_frozen_count_and_take_holes() {
        on_fresh_thread(|| {
            let a = n();
            let b = n();
            let c = n();
            gc::freeze();
            assert_eq!(gc::get_freeze_count(), 3);
            drop(c); // the last entry: popped
            assert_eq!(gc::get_freeze_count(), 2);
            assert_eq!(with(|st| st.list().len()), 2);
            drop(a); // a hole
            assert_eq!(gc::get_freeze_count(), 1);
            assert_eq!(with(|st| st.list().len()), 2);
            gc::unfreeze();
            assert_eq!(gc::get_freeze_count(), 0);
            let d = n();
            let e = n();
            drop(d); // a hole below e
            assert_eq!(with(|st| st.list().len()), 4);
            drop(e); // popped with the hole below it
            assert_eq!(with(|st| st.list().len()), 2);
            drop(b); // popped with the hole of `a`
            assert_eq!(with(|st| st.list().len()), 0);
            assert_eq!(gc::tracked_count(), 0);
            with(|st| st.assert_valid(0));
        });
    }
}
