//! The kept mappings (src/alloc/large_map.rs, `KEPT`), from review 8:
//! blocks made from a split tail are aligned to 2 MiB as fresh ones are;
//! `large_bytes_cached` never wraps below zero while threads put and take;
//! a block that spans two kernel mappings grows by a copy that keeps its
//! contents; threads allocating, resizing and freeing mapped blocks while
//! another empties the slots never share memory. One test runs the four
//! in turn: they share the process-wide slots (and the statistics the
//! tests of alloc_large_map.rs read, so they are not in that file).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[path = "common/alloc_util.rs"]
mod alloc_util;

use alloc_util::{check_pages as check, fill_pages as fill};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const MIB: usize = 1 << 20;
const HUGE: usize = 2 * MIB;

fn on() -> bool {
    !cfg!(pymem_asan) && !cfg!(feature = "override")
}

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 4096).unwrap()
}

/// The docs promise every mapped block is aligned to 2 MiB (huge pages).
/// A split of a kept mapping at a page-rounded length keeps a tail that is
/// not, and the next block served from that tail is not aligned either.
fn block_from_a_split_tail_is_2mib_aligned() {
    if !on() {
        return;
    }
    release_free_memory();
    // SAFETY: non-zero sizes; each block freed with its layout.
    unsafe {
        let big = GLOBAL.alloc(lay(8 * MIB));
        assert!(!big.is_null());
        big.write_bytes(1, 8 * MIB);
        GLOBAL.dealloc(big, lay(8 * MIB));
        // 2.5 MiB: mapping_len rounds to pages (2.5 <= 4 - 4/8), so the
        // kept tail starts at big + 2.5 MiB.
        let a = GLOBAL.alloc(lay(5 * MIB / 2));
        let b = GLOBAL.alloc(lay(2 * MIB));
        eprintln!("big={big:p} a={a:p} b={b:p}");
        let bad = [a, b].iter().filter(|p| **p as usize % HUGE != 0).count();
        GLOBAL.dealloc(a, lay(5 * MIB / 2));
        GLOBAL.dealloc(b, lay(2 * MIB));
        release_free_memory();
        assert_eq!(
            bad, 0,
            "a mapped block not aligned to 2 MiB: a={a:p} b={b:p}"
        );
    }
}

/// KEPT_BYTES is added after the slot is published and subtracted after
/// it is taken: a taker between the two makes it wrap below zero, and
/// `large_bytes_cached` reports ~2^64 bytes.
fn large_bytes_cached_never_wraps() {
    if !on() {
        return;
    }
    release_free_memory();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for t in 0..12 {
        let stop = stop.clone();
        hs.push(std::thread::spawn(move || {
            let l = lay(2 * MIB + t * 4096);
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: a non-zero size, freed with its layout.
                unsafe {
                    let p = GLOBAL.alloc(l);
                    assert!(!p.is_null());
                    p.write(t as u8);
                    GLOBAL.dealloc(p, l);
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        let worst = worst.clone();
        hs.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let c = alloc_stats().large_bytes_cached;
                worst.fetch_max(c, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    release_free_memory();
    let w = worst.load(Ordering::Relaxed);
    assert!(
        w <= 64 * MIB,
        "large_bytes_cached reported {w} bytes (cap is 64 MiB)"
    );
}

fn mapped(p: usize, len: usize) -> bool {
    // Every byte of p..p+len lies in some line of /proc/self/maps.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut v: Vec<(usize, usize)> = maps
        .lines()
        .map(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect();
    v.sort();
    let mut at = p;
    for (a, b) in v {
        if a <= at && at < b {
            at = b;
        }
    }
    at >= p + len
}

fn vmas_in(p: usize, len: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            a < p + len && b > p
        })
        .count()
}

/// A block that grew into a kept tail lying in another kernel mapping (the
/// user advised its buffer, or the tail came from a mremap move) spans two
/// mappings; its next growth takes the copy fallback. Contents must
/// survive and the new block must be mapped.
fn growth_across_two_kernel_mappings_keeps_contents() {
    if !on() {
        return;
    }
    release_free_memory();
    // SAFETY: non-zero sizes; each block resized and freed with its layout;
    // the advice is on the caller's own live block.
    unsafe {
        let big = GLOBAL.alloc(lay(8 * MIB));
        big.write_bytes(0, 8 * MIB);
        GLOBAL.dealloc(big, lay(8 * MIB));
        let b = GLOBAL.alloc(lay(2 * MIB));
        assert_eq!(b, big, "the kept mapping is reused");
        // The user's own advice on its own buffer splits the kernel mapping.
        assert_eq!(libc::madvise(b.cast(), 2 * MIB, libc::MADV_NOHUGEPAGE), 0);
        for i in 0..2 * MIB {
            b.add(i).write((i % 251) as u8);
        }
        let b2 = GLOBAL.realloc(b, lay(2 * MIB), 4 * MIB);
        eprintln!("b={b:p} b2={b2:p} vmas={}", vmas_in(b2 as usize, 4 * MIB));
        for i in 2 * MIB..4 * MIB {
            b2.add(i).write((i % 241) as u8);
        }
        let b3 = GLOBAL.realloc(b2, lay(4 * MIB), 12 * MIB);
        assert!(!b3.is_null());
        eprintln!("b3={b3:p} vmas={}", vmas_in(b3 as usize, 12 * MIB));
        assert!(mapped(b3 as usize, 12 * MIB), "b3 not wholly mapped");
        for i in 0..4 * MIB {
            let want = if i < 2 * MIB {
                (i % 251) as u8
            } else {
                (i % 241) as u8
            };
            assert_eq!(b3.add(i).read(), want, "byte {i}");
        }
        b3.add(12 * MIB - 1).write(7);
        GLOBAL.dealloc(b3, lay(12 * MIB));
        release_free_memory();
    }
}

/// Threads allocating, growing, shrinking and freeing mapped blocks while
/// another returns the kept mappings: no two live blocks share memory (each
/// block's pages keep the pattern its owner wrote) and every block is where
/// its layout says (the kept mappings' slots are taken by one thread each).
fn kept_mappings_under_threads() {
    let releaser_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = releaser_stop.clone();
    let releaser = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            pymem::release_free_memory();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(t);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
                for round in 0..300u32 {
                    let r = next();
                    let tag = (round as u8).wrapping_mul(7).wrapping_add(t);
                    if live.len() < 3 && r % 3 != 0 {
                        let size = 7 * MIB / 4 + (r >> 8) as usize % (10 * MIB);
                        let l = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: a non-zero size, freed below with its layout.
                        let p = unsafe { GLOBAL.alloc(l) };
                        assert!(!p.is_null());
                        fill(p, size, tag);
                        live.push((p, l, tag));
                    } else if !live.is_empty() {
                        let i = (r >> 16) as usize % live.len();
                        let (p, l, tag) = live.swap_remove(i);
                        check(p, l.size(), l.size(), tag, "before its free or resize");
                        if r % 2 == 0 {
                            // SAFETY: a live block of this layout.
                            unsafe { GLOBAL.dealloc(p, l) };
                        } else {
                            let new_size = 7 * MIB / 4 + (r >> 24) as usize % (12 * MIB);
                            // SAFETY: a live block of `l`; a valid new size.
                            let q = unsafe { GLOBAL.realloc(p, l, new_size) };
                            assert!(!q.is_null());
                            let kept = l.size().min(new_size);
                            check(q, kept, l.size(), tag, "after a resize");
                            fill(q, new_size, tag);
                            live.push((q, Layout::from_size_align(new_size, 8).unwrap(), tag));
                        }
                    }
                }
                for (p, l, tag) in live {
                    check(p, l.size(), l.size(), tag, "at the end");
                    // SAFETY: a live block of this layout.
                    unsafe { GLOBAL.dealloc(p, l) };
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    releaser_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    releaser.join().unwrap();
}

#[test]
fn kept_mappings_stay_aligned_counted_and_whole() {
    block_from_a_split_tail_is_2mib_aligned();
    large_bytes_cached_never_wraps();
    growth_across_two_kernel_mappings_keeps_contents();
    kept_mappings_under_threads();
}
