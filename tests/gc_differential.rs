//! Differential test of the collector against a reachability model.
//!
//! Each seeded round builds a random graph of `Node`s (strong edges in a
//! `RefCell<Vec<Gc<Node>>>`, weak edges beside them, a drop counter per node
//! id), holds random external handles, drops some, mutates the graph, and
//! collects. A model computed on the side (BFS from the handles still held)
//! predicts:
//! * before any collection, exactly the garbage that refcounting frees (the
//!   unreachable nodes not reachable from an unreachable cycle: Kahn's
//!   algorithm over the unreachable subgraph) has been dropped;
//! * `collect()` returns the number of the remaining unreachable nodes and
//!   drops exactly those, each exactly once, and nothing reachable;
//! * afterwards every live node's strong count is its in-degree plus the
//!   handles held, its weak count the weak edges plus the registry's Weak,
//!   and `Weak::upgrade` succeeds exactly for reachable nodes.
//!
//! Runs over `PyMalloc`.
#![allow(clippy::needless_range_loop)]

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;

use common::SplitMix64;
use pymem::{gc, Gc, Trace, Tracer, Weak};

thread_local! {
    static DROPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

struct Node {
    id: usize,
    edges: RefCell<Vec<Gc<Node>>>,
    weak_edges: RefCell<Vec<Weak<Node>>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Node {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
        self.weak_edges.trace(tracer);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        DROPS.with(|d| d.borrow_mut()[self.id] += 1);
    }
}

fn drops_of(id: usize) -> u32 {
    DROPS.with(|d| d.borrow()[id])
}

/// The model of one round's heap.
struct World {
    rng: SplitMix64,
    /// Strong edges, as a multiset in insertion order (same order as the
    /// real `edges` vector).
    edges: Vec<Vec<usize>>,
    weak_edges: Vec<Vec<usize>>,
    /// The model's idea of which nodes have been dropped.
    dropped: Vec<bool>,
    /// One Weak per node, by id: reaches the real objects for mutation and
    /// checks the weak semantics.
    registry: Vec<Weak<Node>>,
    /// External strong handles.
    handles: Vec<(usize, Gc<Node>)>,
    /// Automatic collection enabled: only containment can be checked
    /// before an explicit collection.
    auto: bool,
    seed: u64,
}

impl World {
    fn new(seed: u64, auto: bool) -> Self {
        DROPS.with(|d| d.borrow_mut().clear());
        World {
            rng: SplitMix64::new(seed),
            edges: Vec::new(),
            weak_edges: Vec::new(),
            dropped: Vec::new(),
            registry: Vec::new(),
            handles: Vec::new(),
            auto,
            seed,
        }
    }

    fn n(&self) -> usize {
        self.edges.len()
    }

    fn new_node(&mut self) -> usize {
        let id = self.n();
        DROPS.with(|d| d.borrow_mut().push(0));
        let g = Gc::new(Node {
            id,
            edges: RefCell::new(Vec::new()),
            weak_edges: RefCell::new(Vec::new()),
        });
        self.edges.push(Vec::new());
        self.weak_edges.push(Vec::new());
        self.dropped.push(false);
        self.registry.push(Gc::downgrade(&g));
        self.handles.push((id, g));
        id
    }

    /// A handle to a node the model says is live.
    fn get(&self, id: usize) -> Gc<Node> {
        assert!(!self.dropped[id]);
        self.registry[id]
            .upgrade()
            .unwrap_or_else(|| panic!("seed {}: live node {id} does not upgrade", self.seed))
    }

    fn live_ids(&self) -> Vec<usize> {
        (0..self.n()).filter(|&i| !self.dropped[i]).collect()
    }

    fn add_edge(&mut self, u: usize, v: usize) {
        let gu = self.get(u);
        let gv = self.get(v);
        gu.edges.borrow_mut().push(gv);
        self.edges[u].push(v);
    }

    fn add_weak_edge(&mut self, u: usize, v: usize) {
        let gu = self.get(u);
        let gv = self.get(v);
        gu.weak_edges.borrow_mut().push(Gc::downgrade(&gv));
        self.weak_edges[u].push(v);
    }

    fn remove_edge(&mut self, u: usize, idx: usize) {
        let gu = self.get(u);
        let removed = gu.edges.borrow_mut().remove(idx);
        drop(removed);
        self.edges[u].remove(idx);
    }

    fn reachable(&self) -> Vec<bool> {
        let mut seen = vec![false; self.n()];
        let mut queue: VecDeque<usize> = self.handles.iter().map(|(id, _)| *id).collect();
        while let Some(u) = queue.pop_front() {
            if seen[u] {
                continue;
            }
            assert!(
                !self.dropped[u],
                "seed {}: model reached a dropped node",
                self.seed
            );
            seen[u] = true;
            queue.extend(self.edges[u].iter().copied());
        }
        seen
    }

    /// Unreachable, not yet dropped nodes that refcounting alone frees.
    fn refcount_freed(&self, reach: &[bool]) -> Vec<bool> {
        let n = self.n();
        let garbage = |i: usize| !reach[i] && !self.dropped[i];
        let mut indeg = vec![0usize; n];
        for u in (0..n).filter(|&u| garbage(u)) {
            // Garbage may point at live nodes; only edges into garbage count.
            for &v in self.edges[u].iter().filter(|&&v| garbage(v)) {
                indeg[v] += 1;
            }
        }
        let mut freed = vec![false; n];
        let mut queue: Vec<usize> = (0..n).filter(|&i| garbage(i) && indeg[i] == 0).collect();
        while let Some(u) = queue.pop() {
            freed[u] = true;
            for &v in self.edges[u].iter().filter(|&&v| garbage(v)) {
                indeg[v] -= 1;
                if indeg[v] == 0 {
                    queue.push(v);
                }
            }
        }
        freed
    }

    fn mark_dropped(&mut self, i: usize) {
        self.dropped[i] = true;
        self.edges[i].clear();
        self.weak_edges[i].clear();
    }

    /// Checks the state after handles were dropped or edges removed, before
    /// any explicit collection; returns the number of cyclic garbage nodes
    /// an explicit collection should find.
    fn check_refcounting(&mut self, what: &str) -> usize {
        let reach = self.reachable();
        let freed = self.refcount_freed(&reach);
        let seed = self.seed;
        for i in 0..self.n() {
            let d = drops_of(i);
            assert!(d <= 1, "seed {seed} {what}: node {i} dropped {d} times");
            if self.dropped[i] {
                assert_eq!(d, 1, "seed {seed} {what}: node {i} came back");
                continue;
            }
            if reach[i] {
                assert_eq!(d, 0, "seed {seed} {what}: reachable node {i} dropped");
            } else if freed[i] {
                assert_eq!(
                    d, 1,
                    "seed {seed} {what}: acyclic garbage node {i} not freed at once"
                );
            } else if !self.auto {
                assert_eq!(
                    d, 0,
                    "seed {seed} {what}: cyclic garbage node {i} dropped without a collection"
                );
            }
        }
        let mut cyclic = 0;
        for i in 0..self.n() {
            if !self.dropped[i] && !reach[i] {
                if freed[i] {
                    self.mark_dropped(i);
                } else if drops_of(i) == 1 {
                    // Reclaimed by an automatic collection.
                    self.mark_dropped(i);
                } else {
                    cyclic += 1;
                }
            }
        }
        cyclic
    }

    /// After an explicit full collection: exactly the unreachable nodes are
    /// dropped, counts are exact.
    fn check_collected(&mut self, what: &str) {
        let reach = self.reachable();
        let seed = self.seed;
        for i in 0..self.n() {
            let d = drops_of(i);
            let expect = u32::from(!reach[i]);
            assert_eq!(
                d, expect,
                "seed {seed} {what}: node {i} (reachable: {}) dropped {d} times",
                reach[i]
            );
            assert_eq!(
                self.registry[i].upgrade().is_some(),
                reach[i],
                "seed {seed} {what}: Weak::upgrade of node {i}"
            );
            if !reach[i] {
                self.mark_dropped(i);
            }
        }
        // Exact strong and weak counts of the survivors.
        let n = self.n();
        let mut strong = vec![0usize; n];
        let mut weak = vec![1usize; n]; // the registry's Weak
        for u in self.live_ids() {
            for &v in &self.edges[u] {
                strong[v] += 1;
            }
            for &v in &self.weak_edges[u] {
                weak[v] += 1;
            }
        }
        for (id, _) in &self.handles {
            strong[*id] += 1;
        }
        for i in self.live_ids() {
            assert_eq!(
                Weak::strong_count(&self.registry[i]),
                strong[i],
                "seed {seed} {what}: strong count of node {i}"
            );
            assert_eq!(
                Weak::weak_count(&self.registry[i]),
                weak[i],
                "seed {seed} {what}: weak count of node {i}"
            );
            let g = self.get(i);
            assert_eq!(g.id, i);
            assert_eq!(g.edges.borrow().len(), self.edges[i].len());
            let ids: Vec<usize> = g.edges.borrow().iter().map(|e| e.id).collect();
            assert_eq!(ids, self.edges[i], "seed {seed} {what}: edges of node {i}");
        }
    }

    fn drop_random_handles(&mut self, keep_num: u64, keep_den: u64) {
        let mut kept = Vec::new();
        for h in std::mem::take(&mut self.handles) {
            if self.rng.chance(keep_num, keep_den) {
                kept.push(h);
            } else {
                drop(h);
            }
        }
        self.handles = kept;
    }

    fn random_edges(&mut self, ids: &[usize], count: usize) {
        if ids.is_empty() {
            return;
        }
        for _ in 0..count {
            let u = ids[self.rng.below(ids.len())];
            let v = ids[self.rng.below(ids.len())];
            if self.rng.chance(1, 5) {
                self.add_weak_edge(u, v);
            } else {
                self.add_edge(u, v);
            }
        }
    }

    /// Full collection, checked; `partial` first runs a random young
    /// generation collection, which may reclaim only part of the garbage.
    fn collect_and_check(&mut self, cyclic: usize, partial: bool, what: &str) {
        let seed = self.seed;
        let mut found = 0;
        if partial {
            let gen = self.rng.below(3);
            found += gc::collect_generation(gen);
            // Nothing reachable may go, nothing twice.
            let reach = self.reachable();
            for i in 0..self.n() {
                let d = drops_of(i);
                assert!(d <= 1, "seed {seed} {what}: node {i} dropped {d} times");
                if reach[i] {
                    assert_eq!(d, 0, "seed {seed} {what}: gen {gen} dropped live node {i}");
                }
            }
        }
        found += gc::collect();
        if partial || self.auto {
            assert!(
                found <= cyclic,
                "seed {seed} {what}: found {found} > {cyclic} garbage"
            );
        } else {
            assert_eq!(
                found, cyclic,
                "seed {seed} {what}: collect() returned {found}, model says {cyclic}"
            );
        }
        self.check_collected(what);
    }
}

/// What a round exercised, so the tests can check the generator produces
/// both kinds of garbage.
#[derive(Default)]
struct Exercised {
    cyclic: usize,
    nodes: usize,
}

fn round(seed: u64, auto: bool, max_nodes: usize, ex: &mut Exercised) {
    let mut w = World::new(seed, auto);
    let base_tracked = gc::tracked_count();
    let n = 1 + w.rng.below(max_nodes);
    for _ in 0..n {
        w.new_node();
    }
    let ids: Vec<usize> = (0..n).collect();
    let m = w.rng.below(3 * n + 1);
    w.random_edges(&ids, m);
    // Some extra handles to random nodes.
    for _ in 0..w.rng.below(n / 4 + 1) {
        let id = w.rng.below(n);
        let g = w.get(id);
        w.handles.push((id, g));
    }
    if !auto {
        assert_eq!(gc::tracked_count(), base_tracked + n);
    }
    let keep = [0u64, 1, 2, 3, 4][w.rng.below(5)];
    w.drop_random_handles(keep, 4);
    let cyclic = w.check_refcounting("after dropping handles");
    ex.cyclic += cyclic;
    w.collect_and_check(cyclic, false, "first collection");

    // Mutate what is left: remove and add edges, add nodes, drop handles.
    for phase in 0..3 {
        let live = w.live_ids();
        if live.is_empty() {
            break;
        }
        // Pin every live node while edges go, so that a node freed by one
        // removal is not the source of the next; unpinning frees the
        // acyclic garbage all at once.
        let pin: Vec<Gc<Node>> = live.iter().map(|&i| w.get(i)).collect();
        for _ in 0..w.rng.below(live.len() + 1) {
            let u = live[w.rng.below(live.len())];
            if !w.edges[u].is_empty() {
                let idx = w.rng.below(w.edges[u].len());
                w.remove_edge(u, idx);
            }
        }
        drop(pin);
        for _ in 0..w.rng.below(8) {
            w.new_node();
        }
        // New edges only between nodes still reachable (and so alive).
        let reach = w.reachable();
        let pool: Vec<usize> = (0..w.n()).filter(|&i| reach[i]).collect();
        let m = w.rng.below(pool.len() + 1);
        w.random_edges(&pool, m);
        w.drop_random_handles(3, 4);
        let what = format!("phase {phase}");
        let cyclic = w.check_refcounting(&what);
        ex.cyclic += cyclic;
        let partial = w.rng.chance(1, 2);
        w.collect_and_check(cyclic, partial, &what);
    }

    // Drop everything: all of it goes, each node once, nothing stays tracked.
    w.handles.clear();
    let cyclic = w.check_refcounting("final");
    ex.cyclic += cyclic;
    ex.nodes += w.n();
    w.collect_and_check(cyclic, false, "final");
    assert!(w.dropped.iter().all(|&d| d));
    assert_eq!(
        gc::tracked_count(),
        base_tracked,
        "seed {seed}: tracked objects left behind"
    );
}

#[test]
fn differential_small_graphs_no_automatic_collection() {
    gc::disable();
    let mut ex = Exercised::default();
    for seed in 0..600 {
        round(seed, false, 40, &mut ex);
    }
    assert!(
        ex.cyclic > ex.nodes / 10,
        "{} cyclic of {}",
        ex.cyclic,
        ex.nodes
    );
}

#[test]
fn differential_small_graphs_with_automatic_collection() {
    gc::enable();
    gc::set_threshold(7, 3, 2);
    let mut ex = Exercised::default();
    for seed in 1000..1400 {
        round(seed, true, 40, &mut ex);
    }
    let stats = gc::get_stats();
    assert!(stats[0].collections > 100 && stats[1].collections > 10 && stats[2].collections > 10);
    assert!(ex.cyclic > 0);
}

#[test]
fn differential_larger_graphs() {
    gc::disable();
    let mut ex = Exercised::default();
    for seed in 5000..5016 {
        round(seed, false, 1500, &mut ex);
    }
    assert!(
        ex.cyclic > ex.nodes / 10,
        "{} cyclic of {}",
        ex.cyclic,
        ex.nodes
    );
    gc::enable();
    gc::set_threshold(50, 5, 5);
    for seed in 6000..6016 {
        round(seed, true, 1500, &mut ex);
    }
}

// ---------------------------------------------------------------------------
// Long histories: full collections examine only what is reachable from the
// objects decremented to a non-zero count since the last full collection
// (the `DIRTY` seeds; see the `collector` module), so garbage left by one
// collection must still be found by a later one, whatever happened between
// them: young collections, freeze/unfreeze, more mutations.

/// One heap mutated by a long random sequence of operations, with young
/// collections, freezes and unfreezes in between; every full collection
/// made while nothing is frozen must be exact.
fn history(seed: u64, steps: usize, auto: bool) {
    let mut w = World::new(seed, auto);
    let mut frozen = false;
    let mut full = 0;
    for step in 0..steps {
        let what = format!("step {step}");
        match w.rng.below(20) {
            0..=4 => {
                let id = w.new_node();
                let reach = w.reachable();
                let pool: Vec<usize> = (0..w.n()).filter(|&i| reach[i]).collect();
                let m = w.rng.below(3);
                w.random_edges(&pool, m);
                let _ = id;
            }
            5..=8 => {
                let reach = w.reachable();
                let pool: Vec<usize> = (0..w.n()).filter(|&i| reach[i]).collect();
                let m = w.rng.below(4);
                w.random_edges(&pool, m);
            }
            9..=10 => {
                // Remove an edge of a reachable node, pinning the live ones
                // (see `round`).
                let live = w.live_ids();
                let reach = w.reachable();
                let cands: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&u| reach[u] && !w.edges[u].is_empty())
                    .collect();
                if !cands.is_empty() {
                    let pin: Vec<Gc<Node>> = live.iter().map(|&i| w.get(i)).collect();
                    let u = cands[w.rng.below(cands.len())];
                    let idx = w.rng.below(w.edges[u].len());
                    w.remove_edge(u, idx);
                    drop(pin);
                }
            }
            11..=12 => {
                if !w.handles.is_empty() {
                    let i = w.rng.below(w.handles.len());
                    drop(w.handles.swap_remove(i));
                }
            }
            13 => {
                // Another handle to a reachable node.
                let reach = w.reachable();
                let pool: Vec<usize> = (0..w.n()).filter(|&i| reach[i]).collect();
                if !pool.is_empty() {
                    let id = pool[w.rng.below(pool.len())];
                    let g = w.get(id);
                    w.handles.push((id, g));
                }
            }
            14..=15 => {
                let gen = w.rng.below(2);
                gc::collect_generation(gen);
            }
            16 => {
                if frozen {
                    gc::unfreeze();
                } else {
                    gc::freeze();
                }
                frozen = !frozen;
            }
            _ => {
                if frozen {
                    // Frozen garbage stays: only check that nothing live went.
                    gc::collect();
                    let reach = w.reachable();
                    for i in 0..w.n() {
                        if reach[i] {
                            assert_eq!(drops_of(i), 0, "seed {seed} {what}: live node {i} dropped");
                        }
                    }
                } else {
                    let cyclic = w.check_refcounting(&what);
                    w.collect_and_check(cyclic, false, &what);
                    full += 1;
                }
            }
        }
        // Drops done by refcounting (and by collections) are accounted for
        // by the next check; keep the model's `dropped` in step so `get`
        // only reaches live nodes.
        let reach = w.reachable();
        for i in 0..w.n() {
            if !w.dropped[i] && !reach[i] && drops_of(i) == 1 {
                w.mark_dropped(i);
            }
        }
    }
    if frozen {
        gc::unfreeze();
    }
    w.handles.clear();
    let cyclic = w.check_refcounting("end");
    w.collect_and_check(cyclic, false, "end");
    assert!(
        w.dropped.iter().all(|&d| d),
        "seed {seed}: nodes left alive"
    );
    assert!(full > 0 || steps < 40);
}

#[test]
fn differential_long_histories() {
    gc::disable();
    for seed in 0..40 {
        history(0x5eed_0000 + seed, 400, false);
    }
}

#[test]
fn differential_long_histories_with_automatic_collection() {
    gc::enable();
    gc::set_threshold(5, 2, 2);
    for seed in 0..40 {
        history(0xa070_0000 + seed, 400, true);
    }
}

/// A node with a drop counter (see `drops_of`) and no other handle; the
/// scenarios below make their edges by hand, so that no count changes
/// but the ones they mean.
fn lone_node(w: &mut World) -> (usize, Gc<Node>) {
    w.new_node();
    w.handles.pop().unwrap()
}

/// The cycle `s -> d -> o -> s`, `o` old (generation 2) and referenced only
/// through a moved handle (its count was never decremented), `s` and `d`
/// young; the last outside handle (to `s`) goes before the young
/// collections, which see `o`'s edge as a reference from outside and keep
/// the cycle. The full collection after them must find it.
fn cross_generation_cycle(young: &[usize]) {
    let mut w = World::new(77, false);
    let (oi, o) = lone_node(&mut w);
    gc::collect(); // o: generation 2
    let (si, s) = lone_node(&mut w);
    let (di, d) = lone_node(&mut w);
    o.edges.borrow_mut().push(s.clone()); // o -> s
    s.edges.borrow_mut().push(d); // s -> d (moved)
    s.edges.borrow()[0].edges.borrow_mut().push(o); // d -> o (moved)
    drop(s); // the only decrement: the cycle is garbage
    for &g in young {
        assert_eq!(
            gc::collect_generation(g),
            0,
            "generation {g} holds part of the cycle only"
        );
    }
    assert_eq!(drops_of(si) + drops_of(di) + drops_of(oi), 0);
    assert_eq!(gc::collect(), 3, "young collections {young:?}");
    assert_eq!((drops_of(si), drops_of(di), drops_of(oi)), (1, 1, 1));
}

#[test]
fn cross_generation_cycle_found_by_the_full_collection() {
    gc::disable();
    cross_generation_cycle(&[]);
    cross_generation_cycle(&[0]);
    cross_generation_cycle(&[0, 1]);
    cross_generation_cycle(&[0, 0, 1, 0]);
}

/// A cycle through a frozen object: the full collection made while it is
/// frozen cannot reclaim it (the permanent generation is ignored) and
/// examines its young part; after `unfreeze` the next full collection must
/// find the whole cycle, although no count changed since.
#[test]
fn cycle_through_a_frozen_object_found_after_unfreeze() {
    gc::disable();
    let mut w = World::new(78, false);
    let (oi, o) = lone_node(&mut w);
    gc::freeze();
    let (si, s) = lone_node(&mut w);
    o.edges.borrow_mut().push(s.clone()); // o -> s
    s.edges.borrow_mut().push(o); // s -> o (moved)
    drop(s); // the cycle is garbage
    assert_eq!(gc::collect(), 0, "o is frozen");
    assert_eq!(drops_of(si) + drops_of(oi), 0);
    gc::unfreeze();
    assert_eq!(gc::collect(), 2);
    assert_eq!((drops_of(si), drops_of(oi)), (1, 1));
}

/// A cycle kept by a conservative full collection (one of its `RefCell`s
/// mutably borrowed), then released without any count changing: the next
/// full collection finds it.
#[test]
fn cycle_kept_by_a_conservative_collection_found_later() {
    gc::disable();
    let mut w = World::new(79, false);
    let (ai, a) = lone_node(&mut w);
    let (bi, b) = lone_node(&mut w);
    a.edges.borrow_mut().push(b.clone());
    b.edges.borrow_mut().push(a.clone());
    let raw: *const Node = Gc::as_ptr(&a);
    drop((a, b)); // garbage now
                  // SAFETY: the cycle keeps `a` alive until a collection reclaims it, and
                  // this borrow ends before the next collection.
    let held = unsafe { (*raw).edges.borrow_mut() };
    assert_eq!(
        gc::collect(),
        0,
        "a mutably borrowed RefCell is conservative"
    );
    drop(held);
    assert_eq!(gc::collect(), 2);
    assert_eq!((drops_of(ai), drops_of(bi)), (1, 1));
}

thread_local! {
    static REVIVED: RefCell<Vec<Gc<Phoenix>>> = const { RefCell::new(Vec::new()) };
}

/// A cycle member whose finalizer resurrects it (once).
struct Phoenix {
    id: usize,
    next: RefCell<Option<Gc<Phoenix>>>,
}

// SAFETY: `trace` visits the one `Gc` this type owns.
unsafe impl Trace for Phoenix {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        DROPS.with(|d| d.borrow_mut()[self.id] += 1);
    }
}

impl gc::Finalize for Phoenix {
    fn finalize(this: &Gc<Self>) {
        REVIVED.with(|r| r.borrow_mut().push(this.clone()));
    }
}

/// A garbage cycle found by a full collection from the seeds, resurrected
/// by a finalizer, then made garbage again: the next full collection
/// finds it (and young collections in between do not lose it).
#[test]
fn resurrected_cycle_found_again() {
    gc::disable();
    let _w = World::new(80, false);
    DROPS.with(|d| d.borrow_mut().extend([0, 0]));
    let a = Gc::new_with_finalizer(Phoenix {
        id: 0,
        next: RefCell::new(None),
    });
    let b = Gc::new(Phoenix {
        id: 1,
        next: RefCell::new(Some(a.clone())),
    });
    *a.next.borrow_mut() = Some(b);
    gc::collect(); // both in generation 2
    drop(a); // the cycle is garbage
    assert_eq!(gc::collect(), 0, "resurrected by the finalizer");
    assert_eq!((drops_of(0), drops_of(1)), (0, 0));
    gc::collect_generation(0);
    gc::collect_generation(1);
    REVIVED.with(|r| r.borrow_mut().clear()); // garbage again
    gc::collect_generation(0);
    assert_eq!(gc::collect(), 2);
    assert_eq!((drops_of(0), drops_of(1)), (1, 1));
}
