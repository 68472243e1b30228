//! Blocks of 1.75 MiB and more are PyMalloc's own mappings, aligned to
//! 2 MiB and advised for transparent huge pages (`src/alloc/large_map.rs`):
//!
//! * a large buffer is backed by huge pages once touched (with the
//!   kernel's THP mode `madvise` or `always`): before, the system
//!   allocator mapped it with no advice and, in `madvise` mode, it had
//!   none;
//! * `realloc` across the 1.75 MiB bound, both ways, and between mapped
//!   sizes keeps the contents; `alloc_zeroed` zeroes; page alignment is
//!   honoured; the statistics count the block;
//! * a freed block leaves the resident set at once, with no release call.

use std::alloc::{GlobalAlloc, Layout};

#[path = "common/alloc_util.rs"]
mod alloc_util;

use alloc_util::{check_pages as check, fill_pages as fill, smaps, thp_mode, vma_of};
use pymem::{alloc_stats, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const MIB: usize = 1 << 20;

/// Whether PyMalloc maps large blocks itself in this build: not under
/// AddressSanitizer (every block is the system allocator's there) nor
/// under `override` (every block outside the arenas is glibc's).
fn mapped_blocks_on() -> bool {
    !cfg!(pymem_asan) && !cfg!(feature = "override")
}

/// Resident KiB of the whole process (`VmRSS`).
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_large_buffer_gets_huge_pages() {
    match thp_mode().as_deref() {
        Some("always") | Some("madvise") if mapped_blocks_on() => {}
        other => {
            eprintln!("a_large_buffer_gets_huge_pages: skipped (THP mode {other:?})");
            return;
        }
    }
    // A hash table's worth: 7 MiB and a bit, touched throughout.
    let len = 7 * MIB + 300 * 1024;
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        v[i] = 1;
    }
    let addr = v.as_ptr() as usize;
    let vmas = smaps();
    let vma = vma_of(&vmas, addr).expect("the buffer is mapped");
    assert!(
        vma.flags.iter().any(|f| f == "hg"),
        "a {len}-byte buffer has no huge-page advice: {vma:?}"
    );
    assert!(
        vma.anon_huge_kb >= 2048,
        "a {len}-byte buffer, touched throughout, has no huge page: {vma:?}"
    );
    assert_eq!(addr % (2 * MIB), 0, "not aligned to a huge page");
    drop(vmas);
    assert_eq!(
        v.iter().map(|&b| b as usize).sum::<usize>(),
        len.div_ceil(4096)
    );
}

#[test]
fn realloc_across_the_bound_keeps_contents() {
    let align = 16;
    let small = Layout::from_size_align(MIB, align).unwrap();
    // SAFETY: non-zero sizes; every block is freed or resized with the
    // layout it has.
    unsafe {
        let p = GLOBAL.alloc(small);
        assert!(!p.is_null());
        fill(p, MIB, 7);
        // Up across the bound: a move into a mapping.
        let p = GLOBAL.realloc(p, small, 3 * MIB);
        assert!(!p.is_null());
        check(p, MIB, MIB, 7, "1 MiB -> 3 MiB");
        fill(p, 3 * MIB, 9);
        // Within mapped sizes, up (a remap, maybe a move of the pages)
        // and down.
        let l3 = Layout::from_size_align(3 * MIB, align).unwrap();
        let p = GLOBAL.realloc(p, l3, 9 * MIB + 5);
        assert!(!p.is_null());
        check(p, 3 * MIB, 3 * MIB, 9, "3 MiB -> 9 MiB");
        fill(p, 9 * MIB + 5, 11);
        let l9 = Layout::from_size_align(9 * MIB + 5, align).unwrap();
        let p = GLOBAL.realloc(p, l9, 2 * MIB);
        assert!(!p.is_null());
        check(p, 2 * MIB, 9 * MIB + 5, 11, "9 MiB -> 2 MiB");
        // Growth by a few bytes at a time past a whole number of pages
        // and through the 7/8 bound of a huge page's rounding.
        let mut size = 2 * MIB;
        let mut p = p;
        for step in [1, 4095, 4096, 100_000, MIB, 3 * MIB / 4] {
            let old = Layout::from_size_align(size, align).unwrap();
            p = GLOBAL.realloc(p, old, size + step);
            assert!(!p.is_null());
            check(p, 2 * MIB, 9 * MIB + 5, 11, "growth steps");
            size += step;
            p.add(size - 1).write(0xAB);
        }
        // Down across the bound: a move to the system allocator, and to
        // a pool block.
        let l = Layout::from_size_align(size, align).unwrap();
        let p = GLOBAL.realloc(p, l, MIB + 17);
        assert!(!p.is_null());
        check(p, MIB, 9 * MIB + 5, 11, "down to 1 MiB");
        let l = Layout::from_size_align(MIB + 17, align).unwrap();
        let p = GLOBAL.realloc(p, l, 100);
        assert!(!p.is_null());
        assert_eq!(p.read(), 11);
        GLOBAL.dealloc(p, Layout::from_size_align(100, align).unwrap());
    }
}

#[test]
fn growth_in_place_does_not_cross_the_bound() {
    // A system block grown towards the bound, then past it by small
    // steps: whatever room glibc left, the block must end up freed as a
    // mapping only if it is one (a wrong routing would unmap glibc's
    // memory or pass a mapping to `free`, and crash).
    let align = 16;
    for start in [MIB + MIB / 2, 7 * MIB / 4 - 64, 7 * MIB / 4] {
        // SAFETY: as above, each block freed with its layout.
        unsafe {
            let mut size = start;
            let mut p = GLOBAL.alloc(Layout::from_size_align(size, align).unwrap());
            assert!(!p.is_null());
            p.write(42);
            for _ in 0..40 {
                let old = Layout::from_size_align(size, align).unwrap();
                p = GLOBAL.realloc(p, old, size + 8);
                assert!(!p.is_null());
                size += 8;
                p.add(size - 1).write(1);
            }
            assert_eq!(p.read(), 42);
            GLOBAL.dealloc(p, Layout::from_size_align(size, align).unwrap());
        }
    }
}

#[test]
fn zeroed_aligned_and_counted() {
    let before = alloc_stats();
    let l = Layout::from_size_align(5 * MIB, 4096).unwrap();
    // SAFETY: non-zero size; freed with its layout.
    unsafe {
        let p = GLOBAL.alloc_zeroed(l);
        assert!(!p.is_null());
        assert_eq!(p as usize % 4096, 0);
        for i in (0..l.size()).step_by(4096) {
            assert_eq!(p.add(i).read(), 0);
        }
        let during = alloc_stats();
        assert!(
            during.large_bytes_in_use >= before.large_bytes_in_use + l.size()
                || during.large_allocs_in_use > before.large_allocs_in_use,
            "a 5 MiB block is not counted: {} -> {}",
            before.large_bytes_in_use,
            during.large_bytes_in_use
        );
        GLOBAL.dealloc(p, l);
    }
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's quarantine keeps freed memory resident")]
fn a_freed_block_leaves_the_resident_set() {
    let len = 64 * MIB;
    let v = vec![1u8; len];
    let with = rss_kb();
    assert_eq!(v[len / 2], 1);
    drop(v);
    let without = rss_kb();
    // Other tests of this file run beside this one and hold less than
    // 32 MiB at any time.
    assert!(
        with.saturating_sub(without) >= 32 * 1024,
        "freeing 64 MiB took the resident set from {with} to {without} KiB"
    );
}
