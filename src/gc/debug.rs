//! Debug flags, as Python's `gc.set_debug`: what the collector prints
//! ([`DEBUG_STATS`], [`DEBUG_COLLECTABLE`]) or keeps ([`DEBUG_SAVEALL`],
//! see `saved_garbage`).
//!
//! Per thread, like the collector's settings. The collector consults the
//! flags once at the start and once at the end of a collection, and once
//! when it has garbage to reclaim; `Gc::new`, `clone` and `drop` never
//! look here.

use std::cell::Cell;

use super::header::{GcHeader, ObjPtr};

/// Print statistics on stderr during each collection, as Python's
/// `gc.DEBUG_STATS`:
///
/// ```text
/// gc: collecting generation 2...
/// gc: objects in each generation: 12 0 3410
/// gc: objects in permanent generation: 0
/// gc: done, 1000 unreachable, 0 uncollectable, 0.0004s elapsed
/// ```
///
/// ```
/// use pymem::gc;
/// gc::set_debug(gc::DEBUG_STATS);
/// gc::collect(); // prints the four lines above on stderr
/// gc::set_debug(0);
/// ```
pub const DEBUG_STATS: u32 = 1;

/// Print the type names of the unreachable objects a collection reclaims,
/// on stderr, one line per type with its count, as Python's
/// `gc.DEBUG_COLLECTABLE`:
///
/// ```text
/// gc: collectable 1000 x leak_hunt::Session
/// ```
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// drop(a);
/// gc::set_debug(gc::DEBUG_COLLECTABLE);
/// assert_eq!(gc::collect(), 1); // "gc: collectable 1 x rust_out::Node"
/// gc::set_debug(0);
/// ```
pub const DEBUG_COLLECTABLE: u32 = 2;

/// Python's `gc.DEBUG_UNCOLLECTABLE`. Every unreachable object is
/// collectable here (every `Drop` and finalizer can run, as with PEP 442),
/// so this flag never prints anything; it exists so that [`DEBUG_LEAK`]
/// has Python's value.
///
/// ```
/// assert_eq!(pymem::gc::DEBUG_UNCOLLECTABLE, 4);
/// ```
pub const DEBUG_UNCOLLECTABLE: u32 = 4;

/// Keep the unreachable objects a collection finds instead of dropping
/// them, as Python's `gc.DEBUG_SAVEALL`: [`garbage`](super::garbage) tells what they are
/// and [`clear_garbage`](super::clear_garbage) reclaims them.
///
/// Saved objects are dead to [`Weak::upgrade`](crate::Weak::upgrade) and no
/// longer tracked, but their values stay intact (their finalizers have
/// run, their `Drop` has not) until [`clear_garbage`](super::clear_garbage).
/// Objects still saved when their thread exits, and those its final
/// collection finds while the flag is set, are leaked (never dropped), as
/// Python leaves `gc.garbage` alone at interpreter exit: clear the flag
/// and call [`clear_garbage`](super::clear_garbage) before a thread ends
/// to have them dropped.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// gc::set_debug(gc::DEBUG_SAVEALL);
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// drop(a);
/// assert_eq!(gc::collect(), 1);
/// let saved = gc::garbage();
/// assert_eq!(saved.len(), 1);
/// assert!(saved[0].type_name.ends_with("Node"));
/// gc::set_debug(0);
/// assert_eq!(gc::clear_garbage(), 1); // now dropped and freed
/// assert!(gc::garbage().is_empty());
/// ```
pub const DEBUG_SAVEALL: u32 = 32;

/// `DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL`, as Python's
/// `gc.DEBUG_LEAK`: name what is found and keep it for inspection.
///
/// ```
/// use pymem::gc;
/// assert_eq!(gc::DEBUG_LEAK, gc::DEBUG_COLLECTABLE | gc::DEBUG_UNCOLLECTABLE | gc::DEBUG_SAVEALL);
/// ```
pub const DEBUG_LEAK: u32 = DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL;

thread_local! {
    static FLAGS: Cell<u32> = const { Cell::new(0) };
}
/// Sets this thread's collector debug flags, as Python's `gc.set_debug`:
/// an OR of [`DEBUG_STATS`], [`DEBUG_COLLECTABLE`], [`DEBUG_UNCOLLECTABLE`],
/// [`DEBUG_SAVEALL`] ([`DEBUG_LEAK`] is the last three); 0 turns debugging
/// off.
///
/// ```
/// use pymem::gc;
/// gc::set_debug(gc::DEBUG_STATS | gc::DEBUG_COLLECTABLE);
/// assert_eq!(gc::get_debug(), gc::DEBUG_STATS | gc::DEBUG_COLLECTABLE);
/// gc::set_debug(0);
/// ```
pub fn set_debug(flags: u32) {
    FLAGS.with(|f| f.set(flags));
}

/// This thread's collector debug flags (0 by default), as Python's
/// `gc.get_debug`.
///
/// ```
/// assert_eq!(pymem::gc::get_debug(), 0);
/// ```
pub fn get_debug() -> u32 {
    flags()
}

/// Initialises the debug state, so that its destructor is registered
/// before the collector's teardown and runs after it (see
pub(crate) fn flags() -> u32 {
    FLAGS.with(Cell::get)
}

/// `DEBUG_COLLECTABLE`: one line per type, most frequent first.
pub(crate) fn print_collectable(objs: &[ObjPtr]) {
    let mut names: Vec<(&'static str, usize)> = Vec::new();
    for &p in objs {
        // SAFETY: garbage objects are live (the collector holds a count).
        let name = (unsafe { GcHeader::of(p) }.vtable().type_name)();
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += 1,
            None => names.push((name, 1)),
        }
    }
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (name, n) in names {
        eprintln!("gc: collectable {n} x {name}");
    }
}
