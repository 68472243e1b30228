//! `pymem::Gc` beside `std::rc::Rc` and the peer cycle collectors
//! (`gcmodule` 0.3, `bacon_rajan_cc` 0.4, `rust-cc` 0.6, `dumpster` 2.1,
//! unsync flavours), all on the system allocator, on the same workloads.
//! Criterion prints per-object rates (`Throughput::Elements`).
//!
//! Groups (issue 3, item 9; targets from issue 3 in brackets):
//!
//! * `leaf_untracked`: create and drop 1M leaf objects holding a `u64`,
//!   one at a time [<= 1.05x `Rc`]. `leaf_tracked`: the same with a node
//!   type that may hold a pointer (tracked by the collectors that track).
//! * `binary_trees`: rust-cc's binary-trees benchmark at depth 11 (trees of
//!   depth 4, 6, 8, 10 built, checked and dropped; 259,424 nodes), then a
//!   collection [<= 1.05x `Rc`].
//! * `rings`: 100k rings of 10 nodes, each dropped as soon as it is built,
//!   then a collection: 1M nodes of cyclic garbage. `Rc` closes each ring
//!   with a `Weak` instead, so plain refcounting frees it [<= 2x `Rc`].
//! * `dlists`: 30 doubly linked lists of 4,096 nodes (strong `next` and
//!   `prev`; `Rc` uses `Weak` for `prev`), each dropped as garbage, then a
//!   collection, as rust-cc's `large_linked_list` [<= 2x `Rc`].
//! * `full_collect_live`: a live heap of 1M tracked nodes (a doubly linked
//!   list, every node also held by a `Vec`) fully collected; ns per live
//!   object per collection [<= 5 ns; gcmodule ~82]. `clean`: nothing
//!   happened since the last collection (a collector may skip the work);
//!   `dirty`: one handle is cloned and dropped before each collection, so
//!   it cannot. Bacon-Rajan-style collectors (bacon_rajan_cc, rust-cc,
//!   dumpster) only trace from candidate roots (handles decremented to a
//!   non-zero count), so for them this measures that, not a full-heap
//!   trace; `Rc` has no collection and is left out.
//! * `clone_drop`: clone and drop one handle to a tracked node, 1,000
//!   times per iteration [<= 1.2x `Rc`].
//! * `deref_untracked`, `deref_tracked`: 1,000 handles to `u64`s / to
//!   tree leaves and nodes, each dereferenced 100 times (a sum) [<= 1.05x
//!   `Rc` for the untracked ones].
//! * `unsized_str`, `unsized_slice_u64`: create and drop 100k `Gc<str>`
//!   (24 bytes) / `Gc<[u64]>` (16 elements) from borrowed data, beside
//!   `Rc<str>` / `Rc<[u64]>` (issue 13) [<= 1.1x `Rc`].
//!
//! The program shapes of issue 9 (targets in brackets):
//!
//! * `rings_held`: 100k rings of 10, each closed by a `RefCell` edge, all
//!   held in a `Vec` while the next are built (automatic collection on),
//!   then the `Vec` is cleared and one collection runs [<= 2x `Rc`].
//! * `big_tree`: one complete binary tree of 2^20 - 1 nodes built,
//!   checked and dropped [<= 1.05x `Rc`].
//! * `parent_trees`: 16 binary trees of depth 10 whose nodes hold a
//!   strong edge to their parent (`Rc`: a `Weak`), dropped, collected
//!   [<= 2x `Rc`].
//! * `stress`: 32K nodes, 32K random edges, then 32 rounds that drop the
//!   last 1/32 of the roots and collect [faster than rust-cc].
//! * `random_graph`: 1M random operations (allocate a root, link two
//!   roots, unlink, drop a root) over at most 1,000 roots, automatic
//!   collection only, one collection at the end; `Rc` runs the same
//!   operations and leaks its cycles [faster than gcmodule].
//!
//! Before each pymem group, `pauses <name>` prints the number of
//! collections of one run and the longest (`gc::callbacks` durations).
//!
//! Times are the benchmark thread's CPU time (set `PYMEM_BENCH_WALL=1`
//! for wall time), 20 samples of equally many iterations per row, after
//! the run's warm-up (`--warm-up-time`, 1 s by default) over the run's
//! `--measurement-time` (2 s by default).
//!
//! Run: `cargo bench --manifest-path bench/Cargo.toml --bench gc` (a few minutes).

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, BenchmarkGroup, Criterion, SamplingMode, Throughput};

/// The clock of every group: the benchmark thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`, user and system time, page faults
/// included), or wall time when `PYMEM_BENCH_WALL` is set. Every workload
/// here runs on one thread, so CPU time is its cost; wall time also counts
/// the time the thread waits for a core, which on a shared 2-core host
/// made the ratios of the same binary swing from 0.87x to 1.66x between
/// runs (issue 9, tenth round).
struct GcClock {
    wall: bool,
}

impl GcClock {
    fn from_env() -> Self {
        GcClock {
            wall: std::env::var_os("PYMEM_BENCH_WALL").is_some(),
        }
    }

    fn now(&self) -> Duration {
        if self.wall {
            // Since a fixed origin, so that `end` can subtract.
            static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            return ORIGIN.get_or_init(std::time::Instant::now).elapsed();
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

impl Measurement for GcClock {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        self.now()
    }
    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }
    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, as wall time's.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// The bench's `Criterion`.
type C = Criterion<GcClock>;

const LEAVES: usize = 1_000_000;
const TREE_DEPTH: usize = 11;
const RINGS: usize = 100_000;
const RING_LEN: usize = 10;
const DLISTS: usize = 30;
const DLIST_LEN: usize = 4096;
const LIVE: usize = 1_000_000;
const CLONES: usize = 1000;

/// Number of nodes rust-cc's `count_binary_trees(max)` builds.
fn tree_nodes(max: usize) -> usize {
    (4..max)
        .step_by(2)
        .map(|d| (1usize << (max - d + 4)) * ((1usize << (d + 1)) - 1))
        .sum()
}

/// Sums `value(handle)` over `handles`, `reps` times: one dereference per
/// handle and repetition.
macro_rules! deref_sum {
    ($handles:expr, $reps:expr, |$h:ident| $value:expr) => {{
        let mut sum = 0u64;
        for _ in 0..$reps {
            for $h in black_box($handles) {
                sum = sum.wrapping_add($value);
            }
        }
        sum
    }};
}

/// Generates the workloads for one collector. `$P` is the pointer type,
/// `$new` makes one, `$collect` runs a full collection.
macro_rules! workloads {
    ($P:ident, $new:expr, $collect:expr) => {
        pub fn leaf_untracked(n: usize) {
            for i in 0..n {
                black_box($new(i as u64));
            }
        }

        pub fn leaf_tracked(n: usize) {
            for _ in 0..n {
                black_box($new(DNode::default()));
            }
        }

        pub fn binary_trees(max: usize) -> usize {
            let mut total = 0;
            for depth in (4..max).step_by(2) {
                let iterations = 1 << (max - depth + 4);
                for _ in 0..iterations {
                    total += $new(TreeNode::new(depth)).check();
                }
            }
            $collect();
            total
        }

        impl TreeNode {
            fn new(depth: usize) -> Self {
                if depth == 0 {
                    return TreeNode::End;
                }
                TreeNode::Nested {
                    left: $new(Self::new(depth - 1)),
                    right: $new(Self::new(depth - 1)),
                }
            }

            fn check(&self) -> usize {
                match self {
                    TreeNode::End => 1,
                    TreeNode::Nested { left, right } => left.check() + right.check() + 1,
                }
            }
        }

        pub fn rings(count: usize, len: usize) {
            for _ in 0..count {
                let first = $new(DNode::default());
                let mut last = first.clone();
                for _ in 1..len {
                    let n = $new(DNode::default());
                    *last.next.borrow_mut() = Some(n.clone());
                    last = n;
                }
                *last.next.borrow_mut() = Some(first);
            }
            $collect();
        }

        pub fn dlists(count: usize, len: usize) -> usize {
            let mut total = 0;
            for _ in 0..count {
                let head = $new(DNode::default());
                let mut tail = head.clone();
                for _ in 1..len {
                    let n = $new(DNode::default());
                    *n.prev.borrow_mut() = Some(tail.clone());
                    *tail.next.borrow_mut() = Some(n.clone());
                    tail = n;
                }
                total += black_box(&head).next.borrow().is_some() as usize;
            }
            $collect();
            total
        }

        pub fn live_heap(n: usize) -> Vec<$P<DNode>> {
            let nodes: Vec<$P<DNode>> = (0..n).map(|_| $new(DNode::default())).collect();
            for w in nodes.windows(2) {
                *w[0].next.borrow_mut() = Some(w[1].clone());
                *w[1].prev.borrow_mut() = Some(w[0].clone());
            }
            $collect();
            nodes
        }

        /// Breaks the heap's links so that dropping it frees everything.
        pub fn free_heap(nodes: Vec<$P<DNode>>) {
            for n in &nodes {
                n.next.borrow_mut().take();
                n.prev.borrow_mut().take();
            }
            drop(nodes);
            $collect();
        }

        pub fn collect_live(nodes: &[$P<DNode>], dirty: usize) {
            if dirty != usize::MAX {
                drop(black_box(nodes[dirty % nodes.len()].clone()));
            }
            $collect();
        }

        pub fn clone_drop(h: &$P<DNode>, n: usize) {
            for _ in 0..n {
                drop(black_box(h.clone()));
            }
        }

        pub fn deref_untracked(handles: &[$P<u64>], reps: usize) -> u64 {
            deref_sum!(handles, reps, |h| **h)
        }

        pub fn deref_tracked(handles: &[$P<TreeNode>], reps: usize) -> u64 {
            deref_sum!(handles, reps, |h| matches!(**h, TreeNode::End) as u64)
        }

        pub fn new_u64(i: u64) -> $P<u64> {
            $new(i)
        }

        /// A leaf for even `i`, a node with two leaves for odd `i`.
        pub fn new_tree(i: u64) -> $P<TreeNode> {
            $new(if i % 2 == 0 {
                TreeNode::End
            } else {
                TreeNode::Nested {
                    left: $new(TreeNode::End),
                    right: $new(TreeNode::End),
                }
            })
        }

        /// Rings built while the earlier ones are held, then all dropped
        /// and collected at once.
        pub fn rings_held(count: usize, len: usize) {
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                let first = $new(DNode::default());
                let mut last = first.clone();
                for _ in 1..len {
                    let n = $new(DNode::default());
                    *last.next.borrow_mut() = Some(n.clone());
                    last = n;
                }
                *last.next.borrow_mut() = Some(first.clone());
                held.push(first);
            }
            held.clear();
            $collect();
        }

        /// One complete binary tree of the given depth, built and dropped.
        pub fn big_tree(depth: usize) -> usize {
            let t = $new(TreeNode::new(depth));
            let n = t.check();
            drop(t);
            $collect();
            n
        }

        /// Binary trees whose nodes point back at their parent (a strong
        /// edge), each dropped as garbage, then one collection.
        pub fn parent_trees(count: usize, depth: usize) -> usize {
            let mut total = 0;
            for _ in 0..count {
                let root = $new(GNode::default());
                let mut level = vec![root.clone()];
                for _ in 0..depth {
                    let mut next = Vec::with_capacity(level.len() * 2);
                    for p in &level {
                        for _ in 0..2 {
                            let c = $new(GNode::default());
                            *c.parent.borrow_mut() = Some(p.clone());
                            p.edges.borrow_mut().push(c.clone());
                            next.push(c);
                        }
                    }
                    total += next.len();
                    level = next;
                }
                total += black_box(&root).edges.borrow().len();
            }
            $collect();
            total
        }

        /// `nodes` nodes, `edges` random edges between them, then `rounds`
        /// rounds that each drop the last 1/rounds of the roots and
        /// collect.
        pub fn stress(nodes: usize, edges: usize, rounds: usize, seed: u64) {
            let mut rng = Rng(seed);
            let mut roots: Vec<$P<GNode>> = (0..nodes).map(|_| $new(GNode::default())).collect();
            for _ in 0..edges {
                let a = rng.below(nodes);
                let b = rng.below(nodes);
                let t = roots[b].clone();
                roots[a].edges.borrow_mut().push(t);
            }
            let step = nodes / rounds;
            for _ in 0..rounds {
                let keep = roots.len().saturating_sub(step);
                roots.truncate(keep);
                $collect();
            }
        }

        /// Random graph operations on a bounded set of roots: allocate a
        /// root, link two roots, unlink, drop a root; automatic
        /// collection only.
        pub fn random_graph(ops: usize, max_roots: usize, seed: u64) -> usize {
            let mut rng = Rng(seed);
            let mut roots: Vec<$P<GNode>> = Vec::with_capacity(max_roots);
            for _ in 0..ops {
                match rng.below(10) {
                    0..=3 => {
                        let n = $new(GNode::default());
                        if roots.len() < max_roots {
                            roots.push(n);
                        } else {
                            let i = rng.below(roots.len());
                            roots[i] = n;
                        }
                    }
                    4..=6 if !roots.is_empty() => {
                        let a = rng.below(roots.len());
                        let b = rng.below(roots.len());
                        let t = roots[b].clone();
                        roots[a].edges.borrow_mut().push(t);
                    }
                    7 if !roots.is_empty() => {
                        let a = rng.below(roots.len());
                        roots[a].edges.borrow_mut().pop();
                    }
                    _ if !roots.is_empty() => {
                        let a = rng.below(roots.len());
                        roots.swap_remove(a);
                    }
                    _ => {}
                }
            }
            let n = roots.len();
            drop(roots);
            $collect();
            n
        }
    };
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
    }
}

mod pm {
    use super::{black_box, Rng};
    use pymem::{gc, Gc, Trace};
    use std::cell::RefCell;

    #[derive(Trace, Default)]
    pub struct DNode {
        next: RefCell<Option<Gc<DNode>>>,
        prev: RefCell<Option<Gc<DNode>>>,
    }

    #[derive(Trace)]
    pub enum TreeNode {
        Nested {
            left: Gc<TreeNode>,
            right: Gc<TreeNode>,
        },
        End,
    }

    #[derive(Trace, Default)]
    pub struct GNode {
        edges: RefCell<Vec<Gc<GNode>>>,
        parent: RefCell<Option<Gc<GNode>>>,
    }

    fn collect() {
        gc::collect();
    }

    workloads!(Gc, Gc::new, collect);
}

mod gcm {
    use super::{black_box, Rng};
    use gcmodule::{Cc, Trace, Tracer};
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct DNode {
        next: RefCell<Option<Cc<DNode>>>,
        prev: RefCell<Option<Cc<DNode>>>,
    }
    impl Trace for DNode {
        fn trace(&self, tracer: &mut Tracer) {
            self.next.trace(tracer);
            self.prev.trace(tracer);
        }
    }

    pub enum TreeNode {
        Nested {
            left: Cc<TreeNode>,
            right: Cc<TreeNode>,
        },
        End,
    }
    impl Trace for TreeNode {
        fn trace(&self, tracer: &mut Tracer) {
            if let TreeNode::Nested { left, right } = self {
                left.trace(tracer);
                right.trace(tracer);
            }
        }
    }

    #[derive(Default)]
    pub struct GNode {
        edges: RefCell<Vec<Cc<GNode>>>,
        parent: RefCell<Option<Cc<GNode>>>,
    }
    impl Trace for GNode {
        fn trace(&self, tracer: &mut Tracer) {
            self.edges.trace(tracer);
            self.parent.trace(tracer);
        }
    }

    fn collect() {
        gcmodule::collect_thread_cycles();
    }

    workloads!(Cc, Cc::new, collect);
}

mod bacon {
    use super::{black_box, Rng};
    use bacon_rajan_cc::{Cc, Trace, Tracer};
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct DNode {
        next: RefCell<Option<Cc<DNode>>>,
        prev: RefCell<Option<Cc<DNode>>>,
    }
    impl Trace for DNode {
        fn trace(&self, tracer: &mut Tracer) {
            self.next.trace(tracer);
            self.prev.trace(tracer);
        }
    }

    pub enum TreeNode {
        Nested {
            left: Cc<TreeNode>,
            right: Cc<TreeNode>,
        },
        End,
    }
    impl Trace for TreeNode {
        fn trace(&self, tracer: &mut Tracer) {
            if let TreeNode::Nested { left, right } = self {
                left.trace(tracer);
                right.trace(tracer);
            }
        }
    }

    #[derive(Default)]
    pub struct GNode {
        edges: RefCell<Vec<Cc<GNode>>>,
        parent: RefCell<Option<Cc<GNode>>>,
    }
    impl Trace for GNode {
        fn trace(&self, tracer: &mut Tracer) {
            self.edges.trace(tracer);
            self.parent.trace(tracer);
        }
    }

    workloads!(Cc, Cc::new, bacon_rajan_cc::collect_cycles);
}

mod rcc {
    use super::{black_box, Rng};
    use rust_cc::Cc;
    use std::cell::RefCell;

    #[derive(rust_cc::Trace, rust_cc::Finalize, Default)]
    pub struct DNode {
        next: RefCell<Option<Cc<DNode>>>,
        prev: RefCell<Option<Cc<DNode>>>,
    }

    #[derive(rust_cc::Trace, rust_cc::Finalize)]
    pub enum TreeNode {
        Nested {
            left: Cc<TreeNode>,
            right: Cc<TreeNode>,
        },
        End,
    }

    #[derive(rust_cc::Trace, rust_cc::Finalize, Default)]
    pub struct GNode {
        edges: RefCell<Vec<Cc<GNode>>>,
        parent: RefCell<Option<Cc<GNode>>>,
    }

    workloads!(Cc, Cc::new, rust_cc::collect_cycles);
}

mod dump {
    use super::{black_box, Rng};
    use dumpster::unsync::Gc;
    use std::cell::RefCell;

    #[derive(dumpster::Trace, Default)]
    pub struct DNode {
        next: RefCell<Option<Gc<DNode>>>,
        prev: RefCell<Option<Gc<DNode>>>,
    }

    #[derive(dumpster::Trace)]
    pub enum TreeNode {
        Nested {
            left: Gc<TreeNode>,
            right: Gc<TreeNode>,
        },
        End,
    }

    #[derive(dumpster::Trace, Default)]
    pub struct GNode {
        edges: RefCell<Vec<Gc<GNode>>>,
        parent: RefCell<Option<Gc<GNode>>>,
    }

    workloads!(Gc, Gc::new, dumpster::unsync::collect);
}

/// `Rc`, breaking every cycle by hand with `Weak`: a ring is closed by a
/// `Weak`, a list's `prev` links are `Weak`.
mod rc {
    use super::black_box;
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};

    #[derive(Default)]
    pub struct DNode {
        next: RefCell<Option<Rc<DNode>>>,
        prev: RefCell<Weak<DNode>>,
        close: RefCell<Weak<DNode>>,
    }

    pub enum TreeNode {
        Nested {
            left: Rc<TreeNode>,
            right: Rc<TreeNode>,
        },
        End,
    }

    pub fn leaf_untracked(n: usize) {
        for i in 0..n {
            black_box(Rc::new(i as u64));
        }
    }

    pub fn leaf_tracked(n: usize) {
        for _ in 0..n {
            black_box(Rc::new(DNode::default()));
        }
    }

    pub fn binary_trees(max: usize) -> usize {
        let mut total = 0;
        for depth in (4..max).step_by(2) {
            let iterations = 1 << (max - depth + 4);
            for _ in 0..iterations {
                total += Rc::new(TreeNode::new(depth)).check();
            }
        }
        total
    }

    impl TreeNode {
        fn new(depth: usize) -> Self {
            if depth == 0 {
                return TreeNode::End;
            }
            TreeNode::Nested {
                left: Rc::new(Self::new(depth - 1)),
                right: Rc::new(Self::new(depth - 1)),
            }
        }

        fn check(&self) -> usize {
            match self {
                TreeNode::End => 1,
                TreeNode::Nested { left, right } => left.check() + right.check() + 1,
            }
        }
    }

    pub fn rings(count: usize, len: usize) {
        for _ in 0..count {
            let first = Rc::new(DNode::default());
            let mut last = first.clone();
            for _ in 1..len {
                let n = Rc::new(DNode::default());
                *last.next.borrow_mut() = Some(n.clone());
                last = n;
            }
            *last.close.borrow_mut() = Rc::downgrade(&first);
        }
    }

    pub fn dlists(count: usize, len: usize) -> usize {
        let mut total = 0;
        for _ in 0..count {
            let head = Rc::new(DNode::default());
            let mut tail = head.clone();
            for _ in 1..len {
                let n = Rc::new(DNode::default());
                *n.prev.borrow_mut() = Rc::downgrade(&tail);
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            total += black_box(&head).next.borrow().is_some() as usize;
        }
        total
    }

    pub fn clone_drop(h: &Rc<DNode>, n: usize) {
        for _ in 0..n {
            drop(black_box(h.clone()));
        }
    }

    pub fn deref_untracked(handles: &[Rc<u64>], reps: usize) -> u64 {
        deref_sum!(handles, reps, |h| **h)
    }

    pub fn deref_tracked(handles: &[Rc<TreeNode>], reps: usize) -> u64 {
        deref_sum!(handles, reps, |h| matches!(**h, TreeNode::End) as u64)
    }

    pub fn new_u64(i: u64) -> Rc<u64> {
        Rc::new(i)
    }

    pub fn new_tree(i: u64) -> Rc<TreeNode> {
        Rc::new(if i % 2 == 0 {
            TreeNode::End
        } else {
            TreeNode::Nested {
                left: Rc::new(TreeNode::End),
                right: Rc::new(TreeNode::End),
            }
        })
    }

    pub fn rings_held(count: usize, len: usize) {
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let first = Rc::new(DNode::default());
            let mut last = first.clone();
            for _ in 1..len {
                let n = Rc::new(DNode::default());
                *last.next.borrow_mut() = Some(n.clone());
                last = n;
            }
            *last.close.borrow_mut() = Rc::downgrade(&first);
            held.push(first);
        }
        held.clear();
    }

    pub fn big_tree(depth: usize) -> usize {
        let t = Rc::new(TreeNode::new(depth));
        let n = t.check();
        drop(t);
        n
    }

    #[derive(Default)]
    pub struct GNode {
        edges: RefCell<Vec<Rc<GNode>>>,
        parent: RefCell<Weak<GNode>>,
    }

    pub fn parent_trees(count: usize, depth: usize) -> usize {
        let mut total = 0;
        for _ in 0..count {
            let root = Rc::new(GNode::default());
            let mut level = vec![root.clone()];
            for _ in 0..depth {
                let mut next = Vec::with_capacity(level.len() * 2);
                for p in &level {
                    for _ in 0..2 {
                        let c = Rc::new(GNode::default());
                        *c.parent.borrow_mut() = Rc::downgrade(p);
                        p.edges.borrow_mut().push(c.clone());
                        next.push(c);
                    }
                }
                total += next.len();
                level = next;
            }
            total += black_box(&root).edges.borrow().len();
        }
        total
    }

    /// The same operations with `Rc`: cycles leak (no collector).
    pub fn random_graph(ops: usize, max_roots: usize, seed: u64) -> usize {
        let mut rng = super::Rng(seed);
        let mut roots: Vec<Rc<GNode>> = Vec::with_capacity(max_roots);
        for _ in 0..ops {
            match rng.below(10) {
                0..=3 => {
                    let n = Rc::new(GNode::default());
                    if roots.len() < max_roots {
                        roots.push(n);
                    } else {
                        let i = rng.below(roots.len());
                        roots[i] = n;
                    }
                }
                4..=6 if !roots.is_empty() => {
                    let a = rng.below(roots.len());
                    let b = rng.below(roots.len());
                    let t = roots[b].clone();
                    roots[a].edges.borrow_mut().push(t);
                }
                7 if !roots.is_empty() => {
                    let a = rng.below(roots.len());
                    roots[a].edges.borrow_mut().pop();
                }
                _ if !roots.is_empty() => {
                    let a = rng.below(roots.len());
                    roots.swap_remove(a);
                }
                _ => {}
            }
        }
        roots.len()
    }
}

/// A group of the bench: 20 samples of equally many iterations
/// (criterion's flat sampling, meant for iterations of milliseconds: the
/// linear default would run 1 + 2 + .. + 20 iterations of a 1 s peer).
/// The warm-up and measurement times are the run's (`--warm-up-time`,
/// `--measurement-time`; 1 s and 2 s by default, see `main`).
fn configure<'a>(c: &'a mut C, name: &str, elements: usize) -> BenchmarkGroup<'a, GcClock> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(elements as u64));
    g.sample_size(20);
    g.sampling_mode(SamplingMode::Flat);
    g
}

fn leaves(c: &mut C) {
    let mut g = configure(c, "leaf_untracked", LEAVES);
    g.bench_function("Rc", |b| b.iter(|| rc::leaf_untracked(LEAVES)));
    g.bench_function("pymem", |b| b.iter(|| pm::leaf_untracked(LEAVES)));
    g.bench_function("gcmodule", |b| b.iter(|| gcm::leaf_untracked(LEAVES)));
    g.bench_function("bacon_rajan_cc", |b| {
        b.iter(|| bacon::leaf_untracked(LEAVES))
    });
    g.bench_function("rust-cc", |b| b.iter(|| rcc::leaf_untracked(LEAVES)));
    g.bench_function("dumpster", |b| b.iter(|| dump::leaf_untracked(LEAVES)));
    g.finish();

    let mut g = configure(c, "leaf_tracked", LEAVES);
    g.bench_function("Rc", |b| b.iter(|| rc::leaf_tracked(LEAVES)));
    g.bench_function("pymem", |b| b.iter(|| pm::leaf_tracked(LEAVES)));
    g.bench_function("gcmodule", |b| b.iter(|| gcm::leaf_tracked(LEAVES)));
    g.bench_function("bacon_rajan_cc", |b| b.iter(|| bacon::leaf_tracked(LEAVES)));
    g.bench_function("rust-cc", |b| b.iter(|| rcc::leaf_tracked(LEAVES)));
    g.bench_function("dumpster", |b| b.iter(|| dump::leaf_tracked(LEAVES)));
    g.finish();
}

fn trees(c: &mut C) {
    let nodes = tree_nodes(TREE_DEPTH);
    let expect = rc::binary_trees(TREE_DEPTH);
    assert_eq!(expect, nodes);
    assert_eq!(pm::binary_trees(TREE_DEPTH), nodes);
    pauses("binary_trees", || {
        pm::binary_trees(TREE_DEPTH);
    });
    let mut g = configure(c, "binary_trees", nodes);
    g.bench_function("Rc", |b| b.iter(|| rc::binary_trees(TREE_DEPTH)));
    g.bench_function("pymem", |b| b.iter(|| pm::binary_trees(TREE_DEPTH)));
    g.bench_function("gcmodule", |b| b.iter(|| gcm::binary_trees(TREE_DEPTH)));
    g.bench_function("bacon_rajan_cc", |b| {
        b.iter(|| bacon::binary_trees(TREE_DEPTH))
    });
    g.bench_function("rust-cc", |b| b.iter(|| rcc::binary_trees(TREE_DEPTH)));
    g.bench_function("dumpster", |b| b.iter(|| dump::binary_trees(TREE_DEPTH)));
    g.finish();
}

fn rings(c: &mut C) {
    // Sanity: pymem really reclaims the rings.
    pymem::gc::collect();
    pm::rings(1000, RING_LEN);
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("rings", || pm::rings(RINGS, RING_LEN));
    let mut g = configure(c, "rings", RINGS * RING_LEN);
    g.bench_function("Rc", |b| b.iter(|| rc::rings(RINGS, RING_LEN)));
    g.bench_function("pymem", |b| b.iter(|| pm::rings(RINGS, RING_LEN)));
    g.bench_function("gcmodule", |b| b.iter(|| gcm::rings(RINGS, RING_LEN)));
    g.bench_function("bacon_rajan_cc", |b| {
        b.iter(|| bacon::rings(RINGS, RING_LEN))
    });
    g.bench_function("rust-cc", |b| b.iter(|| rcc::rings(RINGS, RING_LEN)));
    g.bench_function("dumpster", |b| b.iter(|| dump::rings(RINGS, RING_LEN)));
    g.finish();
}

fn dlists(c: &mut C) {
    pm::dlists(2, DLIST_LEN);
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("dlists", || {
        pm::dlists(DLISTS, DLIST_LEN);
    });
    let mut g = configure(c, "dlists", DLISTS * DLIST_LEN);
    g.bench_function("Rc", |b| b.iter(|| rc::dlists(DLISTS, DLIST_LEN)));
    g.bench_function("pymem", |b| b.iter(|| pm::dlists(DLISTS, DLIST_LEN)));
    g.bench_function("gcmodule", |b| b.iter(|| gcm::dlists(DLISTS, DLIST_LEN)));
    g.bench_function("bacon_rajan_cc", |b| {
        b.iter(|| bacon::dlists(DLISTS, DLIST_LEN))
    });
    g.bench_function("rust-cc", |b| b.iter(|| rcc::dlists(DLISTS, DLIST_LEN)));
    g.bench_function("dumpster", |b| b.iter(|| dump::dlists(DLISTS, DLIST_LEN)));
    g.finish();
}

fn full_collect(c: &mut C) {
    macro_rules! live {
        ($g:expr, $name:literal, $m:ident) => {{
            let heap = $m::live_heap(LIVE);

            $g.bench_function(concat!($name, "/clean"), |b| {
                b.iter(|| $m::collect_live(&heap, usize::MAX))
            });
            let mut k = 0;
            $g.bench_function(concat!($name, "/dirty"), |b| {
                b.iter(|| {
                    k += 7919;
                    $m::collect_live(&heap, k)
                })
            });
            $m::free_heap(heap);
        }};
    }
    {
        let heap = pm::live_heap(LIVE);
        pauses("full_collect_live/pymem/dirty", || {
            pm::collect_live(&heap, 12345)
        });
        pm::free_heap(heap);
    }
    let mut g = configure(c, "full_collect_live", LIVE);
    live!(g, "pymem", pm);
    live!(g, "gcmodule", gcm);
    live!(g, "bacon_rajan_cc", bacon);
    live!(g, "rust-cc", rcc);
    live!(g, "dumpster", dump);
    g.finish();
}

fn clone_drop(c: &mut C) {
    let mut g = configure(c, "clone_drop", CLONES);
    let h = std::rc::Rc::new(rc::DNode::default());
    g.bench_function("Rc", |b| b.iter(|| rc::clone_drop(&h, CLONES)));
    let h = pymem::Gc::new(pm::DNode::default());
    g.bench_function("pymem", |b| b.iter(|| pm::clone_drop(&h, CLONES)));
    let h = gcmodule::Cc::new(gcm::DNode::default());
    g.bench_function("gcmodule", |b| b.iter(|| gcm::clone_drop(&h, CLONES)));
    let h = bacon_rajan_cc::Cc::new(bacon::DNode::default());
    g.bench_function("bacon_rajan_cc", |b| {
        b.iter(|| bacon::clone_drop(&h, CLONES))
    });
    let h = rust_cc::Cc::new(rcc::DNode::default());
    g.bench_function("rust-cc", |b| b.iter(|| rcc::clone_drop(&h, CLONES)));
    let h = dumpster::unsync::Gc::new(dump::DNode::default());
    g.bench_function("dumpster", |b| b.iter(|| dump::clone_drop(&h, CLONES)));
    g.finish();
}

/// Dereferences: 1,000 handles read 100 times each (a sum), to `u64`s
/// (untracked, no drop glue: `Gc` compiles to what `Rc` does) and to tree
/// leaves (tracked: `Gc` tests its flags word first, since the collector
/// may have dropped the value).
fn derefs(c: &mut C) {
    const HANDLES: u64 = 1000;
    const REPS: usize = 100;
    macro_rules! group {
        ($name:literal, $make:ident, $read:ident) => {{
            let mut g = configure(c, $name, HANDLES as usize * REPS);
            macro_rules! one {
                ($label:literal, $m:ident) => {{
                    let v: Vec<_> = (0..HANDLES).map($m::$make).collect();
                    g.bench_function($label, |b| b.iter(|| $m::$read(&v, REPS)));
                }};
            }
            one!("Rc", rc);
            one!("pymem", pm);
            one!("gcmodule", gcm);
            one!("bacon_rajan_cc", bacon);
            one!("rust-cc", rcc);
            one!("dumpster", dump);
            g.finish();
        }};
    }
    group!("deref_untracked", new_u64, deref_untracked);
    group!("deref_tracked", new_tree, deref_tracked);
}

/// `Gc<str>` and `Gc<[u64]>` created from borrowed data and dropped,
/// beside `Rc<str>` / `Rc<[u64]>` (issue 13: within 1.1x). Both are
/// untracked: a 16-byte header, as `Rc`'s.
fn unsized_values(c: &mut C) {
    const N: usize = 100_000;
    let text = "a string of 24 bytes....";
    let mut g = configure(c, "unsized_str", N);
    g.bench_function("Rc", |b| {
        b.iter(|| {
            for _ in 0..N {
                black_box(std::rc::Rc::<str>::from(black_box(text)));
            }
        })
    });
    g.bench_function("pymem", |b| {
        b.iter(|| {
            for _ in 0..N {
                black_box(pymem::Gc::<str>::from(black_box(text)));
            }
        })
    });
    g.finish();
    let words: Vec<u64> = (0..16).collect();
    let mut g = configure(c, "unsized_slice_u64", N);
    g.bench_function("Rc", |b| {
        b.iter(|| {
            for _ in 0..N {
                black_box(std::rc::Rc::<[u64]>::from(black_box(&words[..])));
            }
        })
    });
    g.bench_function("pymem", |b| {
        b.iter(|| {
            for _ in 0..N {
                black_box(pymem::Gc::<[u64]>::from(black_box(&words[..])));
            }
        })
    });
    g.finish();
}

/// Runs `f` once with a `gc::callbacks` probe and prints pymem's
/// collections and the longest one (its `duration`).
fn pauses(name: &str, f: impl FnOnce()) {
    use std::cell::Cell;
    use std::rc::Rc;
    let longest = Rc::new(Cell::new(Duration::ZERO));
    let count = Rc::new(Cell::new(0usize));
    let (l, c) = (longest.clone(), count.clone());
    let id = pymem::gc::callbacks::add(move |phase, info| {
        if phase == pymem::gc::Phase::Stop {
            c.set(c.get() + 1);
            l.set(l.get().max(info.duration));
        }
    });
    f();
    pymem::gc::callbacks::remove(id);
    println!(
        "pauses {name}: {} collections, longest {:?}",
        count.get(),
        longest.get()
    );
}

macro_rules! peers {
    ($g:expr, $rc:expr, |$m:ident| $body:expr) => {{
        if let Some(f) = $rc {
            $g.bench_function("Rc", |b| b.iter(f));
        }
        {
            use pm as $m;
            $g.bench_function("pymem", |b| b.iter(|| $body));
        }
        {
            use gcm as $m;
            $g.bench_function("gcmodule", |b| b.iter(|| $body));
        }
        {
            use bacon as $m;
            $g.bench_function("bacon_rajan_cc", |b| b.iter(|| $body));
        }
        {
            use rcc as $m;
            $g.bench_function("rust-cc", |b| b.iter(|| $body));
        }
        {
            use dump as $m;
            $g.bench_function("dumpster", |b| b.iter(|| $body));
        }
    }};
}

const BIG_TREE_DEPTH: usize = 19;
const PARENT_TREES: usize = 16;
const PARENT_DEPTH: usize = 10;
const STRESS_NODES: usize = 32 * 1024;
const STRESS_ROUNDS: usize = 32;
const GRAPH_OPS: usize = 1_000_000;
const GRAPH_ROOTS: usize = 1000;

fn shapes(c: &mut C) {
    pymem::gc::collect();
    pm::rings_held(1000, RING_LEN);
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("rings_held", || pm::rings_held(RINGS, RING_LEN));
    let mut g = configure(c, "rings_held", RINGS * RING_LEN);
    peers!(g, Some(|| rc::rings_held(RINGS, RING_LEN)), |m| {
        m::rings_held(RINGS, RING_LEN)
    });
    g.finish();

    let nodes = (1usize << (BIG_TREE_DEPTH + 1)) - 1;
    assert_eq!(pm::big_tree(BIG_TREE_DEPTH), nodes);
    pauses("big_tree", || {
        pm::big_tree(BIG_TREE_DEPTH);
    });
    let mut g = configure(c, "big_tree", nodes);
    peers!(g, Some(|| rc::big_tree(BIG_TREE_DEPTH)), |m| m::big_tree(
        BIG_TREE_DEPTH
    ));
    g.finish();

    let n = pm::parent_trees(1, PARENT_DEPTH) * PARENT_TREES;
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("parent_trees", || {
        pm::parent_trees(PARENT_TREES, PARENT_DEPTH);
    });
    let mut g = configure(c, "parent_trees", n);
    peers!(
        g,
        Some(|| rc::parent_trees(PARENT_TREES, PARENT_DEPTH)),
        |m| m::parent_trees(PARENT_TREES, PARENT_DEPTH)
    );
    g.finish();

    pm::stress(STRESS_NODES, STRESS_NODES, STRESS_ROUNDS, 7);
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("stress", || {
        pm::stress(STRESS_NODES, STRESS_NODES, STRESS_ROUNDS, 7)
    });
    let mut g = configure(c, "stress", STRESS_NODES);
    peers!(g, None::<fn()>, |m| m::stress(
        STRESS_NODES,
        STRESS_NODES,
        STRESS_ROUNDS,
        7
    ));
    g.finish();

    pm::random_graph(100_000, GRAPH_ROOTS, 11);
    assert_eq!(pymem::gc::tracked_count(), 0);
    pauses("random_graph", || {
        pm::random_graph(GRAPH_OPS, GRAPH_ROOTS, 11);
    });
    let mut g = configure(c, "random_graph", GRAPH_OPS);
    peers!(
        g,
        Some(|| rc::random_graph(GRAPH_OPS, GRAPH_ROOTS, 11)),
        |m| m::random_graph(GRAPH_OPS, GRAPH_ROOTS, 11)
    );
    g.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default()
        .with_measurement(GcClock::from_env())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = unsized_values,
    leaves,
    trees,
    rings,
    dlists,
    full_collect,
    clone_drop,
    derefs,
    shapes
);
// As `criterion_main!(benches)`, but on a thread with a 2 GiB stack:
// gcmodule's collector recurses along the 1M-node list of
// `full_collect_live` and overflows the main thread's 8 MiB stack.
fn main() {
    std::thread::Builder::new()
        .stack_size(2 << 30)
        .spawn(|| {
            benches();
            Criterion::default().configure_from_args().final_summary();
        })
        .unwrap()
        .join()
        .unwrap();
}
