//! The collector proper: CPython's `gc_collect_main`, phase by phase.
//!
//! Collecting generation `g` examines the list range of generations
//! `0..=g` (contiguous, see `generations`). The gc_refs live in a side
//! array indexed by range position rather than in the headers (which keep
//! their list index), so an object that survives without moving is only
//! ever read, never written:
//!
//! 1. **`update_refs` + `subtract_refs`**, fused: trace every object of the
//!    range in list order; an object's gc_refs start as its strong count
//!    the first time it is met (as a source or as a target); each edge to
//!    an object of the range (its index says so) decrements its gc_refs.
//!    What remains is the number of references from outside the range.
//! 2. **`move_unreachable`**: objects with gc_refs > 0 (or met with a
//!    mutably borrowed `RefCell`) are roots; everything reachable from
//!    them inside the range is marked, with an explicit stack of
//!    positions (no recursion). The rest is unreachable.
//! 3. **rebuild and promote**: reachable objects are packed at the start
//!    of the range (only moved ones get their index rewritten), objects
//!    allocated meanwhile follow; boundaries move so survivors join
//!    generation `g + 1`.
//! 4. **`handle_weakrefs`**: every unreachable object is marked `DEAD` and
//!    `UNTRACKED`, and the collector takes a strong count on it, so
//!    `Weak::upgrade` fails for all of them before any value is dropped and
//!    none can be freed under the collector's feet. Then PEP 442 finalizers
//!    run, followed by a resurrection check (see `finalize`).
//! 5. **`delete_garbage`**: values are dropped one by one, each marked
//!    `DROPPED` first (so a `Drop` reaching a dropped member panics instead
//!    of reading freed data), under `catch_unwind`. Then the collector's
//!    counts are released: memory is freed where no handle remains; a
//!    handle cloned by a `Drop` (resurrection) keeps the memory valid.
//!    The first panic is resumed once all of this is done.
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
//! object instead): Bacon and Rajan's observation. `Gc::drop` flags the
//! object `DIRTY` on such a decrement; the first time, it sets the bit of
//! the object's generation in the thread's `dirty` mask. A collection of
//! generation `g` whose bits `0..=g` are all clear cannot find anything,
//! so it only promotes (O(1)) and updates counts and statistics. A real
//! collection of `g` clears the flags of the objects it examined and the
//! bits `0..=g`, and sets bit `g + 1`: a garbage set spanning older
//! generations was not found, and its flagged member now lives in `g + 1`.
//! Events while the gc words hold gc_refs, `unfreeze` (frozen members of
//! a cycle rejoin generation 2) and, later, finalizer resurrection set
//! bits conservatively, and so does a collection that met a mutably
//! borrowed `RefCell` (it may have kept garbage alive).
//! `Weak::upgrade` only adds references.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use super::generations::{strong, State};
use super::header::{
    release_implicit_weak, GcHeader, ObjPtr, DEAD, DIRTY, DROPPED, LENT_MUT, SHIFT, UNTRACKED,
};
use super::tracer::{is_root, lent_mut_ended, strong_refs, Mode, Refs, Tracer, EXT, REACHED};
use super::trashcan;
use super::GenStats;

type Panic = Box<dyn Any + Send + 'static>;

/// Every dirty bit of generations 0..=2.
pub(crate) const ALL_DIRTY: u8 = 0b111;

impl State {
    /// Runs CPython's automatic collection check, then tracks `obj` (a
    /// fresh allocation) in generation 0.
    ///
    /// The fast path (no collection due, room in the list) is a handful of
    /// instructions inlined into `Gc::new`; everything else is in
    /// [`track_slow`](Self::track_slow).
    #[inline(always)]
    pub(crate) fn maybe_collect_then_track(&self, obj: ObjPtr, h: &GcHeader) {
        let c = self.count[0].get();
        let len = self.list.len();
        if c > self.threshold[0].get() || len == self.list.cap() {
            return self.track_slow(obj, h);
        }
        // SAFETY: len < cap (checked above).
        unsafe { self.list.push_within_cap(obj) };
        h.gc.set(len << SHIFT);
        self.live.set(self.live.get() + 1);
        self.count[0].set(c + 1);
    }

    /// `maybe_collect_then_track` when a collection is due or the list is
    /// full.
    #[cold]
    #[inline(never)]
    fn track_slow(&self, obj: ObjPtr, h: &GcHeader) {
        if self.count[0].get() > self.threshold[0].get() {
            self.collect_automatic();
        }
        self.track(obj, h);
    }

    /// CPython's `collect_generations`.
    #[cold]
    #[inline(never)]
    pub(crate) fn collect_automatic(&self) {
        if !self.enabled.get()
            || self.collecting.get()
            || self.dead.get()
            || self.threshold[0].get() == 0
        {
            return;
        }
        for g in (0..3).rev() {
            if self.count[g].get() > self.threshold[g].get() {
                if g == 2 && self.long_lived_pending.get() < self.long_lived_total.get() / 4 {
                    continue;
                }
                self.collect(g);
                break;
            }
        }
    }

    /// CPython's `gc_collect_main` for generation `g` (with the younger
    /// ones): returns the number of unreachable objects found.
    pub(crate) fn collect(&self, g: usize) -> usize {
        assert!(g < 3, "pymem: invalid generation {g} (0, 1 or 2)");
        if self.collecting.get() || self.dead.get() {
            return 0;
        }
        self.collecting.set(true);
        // debug hook: DEBUG_STATS and gc::callbacks ("start")
        let session = super::debug::collection_start(self, g);
        if g + 1 < 3 {
            self.count[g + 1].set(self.count[g + 1].get() + 1);
        }
        for i in 0..=g {
            self.count[i].set(0);
        }
        let mask = (1u8 << (g + 1)) - 1;
        let (found, survivors, panic) = if self.skip_enabled.get() && self.dirty.get() & mask == 0 {
            let survivors = self.list.len() - self.range_start(g);
            self.promote(g, self.list.len());
            self.skipped[g].set(self.skipped[g].get() + 1);
            (0, survivors, None)
        } else {
            self.collect_real(g)
        };
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
        // debug hook: DEBUG_STATS and gc::callbacks ("stop")
        let panic = panic.or(super::debug::collection_stop(session, g, found));
        self.collecting.set(false);
        if let Some(p) = panic {
            resume_unwind(p);
        }
        found
    }

    /// A real collection: returns (unreachable found, survivors, first
    /// panic of a `Drop`).
    fn collect_real(&self, g: usize) -> (usize, usize, Option<Panic>) {
        let start = self.range_start(g);
        let end = self.list.len();
        let n = end - start;
        self.in_phases.set(true);
        let mut guard = PhaseGuard {
            st: self,
            armed: true,
        };
        let mut sc = Scratch::take();
        // Shared between this function and the tracer: cells, so both sides
        // only ever hold shared references.
        sc.refs.clear();
        sc.refs.resize(n, Cell::new(0));
        sc.off.clear();
        sc.off.reserve(n + 1);
        sc.off.push(0);
        let refs: &[Cell<Refs>] = &sc.refs;
        let mut tracer = Tracer::new(start, n, refs.as_ptr());
        let mut late: Vec<usize> = Vec::new();
        tracer.edges = std::mem::take(&mut sc.edges);
        tracer.edges.clear();
        tracer.stack = std::mem::take(&mut sc.stack);
        tracer.stack.clear();
        tracer.edge_limit = if n < u32::MAX as usize {
            self.edge_limit.get().min(u32::MAX as usize)
        } else {
            0
        };

        // update_refs + subtract_refs, recording the edges into the range.
        for (pos, r) in refs.iter().enumerate() {
            // The list only grows during the phases (a `trace` that breaks
            // its contract may allocate), so start + pos < len.
            let p = self.list.get_unchecked(start + pos);
            if !p.is_null() {
                // SAFETY: non-null list entries are live tracked objects
                // with live values.
                let h = unsafe { GcHeader::of(p) };
                let w = h.gc.get();
                if w & DIRTY != 0 {
                    h.gc.set(w & !DIRTY);
                }
                r.set(r.get() + strong_refs(p));
                if w & LENT_MUT == 0 || lent_mut_ended(p, h) {
                    tracer.current = pos;
                    // SAFETY: as above; `refs` is only accessed through the
                    // tracer while `trace` runs.
                    unsafe { (h.vtable.trace)(p, &mut tracer) };
                } else {
                    late.push(pos);
                }
            }
            // (Meaningless once `overflowed`: then the edges are unused.)
            sc.off.push(tracer.edges.len() as u32);
        }
        // Objects whose `&mut` from `Gc::get_mut` may still be alive: an
        // edge met since may have proven it ended; trace those now (which
        // may prove more), and treat the rest as referenced from outside.
        loop {
            let before = late.len();
            late.retain(|&pos| {
                let p = self.list.get_unchecked(start + pos);
                // SAFETY: live list entry (it was non-null above and nothing
                // frees during the phases).
                let h = unsafe { GcHeader::of(p) };
                if h.has(LENT_MUT) {
                    return true;
                }
                tracer.current = pos;
                // SAFETY: the flag was cleared by a proof that no `&mut` to
                // the value is alive; live value.
                unsafe { (h.vtable.trace)(p, &mut tracer) };
                // Edges recorded out of list order: walk by tracing again.
                tracer.overflowed = true;
                false
            });
            if late.len() == before {
                break;
            }
        }
        for &pos in &late {
            let c = &refs[pos];
            c.set(c.get() + EXT);
        }

        // move_unreachable: everything reachable from an object with
        // outside references (gc_refs > 0, or EXT) is REACHED.
        let mut stack = std::mem::take(&mut tracer.stack);
        if !tracer.overflowed {
            mark_recorded(refs, &sc.off, &tracer.edges, &mut stack);
        } else {
            // Too many edges to record: trace the reachable objects again.
            tracer.mode = Mode::Mark;
            tracer.current = usize::MAX;
            tracer.stack = stack;
            for (pos, c) in refs.iter().enumerate() {
                let r = c.get();
                if !is_root(r) {
                    continue; // reached already, or no outside reference (or a hole)
                }
                c.set(REACHED);
                tracer.stack.push(pos);
                while let Some(q) = tracer.stack.pop() {
                    let p = self.list.get_unchecked(start + q);
                    if p.is_null() {
                        continue;
                    }
                    // SAFETY: live list entry.
                    let h = unsafe { GcHeader::of(p) };
                    if h.has(LENT_MUT) {
                        continue; // not readable: its targets are roots
                    }
                    // SAFETY: live list entry with a live value, not lent.
                    unsafe { (h.vtable.trace)(p, &mut tracer) };
                }
            }
            stack = std::mem::take(&mut tracer.stack);
        }
        let saw_external = tracer.saw_external;
        sc.edges = std::mem::take(&mut tracer.edges);
        sc.stack = stack;

        // Rebuild the range: survivors packed (moved ones re-indexed), the
        // unreachable gathered, then what was allocated meanwhile.
        let mut garbage = std::mem::take(&mut sc.garbage);
        garbage.clear();
        let mut k = start;
        for (pos, r) in refs.iter().enumerate() {
            let p = self.list.get_unchecked(start + pos);
            if p.is_null() {
                continue;
            }
            if r.get() == REACHED {
                if k != start + pos {
                    self.list.set_unchecked(k, p);
                    // SAFETY: live list entry.
                    unsafe { GcHeader::of(p) }.set_word(k);
                }
                k += 1;
            } else {
                garbage.push(p);
            }
        }
        let moved = self.list.move_tail(end, k);
        for i in k..k + moved {
            let p = self.list.get(i);
            if !p.is_null() {
                // SAFETY: live list entry.
                unsafe { GcHeader::of(p) }.set_word(i);
            }
        }
        guard.armed = false;
        drop(guard);
        self.in_phases.set(false);
        let survivors = k - start;
        self.promote(g, k);
        self.live.set(self.live.get() - garbage.len());

        // The dirty mask: generations 0..=g were examined; what they held
        // that could still be part of garbage spanning older generations
        // moved to g + 1.
        let mask = (1u8 << (g + 1)) - 1;
        let mut d = self.dirty.get();
        if d & mask != 0 && g < 2 {
            d |= 1 << (g + 1);
        }
        d &= !mask;
        if self.dirty_in_phases.replace(false) {
            d |= ALL_DIRTY;
        }
        if saw_external {
            // Garbage may have been kept conservatively; it now lives in
            // the generation the survivors joined.
            d |= 1 << (g + 1).min(2);
        }
        self.dirty.set(d);

        // handle_weakrefs: all of the garbage is dead for Weak::upgrade
        // before any value drops, and held by the collector.
        for &p in &garbage {
            // SAFETY: garbage objects are live (their strong counts come
            // from each other).
            let h = unsafe { GcHeader::of(p) };
            h.set_flags(UNTRACKED | DEAD | DIRTY);
            let s = strong(p);
            s.set(s.get() + 1);
        }
        // finalizers, resurrection, DEBUG_COLLECTABLE / DEBUG_SAVEALL, then
        // delete_garbage and weak callbacks (see `finalize`)
        let (found, panic) = super::finalize::reclaim(self, &mut garbage);
        sc.garbage = garbage;
        sc.put_back();
        (found, survivors, panic)
    }

    /// Drops the values of the garbage (already `DEAD`), then releases the
    /// collector's counts, freeing what no handle holds.
    pub(crate) fn delete_garbage(&self, garbage: &[ObjPtr]) -> Option<Panic> {
        let mut first: Option<Panic> = None;
        let mut i = 0;
        // One `catch_unwind` per run of drops that do not panic: after a
        // panic, carry on with the next object.
        while i < garbage.len() {
            let r = catch_unwind(AssertUnwindSafe(|| {
                trashcan::nested(self, || {
                    while i < garbage.len() {
                        let p = garbage[i];
                        i += 1;
                        // SAFETY: we hold a strong count on every garbage
                        // object, so its header is live.
                        let h = unsafe { GcHeader::of(p) };
                        if !h.has(DROPPED) {
                            h.set_flags(DROPPED);
                            // SAFETY: the value is live (not DROPPED until
                            // just now) and dropped exactly once, here.
                            unsafe { (h.vtable.drop_value)(p) }
                        }
                    }
                })
            }));
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        for &p in garbage {
            let s = strong(p);
            let n = s.get() - 1;
            s.set(n);
            if n == 0 {
                // SAFETY: value dropped above; no strong handle remains.
                unsafe { release_implicit_weak(p) };
            }
        }
        first
    }
}

/// Abandons a collection whose `trace` panicked: headers hold their
/// indices throughout, so only the state flags need resetting; every
/// generation is marked dirty (some DIRTY flags were cleared).
struct PhaseGuard<'a> {
    st: &'a State,
    armed: bool,
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let st = self.st;
            st.in_phases.set(false);
            st.dirty_in_phases.set(false);
            st.dirty.set(ALL_DIRTY);
            st.collecting.set(false);
        }
    }
}

/// `move_unreachable` over the recorded edges: every object with
/// outside references (gc_refs > 0, or `EXT`) and everything reachable
/// from it gets `REACHED`. Depth first with an explicit stack; the first
/// unreached target of an object is followed directly.
fn mark_recorded(refs: &[Cell<Refs>], off: &[u32], edges: &[u32], stack: &mut Vec<usize>) {
    let n = refs.len();
    assert!(off.len() == n + 1 && off[n] as usize == edges.len());
    for (pos, c) in refs.iter().enumerate() {
        let r = c.get();
        if !is_root(r) {
            continue; // reached already, or no outside reference (or a hole)
        }
        c.set(REACHED);
        let mut q = pos;
        loop {
            // SAFETY: q < n (positions come from `refs` or from `edges`,
            // whose entries the tracer bounded by n), off has n + 1
            // entries, non-decreasing, the last being edges.len().
            let (a, b) = unsafe {
                (
                    *off.get_unchecked(q) as usize,
                    *off.get_unchecked(q + 1) as usize,
                )
            };
            let mut next = usize::MAX;
            // SAFETY: a <= b <= edges.len() (see above).
            for &t in unsafe { edges.get_unchecked(a..b) } {
                let t = t as usize;
                // SAFETY: t < n (see above).
                let c = unsafe { refs.get_unchecked(t) };
                if c.get() != REACHED {
                    c.set(REACHED);
                    if next == usize::MAX {
                        next = t;
                    } else {
                        stack.push(t);
                    }
                }
            }
            q = if next != usize::MAX {
                next
            } else {
                match stack.pop() {
                    Some(t) => t,
                    None => break,
                }
            };
        }
    }
}

/// The collector's working arrays, kept between collections (when
/// small) so that the frequent young collections allocate nothing.
#[derive(Default)]
struct Scratch {
    /// gc_refs per range position.
    refs: Vec<Cell<Refs>>,
    /// Where the recorded edges of each range position end (`n + 1`
    /// entries, the first 0).
    off: Vec<u32>,
    edges: Vec<u32>,
    stack: Vec<usize>,
    garbage: Vec<ObjPtr>,
}

/// Buffers larger than this many entries are freed after a collection
/// instead of being kept for the next one.
const KEEP: usize = 1 << 16;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

impl Scratch {
    fn take() -> Box<Scratch> {
        SCRATCH
            .try_with(|s| s.take())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps the (small) arrays for the next collection.
    fn put_back(mut self: Box<Self>) {
        self.garbage.clear();
        for_small(&mut self.refs);
        for_small(&mut self.off);
        for_small(&mut self.edges);
        for_small(&mut self.stack);
        for_small(&mut self.garbage);
        let _ = SCRATCH.try_with(|s| s.set(Some(self)));
    }
}

/// Frees `v`'s buffer if it is large.
fn for_small<T>(v: &mut Vec<T>) {
    if v.capacity() > KEEP {
        *v = Vec::new();
    }
}

impl State {
    /// A snapshot of the statistics.
    pub(crate) fn stats(&self) -> [GenStats; 3] {
        [
            self.stats[0].get(),
            self.stats[1].get(),
            self.stats[2].get(),
        ]
    }
}
