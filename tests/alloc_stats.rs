//! `pymem::alloc_stats()` moves as the contract says.
//!
//! Checks:
//! * 32 classes with block sizes 16, 32, ..., 512; `SMALL_REQUEST_THRESHOLD`
//!   is 512;
//! * allocating N blocks of a class raises that class's `blocks_in_use` and
//!   `small_blocks_in_use` by N (and freeing them lowers both back), gives
//!   the class pools, and moves `small_bytes_in_use` by N blocks' worth;
//! * per-class `blocks_in_use` sum to `small_blocks_in_use`, also in
//!   snapshots taken while other threads allocate and free;
//! * large allocations move `large_allocs_in_use` / `large_bytes_in_use`,
//!   and `realloc` across the threshold moves a block between the counts;
//! * `peak_bytes_in_use` is never below current use and never falls;
//! * arenas: `arenas_in_use == arenas_allocated_total - arenas_freed_total`;
//! * `AllocStats` is `Debug + Clone`; `Display` prints a table naming the
//!   size of every class that has blocks in use.
//!
//! The test harness allocates and frees too (spawning test threads,
//! collecting their output, tearing down the previous test's thread), so the
//! tests here take one lock and deltas allow a little noise either way
//! (`NOISE` blocks, `LARGE_NOISE` large allocations) around the exact figure.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use alloc_util::{layout, serial, SplitMix64};
use pymem::{alloc_stats, AllocStats, ClassStats, PyMalloc, SMALL_REQUEST_THRESHOLD};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// Slack for allocations the harness makes concurrently.
const NOISE: usize = 48;
const LARGE_NOISE: usize = 3;
/// Bytes the harness's concurrent large allocations may add.
const LARGE_BYTES_NOISE: usize = LARGE_NOISE * 128 * 1024;

/// The figures of a snapshot, copied out so that no snapshot's own `Vec`
/// is alive while the next one is taken.
#[derive(Debug, Clone, Copy)]
struct Figures {
    class_in_use: [usize; 32],
    class_pools: [usize; 32],
    small_blocks: usize,
    small_bytes: usize,
    large_allocs: usize,
    large_bytes: usize,
    peak: usize,
}

fn figures() -> Figures {
    let s = alloc_stats();
    assert_eq!(s.per_class.len(), 32, "32 size classes");
    let mut f = Figures {
        class_in_use: [0; 32],
        class_pools: [0; 32],
        small_blocks: s.small_blocks_in_use,
        small_bytes: s.small_bytes_in_use,
        large_allocs: s.large_allocs_in_use,
        large_bytes: s.large_bytes_in_use,
        peak: s.peak_bytes_in_use,
    };
    for (i, c) in s.per_class.iter().enumerate() {
        f.class_in_use[i] = c.blocks_in_use;
        f.class_pools[i] = c.pools;
    }
    f
}

/// Asserts `after - before` is `exact`, give or take `noise`.
fn assert_delta(what: &str, before: usize, after: usize, exact: usize, noise: usize) {
    let delta = after as i64 - before as i64;
    assert!(
        delta.abs_diff(exact as i64) <= noise as u64,
        "{what}: moved by {delta} ({before} -> {after}), expected {exact} (+- {noise})"
    );
}

/// Asserts `after` is back to `before` within the harness's noise either way.
fn assert_back(what: &str, before: usize, after: usize, noise: usize) {
    assert!(
        after.abs_diff(before) <= noise,
        "{what}: {before} before, {after} after freeing everything"
    );
}

/// Asserts the large figures moved by `blocks` blocks of `bytes` bytes in
/// all, within the harness's noise.
fn assert_large_delta(before: &Figures, after: &Figures, blocks: usize, bytes: usize) {
    assert_delta(
        "large_allocs_in_use",
        before.large_allocs,
        after.large_allocs,
        blocks,
        LARGE_NOISE,
    );
    assert_delta(
        "large_bytes_in_use",
        before.large_bytes,
        after.large_bytes,
        bytes,
        LARGE_BYTES_NOISE,
    );
}

/// Asserts the large figures are back to `before`, within the noise.
fn assert_large_back(before: &Figures, after: &Figures) {
    assert_back(
        "large_allocs_in_use",
        before.large_allocs,
        after.large_allocs,
        LARGE_NOISE,
    );
    assert_back(
        "large_bytes_in_use",
        before.large_bytes,
        after.large_bytes,
        LARGE_BYTES_NOISE,
    );
}

/// The class index of a request (16-byte classes, alignment <= 16).
fn class_of(size: usize) -> usize {
    (size - 1) / 16
}

#[test]
fn thirty_two_classes_of_16_to_512_bytes() {
    let _g = serial();
    assert_eq!(SMALL_REQUEST_THRESHOLD, 512);
    let s = alloc_stats();
    let sizes: Vec<usize> = s.per_class.iter().map(|c| c.block_size).collect();
    let want: Vec<usize> = (1..=32).map(|i| i * 16).collect();
    assert_eq!(sizes, want);
}

#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn small_blocks_move_their_class() {
    let _g = serial();
    const N: usize = 2_000;
    for (size, align) in [
        (1, 1),
        (16, 8),
        (17, 8),
        (100, 8),
        (250, 4),
        (512, 16),
        (40, 16),
    ] {
        let l = layout(size, align);
        let class = class_of(size);
        let block = (class + 1) * 16;
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(N);
        let before = figures();
        for _ in 0..N {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `size` bytes.
            unsafe { p.write_bytes(0x3C, size) };
            ptrs.push(p);
        }
        let during = figures();
        let what = |field: &str| format!("size {size}, align {align}: {field}");
        assert_delta(
            &what("class blocks_in_use"),
            before.class_in_use[class],
            during.class_in_use[class],
            N,
            NOISE,
        );
        assert_delta(
            &what("small_blocks_in_use"),
            before.small_blocks,
            during.small_blocks,
            N,
            NOISE,
        );
        let bytes = during.small_bytes as i64 - before.small_bytes as i64;
        assert!(
            bytes >= ((N - NOISE) * size) as i64 && bytes <= ((N + NOISE) * 512) as i64,
            "{}: moved by {bytes}, expected about {} ({N} blocks of {block})",
            what("small_bytes_in_use"),
            N * block
        );
        assert!(
            during.class_pools[class] >= 1,
            "{}: {} pools for {} blocks in use",
            what("class pools"),
            during.class_pools[class],
            during.class_in_use[class]
        );
        assert_eq!(
            before.large_allocs,
            during.large_allocs,
            "{}",
            what("small requests must not count as large")
        );
        for p in ptrs.drain(..) {
            // SAFETY: live with `l`.
            unsafe { GLOBAL.dealloc(p, l) };
        }
        let after = figures();
        assert_back(
            &what("class blocks_in_use"),
            before.class_in_use[class],
            after.class_in_use[class],
            NOISE,
        );
        assert_back(
            &what("small_blocks_in_use"),
            before.small_blocks,
            after.small_blocks,
            NOISE,
        );
    }
}

#[test]
fn aligned_small_request_counts_in_a_class_that_honours_it() {
    // A 40-byte request aligned to 64 must land in a block that is a
    // multiple of 64 (or go to the system allocator): either way exactly
    // N blocks (or N large allocations) appear in use.
    let _g = serial();
    const N: usize = 1_000;
    let l = layout(40, 64);
    let before = figures();
    let ptrs: Vec<*mut u8> = (0..N)
        // SAFETY: non-zero size.
        .map(|_| unsafe { GLOBAL.alloc(l) })
        .collect();
    assert!(ptrs.iter().all(|p| !p.is_null() && *p as usize % 64 == 0));
    let during = figures();
    let small = during.small_blocks as i64 - before.small_blocks as i64;
    let large = during.large_allocs as i64 - before.large_allocs as i64;
    let near = |d: i64| d.abs_diff(N as i64) <= NOISE as u64;
    assert!(
        near(small) || near(large),
        "{N} aligned blocks: small moved by {small}, large by {large}"
    );
    if near(small) {
        let classes: Vec<usize> = (0..32)
            .filter(|&c| during.class_in_use[c] + NOISE >= before.class_in_use[c] + N)
            .collect();
        assert!(
            classes.iter().all(|c| ((c + 1) * 16) % 64 == 0),
            "a 64-aligned request counted in class(es) {classes:?}, whose blocks are not \
             multiples of 64"
        );
        assert!(!classes.is_empty(), "no class took the {N} blocks");
    }
    for p in ptrs {
        // SAFETY: live with `l`.
        unsafe { GLOBAL.dealloc(p, l) };
    }
}

#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn large_allocations_and_realloc_across_the_threshold() {
    let _g = serial();
    const K: usize = 8;
    const SIZE: usize = 100_000;
    let big = layout(SIZE, 8);
    let before = figures();
    let ptrs: Vec<*mut u8> = (0..K)
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(big) };
            assert!(!p.is_null());
            // SAFETY: `p` holds SIZE bytes.
            unsafe { p.write_bytes(1, SIZE) };
            p
        })
        .collect();
    let during = figures();
    assert_large_delta(&before, &during, K, K * SIZE);
    assert!(
        during.peak >= during.large_bytes + during.small_bytes,
        "peak {} below current use {} + {}",
        during.peak,
        during.small_bytes,
        during.large_bytes
    );
    for p in ptrs {
        // SAFETY: live with `big`.
        unsafe { GLOBAL.dealloc(p, big) };
    }
    let after = figures();
    assert_large_back(&before, &after);

    // realloc: N small blocks of 100 B grow to 10,000 B (pool -> system),
    // then shrink to 64 B (system -> pool, another class).
    const N: usize = 200;
    let small = layout(100, 8);
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(N);
    let s0 = figures();
    for _ in 0..N {
        // SAFETY: non-zero size.
        ptrs.push(unsafe { GLOBAL.alloc(small) });
    }
    let s1 = figures();
    assert_delta(
        "class 112 after alloc",
        s0.class_in_use[6],
        s1.class_in_use[6],
        N,
        NOISE,
    );
    for p in ptrs.iter_mut() {
        // SAFETY: live with `small`.
        *p = unsafe { GLOBAL.realloc(*p, small, 10_000) };
        assert!(!p.is_null());
    }
    let s2 = figures();
    assert_back(
        "class 112 after growing to 10,000 B",
        s0.class_in_use[6],
        s2.class_in_use[6],
        NOISE,
    );
    assert_delta(
        "large_allocs_in_use after growing to 10,000 B",
        s0.large_allocs,
        s2.large_allocs,
        N,
        LARGE_NOISE,
    );
    assert_delta(
        "large_bytes_in_use after growing to 10,000 B",
        s0.large_bytes,
        s2.large_bytes,
        N * 10_000,
        LARGE_BYTES_NOISE,
    );
    for p in ptrs.iter_mut() {
        // SAFETY: live with a 10,000-byte layout.
        *p = unsafe { GLOBAL.realloc(*p, layout(10_000, 8), 64) };
        assert!(!p.is_null());
    }
    let s3 = figures();
    assert_back(
        "large_allocs_in_use after shrinking to 64 B",
        s0.large_allocs,
        s3.large_allocs,
        LARGE_NOISE,
    );
    assert_delta(
        "class 64 after shrinking to 64 B",
        s0.class_in_use[3],
        s3.class_in_use[3],
        N,
        NOISE,
    );
    for p in ptrs {
        // SAFETY: live with a 64-byte layout.
        unsafe { GLOBAL.dealloc(p, layout(64, 8)) };
    }
}

/// Large blocks one thread allocates and another frees add up, in blocks
/// and in bytes, while both threads live and after they exit.
#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn large_blocks_freed_by_another_thread_add_up() {
    let _g = serial();
    const K: usize = 64;
    const SIZE: usize = 40_000;
    let big = layout(SIZE, 8);
    let before = figures();
    let (to_freer, blocks) = std::sync::mpsc::channel::<Vec<usize>>();
    let (freed, done) = std::sync::mpsc::channel::<()>();
    let (to_allocator, go_on) = std::sync::mpsc::channel::<()>();
    let allocator = std::thread::spawn(move || {
        let ptrs: Vec<usize> = (0..K)
            // SAFETY: non-zero size.
            .map(|_| unsafe { GLOBAL.alloc(big) } as usize)
            .collect();
        assert!(ptrs.iter().all(|&p| p != 0));
        to_freer.send(ptrs).unwrap();
        go_on.recv().unwrap();
    });
    let (ptrs_tx, ptrs_rx) = std::sync::mpsc::channel::<Vec<usize>>();
    let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
    let freer = std::thread::spawn(move || {
        let ptrs = ptrs_rx.recv().unwrap();
        free_rx.recv().unwrap();
        for p in ptrs {
            // SAFETY: live with `big`, allocated by the other thread.
            unsafe { GLOBAL.dealloc(p as *mut u8, big) };
        }
        freed.send(()).unwrap();
        // Stays alive until told: its heap is not parked yet.
        free_rx.recv().unwrap();
    });
    let ptrs = blocks.recv().unwrap();
    let during = figures();
    assert_large_delta(&before, &during, K, K * SIZE);
    ptrs_tx.send(ptrs).unwrap();
    free_tx.send(()).unwrap();
    done.recv().unwrap();
    let both_alive = figures();
    assert_large_back(&before, &both_alive);
    to_allocator.send(()).unwrap();
    free_tx.send(()).unwrap();
    allocator.join().unwrap();
    freer.join().unwrap();
    let after = figures();
    assert_large_back(&before, &after);
}

#[test]
fn peak_is_never_below_current_and_never_falls() {
    let _g = serial();
    let s0 = figures();
    assert!(s0.peak >= s0.small_bytes + s0.large_bytes);
    // 32 MiB of large blocks, then 8 MiB of small ones.
    let big = layout(4 << 20, 8);
    // SAFETY: non-zero sizes; every block is freed with its layout.
    unsafe {
        let bigs: Vec<*mut u8> = (0..8).map(|_| GLOBAL.alloc(big)).collect();
        let smalls: Vec<Box<[u8; 256]>> = (0..32_768).map(|_| Box::new([7; 256])).collect();
        let s1 = figures();
        assert!(
            s1.peak >= s1.small_bytes + s1.large_bytes,
            "peak {} below current {} + {}",
            s1.peak,
            s1.small_bytes,
            s1.large_bytes
        );
        assert!(
            s1.peak >= s0.peak,
            "peak fell from {} to {}",
            s0.peak,
            s1.peak
        );
        assert!(s1.peak >= (32 << 20) + (8 << 20));
        drop(smalls);
        for p in bigs {
            GLOBAL.dealloc(p, big);
        }
        let s2 = figures();
        assert!(
            s2.peak >= s1.peak,
            "peak fell from {} to {}",
            s1.peak,
            s2.peak
        );
    }
}

#[test]
fn per_class_sums_to_small_blocks_even_while_threads_allocate() {
    let _g = serial();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let stop = &stop;
            s.spawn(move || {
                let mut rng = SplitMix64::new(t + 100);
                let mut live: Vec<(*mut u8, Layout)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if live.len() < 500 && rng.percent(55) {
                        let l = layout(rng.range(1, 700), 8);
                        // SAFETY: non-zero size.
                        live.push((unsafe { GLOBAL.alloc(l) }, l));
                    } else if let Some((p, l)) = live.pop() {
                        // SAFETY: live with `l`.
                        unsafe { GLOBAL.dealloc(p, l) };
                    }
                }
                for (p, l) in live {
                    // SAFETY: live with `l`.
                    unsafe { GLOBAL.dealloc(p, l) };
                }
            });
        }
        // Stops the threads however this loop ends: a failed assertion
        // must fail the test, not leave the scope waiting for them.
        struct StopOnExit<'a>(&'a AtomicBool);
        impl Drop for StopOnExit<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnExit(&stop);
        for _ in 0..300 {
            let st = alloc_stats();
            let sum: usize = st.per_class.iter().map(|c| c.blocks_in_use).sum();
            assert_eq!(sum, st.small_blocks_in_use, "per-class sum vs total");
            assert!(
                st.peak_bytes_in_use >= st.small_bytes_in_use + st.large_bytes_in_use,
                "peak below what is in use: {st:?}"
            );
        }
    });
}

#[test]
fn arena_counts_add_up() {
    let _g = serial();
    let keep: Vec<Box<[u64; 8]>> = (0..50_000).map(|_| Box::new([1; 8])).collect();
    let s = alloc_stats();
    assert!(s.arenas_in_use >= 1, "blocks in use but no arena: {s:?}");
    assert!(s.pools_in_use >= 1);
    assert_eq!(
        s.arenas_in_use,
        s.arenas_allocated_total - s.arenas_freed_total,
        "arenas in use vs allocated - freed"
    );
    drop(keep);
}

#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn display_lists_every_class_in_use_and_debug_clone_work() {
    let _g = serial();
    // One live block in every class, so each appears in the table.
    let blocks: Vec<(*mut u8, Layout)> = (1..=32)
        .map(|i| {
            let l = layout(i * 16, 8);
            // SAFETY: non-zero size.
            (unsafe { GLOBAL.alloc(l) }, l)
        })
        .collect();
    let s: AllocStats = alloc_stats();
    let table = s.to_string();
    let tokens: HashSet<&str> = table
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|t| !t.is_empty())
        .collect();
    for c in &s.per_class {
        assert!(
            tokens.contains(c.block_size.to_string().as_str()),
            "Display does not show class size {}:\n{table}",
            c.block_size
        );
    }
    assert!(
        table.lines().count() > 32,
        "a table with a line per class:\n{table}"
    );
    assert!(
        table.to_lowercase().contains("arena"),
        "no arena figures:\n{table}"
    );

    let copy = s.clone();
    let debug = format!("{copy:?}");
    assert_eq!(debug, format!("{s:?}"));
    assert!(debug.contains("per_class"), "Debug output: {debug}");
    let first: &ClassStats = &copy.per_class[0];
    let ClassStats {
        block_size,
        pools,
        blocks_in_use,
        free_blocks,
        ..
    } = first.clone();
    assert_eq!(block_size, 16);
    assert!(blocks_in_use >= 1 && pools >= 1, "{first:?}");
    let _ = free_blocks;
    for (p, l) in blocks {
        // SAFETY: live with `l`.
        unsafe { GLOBAL.dealloc(p, l) };
    }
}

/// Many large blocks of a few hundred bytes over the threshold, each far
/// below the 64 KiB a thread counts ahead (`large_count`): the peak still
/// covers all of them at once, on two threads that allocate, trade and
/// free them, and the in-use figures come back.
#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn peak_covers_large_blocks_counted_ahead() {
    let _g = serial();
    const N: usize = 400;
    const SIZE: usize = 1_500;
    let l = layout(SIZE, 8);
    let before = figures();
    let arenas_before = alloc_stats().arenas_in_use * (1 << 20);
    let worker = std::thread::spawn(move || {
        let ptrs: Vec<usize> = (0..N)
            // SAFETY: non-zero size.
            .map(|_| unsafe { GLOBAL.alloc(l) } as usize)
            .collect();
        assert!(ptrs.iter().all(|&p| p != 0));
        ptrs
    });
    let theirs = worker.join().unwrap();
    let mine: Vec<usize> = (0..N)
        // SAFETY: non-zero size.
        .map(|_| unsafe { GLOBAL.alloc(l) } as usize)
        .collect();
    let during = figures();
    assert_large_delta(&before, &during, 2 * N, 2 * N * SIZE);
    let held = arenas_before + before.large_bytes + 2 * N * SIZE;
    assert!(
        during.peak + LARGE_BYTES_NOISE >= held,
        "peak {} below the {held} bytes held at once",
        during.peak
    );
    for p in theirs.into_iter().chain(mine) {
        // SAFETY: live with `l` (half of them allocated by the worker).
        unsafe { GLOBAL.dealloc(p as *mut u8, l) };
    }
    let after = figures();
    assert!(after.peak >= during.peak, "the peak never falls");
    assert_large_back(&before, &after);
}
