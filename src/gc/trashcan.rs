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
//! While a collection's phases run, every frame is refused, so that a
//! `trace` cannot free what the collector is reading (see
//! `State::enter_phases`); the collection drains the queue at its end.
//!
//! A panic in a `Drop` unwinds through the frames; each releases its
//! object's memory (the value's remaining fields were dropped while
//! unwinding) and restores its depth, and the outermost drains the queue
//! before the panic leaves it
//! (a second panic from a drained drop is caught and discarded: one is
//! already in flight). Objects still queued at thread exit (a panic that
//! left an outermost frame drained them already, so only a drop that
//! never returned could leave any) are drained by the collector's
//! teardown.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::collector::Panic;
use super::header::{counts_of, release_implicit_weak, GcHeader, ObjPtr, DROPPED};
use super::ptr::Gc;
use super::state::{state, State};
use super::trace::Trace;
use super::weak_callbacks::{run_callbacks, take_callbacks};

/// Nesting depth past which drops are deferred.
pub(crate) const LIMIT: u32 = 64;

/// Leaves a trashcan frame when a drop unwinds (the normal paths forget
/// it and lower the depth themselves): every frame raised the depth by
/// one, so unwinding lowers it by one. When the unwinding leaves the
/// outermost frame, the objects deferred meanwhile are drained before the
/// panic goes on (see [`drain_unwinding`]). It holds nothing, so that the
/// hot path stores nothing for it.
struct UnwindGuard;

impl Drop for UnwindGuard {
    // Inlined into the landing pads as a call of a function without
    // arguments: a `Drop` out of line takes `&mut self`, and the guard,
    // a zero-sized value, then needs an address, for which each frame of
    // `drop_object` reserved stack space (a `sub` and an `add` of `rsp`
    // on every last drop of a tracked object: issue 9, eleventh round).
    #[inline(always)]
    fn drop(&mut self) {
        leave_unwinding();
    }
}

/// [`UnwindGuard`]'s work: leaves the frame a panic unwinds through, and
/// drains the deferred objects if it was the outermost.
#[cold]
#[inline(never)]
fn leave_unwinding() {
    let st = state();
    st.trashcan_leave();
    if st.trashcan_depth() == 0 && st.deferred().len() != 0 {
        drain_unwinding(st);
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
    if !st.trashcan_enter() {
        st.deferred().push(counts_of(ptr));
        return;
    }
    let g = UnwindGuard;
    let release = Release(counts_of(ptr));
    // SAFETY: the value is initialised and dropped exactly once here;
    // then strong == 0 and the value is dropped, as `release_weak`
    // requires.
    unsafe { ptr::drop_in_place(ptr.as_ptr()) };
    std::mem::forget(release);
    std::mem::forget(g);
    // Nested frames restored their own changes: the depth is one more
    // than on entry again. Lowering it by one (rather than storing the
    // old depth) keeps nothing alive across the value's drop but the
    // pointer.
    st.trashcan_leave();
    // One compare on the hot path: objects are deferred only while a
    // chain deeper than LIMIT is being dropped, and drained by its
    // outermost frame. The frame is done with the state before the
    // memory is released, so that the free is the last call (a tail
    // call: issue 9, fifth round).
    if st.deferred().len() != 0 {
        // SAFETY: strong == 0 and the value is dropped (just above).
        return unsafe { release_then_drain(st, ptr) };
    }
    // SAFETY: strong == 0 and the value is dropped, as `release_weak`
    // requires.
    unsafe { Gc::<T>::release_weak(ptr) }
}

/// The end of [`drop_object`] when objects are deferred: releases the
/// implicit weak reference of the object whose value was just dropped,
/// then drains the queue if that frame was the outermost.
///
/// # Safety
/// As `Gc::release_weak`: `ptr`'s object is tracked, strong == 0 and its
/// value is dropped.
#[cold]
#[inline(never)]
unsafe fn release_then_drain<T: ?Sized + Trace + 'static>(st: &State, ptr: NonNull<T>) {
    // SAFETY: `ptr`'s object is tracked, strong == 0 and its value dropped
    // (this function's `# Safety`), what `release_weak` requires.
    unsafe { Gc::<T>::release_weak(ptr) };
    drain_if_outermost(st);
}

/// [`drop_object`] for an object that may have weak callbacks (the cold
/// path of `finalizers::last_drop`): they run right after the value's
/// drop, also when that drop panics, and, past the depth limit, when the
/// queue drains the deferred object (`drop_deferred` looks for them), so
/// never before the value is gone. Returns the first callback panic.
///
/// # Safety
/// As [`drop_object`].
pub(crate) unsafe fn drop_object_then_callbacks<T: ?Sized + Trace + 'static>(
    st: &State,
    ptr: NonNull<T>,
) -> Option<Panic> {
    let obj = counts_of(ptr);
    if !st.trashcan_enter() {
        // The WEAK_CALLBACKS flag stays set: `drop_deferred` runs them.
        st.deferred().push(obj);
        return None;
    }
    let g = UnwindGuard;
    let release = Release(obj);
    let callbacks = CallbacksAfterDrop(obj);
    // SAFETY: the value is initialised and dropped exactly once here
    // (strong == 0 and no one else drops it: our contract).
    unsafe { ptr::drop_in_place(ptr.as_ptr()) };
    let panic = callbacks.run();
    std::mem::forget(release);
    // SAFETY: strong == 0 and the value is dropped, as `release_weak`
    // requires; no reference into the allocation is alive here.
    unsafe { Gc::<T>::release_weak(ptr) };
    std::mem::forget(g);
    st.trashcan_leave();
    if st.deferred().len() != 0 {
        drain_if_outermost(st);
    }
    panic
}

/// Runs `f` (which may drop values) as one trashcan frame, then drains the
/// queue if this was the outermost frame.
pub(crate) fn nested(st: &State, f: impl FnOnce()) {
    let d = st.trashcan_depth();
    st.set_trashcan_depth(d + 1);
    let g = UnwindGuard;
    f();
    std::mem::forget(g);
    st.set_trashcan_depth(d);
    if d == 0 && st.deferred().len() != 0 {
        drain(st);
    }
}

/// [`drain`] if the frame that just ended was the outermost one.
#[cold]
#[inline(never)]
fn drain_if_outermost(st: &State) {
    if st.trashcan_depth() == 0 {
        drain(st);
    }
}

/// Drops the deferred objects, from the outermost frame (depth 0). If
/// one of their drops panics, the guard drains the rest as the panic
/// leaves.
#[cold]
#[inline(never)]
fn drain(st: &State) {
    while let Some(obj) = st.deferred().pop() {
        st.set_trashcan_depth(1);
        let g = UnwindGuard;
        // SAFETY: deferred objects are live, tracked, strong == 0, value
        // not yet dropped (see `drop_object`), and popped once.
        unsafe { drop_deferred(obj) };
        std::mem::forget(g);
        st.set_trashcan_depth(0);
    }
}

/// Drains the queue while a panic unwinds out of the outermost frame, so
/// that no deferred object waits for an unrelated later drop (or leaks at
/// thread exit). Each drop runs under `catch_unwind`: a second panic
/// cannot propagate while the first is in flight, so it is discarded
/// (the panic hook has already printed its message) and the drain goes
/// on; the first panic then continues to the caller.
#[cold]
#[inline(never)]
pub(crate) fn drain_unwinding(st: &State) {
    while let Some(obj) = st.deferred().pop() {
        st.set_trashcan_depth(1);
        // SAFETY: deferred objects are live, tracked, strong == 0, value
        // not yet dropped (see `drop_object`), and popped once.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { drop_deferred(obj) }));
        st.set_trashcan_depth(0);
        drop(r);
    }
}

/// Drains the drops deferred during a collection's phases (see
/// `State::enter_phases`: a `trace` that broke rule 5 of `Trace` released
/// a last handle), once the collection's reclaim holds the garbage, so
/// that these drops cannot free any of it; left to the outermost frame if
/// a trashcan frame is open. Returns the first panic of their `Drop`s
/// instead of unwinding, so that the collection finishes its bookkeeping
/// first.
#[cold]
pub(crate) fn drain_after_phases(st: &State) -> Option<Panic> {
    if st.trashcan_depth() != 0 || st.deferred().len() == 0 {
        return None;
    }
    // A panic leaves `drain` through its guard, which drains the rest.
    catch_unwind(AssertUnwindSafe(|| drain(st))).err()
}

/// Drops the value of a deferred object and releases its implicit weak
/// reference, even if the value's `Drop` panics.
///
/// # Safety
/// `obj` was popped from the deferred queue: live, tracked, strong == 0,
/// value not yet dropped, and no one else will drop it.
unsafe fn drop_deferred(obj: ObjPtr) {
    // SAFETY: `obj` is live and tracked (this function's `# Safety`), so
    // its header exists and is live.
    let h = unsafe { GcHeader::of(obj) };
    h.set_flags(DROPPED);
    let drop_value = h.vtable().drop_value;
    let _release = Release(obj);
    // Declared after `_release`, so dropped before it: the object's weak
    // callbacks (if `last_drop` deferred it with some) run once its value
    // is gone, and before its memory may be.
    let callbacks = CallbacksAfterDrop(obj);
    // SAFETY: dropped exactly once, here (DROPPED is set first).
    unsafe { drop_value(obj) };
    if let Some(p) = callbacks.run() {
        super::weak_callbacks::resume_unless_unwinding(p, "a weak callback or finalizer");
    }
}

/// Releases an object's implicit weak reference when dropped: after its
/// value's drop, which may unwind (a `Drop` that panics has still ended
/// the value: the remaining fields were dropped while unwinding), so a
/// panicking `Drop` does not leak the allocation. The normal paths of
/// [`drop_object`] forget it and release inline.
struct Release(ObjPtr);

impl Drop for Release {
    // Inlined into the landing pads, so that LLVM keeps the pointer in a
    // register instead of storing the guard on the stack for them: two
    // instructions fewer on every last drop of a tracked object (issue
    // 9, fifth round).
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: a `Release` is only made for a tracked object with
        // strong == 0 whose value is being dropped, and dropped (or
        // forgotten) once, after that drop ended.
        unsafe { release_implicit_weak(self.0) }
    }
}

/// Runs an object's weak callbacks (`gc::finalize`, `Weak::with_callback`)
/// once its value has been dropped, however that drop ends: [`run`]
/// after a normal return (the first callback panic is returned), or this
/// guard's `Drop` while a panic from the value's `Drop` unwinds (callback
/// panics are then discarded, one panic being in flight already). Either
/// way before the object's implicit weak reference is released, so the
/// side table is keyed by a live address.
///
/// [`run`]: CallbacksAfterDrop::run
pub(crate) struct CallbacksAfterDrop(ObjPtr);

impl CallbacksAfterDrop {
    /// Runs the callbacks now (the value's drop returned normally).
    pub(crate) fn run(self) -> Option<Panic> {
        let obj = self.0;
        std::mem::forget(self);
        take_and_run(obj)
    }
}

impl Drop for CallbacksAfterDrop {
    #[cold]
    fn drop(&mut self) {
        // Only reached while unwinding (the normal path calls `run`).
        drop(take_and_run(self.0));
    }
}

/// Takes `obj`'s weak callbacks out of the side table and runs them.
#[cold]
fn take_and_run(obj: ObjPtr) -> Option<Panic> {
    // SAFETY: `CallbacksAfterDrop` is only made for a live tracked object
    // whose implicit weak reference its maker still holds; the reference
    // ends inside `take_callbacks`, before any callback runs.
    let entries = take_callbacks(obj, unsafe { GcHeader::of(obj) });
    run_callbacks(entries)
}
