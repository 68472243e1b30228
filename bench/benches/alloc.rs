//! PyMalloc against `System` (glibc malloc), mimalloc, jemalloc and
//! snmalloc.
//!
//! Each allocator is driven through [`GlobalAlloc`] directly
//! (`unsafe { A.alloc(layout) }`) on identical workloads, from the same
//! generic code (`benches/support/alloc_workloads.rs`, shared with
//! `examples/compare.rs`):
//!
//! * `churn`: 1,000 live blocks of random sizes 8..=512 B, replace one per step;
//! * `churn_10k`: the same over 10,000 live blocks (pools fill, so frees into
//!   full pools are common);
//! * `lifo_32B`: 1M x 32 B, then free in reverse;
//! * `fifo`: 1M random sizes 8..=512 B, freed in allocation order;
//! * `cross_thread`: a producer thread allocates 64 B blocks, a consumer
//!   thread frees them, batches of 1,024 over a channel (per block);
//! * `two_threads_churn`: two threads run `churn` at once (wall time per pair);
//! * `realloc_8_to_4096`: alloc 8 B, realloc doubling to 4,096 B, free (per chain);
//! * `fifo_cold`: FIFO with every allocator returning its free memory to
//!   the OS before each round (outside the timed part);
//! * `fifo_after_pause`: FIFO with a 300 ms pause before each round
//!   (outside the timed part) and no release call, as rounds run between
//!   other work (a harness running other allocators in between): what the
//!   allocator's own retention keeps for the next round.
//!
//! Every block is written once per 64-byte cache line. Throughput is in
//! elements = alloc + free pairs (blocks for cross-thread, chains for
//! realloc), so criterion's `thrpt` line is the per-pair rate and
//! 1e9 / thrpt the nanoseconds per pair.
//!
//! This binary does **not** install PyMalloc as its global allocator: the
//! harness's own allocations go to the system allocator for every
//! contestant alike, which keeps the comparison fair.
//!
//! Targets (issue 2; glibc 2.36, mimalloc 3.3, jemalloc 5.3, ns per pair):
//!
//! | workload          | System | mimalloc | jemalloc | PyMalloc target   |
//! |-------------------|--------|----------|----------|-------------------|
//! | churn             | 21.7   | 12.7     | 13.3     | <= 1.0x mimalloc  |
//! | LIFO 32 B         | 19.4   | 12.0     | 16.6     | <= 1.0x mimalloc  |
//! | FIFO              | 117    | 87       | 65       | <= 1.0x mimalloc  |
//! | cross-thread      | 38.2   | 27.3     | 16.3     | <= 1.0x mimalloc  |
//! | two threads churn | 18.4   | 6.7      | 6.3      | <= 1.0x mimalloc  |
//!
//! Peak RSS on churn (measured by `examples/compare.rs`): <= 1.05x System's.
//!
//! Run with `cargo bench --manifest-path bench/Cargo.toml --bench alloc` (a few minutes); one workload with
//! `cargo bench --manifest-path bench/Cargo.toml --bench alloc -- churn`.

#[path = "support/alloc_workloads.rs"]
mod alloc_workloads;
#[path = "support/config.rs"]
mod config;

use std::alloc::{GlobalAlloc, System};
use std::time::Duration;

use alloc_workloads::{PyMallocCall, Workload};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use mimalloc::MiMalloc;
use snmalloc_rs::SnMalloc;
use tikv_jemallocator::Jemalloc;

const SEED: u64 = 0x05EE_D0FA_110C;

fn bench_one<A: GlobalAlloc + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    a: &A,
    w: Workload,
) {
    group.bench_function(name, |b| b.iter_custom(|iters| w.run(a, iters, SEED)));
}

fn workloads(c: &mut Criterion) {
    for w in Workload::ALL {
        let mut group = c.benchmark_group(w.name());
        group.throughput(Throughput::Elements(w.ops_per_unit()));
        if w.ops_per_unit() > 1_000 {
            // One iteration is a whole round of 1M pairs: flat sampling keeps
            // the sample count (and so the run time) small.
            group.sampling_mode(SamplingMode::Flat);
        }
        bench_one(&mut group, "PyMalloc", &PyMallocCall, w);
        bench_one(&mut group, "System", &System, w);
        bench_one(&mut group, "mimalloc", &MiMalloc, w);
        bench_one(&mut group, "jemalloc", &Jemalloc, w);
        bench_one(&mut group, "snmalloc", &SnMalloc, w);
        group.finish();
    }
}

/// FIFO when cold (see `fifo_cold`): each allocator returns its free
/// memory before every round. jemalloc and snmalloc are given no release
/// call (they have none through their Rust crates): for them this is the
/// warm FIFO again.
fn fifo_cold(c: &mut Criterion) {
    extern "C" {
        fn mi_collect(force: bool);
    }
    let mut group = c.benchmark_group("fifo_cold");
    group.throughput(Throughput::Elements(alloc_workloads::ROUND_BLOCKS as u64));
    group.sampling_mode(SamplingMode::Flat);
    let none = || {};
    let cases: [(&str, &dyn Fn(u64) -> Duration); 5] = [
        ("PyMalloc", &|n| {
            alloc_workloads::fifo_cold(&PyMallocCall, n, SEED, &|| {
                pymem::release_free_memory();
            })
        }),
        ("System", &|n| {
            // SAFETY: `malloc_trim` only returns free memory.
            alloc_workloads::fifo_cold(&System, n, SEED, &|| unsafe {
                libc::malloc_trim(0);
            })
        }),
        ("mimalloc", &|n| {
            // SAFETY: `mi_collect` only returns free memory.
            alloc_workloads::fifo_cold(&MiMalloc, n, SEED, &|| unsafe { mi_collect(true) })
        }),
        ("jemalloc", &|n| {
            alloc_workloads::fifo_cold(&Jemalloc, n, SEED, &none)
        }),
        ("snmalloc", &|n| {
            alloc_workloads::fifo_cold(&SnMalloc, n, SEED, &none)
        }),
    ];
    for (name, run) in cases {
        group.bench_function(name, |b| b.iter_custom(run));
    }
    group.finish();
}

/// FIFO after a pause (see `fifo_after_pause`): 300 ms of idleness, longer
/// than PyMalloc's retention window, before every round, for every
/// allocator alike.
fn fifo_after_pause(c: &mut Criterion) {
    let mut group = c.benchmark_group("fifo_after_pause");
    group.throughput(Throughput::Elements(alloc_workloads::ROUND_BLOCKS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let pause = || std::thread::sleep(Duration::from_millis(300));
    let cases: [(&str, &dyn Fn(u64) -> Duration); 5] = [
        ("PyMalloc", &|n| {
            alloc_workloads::fifo_cold(&PyMallocCall, n, SEED, &pause)
        }),
        ("System", &|n| {
            alloc_workloads::fifo_cold(&System, n, SEED, &pause)
        }),
        ("mimalloc", &|n| {
            alloc_workloads::fifo_cold(&MiMalloc, n, SEED, &pause)
        }),
        ("jemalloc", &|n| {
            alloc_workloads::fifo_cold(&Jemalloc, n, SEED, &pause)
        }),
        ("snmalloc", &|n| {
            alloc_workloads::fifo_cold(&SnMalloc, n, SEED, &pause)
        }),
    ];
    for (name, run) in cases {
        group.bench_function(name, |b| b.iter_custom(run));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = workloads, fifo_cold, fifo_after_pause
}
criterion_main!(benches);
