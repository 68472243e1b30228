//! A pool slot given back to its arena with every block free keeps its
//! free list for its next use by the same size class: the blocks come back
//! in the order they were freed, not carved (linked) again from the start
//! of the slot. This is what a producer whose blocks another thread frees
//! lives on (its pools come back whole, one after the other).
//!
//! Its own test binary, with one test: no other thread of the process
//! allocates blocks of the class used here, so the pool slots it sees are
//! its own.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};

use alloc_util::{pool_of, POOL_SIZE};
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// A size whose class nothing else in this binary allocates: 33 blocks of
/// 496 bytes per 16 KiB pool (32 of 512 under AddressSanitizer, whose
/// redzone moves the request up a class).
const SIZE: usize = 496;
const MAX_PER_POOL: usize = POOL_SIZE / SIZE;

#[test]
fn a_pool_given_back_whole_is_reused_with_its_free_list() {
    if pymem::debug_allocator_enabled() {
        // The debug hooks put guards around each block: other sizes.
        return;
    }
    let layout = Layout::from_size_align(SIZE, 16).unwrap();
    // Reserved up front, so that nothing allocates or frees in between.
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(8 * MAX_PER_POOL);
    // Two full pools (A, then C) and a few blocks of a third (B), so that
    // A is not the class's only pool once it empties.
    for _ in 0..2 * MAX_PER_POOL + 5 {
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { PyMalloc.alloc(layout) };
        assert!(!p.is_null());
        blocks.push(p);
    }
    let a = pool_of(blocks[0]);
    // A fresh pool hands its blocks out in address order.
    let stride = blocks[1] as usize - blocks[0] as usize;
    let per_pool = POOL_SIZE / stride;
    let in_a: Vec<*mut u8> = blocks
        .iter()
        .copied()
        .filter(|&p| pool_of(p) == a)
        .collect();
    assert_eq!(in_a.len(), per_pool, "the first pool holds our blocks only");
    blocks.retain(|&p| pool_of(p) != a);
    // Freed in address order: the last one freed, at the head of A's free
    // list, is its highest block, where a fresh carve would start at the
    // lowest.
    let last_freed = *in_a.last().unwrap();
    assert_ne!(last_freed as usize, a);
    for &p in &in_a {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { PyMalloc.dealloc(p, layout) };
    }
    // A emptied and went back to its arena (it was not the only pool of
    // its class); the next pool the class needs, once B is used up, takes
    // A's slot again (the arena hands out the slot freed last).
    let mut first_in_a = None;
    for _ in 0..3 * per_pool {
        // SAFETY: as above.
        let p = unsafe { PyMalloc.alloc(layout) };
        assert!(!p.is_null());
        blocks.push(p);
        if pool_of(p) == a {
            first_in_a = Some(p);
            break;
        }
    }
    assert_eq!(
        first_in_a,
        Some(last_freed),
        "A's slot came back with its free list, the block freed last first"
    );
    // The blocks are usable: write each whole, then check and free them.
    // SAFETY: every block is live, holds SIZE bytes, was allocated by
    // PyMalloc with `layout` and is not used after this call.
    unsafe { alloc_util::fill_check_and_free(&PyMalloc, &blocks, SIZE, layout) };
}
