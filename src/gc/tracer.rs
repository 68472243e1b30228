//! The [`Tracer`]: what `Trace::trace` reports each `Gc` edge to.

use std::cell::Cell;

use super::header::{
    flags_word, weak_count, GcHeader, ObjPtr, VTable, CLEAN, LENT_MUT, NO_HEADER, SHIFT, UNTRACKED,
};
use super::state::strong;
use super::trace::Trace;

/// gc_refs of one object of the collected range, in a side array indexed
/// by list position (the header keeps its index, as the generation list
/// needs it).
///
/// `update_refs` is fused into `subtract_refs` additively: the object's
/// strong count is added when it is traced as a source, each edge to it
/// subtracts one, in whatever order these happen, so no "initialised"
/// state is needed. After `subtract_refs` the value is the number of
/// references from outside the range (plus [`EXT`] if it is known to be
/// referenced from outside); `move_unreachable` then overwrites the
/// value of every object it reaches with [`REACHED`].
///
/// 32 bits, not 64: the array is read or written by every pass of a
/// collection over its range (zeroed, phase 1, the candidate count), and
/// a full collection of a 1M-object heap is bound by the bytes it
/// touches; halving these took it from 8.6 to 6.1-6.6 ns per object
/// (issue 9, eleventh round). The price is the clamp of [`MAX_COUNT`].
pub(crate) type Refs = i32;
/// [`Refs`] as unsigned, for the range tests.
pub(crate) type URefs = u32;
/// Strong counts from this up count as this plus [`EXT`] (see
/// [`strong_refs`]): the object is kept as referenced from outside, since
/// 32 bits cannot tell how many of its references the range holds. Only
/// an object with over 2^29 handles (4 GiB of them) meets this, and then
/// the answer is conservative (garbage involving it is kept) rather than
/// exact; it could only turn wrong past [`MAX_COUNT`] + [`EXT`] (1.6
/// billion) edges to one object in one range, and even then it stays
/// memory-safe (the collector holds a count on all it reclaims, and the
/// edge decrements wrap rather than overflow).
pub(crate) const MAX_COUNT: Refs = 1 << 29;
/// Added once to an object that is referenced from outside for sure (a
/// mutably borrowed `RefCell` met while tracing it, a member lent out by
/// `Gc::get_mut`, a count clamped to [`MAX_COUNT`]): it stays positive.
/// See [`add_ext`].
pub(crate) const EXT: Refs = 1 << 30;
/// Found reachable by `move_unreachable` (no count is this low); also
/// given to holes, which are not candidates.
pub(crate) const REACHED: Refs = Refs::MIN;
/// A member of the range that a full collection from the dirty seeds has
/// not met: outside the examined set, so (like [`REACHED`]) neither a
/// root nor a candidate.
pub(crate) const UNSEEN: Refs = REACHED;
/// A candidate that `move_unreachable` found reachable through the
/// parent links (see `collector::resolve_through_parents`): neither a
/// root nor a candidate, but (unlike [`REACHED`], which holes and
/// [`UNSEEN`] members share) known to be a reachable member.
pub(crate) const RESOLVED: Refs = Refs::MIN + 1;
/// A candidate on the parent chain being followed (transient).
pub(crate) const VISITING: Refs = Refs::MIN + 2;
/// A candidate whose parent chain reached no root: a candidate still.
pub(crate) const PENDING: Refs = Refs::MIN + 3;
/// No parent recorded (see [`Tracer::parents`]).
pub(crate) const NO_PARENT: u32 = u32::MAX;

/// `update_refs` for one object: the contribution of its strong count.
#[inline(always)]
pub(crate) fn strong_refs(obj: ObjPtr) -> Refs {
    let s = strong(obj).get();
    if s >= MAX_COUNT as usize {
        MAX_COUNT + EXT
    } else {
        s as Refs
    }
}

/// `r` plus [`EXT`], unless it holds it already (so that a value never
/// exceeds [`MAX_COUNT`] + [`EXT`], which fits in [`Refs`]).
#[inline(always)]
pub(crate) fn add_ext(r: Refs) -> Refs {
    if r < EXT {
        r + EXT
    } else {
        r
    }
}

/// Adds [`EXT`] to the gc_refs at each position of `late` (the members
/// lent out by `Gc::get_mut` whose values could not be traced: referenced
/// from outside, as far as the collection can tell).
#[inline(always)]
pub(crate) fn add_ext_all(refs: &[Cell<Refs>], late: &[usize]) {
    for &pos in late {
        let c = &refs[pos];
        c.set(add_ext(c.get()));
    }
}

/// Whether gc_refs `r` (after `subtract_refs`) make an object a root of
/// `move_unreachable`: referenced from outside and not reached yet.
#[inline(always)]
pub(crate) fn is_root(r: Refs) -> bool {
    r > 0
}

/// Whether gc_refs `r` mark a *candidate*: a member with no reference
/// from outside the examined set (gc_refs <= 0; below zero only when a
/// `trace` visits an edge twice) that `move_unreachable` has not reached
/// (yet). After phase 2 the candidates are exactly the unreachable
/// members.
#[inline(always)]
pub(crate) fn is_candidate(r: Refs) -> bool {
    // In VISITING..=0, that is not REACHED nor RESOLVED (the two lowest
    // values): one unsigned compare.
    (r.wrapping_sub(VISITING) as URefs) <= VISITING.unsigned_abs()
}

/// What the collector is doing with the edges it is shown. The number of
/// each mode indexes the vtable's `trace` entries (see
/// [`Tracer::trace_in`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Mode {
    /// `subtract_refs` of a range scan whose phase 2 will not follow the
    /// parent links: each edge into the collected range decrements the
    /// target's gc_refs, and nothing else (no link stored).
    Count = 0,
    /// `subtract_refs`: each edge into the collected range decrements the
    /// target's gc_refs, and the member being traced becomes the target's
    /// parent (see [`Tracer::parents`]).
    Subtract = 1,
    /// `subtract_refs` of a full collection from the dirty seeds, whose
    /// members start [`UNSEEN`]: as `Subtract`, and a target met for the
    /// first time joins the examined set and is pushed on the stack.
    Discover = 2,
    /// `move_unreachable`: each edge into the collected range to a
    /// candidate marks it reachable and pushes it on the stack (members
    /// with outside references are roots: `move_unreachable` visits them
    /// in its own scan).
    Mark = 3,
}

impl Mode {
    /// The mode numbered `m` (`mode as u8`).
    #[inline(always)]
    const fn from_u8(m: u8) -> Mode {
        match m {
            0 => Mode::Count,
            1 => Mode::Subtract,
            2 => Mode::Discover,
            _ => Mode::Mark,
        }
    }
}

/// Receives the `Gc` edges of a value during a collection.
///
/// A `Tracer` is created only by the collector; a [`Trace`](crate::Trace)
/// impl passes it on to its fields' `trace`. Hand-written impls need no
/// method of it except, for a custom interior-mutability cell whose
/// contents cannot be read right now, [`Tracer::mark_external`].
///
/// ```
/// use pymem::{Gc, Trace, Tracer};
///
/// struct Pair(Gc<u32>, Option<Gc<u32>>);
/// // SAFETY: `trace` visits both `Gc`s a `Pair` owns, each once.
/// unsafe impl Trace for Pair {
///     fn trace(&self, tracer: &mut Tracer) {
///         self.0.trace(tracer);
///         self.1.trace(tracer);
///     }
/// }
/// let p = Gc::new(Pair(Gc::new(1), None));
/// assert!(pymem::gc::is_tracked(&p));
/// ```
pub struct Tracer {
    pub(crate) mode: Mode,
    /// First list index of the collected range, and its length.
    pub(crate) start: usize,
    pub(crate) n: usize,
    /// The range's gc_refs, `n` of them.
    pub(crate) refs: *const Cell<Refs>,
    /// Range position of the object whose value is being traced.
    pub(crate) current: usize,
    /// `move_unreachable`'s explicit stack of range positions.
    pub(crate) stack: Vec<usize>,
    /// Candidates `move_unreachable` has reached so far.
    pub(crate) reached: usize,
    /// `mark_external` was called: the collection was conservative.
    pub(crate) saw_external: bool,
    /// Where `mark_external` records that it was called: null in the
    /// collector's tracer (then `saw_external`), the collector's
    /// `saw_external` in the per-object copies `trace_in` makes (a
    /// pointer costs no register across `trace`, a flag to bring back
    /// did).
    external: *mut bool,
    /// `n` entries, the position of the member that last reported an
    /// edge to member `pos` in phase 1 (written only for the members an
    /// edge reached), so that phase 2 can settle most candidates by
    /// following these links instead of tracing (see
    /// `collector::resolve_through_parents`). Written in
    /// [`Mode::Subtract`] and [`Mode::Discover`]; not in [`Mode::Count`],
    /// which has none (null): the mode is a constant per traced object
    /// (see [`trace_in`](Self::trace_in)), so not storing costs no test.
    pub(crate) parents: *mut u32,
    /// A run of a range scan in [`Mode::Count`] (see
    /// [`count_run`](Self::count_run)): the list slot of member 0, and the
    /// position the run stops before, at most `n` (0: no run, as in
    /// every other mode and for the members traced out of list order).
    pub(crate) run_first: *const ObjPtr,
    pub(crate) run_end: usize,
}

impl Tracer {
    /// A tracer over the range `[start, start + n)`, writing gc_refs to
    /// `refs` and, in phase 1, parent links to `parents` (`n` entries
    /// each).
    pub(crate) fn new(
        start: usize,
        n: usize,
        refs: *const Cell<Refs>,
        parents: *mut u32,
    ) -> Tracer {
        Tracer {
            mode: Mode::Subtract,
            start,
            n,
            refs,
            current: usize::MAX,
            stack: Vec::new(),
            reached: 0,
            saw_external: false,
            external: std::ptr::null_mut(),
            parents,
            run_first: std::ptr::null(),
            run_end: 0,
        }
    }

    /// Records `current` as the parent of member `pos` (phase 1).
    #[inline(always)]
    fn set_parent(&mut self, pos: usize) {
        // SAFETY: in Subtract and Discover modes (the only callers)
        // `parents` has n entries (`Scratch::parents_for`) and pos < n; `current <
        // n < u32::MAX` while a member is traced.
        unsafe { *self.parents.add(pos) = self.current as u32 }
    }

    /// Reports an edge to the object `obj`, tracked or not (`Gc`'s
    /// `Trace` impl, the one caller, passes every handle it holds).
    ///
    /// The hot path of every collection: a leaf (no call), so that a
    /// `trace` needs no stack frame. It reads only the flags word, which
    /// both layouts have, so telling an untracked target apart costs no
    /// test of its own: `NO_HEADER` joins the rare-flags mask.
    #[inline(always)]
    pub(crate) fn visit(&mut self, obj: ObjPtr) {
        // SAFETY: `obj` comes from a live `Gc` handle owned by the value
        // being traced, which is live for the duration of `trace`; every
        // allocation has a flags word before its counts (see `header`).
        let word = unsafe { flags_word(obj) };
        let w = word.get();
        if w & (UNTRACKED | LENT_MUT | NO_HEADER) != 0 {
            // Laid out of line: an edge's decrement needs no jump over
            // this code (1 instruction per edge; issue 9, thirteenth round).
            crate::cold_path();
            // An untracked target is not a candidate: not listed, or
            // without a collector header at all (`NO_HEADER`: the word is
            // an untracked object's weak word, never written here). A
            // `LENT_MUT` target is reached through a handle the collector
            // is reading, so that handle is not mutably borrowed: if it is
            // the only strong one, no `&mut` from `Gc::get_mut` can be
            // alive; if it is not, a clone happened after `get_mut`, which
            // also ends the `&mut`. Either way the flag is stale: cleared.
            if w & (UNTRACKED | NO_HEADER) != 0 {
                return;
            }
            word.set(w & !LENT_MUT);
        }
        // The index is valid for every listed object during the phases (no
        // compaction happens before the rebuild): in range iff the
        // position is below `n`.
        let pos = (w >> SHIFT).wrapping_sub(self.start);
        if pos >= self.n {
            return;
        }
        // SAFETY: pos < n, the length of the refs array, which outlives
        // the tracer.
        let r = unsafe { &*self.refs.add(pos) };
        // Inside `trace_in` the mode is a constant and this is one of the
        // four arms (see there); a tracer that escaped into a `trace` not
        // inlined there tests it per edge.
        match self.mode {
            Mode::Count => r.set(r.get().wrapping_sub(1)),
            Mode::Subtract => {
                self.set_parent(pos);
                r.set(r.get().wrapping_sub(1));
            }
            Mode::Discover => self.discover(r, pos),
            Mode::Mark => self.mark(r, pos),
        }
    }

    /// Traces `value` in the mode numbered `M` (`mode as u8`): the
    /// per-object entry of every collection phase, which the vtable's
    /// type-erased `trace` for that mode calls (the collector picks the
    /// entry by its mode, see `VTable::trace`).
    ///
    /// The mode is thus chosen once per object rather than tested at each
    /// edge: `value` is traced through a tracer of its own whose mode is
    /// a constant, a copy of `self` on the stack, so that once `trace` is
    /// inlined (derived impls and std containers are) LLVM folds the mode
    /// tests away and keeps the range, the gc_refs and links bases and
    /// the stack in registers instead of reloading them at every edge
    /// (issue 9, ninth round). What a `trace` may change is brought back:
    /// the stack's length and `reached` (counted from zero in the copy, so
    /// that the modes that never change it pay nothing); `mark_external`
    /// writes `self.saw_external` through the copy's `external`.
    #[inline(always)]
    pub(crate) fn trace_in<T: Trace + ?Sized, const M: u8>(&mut self, value: &T) {
        let mut t = self.copy_for::<M>();
        value.trace(&mut t);
        self.bring_back(&t);
    }

    /// The copy [`trace_in`](Self::trace_in) traces through, of mode `M`.
    #[inline(always)]
    fn copy_for<const M: u8>(&mut self) -> std::mem::ManuallyDrop<Tracer> {
        // The collector calls the entry of its own mode (`Discover`'s
        // pushes rely on it: see `discover`).
        debug_assert_eq!(self.mode as u8, M, "pymem: a trace entry of another mode");
        std::mem::ManuallyDrop::new(Tracer {
            mode: Mode::from_u8(M),
            start: self.start,
            n: self.n,
            refs: self.refs,
            current: self.current,
            // SAFETY: a bitwise copy of the stack `Vec`, so that its
            // length lives in a register: the copy is never dropped (it is
            // in a `ManuallyDrop`, also when `trace` unwinds, and safe code
            // cannot move it out of the `&mut Tracer` that `trace` gets:
            // `Tracer` has no public constructor, no `Default` and no
            // `Clone`, as tests/compile_fail/tracer_moved_out.rs pins), so
            // the buffer keeps one owner, `self.stack`, which nothing
            // touches until the copy's length is brought back by
            // `bring_back`. `push` writes only below the capacity (it
            // never grows the buffer), and nothing pops during `trace`, so
            // pointer and capacity stay those of `self.stack`.
            stack: unsafe { std::ptr::read(&self.stack) },
            reached: 0,
            saw_external: false,
            external: &mut self.saw_external,
            parents: self.parents,
            run_first: std::ptr::null(),
            run_end: 0,
        })
    }

    /// Brings back what a `trace` through `t` (made by
    /// [`copy_for`](Self::copy_for)) changed: the stack's length and
    /// `reached`.
    #[inline(always)]
    fn bring_back(&mut self, t: &Tracer) {
        // SAFETY: the copy's length is at most the shared capacity, and
        // its entries below it were initialised (by the collector before,
        // or by `push`), in the buffer `self.stack` owns (see `copy_for`).
        unsafe { self.stack.set_len(t.stack.len()) };
        self.reached += t.reached;
    }

    /// The [`Mode::Count`] entry of a sized `T` (`value` gives the value
    /// of an object of its vtable): traces the member at `current`
    /// (`obj`, which the collector has counted), then, as long as the
    /// collector asked for a run (`run_end`), goes on with the members
    /// that follow it in the list while they are plain members of the
    /// same vtable, doing for each what the collector's phase 1 does
    /// (`collector::subtract_one`: its strong count added to its gc_refs,
    /// its value traced); leaves `current` at the last member traced.
    /// It stops before a hole, a member of another vtable, and one that is
    /// dirty or lent out (the collector's loop handles those).
    ///
    /// A large heap is mostly of a few types, allocated together: a run
    /// keeps the tracer's fields in registers, and saves the indirect
    /// call, per member (issue 9, twelfth round).
    ///
    /// # Safety
    /// `obj` is a live tracked object of the vtable whose entry calls
    /// this, with a live value not lent out, at range position `current`;
    /// `value(p)` is a valid reference to the value of any live object `p`
    /// of that vtable; if `run_end` is not 0, it is at most `n`,
    /// `run_first` points at the list slot of range position 0 and the
    /// slots below `run_end` are in the list buffer, which does not move
    /// while this runs (the collector's phases).
    #[inline(always)]
    pub(crate) unsafe fn count_run<'a, T: Trace + ?Sized + 'a>(
        &mut self,
        obj: ObjPtr,
        value: impl Fn(ObjPtr) -> &'a T,
    ) {
        let mut t = self.copy_for::<{ Mode::Count as u8 }>();
        value(obj).trace(&mut t);
        if self.run_end != 0 {
            // SAFETY: `obj` is a live tracked object (this function's
            // `# Safety`).
            let vt: *const VTable = unsafe { GcHeader::of(obj) }.vtable();
            let (first, end) = (self.run_first, self.run_end);
            let mut pos = self.current.wrapping_add(1);
            // Two loops, so that the members with a slot PREFETCH_AHEAD
            // further (all but the last few) need no test for it.
            let ahead_end = end.saturating_sub(PREFETCH_AHEAD);
            let mut going = true;
            while pos < ahead_end {
                // SAFETY: pos + PREFETCH_AHEAD < run_end: a slot of the
                // list buffer (this function's `# Safety`), read alone.
                prefetch_member(unsafe { *first.add(pos + PREFETCH_AHEAD) });
                // SAFETY: pos < run_end; the rest is this function's
                // `# Safety`.
                if !unsafe { run_step(&mut t, first, vt, pos, &value) } {
                    going = false;
                    break;
                }
                pos += 1;
            }
            if going {
                // SAFETY: pos < run_end; the rest is this function's
                // `# Safety`.
                while pos < end && unsafe { run_step(&mut t, first, vt, pos, &value) } {
                    pos += 1;
                }
            }
            self.current = pos - 1;
        }
        self.bring_back(&t);
    }

    /// `Discover` mode: subtracts the edge, and schedules the target if it
    /// was not met before.
    #[inline(always)]
    fn discover(&mut self, r: &Cell<Refs>, pos: usize) {
        self.set_parent(pos);
        let v = r.get();
        if v != UNSEEN {
            r.set(v.wrapping_sub(1));
        } else {
            r.set(-1);
            // Each member is pushed at most once, when first met (it is
            // UNSEEN no more), and `find_reachable_from_dirty` reserved one
            // slot per member before it set this mode: checking against
            // `n` rather than the capacity needs no register of its own.
            // SAFETY: n <= the capacity: `find_reachable_from_dirty`
            // asserts it when it sets Discover mode, the only place that
            // does; a copy made by `trace_in` for the Discover entry is
            // made from a tracer in that mode (the collector calls the
            // vtable entry of its tracer's mode, debug-asserted there) and
            // shares its buffer; nothing reallocates the stack in that
            // mode (pushes stay below n and never grow it).
            unsafe { self.push_below(pos, self.n) };
        }
    }

    /// Pushes `pos` on the stack, within the capacity the collector
    /// reserved: one slot per object that can be pushed (see the callers).
    #[inline(always)]
    fn push(&mut self, pos: usize) {
        // SAFETY: the capacity is at most itself.
        unsafe { self.push_below(pos, self.stack.capacity()) }
    }

    /// [`push`](Self::push), checking the length against `limit` instead
    /// of the capacity.
    ///
    /// # Safety
    /// `limit <= self.stack.capacity()`.
    #[inline(always)]
    unsafe fn push_below(&mut self, pos: usize, limit: usize) {
        let len = self.stack.len();
        assert!(
            len < limit,
            "pymem: the collector's stack overflowed its reservation"
        );
        // SAFETY: len < limit <= capacity (checked, and this function's
        // `# Safety`; it always holds, see `mark` and `discover`).
        unsafe {
            self.stack.as_mut_ptr().add(len).write(pos);
            self.stack.set_len(len + 1);
        }
    }

    /// `move_unreachable`: marks the object at `pos` (gc_refs `r`)
    /// reachable and schedules it for tracing, if it is a candidate.
    #[inline(always)]
    fn mark(&mut self, r: &Cell<Refs>, pos: usize) {
        if is_candidate(r.get()) {
            r.set(REACHED);
            self.reached += 1;
            // `move_unreachable` reserves one slot per candidate, and each
            // is pushed at most once, as it is REACHED from then on.
            self.push(pos);
        }
    }

    /// Declares that the object being traced has contents that cannot be
    /// traced right now (a cell that is mutably borrowed, as
    /// `RefCell`'s impl does): the collector then treats the object as
    /// referenced from outside, keeping it and everything it reaches
    /// alive in this collection (conservative, never wrong).
    ///
    /// ```
    /// use pymem::{gc, Gc, Trace};
    /// use std::cell::RefCell;
    ///
    /// #[derive(Trace)]
    /// struct Node { next: RefCell<Option<Gc<Node>>> }
    ///
    /// let a = Gc::new(Node { next: RefCell::new(None) });
    /// *a.next.borrow_mut() = Some(a.clone()); // a cycle
    /// let raw: *const Node = Gc::as_ptr(&a);
    /// drop(a); // now garbage, but...
    /// // SAFETY: the cycle keeps the node alive until it is collected.
    /// let held = unsafe { (*raw).next.borrow_mut() };
    /// assert_eq!(gc::collect(), 0); // ...its RefCell is in use: kept
    /// drop(held);
    /// assert_eq!(gc::collect(), 1);
    /// ```
    // (Cold: met only with a mutably borrowed cell, so that the usual
    // edge of a `RefCell` runs straight through.)
    #[cold]
    pub fn mark_external(&mut self) {
        if self.mode != Mode::Mark && self.current < self.n {
            if self.external.is_null() {
                self.saw_external = true;
            } else {
                // SAFETY: a non-null `external` is set only by `copy_for`
                // (for `trace_in` and `count_run`), to the `saw_external`
                // of the tracer it was called on, which neither touches
                // while the copy holding this pointer is in use (the
                // copy's other fields are separate).
                unsafe { *self.external = true };
            }
            // SAFETY: current < n, the length of the refs array.
            let r = unsafe { &*self.refs.add(self.current) };
            r.set(add_ext(r.get()));
        }
    }
}

/// [`Tracer::count_run`]'s phase 1 for the member at `pos`, if it belongs
/// to the run (a plain member of the vtable `vt`): its strong count added
/// to its gc_refs, its value traced through `t`; false where the run stops
/// (a hole, another vtable, a member dirty or lent out, a count that
/// [`strong_refs`] would clamp).
///
/// # Safety
/// As [`Tracer::count_run`]'s, with `first` its `run_first`, `vt` the
/// vtable of its `obj`, `value` its `value`, `t` its copy of the tracer,
/// and `pos` below its `run_end`.
#[inline(always)]
unsafe fn run_step<'a, T: Trace + ?Sized + 'a>(
    t: &mut Tracer,
    first: *const ObjPtr,
    vt: *const VTable,
    pos: usize,
    value: &impl Fn(ObjPtr) -> &'a T,
) -> bool {
    // SAFETY: pos < run_end: a slot of the list buffer, which does not
    // move (this function's `# Safety`); read alone, never through a slice
    // (a `trace` that breaks rule 5 may null one meanwhile).
    let p = unsafe { *first.add(pos) };
    if p.is_null() {
        return false;
    }
    // SAFETY: a non-null list slot is a listed object, live, with a live
    // value (the list's invariant).
    let h = unsafe { GcHeader::of(p) };
    // (Clean and not lent out: the usual member, as in
    // `collector::subtract_one`.)
    if !std::ptr::eq(h.vtable(), vt) || h.gc.get() & (CLEAN | LENT_MUT) != CLEAN {
        return false;
    }
    // A count that `strong_refs` would clamp ends the run too (the
    // collector's loop clamps it): a compare and a branch instead of the
    // clamp's three instructions.
    let s = strong(p).get();
    if s >= MAX_COUNT as usize {
        return false;
    }
    // SAFETY: pos < run_end <= n (this function's `# Safety`), the length
    // of the refs array.
    let r = unsafe { &*t.refs.add(pos) };
    r.set(r.get().wrapping_add(s as Refs));
    t.current = pos;
    // Its vtable is `vt`, so `value` reads it (this function's `# Safety`);
    // not lent out (tested above).
    value(p).trace(t);
    true
}

/// How many members ahead of the one it traces a run prefetches (see
/// [`prefetch_member`]).
const PREFETCH_AHEAD: usize = 32;

/// Asks the processor to start loading the header and value of the list
/// member `p` (null for a hole), which a run will trace soon: a heap
/// whose list order is not its memory order (built in chunks freed
/// before, as most long-lived heaps are) otherwise waits for each
/// member's lines in turn.
#[inline(always)]
fn prefetch_member(p: ObjPtr) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = p.cast::<i8>();
        // SAFETY: `sse` (which `_mm_prefetch` needs) is part of the
        // x86_64 baseline; a prefetch is a hint that never faults and
        // reads nothing architecturally, so any address will do, a
        // hole's null included (the offsets are computed with wrapping
        // arithmetic, no provenance needed).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_sub(16));
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(48));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether the collector may read the value of `obj` (flagged `LENT_MUT`
/// by `Gc::get_mut`): yes, clearing the flag, if its counts prove the
/// `&mut` ended (a strong or weak count other than 1 needed a clone or a
/// downgrade of the handle that the `&mut` borrows).
pub(crate) fn lent_mut_ended(obj: ObjPtr, h: &GcHeader) -> bool {
    // SAFETY: the collector only asks about live objects.
    let c = unsafe { &*obj };
    if c.strong.get() != 1 || weak_count(h.weak.get()) != 1 {
        h.clear_flags(LENT_MUT);
        return true;
    }
    false
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("mode", &self.mode).finish()
    }
}
