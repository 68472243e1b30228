//! The main demo: PyMalloc beside the system allocator and mimalloc, on
//! the same workloads (jemalloc and the rest are in `bench/`).
//!
//! ```text
//! cargo run --release --example compare
//! ```
//!
//! 1. Speed: every allocator is driven through `GlobalAlloc` directly
//!    (`unsafe { A.alloc(layout) }`) on identical workloads (the code is
//!    shared with `bench/benches/alloc.rs`), and the table shows nanoseconds per
//!    operation, median of a few runs, with PyMalloc's ratios to System and
//!    to mimalloc.
//! 2. Memory: the churn workload runs once per allocator in a fresh child
//!    process (this program re-executed with `--rss-child NAME`), which
//!    reports its peak resident set (`VmHWM` in `/proc/self/status`), both
//!    whole and above the resident set it had just before the workload.
//! 3. PyMalloc also serves this very program as its `#[global_allocator]`,
//!    so the demo ends with `pymem::alloc_stats()` for its own allocations.
//!    (The "System" and "mimalloc" columns are unaffected: those
//!    allocators are called directly.)
//!
//! Options: `--runs N` (default 3) warm runs of each workload per allocator;
//! `--only NAME` runs only the workloads whose name contains NAME (`churn`,
//! `lifo_32B`, `fifo`, `cross_thread`, `two_threads_churn`,
//! `realloc_8_to_4096`).
//! Takes about 10 to 20 seconds in all.

#[path = "../bench/benches/support/alloc_workloads.rs"]
mod alloc_workloads;

use std::alloc::{GlobalAlloc, System};
use std::process::Command;
use std::time::Instant;

use alloc_workloads::{PyMallocCall, Workload};
use mimalloc::MiMalloc;
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const SEED: u64 = 0xC0FF_EE00_1234;
/// Churn steps in each child process of the memory table.
const RSS_CHURN_STEPS: u64 = 2_000_000;

/// The contestants, in column order.
const ALLOCATORS: [&str; 3] = ["PyMalloc", "System", "mimalloc"];

/// Units of each workload per timed run: about 20-100 ms each in a release
/// build (a tenth of that in a debug build, whose figures mean little).
fn units(w: Workload) -> u64 {
    let n = match w {
        Workload::Churn => 1_500_000,
        Workload::ChurnLarge => 1_000_000,
        Workload::Lifo | Workload::Fifo => return 1,
        Workload::CrossThread => 1_000_000,
        Workload::TwoThreadChurn => 1_000_000,
        Workload::Realloc => 100_000,
    };
    if cfg!(debug_assertions) {
        n / 10
    } else {
        n
    }
}

/// Runs `w` on the allocator named `name`; returns ns per op.
fn run_named(name: &str, w: Workload, seed: u64) -> f64 {
    fn go<A: GlobalAlloc + Sync>(a: &A, w: Workload, seed: u64) -> f64 {
        let n = units(w);
        let t = w.run(a, n, seed);
        t.as_nanos() as f64 / (n * w.ops_per_unit()) as f64
    }
    match name {
        "PyMalloc" => go(&PyMallocCall, w, seed),
        "System" => go(&System, w, seed),
        "mimalloc" => go(&MiMalloc, w, seed),
        _ => unreachable!("unknown allocator {name}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Child mode: run the churn workload on one allocator and report memory.
fn rss_child(name: &str) {
    let start_rss = status_kib("VmRSS");
    fn go<A: GlobalAlloc>(a: &A) {
        alloc_workloads::churn(a, RSS_CHURN_STEPS, SEED);
    }
    match name {
        "PyMalloc" => go(&PyMalloc),
        "System" => go(&System),
        "mimalloc" => go(&MiMalloc),
        _ => {
            eprintln!("unknown allocator {name}");
            std::process::exit(2);
        }
    }
    let hwm = status_kib("VmHWM");
    println!("{hwm} {start_rss}");
}

/// Runs this program as `--rss-child NAME`; returns (VmHWM, VmRSS at start) in KiB.
fn measure_rss(name: &str) -> Option<(u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .args(["--rss-child", name])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "child for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn rule(widths: &[usize]) -> String {
    widths
        .iter()
        .map(|&w| "-".repeat(w))
        .collect::<Vec<_>>()
        .join("  ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        rss_child(args.get(i + 1).map(String::as_str).unwrap_or(""));
        return;
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 1 } else { 3 })
        .max(1);
    let only: Option<&str> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let selected: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| only.is_none_or(|o| w.name().contains(o)))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        eprintln!("--only matches no workload; names: {}", names.join(", "));
        std::process::exit(2);
    }
    if cfg!(debug_assertions) {
        println!("note: this is a debug build; run with --release for meaningful figures\n");
    }
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("pymem compare: PyMalloc vs System (glibc malloc) and mimalloc");
    println!("{} ({threads} hardware threads)", cpu_model());
    let load: Option<f64> = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    if let Some(load) = load.filter(|&l| l > threads as f64 * 0.75) {
        println!(
            "note: the machine is busy (load average {load:.1} on {threads} hardware threads); \
             expect noisy figures"
        );
    }
    println!();
    println!("Each allocator is driven through GlobalAlloc directly on the same workload;");
    println!("every block is written once per cache line. Figures are ns per alloc+free");
    println!(
        "pair (per block for cross-thread, per chain for realloc), median of {runs} warm runs."
    );
    println!("Lower is better; a ratio below 1.00x means PyMalloc is faster.");
    println!();

    // Warm-up: page in every allocator's code and first arenas.
    for &w in &selected {
        for name in ALLOCATORS {
            let _ = run_named(name, w, SEED);
        }
    }

    let mut results: Vec<(Workload, [f64; 3])> = Vec::new();
    for &w in &selected {
        let mut samples: [Vec<f64>; 3] = Default::default();
        for run in 0..runs {
            // Round-robin over allocators so drift hits all of them alike;
            // each timed run follows an untimed one of the same allocator,
            // so every allocator is measured warm (its memory already
            // mapped and faulted in, as in consecutive criterion iterations)
            // rather than after the others have run.
            for (i, name) in ALLOCATORS.iter().enumerate() {
                let _ = run_named(name, w, SEED ^ run as u64);
                samples[i].push(run_named(name, w, SEED ^ run as u64));
            }
        }
        let medians = samples.map(median);
        results.push((w, medians));
    }

    let widths = [32, 9, 9, 9, 9, 11];
    println!(
        "{:<32}  {:>9}  {:>9}  {:>9}  {:>9}  {:>11}",
        "workload", "PyMalloc", "System", "mimalloc", "Py/System", "Py/mimalloc"
    );
    println!("{}", rule(&widths));
    for (w, m) in &results {
        println!(
            "{:<32}  {:>6.1} ns  {:>6.1} ns  {:>6.1} ns  {:>8.2}x  {:>10.2}x",
            w.label(),
            m[0],
            m[1],
            m[2],
            m[0] / m[1],
            m[0] / m[2]
        );
    }
    let geo = |col: usize| {
        let logs: f64 = results.iter().map(|(_, m)| (m[0] / m[col]).ln()).sum();
        (logs / results.len() as f64).exp()
    };
    println!("{}", rule(&widths));
    println!(
        "{:<32}  {:>9}  {:>9}  {:>9}  {:>8.2}x  {:>10.2}x",
        "geometric mean of ratios",
        "",
        "",
        "",
        geo(1),
        geo(2)
    );
    println!();

    println!(
        "Peak resident memory on churn ({} steps), one fresh child process per allocator",
        RSS_CHURN_STEPS
    );
    println!("(VmHWM from /proc/self/status; 'above start' subtracts the child's VmRSS");
    println!("just before the workload, i.e. the runtime and binary the children share).");
    println!();
    let rss: Vec<(&str, Option<(u64, u64)>)> =
        ALLOCATORS.iter().map(|&n| (n, measure_rss(n))).collect();
    let system = rss.iter().find(|(n, _)| *n == "System").and_then(|r| r.1);
    let widths = [9, 15, 12, 14, 17];
    println!(
        "{:<9}  {:>15}  {:>12}  {:>14}  {:>17}",
        "allocator", "peak RSS (HWM)", "above start", "HWM vs System", "above vs System"
    );
    println!("{}", rule(&widths));
    for (name, r) in &rss {
        match (r, system) {
            (Some((hwm, start)), Some((sys_hwm, sys_start))) => {
                let above = hwm.saturating_sub(*start);
                let sys_above = sys_hwm.saturating_sub(sys_start).max(1);
                println!(
                    "{:<9}  {:>15}  {:>12}  {:>13.2}x  {:>16.2}x",
                    name,
                    mib(*hwm),
                    mib(above),
                    *hwm as f64 / sys_hwm as f64,
                    above as f64 / sys_above as f64
                );
            }
            _ => println!("{name:<9}  {:>15}", "unavailable"),
        }
    }
    println!();

    println!("PyMalloc is also this program's #[global_allocator]: its own allocations now");
    println!("(pymem::alloc_stats()):");
    println!();
    println!("{}", pymem::alloc_stats());
    println!();
    let released = pymem::release_free_memory();
    println!(
        "pymem::release_free_memory() returned {released} bytes to the OS. Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
}
