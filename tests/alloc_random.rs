//! Randomised correctness of `PyMalloc` through `GlobalAlloc` (installed as
//! this binary's global allocator and also called directly).
//!
//! Checks, for sizes 1..=2,048 and alignments 1..=4,096:
//! * every pointer is non-null and aligned as asked;
//! * blocks never overlap: each live block carries a fill pattern derived
//!   from its id, verified in full before every free and realloc;
//! * `alloc_zeroed` returns zeroes, also for recycled (dirty) blocks;
//! * `realloc` keeps the prefix (`min(old, new)` bytes) and the alignment,
//!   whether it stays in its pool, moves between classes, or between pools
//!   and the system allocator;
//! * many thousands of mixed operations under several seeds.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};

use alloc_util::{assert_pattern, fill, layout, SplitMix64};
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

struct Block {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
}

fn check_aligned(ptr: *mut u8, layout: Layout, what: &str) {
    assert!(!ptr.is_null(), "{what}: null for {layout:?}");
    assert_eq!(
        ptr as usize % layout.align(),
        0,
        "{what}: {ptr:p} misaligned for {layout:?}"
    );
}

fn random_size(rng: &mut SplitMix64) -> usize {
    match rng.below(10) {
        0..=5 => rng.range(1, 512), // small: pools
        6 => rng.range(500, 530),   // around the threshold
        7 => 1 << rng.range(0, 11), // powers of two up to 2,048
        _ => rng.range(513, 2048),  // large: system allocator
    }
}

fn random_align(rng: &mut SplitMix64) -> usize {
    if rng.percent(75) {
        1 << rng.range(0, 4) // 1..=16
    } else {
        1 << rng.range(5, 12) // 32..=4,096
    }
}

fn free_block(b: Block) {
    // SAFETY: `b.ptr` is live with `b.layout` and holds the pattern.
    unsafe {
        assert_pattern(b.ptr, b.layout.size(), b.id, "before dealloc");
        GLOBAL.dealloc(b.ptr, b.layout);
    }
}

/// `ops` random operations with seed `seed`, at most `max_live` blocks live.
fn random_ops(seed: u64, ops: usize, max_live: usize) {
    let mut rng = SplitMix64::new(seed);
    let mut live: Vec<Block> = Vec::new();
    for id in (seed << 32..).take(ops) {
        let roll = rng.below(100);
        if live.is_empty() || (roll < 40 && live.len() < max_live) {
            // alloc or alloc_zeroed
            let l = layout(random_size(&mut rng), random_align(&mut rng));
            let zeroed = rng.percent(30);
            // SAFETY: non-zero size.
            let ptr = unsafe {
                if zeroed {
                    GLOBAL.alloc_zeroed(l)
                } else {
                    GLOBAL.alloc(l)
                }
            };
            check_aligned(ptr, l, if zeroed { "alloc_zeroed" } else { "alloc" });
            if zeroed {
                // SAFETY: the block holds `l.size()` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, l.size()) };
                if let Some(off) = bytes.iter().position(|&b| b != 0) {
                    panic!(
                        "alloc_zeroed {l:?} at {ptr:p}: byte {off} is {:#x}",
                        bytes[off]
                    );
                }
            }
            // SAFETY: the block holds `l.size()` bytes.
            unsafe { fill(ptr, l.size(), id) };
            live.push(Block { ptr, layout: l, id });
        } else if roll < 70 {
            // realloc a random live block
            let i = rng.below(live.len());
            let b = &mut live[i];
            let old = b.layout.size();
            let new_size = random_size(&mut rng);
            // SAFETY: the block is live with its layout; new_size > 0.
            let new = unsafe {
                assert_pattern(b.ptr, old, b.id, "before realloc");
                GLOBAL.realloc(b.ptr, b.layout, new_size)
            };
            let new_layout = layout(new_size, b.layout.align());
            check_aligned(new, new_layout, "realloc");
            // SAFETY: the new block holds `new_size >= min(old, new_size)` bytes.
            unsafe {
                assert_pattern(new, old.min(new_size), b.id, "prefix after realloc");
                fill(new, new_size, id);
            }
            *b = Block {
                ptr: new,
                layout: new_layout,
                id,
            };
        } else {
            let i = rng.below(live.len());
            free_block(live.swap_remove(i));
        }
    }
    // Verify every survivor once more (catches late overlap), then free.
    for b in live {
        free_block(b);
    }
}

#[test]
fn random_ops_several_seeds() {
    for seed in [1u64, 2, 0xDEAD_BEEF, 0x1234_5678_9ABC] {
        random_ops(seed, 60_000, 1_500);
    }
}

#[test]
fn random_ops_small_live_set() {
    // Few live blocks: blocks are recycled quickly, pools empty and refill.
    for seed in [7u64, 8, 9] {
        random_ops(seed, 20_000, 16);
    }
}

#[test]
fn every_size_and_alignment() {
    let sizes = (1..=600)
        .chain((601..=2048).step_by(13))
        .chain([1024, 2048]);
    let mut id = 0;
    for size in sizes {
        for shift in 0..=12 {
            let l = layout(size, 1 << shift);
            let mut blocks = Vec::with_capacity(3);
            for _ in 0..3 {
                id += 1;
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(l) };
                check_aligned(p, l, "alloc");
                // SAFETY: `p` holds `size` bytes.
                unsafe { fill(p, size, id) };
                blocks.push((p, id));
            }
            for (p, id) in blocks {
                // SAFETY: live, patterned, with layout `l`.
                unsafe {
                    assert_pattern(p, size, id, "every_size_and_alignment");
                    GLOBAL.dealloc(p, l);
                }
            }
        }
    }
}

#[test]
fn alloc_zeroed_zeroes_recycled_blocks() {
    for size in (1..=512).step_by(5).chain([16, 512, 513, 1000, 2048]) {
        for align in [1, 8, 16, 64, 256] {
            let l = layout(size, align);
            // Dirty a batch of blocks, free them, then ask for zeroed ones:
            // they come from the same pools, recycled.
            let dirty: Vec<*mut u8> = (0..64)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let p = unsafe { GLOBAL.alloc(l) };
                    check_aligned(p, l, "alloc");
                    // SAFETY: `p` holds `size` bytes.
                    unsafe { p.write_bytes(0xA5, size) };
                    p
                })
                .collect();
            for &p in dirty.iter().rev() {
                // SAFETY: live with `l`.
                unsafe { GLOBAL.dealloc(p, l) };
            }
            let zeroed: Vec<*mut u8> = (0..64)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let p = unsafe { GLOBAL.alloc_zeroed(l) };
                    check_aligned(p, l, "alloc_zeroed");
                    // SAFETY: `p` holds `size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                    assert!(
                        bytes.iter().all(|&b| b == 0),
                        "alloc_zeroed({size}, {align}) at {p:p} returned dirty bytes"
                    );
                    p
                })
                .collect();
            for p in zeroed {
                // SAFETY: live with `l`.
                unsafe { GLOBAL.dealloc(p, l) };
            }
        }
    }
}

#[test]
fn realloc_across_classes_and_to_system_keeps_prefix() {
    // Chains that cross the 512-byte threshold both ways, with alignments
    // pools honour and ones they do not.
    let chains: &[&[usize]] = &[
        &[1, 16, 17, 512, 513, 4096, 512, 1, 2048, 8],
        &[512, 400, 380, 300, 100, 16, 15, 1],
        &[100, 96, 95, 90, 80, 50, 512, 384, 513, 511],
        &[33, 3000, 40, 600, 64, 65],
    ];
    let mut id = 1 << 40;
    for &align in &[1usize, 8, 16, 32, 64, 128, 512, 1024, 4096] {
        for chain in chains {
            id += 1;
            let mut l = layout(chain[0], align);
            // SAFETY: non-zero size.
            let mut p = unsafe { GLOBAL.alloc(l) };
            check_aligned(p, l, "alloc");
            // SAFETY: `p` holds `l.size()` bytes.
            unsafe { fill(p, l.size(), id) };
            for &new_size in &chain[1..] {
                // SAFETY: live with `l`.
                let q = unsafe { GLOBAL.realloc(p, l, new_size) };
                let nl = layout(new_size, align);
                check_aligned(q, nl, "realloc");
                // SAFETY: `q` holds `new_size` bytes.
                unsafe {
                    assert_pattern(q, l.size().min(new_size), id, "realloc chain prefix");
                    id += 1;
                    fill(q, new_size, id);
                }
                p = q;
                l = nl;
            }
            // SAFETY: live with `l`.
            unsafe {
                assert_pattern(p, l.size(), id, "end of realloc chain");
                GLOBAL.dealloc(p, l);
            }
        }
    }
}

#[test]
fn std_alloc_functions_route_to_pymalloc() {
    // The same through `std::alloc::{alloc, realloc, dealloc}`, i.e. the
    // global allocator as std code reaches it.
    let l = layout(24, 8);
    // SAFETY: non-zero size; each pointer is used with its own layout.
    unsafe {
        let p = std::alloc::alloc(l);
        check_aligned(p, l, "std::alloc::alloc");
        fill(p, 24, 99);
        let q = std::alloc::realloc(p, l, 1000);
        check_aligned(q, layout(1000, 8), "std::alloc::realloc");
        assert_pattern(q, 24, 99, "std realloc prefix");
        std::alloc::dealloc(q, layout(1000, 8));
    }
}
