//! `realloc` growth: PyMalloc against `System` (glibc), mimalloc and
//! jemalloc, each driven through [`GlobalAlloc`] directly (PyMalloc through
//! the non-inlined `PyMallocCall`, as the others are reached through a
//! call into C).
//!
//! Rows (throughput in elements = `realloc` calls, so 1e9 / thrpt is the
//! nanoseconds per call; the chain's first `alloc` and last `dealloc` are
//! inside the timing and counted in none):
//!
//! * `step8_8_to_4096`: alloc 8 B, grow by 8 B at a time up to 4,096 B
//!   (511 reallocs), free; the new 8 bytes are written after each step.
//!   The row of issue 10 (held-out: glibc 38.7, mimalloc 31.0,
//!   jemalloc 23.7, snmalloc 3.7 ns).
//! * `step8_8_to_512`: the same, only within PyMalloc's pools (63 reallocs).
//! * `step8_520_to_4096`: the same, only above the small threshold
//!   (447 reallocs).
//! * `step8_interleaved`: 16 blocks grow by 8 B each in turn from 8 B to
//!   4,096 B, as 16 strings built side by side do; nobody's block sits at
//!   the top of its heap, so in-place growth must come from the size class.
//! * `doubling_8_to_4096`: the chain of `benches/alloc.rs` (alloc 8 B,
//!   realloc doubling to 4,096 B, free; 9 reallocs).
//!
//! Targets (issue 10 item 2): `step8_8_to_4096` and `doubling` <= 1.0x
//! System and <= 1.0x mimalloc.
//!
//! Run with `cargo bench --manifest-path bench/Cargo.toml --bench realloc`.

#[path = "support/alloc_workloads.rs"]
mod alloc_workloads;
#[path = "support/config.rs"]
mod config;

use std::alloc::{handle_alloc_error, GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use alloc_workloads::{realloc_growth, touch, PyMallocCall};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

/// Growth step of the `step8` rows.
const STEP: usize = 8;
/// Blocks growing side by side in `step8_interleaved`.
const INTERLEAVED: usize = 16;

#[inline]
fn layout(size: usize) -> Layout {
    // Alignment 8, as `Vec<u64>` or a C string buffer asks for.
    Layout::from_size_align(size, 8).expect("a valid layout")
}

/// Grows `p` (live with `size` bytes) to `new_size`, writing the new bytes.
#[inline]
fn grow<A: GlobalAlloc>(a: &A, p: *mut u8, size: usize, new_size: usize) -> *mut u8 {
    // SAFETY: `p` is live with `layout(size)` and `new_size` is valid.
    let q = unsafe { a.realloc(p, layout(size), new_size) };
    if q.is_null() {
        handle_alloc_error(layout(new_size));
    }
    // SAFETY: the block now holds `new_size` bytes.
    unsafe { q.add(size).write_bytes(0x5A, new_size - size) };
    q
}

/// `chains` times: alloc `from` bytes, grow by [`STEP`] to `to`, free.
fn step_chain<A: GlobalAlloc>(a: &A, chains: u64, from: usize, to: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..chains {
        let l = layout(from);
        // SAFETY: non-zero size.
        let mut p = unsafe { a.alloc(l) };
        if p.is_null() {
            handle_alloc_error(l);
        }
        touch(p, from);
        let mut size = from;
        while size < to {
            p = grow(a, p, size, size + STEP);
            size += STEP;
        }
        // SAFETY: `p` is live with `layout(size)`.
        unsafe { a.dealloc(black_box(p), layout(size)) };
    }
    start.elapsed()
}

/// `rounds` times: [`INTERLEAVED`] blocks of 8 B grow by [`STEP`] in turn
/// up to 4,096 B, then are freed.
fn interleaved<A: GlobalAlloc>(a: &A, rounds: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        let mut blocks = [std::ptr::null_mut::<u8>(); INTERLEAVED];
        for b in blocks.iter_mut() {
            // SAFETY: non-zero size.
            *b = unsafe { a.alloc(layout(STEP)) };
            if b.is_null() {
                handle_alloc_error(layout(STEP));
            }
            touch(*b, STEP);
        }
        let mut size = STEP;
        while size < 4_096 {
            for b in blocks.iter_mut() {
                *b = grow(a, *b, size, size + STEP);
            }
            size += STEP;
        }
        for &b in &blocks {
            // SAFETY: every block is live with `layout(size)`.
            unsafe { a.dealloc(black_box(b), layout(size)) };
        }
    }
    start.elapsed()
}

fn steps(from: usize, to: usize) -> u64 {
    ((to - from) / STEP) as u64
}

fn row<F>(c: &mut Criterion, name: &str, per_unit: u64, run: F)
where
    F: Fn(&dyn Contestant, u64) -> Duration,
{
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(per_unit));
    for contestant in CONTESTANTS {
        bench_one(&mut group, *contestant, &run);
    }
    group.finish();
}

fn bench_one<F>(group: &mut BenchmarkGroup<'_, WallTime>, who: &dyn Contestant, run: &F)
where
    F: Fn(&dyn Contestant, u64) -> Duration,
{
    group.bench_function(who.name(), |b| b.iter_custom(|iters| run(who, iters)));
}

/// An allocator under test, behind one dynamic call per workload (not per
/// allocation: each workload is monomorphised for its allocator).
trait Contestant: Sync {
    fn name(&self) -> &'static str;
    fn step_chain(&self, chains: u64, from: usize, to: usize) -> Duration;
    fn interleaved(&self, rounds: u64) -> Duration;
    fn doubling(&self, chains: u64) -> Duration;
}

struct Named<A>(&'static str, A);

impl<A: GlobalAlloc + Sync> Contestant for Named<A> {
    fn name(&self) -> &'static str {
        self.0
    }
    fn step_chain(&self, chains: u64, from: usize, to: usize) -> Duration {
        step_chain(&self.1, chains, from, to)
    }
    fn interleaved(&self, rounds: u64) -> Duration {
        interleaved(&self.1, rounds)
    }
    fn doubling(&self, chains: u64) -> Duration {
        realloc_growth(&self.1, chains)
    }
}

const CONTESTANTS: &[&dyn Contestant] = &[
    &Named("PyMalloc", PyMallocCall),
    &Named("System", System),
    &Named("mimalloc", MiMalloc),
    &Named("jemalloc", Jemalloc),
];

fn realloc_rows(c: &mut Criterion) {
    row(c, "step8_8_to_4096", steps(8, 4_096), |a, n| {
        a.step_chain(n, 8, 4_096)
    });
    row(c, "step8_8_to_512", steps(8, 512), |a, n| {
        a.step_chain(n, 8, 512)
    });
    row(c, "step8_520_to_4096", steps(520, 4_096), |a, n| {
        a.step_chain(n, 520, 4_096)
    });
    row(
        c,
        "step8_interleaved",
        INTERLEAVED as u64 * steps(8, 4_096),
        |a, n| a.interleaved(n),
    );
    row(c, "doubling_8_to_4096", 9, |a, n| a.doubling(n));
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = realloc_rows
}
criterion_main!(benches);
