//! In a process whose `malloc` is PyMalloc (the C entry points'
//! constructor, `prepare_glibc`, has run), an empty arena goes back after
//! 20 ms (`C_RETAIN_MS`), not the 200 ms a Rust program's arenas are kept
//! for: CPython under the preload alternates phases of small objects (our
//! arenas) with phases of large buffers (glibc's), and kept the arenas each
//! phase emptied resident while the next one grew glibc's side (peak RSS
//! 36 MiB against 32 MiB with its own pymalloc).
//!
//! The thread fills a few arenas through `malloc`, frees everything, waits
//! 80 ms (past 20, short of 200), and works a little (a tick of its heap
//! runs its retention check): the empty arenas must be gone. One test in
//! its own binary, as the flag is process-wide (with the test that
//! such a process maps no huge-page spans).

#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

use std::time::Duration;

#[path = "common/alloc_util.rs"]
mod alloc_util;

use pymem::__cabi::{free, malloc, prepare_glibc};

#[test]
fn empty_arenas_go_back_soon_under_the_c_entry_points() {
    // The two tests count and map arenas: one at a time.
    let _serial = alloc_util::serial();
    // What the preload's (and the `override` feature's) constructor runs.
    prepare_glibc();
    std::thread::spawn(|| {
        // The heap this thread adopts may hold the arenas the other test's
        // thread retired (parking keeps them for the next thread): start
        // from none, so that the 4 MiB below maps fresh arenas.
        pymem::release_free_memory();
        let before = pymem::alloc_stats();
        // 4 MiB of 64-byte blocks: several arenas.
        let blocks: Vec<usize> = (0..65_536)
            .map(|i| {
                // SAFETY: malloc of the C API; the block is written within its size.
                unsafe {
                    let p = malloc(64);
                    assert!(!p.is_null());
                    p.cast::<u8>().write_bytes(i as u8, 64);
                    p as usize
                }
            })
            .collect();
        let during = pymem::alloc_stats();
        assert!(
            during.arenas_in_use >= before.arenas_in_use + 3,
            "{} arenas before, {} with 4 MiB in use",
            before.arenas_in_use,
            during.arenas_in_use
        );
        for p in blocks {
            // SAFETY: each block allocated above, freed once.
            unsafe { free(p as *mut core::ffi::c_void) };
        }
        std::thread::sleep(Duration::from_millis(80));
        for _ in 0..2 * 4096 {
            // SAFETY: malloc and free of the C API, the block freed once.
            unsafe { free(malloc(24)) };
        }
        let after = pymem::alloc_stats();
        assert_eq!(
            after.arenas_retired, 0,
            "empty arenas still kept 80 ms after they emptied"
        );
        assert!(
            after.bytes_returned >= before.bytes_returned + (3 << 20),
            "{} bytes returned to the OS, from {}",
            after.bytes_returned,
            before.bytes_returned
        );
    })
    .join()
    .unwrap();
}

#[test]
fn no_huge_page_spans_under_the_c_entry_points() {
    // Brief retention unmaps a span soon after it empties, and each fresh
    // huge page may cost a compaction: a heap past 32 MiB keeps 4 KiB
    // pages here (where a Rust program's maps spans: alloc_huge_pages.rs).
    let _serial = alloc_util::serial();
    prepare_glibc();
    std::thread::spawn(|| {
        // 48 MiB of 256-byte blocks: past the 32 MiB from which a Rust
        // heap maps huge-page spans.
        let blocks: Vec<usize> = (0..(48 << 20) / 256)
            .map(|i| {
                // SAFETY: malloc of the C API; the block is written within its size.
                unsafe {
                    let p = malloc(256);
                    assert!(!p.is_null());
                    p.cast::<u8>().write_bytes(i as u8, 256);
                    p as usize
                }
            })
            .collect();
        let vmas = alloc_util::smaps();
        let advised = blocks
            .iter()
            .step_by(4096)
            .filter(|&&p| {
                alloc_util::vma_of(&vmas, p).is_some_and(|v| v.flags.iter().any(|f| f == "hg"))
            })
            .count();
        drop(vmas);
        for p in blocks {
            // SAFETY: each block allocated above, freed once.
            unsafe { free(p as *mut core::ffi::c_void) };
        }
        assert_eq!(advised, 0, "blocks in huge-page advised arenas");
    })
    .join()
    .unwrap();
}
