//! The memory-return shapes of issue 8 at full size, PyMalloc beside glibc
//! and mimalloc: resident set (MB) at each point of each shape, one child
//! process per allocator and shape. Not a criterion bench: it prints a
//! table. Run with
//! `cargo bench --manifest-path bench/Cargo.toml --bench alloc_shapes`.
//!
//! "release" is `release_free_memory()` / `malloc_trim(0)` /
//! `mi_collect(true)`, called on the main thread. The workloads (in
//! `tests/common/alloc_shapes.rs`, shared with `tests/alloc_shapes.rs`)
//! drive each allocator through `GlobalAlloc`; this binary's own global
//! allocator is glibc's.

#[path = "../../tests/common/alloc_shapes.rs"]
mod alloc_shapes;
#[path = "support/alloc_workloads.rs"]
mod alloc_workloads;
/// The PRNG the shapes use, the one `alloc_workloads` already includes.
mod rng {
    pub use super::alloc_workloads::SplitMix64;
}

use std::alloc::{GlobalAlloc, System};
use std::process::Command;
use std::time::Duration;

use alloc_shapes::{rss_mb, Trickle};
use alloc_workloads::PyMallocCall;
use mimalloc::MiMalloc;

extern "C" {
    fn mi_collect(force: bool);
}

const MB500: usize = 500_000_000;
const MB400: usize = 400_000_000;

fn point(what: &str) {
    println!("{what}\t{:.1}", rss_mb());
}

fn run<A: GlobalAlloc + Sync>(a: &'static A, release: fn(), shape: &str, background: bool) {
    if background {
        pymem::purge_in_background(Some(Duration::from_millis(100)));
    }
    match shape {
        "server" => {
            let (workers, freers) = alloc_shapes::server(a, 4, 4, MB500);
            if background {
                let (rss, t) = alloc_shapes::wait_for_rss(32.0, Duration::from_secs(1));
                println!("server, background purge 100 ms, within 1 s\t{rss:.1} (after {t:?})");
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
            point("server: idle 1 s");
            release();
            point("server: after release on main");
            freers.exit();
            release();
            point("server: freeing threads exited, + release");
            workers.exit();
        }
        "spike" => {
            let worker = alloc_shapes::spike_then_block(a, MB400);
            if background {
                let (rss, t) = alloc_shapes::wait_for_rss(32.0, Duration::from_secs(1));
                println!("spike, background purge 100 ms, within 1 s\t{rss:.1} (after {t:?})");
                return;
            }
            std::thread::sleep(Duration::from_secs(5));
            point("spike then block: after 5 s");
            release();
            point("spike then block: after release on main");
            worker.exit();
        }
        "exited" => {
            alloc_shapes::random_frees_of_exited_threads(a, 32, 290_000_000);
            std::thread::sleep(Duration::from_secs(2));
            point("exited threads, random frees: 2 s idle");
            let trickle = Trickle::start(a, Duration::from_millis(10));
            std::thread::sleep(Duration::from_secs(1));
            point("exited threads: 1 s with another thread allocating");
            trickle.stop();
            release();
            point("exited threads: after release");
        }
        "waves" => {
            alloc_shapes::waves(a, 10_000, 200, 64 << 10);
            release();
            point("10,000 threads in waves of 200: after release");
        }
        _ => panic!("unknown shape {shape}"),
    }
}

fn child(allocator: &str, shape: &str, background: bool) {
    static PY: PyMallocCall = PyMallocCall;
    static MI: MiMalloc = MiMalloc;
    match allocator {
        "pymem" => run(
            &PY,
            || {
                pymem::release_free_memory();
            },
            shape,
            background,
        ),
        // SAFETY: `malloc_trim` only returns free memory.
        "glibc" => run(
            &System,
            || unsafe {
                libc::malloc_trim(0);
            },
            shape,
            false,
        ),
        // SAFETY: `mi_collect` only returns free memory.
        "mimalloc" => run(&MI, || unsafe { mi_collect(true) }, shape, false),
        _ => panic!("unknown allocator {allocator}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            &args[i + 1],
            &args[i + 2],
            args.get(i + 3).is_some_and(|b| b == "bg"),
        );
        return;
    }
    let me = std::env::current_exe().expect("this binary");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let allocators = ["pymem", "glibc", "mimalloc"];
    for shape in ["server", "spike", "exited", "waves"] {
        for (col, allocator) in allocators.iter().enumerate() {
            let out = Command::new(&me)
                .args(["--child", allocator, shape])
                .output()
                .expect("run a child");
            assert!(out.status.success(), "{allocator} {shape}: {out:?}");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((what, mb)) = line.split_once('\t') else {
                    continue;
                };
                match rows.iter_mut().find(|(w, _)| w == what) {
                    Some((_, cells)) => cells[col] = mb.to_string(),
                    None => {
                        let mut cells = vec![String::new(); allocators.len()];
                        cells[col] = mb.to_string();
                        rows.push((what.to_string(), cells));
                    }
                }
            }
        }
    }
    for shape in ["server", "spike"] {
        let out = Command::new(&me)
            .args(["--child", "pymem", shape, "bg"])
            .output()
            .expect("run a child");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((what, mb)) = line.split_once('\t') {
                rows.push((
                    what.to_string(),
                    vec![mb.to_string(), String::new(), String::new()],
                ));
            }
        }
    }
    println!("| scenario (RSS, MB) | pymem | glibc | mimalloc |");
    println!("|---|---|---|---|");
    for (what, cells) in rows {
        println!("| {what} | {} |", cells.join(" | "));
    }
}
