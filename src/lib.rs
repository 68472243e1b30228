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

/// The allocator's internals, driven step by step by the loom model checks
/// in `loom-tests/` (only with `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub use alloc::model as __model;
#[cfg(not(loom))]
pub use alloc::{
    alloc_stats, debug_allocator_enabled, heap_map, release_free_memory, ArenaMap, HeapMap,
    PoolMap, CLEAN_BYTE, DEAD_BYTE, FORBIDDEN_BYTE,
};
pub use alloc::{AllocStats, ClassStats, PyMalloc, SMALL_REQUEST_THRESHOLD};
