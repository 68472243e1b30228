//! [`Gc<T>`]: the strong handle.

use std::alloc::Layout;
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
    allocate, allocate_with, counts_of, dec_weak_is_last, flags_word, free, inc_strong, inc_weak,
    low_flags, statically_untracked, weak_count, weak_word, Counts, GcHeader, Lay, ObjPtr, CLEAN,
    DEAD, DROPPED, FINALIZER_PENDING, LENT_MUT, NO_HEADER, SHIFT, TRACKED_PREFIX, UNTRACKED,
    UNTRACKED_PREFIX, WEAK_CALLBACKS, WEAK_ONE,
};
use super::state;
use super::trace::{GcLayout, Trace};
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
pub struct Gc<T: ?Sized + Trace + 'static> {
    /// The value (the counts and header precede it: see `header`).
    ptr: NonNull<T>,
    _marker: PhantomData<T>,
}

impl<T: ?Sized + Trace + 'static> UnwindSafe for Gc<T> where T: RefUnwindSafe {}

// A `Gc` is a pointer: moving it never moves the value, which stays where
// `Gc::new` put it until it is dropped (the collector moves no value), so
// it is `Unpin` whatever `T` is, as `Rc` is.
impl<T: ?Sized + Trace + 'static> Unpin for Gc<T> {}

/// Frees the memory of the allocation whose value is at `ptr` and whose
/// flags word is `flags` (the one implementation, for `Gc` and `Weak`):
/// an untracked one has a prefix of a constant size; so has a tracked
/// sized one; a tracked unsized one (a slice, or a trait object whose
/// concrete allocation may be a slice's or a sized type's) is freed by
/// its own vtable, which knows how it was made.
///
/// # Safety
/// strong == weak == 0: the value is dropped or moved out, and no handle
/// will touch the allocation again.
#[inline(always)]
pub(crate) unsafe fn deallocate<T: ?Sized>(ptr: NonNull<T>, flags: usize) {
    let obj = counts_of(ptr);
    // SAFETY: the allocation is live until freed here. The size and
    // alignment come from the wide pointer's metadata through a reference
    // to the dropped value: nothing borrows it any more, and a reference's
    // validity does not depend on the memory it points to (t-opsem's
    // decision in rust-lang/unsafe-code-guidelines#414); for a sized `T`
    // both are constants.
    unsafe {
        let value = ptr.as_ref();
        if flags & NO_HEADER != 0 {
            free(
                obj,
                size_of_val(value),
                align_of_val(value),
                UNTRACKED_PREFIX,
            )
        } else if size_of::<*const T>() == size_of::<ObjPtr>() {
            free(obj, size_of_val(value), align_of_val(value), TRACKED_PREFIX)
        } else {
            (GcHeader::of(obj).vtable().dealloc)(obj)
        }
    }
}

/// Releases one weak reference of the allocation at `ptr` whose flags
/// word is `flags`, freeing the memory if it was the last.
///
/// # Safety
/// The caller owns that weak reference; if it is the implicit one of the
/// strong handles, strong == 0 and the value is dropped or moved out.
#[inline(always)]
pub(crate) unsafe fn release_weak<T: ?Sized>(ptr: NonNull<T>, flags: usize) {
    // SAFETY: live until the weak count reaches zero.
    let w = unsafe { weak_word(counts_of(ptr), flags) };
    if dec_weak_is_last(w) {
        // SAFETY: no handle of any kind remains.
        unsafe { deallocate(ptr, flags) }
    }
}

impl<T: ?Sized + Trace + 'static> Gc<T> {
    /// The type-erased object pointer (to the counts).
    #[inline(always)]
    pub(crate) fn obj(&self) -> ObjPtr {
        counts_of(self.ptr)
    }

    #[inline(always)]
    fn counts(&self) -> &Counts {
        // SAFETY: a handle keeps the allocation (counts included) alive.
        unsafe { &*self.obj() }
    }

    /// The flags word (see `header`).
    #[inline(always)]
    fn flags(&self) -> usize {
        // SAFETY: the handle keeps the allocation alive.
        unsafe { flags_word(self.obj()) }.get()
    }

    /// Whether this allocation has a collector header (is tracked).
    #[inline(always)]
    pub(crate) fn has_header(&self) -> bool {
        self.flags() & NO_HEADER == 0
    }

    /// The collector header; only for tracked allocations.
    #[inline(always)]
    pub(crate) fn header(&self) -> &GcHeader {
        debug_assert!(self.has_header());
        // SAFETY: tracked allocations have a header; the handle keeps it
        // alive.
        unsafe { GcHeader::of(self.obj()) }
    }

    /// # Safety
    /// The caller transfers one strong count on a live allocation whose
    /// value (at `ptr`) is initialised.
    #[inline(always)]
    pub(crate) unsafe fn from_inner(ptr: NonNull<T>) -> Self {
        Gc {
            ptr,
            _marker: PhantomData,
        }
    }

    /// Hands a fresh object (value initialised) to this thread's collector
    /// if it is tracked.
    ///
    /// # Safety
    /// `this` is the handle a constructor just made: the object has never
    /// been listed (listing it twice would let the collector free it
    /// twice).
    #[inline(always)]
    pub(crate) unsafe fn track_new(this: &Self) {
        if this.has_header() {
            // SAFETY: a fresh, never listed object (this function's
            // `# Safety`), tracked (it has a header), value initialised.
            unsafe { state::state().track_fresh(this.obj()) };
        }
    }
}

impl<T: Trace + 'static> Gc<T> {
    /// Allocates `value` with a strong count of one.
    ///
    /// If `T` may contain a `Gc` ([`Trace::may_contain_gc`]) the object is
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
        let header = <T as GcLayout>::__gc_header(&value);
        // A tracked object's gc word is written once, by `track_fresh`
        // (see `allocate_with`); nothing reads it before.
        let p = allocate_with(Layout::new::<T>(), header, 1, 1, None).cast::<T>();
        // SAFETY: fresh allocation; the value slot is in bounds and aligned.
        unsafe { ptr::write(p.as_ptr(), value) };
        // SAFETY: `p` is a fully initialised object we own one count of.
        let this = unsafe { Gc::from_inner(p) };
        if header.is_some() {
            // SAFETY: tracked (a header was written), fresh and unlisted,
            // its gc word not yet written.
            unsafe { state::state().track_fresh(this.obj()) };
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
        let header = T::may_contain_gc().then_some(Lay::<T>::HEADER);
        let p = allocate(Layout::new::<T>(), header, 0, 1).cast::<T>();
        // SAFETY: `p` is a live allocation with weak == 1, owned by this
        // Weak.
        let weak = unsafe { Weak::from_inner(p) };
        let value = data_fn(&weak);
        // SAFETY: the allocation is live (we hold a weak count) and the
        // value slot is still uninitialised (strong is 0, so no one could
        // read it).
        unsafe {
            ptr::write(p.as_ptr(), value);
            (*counts_of(p)).strong.set(1);
        }
        // The Weak's count becomes the strong handles' implicit one.
        std::mem::forget(weak);
        // SAFETY: initialised, strong == 1 owned by this handle.
        let this = unsafe { Gc::from_inner(p) };
        // Still UNTRACKED (from `allocate`) until listed here.
        // SAFETY: the handle just made, never listed.
        unsafe { Gc::track_new(&this) };
        this
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
            || this.flags() & (DROPPED | DEAD) != 0
            || (this.has_header() && in_trace())
        {
            return Err(this);
        }
        let this = ManuallyDrop::new(this);
        let obj = this.obj();
        this.counts().strong.set(0);
        let mut callbacks = None;
        if this.has_header() {
            let h = this.header();
            state::with(|st| st.untrack(h));
            h.set_flags(DROPPED);
            if h.has(WEAK_CALLBACKS) {
                callbacks = super::weak_callbacks::take_on_unwrap(obj, h);
            }
        }
        // SAFETY: strong was 1 and is now 0: the value is ours to move out,
        // and no one will drop it again (DROPPED / strong == 0).
        let value = unsafe { ptr::read(this.ptr.as_ptr()) };
        // SAFETY: strong == 0, value moved out.
        unsafe { release_weak(this.ptr, this.flags()) };
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
}

impl<T: ?Sized + Trace + 'static> Gc<T> {
    /// Makes a new [`Weak`] handle to this allocation.
    ///
    /// The process aborts if the object would have more than `u32::MAX`
    /// weak handles on a 64-bit target (the count shares a word with the
    /// type's vtable code), as `Rc` aborts when a count overflows.
    ///
    /// ```
    /// use pymem::Gc;
    /// let g = Gc::new(1);
    /// let w = Gc::downgrade(&g);
    /// assert_eq!(*w.upgrade().unwrap(), 1);
    /// ```
    #[inline]
    pub fn downgrade(this: &Self) -> Weak<T> {
        // SAFETY: the handle keeps the allocation alive.
        inc_weak(unsafe { weak_word(this.obj(), this.flags()) });
        // SAFETY: we just took a weak count on a live allocation.
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
        // SAFETY: the handle keeps the allocation alive.
        weak_count(unsafe { weak_word(this.obj(), this.flags()) }.get()) - 1
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
        this.ptr.as_ptr()
    }

    /// The value, or `None` once the collector has dropped it: for `Drop`
    /// impls of objects that can be part of a cycle.
    ///
    /// When the collector reclaims an unreachable cycle it drops the
    /// values one at a time, so a `Drop` impl that reaches another member
    /// of the same garbage through a `Gc` may find its value already
    /// gone; dereferencing such a handle panics, `try_deref` asks first.
    /// Outside such a `Drop` it always returns `Some`. To act while the
    /// whole cycle is still alive, give the type a finalizer instead
    /// ([`Finalize`](crate::gc::Finalize): it runs before any value of the
    /// garbage is dropped).
    ///
    /// ```
    /// use pymem::{gc, Gc, Trace};
    /// use std::cell::{Cell, RefCell};
    ///
    /// thread_local!(static SEEN: Cell<(u32, u32)> = const { Cell::new((0, 0)) });
    ///
    /// #[derive(Trace)]
    /// struct Peer { other: RefCell<Option<Gc<Peer>>> }
    /// impl Drop for Peer {
    ///     fn drop(&mut self) {
    ///         // The first of the pair to be dropped sees its partner; the
    ///         // second finds it gone instead of panicking.
    ///         let alive = self.other.borrow().as_ref().and_then(|o| Gc::try_deref(o)).is_some();
    ///         SEEN.with(|s| {
    ///             let (a, d) = s.get();
    ///             s.set(if alive { (a + 1, d) } else { (a, d + 1) })
    ///         });
    ///     }
    /// }
    ///
    /// let a = Gc::new(Peer { other: RefCell::new(None) });
    /// let b = Gc::new(Peer { other: RefCell::new(Some(a.clone())) });
    /// *a.other.borrow_mut() = Some(b.clone());
    /// assert!(Gc::try_deref(&a).is_some());
    /// drop((a, b));
    /// assert_eq!(gc::collect(), 2);
    /// assert_eq!(SEEN.with(Cell::get), (1, 1));
    /// ```
    #[inline(always)]
    pub fn try_deref(this: &Self) -> Option<&T> {
        // One test for both rare states; an untracked object's flags word
        // (its weak word) never says DROPPED or LENT_MUT, and a sized type
        // that is never tracked and has no drop glue needs no test at all
        // (see `statically_untracked`).
        let tested = std::mem::needs_drop::<T>() || !statically_untracked(this.ptr);
        if tested && this.flags() & (DROPPED | LENT_MUT) != 0 && !deref_flagged(this.obj()) {
            return None;
        }
        // SAFETY: the handle keeps the allocation alive, the value is not
        // dropped (DROPPED is clear, or the value has no drop glue and so
        // was left as it was), and no `&mut` from `Gc::get_mut` is alive:
        // that one borrows the only handle, so reading through `this`
        // proves it ended (LENT_MUT is clear now, or stays set on an
        // object whose type never asks: the collector then only treats it
        // as referenced from outside).
        Some(unsafe { this.ptr.as_ref() })
    }

    /// Consumes the handle, returning the pointer to the value, as
    /// [`Rc::into_raw`](std::rc::Rc::into_raw); the strong count it held
    /// stays taken until [`Gc::from_raw`] gives it back.
    ///
    /// ```
    /// use pymem::Gc;
    /// let raw = Gc::into_raw(Gc::new(String::from("x")));
    /// // SAFETY: `raw` came from `into_raw` and is given back once.
    /// let back = unsafe { Gc::from_raw(raw) };
    /// assert_eq!(*back, "x");
    /// ```
    pub fn into_raw(this: Self) -> *const T {
        ManuallyDrop::new(this).ptr.as_ptr()
    }

    /// Rebuilds a handle from [`Gc::into_raw`]'s pointer, as
    /// [`Rc::from_raw`](std::rc::Rc::from_raw).
    ///
    /// # Safety
    /// `ptr` was returned by `Gc::<U>::into_raw` where `U` is `T` or a type
    /// that unsizes to `T` (a `*const U` coerces to `*const T`: `[X; N]` to
    /// `[X]`, a type to a `dyn Trait` it implements), on this thread, and
    /// each such pointer is given back once.
    ///
    /// ```
    /// use pymem::Gc;
    /// use std::fmt::Display;
    /// # use pymem::{Trace, Tracer};
    /// # trait Show: Trace + Display {}
    /// # impl Show for u32 {}
    /// let raw: *const u32 = Gc::into_raw(Gc::new(7u32));
    /// let raw: *const dyn Show = raw; // an unsizing coercion
    /// // SAFETY: from `into_raw`, unsized by a coercion, given back once.
    /// let shown: Gc<dyn Show> = unsafe { Gc::from_raw(raw) };
    /// assert_eq!(shown.to_string(), "7");
    /// ```
    pub unsafe fn from_raw(ptr: *const T) -> Gc<T> {
        // SAFETY: `ptr` points to the value of a live allocation (the raw
        // pointer holds a strong count), and the counts and header precede
        // every value the same way (see `header`); the unsizing coercion
        // kept the address and provenance and added the metadata of that
        // same value. Whether the allocation is tracked is in its flags
        // word, whatever type the handle names.
        unsafe { Gc::from_inner(NonNull::new_unchecked(ptr.cast_mut())) }
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
        let f = this.flags();
        // SAFETY: the handle keeps the allocation alive.
        let weak = unsafe { weak_word(this.obj(), f) }.get();
        if this.counts().strong.get() == 1 && weak_count(weak) == 1 && f & (DROPPED | DEAD) == 0 {
            if f & NO_HEADER == 0 {
                if in_trace() {
                    return None;
                }
                // Tracked: the collector lists the object and would read
                // the value through `&T` while the `&mut` lives: LENT_MUT
                // tells it not to (see the flag's docs for when it is
                // cleared). An untracked object is never read by the
                // collector, and its flags word (the weak word) never
                // carries LENT_MUT.
                this.header().set_flags(LENT_MUT);
            }
            // SAFETY: we are the only handle of any kind (strong == 1 and
            // weak == 1, the strong handles' implicit one), and `this`
            // stays mutably borrowed while the result lives, so no `Gc`,
            // `Weak` or `&T` can reach the value meanwhile; the collector,
            // which reaches a tracked object through its list, skips
            // objects flagged LENT_MUT (set just above) until that borrow
            // has provably ended (LENT_MUT's invariant, see `header`).
            Some(unsafe { this.ptr.as_mut() })
        } else {
            None
        }
    }

    /// Releases the strong handles' implicit weak reference of a tracked
    /// object (the collector's and the trashcan's path).
    ///
    /// # Safety
    /// strong == 0 on a tracked object whose value was dropped or moved
    /// out.
    #[inline(always)]
    pub(crate) unsafe fn release_weak(ptr: NonNull<T>) {
        // SAFETY: strong == 0 on a tracked object whose value is gone (this
        // function's `# Safety`), what `release_weak` requires; tracked, so
        // its flags are not `NO_HEADER` (0 stands for any gc word here).
        unsafe { release_weak(ptr, 0) }
    }

    /// The last strong handle is gone: frees an untracked value without
    /// drop glue and `Weak`s at once (`Rc`'s inline path), hands a listed
    /// tracked object without rare flags to [`drop_listed`], and
    /// everything else to [`drop_slow`].
    ///
    /// [`drop_listed`]: Self::drop_listed
    /// [`drop_slow`]: Self::drop_slow
    ///
    /// `untracked` is [`statically_untracked`]`(ptr)`, asked before the
    /// count was released: its answer comes from `Trace::may_contain_gc`,
    /// user code that may run a collection, which would find an object
    /// with no strong count unreachable and free it under us.
    ///
    /// # Safety
    /// We released the last strong count of the live object at `ptr`.
    #[inline(always)]
    unsafe fn drop_last(ptr: NonNull<T>, untracked: bool) {
        // SAFETY: the allocation is live until freed below.
        let w = unsafe { flags_word(counts_of(ptr)) }.get();
        if !std::mem::needs_drop::<T>() && w == NO_HEADER | WEAK_ONE {
            // Untracked, no `Weak` (the strong handles' implicit one is the
            // only weak reference), nothing to drop: the word need not be
            // written back.
            // SAFETY: strong == weak == 0 now, and the value needs no drop.
            unsafe { deallocate(ptr, NO_HEADER) }
        } else if untracked {
            // SAFETY: we released the last strong count of the live object
            // (this function's `# Safety`), which is all `drop_untracked`
            // requires (it checks that the object is untracked, and reads
            // its flags word itself, so that the test above compares with
            // memory).
            unsafe { Self::drop_untracked(ptr) }
        } else if w & (NO_HEADER | DROPPED | UNTRACKED | FINALIZER_PENDING | WEAK_CALLBACKS) == 0 {
            // SAFETY: the last strong count is released (this function's
            // `# Safety`); `w` is its gc word: tracked (not NO_HEADER),
            // listed (not UNTRACKED) at index `w >> SHIFT`, value live (not
            // DROPPED), no pending finalizer or weak callbacks.
            unsafe { Self::drop_listed(ptr, w) }
        } else {
            // SAFETY: the last strong count of the live object is released
            // (this function's `# Safety`), all `drop_slow` requires.
            unsafe { Self::drop_slow(ptr) }
        }
    }

    /// The last strong handle of a listed tracked object without rare
    /// flags is gone: leaves the list, then drops the value (through the
    /// trashcan) and releases the implicit weak reference. Out of line,
    /// so that `Gc`'s inlined `drop` stays small whatever `T` is; its
    /// only frame is the trashcan's.
    ///
    /// # Safety
    /// As [`drop_last`](Self::drop_last), and `w` is the object's gc word,
    /// without `NO_HEADER`, `UNTRACKED`, `DROPPED` or a pending finalizer
    /// or weak callbacks.
    #[inline(never)]
    unsafe fn drop_listed(ptr: NonNull<T>, w: usize) {
        let st = state::state();
        st.untrack_at(w >> SHIFT);
        // SAFETY: strong == 0, value live, dropped once by the trashcan.
        unsafe { trashcan::drop_object(st, ptr) }
    }

    /// `drop_last` for everything but the two common cases: an untracked
    /// object, or a tracked one that is not in the list or has a rare
    /// flag.
    ///
    /// # Safety
    /// As [`drop_last`](Self::drop_last).
    #[cold]
    #[inline(never)]
    unsafe fn drop_slow(ptr: NonNull<T>) {
        // SAFETY: live until freed.
        let w = unsafe { flags_word(counts_of(ptr)) }.get();
        if w & NO_HEADER != 0 {
            // SAFETY: the last strong count of the live object is released
            // (this function's `# Safety`), all `drop_untracked` requires.
            return unsafe { Self::drop_untracked(ptr) };
        }
        if w & DROPPED != 0 {
            // A handle resurrected from a Drop run by the collector: the
            // value is gone, only the memory remains.
            // SAFETY: strong == 0 and the value is dropped.
            unsafe { Self::release_weak(ptr) };
            return;
        }
        if w & (FINALIZER_PENDING | WEAK_CALLBACKS) != 0 {
            // A pending finalizer or weak callbacks.
            // SAFETY: strong just reached 0 on this live tracked object.
            return unsafe { super::finalizers::last_drop(ptr) };
        }
        let st = state::state();
        if w & UNTRACKED == 0 {
            st.untrack_at(w >> SHIFT);
        }
        // Listed, or untracked (created after the thread's collector was
        // torn down, or while a collection could not grow the list): drop
        // the value.
        // SAFETY: strong == 0, value live, dropped once by the trashcan.
        unsafe { trashcan::drop_object(st, ptr) }
    }

    /// The last strong handle of an object that is usually untracked is
    /// gone (an untracked one, or any handle of a type that is never
    /// tracked). Out of line: its frame (the value's drop) must not weigh
    /// on the callers.
    ///
    /// # Safety
    /// As [`drop_last`](Self::drop_last).
    #[inline(never)]
    unsafe fn drop_untracked(ptr: NonNull<T>) {
        // SAFETY: live until freed.
        if unsafe { flags_word(counts_of(ptr)) }.get() & NO_HEADER == 0 {
            // Tracked after all: a `may_contain_gc` that answered
            // differently when the object was made (rule 4 of `Trace`).
            // SAFETY: the last strong count of the live object is released
            // (this function's `# Safety`), all `drop_slow` requires, and
            // `drop_slow` sees the header and does not come back here.
            return unsafe { Self::drop_slow(ptr) };
        }
        // SAFETY: untracked values hold no Gc and are never reached by the
        // collector; strong == 0 gives us the value, dropped once, then the
        // implicit weak count is released (its word read afresh: the
        // value's drop may have dropped `Weak`s to it).
        unsafe {
            ptr::drop_in_place(ptr.as_ptr());
            release_weak(ptr, NO_HEADER);
        }
    }
}

#[cold]
#[inline(never)]
fn note_dirty(h: &GcHeader) {
    state::state().note_dirty(h);
}

/// `try_deref` (and so `deref`) of a handle whose object is flagged
/// Whether the collector is inside its phases on this thread, that is,
/// the caller runs inside a `trace` (the only user code the phases run).
/// The collector may then hold a `&T` to any tracked object (the one
/// being traced among them), so `get_mut` and `try_unwrap` refuse tracked
/// objects as if they were shared: a `trace` that breaks rule 5 of
/// `Trace` gets `None` or `Err`, never a `&mut T` or the value out from
/// under the collector's reference.
#[inline]
fn in_trace() -> bool {
    state::with(|st| st.in_phases())
}

/// `DROPPED` or `LENT_MUT`: whether the value may be read. `false` if it
/// was dropped; otherwise the flag was `LENT_MUT`, which reading through
/// this handle proves stale (the `&mut` from `Gc::get_mut` borrows the
/// only handle), so it is cleared.
///
/// Only tracked objects carry either flag, so `obj` is tracked.
#[cold]
#[inline(never)]
fn deref_flagged(obj: ObjPtr) -> bool {
    // SAFETY: the caller's handle keeps the allocation alive; the flag
    // test that led here means its flags word is a gc word (an untracked
    // object's never has DROPPED or LENT_MUT), so the header exists.
    let h = unsafe { GcHeader::of(obj) };
    if h.has(DROPPED) {
        return false;
    }
    h.clear_flags(LENT_MUT);
    true
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

impl<T: ?Sized + Trace + 'static> Drop for Gc<T> {
    #[inline(always)]
    fn drop(&mut self) {
        // Asked while this handle's count still keeps the object alive
        // and reachable: `may_contain_gc` is user code, and a collection
        // it ran after the decrement could free the object (see
        // `drop_last`). For a sized type it is a constant and costs
        // nothing.
        let untracked = statically_untracked(self.ptr);
        let c = self.counts();
        let s = c.strong.get() - 1;
        c.strong.set(s);
        if s == 0 {
            // SAFETY: we released the last strong count; `untracked` was
            // asked before.
            unsafe { Self::drop_last(self.ptr, untracked) }
        } else if !untracked
            // SAFETY: the handle keeps the allocation alive.
            && unsafe { low_flags(self.obj()) } & (CLEAN | LENT_MUT) as u8 != 0
        {
            // Tracked (an untracked object's flags word has neither flag),
            // and one test for both: still CLEAN (the skip rule must learn
            // of this decrement), or LENT_MUT (which this use of the handle
            // proves stale).
            note_dirty(self.header());
        }
    }
}

impl<T: Trace + 'static> Gc<T> {
    /// A pinned `Gc`, as [`Rc::pin`](std::rc::Rc::pin): the value never
    /// moves while any handle exists (the collector moves no value).
    ///
    /// ```
    /// use pymem::Gc;
    /// let p = Gc::pin(5u8);
    /// assert_eq!(*p, 5);
    /// ```
    pub fn pin(value: T) -> std::pin::Pin<Gc<T>> {
        // SAFETY: no `Gc` API moves a value out of a shared allocation:
        // `try_unwrap`, `into_inner` and `get_mut` need the `Gc` itself,
        // which a `Pin<Gc<T>>` of a `!Unpin` `T` never gives back, and the
        // collector drops values in place.
        unsafe { std::pin::Pin::new_unchecked(Gc::new(value)) }
    }
}

impl<T: Clone + Trace + 'static> Gc<T> {
    /// A mutable reference to the value, cloning it into a new allocation
    /// first if another `Gc` or [`Weak`] shares it (copy-on-write), as
    /// [`Rc::make_mut`](std::rc::Rc::make_mut). Unlike `Rc`, a value
    /// shared only with `Weak`s is cloned too, not moved; either way those
    /// `Weak`s stop upgrading, as with `Rc`.
    ///
    /// # Panics
    /// If the collector already dropped the value (see [`Gc::try_deref`]).
    ///
    /// ```
    /// use pymem::Gc;
    /// let mut a = Gc::new(vec![1]);
    /// let b = a.clone();
    /// Gc::make_mut(&mut a).push(2); // `a` now has its own copy
    /// assert_eq!((&*a, &*b), (&vec![1, 2], &vec![1]));
    /// let w = Gc::downgrade(&b);
    /// let mut b = b;
    /// Gc::make_mut(&mut b).push(3);
    /// assert!(w.upgrade().is_none());
    /// assert_eq!(*b, [1, 3]);
    /// ```
    pub fn make_mut(this: &mut Self) -> &mut T {
        if Gc::get_mut(this).is_none() {
            *this = Gc::new(T::clone(this));
        }
        match Gc::get_mut(this) {
            Some(v) => v,
            // A fresh `Gc` has no other handle, and its value is not
            // dropped: `get_mut` refuses it only inside a `trace`.
            None => panic!("pymem: Gc::make_mut called from a `trace` (rule 5 of `Trace`)"),
        }
    }

    /// The value, moved out if this is the only strong handle, else a
    /// clone of it, as [`Rc::unwrap_or_clone`](std::rc::Rc::unwrap_or_clone).
    ///
    /// # Panics
    /// If the collector already dropped the value (see [`Gc::try_deref`]).
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(String::from("x"));
    /// let b = a.clone();
    /// assert_eq!(Gc::unwrap_or_clone(a), "x"); // cloned: `b` shares it
    /// assert_eq!(Gc::unwrap_or_clone(b), "x"); // moved out
    /// ```
    pub fn unwrap_or_clone(this: Self) -> T {
        Gc::try_unwrap(this).unwrap_or_else(|shared| T::clone(&shared))
    }
}

impl<T: ?Sized + Trace + 'static> Gc<T> {
    /// Adds a strong count to the allocation behind a pointer from
    /// [`Gc::into_raw`], as
    /// [`Rc::increment_strong_count`](std::rc::Rc::increment_strong_count).
    ///
    /// # Safety
    /// `ptr` came from `Gc::into_raw` (of `T` or a type unsizing to `T`) on
    /// this thread, and the count it holds is still taken.
    ///
    /// ```
    /// use pymem::Gc;
    /// let raw = Gc::into_raw(Gc::new(1));
    /// // SAFETY: `raw` holds a count taken by `into_raw`.
    /// unsafe { Gc::increment_strong_count(raw) };
    /// // SAFETY: two counts are held; each is given back once.
    /// let (a, b) = unsafe { (Gc::from_raw(raw), Gc::from_raw(raw)) };
    /// assert_eq!(Gc::strong_count(&a), 2);
    /// # drop((a, b));
    /// ```
    pub unsafe fn increment_strong_count(ptr: *const T) {
        // SAFETY: `ptr` holds a strong count (this function's `# Safety`),
        // lent to the handle, which `ManuallyDrop` keeps from giving it
        // back.
        let this = ManuallyDrop::new(unsafe { Gc::from_raw(ptr) });
        std::mem::forget(Gc::clone(&this));
    }

    /// Gives back one strong count taken through [`Gc::into_raw`] or
    /// [`Gc::increment_strong_count`], as
    /// [`Rc::decrement_strong_count`](std::rc::Rc::decrement_strong_count):
    /// the value is dropped if it was the last.
    ///
    /// # Safety
    /// `ptr` came from `Gc::into_raw` (of `T` or a type unsizing to `T`) on
    /// this thread, and one count taken through it is given back here, once.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let raw = Gc::into_raw(a.clone());
    /// assert_eq!(Gc::strong_count(&a), 2);
    /// // SAFETY: `raw` holds the count `into_raw` took; given back once.
    /// unsafe { Gc::decrement_strong_count(raw) };
    /// assert_eq!(Gc::strong_count(&a), 1);
    /// ```
    pub unsafe fn decrement_strong_count(ptr: *const T) {
        // SAFETY: `ptr` holds one strong count that the caller gives back
        // (this function's `# Safety`): the rebuilt handle owns it, and its
        // drop releases it.
        drop(unsafe { Gc::from_raw(ptr) });
    }
}

impl<T: ?Sized + Trace + 'static> Clone for Gc<T> {
    /// Another handle to the same allocation (a count increment).
    #[inline]
    fn clone(&self) -> Self {
        inc_strong(self.counts());
        // SAFETY: we took a strong count.
        unsafe { Gc::from_inner(self.ptr) }
    }
}

impl<T: ?Sized + Trace + 'static> Deref for Gc<T> {
    type Target = T;

    /// The value. Panics only if the collector already dropped it: inside a
    /// `Drop` run by a collection, reaching another member of the same
    /// garbage (see [`Gc::try_deref`]).
    #[inline(always)]
    #[track_caller]
    fn deref(&self) -> &T {
        match Gc::try_deref(self) {
            Some(v) => v,
            None => dropped_panic(std::any::type_name::<T>()),
        }
    }
}

// SAFETY: a Gc is one strong edge; visiting it is exactly its edge. Edges
// to untracked objects cannot be part of a cycle: a handle whose type is
// never tracked skips them at compile time, `visit` tells the others by
// their flags word and ignores them.
unsafe impl<T: ?Sized + Trace + 'static> Trace for Gc<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        // A sized type that is never tracked: no test at run time (see
        // `statically_untracked`). A hand-written `may_contain_gc` that
        // answers `false` wrongly but consistently makes the missed edge
        // leak; one whose answer changes between visits breaks `Trace`'s
        // rule 3 too (rule 4 there says what that costs).
        if !statically_untracked(self.ptr) {
            tracer.visit(self.obj());
        }
    }
}

impl<T: ?Sized + Trace + 'static> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: ?Sized + Trace + 'static> Borrow<T> for Gc<T> {
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

impl<T: ?Sized + Trace + 'static + fmt::Debug> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + Trace + 'static + fmt::Display> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized + Trace + 'static> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Gc::as_ptr(self), f)
    }
}

impl<T: ?Sized + Trace + 'static + PartialEq> PartialEq for Gc<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Trace + 'static + Eq> Eq for Gc<T> {}

impl<T: ?Sized + Trace + 'static + PartialOrd> PartialOrd for Gc<T> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Trace + 'static + Ord> Ord for Gc<T> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + Trace + 'static + Hash> Hash for Gc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
