//! Transparent huge pages for large heaps only (see `src/alloc/span.rs`).
//!
//! * A heap past 32 MiB of arenas maps the rest in 2 MiB spans advised
//!   with `madvise(MADV_HUGEPAGE)` (`VmFlags: hg` in `/proc/self/smaps`),
//!   which the kernel backs with huge pages (`AnonHugePages`) when its THP
//!   mode is `madvise` or `always`.
//! * A small heap's arenas get no such advice (and, in `madvise` mode, no
//!   huge page).
//! * A span's half that empties while its buddy is in use is not unmapped
//!   on its own by the ordinary purges (that would split the huge page);
//!   `release_free_memory()` returns it all the same.
//!
//! Each test allocates on its own thread (its own heap) and looks only at
//! the addresses of its own blocks; the two that return memory
//! process-wide (`release_free_memory()`, the background purge) run one at
//! a time. They skip, saying so, when the kernel's THP mode is `never` or
//! unknown.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[path = "common/alloc_util.rs"]
mod alloc_util;

use alloc_util::{smaps, thp_mode, vma_of};
use pymem::{purge_in_background, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// Held by the tests that return memory process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

const POOL: usize = 16 << 10;
const ARENA: usize = 1 << 20;
const BLOCK: usize = 256;

/// For a test that needs huge pages by `madvise` and returns memory
/// process-wide: the serialising lock, or `None` (printing why) when the
/// kernel gives no huge pages.
fn start_with_thp(test: &str) -> Option<MutexGuard<'static, ()>> {
    match thp_mode().as_deref() {
        Some("always") | Some("madvise") => Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner())),
        other => {
            eprintln!("{test}: skipped, transparent huge pages are {other:?} on this kernel");
            None
        }
    }
}

/// Resident 4 KiB pages of the pool slot at `base` (`POOL`-aligned, in a
/// mapped arena).
fn resident_pages(base: usize) -> usize {
    let mut vec = [0u8; POOL / 4096];
    // SAFETY: `base` is page-aligned and lies in an arena that a live
    // block keeps mapped; `vec` has one byte per page of the slot.
    let rc = unsafe { libc::mincore(base as *mut libc::c_void, POOL, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

fn arena_of(p: *mut u8) -> usize {
    p as usize & !(ARENA - 1)
}

fn layout() -> Layout {
    Layout::from_size_align(BLOCK, 8).unwrap()
}

/// Allocates `mib` MiB of 256-byte blocks (small enough to stay in the
/// pools under ASan, which adds a redzone) on the calling thread, writing
/// each; returns them in allocation order.
fn allocate(mib: usize) -> Vec<*mut u8> {
    let n = (mib << 20) / BLOCK;
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout()) };
        assert!(!p.is_null());
        // SAFETY: the block holds BLOCK bytes.
        unsafe { p.write_bytes(i as u8, BLOCK) };
        blocks.push(p);
    }
    blocks
}

fn free_all(blocks: impl IntoIterator<Item = *mut u8>) {
    for p in blocks {
        // SAFETY: a live block of ours, of `layout()`.
        unsafe { GLOBAL.dealloc(p, layout()) };
    }
}

/// The distinct arenas of `blocks`, in allocation order. (In a vector
/// too large for the pools, so that it keeps no arena in use.)
fn arenas(blocks: &[*mut u8]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(4096);
    for &p in blocks {
        let a = arena_of(p);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[test]
fn a_large_heap_maps_huge_pages() {
    let Some(_serial) = start_with_thp("a_large_heap_maps_huge_pages") else {
        return;
    };
    std::thread::spawn(|| {
        let blocks = allocate(96);
        // Everything past the first 40 MiB comes from arenas mapped once
        // the heap had 32 MiB of them.
        let late = arenas(&blocks[(40 << 20) / BLOCK..]);
        let vmas = smaps();
        let mut huge_kb = 0;
        for &a in &late {
            let vma = vma_of(&vmas, a).expect("a late arena is mapped");
            assert!(
                vma.flags.iter().any(|f| f == "hg"),
                "the arena at {a:#x} of a 96 MiB heap has no huge-page advice: {vma:?}"
            );
            huge_kb += vma.anon_huge_kb;
        }
        // The mappings of several arenas may be one VMA: count each once.
        let mut seen: Vec<usize> = late
            .iter()
            .filter_map(|&a| vma_of(&vmas, a).map(|v| v.start))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let huge_kb: u64 = seen
            .iter()
            .map(|&s| vmas.iter().find(|v| v.start == s).unwrap().anon_huge_kb)
            .sum::<u64>()
            .min(huge_kb);
        assert!(
            huge_kb > 0,
            "no AnonHugePages in the arenas of a 96 MiB heap (THP mode {:?})",
            thp_mode()
        );
        // The blocks are intact.
        for (i, &p) in blocks.iter().enumerate() {
            // SAFETY: a live block of BLOCK bytes.
            let b = unsafe { (p.read(), p.add(BLOCK - 1).read()) };
            assert_eq!(b, (i as u8, i as u8), "block {i} corrupted");
        }
        // Nothing of this thread is left in the pools: the smaps lines
        // (small strings) keep arenas in use too.
        drop((vmas, seen));
        free_all(blocks);
        release_free_memory();
        // Every span went back, whole: none of its addresses is advised
        // memory any more.
        let vmas = smaps();
        for &a in &late {
            if let Some(vma) = vma_of(&vmas, a) {
                assert!(
                    !vma.flags.iter().any(|f| f == "hg"),
                    "the span at {a:#x} is still mapped after release_free_memory(): {vma:?}"
                );
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_heap_built_again_after_a_release_maps_spans_early() {
    let Some(_serial) = start_with_thp("a_heap_built_again_after_a_release_maps_spans_early")
    else {
        return;
    };
    std::thread::spawn(|| {
        // A large heap, emptied and released by its own thread.
        free_all(allocate(40));
        release_free_memory();
        let released = std::time::Instant::now();
        // Built again at once, to 16 MiB: past its first 4 MiB (and well
        // before 32 MiB) its arenas come in spans. (Without the release,
        // `a_small_heap_gets_no_huge_page_advice`: none would.)
        let blocks = allocate(16);
        // The early spans are for the second after a release: a machine
        // too loaded to rebuild 16 MiB in half of that cannot show them.
        let in_time = released.elapsed() < std::time::Duration::from_millis(500);
        if !in_time {
            eprintln!(
                "a_heap_built_again_after_a_release_maps_spans_early: the rebuild took {:?}, \
                 past the window; its check skipped",
                released.elapsed()
            );
        }
        let late = if in_time {
            arenas(&blocks[(6 << 20) / BLOCK..])
        } else {
            Vec::new()
        };
        let vmas = smaps();
        for &a in &late {
            let vma = vma_of(&vmas, a).expect("a late arena is mapped");
            assert!(
                vma.flags.iter().any(|f| f == "hg"),
                "the arena at {a:#x} of a heap built again after a release has no \
                 huge-page advice: {vma:?}"
            );
        }
        drop(vmas);
        free_all(blocks);
        release_free_memory();
        // Released again, after a heap of 16 MiB: small, so what comes
        // next is in 4 KiB pages again.
        let blocks = allocate(16);
        let vmas = smaps();
        for a in arenas(&blocks) {
            let vma = vma_of(&vmas, a).expect("an arena is mapped");
            assert!(
                !vma.flags.iter().any(|f| f == "hg"),
                "the arena at {a:#x} of a heap that was small at its release has \
                 huge-page advice: {vma:?}"
            );
        }
        drop(vmas);
        free_all(blocks);
    })
    .join()
    .unwrap();
}

#[test]
fn a_small_heap_gets_no_huge_page_advice() {
    let Some(mode) = thp_mode() else {
        eprintln!("a_small_heap_gets_no_huge_page_advice: skipped, no THP on this kernel");
        return;
    };
    std::thread::spawn(move || {
        let blocks = allocate(24);
        let vmas = smaps();
        for a in arenas(&blocks) {
            let vma = vma_of(&vmas, a).expect("an arena is mapped");
            assert!(
                !vma.flags.iter().any(|f| f == "hg"),
                "the arena at {a:#x} of a 24 MiB heap has huge-page advice: {vma:?}"
            );
            if mode == "madvise" {
                assert_eq!(
                    vma.anon_huge_kb, 0,
                    "the arena at {a:#x} of a 24 MiB heap has huge pages: {vma:?}"
                );
            }
        }
        free_all(blocks);
    })
    .join()
    .unwrap();
}

#[test]
fn a_span_half_stays_while_its_buddy_is_used() {
    let Some(_serial) = start_with_thp("a_span_half_stays_while_its_buddy_is_used") else {
        return;
    };
    std::thread::spawn(|| {
        let mut blocks = allocate(96);
        // A block in a late arena, kept; its arena's buddy is the other
        // half of its span.
        let keep_at = (80 << 20) / BLOCK;
        let kept = blocks.swap_remove(keep_at);
        let kept_arena = arena_of(kept);
        let buddy = kept_arena ^ ARENA;
        // A pool slot of the kept block's arena that goes free below.
        let kept_pool = kept as usize & !(POOL - 1);
        let idle_slot = blocks
            .iter()
            .map(|&p| p as usize & !(POOL - 1))
            .find(|&b| b & !(ARENA - 1) == kept_arena && b != kept_pool)
            .expect("another pool in the kept block's arena");
        let late = arenas(&blocks[(40 << 20) / BLOCK..]);
        let vmas = smaps();
        assert!(
            vma_of(&vmas, kept_arena).is_some_and(|v| v.flags.iter().any(|f| f == "hg")),
            "the kept block's arena is not in a huge-page span"
        );
        assert!(
            vma_of(&vmas, buddy).is_some_and(|v| v.flags.iter().any(|f| f == "hg")),
            "the kept block's arena has no buddy mapped"
        );
        drop(vmas);
        free_all(blocks);
        // Ordinary purges, with a short retention, from another thread
        // (this heap's own checks would be in their wake grace).
        // Longer than the second after which idle free slots of arenas
        // in use are decommitted (`purge::DECOMMIT_MS`), which would split
        // the span's huge page: a span's halves keep theirs.
        purge_in_background(Some(Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(1300));
        purge_in_background(None);
        assert_eq!(
            resident_pages(idle_slot),
            POOL / 4096,
            "an idle free slot of a span was decommitted (its huge page split)"
        );
        let vmas = smaps();
        // The other spans went back...
        let gone = late
            .iter()
            .filter(|&&a| a != kept_arena && a != buddy)
            .filter(|&&a| !vma_of(&vmas, a).is_some_and(|v| v.flags.iter().any(|f| f == "hg")))
            .count();
        assert!(
            gone >= late.len() / 2,
            "only {gone} of {} late arenas were returned by the background purges",
            late.len()
        );
        // ...but not the empty half of the kept block's span.
        assert!(
            vma_of(&vmas, buddy).is_some_and(|v| v.flags.iter().any(|f| f == "hg")),
            "the empty half of a span in use was unmapped alone"
        );
        drop(vmas);
        // Returning everything returns it too, and the kept block lives.
        release_free_memory();
        let vmas = smaps();
        assert!(
            !vma_of(&vmas, buddy).is_some_and(|v| v.flags.iter().any(|f| f == "hg")),
            "release_free_memory() left the empty half of a span mapped"
        );
        assert!(vma_of(&vmas, kept_arena).is_some());
        // SAFETY: the kept block is live, BLOCK bytes.
        assert_eq!(unsafe { kept.read() }, keep_at as u8);
        free_all([kept]);
    })
    .join()
    .unwrap();
}

/// What the child of `a_child_after_fork_uses_and_returns_spans` does: checks
/// and frees the inherited blocks, returns everything, builds a large heap
/// again and checks it. Returns the exit code.
fn child_after_fork(blocks: &[*mut u8]) -> i32 {
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: a live block of BLOCK bytes, inherited from the parent.
        if unsafe { (p.read(), p.add(BLOCK - 1).read()) } != (i as u8, i as u8) {
            return 2;
        }
    }
    free_all(blocks.iter().copied());
    release_free_memory();
    let again = allocate(64);
    let ok = again
        .iter()
        .enumerate()
        // SAFETY: live blocks of BLOCK bytes.
        .all(|(i, &p)| unsafe { p.add(BLOCK - 1).read() } == i as u8);
    free_all(again);
    if ok {
        0
    } else {
        3
    }
}

#[test]
fn a_child_after_fork_uses_and_returns_spans() {
    let Some(_serial) = start_with_thp("a_child_after_fork_uses_and_returns_spans") else {
        return;
    };
    std::thread::spawn(|| {
        let blocks = allocate(64);
        // SAFETY: the child runs only `child_after_fork` (allocator calls,
        // which PyMalloc supports after fork) and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child_after_fork(&blocks);
            // SAFETY: ends the child without running the parent's exit
            // handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-parameter.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed: status {status:#x}"
        );
        // The child's frees and unmappings did not touch the parent's
        // copy.
        for (i, &p) in blocks.iter().enumerate() {
            // SAFETY: a live block of BLOCK bytes.
            let b = unsafe { (p.read(), p.add(BLOCK - 1).read()) };
            assert_eq!(
                b,
                (i as u8, i as u8),
                "block {i} corrupted after the child ran"
            );
        }
        free_all(blocks);
    })
    .join()
    .unwrap();
}
