//! Randomized multi-threaded stress of `PyMalloc` (issue 4 item 4), sized
//! for CI: well under a minute in a debug build.
//!
//! 8 slots each run several short-lived worker threads in turn; workers
//! allocate mixed sizes 1..=4,096 (alignments up to 4,096), fill every block
//! with a pattern naming its owner, and pass blocks to random other threads
//! through shared inboxes, so blocks are freed (or reallocated) by random
//! threads, often after their owner has exited. Every block is verified in
//! full when it is freed or reallocated (see `common/alloc_stress_core.rs`).
//!
//! Afterwards, with every block freed and `release_free_memory()` called,
//! nothing may stay counted in use and the arenas must be back near where
//! they started.

#[path = "common/alloc_util.rs"]
mod alloc_util;

#[path = "common/alloc_stress_core.rs"]
mod alloc_stress_core;

use std::sync::atomic::Ordering;

use alloc_stress_core::{Config, Shared};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

#[test]
fn eight_threads_random_owners_and_freers() {
    let cfg = Config {
        threads: 8,
        ops_per_life: if cfg!(debug_assertions) {
            40_000
        } else {
            200_000
        },
        max_local: 400,
        max_inbox: 800,
        max_orphans: 2_000,
    };
    let lives = 8;
    release_free_memory();
    let s0 = alloc_stats();
    let (blocks0, arenas0) = (s0.small_blocks_in_use, s0.arenas_in_use);
    drop(s0);

    let shared = Shared::new(cfg);
    shared.run(&GLOBAL, lives);
    let leftover = shared.drain(&GLOBAL);
    let ops = shared.ops.load(Ordering::Relaxed);
    let freed = shared.freed.load(Ordering::Relaxed);
    assert_eq!(
        shared.lives.load(Ordering::Relaxed),
        cfg.threads as u64 * lives
    );
    assert_eq!(ops, cfg.threads as u64 * lives * cfg.ops_per_life);
    assert!(
        freed > ops / 3,
        "only {freed} blocks freed in {ops} operations"
    );
    drop(shared);

    let released = release_free_memory();
    let s = alloc_stats();
    eprintln!(
        "{ops} operations, {freed} blocks verified and freed ({leftover} at the end); \
         release_free_memory() returned {released} bytes; small blocks in use {blocks0} -> {}, \
         arenas {arenas0} -> {} (high-water {})",
        s.small_blocks_in_use, s.arenas_in_use, s.arenas_highwater
    );
    assert!(
        s.small_blocks_in_use <= blocks0 + 64,
        "every block was freed, yet {} small blocks count as in use ({blocks0} before)",
        s.small_blocks_in_use
    );
    assert!(
        s.arenas_in_use <= arenas0 + 2,
        "every block was freed, yet {} arenas stay mapped after release_free_memory() \
         ({arenas0} before)",
        s.arenas_in_use
    );
}
