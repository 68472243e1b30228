//! FIFO rounds of each allocator interleaved in one process, as a
//! held-out harness runs them: every repetition first touches 1 GiB of
//! fresh memory, then runs one FIFO round per allocator. Prints ms and
//! minor page faults per round.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --example fifo_interleaved -- 5
//! ```

#[path = "../benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use alloc_workloads::PyMallocCall;
use std::alloc::{GlobalAlloc, System};

fn minflt() -> i64 {
    // SAFETY: getrusage writes the struct it is given.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

fn round<A: GlobalAlloc>(name: &str, a: &A) {
    let f0 = minflt();
    let t = alloc_workloads::fifo(a, 1, 0x05EE_D0FA_110C);
    println!(
        "{name:>9}: {:7.1} ms {:7} faults",
        t.as_secs_f64() * 1e3,
        minflt() - f0
    );
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for rep in 0..reps {
        let touch: Vec<u8> = vec![1u8; 1 << 30];
        std::hint::black_box(&touch);
        drop(touch);
        println!("repetition {rep}");
        round("system", &System);
        round("mimalloc", &mimalloc::MiMalloc);
        round("jemalloc", &tikv_jemallocator::Jemalloc);
        round("pymem", &PyMallocCall);
    }
}
