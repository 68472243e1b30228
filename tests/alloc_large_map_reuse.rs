//! A freed mapped block (1.75 MiB and more, `src/alloc/large_map.rs`) is
//! kept for the next such request (review 7: a 2 MiB scratch buffer
//! allocated and freed in a loop cost four system calls and a fresh huge
//! page per round, 3 to 20 times glibc's time), reported in
//! `large_bytes_cached`, and returned by `release_free_memory()`; a longer
//! kept mapping is split, and a block grows into the kept rest.
//!
//! One test in this file, so that no other thread uses the kept mappings.

use std::alloc::{GlobalAlloc, Layout};

use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const MIB: usize = 1 << 20;

/// Minor page faults of the calling thread so far.
fn thread_faults() -> i64 {
    // SAFETY: `rusage` is plain integers, for which all zeroes is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid `rusage` to fill.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

fn touch(p: *mut u8, len: usize, value: u8) {
    for i in (0..len).step_by(4096) {
        // SAFETY: `i < len`, inside the caller's live block.
        unsafe { p.add(i).write(value) };
    }
}

#[test]
fn a_freed_mapping_serves_the_next_request_until_a_release() {
    if cfg!(pymem_asan) || cfg!(feature = "override") {
        // No mapped blocks there: every large block is the system allocator's.
        return;
    }
    release_free_memory();
    let base = alloc_stats().large_bytes_cached;
    let l = Layout::from_size_align(2 * MIB, 8).unwrap();
    // SAFETY: non-zero sizes; each block freed with its layout.
    unsafe {
        let p = GLOBAL.alloc(l);
        assert!(!p.is_null());
        touch(p, l.size(), 7);
        GLOBAL.dealloc(p, l);
        let kept = alloc_stats().large_bytes_cached;
        assert!(
            kept >= base + 2 * MIB,
            "a freed 2 MiB block is not kept: large_bytes_cached {base} -> {kept}"
        );

        // The next request of the size takes it: its pages are resident,
        // so touching them faults nothing; zeroed when asked.
        let faults = thread_faults();
        let q = GLOBAL.alloc_zeroed(l);
        assert_eq!(q, p, "the kept mapping was not reused");
        for i in (0..l.size()).step_by(4096).chain([l.size() - 1]) {
            assert_eq!(q.add(i).read(), 0, "byte {i} of a reused zeroed block");
        }
        touch(q, l.size(), 9);
        let faults = thread_faults() - faults;
        assert_eq!(faults, 0, "a reused mapping faulted {faults} times");
        assert!(alloc_stats().large_bytes_cached < base + 2 * MIB);

        // Another size: the kept mapping is resized to it, contents
        // unspecified, usable to its end.
        GLOBAL.dealloc(q, l);
        let l4 = Layout::from_size_align(4 * MIB, 8).unwrap();
        let r = GLOBAL.alloc_zeroed(l4);
        assert!(!r.is_null());
        assert_eq!(r as usize % (2 * MIB), 0);
        for i in (0..l4.size()).step_by(4096).chain([l4.size() - 1]) {
            assert_eq!(r.add(i).read(), 0, "byte {i} of a resized zeroed block");
        }
        touch(r, l4.size(), 3);
        GLOBAL.dealloc(r, l4);
    }
    assert!(alloc_stats().large_bytes_cached >= base + 4 * MIB);
    release_free_memory();
    let after = alloc_stats().large_bytes_cached;
    assert!(
        after < 4 * MIB,
        "release_free_memory() left {after} bytes of kept mappings"
    );

    // A `Vec` grown by doubling, dropped, grown again: the second time,
    // the first step takes the start of the kept 8 MiB and the next
    // grows into its rest, in place and with its pages resident.
    let l8 = Layout::from_size_align(8 * MIB, 8).unwrap();
    let l2 = Layout::from_size_align(2 * MIB, 8).unwrap();
    // SAFETY: non-zero sizes; each block freed or resized with its layout.
    unsafe {
        let p = GLOBAL.alloc(l8);
        assert!(!p.is_null());
        touch(p, l8.size(), 1);
        GLOBAL.dealloc(p, l8);
        let faults = thread_faults();
        let q = GLOBAL.alloc(l2);
        assert_eq!(q, p, "the kept 8 MiB mapping was not split");
        touch(q, l2.size(), 2);
        let r = GLOBAL.realloc(q, l2, 4 * MIB);
        assert_eq!(r, p, "the block did not grow into the kept rest");
        for i in (0..l2.size()).step_by(4096) {
            assert_eq!(r.add(i).read(), 2, "byte {i} after growing in place");
        }
        touch(r, 4 * MIB, 3);
        let faults = thread_faults() - faults;
        assert_eq!(faults, 0, "the split and the growth faulted {faults} times");
        GLOBAL.dealloc(r, Layout::from_size_align(4 * MIB, 8).unwrap());
    }
    release_free_memory();
    let after = alloc_stats().large_bytes_cached;
    assert!(after < 4 * MIB, "release_free_memory() left {after} bytes");
}
