//! The trashcan: deep chains of objects freed by refcounting are dropped
//! iteratively, as CPython's `Py_TRASHCAN_BEGIN` does.
//!
//! Dropping the value of an object can drop the last handle to another,
//! whose value drops the next, and so on: a 10-million-element list would
//! need 10 million nested frames. Each tracked object's drop goes through
//! [`drop_object`], which counts the nesting depth per thread; past
//! [`LIMIT`] the object (already untracked, strong count 0) is pushed on a
//! thread-local queue instead, and the outermost frame drains the queue
//! when it returns. Untracked values hold no `Gc`, so they cannot nest.

use std::ptr::{self, NonNull};

use super::generations::State;
use super::header::{counts_of, release_implicit_weak, GcHeader, DROPPED};
use super::ptr::Gc;
use super::trace::Trace;

/// Nesting depth past which drops are deferred.
pub(crate) const LIMIT: u32 = 64;

struct Depth<'a>(&'a State);

impl Drop for Depth<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get() - 1);
    }
}

/// Drops the value of a tracked object whose strong count reached zero
/// (already untracked) and releases its implicit weak reference, or
/// defers it when the nesting is too deep.
///
/// # Safety
/// `ptr` is the value of a live tracked object with strong == 0 that has
/// not been dropped, and no one else will drop it.
#[inline(always)]
pub(crate) unsafe fn drop_object<T: ?Sized + Trace + 'static>(st: &State, ptr: NonNull<T>) {
    let obj = counts_of(ptr);
    let d = st.depth.get();
    if d >= LIMIT {
        st.deferred.push(obj);
        return;
    }
    st.depth.set(d + 1);
    // The guard restores the depth only on unwind; the normal path stores
    // `d` back from a register (nested frames restore their own changes).
    let g = Depth(st);
    // SAFETY: the value is initialised and dropped exactly once here;
    // then strong == 0 and the value is dropped, as `release_weak`
    // requires.
    unsafe {
        ptr::drop_in_place(ptr.as_ptr());
        Gc::<T>::release_weak(ptr);
    }
    std::mem::forget(g);
    st.depth.set(d);
    // One compare on the hot path: true when this is the outermost frame
    // (d == 0) with deferred objects, and (rarely: only while objects are
    // deferred) in nested frames, which `drain_from` turns away.
    if st.deferred.len() > d as usize {
        drain_from(st, d);
    }
}

/// Runs `f` (which may drop values) as one trashcan frame, then drains the
/// queue if this was the outermost frame.
pub(crate) fn nested(st: &State, f: impl FnOnce()) {
    let d = st.depth.get();
    st.depth.set(d + 1);
    {
        let _g = Depth(st);
        f();
    }
    if d == 0 && st.deferred.len() != 0 {
        drain(st);
    }
}

/// [`drain`] if `d` is the outermost frame.
#[cold]
#[inline(never)]
fn drain_from(st: &State, d: u32) {
    if d == 0 {
        drain(st);
    }
}

#[cold]
#[inline(never)]
fn drain(st: &State) {
    while let Some(obj) = st.deferred.pop() {
        st.depth.set(1);
        let _g = Depth(st);
        // SAFETY: deferred objects are live, tracked, strong == 0, value
        // not yet dropped (see `drop_object`).
        unsafe {
            let h = GcHeader::of(obj);
            h.set_flags(DROPPED);
            (h.vtable.drop_value)(obj);
            release_implicit_weak(obj);
        }
    }
}
