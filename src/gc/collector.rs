//! The collector proper: CPython's `gc_collect_main`, phase by phase.
//!
//! Collecting generation `g` examines the list range of generations
//! `0..=g` (contiguous, see `generations`):
//!
//! 1. **`update_refs`**: squeeze holes out of the range; for each object
//!    copy its strong count into the gc word (`gc_refs`), set
//!    `COLLECTING`, and take one extra strong count so that nothing in the
//!    range can be freed while the collector holds raw pointers to it.
//! 2. **`subtract_refs`**: trace every object in the range; each edge to
//!    a `COLLECTING` object decrements its `gc_refs`. What remains is the
//!    number of references from outside the range.
//! 3. **`move_unreachable`**: objects with `gc_refs > 0` (or `EXTERNAL`,
//!    a mutably borrowed `RefCell`) are roots; everything reachable from
//!    them inside the range is marked `REACHABLE`, with an explicit stack
//!    (no recursion). The rest is unreachable.
//! 4. **rebuild and promote**: reachable objects are packed at the start
//!    of the range with their new indices, objects allocated meanwhile
//!    follow; boundaries move so survivors join generation `g + 1`.
//! 5. **`handle_weakrefs`**: every unreachable object is marked `DEAD` and
//!    `UNTRACKED`, so `Weak::upgrade` fails for all of them before any
//!    value is dropped. (PEP 442 finalizers of issue 5 would run here,
//!    followed by a resurrection check.)
//! 6. **`delete_garbage`**: values are dropped one by one, each marked
//!    `DROPPED` first (so a `Drop` reaching a dropped member panics instead
//!    of reading freed data), under `catch_unwind`. Then the collector's
//!    extra counts are released: memory is freed where no handle remains;
//!    a handle cloned by a `Drop` (resurrection) keeps the memory valid.
//!    The first panic is resumed once all of this is done.
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
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;

use super::generations::{strong, State};
use super::header::{
    release_implicit_weak, GcHeader, ObjPtr, COLLECTING, DEAD, DIRTY, DROPPED, EXTERNAL, ONE,
    REACHABLE, SHIFT, UNTRACKED,
};
use super::trashcan;
use super::tracer::{Mode, Tracer};
use super::GenStats;

type Panic = Box<dyn Any + Send + 'static>;

/// Every dirty bit of generations 0..=2.
const ALL_DIRTY: u8 = 0b111;

impl State {
    /// Runs CPython's automatic collection check, then tracks `obj` (a
    /// fresh allocation) in generation 0.
    #[inline(always)]
    pub(crate) fn maybe_collect_then_track(&self, obj: ObjPtr, h: &GcHeader) {
        let c = self.count[0].get();
        if c > self.threshold[0].get() {
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
        if g + 1 < 3 {
            self.count[g + 1].set(self.count[g + 1].get() + 1);
        }
        for i in 0..=g {
            self.count[i].set(0);
        }
        let mask = (1u8 << (g + 1)) - 1;
        let (found, survivors, panic) =
            if self.skip_enabled.get() && self.dirty.get() & mask == 0 {
                let survivors = self.young_live(g);
                self.promote(g, self.list.len(), survivors);
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
        self.in_phases.set(true);
        let mut guard = PhaseGuard {
            st: self,
            g,
            start,
            n: start,
            armed: true,
        };

        // update_refs
        let mut n = start;
        for i in start..end {
            let p = self.list.get(i);
            if p.is_null() {
                continue;
            }
            self.list.set(n, p);
            n += 1;
            // SAFETY: non-null list entries are live tracked objects.
            let h = unsafe { GcHeader::of(p) };
            let s = strong(p);
            let refs = s.get();
            s.set(refs + 1);
            h.gc.set(
                (refs << SHIFT) | (h.flags() & !(DIRTY | REACHABLE | EXTERNAL)) | COLLECTING,
            );
        }
        for i in n..end {
            self.list.set(i, ptr::null());
        }
        guard.n = n;

        // subtract_refs
        let mut tracer = Tracer::new(Mode::Subtract, &self.stack);
        for i in start..n {
            let p = self.list.get(i);
            tracer.current = p;
            // SAFETY: live (we hold a count), value not dropped (tracked
            // objects in the list have live values).
            unsafe { (GcHeader::of(p).vtable.trace)(p, &mut tracer) };
        }

        // move_unreachable
        tracer.mode = Mode::Mark;
        for i in start..n {
            let p = self.list.get(i);
            // SAFETY: as above.
            let h = unsafe { GcHeader::of(p) };
            let w = h.gc.get();
            if w & REACHABLE != 0 || (w < ONE && w & EXTERNAL == 0) {
                continue;
            }
            h.gc.set(w | REACHABLE);
            self.stack.push(p);
            while let Some(q) = self.stack.pop() {
                tracer.current = q;
                // SAFETY: `q` is in the range: live, value not dropped.
                unsafe { (GcHeader::of(q).vtable.trace)(q, &mut tracer) };
            }
        }

        // Rebuild the range: survivors packed with their new indices; the
        // unreachable gathered; then what was allocated meanwhile.
        let mut garbage: Vec<ObjPtr> = Vec::new();
        let mut to_release: Vec<ObjPtr> = Vec::new();
        let mut k = start;
        for i in start..n {
            let p = self.list.get(i);
            // SAFETY: as above.
            let h = unsafe { GcHeader::of(p) };
            let flags = h.flags() & !(COLLECTING | REACHABLE | EXTERNAL);
            if h.has(REACHABLE) {
                self.list.set(k, p);
                h.gc.set((k << SHIFT) | flags);
                k += 1;
                let s = strong(p);
                if s.get() == 1 {
                    // Only a misbehaving `trace` can drop handles
                    // meanwhile; release after the list is consistent.
                    to_release.push(p);
                } else {
                    s.set(s.get() - 1);
                }
            } else {
                h.gc.set(flags | UNTRACKED | DEAD | DIRTY);
                garbage.push(p);
            }
        }
        let moved = self.list.move_tail(end, k);
        let mut young = 0;
        for i in k..k + moved {
            let p = self.list.get(i);
            if !p.is_null() {
                // SAFETY: live list entry.
                unsafe { GcHeader::of(p) }.set_word(i);
                young += 1;
            }
        }
        guard.armed = false;
        drop(guard);
        self.in_phases.set(false);
        let survivors = k - start;
        self.promote(g, k, survivors);
        self.live[0].set(young);

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
        if tracer.saw_external {
            // Garbage may have been kept conservatively; it now lives in
            // the generation the survivors joined.
            d |= 1 << (g + 1).min(2);
        }
        self.dirty.set(d);

        for p in to_release {
            // SAFETY: survivor whose only count left is ours.
            unsafe { release_erased(self, p) };
        }

        let found = garbage.len();
        let panic = self.delete_garbage(&garbage);
        (found, survivors, panic)
    }

    /// Drops the values of the garbage (already `DEAD`), then releases the
    /// collector's counts, freeing what no handle holds.
    fn delete_garbage(&self, garbage: &[ObjPtr]) -> Option<Panic> {
        let mut first: Option<Panic> = None;
        for &p in garbage {
            // SAFETY: we hold a strong count on every garbage object.
            let h = unsafe { GcHeader::of(p) };
            if h.has(DROPPED) {
                continue;
            }
            h.set_flags(DROPPED);
            let r = catch_unwind(AssertUnwindSafe(|| {
                trashcan::nested(self, || {
                    // SAFETY: value live (not DROPPED until just now) and
                    // dropped exactly once, here.
                    unsafe { (h.vtable.drop_value)(p) }
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

/// Releases one strong count of a tracked object on behalf of a handle
/// the type-erased collector held, freeing it as `Gc::drop` would.
///
/// # Safety
/// The caller owns one strong count of the live tracked object `p`.
unsafe fn release_erased(st: &State, p: ObjPtr) {
    let s = strong(p);
    let n = s.get() - 1;
    s.set(n);
    if n != 0 {
        return;
    }
    // SAFETY: live tracked object.
    let h = unsafe { GcHeader::of(p) };
    if h.has(DROPPED) {
        // SAFETY: strong == 0, value already dropped.
        unsafe { release_implicit_weak(p) };
        return;
    }
    if !h.has(UNTRACKED) {
        st.untrack(p, h);
    }
    h.set_flags(DROPPED);
    trashcan::nested(st, || {
        // SAFETY: strong == 0: the value is ours to drop, once.
        unsafe {
            (h.vtable.drop_value)(p);
            release_implicit_weak(p);
        }
    });
}

/// Restores the list if a `trace` panics between `update_refs` and the
/// rebuild: indices written back, flags cleared, counts released, the
/// whole range left in generation `g`, every generation marked dirty.
struct PhaseGuard<'a> {
    st: &'a State,
    g: usize,
    start: usize,
    n: usize,
    armed: bool,
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let st = self.st;
        st.stack.truncate(0);
        let len = st.list.len();
        for i in self.start..len {
            let p = st.list.get(i);
            if p.is_null() {
                continue;
            }
            // SAFETY: live list entries.
            let h = unsafe { GcHeader::of(p) };
            let was_in_range = i < self.n;
            h.gc
                .set((i << SHIFT) | (h.flags() & !(COLLECTING | REACHABLE | EXTERNAL)));
            if was_in_range {
                // Objects left at zero stay listed: the next collection
                // finds them unreachable and reclaims them.
                let s = strong(p);
                s.set(s.get() - 1);
            }
        }
        // Everything from `start` on now counts as generation g.
        let total = st.young_live(self.g);
        for i in 0..=self.g {
            st.live[i].set(0);
        }
        st.live[self.g].set(total);
        for k in (2 - self.g + 1)..3 {
            st.start[k].set(len);
        }
        st.in_phases.set(false);
        st.dirty_in_phases.set(false);
        st.dirty.set(ALL_DIRTY);
        st.collecting.set(false);
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
