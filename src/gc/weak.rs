//! [`Weak<T>`]: the non-owning handle.

use std::fmt;
use std::ptr::{self, NonNull};

use super::header::{
    counts_of, flags_word, inc_strong, inc_weak, weak_count, weak_word, Counts, DEAD, DROPPED,
};
use super::ptr::{release_weak, Gc};
use super::trace::Trace;
use super::tracer::Tracer;

/// A non-owning handle to a [`Gc`] allocation, as
/// [`rc::Weak`](std::rc::Weak): it does not keep the value alive and is
/// not an edge for the collector.
///
/// [`upgrade`](Weak::upgrade) returns `None` once the value is gone, and
/// already when the collector has found it unreachable, before any value
/// of that garbage is dropped (as CPython clears weakrefs first).
///
/// ```
/// use pymem::{gc, Gc, Trace, Weak};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// let w: Weak<Node> = Gc::downgrade(&a);
/// drop(a);
/// assert!(w.upgrade().is_some()); // the cycle keeps it alive...
/// gc::collect();
/// assert!(w.upgrade().is_none()); // ...until it is collected
/// assert_eq!(w.strong_count(), 0);
/// ```
pub struct Weak<T: ?Sized + Trace + 'static> {
    /// The value (as `Gc`'s); `usize::MAX` (no provenance) for
    /// `Weak::new()`.
    ptr: NonNull<T>,
}

impl<T: Trace + 'static> Weak<T> {
    /// A `Weak` that points to nothing: `upgrade` returns `None` and both
    /// counts are 0. Allocates nothing. (Sized `T` only, as
    /// `rc::Weak::new`: an unsized one would need metadata.)
    ///
    /// ```
    /// use pymem::Weak;
    /// let w: Weak<u32> = Weak::new();
    /// assert!(w.upgrade().is_none());
    /// assert_eq!((w.strong_count(), w.weak_count()), (0, 0));
    /// ```
    pub const fn new() -> Weak<T> {
        Weak {
            // SAFETY: usize::MAX is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(usize::MAX)) },
        }
    }
}

impl<T: ?Sized + Trace + 'static> Weak<T> {
    /// # Safety
    /// The caller transfers one weak count on a live allocation.
    #[inline(always)]
    pub(crate) unsafe fn from_inner(ptr: NonNull<T>) -> Self {
        Weak { ptr }
    }

    /// The counts, or `None` for `Weak::new()`.
    #[inline(always)]
    fn counts(&self) -> Option<&Counts> {
        if self.ptr.as_ptr().cast::<u8>().addr() == usize::MAX {
            None
        } else {
            // SAFETY: a non-dangling Weak holds a weak count, which keeps
            // the allocation (counts included) alive.
            Some(unsafe { &*counts_of(self.ptr) })
        }
    }

    /// The flags word (see `header`); only when `counts()` is `Some`.
    #[inline(always)]
    fn flags(&self) -> usize {
        // SAFETY: callers checked `counts()` is `Some`: this `Weak` is not
        // dangling, so it holds a weak count, which keeps the allocation
        // (its flags word included) alive.
        unsafe { flags_word(counts_of(self.ptr)) }.get()
    }

    /// Whether the collector has found the object unreachable or its value
    /// is gone (never for an untracked object); only when `counts()` is
    /// `Some`.
    #[inline(always)]
    fn dead(&self) -> bool {
        self.flags() & (DEAD | DROPPED) != 0
    }

    /// A strong handle, if the value is still alive and not found
    /// unreachable by the collector.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let w = Gc::downgrade(&a);
    /// assert_eq!(w.upgrade().as_deref(), Some(&1));
    /// drop(a);
    /// assert!(w.upgrade().is_none());
    /// ```
    pub fn upgrade(&self) -> Option<Gc<T>> {
        let c = self.counts()?;
        if c.strong.get() == 0 || self.dead() {
            return None;
        }
        inc_strong(c);
        // SAFETY: the value is initialised and not dropped (strong > 0:
        // `new_cyclic` sets it only after writing the value, and every
        // path that drops or moves it out sets strong to 0 or DROPPED /
        // DEAD first), and we just took the strong count `from_inner`
        // transfers.
        Some(unsafe { Gc::from_inner(self.ptr) })
    }

    /// Number of strong handles; 0 once the value is dead (dropped, or
    /// found unreachable by the collector) or for `Weak::new()`.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let w = Gc::downgrade(&a);
    /// assert_eq!(w.strong_count(), 1);
    /// drop(a);
    /// assert_eq!(w.strong_count(), 0);
    /// ```
    pub fn strong_count(&self) -> usize {
        match self.counts() {
            Some(c) if !self.dead() => c.strong.get(),
            _ => 0,
        }
    }

    /// Number of `Weak` handles to the allocation; 0 once no strong handle
    /// remains (as `rc::Weak::weak_count`).
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(1);
    /// let w = Gc::downgrade(&a);
    /// let _w2 = w.clone();
    /// assert_eq!(w.weak_count(), 2);
    /// ```
    pub fn weak_count(&self) -> usize {
        match self.counts() {
            // SAFETY: `counts()` is Some: this `Weak` holds a weak count,
            // which keeps the allocation alive.
            Some(c) if c.strong.get() > 0 && !self.dead() => {
                weak_count(unsafe { weak_word(counts_of(self.ptr), self.flags()) }.get()) - 1
            }
            _ => 0,
        }
    }

    /// Whether both point to the same allocation (two `Weak::new()` are
    /// equal), as [`rc::Weak::ptr_eq`](std::rc::Weak::ptr_eq).
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// let a = Gc::new(1);
    /// assert!(Weak::ptr_eq(&Gc::downgrade(&a), &Gc::downgrade(&a)));
    /// assert!(!Weak::ptr_eq(&Gc::downgrade(&a), &Weak::new()));
    /// ```
    #[inline]
    pub fn ptr_eq(&self, other: &Self) -> bool {
        ptr::addr_eq(self.ptr.as_ptr(), other.ptr.as_ptr())
    }

    /// A pointer to the value, as [`rc::Weak::as_ptr`](std::rc::Weak::as_ptr):
    /// valid to read only while the value is alive (a strong handle
    /// exists and the collector has not found it unreachable); dangling,
    /// but never null, for `Weak::new()` and once the value is gone.
    ///
    /// ```
    /// use pymem::Gc;
    /// let a = Gc::new(7);
    /// let w = Gc::downgrade(&a);
    /// assert!(std::ptr::eq(w.as_ptr(), Gc::as_ptr(&a)));
    /// // SAFETY: `a` keeps the value alive.
    /// assert_eq!(unsafe { *w.as_ptr() }, 7);
    /// ```
    #[inline]
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// Consumes the `Weak`, returning [`Weak::as_ptr`]'s pointer; the weak
    /// count it held stays taken until [`Weak::from_raw`] gives it back
    /// (as [`rc::Weak::into_raw`](std::rc::Weak::into_raw)).
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// let a = Gc::new(1);
    /// let raw = Weak::into_raw(Gc::downgrade(&a));
    /// assert_eq!(Gc::weak_count(&a), 1);
    /// // SAFETY: `raw` came from `into_raw` and is given back once.
    /// let w = unsafe { Weak::from_raw(raw) };
    /// assert_eq!(w.upgrade().as_deref(), Some(&1));
    /// drop(w);
    /// assert_eq!(Gc::weak_count(&a), 0);
    /// ```
    pub fn into_raw(self) -> *const T {
        std::mem::ManuallyDrop::new(self).ptr.as_ptr()
    }

    /// Rebuilds a `Weak` from [`Weak::into_raw`]'s pointer, as
    /// [`rc::Weak::from_raw`](std::rc::Weak::from_raw).
    ///
    /// # Safety
    /// `ptr` was returned by `Weak::<U>::into_raw` where `U` is `T` or a
    /// type that unsizes to `T`, on this thread, and each such pointer is
    /// given back once.
    ///
    /// ```
    /// use pymem::{Gc, Weak};
    /// let raw = Weak::into_raw(Weak::<u32>::new());
    /// // SAFETY: from `into_raw`, given back once.
    /// let w = unsafe { Weak::from_raw(raw) };
    /// assert!(w.upgrade().is_none());
    /// ```
    pub unsafe fn from_raw(ptr: *const T) -> Weak<T> {
        // SAFETY: `into_raw` returned this `Weak`'s own pointer, never
        // null (a value's address, or `Weak::new()`'s `usize::MAX`); the
        // weak count it held (none for `Weak::new()`, which `counts()`
        // recognises by that address) is handed back to the new handle,
        // and an unsizing coercion kept the address.
        Weak {
            ptr: unsafe { NonNull::new_unchecked(ptr.cast_mut()) },
        }
    }
}

impl<T: ?Sized + Trace + 'static> Drop for Weak<T> {
    #[inline]
    fn drop(&mut self) {
        if self.counts().is_some() {
            // SAFETY: this Weak owns a weak reference; when it is the last
            // one, strong == 0 (the strong handles hold one together) and
            // the value was dropped or never written.
            unsafe { release_weak(self.ptr, self.flags()) }
        }
    }
}

impl<T: ?Sized + Trace + 'static> Clone for Weak<T> {
    #[inline]
    fn clone(&self) -> Self {
        if self.counts().is_some() {
            // SAFETY: a non-dangling Weak holds a weak count, which keeps
            // the allocation alive.
            inc_weak(unsafe { weak_word(counts_of(self.ptr), self.flags()) });
        }
        Weak { ptr: self.ptr }
    }
}

impl<T: Trace + 'static> Default for Weak<T> {
    /// `Weak::new()`.
    fn default() -> Self {
        Weak::new()
    }
}

impl<T: ?Sized + Trace + 'static> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
    }
}

// SAFETY: a Weak is not a strong edge; it owns no Gc.
unsafe impl<T: ?Sized + Trace + 'static> Trace for Weak<T> {
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
    #[inline(always)]
    fn may_contain_gc() -> bool {
        false
    }
}
