//! A driver for counting the instructions of `Gc`'s create + drop paths
//! against `Rc` under callgrind (issue 9, tenth round): each workload is an
//! `#[inline(never)]` function named `work_*` (in module `pm` or `rc`),
//! so that `--toggle-collect='gc_paths::*::work_*'` counts it alone. The shapes are
//! the ones of `benches/gc.rs` (`leaf_tracked`, `binary_trees`,
//! `big_tree`, `dlists`), on the system allocator for both; `full` (pymem
//! only) is `full_collect_live/pymem/dirty`: ten full collections of a
//! live heap of 1M nodes (built outside the counted function), each after
//! a node is cloned and dropped.
//!
//! ```text
//! cargo build --release --manifest-path bench/Cargo.toml --example gc_paths
//! valgrind --tool=callgrind --toggle-collect='gc_paths::*::work_*' \
//!     bench/target/release/examples/gc_paths pymem big_tree
//! ```
//!
//! Arguments: `pymem` or `rc`, then one of `leaf`, `binary_trees`,
//! `big_tree`, `dlists`, `full`, `full_reused` (the heap built after one was
//! freed, as in the bench), `full_shuffled` (the heap's nodes in random
//! memory order), `stress` (pymem only); an optional third argument repeats the workload
//! that many times and prints the best CPU time of a repetition.

use std::hint::black_box;
use std::time::Duration;

/// The tree shapes, written once for `Gc` and `Rc`: the node type (with
/// the attributes given), and the binary-trees and big-tree workloads,
/// which end with a call of `$collect` if given (`gc::collect` for `Gc`).
macro_rules! tree_shapes {
    ($(#[$attr:meta])* $ptr:ident $(, $collect:expr)?) => {
        $(#[$attr])*
        pub enum TreeNode {
            Nested {
                left: $ptr<TreeNode>,
                right: $ptr<TreeNode>,
            },
            End,
        }

        impl TreeNode {
            fn new(depth: usize) -> Self {
                if depth == 0 {
                    return TreeNode::End;
                }
                TreeNode::Nested {
                    left: $ptr::new(Self::new(depth - 1)),
                    right: $ptr::new(Self::new(depth - 1)),
                }
            }

            fn check(&self) -> usize {
                match self {
                    TreeNode::End => 1,
                    TreeNode::Nested { left, right } => left.check() + right.check() + 1,
                }
            }
        }

        #[inline(never)]
        pub fn work_binary_trees(max: usize) -> usize {
            let mut total = 0;
            for depth in (4..max).step_by(2) {
                for _ in 0..1 << (max - depth + 4) {
                    total += $ptr::new(TreeNode::new(depth)).check();
                }
            }
            $($collect();)?
            total
        }

        #[inline(never)]
        pub fn work_big_tree(depth: usize) -> usize {
            let t = $ptr::new(TreeNode::new(depth));
            let n = t.check();
            drop(t);
            $($collect();)?
            n
        }
    };
}

mod pm {
    use pymem::{gc, Gc, Trace};
    use std::cell::RefCell;

    #[derive(Trace, Default)]
    pub struct DNode {
        next: RefCell<Option<Gc<DNode>>>,
        prev: RefCell<Option<Gc<DNode>>>,
    }

    tree_shapes!(
        #[derive(Trace)]
        Gc,
        gc::collect
    );

    #[inline(never)]
    pub fn work_leaf(n: usize) {
        for _ in 0..n {
            super::black_box(Gc::new(DNode::default()));
        }
    }

    #[inline(never)]
    pub fn work_dlists(count: usize, len: usize) -> usize {
        let mut total = 0;
        for _ in 0..count {
            let head = Gc::new(DNode::default());
            let mut tail = head.clone();
            for _ in 1..len {
                let n = Gc::new(DNode::default());
                *n.prev.borrow_mut() = Some(tail.clone());
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            total += super::black_box(&head).next.borrow().is_some() as usize;
        }
        gc::collect();
        total
    }

    /// The live heap of `full_collect_live`: `n` nodes in a doubly linked
    /// list, each also held by the returned `Vec`, collected once.
    pub fn live_heap(n: usize) -> Vec<Gc<DNode>> {
        let nodes: Vec<Gc<DNode>> = (0..n).map(|_| Gc::new(DNode::default())).collect();
        for w in nodes.windows(2) {
            *w[0].next.borrow_mut() = Some(w[1].clone());
            *w[1].prev.borrow_mut() = Some(w[0].clone());
        }
        gc::collect();
        nodes
    }

    /// [`live_heap`] built into chunks freed in a random order (a
    /// xorshift shuffle), so that list order is not memory order. (The
    /// heap's `Vec` is allocated before the chunks are freed: a large
    /// request makes glibc merge its freed small chunks back first.)
    pub fn shuffled_heap(n: usize) -> Vec<Gc<DNode>> {
        let mut filler: Vec<Gc<DNode>> = (0..n).map(|_| Gc::new(DNode::default())).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            filler.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut nodes = Vec::with_capacity(n);
        for f in filler.drain(..) {
            drop(f);
        }
        for _ in 0..n {
            nodes.push(Gc::new(DNode::default()));
        }
        drop(filler);
        for w in nodes.windows(2) {
            *w[0].next.borrow_mut() = Some(w[1].clone());
            *w[1].prev.borrow_mut() = Some(w[0].clone());
        }
        gc::collect();
        nodes
    }

    /// Breaks the heap's links so that dropping it frees everything.
    pub fn free_heap(nodes: Vec<Gc<DNode>>) {
        for n in &nodes {
            n.next.borrow_mut().take();
            n.prev.borrow_mut().take();
        }
        drop(nodes);
        gc::collect();
    }

    /// The bench's `stress` node.
    #[derive(Trace, Default)]
    pub struct GNode {
        edges: RefCell<Vec<Gc<GNode>>>,
        parent: RefCell<Option<Gc<GNode>>>,
    }

    /// The bench's `stress`: `nodes` nodes, `edges` random edges between
    /// them (the bench's generator), then `rounds` rounds that each drop
    /// the last 1/rounds of the roots and collect.
    #[inline(never)]
    pub fn work_stress(nodes: usize, edges: usize, rounds: usize, seed: u64) -> usize {
        let mut state = seed;
        let mut below = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
        };
        let mut roots: Vec<Gc<GNode>> = (0..nodes).map(|_| Gc::new(GNode::default())).collect();
        for _ in 0..edges {
            let a = below(nodes);
            let b = below(nodes);
            let t = roots[b].clone();
            roots[a].edges.borrow_mut().push(t);
        }
        let step = nodes / rounds;
        let mut found = 0;
        for _ in 0..rounds {
            let keep = roots.len().saturating_sub(step);
            roots.truncate(keep);
            found += gc::collect();
        }
        found
    }

    /// `full_collect_live/pymem/dirty`: `times` full collections of the
    /// live heap, each after one node is cloned and dropped.
    #[inline(never)]
    pub fn work_full(nodes: &[Gc<DNode>], times: usize) -> usize {
        let mut found = 0;
        for k in 0..times {
            drop(super::black_box(nodes[(k * 7919) % nodes.len()].clone()));
            found += gc::collect();
        }
        found
    }
}

mod rc {
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};

    #[derive(Default)]
    pub struct DNode {
        next: RefCell<Option<Rc<DNode>>>,
        prev: RefCell<Weak<DNode>>,
        // As the bench's: the third field closes its rings.
        _close: RefCell<Weak<DNode>>,
    }

    tree_shapes!(Rc);

    #[inline(never)]
    pub fn work_leaf(n: usize) {
        for _ in 0..n {
            super::black_box(Rc::new(DNode::default()));
        }
    }

    #[inline(never)]
    pub fn work_dlists(count: usize, len: usize) -> usize {
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
            total += super::black_box(&head).next.borrow().is_some() as usize;
        }
        total
    }
}

/// This thread's CPU time.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Collections per repetition of `full`, and the heap's size.
const FULL_TIMES: usize = 10;
const LIVE: usize = 1_000_000;

fn run(which: &str, shape: &str, heap: &[pymem::Gc<pm::DNode>]) -> usize {
    match (which, shape) {
        ("pymem", "full" | "full_reused" | "full_shuffled") => pm::work_full(heap, FULL_TIMES),
        ("pymem", "leaf") => {
            pm::work_leaf(black_box(1_000_000));
            1_000_000
        }
        ("rc", "leaf") => {
            rc::work_leaf(black_box(1_000_000));
            1_000_000
        }
        ("pymem", "binary_trees") => pm::work_binary_trees(black_box(11)),
        ("rc", "binary_trees") => rc::work_binary_trees(black_box(11)),
        ("pymem", "big_tree") => pm::work_big_tree(black_box(19)),
        ("rc", "big_tree") => rc::work_big_tree(black_box(19)),
        ("pymem", "stress") => pm::work_stress(32 * 1024, 32 * 1024, 32, black_box(7)),
        ("pymem", "dlists") => pm::work_dlists(black_box(30), black_box(4096)),
        ("rc", "dlists") => rc::work_dlists(black_box(30), black_box(4096)),
        _ => panic!("usage: gc_paths pymem|rc leaf|binary_trees|big_tree|dlists|full|full_reused|full_shuffled|stress [reps]"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, shape) = (args[1].as_str(), args[2].as_str());
    let reps: usize = args.get(3).map_or(1, |r| r.parse().unwrap());
    let heap = match shape {
        "full" => pm::live_heap(LIVE),
        // As the bench's `full_collect_live` (whose heap is built after
        // its `pauses` line built and freed one): the nodes reuse the
        // chunks of a heap freed before.
        "full_reused" => {
            pm::free_heap(pm::live_heap(LIVE));
            pm::live_heap(LIVE)
        }
        // The nodes in no order in memory: built into chunks freed in a
        // random order.
        "full_shuffled" => pm::shuffled_heap(LIVE),
        _ => Vec::new(),
    };
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..reps {
        let t = cpu_time();
        n = run(which, shape, &heap);
        best = best.min(cpu_time() - t);
    }
    if reps > 1 {
        println!("{which} {shape}: {n} -> best of {reps}: {best:?}");
        if shape.starts_with("full") {
            let ns = best.as_nanos() as f64 / (FULL_TIMES * LIVE) as f64;
            println!("  {ns:.2} ns per node per collection");
        }
    }
    pm::free_heap(heap);
}
