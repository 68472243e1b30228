//! Building a large tracked structure with automatic collection on must stay
//! linear (issue 3): CPython's long-lived rule runs a full collection only
//! when the objects promoted since the last one exceed 25% of those that
//! survived it, so 10x the objects may cost at most 11x the time.
//!
//! `build/N` builds N tracked nodes, each holding the previous node and kept
//! alive by a `Vec`, with the collector's default thresholds; criterion's
//! per-element time at N = 100,000 and N = 1,000,000 should be about equal.
//! The structure is dropped outside the timed part. `build_rc/N` builds
//! the same with `Rc`: the memory hierarchy makes per-object costs grow with
//! N for both, so the ratio of the two growths isolates the collector's.
//!
//! Run: `cargo bench --manifest-path bench/Cargo.toml --bench gc_scaling`.

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pymem::{gc, Gc, Trace};

#[derive(Trace)]
struct Node {
    id: u64,
    prev: Option<Gc<Node>>,
}

fn build(n: usize) -> Vec<Gc<Node>> {
    let mut all = Vec::with_capacity(n);
    let mut prev: Option<Gc<Node>> = None;
    for id in 0..n as u64 {
        let node = Gc::new(Node {
            id,
            prev: prev.take(),
        });
        prev = Some(node.clone());
        all.push(node);
    }
    all
}

/// The same structure with `Rc`, to separate the memory hierarchy's share
/// of any growth in per-object cost from the collector's.
struct RcNode {
    id: u64,
    // Held for the structure's shape; never read.
    _prev: Option<Rc<RcNode>>,
}

fn build_rc(n: usize) -> Vec<Rc<RcNode>> {
    let mut all = Vec::with_capacity(n);
    let mut prev: Option<Rc<RcNode>> = None;
    for id in 0..n as u64 {
        let node = Rc::new(RcNode {
            id,
            _prev: prev.take(),
        });
        prev = Some(node.clone());
        all.push(node);
    }
    all
}

/// Drops a chain front to back so `Rc`'s recursive drop cannot overflow.
fn drop_rc_chain(mut all: Vec<Rc<RcNode>>) {
    while let Some(node) = all.pop() {
        drop(node);
    }
}

/// Times `build(n)` for both sizes; `check` looks at the last node and
/// `dispose` drops the structure outside the timed part.
fn bench_builds<V>(
    c: &mut Criterion,
    name: &str,
    build: fn(usize) -> V,
    check: fn(&V, usize),
    dispose: fn(V),
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for n in [100_000usize, 1_000_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(n.to_string(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    gc::collect();
                    let start = Instant::now();
                    let built = black_box(build(n));
                    total += start.elapsed();
                    check(&built, n);
                    dispose(built);
                }
                total
            })
        });
    }
    group.finish();
}

fn scaling(c: &mut Criterion) {
    bench_builds(
        c,
        "build",
        build,
        |v, n| assert_eq!(v[n - 1].id, n as u64 - 1),
        drop,
    );
    bench_builds(
        c,
        "build_rc",
        build_rc,
        |v, n| assert_eq!(v[n - 1].id, n as u64 - 1),
        drop_rc_chain,
    );
}

criterion_group!(benches, scaling);
criterion_main!(benches);
