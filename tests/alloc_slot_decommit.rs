//! Free pool slots of arenas that stay in use give their pages back.
//!
//! An arena is unmapped only once its last pool goes back; until then the
//! slots its other pools gave back stayed resident whatever happened. Now
//! `release_free_memory()` decommits every free slot of the arenas in use
//! (`MADV_DONTNEED`), and the retention checks (ticks, passes) decommit the
//! slots that have stayed free for `DECOMMIT_MS` (a second). A decommitted
//! slot serves its next pool from fresh pages, as a new one.
//!
//! The thread fills a dozen pools of 64-byte blocks, keeps one block in
//! each arena they touched (so every arena stays in use) and frees the
//! rest: the other pools go back to their arena as free slots. Their pages
//! are read with `mincore`. One test in its own binary, so that no other
//! thread's pass decommits the slots before the first look.

use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::time::Duration;

use pymem::{release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const POOL: usize = 16 << 10;
const ARENA: usize = 1 << 20;
const PAGE: usize = 4096;

/// Resident pages of the pool slot at `base` (`POOL`-aligned).
fn resident_pages(base: usize) -> usize {
    let mut vec = [0u8; POOL / PAGE];
    // SAFETY: `base` is page-aligned and the slot lies in one of the
    // allocator's arenas, which stay mapped while a block of theirs is
    // live (the test keeps one per arena); `vec` has one byte per page.
    let rc = unsafe { libc::mincore(base as *mut libc::c_void, POOL, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

/// Allocates `POOL / 64 * pools` blocks of 64 bytes, each written, then
/// frees every block but the first of each arena. Returns the blocks kept
/// and the bases of the pools that emptied.
fn fill_and_thin(pools: usize) -> (Vec<*mut u8>, Vec<usize>) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut by_pool: BTreeMap<usize, Vec<*mut u8>> = BTreeMap::new();
    for i in 0..POOL / 64 * pools {
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: 64 bytes just allocated.
        unsafe { p.write_bytes(i as u8, 64) };
        by_pool.entry(p as usize & !(POOL - 1)).or_default().push(p);
    }
    let mut kept = Vec::new();
    let mut kept_arenas = Vec::new();
    let mut emptied = Vec::new();
    for (&base, blocks) in &by_pool {
        let arena = base & !(ARENA - 1);
        let keep_one = !kept_arenas.contains(&arena);
        if keep_one {
            kept_arenas.push(arena);
        }
        for (i, &p) in blocks.iter().enumerate() {
            if keep_one && i == 0 {
                kept.push(p);
            } else {
                // SAFETY: allocated above with `layout`, freed once.
                unsafe { dealloc(p, layout) };
            }
        }
        if !keep_one {
            emptied.push(base);
        }
    }
    (kept, emptied)
}

fn resident_in(slots: &[usize]) -> usize {
    slots.iter().map(|&s| resident_pages(s)).sum()
}

/// The slots are usable again after their pages went: blocks written and
/// read back.
fn reuse(pools: usize) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..POOL / 64 * pools)
        .map(|i| {
            // SAFETY: a non-zero-sized layout.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: 64 bytes just allocated.
            unsafe { p.write_bytes(i as u8 ^ 0x5a, 64) };
            p
        })
        .collect();
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: live 64-byte blocks written above.
        let bytes = unsafe { std::slice::from_raw_parts(p, 64) };
        assert!(bytes.iter().all(|&b| b == i as u8 ^ 0x5a));
    }
    for p in blocks {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { dealloc(p, layout) };
    }
}

fn free_kept(kept: Vec<*mut u8>) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    for p in kept {
        // SAFETY: allocated with `layout` by `fill_and_thin`, freed once.
        unsafe { dealloc(p, layout) };
    }
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn free_slots_of_arenas_in_use_are_decommitted() {
    std::thread::spawn(|| {
        // release_free_memory(): every free slot, at once.
        let (kept, emptied) = fill_and_thin(12);
        assert!(emptied.len() >= 8, "{} pools emptied", emptied.len());
        let before = resident_in(&emptied);
        assert!(
            before >= emptied.len() * (POOL / PAGE) / 2,
            "the emptied slots are resident before: {before} pages in {} slots",
            emptied.len()
        );
        release_free_memory();
        let after = resident_in(&emptied);
        assert!(
            after <= emptied.len(),
            "release_free_memory() left {after} of {before} pages of {} free slots resident",
            emptied.len()
        );
        reuse(12);
        free_kept(kept);

        // Slots free for DECOMMIT_MS (a second) go back at the next
        // retention check that visits the heap: here the background purge
        // thread's passes, as a guest. (This thread's own first check after
        // so long a pause would open its wake grace instead.)
        let (kept, emptied) = fill_and_thin(12);
        let before = resident_in(&emptied);
        assert!(before >= emptied.len() * (POOL / PAGE) / 2);
        pymem::purge_in_background(Some(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(1_400));
        pymem::purge_in_background(None);
        let after = resident_in(&emptied);
        assert!(
            after <= emptied.len(),
            "{after} of {before} pages of {} slots free for 1.4 s still resident",
            emptied.len()
        );
        reuse(12);
        free_kept(kept);
    })
    .join()
    .unwrap();
}
