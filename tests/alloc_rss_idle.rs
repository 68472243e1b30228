//! Memory goes back to the OS without `release_free_memory()`, as in
//! CPython: a thread that frees a large spike of small blocks and then
//! carries on with a small, steady working set must not keep the spike's
//! empty arenas mapped and resident (DESIGN.md: "a program that frees
//! everything gives its memory back"; issue 2 item 5: an empty arena is
//! unmapped, keeping at most one spare).
//!
//! Allocates 256 MiB of 64-byte blocks, frees them all, then keeps working
//! with at most 100 live blocks of 8..=32 bytes for about a second (long
//! past any short retention delay, with pauses), and checks that `VmRSS`
//! is back within 8 MiB of where it started. One test in its own binary,
//! single-threaded, so nothing else disturbs the resident set.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::time::Duration;

use alloc_util::{rss_kib, SplitMix64};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn a_freed_spike_is_returned_while_the_thread_keeps_working() {
    release_free_memory();
    let rss0 = rss_kib();
    let spike: Vec<Box<[u8; 64]>> = (0..4_000_000).map(|_| Box::new([1u8; 64])).collect();
    let rss1 = rss_kib();
    assert!(
        rss1 > rss0 + 200 * 1024,
        "the spike is resident: {rss0} -> {rss1} KiB"
    );
    drop(spike);

    // A steady small working set: every allocation can be served from
    // blocks freed a moment before.
    let mut rng = SplitMix64::new(3);
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(101);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(250));
        for _ in 0..250_000 {
            live.push(vec![7u8; 8 * rng.range(1, 4)]);
            if live.len() > 100 {
                live.swap_remove(rng.below(100));
            }
        }
    }
    let rss2 = rss_kib();
    let arenas = alloc_stats().arenas_in_use;
    assert!(
        rss2 <= rss0 + 8 * 1024,
        "a second after freeing a 256 MiB spike, with the thread still allocating, \
         VmRSS is {rss2} KiB ({rss0} KiB before, {rss1} KiB at the peak) and {arenas} \
         arenas are mapped: empty arenas were not returned"
    );
}
