//! PEP 442 finalizers: the [`Finalize`] trait, their run on the refcount
//! death path, and the collector's `finalize_garbage` and
//! `handle_resurrected_objects` (which reuses the collector's phases).
//!
//! # Finalizers
//!
//! A type implementing [`Finalize`] and allocated with
//! [`Gc::new_with_finalizer`] gets a second vtable whose `finalize` entry
//! is set, and the `FINALIZER_PENDING` header flag ("a finalizer is pending"). Types
//! without a finalizer pay nothing: no header word, and the refcount death
//! path tests `FINALIZER_PENDING` together with the `DROPPED` flag it already
//! tested.
//!
//! The finalizer runs at most once (`FINALIZER_PENDING` is replaced by `FINALIZER_RAN`
//! before it runs):
//!
//! * **refcount death**: when the last handle goes, as CPython's
//!   `PyObject_CallFinalizerFromDealloc`: the strong count is set to one
//!   for the call; if the finalizer left more handles than that, the object
//!   is resurrected and nothing is dropped.
//! * **collection**: after every member of the garbage is marked dead for
//!   `Weak::upgrade` and before any value is dropped, every pending
//!   finalizer of the garbage runs (CPython's `finalize_garbage`), all
//!   members still alive and readable. Then, if any ran, the garbage is
//!   checked again (CPython's `handle_resurrected_objects`): the gc_refs of
//!   the garbage are computed among themselves (strong count, minus the
//!   collector's own, minus the edges from other members), and everything
//!   reachable from a member still referenced from elsewhere is
//!   resurrected: tracked again (in generation 0), alive for
//!   `Weak::upgrade` again, not counted as collected. The rest is
//!   reclaimed.
//!

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use super::collector::{find_reachable, Panic, Scratch};
use super::header::{
    release_implicit_weak, value_of, GcHeader, Lay, ObjPtr, VTable, CLEAN, DEAD, DROPPED,
    FINALIZER_PENDING, FINALIZER_RAN, SHIFT, UNTRACKED,
};
use super::ptr::Gc;
use super::state::{self, strong, State};
use super::trace::Trace;
use super::tracer::is_candidate;
use super::trashcan;
use super::weak_callbacks::{resume_unless_unwinding, run_callbacks, take_callbacks};

/// A PEP 442 finalizer (Python's `__del__` / `tp_finalize`): code that
/// runs once before an object is reclaimed, while everything it refers
/// to, even the other members of its garbage cycle, is still alive and
/// readable. (A `Drop` impl of a cycle member cannot count on that: the
/// collector drops the members one by one, and reaching a member already
/// dropped panics.)
///
/// Give a type a finalizer by implementing this trait and allocating with
/// [`Gc::new_with_finalizer`]; objects made by [`Gc::new`] have none.
///
/// * The finalizer runs **at most once** per object
///   ([`gc::is_finalized`](crate::gc::is_finalized) tells whether it has),
///   either when the last handle drops (before the value is dropped), or,
///   for objects in unreachable cycles, during the collection that finds
///   them, before any value of the garbage is dropped. Cycles that are
///   garbage when their thread exits are finalized by the collections run
///   at thread exit: those run by the collector's thread-local destructor
///   and, for cycles let go of by a thread-local destroyed after it, those
///   of the teardown that runs after every thread-local destructor
///   (weak callbacks run there too).
/// * It may **resurrect** the object, or others, by storing a `Gc` where
///   the program can reach it (`this.clone()` into a list). The collector
///   notices and reclaims nothing that is reachable again; the
///   resurrected objects live on, their finalizer will not run again, and
///   [`Weak`](crate::Weak)s to them upgrade again.
/// * During a collection, `Weak::upgrade` to members of the garbage
///   already returns `None` (as CPython clears weak references before
///   calling finalizers), and a re-entrant
///   [`gc::collect`](crate::gc::collect) returns 0.
/// * A panic in a finalizer is resumed after the object (or the rest of
///   the garbage) has been dealt with; when the object dies by refcount
///   while the thread is already unwinding (a handle dropped by the
///   unwind), it is reported on stderr instead, as a panic escaping that
///   drop would abort the process.
/// * [`Gc::try_unwrap`] hands the value back without finalizing it.
///
/// Types that can hold no `Gc` ([`Trace::may_contain_gc`] is `false`) are
/// never part of a cycle; give them a `Drop` impl instead
/// (`new_with_finalizer` panics for them). A plain `Drop` impl of a
/// cycle member can ask whether a partner is still there with
/// [`Gc::try_deref`].
///
/// ```
/// use pymem::gc::{self, Finalize};
/// use pymem::{Gc, Trace};
/// use std::cell::{Cell, RefCell};
///
/// #[derive(Trace)]
/// struct Conn {
///     name: String,
///     peer: RefCell<Option<Gc<Conn>>>,
///     #[trace(skip)]
///     closed: Cell<bool>,
/// }
///
/// impl Finalize for Conn {
///     fn finalize(this: &Gc<Self>) {
///         // The peer is alive and readable, even when it is garbage too.
///         let peer = this.peer.borrow();
///         println!("closing {} (peer {})", this.name, peer.as_ref().unwrap().name);
///         this.closed.set(true);
///     }
/// }
///
/// let a = Gc::new_with_finalizer(Conn { name: "a".into(), peer: RefCell::default(), closed: Cell::new(false) });
/// let b = Gc::new_with_finalizer(Conn { name: "b".into(), peer: RefCell::new(Some(a.clone())), closed: Cell::new(false) });
/// *a.peer.borrow_mut() = Some(b.clone());
/// drop((a, b));
/// assert_eq!(gc::collect(), 2); // both finalized, then dropped
/// ```
pub trait Finalize: Trace + Sized + 'static {
    /// The finalizer. `this` is a handle to the object: cloning it
    /// resurrects the object.
    fn finalize(this: &Gc<Self>);
}

/// The vtable of objects of `T` allocated with a finalizer.
struct FinLay<T>(PhantomData<T>);

impl<T: Finalize> FinLay<T> {
    const VTABLE: &'static VTable = &VTable {
        finalize: Some(finalize_erased::<T>),
        ..*Lay::<T>::VTABLE
    };
}

/// Calls `T::finalize` on a type-erased object.
///
/// # Safety
/// `obj` is a live object of type `T` (this vtable's) whose value is
/// live, on which the caller holds (or has temporarily set) a strong
/// count.
unsafe fn finalize_erased<T: Finalize>(obj: ObjPtr) {
    // SAFETY: the caller guarantees a live object of type `T` (this
    // vtable is only installed by `new_with_finalizer::<T>`) with a live
    // value, one word past the counts (`value_of`), and a strong count
    // held across the call: `from_inner`'s "one strong count on a live,
    // initialised value". The handle is never dropped (`ManuallyDrop`),
    // so that count is only borrowed, not consumed.
    let this = ManuallyDrop::new(unsafe { Gc::<T>::from_inner(value_of::<T>(obj)) });
    T::finalize(&this)
}

impl<T: Finalize> Gc<T> {
    /// Allocates `value` with a PEP 442 finalizer, [`Finalize::finalize`],
    /// which runs once before the object is reclaimed (see [`Finalize`]).
    ///
    /// # Panics
    /// If `T` is untracked ([`Trace::may_contain_gc`] is `false`): use
    /// `Drop` for those.
    ///
    /// ```
    /// use pymem::gc::{self, Finalize};
    /// use pymem::{Gc, Trace};
    /// use std::cell::{Cell, RefCell};
    ///
    /// thread_local!(static FINALIZER_RAN: Cell<u32> = const { Cell::new(0) });
    ///
    /// #[derive(Trace)]
    /// struct Node { next: RefCell<Option<Gc<Node>>> }
    /// impl Finalize for Node {
    ///     fn finalize(_: &Gc<Self>) { FINALIZER_RAN.with(|f| f.set(f.get() + 1)) }
    /// }
    ///
    /// let a = Gc::new_with_finalizer(Node { next: RefCell::new(None) });
    /// assert!(!gc::is_finalized(&a));
    /// drop(a); // refcount death: finalized, then dropped
    /// assert_eq!(FINALIZER_RAN.with(Cell::get), 1);
    /// ```
    pub fn new_with_finalizer(value: T) -> Gc<T> {
        let this = Gc::new(value);
        // Asked of the allocation, not of `T::may_contain_gc()` again: the
        // write below relies on this object's header.
        assert!(
            this.has_header(),
            "Gc::new_with_finalizer: this type holds no Gc, so it is never part of a cycle \
             and needs no finalizer; implement Drop instead"
        );
        // The vtable is a code in the header's weak word (a `Cell`): the
        // collector and the other handles read it only through the header.
        this.header().set_vtable(FinLay::<T>::VTABLE);
        this.header().set_flags(FINALIZER_PENDING);
        arm();
        this
    }
}

/// Whether the object's finalizer has run, as Python's `gc.is_finalized`
/// (`false` for objects without one).
///
/// ```
/// use pymem::gc::{self, Finalize};
/// use pymem::{Gc, Trace};
/// use std::cell::RefCell;
///
/// thread_local!(static KEEP: RefCell<Vec<Gc<Lazarus>>> = const { RefCell::new(Vec::new()) });
///
/// #[derive(Trace)]
/// struct Lazarus { me: RefCell<Option<Gc<Lazarus>>> }
/// impl Finalize for Lazarus {
///     fn finalize(this: &Gc<Self>) { KEEP.with(|k| k.borrow_mut().push(this.clone())) }
/// }
///
/// let l = Gc::new_with_finalizer(Lazarus { me: RefCell::new(None) });
/// *l.me.borrow_mut() = Some(l.clone());
/// assert!(!gc::is_finalized(&l));
/// drop(l);
/// assert_eq!(gc::collect(), 0); // resurrected by its finalizer
/// let back = KEEP.with(|k| k.borrow_mut().pop()).unwrap();
/// assert!(gc::is_finalized(&back));
/// drop(back);
/// assert_eq!(gc::collect(), 1); // finalizers run once: now reclaimed
/// ```
pub fn is_finalized<T: Trace>(gc: &Gc<T>) -> bool {
    gc.has_header() && gc.header().has(FINALIZER_RAN)
}

// ---------------------------------------------------------------------------
// the refcount death path

/// The last strong handle of a tracked object with `FINALIZER_PENDING` or
/// `WEAK_CALLBACKS` set (and not `DROPPED`) is gone (`Gc::drop_slow`'s
/// rare path).
///
/// # Safety
/// `ptr` is the value of a live tracked object whose strong count just
/// reached zero.
#[cold]
#[inline(never)]
pub(crate) unsafe fn last_drop<T: ?Sized + Trace + 'static>(ptr: NonNull<T>) {
    let obj = super::header::counts_of(ptr);
    // SAFETY: live tracked object.
    let h = unsafe { GcHeader::of(obj) };
    // The only caller, `Gc::drop_slow`, handles DROPPED first.
    debug_assert!(!h.has(DROPPED));
    let mut panic = None;
    if h.has(FINALIZER_PENDING) {
        h.clear_flags(FINALIZER_PENDING);
        h.set_flags(FINALIZER_RAN);
        let s = strong(obj);
        s.set(1);
        let f = h.vtable().finalize;
        let r = catch_unwind(AssertUnwindSafe(|| {
            if let Some(f) = f {
                // SAFETY: the value is live; the temporary count of one
                // keeps the object alive during the call.
                unsafe { f(obj) }
            }
        }));
        panic = r.err();
        let n = s.get() - 1;
        s.set(n);
        if n > 0 {
            // Resurrected: the object stays tracked, as it was.
            if h.has(CLEAN) {
                state::with(|st| st.note_dirty(h));
            }
            if let Some(p) = panic {
                resume_unless_unwinding(p, "a weak callback or finalizer");
            }
            return;
        }
    }
    // No reference into the object may live across the call below, which
    // can free it: the closure captures only the raw `ptr` (a reference
    // captured by a closure stays protected for the whole call).
    let callback_panic = state::with(|st: &State| {
        // SAFETY: the object is live (strong == 0, value not dropped);
        // this reference ends before the drop.
        st.untrack(unsafe { GcHeader::of(obj) });
        // SAFETY: strong == 0, value live and dropped once, by the
        // trashcan; its weak callbacks run after that drop, whenever the
        // trashcan performs it.
        unsafe { trashcan::drop_object_then_callbacks(st, ptr) }
    });
    if let Some(p) = callback_panic.or(panic) {
        resume_unless_unwinding(p, "a weak callback or finalizer");
    }
}

// ---------------------------------------------------------------------------
// the collector's path

thread_local! {
    /// This thread has made an object with a finalizer or registered a
    /// weak callback: the collector must look for them in its garbage.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The collector is running finalizers: members of the garbage (dead
    /// for `Weak`) may still get weak callbacks, which run when they are
    /// reclaimed.
    static FINALIZING: Cell<bool> = const { Cell::new(false) };
}

/// Records that this thread has finalizers or weak callbacks (see
/// `ARMED`).
pub(crate) fn arm() {
    ARMED.with(|a| a.set(true));
}

/// Whether finalizers are running (see `FINALIZING`).
pub(crate) fn finalizing() -> bool {
    FINALIZING.with(Cell::get)
}

/// CPython's `finalize_garbage`: runs the pending finalizers of the
/// garbage (all dead for `Weak`, each held by the collector), every
/// member still alive and readable. Returns (whether any finalizer ran or
/// panicked, whether any member has weak callbacks); panics go to
/// `first`.
pub(crate) fn finalize_garbage(garbage: &[ObjPtr], first: &mut Option<Panic>) -> (bool, bool) {
    let mut ran = false;
    let mut callbacks = false;
    // A thread that never made a finalizer or weak callback skips the
    // pass over the garbage's headers.
    if !ARMED.with(Cell::get) {
        return (false, false);
    }
    let was_finalizing = FINALIZING.with(|f| f.replace(true));
    let mut i = 0;
    while i < garbage.len() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            while i < garbage.len() {
                let p = garbage[i];
                i += 1;
                // SAFETY: the collector holds a count on each object.
                let h = unsafe { GcHeader::of(p) };
                callbacks |= h.has(super::header::WEAK_CALLBACKS);
                if h.has(FINALIZER_PENDING) && !h.has(DROPPED) {
                    h.clear_flags(FINALIZER_PENDING);
                    h.set_flags(FINALIZER_RAN);
                    ran = true;
                    if let Some(f) = h.vtable().finalize {
                        // SAFETY: the value is live (no garbage value is
                        // dropped before this loop ends); the collector's
                        // count keeps the object alive.
                        unsafe { f(p) }
                    }
                }
            }
        }));
        if let Err(e) = r {
            ran = true;
            first.get_or_insert(e);
        }
    }
    FINALIZING.with(|f| f.set(was_finalizing));
    (ran, callbacks)
}

/// CPython's `handle_resurrected_objects`: after finalizers ran, the
/// garbage is examined again by the collector's phases 1 and 2, over the
/// garbage alone (the collector's own count is not a reference from
/// outside); what is reachable again is revived, the rest stays garbage
/// (returned). A `trace` that panics makes the check conservative: all is
/// revived.
pub(crate) fn handle_resurrected_objects(
    st: &State,
    garbage: Vec<ObjPtr>,
    first: &mut Option<Panic>,
) -> Vec<ObjPtr> {
    // Give each member an index past every listed one, so the tracer
    // (which reads indices from the headers) sees exactly the garbage as
    // the members: at the top of the index space, which no list reaches,
    // so that an object a `trace` allocates meanwhile (listed at the end
    // of the list, `st.list().len()` when the check began) is never taken
    // for a member (it was garbage[0]'s index, and its edges were then
    // subtracted from garbage[0]).
    let base = (usize::MAX >> SHIFT) - garbage.len();
    for (i, &p) in garbage.iter().enumerate() {
        // SAFETY: the collector holds a count on each object.
        let h = unsafe { GcHeader::of(p) };
        h.clear_flags(UNTRACKED);
        h.set_index(base + i);
    }
    let was_in_phases = st.enter_phases();
    let mut sc = Scratch::default();
    let r = catch_unwind(AssertUnwindSafe(|| {
        find_reachable(&garbage[..], base, 1, false, false, &mut sc);
    }));
    st.leave_phases(was_in_phases);
    let mut keep = Vec::new();
    let mut back = Vec::new();
    for (i, &p) in garbage.iter().enumerate() {
        // SAFETY: the collector's count on each member (taken by
        // `handle_weakrefs`, released only by `revive` or `delete_garbage`
        // after this) keeps the allocation, header included, alive
        // whatever the `trace` impls run above did.
        unsafe { GcHeader::of(p) }.set_flags(UNTRACKED);
        if r.is_err() || !is_candidate(sc.refs[i].get()) {
            back.push(p);
        } else {
            keep.push(p);
        }
    }
    if let Err(p) = r {
        first.get_or_insert(p);
    }
    if let Some(p) = revive(st, &back) {
        first.get_or_insert(p);
    }
    keep
}

/// Puts resurrected garbage back: tracked (in generation 0), alive for
/// `Weak::upgrade`, and the collector's counts released. Returns the
/// first panic of a weak callback (see below).
fn revive(st: &State, objs: &[ObjPtr]) -> Option<Panic> {
    let mut first = None;
    if objs.is_empty() {
        return None;
    }
    for &p in objs {
        // SAFETY: the collector holds a count on each object.
        let h = unsafe { GcHeader::of(p) };
        h.clear_flags(DEAD);
        // They may still hold cycles: generation 0 is examined next time.
        st.retrack(p, h);
    }
    for &p in objs {
        let s = strong(p);
        let n = s.get() - 1;
        s.set(n);
        if n == 0 {
            // Kept only by a conservative check (a mutably borrowed
            // RefCell) and no handle left: reclaim it after all.
            // SAFETY: live, tracked; strong == 0 so no one else will drop
            // the value; the header is valid until the weak count goes.
            let h = unsafe { GcHeader::of(p) };
            st.untrack(h);
            let callbacks = take_callbacks(p, h);
            h.set_flags(DROPPED | DEAD);
            // SAFETY: the value is live (a member of the garbage is only
            // dropped by `delete_garbage`, which never saw this one) and
            // dropped once, here: strong == 0 leaves no handle to read or
            // drop it, and DROPPED, set above, turns away every other path
            // (a resurrected handle's drop, `deref`, `try_unwrap`).
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (h.vtable().drop_value)(p) }));
            if let Err(e) = r {
                first.get_or_insert(e);
            }
            // SAFETY: strong == 0 and the value is dropped.
            unsafe { release_implicit_weak(p) };
            if let Some(e) = run_callbacks(callbacks) {
                first.get_or_insert(e);
            }
        }
    }
    first
}
