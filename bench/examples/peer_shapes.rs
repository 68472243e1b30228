//! A driver for comparing allocators under callgrind (or `perf stat`): runs
//! one workload shape of `benches/alloc.rs` with the allocator named on the
//! command line, through `GlobalAlloc` as the bench does.
//!
//! ```text
//! cargo build --release --manifest-path bench/Cargo.toml --example peer_shapes
//! valgrind --tool=callgrind bench/target/release/examples/peer_shapes mimalloc fifo 3
//! ```
//!
//! Allocators: `pymem`, `mimalloc`, `jemalloc`, `system`. Shapes as in
//! `examples/slowpath_shapes.rs` (`fifo`, `churn`, `churn_10k`, `lifo`,
//! `two_threads_churn`, `cross_thread`), and `fifo_cold` (FIFO with
//! each allocator's release call before each round, as the bench's row);
//! `scratch_2m` (a 2 MiB buffer allocated, touched and freed, n x 1,000
//! times) and `grow_16m` (a buffer grown by doubling from 4 KiB to 16 MiB
//! and freed, n x 100 times), the loops of review 7.

#[path = "../benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use alloc_workloads::PyMallocCall;
use std::alloc::{GlobalAlloc, System};
use std::time::Duration;

fn run<A: GlobalAlloc + Sync>(a: &A, shape: &str, n: u64, release: &dyn Fn()) -> Duration {
    let seed = 0x05EE_D0FA_110C;
    match shape {
        "fifo" => alloc_workloads::fifo(a, n, seed),
        "fifo_cold" => alloc_workloads::fifo_cold(a, n, seed, release),
        "churn" => alloc_workloads::churn_with(a, n, seed, 1_000),
        "churn_10k" => alloc_workloads::churn_with(a, n, seed, 10_000),
        "lifo" => alloc_workloads::lifo(a, n),
        "two_threads_churn" => alloc_workloads::two_thread_churn(a, n, seed),
        "cross_thread" => alloc_workloads::cross_thread(a, n),
        "scratch_2m" => scratch(a, n, 2 << 20),
        "grow_16m" => grow(a, n, 16 << 20),
        other => panic!("unknown shape {other}"),
    }
}

/// A scratch buffer of `size` bytes allocated, touched (a byte per page)
/// and freed, `n` x 1,000 times (review 7's loop).
fn scratch<A: GlobalAlloc>(a: &A, n: u64, size: usize) -> Duration {
    let layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..n * 1_000 {
        // SAFETY: a non-zero size; the block is freed with its layout.
        unsafe {
            let p = std::hint::black_box(a.alloc(layout));
            assert!(!p.is_null());
            for i in (0..size).step_by(4096) {
                p.add(i).write(i as u8);
            }
            a.dealloc(p, layout);
        }
    }
    start.elapsed()
}

/// A buffer grown by doubling from 4 KiB to `max` bytes, each new half
/// touched (a byte per page), then freed, `n` x 100 times (a `Vec` filled
/// by `push` per request).
fn grow<A: GlobalAlloc>(a: &A, n: u64, max: usize) -> Duration {
    let start = std::time::Instant::now();
    for _ in 0..n * 100 {
        let mut size = 4096;
        let mut layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero sizes; each block resized and freed with the
        // layout it has.
        unsafe {
            let mut p = std::hint::black_box(a.alloc(layout));
            while size < max {
                p = std::hint::black_box(a.realloc(p, layout, size * 2));
                assert!(!p.is_null());
                for i in (size..size * 2).step_by(4096) {
                    p.add(i).write(i as u8);
                }
                size *= 2;
                layout = std::alloc::Layout::from_size_align(size, 8).unwrap();
            }
            a.dealloc(p, layout);
        }
    }
    start.elapsed()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "pymem".to_string());
    let shape = args.next().unwrap_or_else(|| "fifo".to_string());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    extern "C" {
        fn mi_collect(force: bool);
    }
    let t = match which.as_str() {
        "pymem" => run(&PyMallocCall, &shape, n, &|| {
            pymem::release_free_memory();
        }),
        // SAFETY: `mi_collect` only returns free memory.
        "mimalloc" => run(&mimalloc::MiMalloc, &shape, n, &|| unsafe { mi_collect(true) }),
        // jemalloc has no release call through its crate (as in the bench).
        "jemalloc" => run(&tikv_jemallocator::Jemalloc, &shape, n, &|| {}),
        // SAFETY: `malloc_trim` only returns free memory.
        "system" => run(&System, &shape, n, &|| unsafe {
            libc::malloc_trim(0);
        }),
        other => panic!("unknown allocator {other}"),
    };
    println!("{which} {shape} x {n}: {t:?}");
}
