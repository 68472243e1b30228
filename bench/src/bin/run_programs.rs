//! Runs the real programs (`programs/`) under each allocator, interleaved:
//! every repetition runs every program once per allocator, the allocators
//! in an order rotated from one repetition to the next, so that a burst of
//! load on the machine falls on all of them alike. Prints each run, then
//! the medians (workload time and peak RSS) and their geometric means.
//!
//! ```sh
//! cargo build --release --manifest-path bench/Cargo.toml --bins
//! bench/target/release/run_programs [--reps 5] [tokio rayon parse]
//! ```

use std::path::PathBuf;
use std::process::Command;

const ALLOCATORS: [&str; 4] = ["pymem", "glibc", "mimalloc", "jemalloc"];
const PROGRAMS: [&str; 3] = ["tokio", "rayon", "parse"];

struct Run {
    ms: f64,
    hwm_kb: f64,
}

fn run(dir: &PathBuf, allocator: &str, program: &str) -> Run {
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
        hwm_kb: field("hwm_kb="),
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
                    "rep {rep} {program:6} {:9} {:9.1} ms {:8.1} MiB",
                    ALLOCATORS[a],
                    r.ms,
                    r.hwm_kb / 1024.0
                );
                runs[p][a].push(r);
            }
        }
    }
    println!("medians of {reps} (workload ms / peak RSS MiB):");
    print!("{:8}", "program");
    for a in ALLOCATORS {
        print!(" | {a:>19}");
    }
    println!(" | pymem/jemalloc time | pymem/glibc RSS");
    let mut times = vec![Vec::new(); ALLOCATORS.len()];
    let mut rss = vec![Vec::new(); ALLOCATORS.len()];
    for (p, program) in programs.iter().enumerate() {
        print!("{program:8}");
        for a in 0..ALLOCATORS.len() {
            let ms = median(runs[p][a].iter().map(|r| r.ms).collect());
            let mib = median(runs[p][a].iter().map(|r| r.hwm_kb).collect()) / 1024.0;
            times[a].push(ms);
            rss[a].push(mib);
            print!(" | {ms:8.1} / {mib:8.1}");
        }
        println!(
            " | {:19.3} | {:15.3}",
            times[0][p] / times[3][p],
            rss[0][p] / rss[1][p]
        );
    }
    // Geometric means relative to glibc, so programs weigh alike.
    print!("{:8}", "geomean");
    let mut gt = Vec::new();
    let mut gr = Vec::new();
    for a in 0..ALLOCATORS.len() {
        let t: Vec<f64> = (0..programs.len()).map(|p| times[a][p] / times[1][p]).collect();
        let r: Vec<f64> = (0..programs.len()).map(|p| rss[a][p] / rss[1][p]).collect();
        gt.push(geomean(&t));
        gr.push(geomean(&r));
        print!(" | {:8.3} / {:8.3}", gt[a], gr[a]);
    }
    println!(" | {:19.3} | {:15.3}", gt[0] / gt[3], gr[0] / gr[1]);
    println!("(geomean row: time and RSS relative to glibc)");
}
