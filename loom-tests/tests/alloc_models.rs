//! Model checks of PyMalloc's concurrent core with loom: the real heap,
//! pool and registry code (`src/alloc/`), whose atomics become loom's under
//! `--cfg loom`, explored over every interleaving up to the preemption
//! bound. Run with `scripts/loom.sh`.
//!
//! Each model yields once after spawning its threads: loom's DPOR only
//! weighs threads that have reached their first operation, so without the
//! yield the schedules in which a new thread runs first would be missed.
//! Each model was checked to fail when the ordering it guards is broken on
//! purpose (a non-atomic `take` of the remote list; reading a pending link
//! after emptying the pool's list).
#![cfg(loom)]

use std::collections::HashSet;
use std::sync::Arc;

use loom::thread;
use pymem::__model::{class_for, free_without_heap, pool_used, HeapRef, Registry};

/// The 48-byte class.
fn class() -> usize {
    class_for(48, 8).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Block(*mut u8);
// SAFETY: blocks are plain memory handed between model threads.
unsafe impl Send for Block {}

/// Explores `f` with loom. `LOOM_MAX_PREEMPTIONS` (default 4, set by
/// `scripts/loom.sh`) bounds the search.
fn model(f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    // Allocating a heap touches ~150 atomics, each a branch for loom.
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

fn alloc(heap: HeapRef, tag: u64) -> Block {
    alloc_in(heap, class(), tag)
}

fn alloc_in(heap: HeapRef, class: usize, tag: u64) -> Block {
    // SAFETY: the calling model thread has claimed `heap`.
    let ptr = unsafe { heap.alloc(class) };
    assert!(!ptr.is_null());
    // SAFETY: a fresh 48-byte block.
    unsafe { ptr.cast::<u64>().add(2).write(tag) };
    Block(ptr)
}

fn free(heap: HeapRef, block: Block, tag: u64) {
    // SAFETY: the block is live; its tag sits past the free-list link.
    assert_eq!(
        unsafe { block.0.cast::<u64>().add(2).read() },
        tag,
        "block corrupted"
    );
    // SAFETY: the calling model thread has claimed `heap`; the block is live.
    unsafe { heap.free(block.0) };
}

/// Frees everything the model mapped; every thread has been joined.
fn finish(registry: &Registry) {
    // SAFETY: no model thread runs any more.
    unsafe { registry.release_all() };
}

/// The owner allocates and collects while another thread frees two of its
/// blocks remotely: no block is handed out twice, none is lost, and the
/// counts come out exact.
#[test]
fn remote_frees_race_with_owner() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim_owned();
        let (a, b) = (alloc(owner, 1), alloc(owner, 2));
        let remote = {
            let registry = registry.clone();
            thread::spawn(move || {
                let mine = registry.claim_owned();
                free(mine, a, 1);
                free(mine, b, 2);
                // SAFETY: this thread claimed `mine` and gives it up.
                unsafe { mine.park() };
            })
        };
        thread::yield_now();
        let c = alloc(owner, 3);
        // SAFETY: the owner thread collects its own heap.
        unsafe { owner.collect() };
        let d = alloc(owner, 4);
        assert_ne!(c, d);
        remote.join().unwrap();
        // SAFETY: as above.
        unsafe { owner.collect() };
        // SAFETY: the owner reads its own pool.
        assert_eq!(unsafe { pool_used(c.0) }, 2, "exactly c and d are in use");
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 2);
        free(owner, c, 3);
        free(owner, d, 4);
        assert_eq!(registry.stats().small_blocks_in_use, 0);
        finish(&registry);
    });
}

/// Three threads free remotely into one pool at once; the owner then
/// gets every block back exactly once.
#[test]
fn concurrent_remote_pushes_are_all_collected() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim_owned();
        let blocks: Vec<Block> = (0..3).map(|i| alloc(owner, i)).collect();
        let threads: Vec<_> = blocks
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, &block)| {
                thread::spawn(move || {
                    // SAFETY: the block is live (threads without a heap, as
                    // in thread teardown, free remotely).
                    unsafe { free_without_heap(block.0) };
                    i
                })
            })
            .collect();
        // Let the new threads start: loom's DPOR only weighs threads that
        // have reached their first operation.
        thread::yield_now();
        // SAFETY: the owner collects its own heap while the pushes race.
        unsafe { owner.collect() };
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: as above.
        unsafe { owner.collect() };
        // SAFETY: the owner reads its own pool.
        assert_eq!(unsafe { pool_used(blocks[0].0) }, 1);
        // The two freed blocks come back, distinct, before fresh memory.
        let again: HashSet<Block> = (0..2).map(|i| alloc(owner, 10 + i)).collect();
        let freed: HashSet<Block> = blocks[1..].iter().copied().collect();
        assert_eq!(again, freed);
        assert_eq!(registry.stats().small_blocks_in_use, 3);
        finish(&registry);
    });
}

/// Two pools wait on the owner's pending list; while the owner walks it, a
/// remote free makes the first pool's remote list non-empty again, so that
/// pool is pushed on the pending list anew. The walk must not lose the
/// second pool (the owner reads each pool's link before emptying its list).
#[test]
fn pending_list_survives_a_pool_pushed_again_mid_walk() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim_owned();
        let small = class_for(48, 8).unwrap();
        let large = class_for(96, 8).unwrap();
        let b1 = alloc_in(owner, large, 1);
        let a1 = alloc_in(owner, small, 2);
        let a2 = alloc_in(owner, small, 3);
        let _keep = alloc_in(owner, small, 4);
        // Queue the large pool, then the small one, on the pending list.
        for block in [b1, a1] {
            thread::spawn(move || {
                // SAFETY: the block is live; this thread has no heap.
                unsafe { free_without_heap(block.0) };
            })
            .join()
            .unwrap();
        }
        let late = thread::spawn(move || {
            // SAFETY: as above.
            unsafe { free_without_heap(a2.0) };
        });
        thread::yield_now();
        // SAFETY: the owner collects its own heap.
        unsafe { owner.collect() };
        late.join().unwrap();
        // SAFETY: as above.
        unsafe { owner.collect() };
        // SAFETY: the owner reads its own pools.
        unsafe {
            assert_eq!(pool_used(a1.0), 1, "only `_keep` is left in the small pool");
            assert_eq!(
                pool_used(b1.0),
                0,
                "the large pool's remote free was collected"
            );
        }
        assert_eq!(registry.stats().small_blocks_in_use, 1);
        finish(&registry);
    });
}

/// A thread parks its heap (exits) with live blocks; one thread frees one
/// of them remotely while another adopts the heap, allocates from it and
/// frees the other block locally.
#[test]
fn parked_heap_is_adopted_while_others_free_into_it() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let (x, y) = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim_owned();
                let blocks = (alloc(heap, 1), alloc(heap, 2));
                // SAFETY: the thread exits: it gives its heap up.
                unsafe { heap.park() };
                blocks
            })
            .join()
            .unwrap()
        };
        let freer = thread::spawn(move || {
            // SAFETY: x is live; this thread has no heap.
            unsafe { free_without_heap(x.0) };
        });
        let adopter = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim_owned();
                let z = alloc(heap, 3);
                assert_ne!(z, y, "a live block was handed out again");
                free(heap, y, 2);
                free(heap, z, 3);
                // SAFETY: the thread exits.
                unsafe { heap.park() };
            })
        };
        thread::yield_now();
        freer.join().unwrap();
        adopter.join().unwrap();
        assert_eq!(
            registry.heaps(),
            1,
            "the parked heap was adopted, not replaced"
        );
        registry.trim_parked();
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 0);
        assert_eq!(stats.arenas_in_use, 0, "trimming returns every arena");
        finish(&registry);
    });
}

/// Two heaps map arenas at once; one frees the last block of the other's
/// arena remotely; both trim. The registry's arena counts stay exact.
#[test]
fn arenas_come_and_go_across_threads() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let first = registry.claim_owned();
        let a = alloc(first, 1);
        let other = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim_owned();
                let b = alloc(heap, 2);
                free(heap, a, 1);
                free(heap, b, 2);
                // SAFETY: this thread claimed the heap.
                unsafe { heap.trim() };
                // SAFETY: the thread exits.
                unsafe { heap.park() };
            })
        };
        thread::yield_now();
        // SAFETY: the owner works on its own heap meanwhile.
        unsafe { first.collect() };
        other.join().unwrap();
        // SAFETY: as above.
        unsafe {
            first.collect();
            first.trim();
        }
        let stats = registry.stats();
        assert_eq!(stats.arenas_allocated_total, 2);
        assert_eq!(stats.arenas_freed_total, 2);
        assert_eq!(stats.arenas_in_use, 0);
        assert_eq!(stats.small_blocks_in_use, 0);
        finish(&registry);
    });
}

/// Statistics read while two threads allocate and free: every snapshot is
/// internally consistent and within what could be live.
#[test]
fn stats_are_consistent_while_threads_work() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim_owned();
        let a = alloc(owner, 1);
        let worker = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim_owned();
                let b = alloc(heap, 2);
                free(heap, b, 2);
                free(heap, a, 1);
                // SAFETY: the thread exits.
                unsafe { heap.park() };
            })
        };
        thread::yield_now();
        let seen = registry.stats();
        let sum: usize = seen.per_class.iter().map(|c| c.blocks_in_use).sum();
        assert_eq!(sum, seen.small_blocks_in_use);
        assert!(seen.small_blocks_in_use <= 2, "more blocks than ever lived");
        worker.join().unwrap();
        let done = registry.stats();
        assert_eq!(done.small_blocks_in_use, 0);
        assert_eq!(done.per_class[class()].blocks_in_use, 0);
        // SAFETY: the owner collects its own heap.
        unsafe { owner.collect() };
        finish(&registry);
    });
}
