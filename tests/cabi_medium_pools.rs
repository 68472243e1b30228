//! The medium classes (C's `malloc` only, 528..2,048 bytes) give an
//! emptied pool back to its arena instead of keeping it per class: a
//! thread that allocates and frees a block in each of the 96 classes must
//! not be left holding 96 empty pools, each with a resident page or more
//! (`threadchurn` of bench/c: peak RSS 1.9x glibc's with them kept).

#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

use pymem::__cabi::{free, malloc};

const SMALL_CLASSES: usize = 32;

fn medium_pools() -> usize {
    let stats = pymem::alloc_stats();
    stats
        .per_class
        .iter()
        .skip(SMALL_CLASSES)
        .map(|c| c.pools)
        .sum()
}

#[test]
fn a_thread_keeps_no_empty_medium_pools() {
    std::thread::spawn(|| {
        for size in (520..=2040).step_by(16) {
            // SAFETY: malloc and free of the C API, each block freed once.
            unsafe {
                let p = malloc(size);
                assert!(!p.is_null());
                p.cast::<u8>().write_bytes(1, size);
                free(p);
            }
        }
        // The thread is still alive: its heap would hold any kept pool.
        let pools = medium_pools();
        assert!(
            pools <= 1,
            "{pools} empty medium pools kept after one block in each class"
        );
    })
    .join()
    .unwrap();
}
