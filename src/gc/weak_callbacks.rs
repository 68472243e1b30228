//! Weak callbacks: [`finalize`] (Python's `weakref.finalize`) and
//! [`Weak::with_callback`] (`weakref.ref(obj, callback)`).
//!
//! Callbacks live in a per-thread side table keyed by object address;
//! the `WEAK_CALLBACKS` header flag tells the two death paths (refcount
//! and collector) to look there. They run after the object's value has
//! been dropped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;

use super::collector::Panic;
use super::finalizers::{arm, finalizing};
use super::header::{GcHeader, ObjPtr, DEAD, DROPPED, WEAK_CALLBACKS};
use super::ptr::Gc;
use super::trace::Trace;
use super::weak::Weak;

pub(crate) struct Entry {
    id: u64,
    f: Box<dyn FnOnce()>,
}

/// The thread's weak callbacks: each object's (by address) in the order
/// they were registered, each with an id (`next` hands them out) by which
/// a `Finalize` handle or a `Weak` with a callback finds its own.
/// Invariant: an object has an entry here only while its header carries
/// `WEAK_CALLBACKS` (`register` sets the flag right after it pushes, with
/// no user code between; `take_callbacks` clears it as it takes the
/// entry), so the death paths need not look here for other objects.
struct CallbackTable {
    next: Cell<u64>,
    table: RefCell<HashMap<usize, Vec<Entry>>>,
}

/// Drops `v` and contains a panic of a `Drop` it runs, reporting it on
/// stderr: for thread-local destructors, which must not unwind (the
/// process would abort), after the teardown's collection (which contains
/// its panics the same way). `what` names what is dropped.
pub(crate) fn drop_contained<V>(v: V, what: &str) {
    if catch_unwind(AssertUnwindSafe(|| drop(v))).is_err() {
        eprintln!(
            "pymem: a Drop panicked while the {what} left at thread exit were dropped; the panic \
             was contained"
        );
    }
}

/// Resumes a panic that user code (`what`: a weak callback or finalizer
/// under `Gc::drop`, a `Drop` or callback in a collection) raised, unless
/// the thread is already unwinding: the code that runs it (a refcount
/// death, an automatic collection inside `Gc::new`, `gc::collect()` in a
/// scope guard) may then be part of the unwind's cleanup, where a panic
/// escaping would abort the process, so the panic is contained (reported
/// on stderr) and the first one goes on.
pub(crate) fn resume_unless_unwinding(p: Panic, what: &str) {
    // Once the collector's thread-local destructor has begun, user code
    // runs inside thread-exit destructors (a refcount death in a later
    // thread-local's destructor, the teardown's collections), where a
    // panic escaping aborts the process too.
    if std::thread::panicking() || super::state::exiting() {
        drop_contained(p, "panic payloads");
        eprintln!(
            "pymem: {what} panicked while the thread was unwinding or exiting; the panic was \
             contained (resuming it would abort the process)"
        );
    } else {
        resume_unwind(p);
    }
}

thread_local! {
    /// No destructor (`ManuallyDrop`): the table lives until the
    /// collector's teardown, which runs after every thread-local
    /// destructor (so cycles it collects still run their callbacks) and
    /// then empties it with [`drop_table`].
    static CALLBACKS: ManuallyDrop<CallbackTable> = ManuallyDrop::new(CallbackTable {
        next: Cell::new(1),
        table: RefCell::new(HashMap::new()),
    });
}

/// At the collector's teardown, after its last collection: the callbacks
/// of objects still reachable then never run; dropping them drops what
/// they own (`Gc`s among it, whose `Drop` impls may panic), each under
/// `catch_unwind`. Later registrations register nothing (`register`).
pub(crate) fn drop_table() {
    let table = CALLBACKS.with(|r| std::mem::take(&mut *r.table.borrow_mut()));
    for (_, entries) in table {
        for e in entries {
            drop_contained(e, "weak callbacks");
        }
    }
}

/// Takes the callbacks registered on a dying object (before its memory
/// can be freed, so the address cannot be reused meanwhile).
pub(crate) fn take_callbacks(obj: ObjPtr, h: &GcHeader) -> Vec<Entry> {
    if !h.has(WEAK_CALLBACKS) {
        return Vec::new();
    }
    h.clear_flags(WEAK_CALLBACKS);
    CALLBACKS
        .try_with(|r| r.table.borrow_mut().remove(&(obj as usize)))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Runs callbacks (most recently registered first, as CPython calls weak
/// reference callbacks), each under `catch_unwind`; returns the first
/// panic.
pub(crate) fn run_callbacks(entries: Vec<Entry>) -> Option<Panic> {
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
    // Asked of the allocation (what `header()` below relies on), which
    // for a sized `T` is `T::may_contain_gc()`.
    assert!(
        obj.has_header(),
        "weak callbacks need a tracked type: this type holds no Gc (implement Drop on it instead)"
    );
    let addr = obj.obj() as usize;
    let h = obj.header();
    if h.has(DROPPED) || (h.has(DEAD) && !finalizing()) {
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
    // A `Drop` run at thread exit after the collector's teardown
    // registers nothing: the callback could never run (the table was
    // emptied for good).
    let mut f = Some(f);
    let torn_down = super::state::with(|st| st.torn_down());
    let id = CALLBACKS
        .try_with(|r| {
            if torn_down {
                return 0;
            }
            let id = r.next.get();
            r.next.set(id + 1);
            let f = f.take().expect("taken once");
            r.table
                .borrow_mut()
                .entry(addr)
                .or_default()
                .push(Entry { id, f });
            id
        })
        .unwrap_or(0);
    if id == 0 {
        drop_contained(f, "weak callbacks");
        return Finalizer {
            id: 0,
            addr,
            _not_send: PhantomData,
        };
    }
    h.set_flags(WEAK_CALLBACKS);
    arm();
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
/// resumed after the reclamation is complete (reported on stderr instead
/// when the referent's last handle is dropped by an unwind: a panic
/// escaping that drop would abort the process). Garbage found by the
/// collection run at thread exit runs its callbacks; objects still
/// reachable then do not. Only tracked types
/// (those that may hold a `Gc`) can have callbacks: for the others it
/// panics, as Python refuses weak references to `int`.
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
        CALLBACKS
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
        CALLBACKS
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
