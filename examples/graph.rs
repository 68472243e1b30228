//! A mutable object graph churned with automatic collection on.
//!
//! Nodes hold their out-edges in a `RefCell<Vec<Gc<Node>>>`. A fixed set
//! of root slots is rewired at random: new nodes are created and linked to
//! random nodes (making cycles all the time), edges are cut, roots are
//! replaced. Nothing calls `gc::collect()`: the generational collector
//! keeps the tracked population bounded on its own, and the example
//! prints `gc::get_stats()` and `gc::get_count()` as it goes.
//!
//! Run with `cargo run --release --example graph`.

use std::cell::{Cell, RefCell};

use pymem::{gc, Gc, Trace};

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

#[derive(Trace)]
struct Node {
    id: u64,
    payload: [u64; 4],
    edges: RefCell<Vec<Gc<Node>>>,
}

impl Node {
    fn new(id: u64) -> Gc<Node> {
        LIVE.with(|l| l.set(l.get() + 1));
        Gc::new(Node {
            id,
            payload: [id; 4],
            edges: RefCell::new(Vec::new()),
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - 1));
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random node reachable from a random root (a short walk).
fn pick(roots: &[Gc<Node>], rng: &mut Rng) -> Gc<Node> {
    let mut n = roots[rng.below(roots.len())].clone();
    for _ in 0..rng.below(4) {
        let next = {
            let edges = n.edges.borrow();
            if edges.is_empty() {
                break;
            }
            edges[rng.below(edges.len())].clone()
        };
        n = next;
    }
    n
}

fn main() {
    const ROOTS: usize = 256;
    const MAX_EDGES: usize = 3;
    const STEPS: usize = 2_000_000;
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut next_id = 0u64;
    let mut roots: Vec<Gc<Node>> = (0..ROOTS)
        .map(|_| {
            next_id += 1;
            Node::new(next_id)
        })
        .collect();

    let t = std::time::Instant::now();
    let mut checksum = 0u64;
    for step in 1..=STEPS {
        match rng.below(10) {
            // a new node linked from and to random nodes: cycles galore.
            // Out-degree is bounded: a full node has an edge replaced, so
            // what hung from it may become garbage.
            0..=4 => {
                next_id += 1;
                let n = Node::new(next_id);
                let a = pick(&roots, &mut rng);
                let b = pick(&roots, &mut rng);
                n.edges.borrow_mut().push(b);
                let mut edges = a.edges.borrow_mut();
                if edges.len() < MAX_EDGES {
                    edges.push(n);
                } else {
                    let i = rng.below(edges.len());
                    edges[i] = n;
                }
            }
            // cut an edge
            5..=7 => {
                let a = pick(&roots, &mut rng);
                let mut edges = a.edges.borrow_mut();
                if !edges.is_empty() {
                    let i = rng.below(edges.len());
                    edges.swap_remove(i);
                }
            }
            // replace a root: whatever hung from it may become garbage
            8 => {
                next_id += 1;
                let i = rng.below(ROOTS);
                roots[i] = Node::new(next_id);
            }
            // read
            _ => {
                let a = pick(&roots, &mut rng);
                checksum = checksum.wrapping_add(a.id + a.payload[3]);
            }
        }
        if step % 400_000 == 0 {
            let s = gc::get_stats();
            println!(
                "step {step:>8}: live nodes {:>7}, tracked {:>7}, get_count {:?}, collections {:?}, collected {:?}",
                LIVE.with(Cell::get),
                gc::tracked_count(),
                gc::get_count(),
                [s[0].collections, s[1].collections, s[2].collections],
                [s[0].collected, s[1].collected, s[2].collected],
            );
        }
    }
    let elapsed = t.elapsed();
    println!("{STEPS} steps in {elapsed:?} (checksum {checksum})");
    println!("gc::get_stats() = {:#?}", gc::get_stats());
    println!("gc::get_count() = {:?}", gc::get_count());

    drop(roots);
    let found = gc::collect();
    println!(
        "after dropping the roots: gc::collect() found {found}; live nodes {}, tracked {}",
        LIVE.with(Cell::get),
        gc::tracked_count()
    );
    assert_eq!(LIVE.with(Cell::get), 0);
    assert_eq!(gc::tracked_count(), 0);
}
