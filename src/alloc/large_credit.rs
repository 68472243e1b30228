//! Counting the bytes of large blocks without a shared atomic per call.
//!
//! The registry counts the bytes of large blocks in use, and every thread
//! updates that one counter: one read-modify-write of a shared cache line
//! per large `alloc`, `dealloc` or `realloc`, which costs as much as
//! glibc's whole in-place `realloc`, and more when two threads take turns
//! with the line. So each thread keeps a *credit*: bytes already added to
//! the registry's count that no block of the thread's uses yet. A free or a
//! shrink adds its bytes to the credit (up to [`MAX_CREDIT`], the rest goes
//! back at once); an allocation or a growth that fits the credit only
//! spends it, a thread-local write. One that does not adds what is missing
//! in one read-modify-write, plus, after a small growth step
//! (`size_class::is_small_step`), a fresh credit for the steps after it.
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

/// Counts a large block going from `old` to `new` bytes: `realloc`, an
/// allocation (`old` 0) or a free (`new` 0). `registry` must be
/// [`REGISTRY`] (the credits are given back to it).
pub(crate) fn note_resize(registry: &Registry, old: usize, new: usize) {
    debug_assert!(core::ptr::eq(registry, &REGISTRY));
    let counted = CREDIT.try_with(|credit| {
        let held = credit.0.get();
        if new >= old {
            let step = new - old;
            if step <= held {
                credit.0.set(held - step);
                return;
            }
            // Only a small step (not a doubling, which amortises its own
            // counting) is given a credit for the steps after it.
            let grant = if super::size_class::is_small_step(old, new) {
                (new / 4).min(MAX_CREDIT)
            } else {
                0
            };
            take(registry, step - held + grant);
            credit.0.set(grant);
        } else {
            let kept = held + (old - new);
            let excess = kept.saturating_sub(MAX_CREDIT);
            give_back(registry, excess);
            credit.0.set(kept - excess);
        }
    });
    if counted.is_err() {
        // The thread's locals are being torn down: count exactly.
        if new >= old {
            take(registry, new - old);
        } else {
            give_back(registry, old - new);
        }
    }
}

/// Gives the calling thread's credit back to the registry.
pub(crate) fn give_back_current() {
    let held = CREDIT.try_with(|credit| credit.0.replace(0)).unwrap_or(0);
    give_back(&REGISTRY, held);
}
