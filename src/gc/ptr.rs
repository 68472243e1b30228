//! [`Gc<T>`]: the strong handle.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::ptr::{self, NonNull};

use super::header::{
    Counts, GcBox, GcHeader, Lay, ObjPtr, DEAD, DIRTY, DROPPED, FINALIZER_PENDING, LENT_MUT, SHIFT,
    UNTRACKED, WEAK_CALLBACKS,
};
use super::state;
use super::trace::Trace;
use super::tracer::Tracer;
use super::trashcan;
use super::weak::Weak;

/// A reference-counted pointer like [`Rc`](std::rc::Rc), whose reference
/// cycles are reclaimed by this thread's cycle collector (see [`gc`](crate::gc)).
///
/// Cloning increments a count, dropping the last handle drops the value
/// at once, as with `Rc`; values that are part of unreachable cycles are
/// dropped by [`gc::collect`](crate::gc::collect) or by the automatic
/// collections. `Gc` is neither `Send` nor `Sync`: each thread has its
/// own collector, as each Python interpreter has.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node {
///     name: String,
///     edges: RefCell<Vec<Gc<Node>>>,
/// }
///
/// let a = Gc::new(Node { name: "a".into(), edges: RefCell::new(vec![]) });
/// let b = Gc::new(Node { name: "b".into(), edges: RefCell::new(vec![a.clone()]) });
/// a.edges.borrow_mut().push(b.clone()); // a <-> b
/// assert_eq!(Gc::strong_count(&a), 2);
/// drop((a, b)); // Rc would leak the pair
/// assert_eq!(gc::collect(), 2);
/// ```
pub struct Gc<T: Trace + 'static> {
    ptr: NonNull<GcBox<T>>,
    _marker: PhantomData<GcBox<T>>,
}

impl<T: Trace + 'static> UnwindSafe for Gc<T> where T: RefUnwindSafe {}

impl<T: Trace + 'static> Gc<T> {
    #[inline(always)]
    pub(crate) fn obj(&self) -> ObjPtr {
        self.ptr.as_ptr() as ObjPtr
    }

    #[inline(always)]
    fn counts(&self) -> &Counts {
        // SAFETY: a handle keeps the allocation (counts included) alive.
        unsafe { &(*self.ptr.as_ptr()).counts }
    }

    /// The collector header; only for tracked `T`.
    #[inline(always)]
    pub(crate) fn header(&self) -> &GcHeader {
        debug_assert!(T::MAY_CONTAIN_GC);
        // SAFETY: tracked allocations have a header; the handle keeps it
        // alive.
        unsafe { GcHeader::of(self.obj()) }
    }

    #[inline(always)]
    pub(crate) unsafe fn from_inner(ptr: NonNull<GcBox<T>>) -> Self {
        Gc {
            ptr,
            _marker: PhantomData,
        }
    }

    /// Allocates `value` with a strong count of one.
    ///
    /// If `T` may contain a `Gc` ([`Trace::MAY_CONTAIN_GC`]) the object is
    /// tracked by this thread's collector, which may first run an automatic
    /// collection (CPython's threshold rule).
    ///
    /// ```
    /// use pymem::Gc;
    /// let five = Gc::new(5);
    /// assert_eq!(*five, 5);
    /// ```
    #[inline(always)]
    pub fn new(value: T) -> Gc<T> {
        let p = Lay::<T>::allocate(1, 1, 0);
        // SAFETY: fresh allocation; the value slot is in bounds and aligned.
        unsafe { ptr::write(ptr::addr_of_mut!((*p.as_ptr()).value), value) };
        // SAFETY: `p` is a fully initialised box we own one count of.
        let this = unsafe { Gc::from_inner(p) };
        if T::MAY_CONTAIN_GC {
            state::with(|st| st.maybe_collect_then_track(this.obj(), this.header()));
        }
        this
    }

    /// Creates a `Gc<T>` whose value can hold a [`Weak`] to itself, as
    /// [`Rc::new_cyclic`](std::rc::Rc::new_cyclic): `data_fn` receives the
    /// `Weak` before the value exists, so upgrading it inside `data_fn`
    /// returns `None`.
    ///
    /// ```
    /// use pymem::{Gc, Trace, Weak};
    ///
    /// #[derive(Trace)]
    /// struct Me { me: Weak<Me> }
    ///
    /// let m = Gc::new_cyclic(|w: &Weak<Me>| {
    ///     assert!(w.upgrade().is_none());
    ///     Me { me: w.clone() }
    /// });
    /// assert!(Gc::ptr_eq(&m, &m.me.upgrade().unwrap()));
    /// ```
    pub fn new_cyclic<F: FnOnce(&Weak<T>) -> T>(data_fn: F) -> Gc<T> {
        // strong 0, weak 1 (the `Weak` handed to `data_fn`); untracked until
        // the value is written.
        let p = Lay::<T>::allocate(0, 1, UNTRACKED);
        // SAFETY: `p` is a live box with weak == 1, owned by this Weak.
        let weak = unsafe { Weak::from_inner(p) };
        let value = data_fn(&weak);
        // SAFETY: the allocation is live (we hold a weak count) and the
        // value slot is still uninitialised (strong is 0, so no one could
        // read it).
        unsafe {
            ptr::write(ptr::addr_of_mut!((*p.as_ptr()).value), value);
            (*p.as_ptr()).counts.strong.set(1);
        }
        // The Weak's count becomes the strong handles' implicit one.
        std::mem::forget(weak);
        // SAFETY: initialised, strong == 1 owned by this handle.
        let this = unsafe { Gc::from_inner(p) };
        if T::MAY_CONTAIN_GC {
            this.header().clear_flags(UNTRACKED);
            state::with(|st| st.maybe_collect_then_track(this.obj(), this.header()));
        }
        this
    }

    /// Makes a new [`Weak`] handle to this allocation.
    ///
    /// ```
    /// use pymem::Gc;
    /// let g = Gc::new(1);
    /// let w = Gc::downgrade(&g);
    /// assert_eq!(*w.upgrade().unwrap(), 1);
    /// ```
    #[inline]
    pub fn downgrade(this: &Self) -> Weak<T> {
        let c = this.counts();
        let w = c.weak.get().wrapping_add(1);
        c.weak.set(w);
        if w == 0 {
            std::process::abort();
        }
        // SAFETY: we just took a weak count on a live box.
        unsafe { Weak::from_inner(this.ptr) }
    }

    /// Number of strong handles (`Gc`s) to this allocation.
    ///
    /// While the collector reclaims a cycle (inside a `Drop` it runs), the
    /// count of a member includes one reference held by the collector.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let _b = a.clone();
    /// assert_eq!(Gc::strong_count(&a), 2);
    /// ```
    #[inline]
    pub fn strong_count(this: &Self) -> usize {
        this.counts().strong.get()
    }

    /// Number of [`Weak`] handles to this allocation.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let _w = Gc::downgrade(&a);
    /// assert_eq!(Gc::weak_count(&a), 1);
    /// ```
    #[inline]
    pub fn weak_count(this: &Self) -> usize {
        this.counts().weak.get() - 1
    }

    /// Whether two handles point to the same allocation (as
    /// [`Rc::ptr_eq`](std::rc::Rc::ptr_eq)).
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// assert!(Gc::ptr_eq(&a, &a.clone()));
    /// assert!(!Gc::ptr_eq(&a, &Gc::new(1)));
    /// ```
    #[inline]
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        ptr::addr_eq(this.ptr.as_ptr(), other.ptr.as_ptr())
    }

    /// A raw pointer to the value; valid as long as a handle exists.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(7);
    /// // SAFETY: `a` keeps the value alive while it is read.
    /// assert_eq!(unsafe { *Gc::as_ptr(&a) }, 7);
    /// ```
    #[inline]
    pub fn as_ptr(this: &Self) -> *const T {
        // SAFETY: no reference is created; the field projection stays in
        // bounds of the live allocation.
        unsafe { ptr::addr_of!((*this.ptr.as_ptr()).value) }
    }

    /// Returns the value if this is the only strong handle, as
    /// [`Rc::try_unwrap`](std::rc::Rc::try_unwrap); outstanding [`Weak`]s
    /// stop upgrading.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(3);
    /// let w = Gc::downgrade(&a);
    /// assert_eq!(Gc::try_unwrap(a), Ok(3));
    /// assert!(w.upgrade().is_none());
    ///
    /// let b = Gc::new(4);
    /// let b2 = b.clone();
    /// assert_eq!(*Gc::try_unwrap(b).unwrap_err(), 4);
    /// # drop(b2);
    /// ```
    pub fn try_unwrap(this: Self) -> Result<T, Self> {
        if Self::strong_count(&this) != 1
            || (T::MAY_CONTAIN_GC && this.header().has(DROPPED | DEAD))
        {
            return Err(this);
        }
        let this = ManuallyDrop::new(this);
        let obj = this.obj();
        this.counts().strong.set(0);
        let mut callbacks = None;
        if T::MAY_CONTAIN_GC {
            let h = this.header();
            state::with(|st| st.untrack(obj, h));
            h.set_flags(DROPPED);
            if h.has(WEAK_CALLBACKS) {
                callbacks = super::weak_callbacks::take_on_unwrap(obj, h);
            }
        }
        // SAFETY: strong was 1 and is now 0: the value is ours to move out,
        // and no one will drop it again (DROPPED / strong == 0).
        let value = unsafe { ptr::read(ptr::addr_of!((*this.ptr.as_ptr()).value)) };
        // SAFETY: strong == 0, value moved out.
        unsafe { Self::release_weak(this.ptr) };
        if let Some(c) = callbacks {
            super::weak_callbacks::run_on_unwrap(c);
        }
        Ok(value)
    }

    /// Returns the value if this is the only strong handle, dropping the
    /// handle otherwise (as [`Rc::into_inner`](std::rc::Rc::into_inner)).
    ///
    /// ```
    /// use pymem::Gc;
    /// assert_eq!(Gc::into_inner(Gc::new(1)), Some(1));
    /// ```
    pub fn into_inner(this: Self) -> Option<T> {
        Gc::try_unwrap(this).ok()
    }

    /// A mutable reference to the value if there is no other `Gc` or
    /// [`Weak`] to it, as [`Rc::get_mut`](std::rc::Rc::get_mut).
    ///
    /// ```
    /// use pymem::Gc;
    /// let mut a = Gc::new(1);
    /// *Gc::get_mut(&mut a).unwrap() += 1;
    /// let w = Gc::downgrade(&a);
    /// assert!(Gc::get_mut(&mut a).is_none());
    /// drop(w);
    /// assert_eq!(*a, 2);
    /// ```
    #[inline]
    pub fn get_mut(this: &mut Self) -> Option<&mut T> {
        let c = this.counts();
        if c.strong.get() == 1
            && c.weak.get() == 1
            && !(T::MAY_CONTAIN_GC && this.header().has(DROPPED | DEAD))
        {
            if T::MAY_CONTAIN_GC {
                // The collector lists the object and would read the value
                // through `&T` while the `&mut` lives: LENT_MUT tells it not
                // to (see the flag's docs for when it is cleared).
                this.header().set_flags(LENT_MUT);
            }
            // SAFETY: we are the only handle of any kind, and `this` stays
            // mutably borrowed while the result lives, so no `Gc`, `Weak`
            // or `&T` can reach the value meanwhile; the collector, which
            // reaches it through its list, skips objects flagged LENT_MUT
            // (set just above) until that borrow has provably ended.
            Some(unsafe { &mut (*this.ptr.as_ptr()).value })
        } else {
            None
        }
    }

    /// Frees the memory if the implicit weak count was the last one.
    ///
    /// # Safety
    /// strong == 0 and the value was dropped or moved out.
    #[inline(always)]
    pub(crate) unsafe fn release_weak(ptr: NonNull<GcBox<T>>) {
        // SAFETY: live until the weak count reaches zero.
        let c = unsafe { &(*ptr.as_ptr()).counts };
        let w = c.weak.get() - 1;
        c.weak.set(w);
        if w == 0 {
            // SAFETY: no handle of any kind remains.
            unsafe { Lay::<T>::deallocate(ptr) }
        }
    }

    /// The last strong handle of a tracked object is gone.
    #[inline(never)]
    unsafe fn drop_slow(&mut self) {
        let obj = self.obj();
        let w = self.header().gc.get();
        if w & (DROPPED | UNTRACKED | FINALIZER_PENDING | WEAK_CALLBACKS) != 0 {
            // SAFETY: forwarded contract.
            return unsafe { self.drop_slow_unlisted(w) };
        }
        let st = state::state();
        st.untrack_at(obj, w >> SHIFT);
        // SAFETY: strong == 0, value live, dropped once by the trashcan.
        unsafe { trashcan::drop_object::<T>(st, obj) }
    }

    /// `drop_slow` for an object that is not in the list; `w` is its gc
    /// word, as `drop_slow` read it.
    #[cold]
    #[inline(never)]
    unsafe fn drop_slow_unlisted(&mut self, w: usize) {
        let obj = self.obj();
        if w & DROPPED != 0 {
            // A handle resurrected from a Drop run by the collector: the
            // value is gone, only the memory remains.
            // SAFETY: strong == 0 and the value is dropped.
            unsafe { Self::release_weak(self.ptr) };
            return;
        }
        if w & (FINALIZER_PENDING | WEAK_CALLBACKS) != 0 {
            // A pending finalizer or weak callbacks.
            // SAFETY: strong just reached 0 on this live tracked box.
            return unsafe { super::finalizers::last_drop::<T>(self.ptr) };
        }
        // Untracked (created after the thread's collector was torn down):
        // just drop the value.
        // SAFETY: strong == 0, value live, dropped once by the trashcan.
        unsafe { trashcan::drop_object::<T>(state::state(), obj) }
    }
}

#[cold]
#[inline(never)]
fn note_dirty(h: &GcHeader) {
    state::state().note_dirty(h);
}

/// `deref` of a handle whose object is `DROPPED` (panics) or `LENT_MUT`
/// (reading through this handle proves the `&mut` from `Gc::get_mut`
/// ended, as that `&mut` borrows the only handle: the flag is cleared).
#[cold]
#[inline(never)]
#[track_caller]
fn deref_flagged(h: &GcHeader, type_name: &str) {
    if h.has(DROPPED) {
        dropped_panic(type_name);
    }
    h.clear_flags(LENT_MUT);
}

#[cold]
#[inline(never)]
#[track_caller]
fn dropped_panic(type_name: &str) -> ! {
    panic!(
        "pymem: dereferenced a Gc<{type_name}> whose value was already dropped by the cycle \
         collector (it belonged to the same unreachable cycle as the Drop impl that reached it)"
    )
}

impl<T: Trace + 'static> Drop for Gc<T> {
    #[inline]
    fn drop(&mut self) {
        let c = self.counts();
        let s = c.strong.get() - 1;
        c.strong.set(s);
        if s == 0 {
            if T::MAY_CONTAIN_GC {
                // SAFETY: we released the last strong count.
                unsafe { self.drop_slow() }
            } else {
                // SAFETY: untracked values hold no Gc and are never reached
                // by the collector; strong == 0 gives us the value, dropped
                // once, then the implicit weak count is released.
                unsafe {
                    ptr::drop_in_place(ptr::addr_of_mut!((*self.ptr.as_ptr()).value));
                    Self::release_weak(self.ptr);
                }
            }
        } else if T::MAY_CONTAIN_GC {
            let h = self.header();
            // One test for both: not yet DIRTY, or LENT_MUT (which this use
            // of the handle proves stale).
            if h.gc.get() & (DIRTY | LENT_MUT) != DIRTY {
                note_dirty(h);
            }
        }
    }
}

impl<T: Trace + 'static> Clone for Gc<T> {
    /// Another handle to the same allocation (a count increment).
    #[inline]
    fn clone(&self) -> Self {
        let c = self.counts();
        let s = c.strong.get().wrapping_add(1);
        c.strong.set(s);
        if s == 0 {
            std::process::abort();
        }
        // SAFETY: we took a strong count.
        unsafe { Gc::from_inner(self.ptr) }
    }
}

impl<T: Trace + 'static> Deref for Gc<T> {
    type Target = T;

    /// The value. Panics only if the collector already dropped it: inside a
    /// `Drop` run by a collection, reaching another member of the same
    /// garbage.
    #[inline(always)]
    #[track_caller]
    fn deref(&self) -> &T {
        if T::MAY_CONTAIN_GC && self.header().has(DROPPED | LENT_MUT) {
            deref_flagged(self.header(), std::any::type_name::<T>());
        }
        // SAFETY: the handle keeps the allocation alive and the value is
        // not dropped.
        unsafe { &(*self.ptr.as_ptr()).value }
    }
}

// SAFETY: a Gc is one strong edge; visiting it is exactly its edge. Edges
// to untracked objects cannot be part of a cycle and are not reported.
unsafe impl<T: Trace + 'static> Trace for Gc<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            tracer.visit(self.obj());
        }
    }
}

impl<T: Trace + 'static> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: Trace + 'static> Borrow<T> for Gc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: Trace + 'static + Default> Default for Gc<T> {
    /// `Gc::new(T::default())`.
    fn default() -> Self {
        Gc::new(T::default())
    }
}

impl<T: Trace + 'static> From<T> for Gc<T> {
    /// `Gc::new(value)`.
    fn from(value: T) -> Self {
        Gc::new(value)
    }
}

impl<T: Trace + 'static + fmt::Debug> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Trace + 'static + fmt::Display> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: Trace + 'static> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Gc::as_ptr(self), f)
    }
}

impl<T: Trace + 'static + PartialEq> PartialEq for Gc<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Trace + 'static + Eq> Eq for Gc<T> {}

impl<T: Trace + 'static + PartialOrd> PartialOrd for Gc<T> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: Trace + 'static + Ord> Ord for Gc<T> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: Trace + 'static + Hash> Hash for Gc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
