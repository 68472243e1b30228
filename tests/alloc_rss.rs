//! Memory really goes back to the OS.
//!
//! Allocates 256 MiB of 64-byte blocks (4M blocks, each written, chained
//! through their first word so no side table is needed), checks the resident
//! set grew by at least that much, frees them all, calls
//! `release_free_memory()`, and checks that resident memory (`VmRSS` in
//! `/proc/self/status`) falls back to within 5 MiB of what it was before,
//! and that the arenas were unmapped.
//!
//! This file holds a single test so that no other test disturbs the
//! resident set; everything runs on one thread.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::GlobalAlloc;

use alloc_util::{layout, rss_kib};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const BLOCK: usize = 64;
const TOTAL: usize = 256 << 20;
const BLOCKS: usize = TOTAL / BLOCK;

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn freeing_everything_returns_resident_memory() {
    let l = layout(BLOCK, 8);
    // Settle first, so "before" is what the process needs anyway.
    release_free_memory();
    let rss0 = rss_kib();
    let arenas0 = alloc_stats().arenas_in_use;

    // A singly linked list through the blocks: word 0 is the previous
    // block, word 1 the block's index, the rest a byte pattern.
    let mut head: *mut u8 = std::ptr::null_mut();
    for i in 0..BLOCKS {
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(l) };
        assert!(!p.is_null(), "allocation {i} of {BLOCKS} failed");
        // SAFETY: the block holds 64 bytes, 8-aligned.
        unsafe {
            p.cast::<*mut u8>().write(head);
            p.cast::<usize>().add(1).write(i);
            p.add(16).write_bytes(i as u8, BLOCK - 16);
        }
        head = p;
    }
    let rss1 = rss_kib();
    let stats = alloc_stats();
    assert!(
        rss1 >= rss0 + (TOTAL as u64 >> 10),
        "256 MiB written but resident set only {rss0} KiB -> {rss1} KiB"
    );
    assert!(stats.small_blocks_in_use >= BLOCKS);
    let arenas_full = stats.arenas_in_use;
    drop(stats);

    // Free in list order (newest first), checking each block on the way.
    let mut expect = BLOCKS;
    while !head.is_null() {
        expect -= 1;
        // SAFETY: a live block of the list.
        unsafe {
            let next = head.cast::<*mut u8>().read();
            let index = head.cast::<usize>().add(1).read();
            assert_eq!(index, expect, "block list corrupted");
            assert_eq!(
                head.add(BLOCK - 1).read(),
                expect as u8,
                "block {index} corrupted"
            );
            GLOBAL.dealloc(head, l);
            head = next;
        }
    }
    assert_eq!(expect, 0);

    let released = release_free_memory();
    let rss2 = rss_kib();
    let s = alloc_stats();
    eprintln!(
        "VmRSS: {rss0} KiB before, {rss1} KiB with 256 MiB allocated, {rss2} KiB after \
         free + release_free_memory() ({released} bytes released by the call; arenas \
         {arenas0} -> {arenas_full} -> {})",
        s.arenas_in_use
    );
    assert!(
        rss2 <= rss0 + 5 * 1024,
        "resident set did not fall back: {rss0} KiB before, {rss1} KiB at peak, {rss2} KiB \
         after freeing everything and release_free_memory() (limit: before + 5 MiB)"
    );
    assert!(
        s.arenas_in_use <= arenas0 + 1,
        "{} arenas still mapped after release_free_memory(), {arenas0} before",
        s.arenas_in_use
    );
    assert!(s.arenas_freed_total >= arenas_full - arenas0 - 1);
}
