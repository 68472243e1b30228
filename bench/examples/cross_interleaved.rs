//! The cross-thread producer/consumer shape of `--bench alloc`
//! (`cross_thread`: a producer allocates 64 B blocks, a consumer frees
//! them, batches of 1,024 over a channel) with the allocators interleaved
//! in one process: every repetition runs one round per allocator, in a
//! rotating order, so each allocator sees the same mix of "the two vCPUs
//! run in parallel" and "they share a core" over the run. Prints ns per
//! block for each round (wall, and CPU time of the process, user +
//! system, which counts both threads and is less at the mercy of whether
//! they ran at once), then per allocator and measure the median, the min
//! and max, and the median of the per-repetition ratios to snmalloc.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --example cross_interleaved -- 15 1000000
//! ```
//!
//! Arguments: repetitions (default 15), blocks per round (default 1M),
//! and optionally one allocator's name to run it alone (no warm-up round),
//! as under callgrind:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/cross_interleaved 1 100000 pymem
//! ```

#[path = "../benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use alloc_workloads::PyMallocCall;
use std::alloc::GlobalAlloc;

/// User + system CPU time of the process so far, in ns.
fn cpu_ns() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One round: (wall ns per block, CPU ns per block of both threads).
fn round<A: GlobalAlloc + Sync>(a: &A, blocks: u64) -> (f64, f64) {
    let c0 = cpu_ns();
    let wall = alloc_workloads::cross_thread(a, blocks).as_secs_f64() * 1e9;
    ((wall / blocks as f64), (cpu_ns() - c0) / blocks as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const NAMES: [&str; 5] = ["pymem", "snmalloc", "mimalloc", "jemalloc", "system"];

fn run(i: usize, blocks: u64) -> (f64, f64) {
    match i {
        0 => round(&PyMallocCall, blocks),
        1 => round(&snmalloc_rs::SnMalloc, blocks),
        2 => round(&mimalloc::MiMalloc, blocks),
        3 => round(&tikv_jemallocator::Jemalloc, blocks),
        _ => round(&std::alloc::System, blocks),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let reps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(15);
    let blocks: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if let Some(only) = args.next() {
        let i = NAMES
            .iter()
            .position(|n| *n == only)
            .expect("an allocator name: pymem snmalloc mimalloc jemalloc system");
        for _ in 0..reps {
            let (wall, cpu) = run(i, blocks);
            println!("{only}: {wall:6.2} ns per block, {cpu:6.2} ns CPU");
        }
        return;
    }
    // One warm-up round each: first-touch of every allocator's memory.
    for i in 0..NAMES.len() {
        run(i, blocks);
    }
    let mut wall = vec![Vec::new(); NAMES.len()];
    let mut cpu = vec![Vec::new(); NAMES.len()];
    for rep in 0..reps {
        print!("rep {rep:2} (wall/CPU):");
        for k in 0..NAMES.len() {
            let i = (rep + k) % NAMES.len();
            let (w, c) = run(i, blocks);
            wall[i].push(w);
            cpu[i].push(c);
        }
        for (i, name) in NAMES.iter().enumerate() {
            print!(" {name} {:.2}/{:.2}", wall[i][rep], cpu[i][rep]);
        }
        println!();
    }
    for (what, ns) in [("wall", &wall), ("CPU (both threads)", &cpu)] {
        println!("{what} ns per block over {reps} repetitions of {blocks} blocks:");
        for (i, name) in NAMES.iter().enumerate() {
            let mut ratios: Vec<f64> = ns[i].iter().zip(&ns[1]).map(|(a, s)| a / s).collect();
            let mut v = ns[i].clone();
            let (lo, hi) = (
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(0.0, f64::max),
            );
            println!(
                "{name:>9}: median {:6.2}  min {:6.2}  max {:6.2}  median ratio to snmalloc {:5.2}x",
                median(&mut v),
                lo,
                hi,
                median(&mut ratios)
            );
        }
    }
}
