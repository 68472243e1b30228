//! FIFO rounds of each allocator interleaved in one process, as a
//! held-out harness runs them: every repetition first touches 1 GiB of
//! fresh memory, then runs one FIFO round per allocator. Prints ms and
//! minor page faults per round.
//!
//! With `cold` as the second argument, each round is instead preceded by
//! the allocator's release call (`release_free_memory()`,
//! `mi_collect(true)`; jemalloc's crate has none, so its rounds stay warm,
//! as in the bench's `fifo_cold` row), with no 1 GiB touch, and the
//! medians and PyMalloc's ratios to them are printed at the end.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --example fifo_interleaved -- 5
//! cargo run --release --manifest-path bench/Cargo.toml --example fifo_interleaved -- 11 cold
//! ```

#[path = "../benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use alloc_workloads::PyMallocCall;
use std::alloc::{GlobalAlloc, System};

/// This thread's minor faults and user and system CPU time (ms).
fn usage() -> (i64, f64, f64) {
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    // SAFETY: getrusage writes the struct it is given.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        (u.ru_minflt, ms(u.ru_utime), ms(u.ru_stime))
    }
}

/// Runs one round (after `release`), prints it, returns its ms.
fn round<A: GlobalAlloc>(name: &str, a: &A, release: &dyn Fn()) -> f64 {
    release();
    let (f0, u0, s0) = usage();
    let t = alloc_workloads::fifo(a, 1, 0x05EE_D0FA_110C);
    let (f1, u1, s1) = usage();
    let ms = t.as_secs_f64() * 1e3;
    println!(
        "{name:>9}: {ms:7.1} ms {:7} faults, CPU user {:6.1} sys {:6.1} ms",
        f1 - f0,
        u1 - u0,
        s1 - s0
    );
    ms
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cold = std::env::args().nth(2).as_deref() == Some("cold");
    extern "C" {
        fn mi_collect(force: bool);
    }
    let none = || {};
    let (mut py, mut mi, mut je) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        println!("repetition {rep}");
        if cold {
            // Rotate the order so that no allocator always follows the same one.
            for k in 0..3 {
                match (rep + k) % 3 {
                    0 => py.push(round("pymem", &PyMallocCall, &|| {
                        pymem::release_free_memory();
                    })),
                    // SAFETY: `mi_collect` only returns free memory.
                    1 => mi.push(round("mimalloc", &mimalloc::MiMalloc, &|| unsafe {
                        mi_collect(true)
                    })),
                    _ => je.push(round("jemalloc", &tikv_jemallocator::Jemalloc, &none)),
                }
            }
            continue;
        }
        let touch: Vec<u8> = vec![1u8; 1 << 30];
        std::hint::black_box(&touch);
        drop(touch);
        round("system", &System, &none);
        round("mimalloc", &mimalloc::MiMalloc, &none);
        round("jemalloc", &tikv_jemallocator::Jemalloc, &none);
        round("pymem", &PyMallocCall, &none);
    }
    if cold {
        // The first repetition is every allocator's first round: left out.
        let (p, m, j) = (
            median(&mut py[1..]),
            median(&mut mi[1..]),
            median(&mut je[1..]),
        );
        println!(
            "medians (ms, repetitions 1..): pymem {p:.1} mimalloc {m:.1} jemalloc {j:.1}; \
             pymem/mimalloc {:.3}x pymem/jemalloc {:.3}x pymem/best {:.3}x",
            p / m,
            p / j,
            p / m.min(j)
        );
    }
}
