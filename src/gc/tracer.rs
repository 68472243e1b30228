//! The [`Tracer`]: what `Trace::trace` reports each `Gc` edge to.

use std::cell::Cell;

use super::generations::strong;
use super::header::{GcHeader, ObjPtr, SHIFT, UNTRACKED};

/// gc_refs of one object of the collected range, in a side array indexed
/// by list position (the header keeps its index, as the generation list
/// needs it): the count in the low bits, then three flags.
pub(crate) type Refs = u32;
/// The count (copied from the strong count, saturated).
pub(crate) const COUNT: Refs = (1 << 29) - 1;
/// Initialised from the strong count (lazily: `update_refs` is fused into
/// `subtract_refs`).
pub(crate) const INIT: Refs = 1 << 29;
/// Referenced from outside for sure: a saturated count, or a mutably
/// borrowed `RefCell` met while tracing it.
pub(crate) const EXT: Refs = 1 << 30;
/// Found reachable by `move_unreachable`.
pub(crate) const REACHED: Refs = 1 << 31;

/// `update_refs` for one object: its gc_refs start as its strong count.
#[inline(always)]
pub(crate) fn init_refs(obj: ObjPtr) -> Refs {
    let s = strong(obj).get();
    if s >= COUNT as usize {
        INIT | EXT | COUNT
    } else {
        INIT | s as Refs
    }
}

/// What the collector is doing with the edges it is shown.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// `subtract_refs`: each edge into the collected range decrements the
    /// target's gc_refs.
    Subtract,
    /// `move_unreachable`: each edge into the collected range marks the
    /// target reachable and pushes it on the stack.
    Mark,
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
    /// First list index of the collected range, and its length.
    pub(crate) start: usize,
    pub(crate) n: usize,
    /// The range's gc_refs, `n` of them.
    pub(crate) refs: *const Cell<Refs>,
    /// Range position of the object whose value is being traced.
    pub(crate) current: usize,
    /// `move_unreachable`'s explicit stack of range positions.
    pub(crate) stack: Vec<usize>,
    /// `mark_external` was called: the collection was conservative.
    pub(crate) saw_external: bool,
}

impl Tracer {
    pub(crate) fn new(start: usize, n: usize, refs: *const Cell<Refs>) -> Tracer {
        Tracer {
            mode: Mode::Subtract,
            start,
            n,
            refs,
            current: usize::MAX,
            stack: Vec::new(),
            saw_external: false,
        }
    }

    /// Reports an edge to the tracked object `obj`.
    #[inline(always)]
    pub(crate) fn visit(&mut self, obj: ObjPtr) {
        // SAFETY: `obj` comes from a live `Gc` handle owned by the value
        // being traced, which is live for the duration of `trace`.
        let w = unsafe { GcHeader::of(obj) }.gc.get();
        if w & UNTRACKED != 0 {
            return;
        }
        // The index is valid for every listed object during the phases (no
        // compaction happens before the rebuild): in range iff the
        // position is below `n`.
        let pos = (w >> SHIFT).wrapping_sub(self.start);
        if pos >= self.n {
            return;
        }
        // SAFETY: pos < n, the length of the refs array, which outlives
        // the tracer.
        let r = unsafe { &*self.refs.add(pos) };
        let mut v = r.get();
        match self.mode {
            Mode::Subtract => {
                if v & INIT == 0 {
                    v = init_refs(obj);
                }
                if v & COUNT != 0 {
                    v -= 1;
                }
                r.set(v);
            }
            Mode::Mark => {
                if v & REACHED == 0 {
                    r.set(v | REACHED);
                    self.stack.push(pos);
                }
            }
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
        if self.mode == Mode::Subtract && self.current < self.n {
            self.saw_external = true;
            // SAFETY: current < n, the length of the refs array.
            let r = unsafe { &*self.refs.add(self.current) };
            r.set(r.get() | EXT);
        }
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("mode", &self.mode).finish()
    }
}
