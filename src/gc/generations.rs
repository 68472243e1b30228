//! The per-thread collector state: one list of tracked objects ordered by
//! age, the generations being contiguous ranges of it.
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

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::header::{Counts, GcHeader, ObjPtr, DIRTY, LENT_MUT, SHIFT, UNTRACKED};
use super::GenStats;

/// A vector of raw pointers with no `Drop`, so the thread-local that holds
/// it needs no destructor registration and stays usable during thread
/// teardown. Its buffer is freed by [`Owner`] at thread exit.
pub(crate) struct PtrVec {
    ptr: Cell<*mut ObjPtr>,
    len: Cell<usize>,
    cap: Cell<usize>,
}

impl PtrVec {
    pub(crate) const fn new() -> Self {
        PtrVec {
            ptr: Cell::new(ptr::null_mut()),
            len: Cell::new(0),
            cap: Cell::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    #[inline(always)]
    pub(crate) fn cap(&self) -> usize {
        self.cap.get()
    }

    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> ObjPtr {
        assert!(i < self.len.get());
        // SAFETY: in bounds (checked) of the initialised prefix.
        unsafe { *self.ptr.get().add(i) }
    }

    /// Reads entry `i`, which the caller has checked is below `len`.
    #[inline(always)]
    pub(crate) fn get_unchecked(&self, i: usize) -> ObjPtr {
        debug_assert!(i < self.len.get());
        // SAFETY: the caller checked i < len.
        unsafe { *self.ptr.get().add(i) }
    }

    /// Writes entry `i`, which the caller has checked is below `len`.
    #[inline(always)]
    pub(crate) fn set_unchecked(&self, i: usize, p: ObjPtr) {
        debug_assert!(i < self.len.get());
        // SAFETY: the caller checked i < len.
        unsafe { *self.ptr.get().add(i) = p }
    }

    /// Pushes, growing if needed.
    #[inline]
    pub(crate) fn push(&self, p: ObjPtr) {
        if self.len.get() == self.cap.get() {
            self.grow();
        }
        self.push_unchecked(p);
    }

    /// Pushes without a capacity check.
    ///
    /// # Safety
    /// `len < cap`.
    #[inline(always)]
    pub(crate) unsafe fn push_within_cap(&self, p: ObjPtr) {
        let len = self.len.get();
        debug_assert!(len < self.cap.get());
        // SAFETY: len < cap per the contract.
        unsafe { *self.ptr.get().add(len) = p };
        self.len.set(len + 1);
    }

    /// Pushes; the caller made sure that `len < cap`.
    #[inline(always)]
    pub(crate) fn push_unchecked(&self, p: ObjPtr) {
        let len = self.len.get();
        assert!(len < self.cap.get());
        // SAFETY: len < cap (checked).
        unsafe { *self.ptr.get().add(len) = p };
        self.len.set(len + 1);
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<ObjPtr> {
        let len = self.len.get();
        if len == 0 {
            None
        } else {
            self.len.set(len - 1);
            // SAFETY: len - 1 < len <= cap, initialised.
            Some(unsafe { *self.ptr.get().add(len - 1) })
        }
    }

    /// Sets the length to `n <= len`.
    #[inline(always)]
    pub(crate) fn set_len(&self, n: usize) {
        debug_assert!(n <= self.len.get());
        self.len.set(n);
    }

    #[inline]
    pub(crate) fn truncate(&self, n: usize) {
        if n < self.len.get() {
            self.len.set(n);
        }
    }

    /// Moves `[from, len)` down to `to` (`to <= from`) and truncates.
    pub(crate) fn move_tail(&self, from: usize, to: usize) -> usize {
        let len = self.len.get();
        debug_assert!(to <= from && from <= len);
        let n = len - from;
        if n > 0 && to != from {
            // SAFETY: both ranges lie in the initialised prefix.
            unsafe { ptr::copy(self.ptr.get().add(from), self.ptr.get().add(to), n) };
        }
        self.len.set(to + n);
        n
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn grow(&self) {
        let cap = self.cap.get();
        let new_cap = if cap == 0 { 256 } else { cap * 2 };
        let mut v: Vec<ObjPtr> = Vec::with_capacity(new_cap);
        let len = self.len.get();
        if !self.ptr.get().is_null() {
            // SAFETY: copies the initialised prefix into the new buffer and
            // frees the old one with the Vec that allocated it.
            unsafe {
                ptr::copy_nonoverlapping(self.ptr.get(), v.as_mut_ptr(), len);
                drop(Vec::from_raw_parts(self.ptr.get(), 0, cap));
            }
        }
        let cap = v.capacity();
        let p = v.as_mut_ptr();
        std::mem::forget(v);
        self.ptr.set(p);
        self.cap.set(cap);
        register_owner();
    }

    /// Frees the buffer; the vector becomes empty.
    pub(crate) fn free(&self) {
        let p = self.ptr.replace(ptr::null_mut());
        let cap = self.cap.replace(0);
        self.len.set(0);
        if !p.is_null() {
            // SAFETY: the buffer came from a Vec of this capacity.
            unsafe { drop(Vec::from_raw_parts(p, 0, cap)) }
        }
    }
}

/// Everything one thread's collector knows.
///
/// `#[repr(C)]` with the fields `Gc::new` and the refcount free touch
/// first (the list's ptr/len/cap, the counts, threshold 0, the generation
/// boundaries, the trashcan depth and the state flags), so that the hot
/// paths read one or two adjacent cache lines.
#[repr(C, align(64))]
pub(crate) struct State {
    /// Tracked objects, oldest first (see the module docs).
    pub(crate) list: PtrVec,
    /// CPython's `generations[i].count`.
    pub(crate) count: [Cell<usize>; 3],
    pub(crate) threshold: [Cell<usize>; 3],
    /// Start of generation 2, 1 and 0 in `list`; `[0, start[0])` is the
    /// permanent generation.
    pub(crate) start: [Cell<usize>; 3],
    /// Live (non-hole) entries of the list, and of the permanent
    /// generation.
    pub(crate) live: Cell<usize>,
    pub(crate) frozen: Cell<usize>,
    /// Trashcan nesting depth and deferred objects.
    pub(crate) depth: Cell<u32>,
    pub(crate) enabled: Cell<bool>,
    /// A collection is running (re-entrant collections return 0).
    pub(crate) collecting: Cell<bool>,
    /// Between the start of a collection and its rebuild: the list must
    /// not move.
    pub(crate) in_phases: Cell<bool>,
    /// The thread's collector has been torn down (thread exit).
    pub(crate) dead: Cell<bool>,
    /// Generation i may hold new cyclic garbage (see `collector`).
    pub(crate) dirty: Cell<u8>,
    /// A DIRTY event happened during the phases.
    pub(crate) dirty_in_phases: Cell<bool>,
    pub(crate) deferred: PtrVec,
    /// CPython's long-lived heuristic. Objects promoted by a collection
    /// the skip rule proved empty are counted with the holes of their
    /// range (an over-estimate that only makes full collections, which
    /// are then usually skipped too, a little more frequent).
    pub(crate) long_lived_total: Cell<usize>,
    pub(crate) long_lived_pending: Cell<usize>,
    pub(crate) stats: [Cell<GenStats>; 3],
    /// Collections per generation that the skip rule proved empty.
    pub(crate) skipped: [Cell<usize>; 3],
    /// The skip rule is in force (tests turn it off to check it).
    pub(crate) skip_enabled: Cell<bool>,
    /// Most edges a collection records for `move_unreachable` (tests lower
    /// it to exercise the re-tracing fallback).
    pub(crate) edge_limit: Cell<usize>,
}

/// Most collections run at thread exit (see `State::tear_down`).
pub(crate) const TEARDOWN_ROUNDS: usize = 16;

const GS0: GenStats = GenStats {
    collections: 0,
    collected: 0,
    uncollectable: 0,
};

thread_local! {
    static STATE: State = const {
        State {
            list: PtrVec::new(),
            count: [Cell::new(0), Cell::new(0), Cell::new(0)],
            threshold: [Cell::new(700), Cell::new(10), Cell::new(10)],
            start: [Cell::new(0), Cell::new(0), Cell::new(0)],
            live: Cell::new(0),
            frozen: Cell::new(0),
            depth: Cell::new(0),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            in_phases: Cell::new(false),
            dead: Cell::new(false),
            dirty: Cell::new(0),
            dirty_in_phases: Cell::new(false),
            deferred: PtrVec::new(),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            stats: [Cell::new(GS0), Cell::new(GS0), Cell::new(GS0)],
            skipped: [Cell::new(0), Cell::new(0), Cell::new(0)],
            skip_enabled: Cell::new(true),
            edge_limit: Cell::new(u32::MAX as usize),
        }
    };
    static OWNER: Owner = const { Owner };
}

/// Tears the thread's collector down at thread exit (see
/// [`State::tear_down`]).
struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = STATE.try_with(|st| st.tear_down());
    }
}

/// Registers the teardown (once per thread; later calls are no-ops).
///
/// Thread-local destructors run in the reverse order of their
/// registration, so the thread-locals the teardown's collection uses
/// (weak callbacks, debug state) are touched first: they are destroyed
/// after it.
fn register_owner() {
    super::finalize::keep_through_teardown();
    super::debug::keep_through_teardown();
    let _ = OWNER.try_with(|_| ());
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
    // SAFETY: see above: the thread-local lives (and is never dropped)
    // for the whole thread, and `State` is `!Sync` (its `Cell`s), so the
    // reference cannot leave this thread.
    unsafe { &*p }
}

/// Runs `f` on this thread's state.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&State) -> R) -> R {
    f(state())
}

impl State {
    /// Region of list index `i`: 0, 1, 2 = generation, 3 = permanent.
    #[inline(always)]
    pub(crate) fn region(&self, i: usize) -> usize {
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

    /// Index where generation `g`'s range (with the younger ones) begins.
    #[inline]
    pub(crate) fn range_start(&self, g: usize) -> usize {
        self.start[2 - g].get()
    }

    /// Number of live tracked objects outside the permanent generation.
    pub(crate) fn tracked(&self) -> usize {
        self.live.get() - self.frozen.get()
    }

    /// Adds a freshly allocated tracked object to generation 0.
    #[inline(always)]
    pub(crate) fn track(&self, obj: ObjPtr, h: &GcHeader) {
        let len = self.list.len();
        if len == self.list.cap() {
            if self.dead.get() {
                h.gc.set(UNTRACKED);
                return;
            }
            self.make_room();
        }
        let len = self.list.len();
        // SAFETY: `make_room` left len < cap.
        unsafe { self.list.push_within_cap(obj) };
        h.gc.set(len << SHIFT);
        self.live.set(self.live.get() + 1);
        self.count[0].set(self.count[0].get() + 1);
    }

    /// The list is full: compact it if at least half of it is holes, or
    /// grow it.
    #[cold]
    #[inline(never)]
    fn make_room(&self) {
        let len = self.list.len();
        if !self.in_phases.get() && len >= 256 && self.live.get() * 2 <= len {
            self.compact_all();
        } else {
            self.list.grow();
        }
    }

    /// Removes an object whose strong count reached zero from its list
    /// slot.
    #[inline(always)]
    pub(crate) fn untrack(&self, obj: ObjPtr, h: &GcHeader) {
        self.untrack_at(obj, h.gc.get() >> SHIFT);
    }

    /// [`untrack`](Self::untrack) given the index read from the gc word.
    #[inline(always)]
    pub(crate) fn untrack_at(&self, obj: ObjPtr, i: usize) {
        // No UNTRACKED flag is needed: once out of the list the object has
        // no strong handle left that could reach the collector.
        let len = self.list.len();
        // Listed objects always hold their valid index (the collector
        // keeps gc_refs elsewhere); the checks cover a torn-down list.
        if i < len && self.list.get_unchecked(i) == obj {
            self.live.set(self.live.get() - 1);
            if i < self.start[0].get() {
                self.frozen.set(self.frozen.get() - 1);
            }
            let c = self.count[0].get();
            self.count[0].set(c - usize::from(c > 0));
            if i + 1 == len && !self.in_phases.get() {
                // The last entry: pop it (no need to null it first).
                self.pop_holes(i);
            } else {
                self.list.set_unchecked(i, ptr::null());
            }
        }
    }

    /// Drops the holes at the end of the list (`len` and below; the
    /// entry at `len` was just removed), so that churn (allocate, free in
    /// reverse order) never grows it nor needs compaction.
    #[inline(always)]
    fn pop_holes(&self, mut len: usize) {
        while len > 0 && self.list.get_unchecked(len - 1).is_null() {
            len -= 1;
        }
        self.list.set_len(len);
        if len < self.start[2].get() {
            self.lower_starts(len);
        }
    }

    #[cold]
    #[inline(never)]
    fn lower_starts(&self, len: usize) {
        for s in &self.start {
            if s.get() > len {
                s.set(len);
            }
        }
    }

    /// Records that `obj`'s strong count dropped to a non-zero value (see
    /// the skip rule in `collector`).
    /// (Inlined into the one cold caller, `ptr::note_dirty`.)
    #[inline(always)]
    pub(crate) fn note_dirty(&self, h: &GcHeader) {
        // A drop of a handle to an object also proves a `&mut` from
        // `Gc::get_mut` (which borrows the only handle) has ended.
        let old = h.gc.get();
        let w = (old | DIRTY) & !LENT_MUT;
        h.gc.set(w);
        if old & DIRTY != 0 {
            return;
        }
        if w & UNTRACKED != 0 {
            return;
        }
        if self.in_phases.get() {
            self.dirty_in_phases.set(true);
        } else {
            let r = self.region(h.word());
            self.dirty.set(self.dirty.get() | (1 << r));
        }
    }

    /// The thread is exiting (its collector's thread-local destructor
    /// runs): drains the trashcan, brings the permanent generation back,
    /// and collects until a collection finds nothing (at most
    /// [`TEARDOWN_ROUNDS`] times: a `Drop` that makes a new cycle every
    /// time could otherwise loop forever), so that cycles still alive now
    /// have their `Drop` impls run, as dumpster does. Then frees the list:
    /// objects still reachable (from thread-locals destroyed after this
    /// one) are dropped by refcounting later, untracked, or leaked.
    ///
    /// A panic from a `Drop`, finalizer or callback run here cannot be
    /// allowed to leave a thread-local destructor (the process would
    /// abort): it is caught, reported on stderr, and the teardown goes on.
    fn tear_down(&self) {
        if self.dead.get() || self.collecting.get() {
            return;
        }
        for round in 0..TEARDOWN_ROUNDS {
            let r = catch_unwind(AssertUnwindSafe(|| {
                if self.deferred.len() != 0 && self.depth.get() == 0 {
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
        self.dead.set(true);
        self.list.free();
        // Deferred drops queued after the last round (by a later
        // refcount drop during this teardown) are leaked.
        self.deferred.free();
        self.live.set(0);
        self.frozen.set(0);
        for s in &self.start {
            s.set(0);
        }
    }

    /// Squeezes every hole out of the list, keeping the order and the
    /// generation boundaries, and rewrites the moved objects' indices.
    pub(crate) fn compact_all(&self) {
        let len = self.list.len();
        let bounds = [
            self.start[0].get(),
            self.start[1].get(),
            self.start[2].get(),
            len,
        ];
        let mut j = 0;
        let mut new_start = [0usize; 3];
        let mut i = 0;
        for (b, &end) in bounds.iter().enumerate() {
            while i < end {
                let p = self.list.get_unchecked(i);
                if !p.is_null() {
                    if i != j {
                        self.list.set_unchecked(j, p);
                        // SAFETY: non-null list entries are live tracked
                        // objects.
                        unsafe { GcHeader::of(p) }.set_word(j);
                    }
                    j += 1;
                }
                i += 1;
            }
            if b < 3 {
                new_start[b] = j;
            }
        }
        self.list.truncate(j);
        for (s, n) in self.start.iter().zip(new_start) {
            s.set(n);
        }
    }

    /// Moves the generations 0..=g into g + 1 (or leaves them in 2 when
    /// `g == 2`) by moving boundaries: the range ends at `end`, whatever
    /// follows is generation 0.
    pub(crate) fn promote(&self, g: usize, end: usize) {
        for k in (2 - g).max(1)..3 {
            self.start[k].set(end);
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
        self.count[0].set(0);
    }

    /// `gc.unfreeze()`: the permanent generation joins generation 2.
    pub(crate) fn unfreeze(&self) {
        if self.in_phases.get() {
            return;
        }
        let moved = self.frozen.replace(0);
        self.start[0].set(0);
        // Frozen objects may complete cycles with generation 2: examine it.
        if moved > 0 {
            self.dirty.set(self.dirty.get() | 0b100);
        }
    }
}

/// Reads `obj`'s strong count.
#[inline(always)]
pub(crate) fn strong(obj: ObjPtr) -> &'static Cell<usize> {
    // SAFETY: callers pass live objects; the 'static is a local fiction
    // never held across a free.
    unsafe { &(*obj.cast::<Counts>()).strong }
}
