//! # pymem
//!
//! CPython's memory model for Rust, made thread-safe:
//!
//! * [`PyMalloc`], a drop-in `#[global_allocator]`. Requests of at most
//!   [`SMALL_REQUEST_THRESHOLD`] bytes are served from size-class pools
//!   carved out of arenas, as CPython's `pymalloc` does, each thread
//!   allocating from pools it owns with no lock on the fast path. Larger
//!   requests go to the system allocator.
//! * [`Gc<T>`] and [`Weak<T>`], reference-counted pointers like `Rc` and
//!   `rc::Weak`, plus CPython's generational cycle collector ([`gc`]), so
//!   reference cycles are reclaimed instead of leaked.
//! * Introspection: [`alloc_stats()`] in the spirit of
//!   `sys._debugmallocstats`, and the [`gc`] module in the spirit of
//!   Python's.
//!
//! Cycles through [`Gc`] are reclaimed:
//!
//! ```
//! use pymem::{gc, Gc, Trace};
//! use std::cell::RefCell;
//!
//! #[derive(Trace)]
//! struct Node { next: RefCell<Option<Gc<Node>>> }
//!
//! let a = Gc::new(Node { next: RefCell::new(None) });
//! *a.next.borrow_mut() = Some(a.clone()); // a cycle: Rc would leak it
//! drop(a);
//! assert_eq!(gc::collect(), 1);
//! ```
//!
//! ## Quick start
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
//! # fn main() {
//! let v: Vec<u32> = (0..100).collect();   // served from a 512-byte pool block
//! assert_eq!(v.iter().sum::<u32>(), 4950);
//! println!("{}", pymem::alloc_stats());
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod alloc;
mod sync;

pub mod gc;

pub use gc::{Gc, Trace, Tracer, Weak};
/// `#[derive(Trace)]`: implements [`Trace`] for structs (named, tuple,
/// unit) and enums, generic or not, visiting every field;
/// `#[trace(skip)]` on a field that holds no `Gc` leaves it out (it then
/// needs no `Trace` impl). `MAY_CONTAIN_GC` is the OR of the fields'.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Plain { id: u32, name: String }          // untracked
///
/// #[derive(Trace)]
/// enum Tree<T: 'static> {
///     Leaf(T),
///     Node { kids: RefCell<Vec<Gc<Tree<T>>>>, #[trace(skip)] tag: std::fs::Permissions },
/// }
///
/// assert!(!gc::is_tracked(&Gc::new(Plain { id: 1, name: "x".into() })));
/// assert!(gc::is_tracked(&Gc::new(Tree::Leaf(1u8))));
/// ```
pub use pymem_derive::Trace;

// Lets the derive's `::pymem::` paths resolve inside this crate too.
extern crate self as pymem;

pub use alloc::{
    alloc_stats, release_free_memory, AllocStats, ClassStats, PyMalloc, SMALL_REQUEST_THRESHOLD,
};
