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
//! `big_tree`, `dlists`, `full` (pymem only); an optional third argument repeats the workload
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

    /// Breaks the heap's links so that dropping it frees everything.
    pub fn free_heap(nodes: Vec<Gc<DNode>>) {
        for n in &nodes {
            n.next.borrow_mut().take();
            n.prev.borrow_mut().take();
        }
        drop(nodes);
        gc::collect();
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
        ("pymem", "full") => pm::work_full(heap, FULL_TIMES),
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
        ("pymem", "dlists") => pm::work_dlists(black_box(30), black_box(4096)),
        ("rc", "dlists") => rc::work_dlists(black_box(30), black_box(4096)),
        _ => panic!("usage: gc_paths pymem|rc leaf|binary_trees|big_tree|dlists|full [reps]"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (which, shape) = (args[1].as_str(), args[2].as_str());
    let reps: usize = args.get(3).map_or(1, |r| r.parse().unwrap());
    let heap = if shape == "full" {
        pm::live_heap(LIVE)
    } else {
        Vec::new()
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
        if shape == "full" {
            let ns = best.as_nanos() as f64 / (FULL_TIMES * LIVE) as f64;
            println!("  {ns:.2} ns per node per collection");
        }
    }
    pm::free_heap(heap);
}
