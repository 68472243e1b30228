//! [`PtrVec`]: a growable vector of raw object pointers that a
//! `const`-initialised thread-local can hold without a destructor.

use std::cell::Cell;
use std::ptr;

use super::header::ObjPtr;

/// A vector of raw pointers with no `Drop`, so the thread-local that holds
/// it needs no destructor registration and stays usable during thread
/// teardown. Its buffer is freed explicitly ([`free`](Self::free)).
///
/// Invariant: `len <= cap`; `ptr` is null iff `cap == 0`, otherwise it is
/// the buffer of a `Vec<ObjPtr>` of capacity `cap` whose first `len`
/// entries are initialised.
pub(crate) struct PtrVec {
    ptr: Cell<*mut ObjPtr>,
    len: Cell<usize>,
    cap: Cell<usize>,
}

impl PtrVec {
    pub(crate) const fn new() -> Self {
        PtrVec {
            ptr: Cell::new(ptr::null_mut()),
            len: Cell::new(0),
            cap: Cell::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    #[inline(always)]
    pub(crate) fn cap(&self) -> usize {
        self.cap.get()
    }

    /// The buffer (null while there is none); valid until the vector
    /// grows or is freed.
    #[inline(always)]
    pub(crate) fn as_ptr(&self) -> *const ObjPtr {
        self.ptr.get()
    }

    /// Entry `i`; panics if `i >= len`.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> ObjPtr {
        assert!(i < self.len.get());
        // SAFETY: in bounds (checked) of the initialised prefix.
        unsafe { *self.ptr.get().add(i) }
    }

    /// Entry `i`, unchecked.
    ///
    /// # Safety
    /// `i < len`.
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, i: usize) -> ObjPtr {
        debug_assert!(i < self.len.get());
        // SAFETY: i < len (this function's `# Safety`) and len <= cap, so
        // the entry is in the buffer's initialised prefix.
        unsafe { *self.ptr.get().add(i) }
    }

    /// Writes entry `i`, unchecked.
    ///
    /// # Safety
    /// `i < len`.
    #[inline(always)]
    pub(crate) unsafe fn set_unchecked(&self, i: usize, p: ObjPtr) {
        debug_assert!(i < self.len.get());
        // SAFETY: i < len (this function's `# Safety`) and len <= cap, so
        // the entry is in the buffer and initialised.
        unsafe { *self.ptr.get().add(i) = p }
    }

    /// Pushes, growing if needed.
    #[inline]
    pub(crate) fn push(&self, p: ObjPtr) {
        // A loop, as `grow` may be re-entered (see there).
        while self.len.get() == self.cap.get() {
            self.grow();
        }
        // SAFETY: len < cap, the loop's exit condition.
        unsafe { self.push_within_cap(p) }
    }

    /// Pushes without a capacity check.
    ///
    /// # Safety
    /// `len < cap`.
    #[inline(always)]
    pub(crate) unsafe fn push_within_cap(&self, p: ObjPtr) {
        let len = self.len.get();
        debug_assert!(len < self.cap.get());
        // SAFETY: len < cap (this function's `# Safety`), so the slot at
        // `len` is inside the buffer.
        unsafe { *self.ptr.get().add(len) = p };
        self.len.set(len + 1);
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<ObjPtr> {
        let len = self.len.get();
        if len == 0 {
            None
        } else {
            self.len.set(len - 1);
            // SAFETY: len - 1 < len <= cap, initialised.
            Some(unsafe { *self.ptr.get().add(len - 1) })
        }
    }

    /// Sets the length to `n`; panics in debug builds if `n > len`.
    #[inline(always)]
    pub(crate) fn truncate(&self, n: usize) {
        debug_assert!(n <= self.len.get());
        if n < self.len.get() {
            self.len.set(n);
        }
    }

    /// Sets the length to `n` without a check.
    ///
    /// # Safety
    /// `n <= len`.
    #[inline(always)]
    pub(crate) unsafe fn set_len(&self, n: usize) {
        debug_assert!(n <= self.len.get());
        self.len.set(n);
    }

    /// Moves `[from, len)` down to `to` (`to <= from`) and truncates;
    /// returns the number of entries moved.
    pub(crate) fn move_tail(&self, from: usize, to: usize) -> usize {
        let len = self.len.get();
        assert!(to <= from && from <= len);
        let n = len - from;
        if n > 0 && to != from {
            // SAFETY: both ranges lie in the initialised prefix.
            unsafe { ptr::copy(self.ptr.get().add(from), self.ptr.get().add(to), n) };
        }
        self.len.set(to + n);
        n
    }

    /// Doubles the capacity (256 at first); returns whether this call made
    /// the vector's first allocation.
    ///
    /// The allocation may re-enter: a global allocator that itself creates
    /// `Gc`s (a profiler recording into a graph) runs `Gc::new` inside it,
    /// which may push to this vector and grow it first. So the fields are
    /// read again once the new buffer is in hand, and if another growth
    /// happened meanwhile the new buffer is dropped and nothing else is
    /// done: the caller tests for room again (`push`, `State::make_room`).
    /// Reading them before the allocation would copy too little and free
    /// the other growth's buffer with a stale layout. The free of the old
    /// buffer may re-enter too (a `dealloc` that creates `Gc`s), so the
    /// new buffer is installed first: a nested push lands in it, and a
    /// nested growth copies from it.
    #[cold]
    #[inline(never)]
    pub(crate) fn grow(&self) -> bool {
        let cap = self.cap.get();
        let new_cap = if cap == 0 { 256 } else { cap * 2 };
        let mut v: Vec<ObjPtr> = Vec::with_capacity(new_cap);
        if self.cap.get() != cap {
            // Re-entered: the nested call grew the vector already.
            return false;
        }
        let len = self.len.get();
        let old = self.ptr.get();
        let first = old.is_null();
        // SAFETY: `cap` is still the capacity of the buffer at `ptr`
        // (tested just above, after the last call that could re-enter),
        // whose first `len <= cap` entries are initialised (the type's
        // invariant), and `v` holds `new_cap > cap` entries: the copy is in
        // bounds; the old buffer came from a Vec of capacity `cap`, taken
        // back here to be freed once, below.
        let old_buf = (!first).then(|| unsafe {
            ptr::copy_nonoverlapping(old, v.as_mut_ptr(), len);
            Vec::from_raw_parts(old, 0, cap)
        });
        let mut v = std::mem::ManuallyDrop::new(v);
        self.ptr.set(v.as_mut_ptr());
        self.cap.set(v.capacity());
        // Freed once the fields name the new buffer, so whatever this free
        // runs finds them consistent (see above).
        drop(old_buf);
        first
    }

    /// Frees the buffer; the vector becomes empty.
    pub(crate) fn free(&self) {
        let p = self.ptr.replace(ptr::null_mut());
        let cap = self.cap.replace(0);
        self.len.set(0);
        if !p.is_null() {
            // SAFETY: the buffer came from a Vec of this capacity.
            unsafe { drop(Vec::from_raw_parts(p, 0, cap)) }
        }
    }
}
