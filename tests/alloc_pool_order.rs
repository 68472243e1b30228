//! A full pool that gets a block back rejoins its class list at the back,
//! not the front: the class keeps allocating from the pool it was using,
//! and reaches the pool that was full only after that, with every block
//! freed into it in the meantime. (At the front, each block freed into a
//! full pool was handed out again at once, and the pool ran dry again at
//! the next allocation: one trip through the slow paths per block, about
//! one allocation in three when the live blocks fill whole pools.)
//!
//! Its own test binary, with one test: no other thread of the process
//! allocates blocks of the class used here, so the pools it sees are its
//! own.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};

use alloc_util::{pool_of, POOL_SIZE};
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// A size whose class nothing else in this binary allocates (see
/// tests/alloc_pool_reuse.rs).
const SIZE: usize = 496;
const MAX_PER_POOL: usize = POOL_SIZE / SIZE;

fn alloc(layout: Layout) -> *mut u8 {
    // SAFETY: a valid, non-zero layout.
    let p = unsafe { PyMalloc.alloc(layout) };
    assert!(!p.is_null());
    p
}

#[test]
fn a_full_pool_given_blocks_back_is_used_after_the_current_one() {
    if pymem::debug_allocator_enabled() {
        // The debug hooks put guards around each block: other sizes.
        return;
    }
    let layout = Layout::from_size_align(SIZE, 16).unwrap();
    // Reserved up front, so that nothing allocates or frees in between.
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(8 * MAX_PER_POOL);
    // Allocate until three pools have been used: A and B full, C (the
    // class's current pool) with a few blocks handed out.
    let mut pools: Vec<usize> = Vec::new();
    loop {
        let p = alloc(layout);
        blocks.push(p);
        if !pools.contains(&pool_of(p)) {
            pools.push(pool_of(p));
        }
        if pools.len() == 3 && blocks.iter().filter(|&&b| pool_of(b) == pools[2]).count() == 3 {
            break;
        }
    }
    let (a, b, c) = (pools[0], pools[1], pools[2]);
    let per_pool = blocks.iter().filter(|&&p| pool_of(p) == a).count();
    assert!(per_pool >= 30, "A is full: {per_pool} blocks");
    let c_free = per_pool - 3;
    // Three blocks back to A, then two to B: both were full.
    let first_in = |pool: usize, k: usize| -> Vec<*mut u8> {
        blocks
            .iter()
            .copied()
            .filter(|&p| pool_of(p) == pool)
            .take(k)
            .collect()
    };
    let (back_to_a, back_to_b) = (first_in(a, 3), first_in(b, 2));
    blocks.retain(|p| !back_to_a.contains(p) && !back_to_b.contains(p));
    for &p in back_to_a.iter().chain(&back_to_b) {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { PyMalloc.dealloc(p, layout) };
    }
    // The class goes on with C until it is used up, then takes A's three
    // blocks, then B's two.
    let mut order = Vec::new();
    for _ in 0..c_free + 5 {
        let p = alloc(layout);
        blocks.push(p);
        order.push(pool_of(p));
    }
    let expected: Vec<usize> = std::iter::repeat_n(c, c_free)
        .chain(std::iter::repeat_n(a, 3))
        .chain(std::iter::repeat_n(b, 2))
        .collect();
    let name = |pool: usize| match pool {
        p if p == a => "A",
        p if p == b => "B",
        p if p == c => "C",
        _ => "another pool",
    };
    assert_eq!(
        order.iter().map(|&p| name(p)).collect::<Vec<_>>(),
        expected.iter().map(|&p| name(p)).collect::<Vec<_>>(),
        "C used up first, then the pools that were full, in the order they got blocks back"
    );
    // The blocks are usable: write each whole, then check and free them.
    // SAFETY: every block is live, holds SIZE bytes, was allocated by
    // PyMalloc with `layout` and is not used after this call.
    unsafe { alloc_util::fill_check_and_free(&PyMalloc, &blocks, SIZE, layout) };
}
