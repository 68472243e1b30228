//! The [`Tracer`]: what `Trace::trace` reports each `Gc` edge to.

use std::cell::Cell;

use super::header::{
    flags_word, weak_count, GcHeader, ObjPtr, LENT_MUT, NO_HEADER, SHIFT, UNTRACKED,
};
use super::state::strong;

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
pub(crate) type Refs = i64;
/// Strong counts are clamped to this (no range has this many edges, so a
/// clamped count never drops to zero).
pub(crate) const MAX_COUNT: Refs = 1 << 60;
/// Added once to an object that is referenced from outside for sure (a
/// mutably borrowed `RefCell` met while tracing it): it stays positive.
pub(crate) const EXT: Refs = 1 << 61;
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
        MAX_COUNT
    } else {
        s as Refs
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
    (r.wrapping_sub(VISITING) as u64) <= VISITING.unsigned_abs()
}

/// What the collector is doing with the edges it is shown.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// `subtract_refs`: each edge into the collected range decrements the
    /// target's gc_refs, and the member being traced becomes the target's
    /// parent (see [`Tracer::parents`]).
    Subtract,
    /// `subtract_refs` of a full collection from the dirty seeds, whose
    /// members start [`UNSEEN`]: as `Subtract`, and a target met for the
    /// first time joins the examined set and is pushed on the stack.
    Discover,
    /// `move_unreachable`: each edge into the collected range to a
    /// candidate marks it reachable and pushes it on the stack (members
    /// with outside references are roots: `move_unreachable` visits them
    /// in its own scan).
    Mark,
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
    /// `n` entries, the position of the member that last reported an
    /// edge to member `pos` in phase 1 (written only for the members an
    /// edge reached), so that phase 2 can settle most candidates by
    /// following these links instead of tracing (see
    /// `collector::resolve_through_parents`). Written in
    /// [`Mode::Subtract`] and [`Mode::Discover`] (storing a link costs
    /// less than testing whether to).
    pub(crate) parents: *mut u32,
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
            parents,
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
        // Subtract mode is tested first and kept on the straight path:
        // every collection traces every member it examines in phase 1,
        // most of them in range scans. Without the hint LLVM tested
        // Discover first (two more instructions per edge of a range
        // scan); with it Discover's edges take a jump (issue 9, seventh
        // round).
        if self.mode == Mode::Subtract {
            self.set_parent(pos);
            r.set(r.get() - 1);
        } else if self.mode == Mode::Discover {
            cold_path();
            self.discover(r, pos)
        } else {
            self.mark(r, pos)
        }
    }

    /// `Discover` mode: subtracts the edge, and schedules the target if it
    /// was not met before.
    #[inline(always)]
    fn discover(&mut self, r: &Cell<Refs>, pos: usize) {
        self.set_parent(pos);
        let v = r.get();
        if v != UNSEEN {
            r.set(v - 1);
        } else {
            r.set(-1);
            self.push(pos);
        }
    }

    /// Pushes `pos` on the stack, within the capacity the collector
    /// reserved: one slot per object that can be pushed (see the callers).
    #[inline(always)]
    fn push(&mut self, pos: usize) {
        let len = self.stack.len();
        assert!(
            len < self.stack.capacity(),
            "pymem: the collector's stack overflowed its reservation"
        );
        // SAFETY: len < capacity (checked; it always holds, see `mark` and
        // `discover`).
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
    pub fn mark_external(&mut self) {
        if self.mode != Mode::Mark && self.current < self.n {
            self.saw_external = true;
            // SAFETY: current < n, the length of the refs array.
            let r = unsafe { &*self.refs.add(self.current) };
            if r.get() < EXT {
                r.set(r.get() + EXT);
            }
        }
    }
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

/// Marks the branch that calls it as unlikely (what
/// `std::hint::cold_path` does, which needs Rust 1.95, above the MSRV):
/// a call to a `#[cold]` function weighs its branch as rarely taken, and
/// the empty call is then inlined away.
#[cold]
#[inline]
fn cold_path() {}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("mode", &self.mode).finish()
    }
}
