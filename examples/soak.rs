//! Soak test: the allocator stress workload of `tests/alloc_stress.rs`, run
//! for as long as asked, printing throughput and resident memory every
//! second. Flat resident memory is the pass.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 60 [--threads 8]
//! ```
//!
//! `PyMalloc` is this program's global allocator. Worker threads (8 by
//! default, each replaced by a fresh thread every `--ops-per-thread`
//! operations) allocate blocks of 1..=4,096 bytes, pass them to random
//! threads, and verify each block's owner-naming pattern when it is freed:
//! corruption panics at once (exit code 101). At the end the RSS of the
//! second half of the run is compared with the warm-up (the first fifth, at
//! least 3 s): if it grew by more than 25% + 4 MiB, the soak fails with
//! exit code 1.

#[path = "../tests/common/alloc_util.rs"]
mod alloc_util;

#[path = "../tests/common/alloc_stress_core.rs"]
mod alloc_stress_core;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloc_stress_core::{Config, Shared};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => {
                eprintln!("{name} needs a number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: soak [--seconds N (10)] [--threads N (8)] [--ops-per-thread N (200000)]");
        return;
    }
    let seconds = arg(&args, "--seconds", 10).max(1);
    let threads = arg(&args, "--threads", 8).clamp(1, 255) as usize;
    let ops_per_life = arg(&args, "--ops-per-thread", 200_000).max(1);
    let cfg = Config {
        threads,
        ops_per_life,
        max_local: 400,
        max_inbox: 800,
        max_orphans: 2_000,
    };
    if cfg!(debug_assertions) {
        println!("note: debug build; use --release for representative throughput");
    }
    println!(
        "soak: {threads} worker slots, a fresh thread every {ops_per_life} ops, {seconds} s; \
         sizes 1..=4,096 B, every block verified on free"
    );
    println!(
        "{:>5}  {:>12}  {:>12}  {:>8}  {:>10}  {:>7}  {:>6}  {:>12}",
        "t (s)", "ops/s", "frees/s", "threads", "RSS", "arenas", "heaps", "small blocks"
    );

    let shared = Shared::new(cfg);
    let mut rss_samples: Vec<u64> = Vec::new();
    let start = Instant::now();
    std::thread::scope(|s| {
        for slot in 0..threads {
            let shared = &shared;
            s.spawn(move || shared.run_slot(&GLOBAL, slot, u64::MAX));
        }
        let (mut last_ops, mut last_freed) = (0, 0);
        let mut last = Instant::now();
        for second in 1..=seconds {
            let wake = start + Duration::from_secs(second);
            while Instant::now() < wake {
                if shared.stop.load(Ordering::Relaxed) {
                    return; // a worker panicked: the scope re-raises it
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let now = Instant::now();
            let dt = now.duration_since(last).as_secs_f64();
            last = now;
            let ops = shared.ops.load(Ordering::Relaxed);
            let freed = shared.freed.load(Ordering::Relaxed);
            let rss = alloc_util::rss_kib();
            rss_samples.push(rss);
            let st = alloc_stats();
            println!(
                "{:>5}  {:>10.2}M  {:>10.2}M  {:>8}  {:>6.1} MiB  {:>7}  {:>6}  {:>12}",
                second,
                (ops - last_ops) as f64 / dt / 1e6,
                (freed - last_freed) as f64 / dt / 1e6,
                shared.lives.load(Ordering::Relaxed),
                mib(rss),
                st.arenas_in_use,
                st.heaps,
                st.small_blocks_in_use
            );
            (last_ops, last_freed) = (ops, freed);
        }
        shared.stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let leftover = shared.drain(&GLOBAL);
    let ops = shared.ops.load(Ordering::Relaxed);
    let freed = shared.freed.load(Ordering::Relaxed);
    let threads_run = shared.lives.load(Ordering::Relaxed);
    drop(shared);
    let released = release_free_memory();
    let end_rss = alloc_util::rss_kib();
    let st = alloc_stats();

    println!();
    println!(
        "{ops} ops in {elapsed:.1} s ({:.2}M ops/s), {freed} blocks verified and freed \
         ({leftover} at the end), {threads_run} worker threads run",
        ops as f64 / elapsed / 1e6
    );
    println!(
        "after freeing everything: release_free_memory() returned {:.1} MiB, RSS {:.1} MiB, \
         {} arenas, {} small blocks in use",
        released as f64 / (1 << 20) as f64,
        mib(end_rss),
        st.arenas_in_use,
        st.small_blocks_in_use
    );

    // Flatness: the warm-up (the first fifth of the run, at least 3 s when
    // the run is long enough) against the second half.
    let n = rss_samples.len();
    let warm = (n / 5).max(3).min(n.saturating_sub(1)).max(1);
    let early = rss_samples[..warm].iter().copied().max().unwrap_or(0);
    let late = rss_samples[(n / 2).max(warm).min(n - 1)..]
        .iter()
        .copied()
        .max()
        .unwrap_or(early);
    let limit = early + early / 4 + 4 * 1024;
    if late <= limit {
        println!(
            "PASS: RSS flat ({:.1} MiB in the first {warm} s, at most {:.1} MiB in the second \
             half; limit {:.1} MiB)",
            mib(early),
            mib(late),
            mib(limit)
        );
    } else {
        println!(
            "FAIL: RSS grew from {:.1} MiB in the first {warm} s to {:.1} MiB in the second \
             half (limit {:.1} MiB)",
            mib(early),
            mib(late),
            mib(limit)
        );
        std::process::exit(1);
    }
}
