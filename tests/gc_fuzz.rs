//! An operation-sequence fuzzer for `Gc` (issue 12): seeded random
//! programs over the safe API, each step checked against a reference
//! model of what the contract (DESIGN.md) promises.
//!
//! * `tests/gc_fuzz/program.rs`: the programs (data, from a seed alone);
//! * `tests/gc_fuzz/heap.rs`: the object type, whose `Drop`, finalizer and
//!   weak callbacks run scripts (allocate, collect, resurrect, unwrap,
//!   register callbacks, panic), and the event log;
//! * `tests/gc_fuzz/model.rs`: the model and its checks;
//! * `tests/gc_fuzz/exec.rs`: the executor (handles, scopes that hold a
//!   `RefCell` borrow, a `get_mut` or a `new_cyclic` closure open while
//!   operations run, the audit of the real graph).
//!
//! Environment (all optional):
//! * `PYMEM_FUZZ_SEEDS=N`, `A..B` or `A..`: the seeds (default `0..16`);
//! * `PYMEM_FUZZ_OPS=N`: top-level operations per program (default 250);
//! * `PYMEM_FUZZ_SECONDS=S`: keep taking seeds from the first one until
//!   `S` seconds have passed (overrides the end of the range);
//! * `PYMEM_FUZZ_GET_MUT=0|1`: the operations run while a `Gc::get_mut`
//!   borrow is alive (on by default since issue 12 item 1 was fixed);
//! * `PYMEM_FUZZ_TOLERATE=all` or `=a,b`: tolerate, narrowly, the bugs the
//!   model knows (`model::Tolerate`, each named after its test in
//!   `tests/gc_regressions.rs`; all fixed), to run against older commits;
//! * `PYMEM_FUZZ_NO_CALLBACKS=1`: no finalizers and weak callbacks (to run
//!   under Miri against commits before `last_drop`'s fix);
//! * `PYMEM_FUZZ_TRACE=1`: print every operation and event;
//! * `PYMEM_FUZZ_COVERAGE=1`: print what the run exercised;
//! * `PYMEM_FUZZ_PROGRESS=1`: print each seed as it starts (to find the
//!   seed of a crash).
//!
//! To minimize a failing seed (in child processes, so that crashes and
//! AddressSanitizer reports minimize too):
//! `PYMEM_FUZZ_SEED=S cargo test --test gc_fuzz minimize -- --ignored --nocapture`.
//!
//! Runs over `PyMalloc`, so that `scripts/asan.sh` sees pool memory too.
//! Under Miri, over the system allocator, it checks the aliasing rules
//! too (slowly: about 3 operations a second):
//! `MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks"
//! PYMEM_FUZZ_NO_CALLBACKS=1 PYMEM_FUZZ_SEEDS=0..4 PYMEM_FUZZ_OPS=80
//! cargo +nightly miri test --test gc_fuzz -- gc_fuzz --exact` (without
//! `-Zmiri-disable-isolation` Miri passes no environment variable; the
//! leaks are allocations panics leave behind: a value whose `Drop`
//! panicked on the refcount path, drops queued by the trashcan).

// (Miri runs it over the system allocator.)
#[cfg(not(miri))]
#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

mod common;

#[path = "gc_fuzz/exec.rs"]
mod exec;
#[path = "gc_fuzz/heap.rs"]
mod heap;
#[path = "gc_fuzz/model.rs"]
mod model;
#[path = "gc_fuzz/program.rs"]
mod program;

use std::process::Command;
use std::time::{Duration, Instant};

use exec::{Fail, RunCfg, World};
use program::{program, GenCfg, Op};

/// Whether the operations inside `GetMut` scopes run by default
/// (`PYMEM_FUZZ_GET_MUT=0` turns them off, e.g. to bisect before issue 12
/// item 1 was fixed: `Gc::get_mut` let the collector trace a mutably
/// borrowed value).
const GET_MUT_OPS_DEFAULT: bool = true;

/// Default top-level operations per program, and seeds.
const OPS: usize = 250;
const SEEDS: std::ops::Range<u64> = 0..16;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn flag(name: &str, default: bool) -> bool {
    env(name).map_or(default, |v| {
        !matches!(v.as_str(), "0" | "false" | "no" | "off")
    })
}

fn seeds() -> std::ops::Range<u64> {
    match env("PYMEM_FUZZ_SEEDS") {
        None => SEEDS,
        Some(s) => match s.split_once("..") {
            Some((a, "")) => a.parse().expect("PYMEM_FUZZ_SEEDS=A..")..u64::MAX,
            Some((a, b)) => {
                a.parse().expect("PYMEM_FUZZ_SEEDS=A..B")..b.parse().expect("PYMEM_FUZZ_SEEDS=A..B")
            }
            None => 0..s.parse().expect("PYMEM_FUZZ_SEEDS=N"),
        },
    }
}

fn ops() -> usize {
    env("PYMEM_FUZZ_OPS").map_or(OPS, |s| s.parse().expect("PYMEM_FUZZ_OPS=N"))
}

fn run_cfg() -> RunCfg {
    // Every bug the model knows is fixed, so nothing is tolerated unless
    // asked (to run against an older commit): `PYMEM_FUZZ_TOLERATE=all`
    // or a list of the names below.
    let asked = env("PYMEM_FUZZ_TOLERATE").unwrap_or_default();
    let tolerate = |name: &str| {
        matches!(asked.as_str(), "1" | "true" | "all") || asked.split(',').any(|s| s == name)
    };
    RunCfg {
        get_mut_ops: flag("PYMEM_FUZZ_GET_MUT", GET_MUT_OPS_DEFAULT),
        trace: flag("PYMEM_FUZZ_TRACE", false),
        tolerate: model::Tolerate {
            early_callback_in_deep_drop: tolerate("early_callback_in_deep_drop"),
            queued_after_panic: tolerate("queued_after_panic"),
            callback_lost_on_panic: tolerate("callback_lost_on_panic"),
        },
    }
}

type Coverage = std::collections::BTreeMap<String, u64>;

/// Keeps the panics the fuzzer raises on purpose off stderr.
fn quiet_fuzz_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = common::panic_message(info.payload()).unwrap_or_default();
            // (A zombie's deref panics on purpose too; one that escapes
            // is reported as an unexpected panic.)
            let expected = msg.starts_with(heap::FUZZ_PANIC) || msg.contains("already dropped");
            if !expected || flag("PYMEM_FUZZ_TRACE", false) {
                prev(info);
            }
        }));
    });
}

/// The program of `seed`, without finalizers and weak callbacks if
/// `PYMEM_FUZZ_NO_CALLBACKS` says so.
fn program_of(seed: u64, n: usize) -> Vec<Op> {
    let prog = program(seed, GenCfg { ops: n });
    if flag("PYMEM_FUZZ_NO_CALLBACKS", false) {
        program::without_callbacks(prog)
    } else {
        prog
    }
}

/// Runs `prog` on a fresh thread (a fresh collector); the first failure.
fn run(prog: Vec<Op>, cfg: RunCfg) -> Result<Coverage, Fail> {
    quiet_fuzz_panics();
    let t = std::thread::Builder::new()
        .name("gc-fuzz".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let mut w = World::new(cfg);
            let mut r = Ok(());
            for op in &prog {
                r = w.run_top(op);
                if r.is_err() {
                    break;
                }
            }
            if r.is_ok() {
                r = w.teardown();
            }
            if r.is_err() {
                // Leave without running the scripts again.
                heap::set_armed(false);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(w)));
                return r.map(|_| Coverage::new());
            }
            let mut c = std::mem::take(&mut w.coverage);
            c.insert("objects".into(), w.model.nodes.len() as u64);
            Ok(c)
        })
        .unwrap();
    match t.join() {
        Ok(r) => r,
        Err(p) => Err(Fail {
            at: 0,
            op: "<harness>".into(),
            msgs: vec![format!(
                "the fuzz thread panicked: {:?}",
                common::panic_message(&*p)
            )],
        }),
    }
}

#[test]
fn gc_fuzz() {
    let cfg = run_cfg();
    let n = ops();
    let range = seeds();
    let budget =
        env("PYMEM_FUZZ_SECONDS").map(|s| Duration::from_secs_f64(s.parse().expect("seconds")));
    let start = Instant::now();
    let mut seed = range.start;
    let mut total_ops = 0;
    let mut coverage = Coverage::new();
    loop {
        let done = match budget {
            Some(b) => start.elapsed() >= b,
            None => seed >= range.end,
        };
        if done {
            break;
        }
        let prog = program_of(seed, n);
        total_ops += program::size(&prog);
        if flag("PYMEM_FUZZ_PROGRESS", false) {
            eprintln!("gc fuzz: seed {seed}");
        }
        match run(prog, cfg) {
            Ok(c) => {
                for (k, v) in c {
                    *coverage.entry(k).or_default() += v;
                }
            }
            Err(f) => panic!(
                "gc fuzz: seed {seed} ({n} ops, get_mut ops {}) failed at {f}\n\
                 reproduce: PYMEM_FUZZ_SEEDS={seed}..{} PYMEM_FUZZ_OPS={n} PYMEM_FUZZ_TRACE=1 \
                 cargo test --test gc_fuzz gc_fuzz -- --nocapture\n\
                 minimize: PYMEM_FUZZ_SEED={seed} PYMEM_FUZZ_OPS={n} cargo test --test gc_fuzz \
                 minimize -- --ignored --nocapture",
                cfg.get_mut_ops,
                seed + 1
            ),
        }
        seed += 1;
    }
    eprintln!(
        "gc fuzz: seeds {}..{seed}, {n} top-level ops each ({total_ops} in all), get_mut ops {}, {:.1}s",
        range.start,
        cfg.get_mut_ops,
        start.elapsed().as_secs_f64()
    );
    if flag("PYMEM_FUZZ_COVERAGE", false) {
        for (k, v) in &coverage {
            eprintln!("  {v:>9}  {k}");
        }
    }
}

// ---------------------------------------------------------------------------
// minimizing

const CHILD: &str = "PYMEM_FUZZ_CHILD_DELETE";

/// The program of `PYMEM_FUZZ_SEED` after the deletions `spec` (`p12`:
/// the operation at pre-order position 12; `r3-9`: top-level operations
/// 3..9), applied in order.
fn shrunk(seed: u64, n: usize, spec: &str) -> Vec<Op> {
    let mut prog = program_of(seed, n);
    for d in spec.split(',').filter(|s| !s.is_empty()) {
        if let Some(p) = d.strip_prefix('p') {
            prog = program::without(&prog, p.parse().unwrap());
        } else if let Some(r) = d.strip_prefix('r') {
            let (a, b) = r.split_once('-').unwrap();
            prog = program::without_range(&prog, a.parse().unwrap(), b.parse().unwrap());
        }
    }
    prog
}

/// In a child: runs the shrunk program and prints its failure's key.
#[test]
fn minimize_child() {
    let Some(spec) = std::env::var(CHILD).ok() else {
        return;
    };
    let seed: u64 = env("PYMEM_FUZZ_SEED").unwrap().parse().unwrap();
    let prog = shrunk(seed, ops(), &spec);
    if let Err(f) = run(prog, run_cfg()) {
        println!("\nFUZZ-FAIL-KEY: {}", f.key());
        println!("FUZZ-FAIL: {f}");
    }
}

/// The failure key of the shrunk program, run in a child process: `None`
/// if it passes, `crash` if the child died.
fn child_key(spec: &str) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "minimize_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if env("PYMEM_FUZZ_DEBUG_CHILD").is_some() {
        eprintln!(
            "child {spec}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some((_, k)) = stdout.lines().find_map(|l| l.split_once("FUZZ-FAIL-KEY: ")) {
        return Some(k.to_string());
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let asan = err
            .lines()
            .find(|l| l.contains("ERROR: AddressSanitizer"))
            .map(|l| l.split(" on address").next().unwrap_or(l).to_string());
        return Some(format!(
            "crash: {}",
            asan.unwrap_or_else(|| format!("{:?}", out.status))
        ));
    }
    None
}

#[test]
#[ignore = "run by hand: PYMEM_FUZZ_SEED=S cargo test --test gc_fuzz minimize -- --ignored --nocapture"]
fn minimize() {
    let seed: u64 = env("PYMEM_FUZZ_SEED")
        .expect("PYMEM_FUZZ_SEED")
        .parse()
        .unwrap();
    let n = ops();
    let Some(key) = child_key("") else {
        panic!("seed {seed} with {n} ops passes");
    };
    eprintln!("minimizing seed {seed}: {key}");
    let mut spec = String::new();
    let with = |spec: &str, d: String| {
        if spec.is_empty() {
            d
        } else {
            format!("{spec},{d}")
        }
    };
    // Top-level ranges, halving.
    let mut chunk = n / 2;
    while chunk >= 1 {
        let mut i = 0;
        loop {
            let len = shrunk(seed, n, &spec).len();
            if i >= len {
                break;
            }
            let cand = with(&spec, format!("r{i}-{}", (i + chunk).min(len)));
            if child_key(&cand).as_deref() == Some(&key) {
                spec = cand;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    // Single operations, nested ones included, until nothing goes.
    loop {
        let mut progress = false;
        let mut p = 0;
        while p < program::size(&shrunk(seed, n, &spec)) {
            let cand = with(&spec, format!("p{p}"));
            if child_key(&cand).as_deref() == Some(&key) {
                spec = cand;
                progress = true;
            } else {
                p += 1;
            }
        }
        if !progress {
            break;
        }
    }
    let prog = shrunk(seed, n, &spec);
    eprintln!(
        "minimized ({} operations), {key}\nPYMEM_FUZZ_CHILD_DELETE={spec}\n{prog:#?}",
        program::size(&prog)
    );
}
