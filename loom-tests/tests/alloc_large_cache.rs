//! Model check of the per-heap cache of large blocks (`large_cache.rs`):
//! its owner takes and puts blocks under the cache's try-lock while a
//! reclaimer (`release_free_memory()` on another thread) empties it. Run
//! with `scripts/loom.sh`.
//!
//! Checked against: the lock's Acquire (in `LargeCache::try_lock`) made
//! Relaxed, which loom reports as a causality violation on a class list's
//! cell (the reclaimer reads a head the owner wrote without a
//! happens-before edge between them).
#![cfg(loom)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;

use loom::thread;
use pymem::__model::{large_class_size, HeapRef, Registry};

/// The cache's 1,152-byte class.
const CLASS: usize = 8;

fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(4).min(3));
    builder.check(f);
}

fn block_layout() -> Layout {
    Layout::from_size_align(large_class_size(CLASS), 16).unwrap()
}

/// A block of the system allocator, tagged in its second word (the first
/// is the cache's link; glibc's `free` overwrites the second with its
/// thread cache's key, so a block freed while handed out shows).
fn new_block(tag: u64) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { System.alloc(block_layout()) };
    assert!(!p.is_null());
    // SAFETY: a fresh block of 1,152 bytes.
    unsafe { p.cast::<u64>().add(1).write(tag) };
    p
}

fn check_and_free(p: *mut u8, tags: &[u64]) {
    // SAFETY: a live block the calling thread holds.
    let tag = unsafe { p.cast::<u64>().add(1).read() };
    assert!(tags.contains(&tag), "a block handed out was corrupted: {tag:#x}");
    // SAFETY: a block of `System` with this layout, freed once.
    unsafe { System.dealloc(p, block_layout()) };
}

/// The owner caches two blocks, one before and one while a reclaimer runs,
/// and takes one back. Every block ends up in exactly one place: in the
/// owner's hands (intact), still cached, or given back by the reclaimer;
/// and the cached bytes the statistics report match what is left.
#[test]
fn a_release_empties_a_cache_while_its_owner_uses_it() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner: HeapRef = registry.claim();
        let tags = [0xA1, 0xB2];
        let first = new_block(tags[0]);
        // SAFETY: the main thread owns `owner`; `first` is a block as
        // `large_put` asks.
        assert!(unsafe { owner.large_put(CLASS, first) });
        let guest = {
            let registry = registry.clone();
            // SAFETY: the guest thread has no heap.
            thread::spawn(move || unsafe { registry.release(None) })
        };
        thread::yield_now();
        let second = new_block(tags[1]);
        let mut held = Vec::new();
        // SAFETY: as above.
        if !unsafe { owner.large_put(CLASS, second) } {
            held.push(second);
        }
        // SAFETY: as above.
        let taken = unsafe { owner.large_take(CLASS) };
        if !taken.is_null() {
            held.push(taken);
        }
        guest.join().unwrap();
        let cached = registry.stats().large_bytes_cached;
        let mut left = 0;
        loop {
            // SAFETY: as above; no other thread runs now.
            let p = unsafe { owner.large_take(CLASS) };
            if p.is_null() {
                break;
            }
            held.push(p);
            left += 1;
        }
        assert_eq!(cached, left * large_class_size(CLASS));
        assert!(held.len() <= 2);
        assert!(held.len() < 2 || held[0] != held[1], "a block handed out twice");
        for p in held {
            check_and_free(p, &tags);
        }
        // SAFETY: no model thread runs any more.
        unsafe { registry.release_all() };
    });
}
