//! Counting `realloc`'s small growth steps of large blocks without a shared
//! atomic per step.
//!
//! The registry counts the bytes of large blocks in use, and every thread
//! updates that one counter. A buffer that grows a few bytes at a time
//! through `realloc` would pay a read-modify-write of the shared line per
//! step, which costs as much as glibc's whole in-place `realloc`. So each
//! thread keeps a *credit*: bytes already added to the registry's count
//! that no block of the thread's uses yet. A small growth step
//! (`size_class::is_small_step`) that fits the credit only spends it, a
//! thread-local write; one that does not adds what is missing plus a fresh
//! credit (a quarter of the new size, at most [`MAX_CREDIT`]) in one
//! read-modify-write. Every other change (an allocation, a free, a
//! doubling, a shrink) is counted exactly, at once, so a program that never
//! grows a large block by small steps sees exact figures.
//!
//! Invariant: the registry's `large_bytes` is the requested bytes of the
//! large blocks in use plus the credits of all threads, each at most
//! [`MAX_CREDIT`]; it never falls below the true figure, whoever frees which
//! block, because a credit is only ever added before it is spent. A thread
//! gives its credit back when it exits (the thread-local's destructor) and
//! when it calls `release_free_memory()`.

use core::cell::Cell;

use super::registry::Registry;
use super::REGISTRY;
use crate::sync::Ordering;

/// Most bytes of credit a thread holds.
const MAX_CREDIT: usize = 4096;

/// A thread's credit; given back to [`REGISTRY`] when the thread exits.
struct Credit(Cell<usize>);

impl Drop for Credit {
    fn drop(&mut self) {
        give_back(&REGISTRY, self.0.replace(0));
    }
}

thread_local! {
    static CREDIT: Credit = const { Credit(Cell::new(0)) };
}

fn take(registry: &Registry, bytes: usize) {
    let total = registry.large_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
    registry.note_footprint(total + registry.arena_bytes.load(Ordering::Relaxed));
}

fn give_back(registry: &Registry, bytes: usize) {
    if bytes > 0 {
        registry.large_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Counts a large block resized from `old` to `new` bytes by `realloc`.
/// `registry` must be [`REGISTRY`] (the credits are given back to it).
pub(crate) fn note_resize(registry: &Registry, old: usize, new: usize) {
    debug_assert!(core::ptr::eq(registry, &REGISTRY));
    if !super::size_class::is_small_step(old, new) {
        count_exactly(registry, old, new);
        return;
    }
    let step = new - old;
    let counted = CREDIT.try_with(|credit| {
        let held = credit.0.get();
        if step <= held {
            credit.0.set(held - step);
        } else {
            let grant = (new / 4).min(MAX_CREDIT);
            take(registry, step - held + grant);
            credit.0.set(grant);
        }
    });
    if counted.is_err() {
        // The thread's locals are being torn down.
        count_exactly(registry, old, new);
    }
}

fn count_exactly(registry: &Registry, old: usize, new: usize) {
    if new >= old {
        take(registry, new - old);
    } else {
        give_back(registry, old - new);
    }
}

/// Gives the calling thread's credit back to the registry.
pub(crate) fn give_back_current() {
    let held = CREDIT.try_with(|credit| credit.0.replace(0)).unwrap_or(0);
    give_back(&REGISTRY, held);
}
