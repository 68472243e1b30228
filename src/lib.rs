//! # pymem
//!
//! CPython's memory model for Rust, made thread-safe:
//!
//! * [`PyMalloc`], a drop-in `#[global_allocator]`. Requests of at most
//!   [`SMALL_REQUEST_THRESHOLD`] bytes are served from size-class pools
//!   carved out of arenas, as CPython's `pymalloc` does, each thread
//!   allocating from pools it owns with no lock on the fast path. Larger
//!   requests go to the system allocator, and those of 1.75 MiB and more
//!   to mappings of PyMalloc's own, backed by transparent huge pages.
//! * [`Gc<T>`] and [`Weak<T>`], reference-counted pointers like `Rc` and
//!   `rc::Weak`, plus CPython's generational cycle collector ([`gc`]), so
//!   reference cycles are reclaimed instead of leaked.
//! * Introspection: [`alloc_stats()`] in the spirit of
//!   `sys._debugmallocstats`, and the [`gc`] module in the spirit of
//!   Python's.
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
//!
//! ## Garbage-collected pointers
//!
//! [`Gc<T>`] is `Rc<T>` plus CPython's cycle collector: acyclic garbage
//! is freed the moment its last handle drops, and reference cycles are
//! found by a generational collector, one per thread (`Gc` is `!Send`),
//! running automatically as tracked allocations accumulate, or on
//! [`gc::collect()`]. A type goes into a `Gc` by implementing [`Trace`],
//! almost always with `#[derive(Trace)]`; types that can hold no `Gc`
//! (`Gc<String>`, a struct of numbers) are *untracked*, decided at compile
//! time, and cost exactly what `Rc` costs.
//!
//! ```
//! use pymem::{gc, Gc, Trace, Weak};
//! use std::cell::RefCell;
//!
//! #[derive(Trace)]
//! struct Node {
//!     name: String,
//!     next: RefCell<Option<Gc<Node>>>,
//!     parent: RefCell<Weak<Node>>, // a Weak is not an edge
//! }
//!
//! let a = Gc::new(Node { name: "a".into(), next: RefCell::new(None), parent: RefCell::default() });
//! *a.next.borrow_mut() = Some(a.clone()); // a cycle: Rc would leak it
//! let w = Gc::downgrade(&a);
//! drop(a);
//! assert!(w.upgrade().is_some());
//! assert_eq!(gc::collect(), 1);           // found unreachable, dropped, freed
//! assert!(w.upgrade().is_none());
//! assert!(!gc::is_tracked(&Gc::new(String::from("atomic"))));
//! ```
//!
//! The [`gc`] module mirrors Python's: `collect`, `get_count`,
//! `get_threshold`/`set_threshold`, `freeze`, `get_stats`, ...
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The allocator needs 64-bit Linux (`mmap` flags, `membarrier`, the coarse
// clock, 48-bit address maps); `Gc` is portable and builds everywhere
// without it.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod alloc;
#[cfg(unix)]
mod exit_key;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sync;

pub mod gc;

/// Marks the path that calls it as the unlikely one, as
/// `core::hint::cold_path` does from Rust 1.95 (newer than this crate's
/// minimum): a call of a `#[cold]` function weighs its branch down, so
/// LLVM lays that path out of line, and inlined it leaves no code. Used
/// where the usual path must run straight through (C's `malloc` popping a
/// freed block, the tracer's edge to a tracked object).
#[cold]
#[inline(always)]
pub(crate) fn cold_path() {}

pub use gc::{Gc, Trace, Tracer, Weak};
/// `#[derive(Trace)]`: implements [`Trace`] for structs (named, tuple,
/// unit) and enums, generic or not, visiting every field;
/// `#[trace(skip)]` on a field that holds no `Gc` leaves it out (it then
/// needs no `Trace` impl). `may_contain_gc()` is the OR of the fields'
/// (see [`Trace`'s tracking rules](Trace#tracking)); recursive and
/// mutually recursive types derive without a cycle.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Plain { id: u32, name: String }          // untracked
///
/// #[derive(Trace)]
/// enum Tree<T: Trace + 'static> { // Gc<X> needs X: Trace + 'static
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

/// What `#[derive(Trace)]` expands to refers to these; not part of the
/// API (no semver guarantee).
#[doc(hidden)]
pub mod __private {
    pub use crate::gc::header::HeaderSpec;
    pub use crate::gc::trace::{Deeper, DefaultDepth, Depth, Exhausted, GcLayout, SelfReference};
}

/// The allocator's internals, driven step by step by the loom model checks
/// in `loom-tests/` (only with `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub use alloc::model as __model;
#[cfg(all(not(loom), target_os = "linux", target_pointer_width = "64"))]
pub use alloc::{
    alloc_stats, debug_allocator_enabled, heap_map, purge_in_background, release_free_memory,
    ArenaMap, HeapMap, HeapState, PoolMap, CLEAN_BYTE, DEAD_BYTE, FORBIDDEN_BYTE,
};
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub use alloc::{AllocStats, ClassStats, PyMalloc, SMALL_REQUEST_THRESHOLD};

#[cfg(all(
    feature = "override",
    not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))
))]
compile_error!("the `override` feature needs 64-bit Linux with glibc (target_env = \"gnu\")");

/// The C allocation API behind the `override` feature and the
/// `pymem-malloc` preload (`pymem::__export_c_allocator!()` exports it).
#[cfg(all(
    not(loom),
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
))]
#[doc(hidden)]
pub mod __cabi {
    pub use crate::alloc::cabi::{
        aligned_alloc, calloc, free, free_aligned_sized, free_sized, mallinfo, mallinfo2, malloc,
        malloc_stats, malloc_trim, malloc_usable_size, memalign, posix_memalign, prepare_glibc,
        pvalloc, realloc, reallocarray, valloc,
    };
    /// glibc's `struct mallinfo2`.
    pub type Mallinfo2 = libc::mallinfo2;
    /// glibc's `struct mallinfo`.
    pub type Mallinfo = libc::mallinfo;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
