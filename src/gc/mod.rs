//! `Gc<T>`, `Weak<T>` and the cycle collector, with the API of Python's
//! `gc` module.
//!
//! [`Gc<T>`](crate::Gc) counts references like `Rc`: acyclic garbage is
//! freed the moment its last handle drops. Reference cycles are found by
//! CPython's generational collector, one per thread (`Gc` is `!Send`),
//! run automatically when tracked allocations minus deallocations pass
//! threshold 0 (700 by default), or by [`collect`].
//!
//! ```
//! use pymem::{gc, Gc, Trace};
//! use std::cell::RefCell;
//!
//! #[derive(Trace)]
//! struct Node {
//!     parent: RefCell<Option<Gc<Node>>>,
//!     children: RefCell<Vec<Gc<Node>>>,
//! }
//!
//! let root = Gc::new(Node { parent: RefCell::new(None), children: RefCell::new(vec![]) });
//! let leaf = Gc::new(Node { parent: RefCell::new(Some(root.clone())), children: RefCell::new(vec![]) });
//! root.children.borrow_mut().push(leaf);
//! drop(root); // a cycle: Rc would leak it
//! assert_eq!(gc::collect(), 2);
//! assert_eq!(gc::get_count().1, 0);
//! ```
//!
//! # Object headers
//!
//! ```text
//!  untracked (the value can hold no Gc), 16 bytes like Rc:
//!  ┌──────────────────────────────────┬──────────────┬───────────┐
//!  │ weak<<32 | NO_HEADER              │ strong usize │ value: T  │
//!  └──────────────────────────────────┴──────────────┴───────────┘
//!  tracked, 24 bytes (a slice: 32, its length before the weak word):
//!  ┌──────────────────────────────────┬──────────────────┬──────────────┬───────────┐
//!  │ weak<<32 | vtable code (32 bits)  │ gc word          │ strong usize │ value: T  │
//!  │                                   │ index<<9 | flags │              │           │
//!  └──────────────────────────────────┴──────────────────┴──────────────┴───────────┘
//!                                                         ▲ obj          ▲ Gc points here
//! ```
//!
//! The vtable holds `trace`, `drop_value`, `dealloc`, the type name and
//! size (for a census); the header holds a 32-bit code for it (`vt_code`),
//! which keeps a tracked header at 24 bytes on 64-bit targets. The gc word's upper bits hold the object's index
//! in the generation list, at all times (during a collection the
//! `gc_refs` live in a side array indexed by list position, where CPython
//! reuses `_gc_prev` for them, so a surviving object's header is read,
//! not written); its low 9 bits hold flags (bit 7 is `LENT_MUT`, see
//! below; bit 8, `NO_HEADER`, is set only in an untracked object's weak
//! word). The word before the strong count is a flags word in both
//! layouts (an untracked object's says `NO_HEADER` and never anything
//! else), so `clone`, `drop` and `deref` need not know the kind of
//! object: for tracked ones they are one flag test away from `Rc`'s code
//! (the value may have been dropped by the collector, or lent out by
//! `Gc::get_mut`, see below). For a sized type that is never tracked
//! (`Gc<u64>`, a derived struct of plain fields) the compiler knows the
//! answer, and the handle is `Rc`'s code: no test in `drop`, none in
//! `deref` when the value has no drop glue; other untracked handles
//! (`Gc<String>`, `Gc<str>`) pay a load and test in `deref`. `T` may be
//! unsized (`str`, `[T]`, `dyn Trait`); see `header`.
//!
//! # Tracking
//!
//! Whether an allocation is tracked is decided when it is made, by
//! [`Trace::may_contain_gc`] of its type: a constant for a sized `T`
//! (`Gc::new` contains no test), the concrete type's for `Gc<dyn Trait>`
//! (see `header` for unsized values). A type that can hold no `Gc` cannot
//! be part of a cycle, so it gets the 16-byte header, no list entry and
//! no effect on [`get_count`] or [`tracked_count`], as CPython untracks
//! atomic objects.
//!
//! # Generations
//!
//! One list per thread, oldest first, each generation a contiguous range:
//! `[ permanent | gen 2 | gen 1 | gen 0 ]`. Allocation pushes at the end,
//! a refcount free nulls its slot in O(1), promotion and `freeze` move a
//! boundary in O(1); holes are squeezed out by the collections and when
//! the list would otherwise grow while half of it is holes.
//!
//! # The collection
//!
//! The phases are CPython's (`Python/gc.c`), each a function:
//! `update_and_subtract_refs`, `move_unreachable` (iterative, an explicit
//! stack), `rebuild_and_promote`, `handle_weakrefs`, `finalize_garbage`,
//! `handle_resurrected_objects` (which reuses the first two),
//! `delete_garbage`. See the `collector` source for the details, and for
//! the *skip rule*: a collection of
//! generation `g` provably finds nothing unless some object in
//! generations `0..=g` had its strong count decremented to a non-zero
//! value since they were last examined (garbage cycles are only born that
//! way), so such collections just promote. `get_stats()` counts them as
//! collections.
//!
//! Young collections examine their whole generations, as CPython's do. A
//! full collection examines only what is reachable from the objects so
//! decremented since the last full collection (the rest of the heap cannot
//! hold garbage: see the `collector` source for the proof), so its cost
//! follows what changed, not the size of the heap; its answer is the same.
//!
//! Automatic collections follow CPython (up to 3.12): generation 0 when
//! its count passes threshold 0, an older one when its count (collections
//! of the younger one since) passes its threshold, and generation 2 only
//! when the objects promoted into it since the last full collection
//! exceed 25% of those that survived it, so building a large structure
//! stays linear.
//!
//! # Reclaiming garbage
//!
//! 1. Every object found unreachable is marked dead: [`Weak::upgrade`](crate::Weak::upgrade)
//!    returns `None` for all of them before any value is dropped.
//! 2. Values are dropped one at a time. A `Drop` impl that reaches
//!    another member of the same garbage through a `Gc` can still clone
//!    it (resurrection: the memory then stays valid until that handle
//!    goes), but dereferencing a member whose value is already dropped
//!    panics with a message that says so; never a dangling read.
//! 3. Memory is freed once no strong (or weak) handle remains.
//!
//! A panic in a user `Drop` does not abandon the rest: every value is
//! dropped, the lists are consistent, then the first panic resumes;
//! unless the collection ran while the thread was already unwinding or
//! exiting (inside thread-exit destructors; or, unwinding: an
//! automatic collection started by `Gc::new` in a destructor, a
//! `collect()` in a scope guard), where resuming would abort the process:
//! the panic is then reported on stderr and contained (even where a
//! `catch_unwind` around that `collect()` would have caught it: whether
//! one lies between cannot be told cheaply). A `Drop` that calls
//! [`collect`] during a collection gets 0 (re-entrant collections do
//! nothing). Dropping the head of a 10-million-element
//! list does not overflow the stack: nested drops past a depth of 64 are
//! deferred to a per-thread queue (CPython's trashcan).
//!
//! # What a wrong `Trace` impl can cause
//!
//! See the rules and their consequences in [`Trace`'s safety
//! section](crate::Trace#safety): a missed edge (or a `may_contain_gc`
//! that says `false` for a type holding a `Gc`) leaks; an extra one drops
//! values early (a later dereference of a handle panics, "already dropped
//! by the cycle collector"). A `trace` that panics leaves the lists
//! restored (every generation marked for re-examination). Undefined
//! behaviour comes only from a `trace` that reads data that may be
//! mutably borrowed, or that mutates (borrows a `RefCell` mutably,
//! directly or in code it runs: the collector reads `RefCell`s without
//! taking a borrow), and from a `&T` held across a collection that an
//! extra edge made drop its value.
//!
//! The collector never reads a value that `Gc::get_mut` lent out while the
//! `&mut` may be alive: the object is flagged `LENT_MUT` and treated as
//! referenced from outside until a later use of its handle (a `deref`, a
//! `drop` of a clone, or a count other than one) or an edge to it met
//! while tracing proves the `&mut` ended.
//!
//! A `RefCell` that is mutably borrowed while traced cannot be read: the
//! object is treated as referenced from outside (see
//! [`Tracer::mark_external`](crate::Tracer::mark_external)).
//!
//! # Debugging, finalizers, census
//!
//! * [`set_debug`] with [`DEBUG_STATS`], [`DEBUG_COLLECTABLE`],
//!   [`DEBUG_SAVEALL`] ([`garbage`], [`clear_garbage`]) and [`DEBUG_LEAK`],
//!   and [`callbacks`] run at the start and the stop of each collection,
//!   as Python's `gc.set_debug`, `gc.garbage` and `gc.callbacks`.
//! * PEP 442 finalizers: [`Finalize`] with
//!   [`Gc::new_with_finalizer`](crate::Gc::new_with_finalizer), run once
//!   before a cycle is dropped while all of it is alive; resurrection is
//!   detected ([`is_finalized`]). Objects without a finalizer pay nothing:
//!   a second vtable and a header flag mark those that have one.
//! * Weak callbacks: [`finalize`] (Python's `weakref.finalize`) and
//!   [`Weak::with_callback`](crate::Weak::with_callback) (`weakref.ref(obj,
//!   callback)`), kept in a per-thread side table, flagged in the header.
//! * [`census`]: live tracked objects by type, and the growth between two
//!   censuses (objgraph's `most_common_types` and `show_growth`).
//!
//! ```
//! use pymem::{gc, Gc, Trace};
//! use std::cell::RefCell;
//!
//! #[derive(Trace)]
//! struct Node { next: RefCell<Option<Gc<Node>>> }
//!
//! let before = gc::census();
//! let a = Gc::new(Node { next: RefCell::new(None) });
//! *a.next.borrow_mut() = Some(a.clone());
//! drop(a);
//! assert_eq!(gc::census().growth_since(&before).delta_matching("::Node"), 1);
//! gc::set_debug(gc::DEBUG_COLLECTABLE); // prints "gc: collectable 1 x ...::Node"
//! assert_eq!(gc::collect(), 1);
//! gc::set_debug(0);
//! ```

mod any;
pub mod callbacks;
mod census;
mod collector;
mod debug;
mod dst;
mod finalizers;
pub(crate) mod header;
mod ptr;
mod ptr_vec;
mod reclaim;
mod saved_garbage;
mod slot_bits;
mod state;
pub(crate) mod trace;
mod tracer;
mod trashcan;
#[cfg(target_pointer_width = "64")]
mod vt_code;
mod weak;
mod weak_callbacks;

#[cfg(test)]
mod tests;

pub use any::AnyTrace;
pub use callbacks::{CallbackId, CallbackInfo, Phase};
pub use census::{census, Census, CensusGrowth, TypeCount, TypeGrowth};
pub use debug::{
    get_debug, set_debug, DEBUG_COLLECTABLE, DEBUG_LEAK, DEBUG_SAVEALL, DEBUG_STATS,
    DEBUG_UNCOLLECTABLE,
};
pub use finalizers::{is_finalized, Finalize};
pub use ptr::Gc;
pub use saved_garbage::{clear_garbage, garbage, GarbageInfo};
pub use trace::Trace;
pub use tracer::Tracer;
pub use weak::Weak;
pub use weak_callbacks::{finalize, Finalizer, WeakRef};

use header::UNTRACKED;
use state::with;

/// Per-generation statistics, as an entry of Python's `gc.get_stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GenStats {
    /// Collections of this generation (including those the skip rule
    /// proved empty).
    pub collections: usize,
    /// Unreachable objects found by collections of this generation (less
    /// those a finalizer resurrected, as in CPython).
    pub collected: usize,
    /// Unreachable objects that could not be reclaimed (always 0: every
    /// `Drop` and finalizer can run, as with CPython's PEP 442 collector).
    pub uncollectable: usize,
}

/// Runs a full collection (all generations) and returns the number of
/// unreachable objects found, as Python's `gc.collect()`.
///
/// Called re-entrantly (from a `Drop` run by a collection) it does
/// nothing and returns 0.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// drop(a);
/// assert_eq!(gc::collect(), 1);
/// let (_, c1, c2) = gc::get_count();
/// assert_eq!((c1, c2), (0, 0));
/// ```
pub fn collect() -> usize {
    collect_generation(2)
}

/// Collects generation `gen` and the younger ones (Python's
/// `gc.collect(generation)`); returns the unreachable objects found.
///
/// Only `get_stats()[gen].collections` is incremented.
///
/// # Panics
/// If `gen > 2`.
///
/// ```
/// use pymem::gc;
/// gc::collect();
/// gc::collect_generation(0);
/// let (_, c1, c2) = gc::get_count();
/// assert_eq!((c1, c2), (1, 0));
/// ```
pub fn collect_generation(gen: usize) -> usize {
    assert!(
        gen < 3,
        "pymem::gc::collect_generation: invalid generation {gen} (0, 1 or 2)"
    );
    with(|st| st.collect(gen))
}

/// Turns automatic collection on (the default), as `gc.enable()`.
///
/// ```
/// pymem::gc::enable();
/// assert!(pymem::gc::is_enabled());
/// ```
pub fn enable() {
    with(|st| st.set_enabled(true))
}

/// Turns automatic collection off for this thread, as `gc.disable()`;
/// [`collect`] still works.
///
/// ```
/// pymem::gc::disable();
/// assert!(!pymem::gc::is_enabled());
/// pymem::gc::enable();
/// ```
pub fn disable() {
    with(|st| st.set_enabled(false))
}

/// Whether automatic collection is on for this thread.
///
/// ```
/// assert!(pymem::gc::is_enabled());
/// ```
pub fn is_enabled() -> bool {
    with(|st| st.enabled())
}

/// This thread's collection thresholds, `(700, 10, 10)` by default.
///
/// ```
/// assert_eq!(pymem::gc::get_threshold(), (700, 10, 10));
/// ```
pub fn get_threshold() -> (usize, usize, usize) {
    with(|st| st.thresholds())
}

/// Sets this thread's thresholds, as `gc.set_threshold`. Threshold 0 of
/// 0 disables automatic collection.
///
/// ```
/// use pymem::gc;
/// gc::set_threshold(1000, 20, 5);
/// assert_eq!(gc::get_threshold(), (1000, 20, 5));
/// gc::set_threshold(700, 10, 10);
/// ```
pub fn set_threshold(threshold0: usize, threshold1: usize, threshold2: usize) {
    with(|st| st.set_thresholds(threshold0, threshold1, threshold2))
}

/// The current collection counts, as `gc.get_count()` in CPython up to
/// 3.12: tracked allocations minus deallocations since the last
/// collection, then collections of generation 0 since the last of
/// generation 1, and of 1 since the last of 2.
///
/// ```
/// use pymem::gc;
/// gc::collect();
/// let (_, c1, c2) = gc::get_count();
/// assert_eq!((c1, c2), (0, 0));
/// ```
pub fn get_count() -> (usize, usize, usize) {
    with(|st| st.counts())
}

/// Whether the collector tracks this object: `false` for types that can
/// hold no `Gc` ([`Trace::may_contain_gc`] is `false`), as
/// `gc.is_tracked`.
///
/// ```
/// use pymem::{gc, Gc};
/// assert!(!gc::is_tracked(&Gc::new(5u64)));
/// assert!(!gc::is_tracked(&Gc::new(String::from("atomic"))));
/// assert!(gc::is_tracked(&Gc::new(vec![Gc::new(1)])));
/// ```
pub fn is_tracked<T: ?Sized + Trace>(gc: &Gc<T>) -> bool {
    gc.has_header() && !gc.header().has(UNTRACKED)
}

/// Number of objects this thread's collector tracks, as
/// `len(gc.get_objects())` (the permanent generation of [`freeze`] is not
/// included, as in CPython).
///
/// ```
/// use pymem::{gc, Gc};
/// let before = gc::tracked_count();
/// let a = Gc::new(vec![Gc::new(1)]);
/// assert_eq!(gc::tracked_count(), before + 1);
/// drop(a);
/// assert_eq!(gc::tracked_count(), before);
/// ```
pub fn tracked_count() -> usize {
    with(|st| st.tracked())
}

/// Moves every tracked object into the permanent generation, ignored by
/// all future collections, as `gc.freeze()` (for example before forking
/// workers). O(1).
///
/// ```
/// use pymem::{gc, Gc};
/// let a = Gc::new(vec![Gc::new(1)]);
/// gc::freeze();
/// assert!(gc::get_freeze_count() >= 1);
/// gc::unfreeze();
/// assert_eq!(gc::get_freeze_count(), 0);
/// # drop(a);
/// ```
pub fn freeze() {
    with(|st| st.freeze())
}

/// Moves the permanent generation back into the oldest generation, as
/// `gc.unfreeze()`.
///
/// ```
/// pymem::gc::unfreeze();
/// assert_eq!(pymem::gc::get_freeze_count(), 0);
/// ```
pub fn unfreeze() {
    with(|st| st.unfreeze())
}

/// Number of objects in the permanent generation.
///
/// ```
/// assert_eq!(pymem::gc::get_freeze_count(), 0);
/// ```
pub fn get_freeze_count() -> usize {
    with(|st| st.frozen_count())
}

/// Statistics per generation since the thread started, as
/// `gc.get_stats()`.
///
/// ```
/// use pymem::gc;
/// let before = gc::get_stats();
/// gc::collect_generation(1);
/// let after = gc::get_stats();
/// assert_eq!(after[1].collections, before[1].collections + 1);
/// assert_eq!(after[0].collections, before[0].collections);
/// ```
pub fn get_stats() -> [GenStats; 3] {
    with(|st| st.stats())
}

/// Collections per generation that the skip rule proved empty and did no
/// work for (they are included in [`get_stats`]`()[g].collections`).
///
/// A garbage cycle can only be born when a strong count drops to a value
/// other than zero; a collection of generation `g` when no object of
/// generations `0..=g` saw that since they were last examined just
/// promotes them (see the module docs).
///
/// ```
/// use pymem::{gc, Gc};
/// let a = Gc::new(vec![Gc::new(1)]); // tracked; no count decremented
/// let before = gc::get_skipped();
/// gc::collect();
/// assert_eq!(gc::get_skipped()[2], before[2] + 1);
/// drop(a.clone()); // 2 -> 1: the next collection does the work
/// gc::collect();
/// assert_eq!(gc::get_skipped()[2], before[2] + 1);
/// ```
pub fn get_skipped() -> [usize; 3] {
    with(|st| st.skipped())
}
