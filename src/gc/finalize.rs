//! PEP 442 finalizers and weak callbacks (`weakref.ref(obj, callback)`,
//! `weakref.finalize`).
//!
//! # Finalizers
//!
//! A type implementing [`Finalize`] and allocated with
//! [`Gc::new_with_finalizer`] gets a second vtable whose `finalize` entry
//! is set, and the `FINALIZE` header flag ("a finalizer is pending"). Types
//! without a finalizer pay nothing: no header word, and the refcount death
//! path tests `FINALIZE` together with the `DROPPED` flag it already
//! tested.
//!
//! The finalizer runs at most once (`FINALIZE` is replaced by `FINALIZED`
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
//! # Weak callbacks
//!
//! Callbacks live in a per-thread side table keyed by object address;
//! the `WEAK_CALLBACKS` header flag tells the two death paths (refcount
//! and collector) to look there. They run after the object's value has
//! been dropped.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::collector::ALL_DIRTY;
use super::debug;
use super::generations::{self, strong, State};
use super::header::{
    release_implicit_weak, GcBox, GcHeader, Lay, ObjPtr, VTable, DEAD, DIRTY, DROPPED, FINALIZE,
    FINALIZED, UNTRACKED, WEAK_CALLBACKS,
};
use super::ptr::Gc;
use super::trace::Trace;
use super::tracer::{is_root, strong_refs, Mode, Refs, Tracer, REACHED};
use super::trashcan;
use super::weak::Weak;

type Panic = Box<dyn Any + Send + 'static>;

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
///   garbage when their thread exits are finalized by the collection run
///   at thread exit; objects still reachable then (from a thread-local
///   that outlives the collector's) are not.
/// * It may **resurrect** the object, or others, by storing a `Gc` where
///   the program can reach it (`this.clone()` into a list). The collector
///   notices and reclaims nothing that is reachable again; the
///   resurrected objects live on, their finalizer will not run again, and
///   [`Weak`]s to them upgrade again.
/// * During a collection, `Weak::upgrade` to members of the garbage
///   already returns `None` (as CPython clears weak references before
///   calling finalizers), and a re-entrant
///   [`gc::collect`](crate::gc::collect) returns 0.
/// * A panic in a finalizer is resumed after the object (or the rest of
///   the garbage) has been dealt with.
/// * [`Gc::try_unwrap`] hands the value back without finalizing it.
///
/// Types that can hold no `Gc` ([`Trace::MAY_CONTAIN_GC`] is `false`) are
/// never part of a cycle; give them a `Drop` impl instead
/// (`new_with_finalizer` rejects them at compile time).
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
/// `obj` is a live `GcBox<T>` whose value is live, on which the caller
/// holds (or has temporarily set) a strong count.
unsafe fn finalize_erased<T: Finalize>(obj: ObjPtr) {
    // SAFETY: per the contract the box is live with a live value; the
    // handle is borrowed, never dropped (ManuallyDrop), so it does not
    // change the count.
    let this = ManuallyDrop::new(unsafe {
        Gc::<T>::from_inner(NonNull::new_unchecked(obj as *mut GcBox<T>))
    });
    T::finalize(&this)
}

impl<T: Finalize> Gc<T> {
    /// Allocates `value` with a PEP 442 finalizer, [`Finalize::finalize`],
    /// which runs once before the object is reclaimed (see [`Finalize`]).
    ///
    /// A compile-time error if `T` is untracked
    /// ([`Trace::MAY_CONTAIN_GC`] is `false`): use `Drop` for those.
    ///
    /// ```
    /// use pymem::gc::{self, Finalize};
    /// use pymem::{Gc, Trace};
    /// use std::cell::{Cell, RefCell};
    ///
    /// thread_local!(static FINALIZED: Cell<u32> = const { Cell::new(0) });
    ///
    /// #[derive(Trace)]
    /// struct Node { next: RefCell<Option<Gc<Node>>> }
    /// impl Finalize for Node {
    ///     fn finalize(_: &Gc<Self>) { FINALIZED.with(|f| f.set(f.get() + 1)) }
    /// }
    ///
    /// let a = Gc::new_with_finalizer(Node { next: RefCell::new(None) });
    /// assert!(!gc::is_finalized(&a));
    /// drop(a); // refcount death: finalized, then dropped
    /// assert_eq!(FINALIZED.with(Cell::get), 1);
    /// ```
    pub fn new_with_finalizer(value: T) -> Gc<T> {
        const {
            assert!(
                T::MAY_CONTAIN_GC,
                "Gc::new_with_finalizer: this type holds no Gc, so it is never part of a cycle \
                 and needs no finalizer; implement Drop instead"
            )
        };
        let this = Gc::new(value);
        let base = this.obj().cast::<u8>().cast_mut();
        // SAFETY: tracked allocations have their GcHeader right before the
        // counts; `obj` carries the provenance of the whole allocation. No
        // reference to the header is alive (we hold the only handle, the
        // collector keeps raw pointers), so writing the vtable field
        // through a raw pointer aliases nothing.
        unsafe {
            let h = base.sub(size_of::<GcHeader>()).cast::<GcHeader>();
            ptr::addr_of_mut!((*h).vtable).write(FinLay::<T>::VTABLE);
        }
        this.header().set_flags(FINALIZE);
        ARMED.with(|a| a.set(true));
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
    T::MAY_CONTAIN_GC && gc.header().has(FINALIZED)
}

// ---------------------------------------------------------------------------
// the refcount death path

/// The last strong handle of a tracked object with `FINALIZE` or
/// `WEAK_CALLBACKS` set (and not `DROPPED`) is gone (`Gc::drop_slow`'s
/// rare path).
///
/// # Safety
/// `ptr` is a live tracked box whose strong count just reached zero.
#[cold]
#[inline(never)]
pub(crate) unsafe fn last_drop<T: Trace + 'static>(ptr: NonNull<GcBox<T>>) {
    let obj = ptr.as_ptr() as ObjPtr;
    // SAFETY: live tracked object.
    let h = unsafe { GcHeader::of(obj) };
    // The only caller, `Gc::drop_slow_unlisted`, handles DROPPED first.
    debug_assert!(!h.has(DROPPED));
    let mut panic = None;
    if h.has(FINALIZE) {
        h.clear_flags(FINALIZE);
        h.set_flags(FINALIZED);
        let s = strong(obj);
        s.set(1);
        let f = h.vtable.finalize;
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
            if !h.has(DIRTY) {
                generations::with(|st| st.note_dirty(h));
            }
            if let Some(p) = panic {
                resume_unwind(p);
            }
            return;
        }
    }
    let callbacks = take_callbacks(obj, h);
    generations::with(|st: &State| {
        if !h.has(UNTRACKED) {
            st.untrack(obj, h);
        }
        // SAFETY: strong == 0, value live, dropped once by the trashcan.
        unsafe { trashcan::drop_object::<T>(st, obj) }
    });
    if let Some(p) = run_callbacks(callbacks).or(panic) {
        resume_unwind(p);
    }
}

// ---------------------------------------------------------------------------
// the collector's path

/// Reclaims the garbage a collection found (all marked `DEAD | UNTRACKED`,
/// each with a strong count held by the collector): runs the pending
/// finalizers, puts back what they resurrected, then saves
/// (`DEBUG_SAVEALL`) or deletes the rest. Returns the number of objects
/// reclaimed or saved and the first panic.
pub(crate) fn reclaim(st: &State, garbage: &mut Vec<ObjPtr>) -> (usize, Option<Panic>) {
    let mut first: Option<Panic> = None;
    // finalize_garbage
    let mut ran = false;
    let mut callbacks = false;
    let was_finalizing = FINALIZING.with(|f| f.replace(true));
    // A thread that never made a finalizer or weak callback skips the
    // pass over the garbage's headers.
    let mut i = if ARMED.with(Cell::get) {
        0
    } else {
        garbage.len()
    };
    while i < garbage.len() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            while i < garbage.len() {
                let p = garbage[i];
                i += 1;
                // SAFETY: the collector holds a count on each object.
                let h = unsafe { GcHeader::of(p) };
                callbacks |= h.has(WEAK_CALLBACKS);
                if h.has(FINALIZE) && !h.has(DROPPED) {
                    h.clear_flags(FINALIZE);
                    h.set_flags(FINALIZED);
                    ran = true;
                    if let Some(f) = h.vtable.finalize {
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
    // handle_resurrected_objects
    if ran {
        let (keep, resurrected, p) = partition_resurrected(st, garbage);
        *garbage = keep;
        if let Some(p) = p {
            first.get_or_insert(p);
        }
        if let Some(p) = revive(st, &resurrected) {
            first.get_or_insert(p);
        }
    }
    let flags = debug::flags();
    if flags & debug::DEBUG_COLLECTABLE != 0 {
        debug::print_collectable(garbage);
    }
    let n = garbage.len();
    if flags & debug::DEBUG_SAVEALL != 0 {
        debug::save(garbage);
    } else if let Some(p) = if callbacks || ran {
        delete(st, garbage)
    } else {
        st.delete_garbage(garbage)
    } {
        first.get_or_insert(p);
    }
    (n, first)
}

/// Drops the values of `garbage` (dead objects each with a strong count
/// held by the collector), releases those counts, and runs the weak
/// callbacks registered on them; returns the first panic.
pub(crate) fn delete(st: &State, garbage: &[ObjPtr]) -> Option<Panic> {
    let mut callbacks = Vec::new();
    for &p in garbage {
        // SAFETY: the collector holds a count on each object.
        let h = unsafe { GcHeader::of(p) };
        callbacks.extend(take_callbacks(p, h));
    }
    let panic = st.delete_garbage(garbage);
    panic.or(run_callbacks(callbacks))
}

/// Splits the garbage, after finalizers ran, into what is still garbage
/// and what is reachable again (everything, with the panic, if a `trace`
/// panicked: conservative).
fn partition_resurrected(
    st: &State,
    garbage: &[ObjPtr],
) -> (Vec<ObjPtr>, Vec<ObjPtr>, Option<Panic>) {
    let n = garbage.len();
    // Give each member a position past every listed index, so the tracer
    // (which reads indices from the headers) sees exactly the garbage as
    // its range.
    let base = st.list.len();
    let refs: Vec<Cell<Refs>> = garbage
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            // SAFETY: the collector holds a count on each object.
            let h = unsafe { GcHeader::of(p) };
            h.clear_flags(UNTRACKED);
            h.set_word(base + i);
            // The collector's own count is not a reference from outside.
            Cell::new(strong_refs(p) - 1)
        })
        .collect();
    let was_in_phases = st.in_phases.replace(true);
    let r = catch_unwind(AssertUnwindSafe(|| {
        // subtract_refs among the garbage (edge_limit 0: no edge recorded)
        let mut tracer = Tracer::new(base, n, refs.as_ptr());
        for (pos, &p) in garbage.iter().enumerate() {
            tracer.current = pos;
            // SAFETY: values of the garbage are live (none dropped yet).
            unsafe { (GcHeader::of(p).vtable.trace)(p, &mut tracer) };
        }
        // move_unreachable among the garbage
        tracer.mode = Mode::Mark;
        tracer.current = usize::MAX;
        for (pos, c) in refs.iter().enumerate() {
            if !is_root(c.get()) {
                continue;
            }
            c.set(REACHED);
            tracer.stack.push(pos);
            while let Some(q) = tracer.stack.pop() {
                let p = garbage[q];
                // SAFETY: as above.
                unsafe { (GcHeader::of(p).vtable.trace)(p, &mut tracer) };
            }
        }
    }));
    st.in_phases.set(was_in_phases);
    let mut keep = Vec::new();
    let mut back = Vec::new();
    for (i, &p) in garbage.iter().enumerate() {
        // SAFETY: as above.
        unsafe { GcHeader::of(p) }.set_flags(UNTRACKED);
        // A `trace` that panicked leaves the check unfinished: resurrect
        // everything (conservative).
        if r.is_err() || refs[i].get() == REACHED {
            back.push(p);
        } else {
            keep.push(p);
        }
    }
    if st.dirty_in_phases.replace(false) {
        st.dirty.set(st.dirty.get() | ALL_DIRTY);
    }
    (keep, back, r.err())
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
        h.clear_flags(DEAD | UNTRACKED | DIRTY);
        let i = st.list.len();
        st.list.push(p);
        h.set_word(i);
        st.live.set(st.live.get() + 1);
    }
    // They may still hold cycles: examine generation 0 next time.
    st.dirty.set(st.dirty.get() | 1);
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
            st.untrack(p, h);
            let callbacks = take_callbacks(p, h);
            h.set_flags(DROPPED | DEAD);
            // SAFETY: as above; the value is dropped once, here.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (h.vtable.drop_value)(p) }));
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

// ---------------------------------------------------------------------------
// weak callbacks

thread_local! {
    /// This thread has made an object with a finalizer or registered a
    /// weak callback: the collector must look for them in its garbage.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The collector is running finalizers: members of the garbage (dead
    /// for `Weak`) may still get weak callbacks, which run when they are
    /// reclaimed.
    static FINALIZING: Cell<bool> = const { Cell::new(false) };
}

pub(crate) struct Entry {
    id: u64,
    f: Box<dyn FnOnce()>,
}

struct Registry {
    next: Cell<u64>,
    table: RefCell<HashMap<usize, Vec<Entry>>>,
}

thread_local! {
    static REGISTRY: Registry = Registry {
        next: Cell::new(1),
        table: RefCell::new(HashMap::new()),
    };
}

/// Initialises the registry, so that its destructor is registered before
/// the collector's teardown and runs after it (see
/// `generations::register_owner`).
pub(crate) fn keep_through_teardown() {
    let _ = REGISTRY.try_with(|_| ());
}

/// Takes the callbacks registered on a dying object (before its memory
/// can be freed, so the address cannot be reused meanwhile).
fn take_callbacks(obj: ObjPtr, h: &GcHeader) -> Vec<Entry> {
    if !h.has(WEAK_CALLBACKS) {
        return Vec::new();
    }
    h.clear_flags(WEAK_CALLBACKS);
    REGISTRY
        .try_with(|r| r.table.borrow_mut().remove(&(obj as usize)))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Runs callbacks (most recently registered first, as CPython calls weak
/// reference callbacks), each under `catch_unwind`; returns the first
/// panic.
fn run_callbacks(entries: Vec<Entry>) -> Option<Panic> {
    let mut first = None;
    for e in entries.into_iter().rev() {
        if let Err(p) = catch_unwind(AssertUnwindSafe(e.f)) {
            first.get_or_insert(p);
        }
    }
    first
}

/// Registers `f` on the object; the handle that identifies it.
fn register<T: Trace>(obj: &Gc<T>, f: Box<dyn FnOnce()>) -> Finalizer {
    const {
        assert!(
            T::MAY_CONTAIN_GC,
            "weak callbacks need a tracked type: this type holds no Gc (implement Drop on it instead)"
        )
    };
    let addr = obj.obj() as usize;
    let h = obj.header();
    if h.has(DROPPED) || (h.has(DEAD) && !FINALIZING.with(Cell::get)) {
        // Only reachable from a `Drop` run by the collector, through a
        // resurrected handle: the object is being reclaimed and its
        // callbacks were already taken, so this one would never run. Id 0
        // is never registered: not alive.
        return Finalizer {
            id: 0,
            addr,
            _not_send: PhantomData,
        };
    }
    let id = REGISTRY.with(|r| {
        let id = r.next.get();
        r.next.set(id + 1);
        r.table
            .borrow_mut()
            .entry(addr)
            .or_default()
            .push(Entry { id, f });
        id
    });
    h.set_flags(WEAK_CALLBACKS);
    ARMED.with(|a| a.set(true));
    Finalizer {
        id,
        addr,
        _not_send: PhantomData,
    }
}

/// Registers `f` to run once after `obj` is reclaimed (its value dropped,
/// by refcounting or by the collector), as Python's
/// `weakref.finalize(obj, f)`. The returned [`Finalizer`] can cancel it
/// ([`Finalizer::detach`]) or run it early ([`Finalizer::call`]);
/// dropping the handle does neither: the callback stays registered.
///
/// `f` must not hold a `Gc` to `obj` (that would keep it alive forever,
/// as in Python). Registering on an object the collector is reclaiming
/// (from a `Drop` impl run by a collection, through a handle to another
/// member of the same garbage) registers nothing: the returned handle is
/// not [`alive`](Finalizer::alive). Finalizers may register callbacks on
/// the members of their garbage: they run when those are reclaimed. The callback runs on this thread; a panic in it is
/// resumed after the reclamation is complete. Garbage found by the
/// collection run at thread exit runs its callbacks; objects still
/// reachable then do not. Only tracked types
/// (those that may hold a `Gc`) can have callbacks: for the others it is
/// a compile-time error, as Python refuses weak references to `int`.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::{Cell, RefCell};
/// use std::rc::Rc;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let closed = Rc::new(Cell::new(false));
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// let c = closed.clone();
/// let f = gc::finalize(&a, move || c.set(true));
/// assert!(f.alive());
/// drop(a);
/// assert!(!closed.get()); // a cycle: still alive
/// gc::collect();
/// assert!(closed.get() && !f.alive());
/// ```
pub fn finalize<T: Trace>(obj: &Gc<T>, f: impl FnOnce() + 'static) -> Finalizer {
    register(obj, Box::new(f))
}

/// A callback registered by [`gc::finalize`](finalize) (or held by a
/// [`WeakRef`]), as Python's `weakref.finalize` object.
///
/// ```
/// use pymem::{gc, Gc};
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// let hits = Rc::new(Cell::new(0));
/// let a = Gc::new(vec![Gc::new(1)]);
/// let h = hits.clone();
/// let f = gc::finalize(&a, move || h.set(h.get() + 1));
/// assert!(f.call()); // run it now...
/// assert!(!f.call()); // ...once
/// drop(a);
/// assert_eq!(hits.get(), 1);
/// ```
#[derive(Clone)]
pub struct Finalizer {
    id: u64,
    addr: usize,
    _not_send: PhantomData<*const ()>,
}

impl Finalizer {
    fn take(&self) -> Option<Box<dyn FnOnce()>> {
        REGISTRY
            .try_with(|r| {
                let mut t = r.table.borrow_mut();
                let v = t.get_mut(&self.addr)?;
                let i = v.iter().position(|e| e.id == self.id)?;
                let e = v.remove(i);
                if v.is_empty() {
                    t.remove(&self.addr);
                }
                Some(e.f)
            })
            .ok()
            .flatten()
    }

    /// Whether the callback is still pending (not run, not detached).
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let a = Gc::new(vec![Gc::new(1)]);
    /// let f = gc::finalize(&a, || ());
    /// assert!(f.alive());
    /// drop(a);
    /// assert!(!f.alive());
    /// ```
    pub fn alive(&self) -> bool {
        REGISTRY
            .try_with(|r| {
                r.table
                    .borrow()
                    .get(&self.addr)
                    .is_some_and(|v| v.iter().any(|e| e.id == self.id))
            })
            .unwrap_or(false)
    }

    /// Cancels the callback without running it; `true` if it was pending.
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let a = Gc::new(vec![Gc::new(1)]);
    /// let f = gc::finalize(&a, || panic!("never runs"));
    /// assert!(f.detach());
    /// assert!(!f.detach());
    /// drop(a);
    /// ```
    pub fn detach(&self) -> bool {
        self.take().is_some()
    }

    /// Runs the callback now, if it is still pending (then it will not run
    /// again), as calling a Python `weakref.finalize` object; `true` if it
    /// ran.
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let a = Gc::new(vec![Gc::new(1)]);
    /// let f = gc::finalize(&a, || println!("cleanup"));
    /// assert!(f.call());
    /// assert!(!f.alive());
    /// ```
    pub fn call(&self) -> bool {
        match self.take() {
            Some(f) => {
                f();
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for Finalizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finalizer")
            .field("alive", &self.alive())
            .finish()
    }
}

/// A [`Weak`] with a callback, as Python's `weakref.ref(obj, callback)`:
/// the callback runs once after the referent is reclaimed, unless this
/// `WeakRef` was dropped first. Made by [`Weak::with_callback`]; derefs to
/// the `Weak`.
///
/// ```
/// use pymem::{gc, Gc, Trace, Weak};
/// use std::cell::{Cell, RefCell};
/// use std::rc::Rc;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let dead = Rc::new(Cell::new(0));
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// let d = dead.clone();
/// let w = Weak::with_callback(&a, move || d.set(d.get() + 1));
/// let d = dead.clone();
/// let dropped_early = Weak::with_callback(&a, move || d.set(d.get() + 100));
/// drop(dropped_early); // its callback is cancelled
/// assert!(w.upgrade().is_some());
/// drop(a);
/// gc::collect();
/// assert!(w.upgrade().is_none());
/// assert_eq!(dead.get(), 1);
/// ```
pub struct WeakRef<T: Trace + 'static> {
    weak: Weak<T>,
    callback: Finalizer,
}

impl<T: Trace + 'static> Weak<T> {
    /// A `Weak` to `obj` whose `callback` runs once after `obj` is
    /// reclaimed, as Python's `weakref.ref(obj, callback)`; dropping the
    /// returned [`WeakRef`] first cancels the callback (see
    /// [`gc::finalize`](finalize) for a callback that does not depend on a
    /// handle).
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    ///
    /// let gone = Rc::new(Cell::new(false));
    /// let obj = Gc::new(vec![Gc::new(1)]);
    /// let g = gone.clone();
    /// let w = Weak::with_callback(&obj, move || g.set(true));
    /// drop(obj);
    /// assert!(gone.get() && w.upgrade().is_none());
    /// ```
    pub fn with_callback(obj: &Gc<T>, callback: impl FnOnce() + 'static) -> WeakRef<T> {
        WeakRef {
            weak: Gc::downgrade(obj),
            callback: register(obj, Box::new(callback)),
        }
    }
}

impl<T: Trace + 'static> WeakRef<T> {
    /// Whether the callback is still pending.
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// let obj = Gc::new(vec![Gc::new(1)]);
    /// let w = Weak::with_callback(&obj, || ());
    /// assert!(w.callback_pending());
    /// drop(obj);
    /// assert!(!w.callback_pending());
    /// ```
    pub fn callback_pending(&self) -> bool {
        self.callback.alive()
    }

    /// The plain `Weak`, cancelling the callback.
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// let obj = Gc::new(vec![Gc::new(1)]);
    /// let w = Weak::with_callback(&obj, || panic!("cancelled")).into_weak();
    /// drop(obj);
    /// assert!(w.upgrade().is_none());
    /// ```
    pub fn into_weak(self) -> Weak<T> {
        self.callback.detach();
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped and the `Weak` is read once; the
        // `Finalizer` beside it owns nothing.
        unsafe { ptr::read(&this.weak) }
    }
}

impl<T: Trace + 'static> Deref for WeakRef<T> {
    type Target = Weak<T>;
    fn deref(&self) -> &Weak<T> {
        &self.weak
    }
}

impl<T: Trace + 'static> Drop for WeakRef<T> {
    fn drop(&mut self) {
        self.callback.detach();
    }
}

impl<T: Trace + 'static> fmt::Debug for WeakRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakRef")
            .field("callback_pending", &self.callback_pending())
            .finish()
    }
}

/// Takes the weak callbacks of an object whose value `Gc::try_unwrap`
/// moved out, to run once it is done.
pub(crate) fn take_on_unwrap(obj: ObjPtr, h: &GcHeader) -> Option<Vec<Entry>> {
    let v = take_callbacks(obj, h);
    (!v.is_empty()).then_some(v)
}

/// Runs callbacks taken by [`take_on_unwrap`].
pub(crate) fn run_on_unwrap(entries: Vec<Entry>) {
    if let Some(p) = run_callbacks(entries) {
        resume_unwind(p);
    }
}
