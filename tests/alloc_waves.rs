//! 10,000 threads in waves of 200 alive at once (issue 8): PyMalloc's
//! arenas stay bounded by what the live threads need (heaps of exited
//! threads are adopted by new ones and keep nothing empty), and after
//! `release_free_memory()` the resident set is no larger than glibc's
//! after `malloc_trim(0)` on the same workload.
//!
//! The binary's global allocator is PyMalloc or glibc's, chosen when it
//! starts (by `PYMEM_WAVES_SYSTEM` in the environment, read without
//! allocating); the test runs the workload once with each, in child
//! processes of this binary.

#[path = "common/alloc_shapes.rs"]
mod alloc_shapes;
#[path = "common/rng.rs"]
mod rng;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use pymem::PyMalloc;

/// PyMalloc or the system allocator, decided at the first call.
struct Either;

static USE_SYSTEM: AtomicU8 = AtomicU8::new(0);
const UNDECIDED: u8 = 0;
const PYMEM: u8 = 1;
const SYSTEM: u8 = 2;

fn use_system() -> bool {
    match USE_SYSTEM.load(Ordering::Relaxed) {
        PYMEM => false,
        SYSTEM => true,
        _ => {
            // SAFETY: `getenv` does not allocate; a NUL-terminated name.
            let set = !unsafe { libc::getenv(c"PYMEM_WAVES_SYSTEM".as_ptr()) }.is_null();
            let _ = USE_SYSTEM.compare_exchange(
                UNDECIDED,
                if set { SYSTEM } else { PYMEM },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            USE_SYSTEM.load(Ordering::Relaxed) == SYSTEM
        }
    }
}

// SAFETY: forwards every call to one allocator, the same for the whole
// process.
unsafe impl GlobalAlloc for Either {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe {
            if use_system() {
                System.alloc(layout)
            } else {
                PyMalloc.alloc(layout)
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded caller contract (the same allocator).
        unsafe {
            if use_system() {
                System.dealloc(ptr, layout)
            } else {
                PyMalloc.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded caller contract (the same allocator).
        unsafe {
            if use_system() {
                System.realloc(ptr, layout, new_size)
            } else {
                PyMalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Either = Either;

/// Runs `child_waves` in a child process; returns its `key=value` figures.
fn run(system: bool) -> Vec<(String, f64)> {
    let text = alloc_shapes::run_child_test(
        "child_waves",
        &[("PYMEM_WAVES_SYSTEM", system.then_some("1"))],
    );
    text.lines()
        .filter_map(|l| l.split_once("waves: ").map(|(_, figures)| figures))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn figure(figures: &[(String, f64)], key: &str) -> f64 {
    figures
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {figures:?}"))
        .1
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn ten_thousand_threads_in_waves() {
    let pymem = run(false);
    let glibc = run(true);
    eprintln!("pymem: {pymem:?}\nglibc: {glibc:?}");
    let highwater = figure(&pymem, "arenas_highwater");
    assert!(
        highwater <= 3.0 * WAVE as f64,
        "{highwater} arenas at once for {WAVE} live threads: arenas grew with the threads created"
    );
    assert!(figure(&pymem, "heaps") <= 2.0 * WAVE as f64);
    let (ours, theirs) = (figure(&pymem, "rss_mb"), figure(&glibc, "rss_mb"));
    assert!(
        ours <= theirs + 1.0,
        "after release, {ours:.1} MB resident; glibc after malloc_trim: {theirs:.1} MB"
    );
}

const WAVE: usize = 200;

#[test]
fn child_waves() {
    if !alloc_shapes::is_child("child_waves") {
        return;
    }
    alloc_shapes::waves(&GLOBAL, 10_000, WAVE, 32 << 10);
    if use_system() {
        // SAFETY: `malloc_trim` only returns free memory.
        unsafe { libc::malloc_trim(0) };
        println!("waves: rss_mb={:.2}", alloc_shapes::rss_mb());
    } else {
        pymem::release_free_memory();
        let stats = pymem::alloc_stats();
        println!(
            "waves: rss_mb={:.2} arenas_highwater={} arenas={} heaps={}",
            alloc_shapes::rss_mb(),
            stats.arenas_highwater,
            stats.arenas_in_use,
            stats.heaps
        );
    }
}
