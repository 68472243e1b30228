//! A thread that exits parks its heap. Without a background purge the
//! parked heap keeps nothing empty (issue 8: no thread would ever return
//! it if the others went idle). With one, the heap keeps its empty arenas
//! (retired) and the next thread to start adopts the heap and takes them
//! back warm: thread churn no longer pays an `munmap` at every exit and an
//! `mmap` and fresh page faults at every start (issue 11, `threadchurn` of
//! bench/c). `release_free_memory()` still returns them.
//!
//! One test: the background purge is process-wide state.

use pymem::{alloc_stats, purge_in_background, release_free_memory, PyMalloc};
use std::time::Duration;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// Live small blocks a worker builds: about 3.7 MB of 112-byte blocks,
/// so several 1 MiB arenas.
const BLOCKS: usize = 32 * 1024;

/// Fills several arenas with small blocks, frees them all, and exits.
fn worker() {
    let blocks: Vec<Box<[u8; 112]>> = (0..BLOCKS).map(|i| Box::new([i as u8; 112])).collect();
    assert_eq!(blocks[BLOCKS - 1][0], (BLOCKS - 1) as u8);
    drop(blocks);
}

#[test]
fn an_exited_threads_arenas_are_returned_or_reused_by_the_next_thread() {
    // No background purge: nothing empty stays in a parked heap. (Review
    // finding: a heap parked with 45 MB of empty arenas kept them for as
    // long as every other thread stayed idle.)
    let start = alloc_stats();
    std::thread::spawn(worker).join().unwrap();
    let parked = alloc_stats();
    let mapped = parked.arenas_allocated_total - start.arenas_allocated_total;
    assert!(mapped >= 3, "the worker mapped {mapped} arenas");
    assert!(
        parked.arenas_freed_total >= start.arenas_freed_total + mapped,
        "parking kept arenas without a background purge: {parked:?}"
    );
    assert_eq!(parked.arenas_retired, 0, "{parked:?}");

    // With a background purge (whose interval is far longer than this
    // test), parking keeps them for the next thread.
    purge_in_background(Some(Duration::from_secs(600)));
    let start = alloc_stats();
    std::thread::spawn(worker).join().unwrap();
    let parked = alloc_stats();
    let mapped_by_first = parked.arenas_allocated_total - start.arenas_allocated_total;
    assert!(
        mapped_by_first >= 3,
        "the first worker mapped {mapped_by_first} arenas"
    );
    // Parking returned none of them: they stay retired for the next thread.
    assert_eq!(
        parked.arenas_freed_total, start.arenas_freed_total,
        "parking the exited thread's heap unmapped its arenas"
    );
    assert!(parked.arenas_retired >= 2, "{parked:?}");
    assert!(parked.heaps_parked >= 1, "{parked:?}");

    // The next thread adopts the heap and builds the same working set in
    // the arenas it retired: (almost) nothing new is mapped.
    std::thread::spawn(worker).join().unwrap();
    let second = alloc_stats();
    let mapped_by_second = second.arenas_allocated_total - parked.arenas_allocated_total;
    assert!(
        mapped_by_second <= 1,
        "the second worker mapped {mapped_by_second} arenas (the first {mapped_by_first})"
    );

    // Retained, not leaked: everything empty goes back on request.
    release_free_memory();
    let released = alloc_stats();
    assert_eq!(released.arenas_retired, 0, "{released:?}");
    assert!(
        released.arenas_freed_total >= second.arenas_freed_total + 2,
        "{released:?}"
    );
    purge_in_background(None);
}
