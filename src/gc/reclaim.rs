//! Reclaiming the garbage a collection found (phases 4 and 5 of
//! `collector`): [`handle_weakrefs`], finalizers and the resurrection
//! check (`finalizers`), `DEBUG_COLLECTABLE` / `DEBUG_SAVEALL`, then
//! [`delete_garbage`] and the weak callbacks.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::collector::Panic;
use super::debug;
use super::finalizers::{finalize_garbage, handle_resurrected_objects};
use super::header::{release_implicit_weak, GcHeader, ObjPtr, CLEAN, DEAD, DROPPED, UNTRACKED};
use super::saved_garbage;
use super::state::{strong, State};
use super::trashcan;
use super::weak_callbacks::{run_callbacks, take_callbacks};

/// Reclaims the garbage a collection found (out of the list): marks it
/// dead and holds it ([`handle_weakrefs`]), runs the pending finalizers,
/// puts back what they resurrected, then saves (`DEBUG_SAVEALL`) or
/// deletes the rest. Returns the number of objects reclaimed or saved and
/// the first panic.
pub(crate) fn reclaim(st: &State, garbage: &mut Vec<ObjPtr>) -> (usize, Option<Panic>) {
    handle_weakrefs(garbage);
    let mut first: Option<Panic> = None;
    let (ran, callbacks) = finalize_garbage(garbage, &mut first);
    if ran {
        *garbage = handle_resurrected_objects(st, std::mem::take(garbage), &mut first);
    }
    let flags = debug::flags();
    if flags & debug::DEBUG_COLLECTABLE != 0 {
        debug::print_collectable(garbage);
    }
    let n = garbage.len();
    if flags & debug::DEBUG_SAVEALL != 0 {
        saved_garbage::save(garbage);
    } else if let Some(p) = if callbacks || ran {
        delete_with_callbacks(st, garbage)
    } else {
        delete_garbage(st, garbage)
    } {
        first.get_or_insert(p);
    }
    (n, first)
}

/// CPython's `handle_weakrefs`: every member of the garbage stops
/// upgrading (`DEAD`) before any value is dropped, is flagged
/// `UNTRACKED` (out of the list) and dirty (a resurrected member is
/// examined again), and is held by a strong count the collector takes, so
/// no `Drop` can free it under the collector's feet.
fn handle_weakrefs(garbage: &[ObjPtr]) {
    for &p in garbage {
        // SAFETY: the garbage was gathered from non-null list entries by
        // the rebuild, which runs no user code, and none has run since:
        // each is a live tracked object (strong > 0: what it was found
        // with, whoever holds it).
        let h = unsafe { GcHeader::of(p) };
        h.set_flags(UNTRACKED | DEAD);
        h.clear_flags(CLEAN);
        let s = strong(p);
        s.set(s.get() + 1);
    }
}

/// [`delete_garbage`], then the weak callbacks registered on the garbage
/// (taken first, while the addresses cannot be reused); returns the
/// first panic.
pub(crate) fn delete_with_callbacks(st: &State, garbage: &[ObjPtr]) -> Option<Panic> {
    let mut callbacks = Vec::new();
    for &p in garbage {
        // SAFETY: the collector holds a strong count on each object (from
        // `handle_weakrefs`, or `DEBUG_SAVEALL`'s), released only by
        // `delete_garbage` below: the header is live.
        let h = unsafe { GcHeader::of(p) };
        callbacks.extend(take_callbacks(p, h));
    }
    let panic = delete_garbage(st, garbage);
    panic.or(run_callbacks(callbacks))
}

/// CPython's `delete_garbage`: drops the values of the garbage (dead
/// objects each held by the collector), one at a time, each marked
/// `DROPPED` first; then releases the collector's counts, freeing what no
/// handle holds. A panic does not stop the others; the first is returned.
pub(crate) fn delete_garbage(st: &State, garbage: &[ObjPtr]) -> Option<Panic> {
    let mut first: Option<Panic> = None;
    let mut i = 0;
    // One `catch_unwind` per run of drops that do not panic: after a
    // panic, carry on with the next object.
    while i < garbage.len() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            trashcan::nested(st, || {
                while i < garbage.len() {
                    let p = garbage[i];
                    i += 1;
                    // SAFETY: the collector holds a strong count on every
                    // garbage object until the loop below, so its header
                    // is live.
                    let h = unsafe { GcHeader::of(p) };
                    if !h.has(DROPPED) {
                        h.set_flags(DROPPED);
                        // SAFETY: the value is live and dropped exactly
                        // once, here: every path that drops or moves out a
                        // value sets DROPPED first (this loop, `try_unwrap`,
                        // which also refuses DEAD objects, and the refcount
                        // paths, which need strong == 0 while the collector
                        // holds a count), and `get_mut` lends no DEAD one.
                        unsafe { (h.vtable().drop_value)(p) }
                    }
                }
            })
        }));
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    for &p in garbage {
        let s = strong(p);
        let n = s.get() - 1;
        s.set(n);
        if n == 0 {
            // SAFETY: value dropped above; no strong handle remains.
            unsafe { release_implicit_weak(p) };
        }
    }
    first
}
