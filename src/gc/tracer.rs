//! The [`Tracer`]: what `Trace::trace` reports each `Gc` edge to.

use super::generations::PtrVec;
use super::header::{GcHeader, ObjPtr, COLLECTING, ONE, REACHABLE};
use super::trace::set_external;

/// What the collector is doing with the edges it is shown.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// `subtract_refs`: each edge into the collected range decrements the
    /// target's gc_refs.
    Subtract,
    /// `move_unreachable`: each edge into the collected range marks the
    /// target reachable and pushes it on the stack.
    Mark,
    /// Visit nothing (a tracer handed out where no collection runs).
    #[allow(dead_code)]
    Ignore,
}

/// Receives the `Gc` edges of a value during a collection.
///
/// A `Tracer` is created only by the collector; a [`Trace`](crate::Trace)
/// impl passes it on to its fields' `trace`. Hand-written impls need no
/// method of it except, for a custom interior-mutability cell whose
/// contents cannot be read right now, [`Tracer::mark_external`].
///
/// ```
/// use pymem::{Gc, Trace, Tracer};
///
/// struct Pair(Gc<u32>, Option<Gc<u32>>);
/// unsafe impl Trace for Pair {
///     fn trace(&self, tracer: &mut Tracer) {
///         self.0.trace(tracer);
///         self.1.trace(tracer);
///     }
/// }
/// let p = Gc::new(Pair(Gc::new(1), None));
/// assert!(pymem::gc::is_tracked(&p));
/// ```
pub struct Tracer {
    pub(crate) mode: Mode,
    /// The object whose value is being traced.
    pub(crate) current: ObjPtr,
    /// `move_unreachable`'s stack (Mark mode).
    pub(crate) stack: *const PtrVec,
    /// `mark_external` was called: the collection was conservative.
    pub(crate) saw_external: bool,
}

impl Tracer {
    pub(crate) fn new(mode: Mode, stack: *const PtrVec) -> Tracer {
        Tracer {
            mode,
            current: std::ptr::null(),
            stack,
            saw_external: false,
        }
    }

    /// Reports an edge to the tracked object `obj`.
    #[inline(always)]
    pub(crate) fn visit(&mut self, obj: ObjPtr) {
        // SAFETY: `obj` comes from a live `Gc` handle owned by the value
        // being traced, which the collector keeps alive.
        let h = unsafe { GcHeader::of(obj) };
        let w = h.gc.get();
        if w & COLLECTING == 0 {
            return;
        }
        match self.mode {
            Mode::Subtract => {
                if w >= ONE {
                    h.gc.set(w - ONE);
                }
            }
            Mode::Mark => {
                if w & REACHABLE == 0 {
                    h.gc.set(w | REACHABLE);
                    // SAFETY: in Mark mode `stack` points at the state's
                    // stack, which outlives the tracer.
                    unsafe { (*self.stack).push(obj) };
                }
            }
            Mode::Ignore => {}
        }
    }

    /// Declares that the object being traced has contents that cannot be
    /// traced right now (a cell that is mutably borrowed, as
    /// `RefCell`'s impl does): the collector then treats the object as
    /// referenced from outside, keeping it and everything it reaches
    /// alive in this collection (conservative, never wrong).
    ///
    /// ```
    /// use pymem::{gc, Gc, Trace};
    /// use std::cell::RefCell;
    ///
    /// #[derive(Trace)]
    /// struct Node { next: RefCell<Option<Gc<Node>>> }
    ///
    /// let a = Gc::new(Node { next: RefCell::new(None) });
    /// *a.next.borrow_mut() = Some(a.clone()); // a cycle
    /// let raw: *const Node = Gc::as_ptr(&a);
    /// drop(a); // now garbage, but...
    /// // SAFETY: the cycle keeps the node alive until it is collected.
    /// let held = unsafe { (*raw).next.borrow_mut() };
    /// assert_eq!(gc::collect(), 0); // ...its RefCell is in use: kept
    /// drop(held);
    /// assert_eq!(gc::collect(), 1);
    /// ```
    pub fn mark_external(&mut self) {
        if self.mode == Mode::Subtract {
            self.saw_external = true;
            set_external(self.current);
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("mode", &self.mode).finish()
    }
}
