//! Runs the real programs (`programs/`) under each allocator, interleaved:
//! every repetition runs every program once per allocator, the allocators
//! in an order rotated from one repetition to the next, so that a burst of
//! load on the machine falls on all of them alike. Prints each run, then
//! the medians (workload time, page faults and peak RSS) and their geometric means.
//!
//! ```sh
//! cargo build --release --manifest-path bench/Cargo.toml --bins
//! bench/target/release/run_programs [--reps 5] [tokio rayon parse]
//! ```

use std::path::Path;
use std::process::Command;

const ALLOCATORS: [&str; 4] = ["pymem", "glibc", "mimalloc", "jemalloc"];
const PROGRAMS: [&str; 3] = ["tokio", "rayon", "parse"];

struct Run {
    ms: f64,
    cpu_ms: f64,
    faults: f64,
    hwm_kb: f64,
}

fn run(dir: &Path, allocator: &str, program: &str) -> Run {
    let exe = dir.join(format!("prog_{allocator}"));
    let out = Command::new(&exe)
        .arg(program)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && line.contains("check=ok"),
        "{allocator} {program} failed: {line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    Run {
        ms: field("ms="),
        cpu_ms: field("cpu_ms="),
        faults: field("faults="),
        hwm_kb: field("hwm_kb="),
    }
}

/// A table to print: its title, the figure of a run, and the allocator
/// pymem's figure is divided by in the last column.
type Metric = (&'static str, fn(&Run) -> f64, usize);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

fn main() {
    let mut reps = 5;
    let mut programs: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            reps = args.next().and_then(|n| n.parse().ok()).expect("--reps N");
        } else if PROGRAMS.contains(&a.as_str()) {
            programs.push(a);
        } else {
            eprintln!("usage: run_programs [--reps N] [{}]", PROGRAMS.join(" "));
            std::process::exit(2);
        }
    }
    if programs.is_empty() {
        programs = PROGRAMS.iter().map(|p| p.to_string()).collect();
    }
    let dir = std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("a directory")
        .to_path_buf();
    // runs[program][allocator] = every repetition's figures
    let mut runs: Vec<Vec<Vec<Run>>> = programs
        .iter()
        .map(|_| ALLOCATORS.iter().map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..reps {
        for (p, program) in programs.iter().enumerate() {
            for k in 0..ALLOCATORS.len() {
                let a = (k + rep) % ALLOCATORS.len();
                let r = run(&dir, ALLOCATORS[a], program);
                eprintln!(
                    "rep {rep} {program:6} {:9} {:9.1} ms {:9.1} ms CPU {:8.0} faults {:8.1} MiB",
                    ALLOCATORS[a],
                    r.ms,
                    r.cpu_ms,
                    r.faults,
                    r.hwm_kb / 1024.0
                );
                runs[p][a].push(r);
            }
        }
    }
    let metrics: [Metric; 4] = [
        ("workload wall time, ms", |r| r.ms, 3),
        ("workload CPU time (all threads), ms", |r| r.cpu_ms, 3),
        ("workload minor page faults", |r| r.faults, 3),
        ("peak RSS (VmHWM), MiB", |r| r.hwm_kb / 1024.0, 1),
    ];
    for (title, metric, versus) in metrics {
        table(&programs, &runs, reps, title, metric, versus);
    }
}

/// One table: the medians of `metric` per program and allocator, pymem's
/// ratio to allocator `versus` (jemalloc for times, glibc for RSS), and
/// the geometric means relative to glibc.
fn table(
    programs: &[String],
    runs: &[Vec<Vec<Run>>],
    reps: usize,
    title: &str,
    metric: fn(&Run) -> f64,
    versus: usize,
) {
    println!();
    println!("{title}, medians of {reps}:");
    print!("{:8}", "program");
    for a in ALLOCATORS {
        print!(" | {a:>9}");
    }
    println!(" | pymem/{}", ALLOCATORS[versus]);
    let mut med = vec![Vec::new(); ALLOCATORS.len()];
    for (p, program) in programs.iter().enumerate() {
        print!("{program:8}");
        for a in 0..ALLOCATORS.len() {
            med[a].push(median(runs[p][a].iter().map(metric).collect()));
            print!(" | {:9.1}", med[a][p]);
        }
        println!(" | {:.3}", med[0][p] / med[versus][p]);
    }
    print!("{:8}", "geomean");
    let g: Vec<f64> = (0..ALLOCATORS.len())
        .map(|a| {
            geomean(
                &(0..programs.len())
                    .map(|p| med[a][p] / med[1][p])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    for x in &g {
        print!(" | {x:9.3}");
    }
    println!(" | {:.3}   (geomean: relative to glibc)", g[0] / g[versus]);
}
