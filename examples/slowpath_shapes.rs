//! A driver for measuring the allocator's slow paths under callgrind (or
//! `perf stat`): runs one workload shape of `bench/benches/alloc.rs` with
//! PyMalloc, called directly through `GlobalAlloc` (as the bench does).
//!
//! ```text
//! cargo build --release --example slowpath_shapes
//! valgrind --tool=callgrind target/release/examples/slowpath_shapes fifo 2
//! ```
//!
//! Shapes: `fifo ROUNDS` (1M blocks of 8..=512 B allocated, then freed in
//! allocation order, per round), `churn STEPS` (1,000 live blocks),
//! `churn_10k STEPS` (10,000 live blocks), `lifo ROUNDS` (1M x 32 B freed
//! in reverse), `two_threads_churn STEPS` (two threads churning at once). The set-up (the live blocks of churn, the sizes of FIFO)
//! is done by the workload itself, so compare two builds on the same
//! arguments rather than reading absolute figures.

#[path = "../bench/benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use alloc_workloads::PyMallocCall;

fn main() {
    let mut args = std::env::args().skip(1);
    let shape = args.next().unwrap_or_else(|| "fifo".to_string());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seed = 0x05EE_D0FA_110C;
    let t = match shape.as_str() {
        "fifo" => alloc_workloads::fifo(&PyMallocCall, n, seed),
        "churn" => alloc_workloads::churn_with(&PyMallocCall, n, seed, 1_000),
        "churn_10k" => alloc_workloads::churn_with(&PyMallocCall, n, seed, 10_000),
        "lifo" => alloc_workloads::lifo(&PyMallocCall, n),
        "two_threads_churn" => alloc_workloads::two_thread_churn(&PyMallocCall, n, seed),
        other => panic!("unknown shape {other}"),
    };
    println!("{shape} x {n}: {t:?}");
}
