//! The collector proper: CPython's `gc_collect_main`, phase by phase, each
//! phase a function of this file (the reclamation phases are in
//! `reclaim`).
//!
//! Collecting generation `g` examines the list range of generations
//! `0..=g` (contiguous, see `state`). The gc_refs live in a side array
//! indexed by range position, not in the headers (which keep their list
//! index throughout), so an object that survives without moving is only
//! ever read, never written:
//!
//! 1. [`update_and_subtract_refs`]: CPython's `update_refs` and
//!    `subtract_refs`, fused: trace every member in list order (newest
//!    first when the links will be followed, see below); its strong count
//!    is added to its gc_refs, each edge to a member (its index says so)
//!    subtracts one and names the member traced as the target's parent.
//!    What remains is the number of references from outside the range.
//!    Members left with none are the *candidates*; when there are none,
//!    phase 2 is skipped.
//! 2. [`move_unreachable`]: members with gc_refs > 0 (or met with a
//!    mutably borrowed `RefCell`, or lent out by `Gc::get_mut`) are
//!    roots; every candidate reachable from them is marked by tracing
//!    them again, with an explicit stack (no recursion), until all
//!    candidates are reached or the roots run out. The candidates left
//!    are unreachable. A full collection from the dirty seeds first
//!    follows the parent links its phase 1 recorded
//!    ([`resolve_through_parents`]), which settles most shapes without
//!    tracing again; so does a young collection whose generation last
//!    found its candidates mostly reachable (objects still being built:
//!    `State::links_pay`).
//! 3. [`rebuild_and_promote`]: reachable members are packed at the start
//!    of the range (only moved ones get their index rewritten), objects
//!    allocated meanwhile follow; boundaries move so survivors join
//!    generation `g + 1`; the unreachable are gathered.
//! 4. `reclaim::handle_weakrefs`: every unreachable object is marked `DEAD`
//!    and `UNTRACKED`, and the collector takes a strong count on it, so
//!    `Weak::upgrade` fails for all of them before any value is dropped
//!    and none can be freed under the collector's feet. Then PEP 442
//!    finalizers run, followed by a resurrection check that runs phases
//!    1 and 2 again over the garbage alone (see `finalizers`).
//! 5. `reclaim::delete_garbage`: values are dropped one by one, each
//!    marked `DROPPED` first (so a `Drop` reaching a dropped member panics
//!    instead of reading freed data), under `catch_unwind`. Then the
//!    collector's counts are released: memory is freed where no handle
//!    remains; a handle cloned by a `Drop` (resurrection) keeps the memory
//!    valid. The first panic is resumed once all of this is done.
//!
//! Phases 1 and 2 take the objects to examine as [`Members`] (a list
//! range, or the garbage), so they assume nothing about where the objects
//! came from: a thread-safe collector could hand them any set whose gc
//! words hold consecutive indices.
//!
//! `trace` runs only in phases 1 and 2; it must not create or drop `Gc`s
//! (part of `Trace`'s unsafe contract). If it panics, nothing in the
//! headers needs restoring: the collection is abandoned and every
//! generation marked dirty.
//!
//! # The skip rule
//!
//! A set of objects can only *become* unreachable garbage when the last
//! reference into it from outside goes away, which is a strong count
//! decremented to a value other than zero (a decrement to zero frees the
//! object instead): Bacon and Rajan's observation. `Gc::drop` makes the
//! object *dirty* on such a decrement (it clears its `CLEAN` flag); the
//! first time, it sets the bit of the object's generation in the thread's
//! `dirty` mask, and the object's bit in the per-slot `dirty_slots` of the
//! list. A collection of
//! generation `g` whose bits `0..=g` are all clear cannot find anything,
//! so it only promotes (O(1)) and updates counts and statistics. A real
//! collection of `g` clears the bits `0..=g` and sets bit `g + 1` (its
//! dirty members now live in `g + 1`). Only full collections make
//! objects clean again (see below). Events during the phases,
//! `unfreeze` (frozen members of a cycle rejoin generation 2) and finalizer
//! resurrection set bits conservatively, and so does a collection that met
//! a mutably borrowed `RefCell` (it may have kept garbage alive).
//!
//! # Full collections: the closure of the dirty objects
//!
//! Young collections examine their whole range, as CPython's do (their
//! cost is bounded by the thresholds). A full collection instead examines
//! only `S`, the objects of its range reachable (within the range) from
//! its *seeds*, the listed dirty objects, found through `dirty_slots`
//! without touching the others: trial deletion over `S`, counting
//! references from the rest of the range as references from outside.
//! Its cost is proportional to what changed since the last full
//! collection, not to the heap: a large live structure untouched since is
//! not traced.
//!
//! This is exact (the same answer as examining the whole range):
//!
//! 1. *Trial deletion over a set `S` that contains all the garbage of the
//!    range finds all of it, and nothing else.* A live member of `S` is
//!    reachable from a root of the program, hence from a member of `S`
//!    with a reference from outside `S` (a root of phase 2), through
//!    members of `S` or of the rest of the range, which phase 2 treats as
//!    outside. A garbage object is referenced only by garbage, all of it
//!    in `S`, so none of its references counts as from outside, and
//!    nothing reachable from a phase-2 root reaches it.
//! 2. *Every garbage object `x` is reachable from a seed* (garbage that
//!    involves a frozen object is out of reach of any collection until
//!    `unfreeze`, as in CPython). Let `T` be the
//!    last time `x` became unreachable: a strong count was decremented on
//!    the last path from the roots to `x`, to a value other than zero, on
//!    an object `y` from which `x` is reachable (a decrement to zero frees
//!    `y`, decrementing its children: some object of the path is
//!    decremented to a non-zero value), and `y` became dirty. Since
//!    `T`, `x` and the path stayed unreachable and so unchanged (nothing
//!    can reach them to change them; a `Weak::upgrade` that reached one
//!    would make `x` reachable again, a later `T`). If a full collection
//!    `F` ran after `T`, then by induction on full collections `F` was
//!    exact and would have reclaimed `x`; so none did, and only full
//!    collections make objects clean (their seeds): `y` is still a
//!    seed.
//!
//! Discovering `S` costs a little more per object than a scan of the whole
//! range (a push and a pop each, objects met out of list order), so when
//! a few seeds reached most of the range, the next few full collections
//! scan the whole range instead (`State::closure_size`); that is trial
//! deletion over a superset, exact too, and it clears every flag.
//!
//! A full collection clears the flags (and slot bits) of its seeds. When
//! it cannot vouch for its answer, the next one examines its whole range
//! instead (`State::take_range_scan`): after a conservative collection (a
//! mutably borrowed `RefCell` may have kept garbage alive whose seeds are
//! cleared), after `unfreeze` (a cycle through a frozen object was kept,
//! and its seeds cleared, by a full collection that could not see the
//! frozen part), after an object became dirty during the phases or an
//! abandoned collection. Finalizer resurrection makes the revived objects
//! dirty.
//! Moving a handle (into a field, a `RefCell` swap, `try_unwrap`) changes
//! no count and cannot strand the last path to a structure without a
//! clone or an upgrade, whose handle is later dropped: a decrement.
//! (Unsafe code that moves handles inside unreachable objects through
//! raw pointers can hide garbage from the seeds: a leak, not unsoundness.)
//!
//! Tested by `tests/gc_differential.rs` (random long histories against a
//! reachability model, and the cross-generation, frozen and conservative
//! cases that defeat a closure without these rules).

use std::any::Any;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::callbacks;
use super::header::{GcHeader, ObjPtr, CLEAN, LENT_MUT};
use super::ptr_vec::PtrVec;
use super::reclaim;
use super::state::State;
use super::tracer::{
    add_ext_all, is_candidate, is_root, lent_mut_ended, strong_refs, Mode, Refs, Tracer, URefs,
    NO_PARENT, PENDING, REACHED, RESOLVED, UNSEEN, VISITING,
};
use super::trashcan;

pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// The objects phases 1 and 2 examine, by position `0..len()`; member
/// `pos`'s gc word holds index `base + pos` for the `base` the phases
/// are given, and holes are null.
pub(crate) trait Members {
    fn len(&self) -> usize;
    /// Member `pos` (null for a hole).
    ///
    /// # Safety
    /// `pos < self.len()`.
    unsafe fn get(&self, pos: usize) -> ObjPtr;
    /// Where member 0 is read from: member `pos < len()` is at
    /// `slots().add(pos)`, which stays valid for reads while the phases
    /// run (`Tracer::count_run` reads members through it, one at a
    /// time).
    fn slots(&self) -> *const ObjPtr;
}

/// Generations `0..=g`: the list range `[start, start + n)`, read through
/// a pointer to its first entry taken when the phases begin. The list
/// keeps its buffer throughout the phases (it never grows then, see
/// `State::track`; a `trace` that breaks its contract by dropping a `Gc`
/// may null an entry, which is read as a hole), so the pointer stays
/// valid; entries are read one at a time, never through a slice.
struct ListRange {
    first: *const ObjPtr,
    n: usize,
}

impl ListRange {
    fn new(list: &PtrVec, start: usize, end: usize) -> ListRange {
        assert!(start <= end && end <= list.len());
        ListRange {
            // SAFETY: start <= len, so the offset stays within (or one
            // past) the buffer.
            first: unsafe { list.as_ptr().add(start) },
            n: end - start,
        }
    }
}

impl Members for ListRange {
    fn len(&self) -> usize {
        self.n
    }

    #[inline(always)]
    unsafe fn get(&self, pos: usize) -> ObjPtr {
        // SAFETY: pos < n (this method's `# Safety`), so start + pos is below
        // the list's length when the phases began; the buffer has not
        // moved since (see the type's docs).
        unsafe { *self.first.add(pos) }
    }

    fn slots(&self) -> *const ObjPtr {
        self.first
    }
}

impl Members for [ObjPtr] {
    fn len(&self) -> usize {
        <[ObjPtr]>::len(self)
    }

    #[inline(always)]
    unsafe fn get(&self, pos: usize) -> ObjPtr {
        // SAFETY: pos < len (this method's `# Safety`).
        unsafe { *self.get_unchecked(pos) }
    }

    fn slots(&self) -> *const ObjPtr {
        self.as_ptr()
    }
}

impl State {
    /// CPython's `collect_generations`: collects the generation the
    /// thresholds call for, if any.
    #[cold]
    #[inline(never)]
    pub(crate) fn collect_automatic(&self) {
        if let Some(g) = self.automatic_generation() {
            self.collect(g);
        }
    }

    /// CPython's `gc_collect_main` for generation `g` (with the younger
    /// ones): returns the number of unreachable objects found.
    pub(crate) fn collect(&self, g: usize) -> usize {
        assert!(g < 3, "pymem: invalid generation {g} (0, 1 or 2)");
        if !self.begin_collection(g) {
            return 0;
        }
        // DEBUG_STATS and gc::callbacks ("start")
        let session = callbacks::collection_start(self, g);
        let (found, survivors, panic) = if self.can_skip(g) {
            (0, self.skip_collection(g), None)
        } else {
            collect_real(self, g)
        };
        self.account_collection(g, found, survivors);
        // DEBUG_STATS and gc::callbacks ("stop")
        let panic = panic.or(callbacks::collection_stop(session, g, found));
        self.end_collection();
        self.assert_valid(if g == 2 { 0 } else { self.range_start(g + 1) });
        if let Some(p) = panic {
            // An automatic collection runs inside `Gc::new`, which may be
            // called by a destructor during an unwind.
            super::weak_callbacks::resume_unless_unwinding(p, "a Drop or callback in a collection");
        }
        found
    }
}

/// A real collection: returns (unreachable found, survivors, first panic
/// of a `Drop`, finalizer or callback).
fn collect_real(st: &State, g: usize) -> (usize, usize, Option<Panic>) {
    let start = st.range_start(g);
    let end = st.list().len();
    let was_in_phases = st.enter_phases();
    let abandon = AbandonOnUnwind(st);
    let mut sc = Scratch::take();
    let members = ListRange::new(st.list(), start, end);
    // A full collection examines what is reachable from the dirty objects
    // (see "Full collections"), unless it must, or is better off, examining
    // the whole range.
    let from_dirty = g == 2 && !st.take_range_scan();
    let outcome = if from_dirty {
        find_reachable_from_dirty(st, &members, start, &mut sc)
    } else {
        let links = st.links_pay(g);
        let outcome = find_reachable(&members, start, 0, g == 2, links, &mut sc);
        st.note_candidates(g, &outcome, links);
        outcome
    };
    std::mem::forget(abandon);
    if g == 2 {
        // (A collection from the dirty seeds cleared their bits and made
        // them clean as it examined them.)
        if !from_dirty {
            st.clear_dirty_slots(start, end);
        }
        if outcome.conservative {
            st.request_range_scan();
        }
    }
    let mut garbage = std::mem::take(&mut sc.garbage);
    let survivors = rebuild_and_promote(
        st,
        g,
        start,
        end,
        &sc.refs,
        sc.examined.clone(),
        &outcome,
        &mut garbage,
    );
    st.examined(g, outcome.conservative);
    st.leave_phases(was_in_phases);
    let keep = keep_limit(st);
    sc.put_back(keep);
    let (found, mut panic) = reclaim::reclaim(st, &mut garbage);
    Scratch::return_garbage(garbage, keep);
    if let Some(p) = trashcan::drain_after_phases(st) {
        panic.get_or_insert(p);
    }
    (found, survivors, panic)
}

/// Abandons a collection whose `trace` panicked (forgotten on the normal
/// path): see [`State::abandon_collection`].
struct AbandonOnUnwind<'a>(&'a State);

impl Drop for AbandonOnUnwind<'_> {
    fn drop(&mut self) {
        let st = self.0;
        st.abandon_collection();
        // The drops deferred during the phases (see `State::enter_phases`):
        // no garbage was gathered, so they may run now.
        if st.trashcan_depth() == 0 && st.deferred().len() != 0 {
            trashcan::drain_unwinding(st);
        }
    }
}

/// What phases 1 and 2 found.
pub(crate) struct Outcome {
    /// A member could not be read (a mutably borrowed `RefCell`): the
    /// result may keep garbage alive.
    pub(crate) conservative: bool,
    /// Null members (holes of the list).
    pub(crate) holes: usize,
    /// Members without references from outside the examined set after
    /// phase 1 (see [`is_candidate`]).
    pub(crate) candidates: usize,
    /// Members found unreachable (candidates phase 2 did not reach).
    pub(crate) unreachable: usize,
    /// Phase 2 traced (the parent links, if any, did not settle it).
    pub(crate) traced: bool,
}

/// Phases 1 and 2 over `members` (whose gc words hold indices `base..`):
/// afterwards [`is_candidate`]`(sc.refs[pos])` holds exactly for the
/// members not reachable from outside the set (holes are not
/// candidates). `held` is the count the caller holds on each member (not
/// a reference from outside). `clear_dirty`: the members are made clean
/// (a full collection). `links`: phase 1 traces the newest member first
/// (so that each member's parent link is its oldest referrer) and phase 2
/// follows the links before it traces (see [`finish`]; only when `held`
/// is 0, which [`resolve_through_parents`]'s rule for settling assumes).
pub(crate) fn find_reachable<M: Members + ?Sized>(
    members: &M,
    base: usize,
    held: Refs,
    clear_dirty: bool,
    links: bool,
    sc: &mut Scratch,
) -> Outcome {
    let n = members.len();
    zeroed_refs(&mut sc.refs, n);
    let links = links && held == 0;
    sc.examined = 0..n;
    // Phase 2 reads links only if `links`; without, none is stored (Count
    // mode) and the array is not even sized.
    let parents = if links {
        sc.parents_for(n)
    } else {
        sc.parents.clear();
        std::ptr::null_mut()
    };
    let mut tracer = Tracer::new(base, n, sc.refs.as_ptr(), parents);
    if !links {
        tracer.mode = Mode::Count;
    }
    tracer.stack = std::mem::take(&mut sc.stack);
    tracer.stack.clear();
    let holes = update_and_subtract_refs(
        members,
        held,
        clear_dirty,
        links,
        &sc.refs,
        &mut sc.late,
        &mut tracer,
    );
    let (candidates, unreachable, traced) = finish(members, sc, &mut tracer, links);
    Outcome {
        conservative: tracer.saw_external,
        holes,
        candidates,
        unreachable,
        traced,
    }
}

/// Phases 1 and 2 of a full collection over the list range `members`
/// (starting at list index `start`), restricted to what is reachable
/// from the dirty objects (the seeds, left in `sc.seeds`): afterwards
/// [`is_candidate`]`(sc.refs[pos])` holds exactly for the unreachable
/// members; the members not examined are [`UNSEEN`].
///
/// Phase 1 discovers the examined set as it subtracts (each member is
/// traced once, when first met: see [`Mode::Discover`]); as that set is
/// closed under the edges within the range, every edge from it is
/// subtracted, and references from the rest of the range count as
/// references from outside (conservative: they are not examined).
fn find_reachable_from_dirty(
    st: &State,
    members: &ListRange,
    start: usize,
    sc: &mut Scratch,
) -> Outcome {
    let n = members.len();
    sc.refs.clear();
    sc.refs.resize(n, Cell::new(UNSEEN));
    sc.seeds.clear();
    st.dirty_seeds(start, &mut sc.seeds);
    let parents = sc.parents_for(n);
    let refs = &sc.refs;
    let late = &mut sc.late;
    late.clear();
    let mut tracer = Tracer::new(start, n, refs.as_ptr(), parents);
    tracer.stack = std::mem::take(&mut sc.stack);
    tracer.stack.clear();
    // One slot per member: each is pushed once, when first met (the
    // tracer checks its pushes against n, see `Tracer::discover`).
    tracer.stack.reserve(n);
    assert!(tracer.stack.capacity() >= n);
    tracer.mode = Mode::Discover;
    let mut examined = 0;
    // The positions examined are listed in `order` as examined (what
    // phase 2 scans: the range also spans the members not examined,
    // which were three quarters of it in stress).
    sc.order.clear();
    sc.order.reserve(n);
    let order = sc.order.as_mut_ptr();
    // The seeds are taken in list order, each when the stack is empty
    // and only if no edge met it before (then it is on the stack or was
    // examined already), so a seed costs no push of its own and a
    // structure is discovered from its first seed, in edge order.
    let mut seeds = sc.seeds.iter();
    loop {
        loop {
            let pos = match tracer.stack.pop() {
                Some(pos) => pos,
                // (A seed freed by a `trace` that broke rule 5 after it
                // was examined is a hole, whose gc_refs, REACHED, read as
                // UNSEEN: it is not taken again.)
                None => match seeds.find(|&&s| {
                    // SAFETY: seeds are positions of the range, below n
                    // (bounds-checked by the indexing before it).
                    refs[s].get() == UNSEEN && !unsafe { members.get(s) }.is_null()
                }) {
                    Some(&s) => {
                        refs[s].set(0);
                        // SAFETY: s < n, the parents' capacity.
                        unsafe { parents.add(s).write(NO_PARENT) };
                        s
                    }
                    None => break,
                },
            };
            // Each position is examined once (pushed when first met, or
            // taken as a seed if never met), so at most n are: within the
            // room reserved. (A local count and a raw write: `push` kept
            // the length in memory across the `trace` calls.)
            assert!(examined < n, "pymem: a member examined twice");
            // SAFETY: examined < n <= the capacity reserved above;
            // n < u32::MAX (`parents_for`).
            unsafe { order.add(examined).write(pos as u32) };
            examined += 1;
            // SAFETY: positions on the stack are below n.
            let p = unsafe { members.get(pos) };
            if p.is_null() {
                // Freed since it was pushed, by a `trace` that dropped its
                // last handle (rule 5 of `Trace` broken): a hole.
                refs[pos].set(REACHED);
                continue;
            }
            // SAFETY: a non-null member is a listed object, live.
            let h = unsafe { GcHeader::of(p) };
            // A dirty member is a seed (every listed dirty object of the
            // range is one, see `State::dirty_seeds`, which cleared their
            // slot bits): made clean here, while its header is at hand.
            let w = h.gc.get();
            // SAFETY: positions on the stack are below n, the length of
            // `refs` (Discover pushes only positions `visit` checked
            // against n), and so are seeds (the `find` above indexed
            // `refs` with each, bounds-checked).
            let r = unsafe { refs.get_unchecked(pos) };
            r.set(r.get().wrapping_add(strong_refs(p)));
            // (One test for the usual case, clean and not lent out.)
            if w & (CLEAN | LENT_MUT) != CLEAN {
                if w & CLEAN == 0 {
                    h.gc.set(w | CLEAN);
                }
                if w & LENT_MUT != 0 && !lent_mut_ended(p, h) {
                    late.push(pos);
                    continue;
                }
            }
            tracer.current = pos;
            // SAFETY: a live member whose value is not lent out; `refs` is
            // only accessed through the tracer while `trace` runs.
            unsafe { (h.vtable().trace[Mode::Discover as usize])(p, &mut tracer) };
        }
        if !trace_proven_late(members, late, &mut tracer) {
            break;
        }
    }
    add_ext_all(refs, late);
    st.closure_size(sc.seeds.len(), examined, n);
    // SAFETY: the first `examined` entries were written above, within the
    // capacity.
    unsafe { sc.order.set_len(examined) };
    let (candidates, unreachable, traced) = finish(members, sc, &mut tracer, true);
    // The positions examined lie in `lo..hi`, where the rebuild looks for
    // the unreachable, if any (otherwise it does not look). Found here, in
    // one pass the compiler vectorises, and not in the loop above, where
    // the two bounds lived in memory across the `trace` calls (8
    // instructions per member).
    sc.examined = if unreachable > 0 {
        let (lo, hi) = sc
            .order
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), &p| (lo.min(p), hi.max(p + 1)));
        lo as usize..hi as usize
    } else {
        0..0
    };
    Outcome {
        conservative: tracer.saw_external,
        candidates,
        traced,
        // (A `trace` that breaks rule 5 may have tracked objects past the
        // range meanwhile: then the count is unknown, and a rebuild is
        // always correct.)
        holes: (start + n == st.list().len())
            .then(|| n.checked_sub(st.tracked()))
            .flatten()
            .unwrap_or(n),
        unreachable,
    }
}

/// Counts the candidates phase 1 left, runs phase 2 if there are any,
/// gives the stack back; returns the number of candidates and of
/// unreachable members, and whether phase 2 traced.
///
/// In a full collection from the dirty seeds (Discover mode) and with
/// `links` (a range scan told to), phase 2 first follows the parent links
/// phase 1 recorded ([`resolve_through_parents`]); only when that
/// leaves a candidate that another edge could still reach does it trace
/// ([`move_unreachable`]).
///
/// Following the links costs a few instructions per candidate, reachable
/// or not, on two dense arrays; tracing costs a `trace` per reachable
/// member (reading its value and its targets' headers again) and nothing
/// for the garbage. Full collections from the dirty seeds follow the
/// links: their members are many and cold. Range scans (young
/// collections) follow them when the last range scan of their generation
/// found its candidates mostly reachable (objects still being built, as
/// a linked list that grows: then a second trace of each is saved), and
/// trace otherwise (candidates mostly garbage, as rings dropped as they
/// are built: links would cost for nothing); see `State::links_pay`.
fn finish<M: Members + ?Sized>(
    members: &M,
    sc: &mut Scratch,
    tracer: &mut Tracer,
    links: bool,
) -> (usize, usize, bool) {
    tracer.reached = 0;
    let mut traced = false;
    let discover = tracer.mode == Mode::Discover;
    let candidates = if links || discover {
        // SAFETY: phase 1 (Subtract or Discover mode) wrote the parent
        // link of every member an edge met, and every candidate was met
        // by one (no count is held on the members in Discover mode, and
        // `links` is only set when `held` is 0, so a candidate's strong
        // count, at least one, was cancelled by edges); the members
        // not in `order` are UNSEEN (Discover; a range scan examines
        // every member).
        // Discover: only the examined positions, in the order discovery
        // examined them (they were a quarter of the range they span in
        // stress).
        let (candidates, resolved, settled) = if discover {
            let order = &sc.order;
            // SAFETY: the parent links as the comment above says; `order`
            // holds each position discovery examined, once, each below
            // `refs.len()`, and the members outside it are UNSEEN.
            unsafe {
                resolve_through_parents(
                    members,
                    &sc.refs,
                    &sc.parents,
                    || order.iter().map(|&p| p as usize),
                    false,
                )
            }
        } else {
            let examined = sc.examined.clone();
            // SAFETY: phase 1 wrote the parent link of every member an
            // edge met, every candidate among them (the comment above);
            // a range scan examines every member, so `examined` yields
            // each position below `refs.len()` once.
            unsafe {
                resolve_through_parents(members, &sc.refs, &sc.parents, || examined.clone(), true)
            }
        };
        tracer.reached = resolved;
        if !settled {
            traced = true;
            move_unreachable(members, &sc.refs, candidates, tracer);
        }
        candidates
    } else {
        let candidates = count_candidates(&sc.refs);
        if candidates > 0 {
            traced = true;
            move_unreachable(members, &sc.refs, candidates, tracer);
        }
        candidates
    };
    sc.stack = std::mem::take(&mut tracer.stack);
    (candidates, candidates - tracer.reached, traced)
}

/// The number of candidates phase 1 left in `refs` (see
/// [`is_candidate`]), which holds only phase 1's values: counts (at most
/// `MAX_COUNT` + [`EXT`]) and [`REACHED`] (holes), none of phase 2's
/// marks. Among those values the candidates are exactly the ones `r <=
/// 0` other than `REACHED`, that is those for which `r - 1` (wrapping:
/// `REACHED - 1` is the largest value) is negative: a shift and an add
/// per entry, which the compiler vectorises (the compare `is_candidate`
/// makes, and its branch, do not: 7 instructions per member of a range
/// scan before; issue 9, eighth round).
fn count_candidates(refs: &[Cell<Refs>]) -> usize {
    let mut n = 0u64;
    for r in refs {
        let r = r.get();
        debug_assert!(
            r == REACHED || r > PENDING,
            "phase 2 value {r:#x} in phase 1's gc_refs"
        );
        n += ((r.wrapping_sub(1) as URefs) >> (URefs::BITS - 1)) as u64;
    }
    n as usize
}

/// Phase 2's first step: settles the candidates (members without outside
/// references, see [`is_candidate`]) through the parent links phase 1
/// recorded (each candidate's `parents` entry is a member with an edge to
/// it): a candidate whose chain of parents leads to a root (gc_refs > 0)
/// is reachable and marked [`RESOLVED`]; one whose chain loops or ends
/// among candidates is left [`PENDING`]. Each candidate is followed once
/// (the path is marked [`VISITING`] as it is walked, then walked again
/// to mark the outcome). Two passes first resolve each candidate whose
/// parent is already known reachable, in list order (a full collection
/// from the dirty seeds: in the order discovery examined them) and then
/// from the end, which settles the usual shapes before any chain is
/// walked. Returns the number of candidates, of those
/// resolved, and whether that settles phase 2.
///
/// It does when no pending candidate has more than one strong reference:
/// all their references are edges from members (candidates have no
/// outside references), so each one's only referrer is its parent,
/// itself pending; no edge enters the pending set from a reachable
/// member, so none of it is reachable: it is exactly the garbage.
/// Otherwise another edge may reach a pending candidate, and
/// [`move_unreachable`] decides by tracing. It does too when there are no
/// roots at all (nothing is reachable), without following anything.
/// Rings, chains and trees built or dropped as wholes are settled here,
/// in a few instructions per candidate on two dense arrays.
///
/// # Safety
/// `parents` has `refs.len()` entries, initialised for every member that
/// an edge reached in phase 1, which includes every candidate (its
/// gc_refs are its strong count, at least one, less the edges that met
/// it) and every member a link names (it traced the edge); the members
/// not among the positions `examined()` yields (each below `refs.len()`,
/// each once) are neither roots nor candidates.
unsafe fn resolve_through_parents<M, P, I>(
    members: &M,
    refs: &[Cell<Refs>],
    parents: &[MaybeUninit<u32>],
    examined: P,
    backward: bool,
) -> (usize, usize, bool)
where
    M: Members + ?Sized,
    P: Fn() -> I,
    I: DoubleEndedIterator<Item = usize>,
{
    let n = refs.len();
    assert!(parents.len() == n && members.len() == n);
    // SAFETY: called only for a candidate or a member a link names, whose
    // `parents` entry phase 1 initialised (this function's `# Safety`).
    let parent = |x: usize| unsafe { parents[x].assume_init() };
    let mut candidates = 0;
    let mut roots = 0;
    let mut resolved = 0;
    // One step of resolution: `t`, a candidate, is resolved if its parent
    // is already known reachable (a root, or resolved before).
    let step = |t: usize, resolved: &mut usize| {
        let p = parent(t);
        if p != NO_PARENT {
            let rp = refs[p as usize].get();
            if is_root(rp) || rp == RESOLVED {
                refs[t].set(RESOLVED);
                *resolved += 1;
            }
        }
    };
    // A first pass, in list order, counts the roots and the candidates
    // and takes one step from each candidate: objects linked from older
    // ones (a list grown at its tail, a ring or a tree built forwards)
    // settle here in one step each. (With no root, nothing is resolved.)
    // A range scan's links name each member's oldest referrer; a full
    // collection's, the last referrer its discovery met, examined before
    // the member in these shapes (its discovery follows their edges from
    // the first seed, in list order), so the pass in discovery order
    // settles them likewise, and visits only the examined members.
    for t in examined() {
        let r = refs[t].get();
        if is_root(r) {
            roots += 1;
        } else if is_candidate(r) {
            candidates += 1;
            step(t, &mut resolved);
        }
    }
    if candidates == 0 || roots == 0 {
        // Nothing, or nothing reachable: every candidate is garbage.
        return (candidates, 0, true);
    }
    if resolved == candidates {
        return (candidates, resolved, true);
    }
    if backward {
        // A second, from the end: objects linked from newer ones (a tree
        // built bottom-up) settle here likewise.
        for t in examined().rev() {
            if is_candidate(refs[t].get()) {
                step(t, &mut resolved);
            }
        }
        if resolved == candidates {
            return (candidates, resolved, true);
        }
    }
    let mut settled = true;
    // Candidates the walks left pending (the resolved ones are counted
    // in `resolved`, with the steps').
    let mut pending = 0;
    let stepped = resolved;
    for t in examined() {
        if !settled && pending > resolved - stepped {
            // A pending candidate may be reached by another edge, so phase
            // 2 will trace every reachable member: walking more chains
            // only lets it stop sooner, and while the walks mostly end
            // pending (garbage doubly linked, say) that will not happen.
            break;
        }
        let r = refs[t].get();
        if !is_candidate(r) || r == PENDING {
            continue;
        }
        // Walk the chain of parents from `t`, marking it, to its end.
        let mut x = t;
        let outcome = loop {
            let r = refs[x].get();
            if !is_candidate(r) {
                // A root or a resolved candidate.
                break RESOLVED;
            }
            if r == VISITING || r == PENDING {
                break PENDING;
            }
            refs[x].set(VISITING);
            let p = parent(x);
            if p == NO_PARENT {
                break PENDING;
            }
            x = p as usize;
        };
        // Walk it again, marking the outcome (the marked members are
        // exactly those still VISITING along it).
        let mut x = t;
        while refs[x].get() == VISITING {
            refs[x].set(outcome);
            if outcome == RESOLVED {
                resolved += 1;
            } else {
                pending += 1;
                if settled {
                    // SAFETY: x < n; a member (a candidate) of the range.
                    let p = unsafe { members.get(x) };
                    // A null one was freed by a `trace` (rule 5 broken):
                    // unknown, so trace.
                    settled = !p.is_null() && strong_refs(p) <= 1;
                }
            }
            let p = parent(x);
            if p == NO_PARENT {
                break;
            }
            x = p as usize;
        }
    }
    (candidates, resolved, settled)
}

/// Traces the members of `late` (lent out by `Gc::get_mut` when phase 1
/// met them) whose flag an edge has since proved stale, and removes them;
/// returns whether any was.
fn trace_proven_late<M: Members + ?Sized>(
    members: &M,
    late: &mut Vec<usize>,
    tracer: &mut Tracer,
) -> bool {
    let before = late.len();
    late.retain(|&pos| {
        // SAFETY: positions in `late` are below members.len().
        let p = unsafe { members.get(pos) };
        if p.is_null() {
            // Freed by a `trace` that broke rule 5: nothing to trace.
            return false;
        }
        // SAFETY: a non-null member is a listed object, live.
        let h = unsafe { GcHeader::of(p) };
        if h.has(LENT_MUT) {
            return true;
        }
        tracer.current = pos;
        // SAFETY: the flag was cleared by a proof that no `&mut` to the
        // value is alive; live value.
        unsafe { (h.vtable().trace[tracer.mode as usize])(p, tracer) };
        false
    });
    late.len() != before
}

/// Makes `refs` `n` zeroes. A buffer too small is replaced by a zeroed
/// allocation (fresh pages from the system need no clearing).
fn zeroed_refs(refs: &mut Vec<Cell<Refs>>, n: usize) {
    if refs.capacity() < n {
        let mut v = std::mem::ManuallyDrop::new(vec![0 as Refs; n]);
        // SAFETY: `Cell<Refs>` is `repr(transparent)` over `Refs`, so the
        // buffer (allocated for `Refs` with this capacity and alignment)
        // is a valid buffer of as many initialised `Cell<Refs>`.
        *refs = unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) };
    } else {
        refs.clear();
        refs.resize(n, Cell::new(0));
    }
}

/// Phase 1, CPython's `update_refs` and `subtract_refs` fused additively:
/// each member's gc_refs get its strong count (less `held`), and each
/// edge to a member found by tracing subtracts one. Makes the members
/// clean if `clear_dirty`. Holes get [`REACHED`] (they are no
/// candidates); returns their number. Members are traced in list order,
/// or newest first if `newest_first` (see [`find_reachable`]).
///
/// A member flagged `LENT_MUT` whose counts do not prove its `&mut` ended
/// is not traced yet; an edge to it met later may prove it, and it is
/// traced then; the rest get [`EXT`]: referenced from outside, their
/// targets (whose edges were not subtracted) likewise.
fn update_and_subtract_refs<M: Members + ?Sized>(
    members: &M,
    held: Refs,
    clear_dirty: bool,
    newest_first: bool,
    refs: &[Cell<Refs>],
    late: &mut Vec<usize>,
    tracer: &mut Tracer,
) -> usize {
    late.clear();
    let mut holes = 0;
    assert_eq!(refs.len(), members.len());
    if newest_first {
        // Newest first, so that each member's parent link (its last
        // referrer) is its oldest: chains then lead towards older
        // members (a list grown at its tail links each node to the one
        // before, not the one after, which loops at the tail), and
        // `resolve_through_parents` settles them in list order.
        for pos in (0..refs.len()).rev() {
            // SAFETY: pos < refs.len() == members.len() (asserted above).
            unsafe {
                subtract_one(
                    members,
                    pos,
                    held,
                    clear_dirty,
                    refs,
                    late,
                    tracer,
                    &mut holes,
                )
            };
        }
    } else {
        // In list order, Count mode traces runs of plain members of one
        // type per call when no count is held (see `Tracer::count_run`);
        // a run leaves `current` at the last member it traced, where the
        // loop resumes. Full collections only: a young generation's
        // members are mostly dirty (just decremented), which ends a run at
        // once, so the runs' checks only cost there (doubly linked lists,
        // `gc_paths pymem dlists`: 95.54M instructions with runs in every
        // scan, 91.3M without).
        if tracer.mode == Mode::Count && held == 0 && clear_dirty {
            // (n == refs.len() == members.len(): the slots of the members,
            // which stay put during the phases, see `Members::slots`.)
            tracer.run_first = members.slots();
            tracer.run_end = refs.len();
        }
        let next = |tracer: &Tracer, pos: usize| tracer.current.wrapping_add(1).max(pos + 1);
        let mut pos = 0;
        if clear_dirty {
            while pos < refs.len() {
                // SAFETY: pos < refs.len() == members.len() (asserted above).
                unsafe { subtract_one(members, pos, held, true, refs, late, tracer, &mut holes) };
                pos = next(tracer, pos);
            }
        } else {
            while pos < refs.len() {
                // SAFETY: pos < refs.len() == members.len() (asserted above).
                unsafe { subtract_one(members, pos, held, false, refs, late, tracer, &mut holes) };
                pos = next(tracer, pos);
            }
        }
        tracer.run_end = 0;
    }
    // The members lent out by `Gc::get_mut`: trace those an edge proved
    // since (which may prove more), until nothing changes.
    while trace_proven_late(members, late, tracer) {}
    add_ext_all(refs, late);
    holes
}

/// Phase 1 for member `pos` (see [`update_and_subtract_refs`]): counts
/// a hole in `holes` (incremented on the hole's branch only: a count
/// returned by every call cost two instructions per member after the
/// `trace` call, LLVM adding a zero it rematerialised).
///
/// # Safety
/// `pos < refs.len() == members.len()`.
// (Eight arguments: the loop's state, passed apart so that it stays in
// registers across the inlined calls.)
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn subtract_one<M: Members + ?Sized>(
    members: &M,
    pos: usize,
    held: Refs,
    clear_dirty: bool,
    refs: &[Cell<Refs>],
    late: &mut Vec<usize>,
    tracer: &mut Tracer,
    holes: &mut usize,
) {
    // SAFETY: pos < refs.len() (this function's `# Safety`).
    let r = unsafe { refs.get_unchecked(pos) };
    // SAFETY: pos < members.len() (this function's `# Safety`).
    let p = unsafe { members.get(pos) };
    if p.is_null() {
        r.set(REACHED);
        *holes += 1;
        return;
    }
    // SAFETY: non-null members are live tracked objects with live values
    // (the list's invariant; the garbage is held by the collector).
    let h = unsafe { GcHeader::of(p) };
    let w = h.gc.get();
    r.set(r.get().wrapping_add(strong_refs(p) - held));
    if w & (CLEAN | LENT_MUT) != CLEAN {
        if clear_dirty {
            h.gc.set(w | CLEAN);
        }
        if w & LENT_MUT != 0 && !lent_mut_ended(p, h) {
            late.push(pos);
            return;
        }
    }
    tracer.current = pos;
    // SAFETY: `p` is a live tracked object with a live value (the list's
    // invariant, checked non-null above), whose vtable is its type's; its
    // value is not lent out by `get_mut` (tested just above), so `trace`
    // may read it; `refs` is only accessed through the tracer while
    // `trace` runs.
    unsafe { (h.vtable().trace[tracer.mode as usize])(p, tracer) };
}

/// Phase 2, CPython's `move_unreachable`: of the `candidates` (members
/// without outside references, see [`is_candidate`]), marks [`REACHED`]
/// every one reachable from a member with outside references (gc_refs >
/// 0, or `EXT`) or already [`RESOLVED`] (reached through the parent
/// links; `tracer.reached` counts them), by tracing those and the
/// candidates they reach, with an explicit stack. Stops as soon as every
/// candidate is reached: then nothing is unreachable. (Recording every
/// edge in phase 1 to walk them here cost more than it saved, measured
/// twice; the parent links record one per member.)
fn move_unreachable<M: Members + ?Sized>(
    members: &M,
    refs: &[Cell<Refs>],
    candidates: usize,
    tracer: &mut Tracer,
) {
    assert_eq!(refs.len(), members.len());
    tracer.mode = Mode::Mark;
    tracer.current = usize::MAX;
    // One slot per candidate: the most the stack can hold (see
    // `Tracer::mark`).
    tracer.stack.clear();
    tracer.stack.reserve(candidates);
    // The next member to trace from: a root or a resolved candidate (the
    // others are candidates, reached or not, holes, or unseen). Looked for
    // by a scan of `refs` alone, `reached` tested once per member found
    // rather than at every position (it lives in the tracer, which every
    // `trace` call may change: reloaded at each of them).
    let from = |c: &Cell<Refs>| {
        let c = c.get();
        is_root(c) || c == RESOLVED
    };
    let mut next = 0;
    while tracer.reached != candidates {
        let Some(found) = refs[next..].iter().position(from) else {
            break;
        };
        let pos = next + found;
        next = pos + 1;
        let mut q = pos;
        loop {
            // SAFETY: q < refs.len() == members.len() (a position of `refs`
            // or one the tracer bounded by n).
            let p = unsafe { members.get(q) };
            // Roots and reached candidates were listed when met, but a
            // `trace` that breaks rule 5 can free one since (its slot is
            // then null): skip it.
            // SAFETY: a non-null member is a listed object, live.
            let h = (!p.is_null()).then(|| unsafe { GcHeader::of(p) });
            // A member still lent out was not traced in phase 1 either: its
            // targets count its edges as outside references (roots).
            if let Some(h) = h.filter(|h| !h.has(LENT_MUT)) {
                // SAFETY: a live member with a live value, not lent out.
                unsafe { (h.vtable().trace[tracer.mode as usize])(p, tracer) };
            }
            match tracer.stack.pop() {
                Some(t) => q = t,
                None => break,
            }
        }
    }
}

/// Phase 3: packs the reachable members of the list range `[start, end)`
/// at its start (re-indexing the moved ones), then what was allocated
/// during the phases; moves the generation boundaries so the survivors
/// join generation `g + 1`; gathers the unreachable into `garbage`, now
/// out of the list. Returns the number of survivors. Nothing moves when
/// the range has neither holes nor garbage, nor when they are under a
/// quarter of it ([`COMPACT`]): the garbage's slots become holes, which
/// the refcount free makes too, and a later collection of the range
/// squeezes out once they are many. (Packing writes the new index into
/// the header of every survivor after the first hole, a cold line each:
/// stress, 32 full collections each finding a few hundred unreachable
/// among 30K members, spent a third of the collector's instructions
/// there; issue 9, eighth round.) The unreachable lie in `examined`
/// (the positions a full collection from the dirty seeds examined; the
/// whole range otherwise).
#[allow(clippy::too_many_arguments)]
fn rebuild_and_promote(
    st: &State,
    g: usize,
    start: usize,
    end: usize,
    refs: &[Cell<Refs>],
    examined: Range<usize>,
    outcome: &Outcome,
    garbage: &mut Vec<ObjPtr>,
) -> usize {
    let list = st.list();
    garbage.clear();
    let mut k = start;
    let n = end - start;
    if outcome.holes == 0 && outcome.unreachable == 0 {
        k = end;
    } else if (outcome.holes + outcome.unreachable) * COMPACT < n {
        // Few holes: the garbage's slots become holes in place.
        garbage.reserve(outcome.unreachable);
        if outcome.unreachable > 0 {
            for pos in examined {
                if is_candidate(refs[pos].get()) {
                    // SAFETY: start + pos < end <= list.len().
                    let p = unsafe { list.get_unchecked(start + pos) };
                    if !p.is_null() {
                        garbage.push(p);
                        // SAFETY: start + pos < end <= list.len(), the
                        // position just read; the object leaves the list
                        // (flagged UNTRACKED by `handle_weakrefs` before
                        // any other code runs).
                        unsafe { list.set_unchecked(start + pos, std::ptr::null()) };
                    }
                }
            }
        }
        st.promote(g, end);
        st.forget_unreachable(garbage.len());
        // (Saturating: the count of holes is exact unless a `trace` broke
        // its contract, and the survivors only feed statistics.)
        return n.saturating_sub(outcome.holes + garbage.len());
    } else {
        garbage.reserve(outcome.unreachable);
        for (pos, r) in refs.iter().enumerate() {
            // SAFETY: start + pos < end <= list.len().
            let p = unsafe { list.get_unchecked(start + pos) };
            if p.is_null() {
                continue;
            }
            if !is_candidate(r.get()) {
                if k != start + pos {
                    // SAFETY: k < start + pos < len; a live list entry.
                    unsafe {
                        list.set_unchecked(k, p);
                        GcHeader::of(p).set_index(k);
                    }
                    st.move_slot_bit(start + pos, k);
                }
                k += 1;
            } else {
                garbage.push(p);
            }
        }
    }
    let moved = list.move_tail(end, k);
    if k != end {
        for i in k..k + moved {
            let p = list.get(i);
            if !p.is_null() {
                // SAFETY: live list entry.
                unsafe { GcHeader::of(p) }.set_index(i);
            }
            st.move_slot_bit(end + (i - k), i);
        }
    }
    st.promote(g, k);
    st.forget_unreachable(garbage.len());
    k - start
}

/// A collection packs its range (see [`rebuild_and_promote`]) when its
/// holes and garbage make at least `1 / COMPACT` of it.
const COMPACT: usize = 4;

/// The collector's working arrays, kept between collections (when
/// small) so that the frequent young collections allocate nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    /// gc_refs per member position.
    pub(crate) refs: Vec<Cell<Refs>>,
    stack: Vec<usize>,
    /// The dirty seeds of a full collection (range positions).
    seeds: Vec<usize>,
    /// Members lent out by `Gc::get_mut` not traced yet.
    late: Vec<usize>,
    garbage: Vec<ObjPtr>,
    /// The parent links of a full collection's phase 1 (see
    /// [`Tracer::parents`] and [`resolve_through_parents`]).
    parents: Vec<MaybeUninit<u32>>,
    /// The positions a full collection from the dirty seeds examined lie
    /// in this range (left empty when it found nothing unreachable: the
    /// rebuild then does not look).
    examined: Range<usize>,
    /// Those positions, in the order they were examined (see
    /// [`find_reachable_from_dirty`]).
    order: Vec<u32>,
}

impl Scratch {
    /// Room for `n` parent links, none written yet; the pointer the
    /// tracer writes them through.
    fn parents_for(&mut self, n: usize) -> *mut u32 {
        // A range of 2^32 members (a 128 GiB heap) would need wider links.
        assert!(
            n < NO_PARENT as usize,
            "pymem: too many objects in one collection"
        );
        // Not initialised: only the entries of examined members are
        // written and read (see `discover` and `resolve_through_parents`).
        self.parents.clear();
        self.parents.resize(n, MaybeUninit::uninit());
        self.parents.as_mut_ptr().cast()
    }
}

/// Buffers of up to this many entries are kept for the next collection,
/// and larger ones up to twice the list's capacity ([`keep_limit`]); the
/// others are freed.
///
/// Keeping buffers as large as the list matters: a full collection of a
/// large heap would otherwise allocate its arrays afresh each time, and
/// fresh memory is faulted in page by page (rings_held, pymem/Rc,
/// interleaved medians: 2.58x with a fixed 64K-entry limit, 2.10x with
/// buffers kept). The price is memory that follows the largest heap, as
/// the list's own capacity does (it never shrinks either): the gc_refs
/// (4 bytes per list slot), and the other arrays (parent links, stack,
/// garbage) as far as a collection used them (untouched capacity costs
/// address space, not memory).
const KEEP: usize = 1 << 16;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Initialises the kept work arrays' thread-local, so that its destructor
/// is registered before the collector's teardown and frees what the exit
/// collections kept (see `state::register_owner`). A collection run by the
/// teardown itself, after every thread-local destructor, finds it gone
/// and frees its arrays at once instead of keeping them (touched first
/// then, it would register a destructor that never runs: a leak per
/// thread, found by review).
pub(crate) fn keep_through_teardown() {
    let _ = SCRATCH.try_with(|_| ());
}

/// The length of the kept parent-links array (tests: whether a
/// collection sized it).
#[cfg(test)]
pub(crate) fn kept_parents_len() -> usize {
    SCRATCH
        .try_with(|s| {
            let sc = s.take();
            let len = sc.as_ref().map_or(0, |sc| sc.parents.len());
            s.set(sc);
            len
        })
        .unwrap_or(0)
}

impl Scratch {
    fn take() -> Box<Scratch> {
        SCRATCH
            .try_with(|s| s.take())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps the arrays of at most `keep` entries (see [`KEEP`]) for the
    /// next collection.
    fn put_back(mut self: Box<Self>, keep: usize) {
        shrink_to(&mut self.refs, keep);
        shrink_to(&mut self.seeds, keep);
        shrink_to(&mut self.stack, keep);
        shrink_to(&mut self.late, keep);
        shrink_to(&mut self.parents, keep);
        shrink_to(&mut self.order, keep);
        let _ = SCRATCH.try_with(|s| s.set(Some(self)));
    }

    /// Gives the garbage vector (emptied, if of at most `keep` entries)
    /// back to the kept arrays.
    fn return_garbage(mut garbage: Vec<ObjPtr>, keep: usize) {
        garbage.clear();
        shrink_to(&mut garbage, keep);
        let _ = SCRATCH.try_with(|s| {
            if let Some(mut sc) = s.take() {
                sc.garbage = garbage;
                s.set(Some(sc));
            }
        });
    }
}

/// The most entries a buffer may keep (see [`KEEP`]): twice the list's
/// capacity, which never shrinks (a buffer grown for a range may have
/// twice the room it needed).
fn keep_limit(st: &State) -> usize {
    KEEP.max(2 * st.list().cap())
}

/// Frees `v`'s buffer if it holds more than `keep` entries.
fn shrink_to<T>(v: &mut Vec<T>, keep: usize) {
    if v.capacity() > keep {
        *v = Vec::new();
    }
}
