//! Model checks of PyMalloc's concurrent core with loom: the real heap,
//! pool, registry, outbox and pass code (`src/alloc/`), whose atomics and
//! cells become loom's under `--cfg loom`, explored over every
//! interleaving up to the preemption bound. Every allocator `Cell` is a
//! loom cell there, so a model also fails (with a causality error) when
//! two threads touch one without a happens-before edge: that is how the
//! ownership rules written on `Heap`, `Pool` and `Outbox` are checked.
//! Run with `scripts/loom.sh`.
//!
//! Each model yields once after spawning its threads: loom's DPOR only
//! weighs threads that have reached their first operation, so without the
//! yield the schedules in which a new thread runs first would be missed.
//!
//! Each model was checked to fail when the step or ordering it guards is
//! broken on purpose; its doc says which breakage it was run against, and
//! what loom reported.
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
    model_bounded(usize::MAX, f)
}

/// As [`model`], with the preemption bound at most `max`: the models of
/// three threads running whole passes explore millions of schedules at
/// bound 4, hundreds of thousands at 3.
fn model_bounded(max: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    // Allocating a heap touches ~150 atomics, each a branch for loom.
    builder.max_branches = 100_000;
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(4).min(max));
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "{} executions",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
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

/// Checks the tag `alloc_in` wrote.
fn check(block: Block, tag: u64) {
    // SAFETY: the block is live; its tag sits past the free-list link.
    assert_eq!(
        unsafe { block.0.cast::<u64>().add(2).read() },
        tag,
        "block corrupted"
    );
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

/// Allocates a whole pool of 512-byte blocks (32, tagged 0..32) for the
/// calling thread's heap `owner`; returns the class and the blocks.
fn full_pool_of_512(owner: HeapRef) -> (usize, Vec<Block>) {
    let big = class_for(512, 8).unwrap();
    (big, (0..32).map(|i| alloc_in(owner, big, i)).collect())
}

/// Frees `blocks` (tagged with their index) from a thread that has no
/// heap, and waits for it.
fn free_from_a_thread_without_heap(blocks: Vec<Block>) {
    thread::spawn(move || {
        for (i, block) in blocks.into_iter().enumerate() {
            check(block, i as u64);
            // SAFETY: live blocks; this thread has no heap.
            unsafe { free_without_heap(block.0) };
        }
    })
    .join()
    .unwrap();
}

/// A thread with no heap running `release_free_memory()`: a guest.
fn spawn_guest(registry: &Arc<Registry>) -> thread::JoinHandle<usize> {
    let registry = registry.clone();
    // SAFETY: the guest thread has no heap.
    thread::spawn(move || unsafe { registry.release(None) })
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
        let owner = registry.claim();
        let (a, b) = (alloc(owner, 1), alloc(owner, 2));
        let remote = {
            let registry = registry.clone();
            thread::spawn(move || {
                let mine = registry.claim();
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
        let owner = registry.claim();
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
        let owner = registry.claim();
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
                let heap = registry.claim();
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
                let heap = registry.claim();
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
        // SAFETY: this thread has no heap.
        unsafe { registry.release(None) };
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 0);
        assert_eq!(stats.arenas_in_use, 0, "a parked heap keeps nothing empty");
        finish(&registry);
    });
}

/// Two heaps map arenas at once; one frees the last block of the other's
/// arena remotely and calls `release_free_memory()` (visiting the other
/// heap as a guest while its owner collects); both release. The
/// registry's arena counts stay exact.
#[test]
fn arenas_come_and_go_across_threads() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let first = registry.claim();
        let a = alloc(first, 1);
        let other = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim();
                let b = alloc(heap, 2);
                free(heap, a, 1);
                free(heap, b, 2);
                // SAFETY: this thread owns `heap`.
                unsafe { registry.release(Some(heap)) };
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
            registry.release(Some(first));
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
        let owner = registry.claim();
        let a = alloc(owner, 1);
        let worker = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim();
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

/// A thread frees two blocks of the main thread's pool into its outbox
/// (two busy sections) while the main thread runs `release_free_memory()`,
/// which flushes that outbox as a guest; the thread then stays alive and
/// idle, and a second release flushes whatever the first could not reach.
/// Every block comes home exactly once, and no outbox slot is touched by
/// both threads without a happens-before edge (loom's cells check it).
///
/// Checked against: the owner's `light_barrier` reduced to nothing (loom
/// finds the store-buffering outcome: both sides in the outbox, a
/// causality violation on a slot cell); `FlushTicket::issue` without the
/// heavy barrier (the same); the guest not waiting for `busy` to clear
/// (the same); the end of a busy section stored Relaxed (a causality
/// violation on the guest's read of the slots).
#[test]
fn a_guest_flushes_an_outbox_while_its_owner_fills_it() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim();
        let (a, b) = (alloc(owner, 1), alloc(owner, 2));
        let keep = alloc(owner, 3);
        let freer = {
            let registry = registry.clone();
            thread::spawn(move || {
                let mine = registry.claim();
                free(mine, a, 1);
                free(mine, b, 2);
                // Idle from here on: it neither ticks nor exits.
                mine
            })
        };
        thread::yield_now();
        // SAFETY: the main thread owns `owner`.
        unsafe { registry.release(Some(owner)) };
        let _idle = freer.join().unwrap();
        // SAFETY: as above.
        unsafe { registry.release(Some(owner)) };
        // SAFETY: the owner reads its own pool.
        assert_eq!(
            unsafe { pool_used(keep.0) },
            1,
            "both remote frees came home, once each"
        );
        assert_eq!(registry.stats().small_blocks_in_use, 1);
        free(owner, keep, 3);
        finish(&registry);
    });
}

/// The main thread's pool of 512-byte blocks is full, with 30 of its 32
/// blocks freed by another thread (so it waits on the pending list). Then
/// at once: a thread frees one more block remotely; the main thread frees
/// the last block locally, takes it again, allocates once more (finding
/// the pool dry, it detaches it and takes a fresh one) and frees the block
/// into the detached pool; and a guest runs
/// `release_free_memory()`, which may take the pool off the pending list
/// while it is being detached, and may reclaim it only if it finds every
/// block in use on its remote list. Whoever empties the pool returns it,
/// once, and the counts come out exact.
///
/// This model exercises the pool being detached while a guest may be
/// looking at it. Checked against the same breakages as
/// `a_guest_leaves_a_detached_pool_alone_while_a_block_is_held`, it found
/// neither at preemption bound 3 (the detach inside the guest's window
/// needs a schedule loom's bounded search does not reach), nor the guest
/// reading the detached bit Relaxed: that ordering is argued on `Pool`,
/// not model-checked.
#[test]
fn a_guest_reclaims_a_detached_pool_only_when_every_block_is_back() {
    model_bounded(3, || {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim();
        let (big, mut blocks) = full_pool_of_512(owner);
        let local = blocks.pop().unwrap();
        let remote = blocks.pop().unwrap();
        free_from_a_thread_without_heap(blocks);
        let freer = thread::spawn(move || {
            check(remote, 30);
            // SAFETY: as above.
            unsafe { free_without_heap(remote.0) };
        });
        let guest = spawn_guest(&registry);
        thread::yield_now();
        // A local free into the attached pool and the allocation that
        // takes the block again: writes of `used` just before the detach.
        free(owner, local, 31);
        let again = alloc_in(owner, big, 31);
        let other = alloc_in(owner, big, 99);
        // A local free into the pool now detached.
        free(owner, again, 31);
        freer.join().unwrap();
        guest.join().unwrap();
        // SAFETY: the owner collects its own heap.
        unsafe { owner.collect() };
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 1);
        free(owner, other, 99);
        // SAFETY: as above.
        unsafe { owner.collect() };
        // The pool of `other` is kept as the class's last; the first one
        // went back to its arena exactly once.
        assert_eq!(registry.stats().per_class[big].pools, 1);
        finish(&registry);
    });
}

/// The main thread's first pool of 512-byte blocks is detached (full, off
/// its class list: the 33rd block came from a second pool) with every
/// block but one freed by another thread. Then at once: the main thread
/// frees that last block locally (into the detached pool: it takes the
/// pool back with a compare-and-swap, without the lock, or, if the guest
/// has claimed it, sends the block to the remote list) while a guest runs
/// `release_free_memory()`, which must leave the pool alone while the
/// block is held. The pool goes back to its arena once.
///
/// Checked against: the guest reading the pool's owner line without
/// claiming it, the owner's `reattach` with Relaxed instead of Acquire,
/// and the guest's `unclaim` with Relaxed instead of Release (each: loom
/// reports a causality violation on a cell of the pool between owner and
/// guest); the guest reclaiming a detached pool with one block still held
/// (its own debug check aborts: "31 blocks on its remote list, 32 in
/// use"). The guest's claim with Relaxed instead of Acquire is not caught
/// (the pool is detached before the guest starts); that ordering is argued
/// on `Pool`.
#[test]
fn a_guest_leaves_a_detached_pool_alone_while_a_block_is_held() {
    model(|| {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim();
        let (big, mut blocks) = full_pool_of_512(owner);
        let other = alloc_in(owner, big, 99);
        let last = blocks.pop().unwrap();
        free_from_a_thread_without_heap(blocks);
        let guest = spawn_guest(&registry);
        thread::yield_now();
        free(owner, last, 31);
        guest.join().unwrap();
        // SAFETY: the owner collects its own heap.
        unsafe { owner.collect() };
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 1);
        assert_eq!(stats.per_class[big].pools, 1);
        free(owner, other, 99);
        finish(&registry);
    });
}

/// A thread frees a block of the main thread's pool (into its outbox) and
/// exits (parking its heap, which delivers the outbox) while the main
/// thread runs `release_free_memory()`, visiting that heap as a guest or,
/// once parked, as its keeper; the main thread's arena goes back once the
/// block is home.
///
/// Checked against: the heap lock taken with Relaxed instead of Acquire
/// (a causality violation between the exiting owner's writes and the
/// keeper's reads).
#[test]
fn a_thread_exits_while_a_release_visits_its_heap() {
    model_bounded(3, || {
        let registry = Arc::new(Registry::new());
        let owner = registry.claim();
        let y = alloc(owner, 1);
        let exiting = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim();
                free(heap, y, 1);
                // SAFETY: the thread exits.
                unsafe { heap.park() };
            })
        };
        thread::yield_now();
        // SAFETY: the main thread owns `owner`.
        unsafe { registry.release(Some(owner)) };
        exiting.join().unwrap();
        // SAFETY: as above.
        unsafe { registry.release(Some(owner)) };
        let stats = registry.stats();
        assert_eq!(stats.small_blocks_in_use, 0);
        assert_eq!(stats.heaps_parked, 1);
        assert_eq!(stats.arenas_in_use, 0, "every empty arena went back");
        assert_eq!(stats.arenas_freed_total, stats.arenas_allocated_total);
        finish(&registry);
    });
}

/// A thread that has no heap any more (it is exiting) allocates from a
/// parked heap kept for the call, while another thread starts and adopts
/// that heap. The block comes from the parked heap or a new one, never
/// twice.
///
/// Checked against: `try_keep` not re-checking the state after taking the
/// lock (the adopter and the keeper both use the heap: a causality
/// violation on a class list).
#[test]
fn an_exiting_thread_borrows_a_heap_while_another_adopts_it() {
    model(|| {
        let registry = Arc::new(Registry::new());
        {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim();
                let x = alloc(heap, 1);
                free(heap, x, 1);
                // SAFETY: the thread exits.
                unsafe { heap.park() };
            })
            .join()
            .unwrap();
        }
        let borrower = {
            let registry = registry.clone();
            thread::spawn(move || {
                let p = registry.alloc_without_heap(class());
                assert!(!p.is_null());
                Block(p)
            })
        };
        let adopter = {
            let registry = registry.clone();
            thread::spawn(move || {
                let heap = registry.claim();
                let z = alloc(heap, 3);
                (heap, z)
            })
        };
        thread::yield_now();
        let b = borrower.join().unwrap();
        let (heap, z) = adopter.join().unwrap();
        assert_ne!(b, z, "one block handed out twice");
        // SAFETY: `b` is live; this thread has no heap.
        unsafe { free_without_heap(b.0) };
        // The adopter's thread is gone; its heap is handed on by joining.
        free(heap, z, 3);
        assert_eq!(registry.stats().small_blocks_in_use, 0);
        finish(&registry);
    });
}

/// The facade's one safe entry point taking a raw class index refuses a
/// class that does not exist (it used to index the class table out of
/// bounds: undefined behaviour from safe code).
#[test]
#[should_panic(expected = "no size class")]
fn an_allocation_without_heap_of_a_class_that_does_not_exist_panics() {
    loom::model(|| {
        let registry = Registry::new();
        registry.alloc_without_heap(1 << 20);
    });
}
