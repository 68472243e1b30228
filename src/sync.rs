//! The one door through which the allocator reaches atomics.
//!
//! Under `--cfg loom` these are loom's instrumented types, so the model
//! checks in `loom-tests/` explore the interleavings of the real code
//! rather than of a copy of it (the approach of crossbeam and tokio).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
