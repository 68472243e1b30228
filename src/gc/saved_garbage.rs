//! The objects kept by [`DEBUG_SAVEALL`](super::DEBUG_SAVEALL)(super::DEBUG_SAVEALL), as
//! Python's `gc.garbage`: [`garbage`] lists them, [`clear_garbage`]
//! reclaims them.

use std::cell::RefCell;
use std::fmt;

use super::header::{GcHeader, ObjPtr};
use super::reclaim::delete_with_callbacks;
use super::state::with;

thread_local! {
    /// Objects kept by `DEBUG_SAVEALL`; the collector holds one strong
    /// count on each.
    static SAVED: RefCell<Vec<ObjPtr>> = const { RefCell::new(Vec::new()) };
}

/// Initialises the saved garbage, so that its destructor is registered
/// before the collector's teardown and runs after it (see
/// `state::register_owner`).
pub(crate) fn keep_through_teardown() {
    let _ = SAVED.try_with(|_| ());
}

/// One object kept by [`DEBUG_SAVEALL`](super::DEBUG_SAVEALL), as listed by [`garbage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GarbageInfo {
    /// The value's type, as [`std::any::type_name`] spells it.
    pub type_name: &'static str,
    /// Bytes of the object's `Gc` allocation (header and value, a slice's
    /// elements included; not the heap memory the value owns).
    pub size: usize,
    /// Address of the object's allocation (of its reference counts, just
    /// before the value), to tell objects apart.
    pub address: usize,
}

impl fmt::Display for GarbageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} at {:#x}>", self.type_name, self.address)
    }
}

/// The objects kept by [`DEBUG_SAVEALL`](super::DEBUG_SAVEALL) on this thread, oldest first, as
/// Python's `gc.garbage` (which holds the objects; here, a description of
/// each).
///
/// ```
/// use pymem::gc;
/// assert!(gc::garbage().is_empty()); // nothing is saved unless DEBUG_SAVEALL is set
/// ```
pub fn garbage() -> Vec<GarbageInfo> {
    SAVED
        .try_with(|d| {
            d.borrow()
                .iter()
                .map(|&p| {
                    // SAFETY: saved objects are live: the collector holds a
                    // strong count on each.
                    let h = unsafe { GcHeader::of(p) };
                    GarbageInfo {
                        type_name: (h.vtable().type_name)(),
                        // SAFETY: `p` is live (the collector holds a
                        // strong count) and was allocated with its vtable.
                        size: unsafe { (h.vtable().size)(p) },
                        address: p as usize,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reclaims the objects kept by [`DEBUG_SAVEALL`](super::DEBUG_SAVEALL) (drops their values,
/// runs the weak callbacks registered on them, frees their memory) and
/// returns how many there were, as `gc.garbage.clear()` followed by a
/// collection does in Python.
///
/// A panic in a `Drop` is resumed once every saved object is reclaimed.
///
/// ```
/// assert_eq!(pymem::gc::clear_garbage(), 0);
/// ```
pub fn clear_garbage() -> usize {
    let saved = SAVED
        .try_with(|d| std::mem::take(&mut *d.borrow_mut()))
        .unwrap_or_default();
    let n = saved.len();
    if n > 0 {
        let panic = with(|st| delete_with_callbacks(st, &saved));
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }
    n
}

/// Keeps `objs` (found unreachable, marked dead, each with a strong count
/// held by the collector) in the saved garbage.
pub(crate) fn save(objs: &[ObjPtr]) {
    // If the thread's debug state is gone the objects are leaked, as
    // everything still reachable at thread exit is.
    let _ = SAVED.try_with(|d| d.borrow_mut().extend_from_slice(objs));
}
