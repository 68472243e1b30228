//! A fresh pool hands out its never-used blocks by bumping an offset: the
//! allocator neither writes nor reads a block before handing it out (no
//! free list is carved through the pool first), so a block's memory is
//! first touched by the program it is handed to.
//!
//! Its own test binary, with one test: no other thread of the process
//! allocates blocks of the class used here, so the pool it sees is its own.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};

use alloc_util::{pool_of, POOL_SIZE};
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// A size whose class nothing else in this binary allocates: 35 blocks of
/// 464 bytes per 16 KiB pool, nine of them starting in its first page.
const SIZE: usize = 464;
const MARK: u64 = 0x5EED_B10C_CAFE_F00D;

#[test]
#[cfg_attr(
    pymem_asan,
    ignore = "writes pool memory not handed out, which AddressSanitizer poisons"
)]
fn a_fresh_pool_hands_out_blocks_it_never_wrote() {
    if pymem::debug_allocator_enabled() {
        // The debug hooks put guards around each block: other sizes.
        return;
    }
    let layout = Layout::from_size_align(SIZE, 16).unwrap();
    let per_pool = POOL_SIZE / SIZE;
    // Reserved up front, so that nothing allocates or frees in between.
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(per_pool);
    // SAFETY: a valid, non-zero layout.
    let first = unsafe { PyMalloc.alloc(layout) };
    assert!(!first.is_null());
    assert_eq!(
        first as usize,
        pool_of(first),
        "the first block of a fresh pool"
    );
    blocks.push(first);
    // Mark every other block of the pool, before the allocator hands it
    // out: a null first word (where a free-list link would be) and a mark
    // in the second.
    for k in 1..per_pool {
        // SAFETY: `first` starts a 16 KiB pool of this allocator, mapped
        // read-write, of which block `k` (`k * SIZE + SIZE <= POOL_SIZE`)
        // is neither handed out nor, in this allocator, read before it is:
        // that is what the test checks. (Carved into a free list, blocks of
        // the first page would hold links here: nulling them would cut the
        // list, and the blocks handed out below would skip the rest of the
        // page.)
        unsafe {
            let block = first.add(k * SIZE).cast::<u64>();
            block.write(0);
            block.add(1).write(MARK);
        }
    }
    for k in 1..per_pool {
        // SAFETY: as above.
        let p = unsafe { PyMalloc.alloc(layout) };
        assert!(!p.is_null());
        blocks.push(p);
        // In address order, each block untouched since it was marked.
        assert_eq!(p as usize, first as usize + k * SIZE, "block {k}");
        // SAFETY: `p` was just handed out with `SIZE >= 16` bytes.
        let (link, mark) = unsafe { (p.cast::<u64>().read(), p.cast::<u64>().add(1).read()) };
        assert_eq!(
            (link, mark),
            (0, MARK),
            "block {k} was written before it was handed out"
        );
    }
    for &p in &blocks {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { PyMalloc.dealloc(p, layout) };
    }
}
