//! `realloc` at every edge: shrink and grow within a class, across classes,
//! across the 512-byte threshold both ways, large to large, alignments
//! above 16, zeroed prefixes, blocks grown on one thread and freed on
//! another, and the same table under the debug allocator (`PYMEM_DEBUG=1`,
//! in a child process).
//!
//! Growth by small steps moves a pool block into a class with headroom, so
//! later steps stay in place and the block is freed with a layout smaller
//! than its class: every path that frees or reallocates must accept that.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// The tests run one at a time: some read the allocator's statistics,
/// which every other test's allocations would move.
static STATS: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    STATS.lock().unwrap_or_else(|e| e.into_inner())
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// The byte written at `i` of a block filled by [`fill`].
fn pattern(i: usize, seed: u8) -> u8 {
    (i as u8).wrapping_mul(31) ^ seed
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the caller owns `len` bytes at `p`.
        unsafe { p.add(i).write(pattern(i, seed)) };
    }
}

fn check(p: *mut u8, len: usize, seed: u8, what: &str) {
    for i in 0..len {
        // SAFETY: the caller owns `len` bytes at `p`.
        let got = unsafe { p.add(i).read() };
        assert_eq!(got, pattern(i, seed), "{what}: byte {i} of {len} changed");
    }
}

unsafe fn alloc_filled(l: Layout, seed: u8) -> *mut u8 {
    // SAFETY: forwarded; `l` has a non-zero size.
    let p = unsafe { PyMalloc.alloc(l) };
    assert!(!p.is_null(), "alloc {l:?}");
    assert_eq!(p as usize % l.align(), 0, "alloc {l:?} misaligned");
    fill(p, l.size(), seed);
    p
}

/// Reallocates `p` (live with `l`) to `new`, checks alignment and prefix,
/// fills the whole new block, and returns it.
unsafe fn grow_checked(p: *mut u8, l: Layout, new: usize, seed: u8) -> *mut u8 {
    // SAFETY: forwarded caller contract.
    let q = unsafe { PyMalloc.realloc(p, l, new) };
    let what = format!("realloc {} -> {new} (align {})", l.size(), l.align());
    assert!(!q.is_null(), "{what}");
    assert_eq!(q as usize % l.align(), 0, "{what}: misaligned");
    check(q, l.size().min(new), seed, &what);
    fill(q, new, seed);
    q
}

const SIZES: &[usize] = &[
    1, 8, 15, 16, 17, 24, 40, 48, 100, 240, 256, 384, 500, 511, 512, 513, 520, 600, 1000, 4096,
    4097, 100_000, 300_000,
];
const ALIGNS: &[usize] = &[1, 8, 16, 32, 64, 256, 512, 1024, 4096];

/// Every pair of sizes at every alignment: the prefix survives, the block
/// is aligned, and it is freed with the new layout, or, after a second
/// realloc back to the first size, with the original one.
fn edge_table() {
    for &align in ALIGNS {
        for (i, &old) in SIZES.iter().enumerate() {
            for (j, &new) in SIZES.iter().enumerate() {
                let seed = (i * 7 + j) as u8;
                let l = layout(old, align);
                // SAFETY: every block is live with the layout passed along
                // with it and freed once.
                unsafe {
                    let p = alloc_filled(l, seed);
                    let q = grow_checked(p, l, new, seed);
                    if (i + j) % 2 == 0 {
                        PyMalloc.dealloc(q, layout(new, align));
                    } else {
                        let back = grow_checked(q, layout(new, align), old, seed);
                        PyMalloc.dealloc(back, l);
                    }
                }
            }
        }
    }
}

#[test]
fn every_pair_of_sizes_and_alignments_keeps_the_prefix() {
    let _g = serial();
    edge_table();
}

/// A run of 8-byte steps from 8 to 4,096 bytes: the content survives each
/// step, and the pool part moves a handful of times, not at every 16-byte
/// class (32 moves before headroom).
#[cfg_attr(pymem_asan, ignore = "under AddressSanitizer every realloc moves")]
#[test]
fn small_steps_move_seldom_and_keep_the_content() {
    let _g = serial();
    for align in [8, 16, 64] {
        let mut size = 8;
        // SAFETY: the block is live with `layout(size, align)` throughout.
        unsafe {
            let mut p = alloc_filled(layout(size, align), 1);
            let mut moves_below_512 = 0;
            while size < 4096 {
                let q = grow_checked(p, layout(size, align), size + 8, 1);
                if q != p && size + 8 <= 512 {
                    moves_below_512 += 1;
                }
                p = q;
                size += 8;
            }
            assert!(
                moves_below_512 <= 10,
                "align {align}: {moves_below_512} moves growing 8 -> 512 by 8 B"
            );
            PyMalloc.dealloc(p, layout(size, align));
        }
    }
}

/// Growth within the block's class returns the same pointer; so does growth
/// into the headroom a small step was given; a doubling is not given any.
#[cfg_attr(pymem_asan, ignore = "under AddressSanitizer every realloc moves")]
#[test]
fn growth_within_the_block_stays_in_place() {
    let _g = serial();
    // SAFETY: each block is live with the layout passed with it.
    unsafe {
        let p = alloc_filled(layout(17, 8), 2);
        let q = grow_checked(p, layout(17, 8), 32, 2);
        assert_eq!(p, q, "17 -> 32 B is the same 32-byte block");
        let r = grow_checked(q, layout(32, 8), 40, 2);
        assert_ne!(q, r, "32 -> 40 B leaves the 32-byte class");
        // 40 B after a small step: room for 60, so 48 and 56 fit.
        let s = grow_checked(r, layout(40, 8), 48, 2);
        let t = grow_checked(s, layout(48, 8), 56, 2);
        assert_eq!(
            (r, r),
            (s, t),
            "48 and 56 B fit the headroom of the 40-byte step"
        );
        // Shrinking a little stays too.
        let u = grow_checked(t, layout(56, 8), 50, 2);
        assert_eq!(t, u);
        PyMalloc.dealloc(u, layout(50, 8));

        // A doubling: exactly the 128-byte class, so 129 B moves.
        let p = alloc_filled(layout(64, 8), 3);
        let q = grow_checked(p, layout(64, 8), 128, 3);
        let r = grow_checked(q, layout(128, 8), 129, 3);
        assert_ne!(q, r, "a doubling to 128 B was given headroom");
        PyMalloc.dealloc(r, layout(129, 8));
    }
}

/// A block grown into a headroom class counts in that class, and freeing
/// it with its smaller layout gives that class's count back.
#[test]
fn grown_blocks_count_in_their_class() {
    if !in_child("grown_blocks_count_in_their_class", &[]) {
        return;
    }
    let before = pymem::alloc_stats();
    const N: usize = 500;
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(N);
    for _ in 0..N {
        // SAFETY: each block is live with the layout passed with it.
        unsafe {
            let p = alloc_filled(layout(32, 8), 4);
            blocks.push(grow_checked(p, layout(32, 8), 40, 4));
        }
    }
    let during = pymem::alloc_stats();
    let grew: Vec<usize> = (0..during.per_class.len())
        .filter(|&c| during.per_class[c].blocks_in_use >= before.per_class[c].blocks_in_use + N)
        .collect();
    assert!(
        grew.iter().all(|&c| during.per_class[c].block_size >= 48),
        "40-byte blocks counted in classes {grew:?}"
    );
    assert!(!grew.is_empty(), "no class took the {N} grown blocks");
    for &p in &blocks {
        // SAFETY: live with the 40-byte layout.
        unsafe { PyMalloc.dealloc(p, layout(40, 8)) };
    }
    let after = pymem::alloc_stats();
    for &c in &grew {
        assert!(
            after.per_class[c].blocks_in_use <= before.per_class[c].blocks_in_use + 48,
            "class {c}: {} in use before, {} after",
            before.per_class[c].blocks_in_use,
            after.per_class[c].blocks_in_use
        );
    }
}

/// Large bytes and large allocations in use (the snapshot's own buffers are
/// freed before the next one).
fn large_figures() -> (usize, usize) {
    let s = pymem::alloc_stats();
    (s.large_bytes_in_use, s.large_allocs_in_use)
}

/// Large blocks growing by small steps count their bytes (plus at most the
/// thread's credit) and give every byte back once freed.
#[test]
fn large_steps_count_their_bytes() {
    if !in_child("large_steps_count_their_bytes", &[]) {
        return;
    }
    pymem::release_free_memory();
    let mut big = [(std::ptr::null_mut::<u8>(), 0usize); 8];
    let before = large_figures();
    for (k, slot) in big.iter_mut().enumerate() {
        let mut size = 600;
        // SAFETY: the block is live with `layout(size, 8)` throughout.
        unsafe {
            let mut p = alloc_filled(layout(size, 8), k as u8);
            while size < 20_000 {
                p = grow_checked(p, layout(size, 8), size + 24, k as u8);
                size += 24;
            }
            *slot = (p, size);
        }
    }
    let grown = large_figures();
    let expected: usize = big.iter().map(|&(_, s)| s).sum();
    let counted = grown.0 - before.0;
    assert!(
        counted >= expected && counted <= expected + 4096,
        "large steps counted {counted} bytes for {expected} in use"
    );
    assert_eq!(grown.1 - before.1, big.len());
    let peak = pymem::alloc_stats().peak_bytes_in_use;
    assert!(peak >= grown.0, "peak {peak} below {} in use", grown.0);
    for (p, size) in big {
        // SAFETY: live with `layout(size, 8)`.
        unsafe { PyMalloc.dealloc(p, layout(size, 8)) };
    }
    pymem::release_free_memory();
    assert_eq!(
        large_figures(),
        before,
        "large bytes not given back after the steps"
    );
}

/// Only small growth steps use the credit: while the thread holds one, a
/// large allocation, a doubling, a shrink and a free still move the count
/// by exactly their bytes.
#[test]
fn other_large_changes_count_exactly() {
    if !in_child("other_large_changes_count_exactly", &[]) {
        return;
    }
    // SAFETY: every block is live with the layout passed with it.
    unsafe {
        let mut size = 600;
        let mut stepper = alloc_filled(layout(size, 8), 5);
        while size < 800 {
            stepper = grow_checked(stepper, layout(size, 8), size + 8, 5);
            size += 8;
        }
        let bytes = || large_figures().0;
        let b0 = bytes();
        let p = alloc_filled(layout(100_000, 8), 6);
        assert_eq!(bytes() - b0, 100_000, "allocation");
        let p = grow_checked(p, layout(100_000, 8), 200_000, 6);
        assert_eq!(bytes() - b0, 200_000, "doubling");
        let p = grow_checked(p, layout(200_000, 8), 150_000, 6);
        assert_eq!(bytes() - b0, 150_000, "shrink");
        PyMalloc.dealloc(p, layout(150_000, 8));
        assert_eq!(bytes(), b0, "free");
        PyMalloc.dealloc(stepper, layout(size, 8));
    }
}

/// A thread that grows large blocks by small steps and exits leaves the
/// count exact (its credit goes back with its thread-locals).
#[test]
fn a_thread_that_grew_large_blocks_leaves_the_count_exact() {
    if !in_child(
        "a_thread_that_grew_large_blocks_leaves_the_count_exact",
        &[],
    ) {
        return;
    }
    pymem::release_free_memory();
    let before = large_figures();
    std::thread::spawn(|| {
        let mut size = 1000;
        // SAFETY: the block is live with `layout(size, 16)` throughout.
        unsafe {
            let mut p = alloc_filled(layout(size, 16), 9);
            while size < 9000 {
                p = grow_checked(p, layout(size, 16), size + 8, 9);
                size += 8;
            }
            // The steps leave the thread some credit; a shrink is exact.
            p = grow_checked(p, layout(size, 16), size - 100, 9);
            PyMalloc.dealloc(p, layout(size - 100, 16));
        }
    })
    .join()
    .unwrap();
    assert_eq!(large_figures(), before);
}

/// Zeroed memory stays zero through growth, shrink and the threshold.
#[test]
fn zeroed_prefix_survives() {
    let _g = serial();
    for &(old, new) in &[
        (24, 40),
        (40, 400),
        (300, 600),
        (600, 5000),
        (5000, 100),
        (100, 8),
    ] {
        for align in [8, 32] {
            let l = layout(old, align);
            // SAFETY: the block is live with the layout passed with it.
            unsafe {
                let p = PyMalloc.alloc_zeroed(l);
                assert!(!p.is_null());
                let q = PyMalloc.realloc(p, l, new);
                assert!(!q.is_null());
                let prefix = std::slice::from_raw_parts(q, old.min(new));
                assert!(
                    prefix.iter().all(|&b| b == 0),
                    "{old} -> {new}: zeroed prefix lost"
                );
                PyMalloc.dealloc(q, layout(new, align));
            }
        }
    }
}

/// A block grown on one thread (into a headroom class) is freed on another
/// with its smaller layout, while the owner keeps allocating.
#[test]
fn grown_blocks_freed_by_another_thread() {
    let _g = serial();
    let grown: Vec<usize> = (0..2_000)
        .map(|i| {
            let seed = i as u8;
            // SAFETY: each block is live with the layout passed with it.
            unsafe {
                let p = alloc_filled(layout(24, 8), seed);
                let q = grow_checked(p, layout(24, 8), 40, seed);
                grow_checked(q, layout(40, 8), 48, seed) as usize
            }
        })
        .collect();
    std::thread::spawn(move || {
        for (i, p) in grown.into_iter().enumerate() {
            check(p as *mut u8, 48, i as u8, "grown block on another thread");
            // SAFETY: live with the 48-byte layout.
            unsafe { PyMalloc.dealloc(p as *mut u8, layout(48, 8)) };
        }
    })
    .join()
    .unwrap();
    let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(v[9_999], "9999");
}

/// Vec and String growth through the global allocator (doublings and
/// `reserve_exact` small steps) keep their content.
#[test]
fn std_collections_grow_and_shrink() {
    let _g = serial();
    let mut s = String::new();
    for i in 0..5_000 {
        s.reserve_exact(3);
        s.push_str(&format!("{:03}", i % 1000));
    }
    assert_eq!(s.len(), 15_000);
    assert_eq!(&s[14_997..], "999");
    s.truncate(100);
    s.shrink_to_fit();
    assert_eq!(&s[..6], "000001");
    let mut v: Vec<u64> = Vec::new();
    for i in 0..100_000u64 {
        v.push(i);
    }
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
}

const CHILD: &str = "PYMEM_REALLOC_TEST_CHILD";

/// Runs the test `name` alone in a child process (this test binary, with
/// `env` set), so that no other test's allocations, nor the harness's,
/// move the figures it compares; returns true in the child, where the
/// caller then runs the test's body.
fn in_child(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .envs(env.iter().copied())
        .env(CHILD, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// The edge table again, with the debug allocator on (which moves every
/// block it reallocates, guards and all).
#[test]
fn under_the_debug_allocator() {
    if in_child("under_the_debug_allocator", &[("PYMEM_DEBUG", "1")]) {
        assert!(pymem::debug_allocator_enabled());
        edge_table();
    }
}
