//! The `pymem::gc` module: thresholds, enable/disable, get_count, get_stats,
//! tracking, freeze, automatic collection (DESIGN.md contract details).
//! Each `#[test]` runs on its own thread, and collector state is per
//! thread, so the numbers seen here are this test's own.
//! Runs over `PyMalloc`.

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Tracer};

/// A graph node: tracked (hand-written impl with only `trace`).
struct Node {
    edges: RefCell<Vec<Gc<Node>>>,
    drops: Rc<Cell<usize>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Node {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn node(drops: &Rc<Cell<usize>>) -> Gc<Node> {
    Gc::new(Node {
        edges: RefCell::new(Vec::new()),
        drops: drops.clone(),
    })
}

/// Makes `n` self-cycles and drops every handle: `n` objects of garbage.
fn self_cycles(n: usize, drops: &Rc<Cell<usize>>) {
    for _ in 0..n {
        let a = node(drops);
        a.edges.borrow_mut().push(a.clone());
    }
}

/// A tracked leaf with no Gc inside (hand-written impl: tracked).
struct Opaque(#[allow(dead_code)] u64);
// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Opaque {
    fn trace(&self, _tracer: &mut Tracer) {}
}

#[derive(pymem::Trace)]
struct Plain {
    a: u32,
    b: String,
    c: Vec<u8>,
    d: Option<u32>,
    e: (u32, String),
    f: RefCell<Vec<String>>,
}

#[derive(pymem::Trace)]
struct WithGc {
    name: String,
    child: Option<Gc<WithGc>>,
}

#[test]
fn threshold_defaults_and_set_get() {
    assert_eq!(gc::get_threshold(), (700, 10, 10));
    gc::set_threshold(100, 5, 3);
    assert_eq!(gc::get_threshold(), (100, 5, 3));
    gc::set_threshold(700, 10, 10);
    assert_eq!(gc::get_threshold(), (700, 10, 10));
}

#[test]
fn enable_disable() {
    assert!(gc::is_enabled());
    gc::disable();
    assert!(!gc::is_enabled());
    gc::disable();
    assert!(!gc::is_enabled());
    gc::enable();
    assert!(gc::is_enabled());
}

#[test]
fn settings_are_per_thread() {
    gc::set_threshold(5, 6, 7);
    gc::disable();
    let (t, e) = std::thread::spawn(|| (gc::get_threshold(), gc::is_enabled()))
        .join()
        .unwrap();
    assert_eq!(t, (700, 10, 10), "a new thread starts with the defaults");
    assert!(e);
    // And a change made there does not leak back here.
    std::thread::spawn(|| {
        gc::set_threshold(1, 1, 1);
        gc::enable();
    })
    .join()
    .unwrap();
    assert_eq!(gc::get_threshold(), (5, 6, 7));
    assert!(!gc::is_enabled());
}

#[test]
fn get_count_counts_tracked_allocations_minus_deallocations() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    let old: Vec<Gc<Node>> = (0..3).map(|_| node(&drops)).collect();
    gc::collect();
    let (c0, c1, c2) = gc::get_count();
    assert_eq!(
        (c1, c2),
        (0, 0),
        "after collect() the count is (small, 0, 0)"
    );
    assert!(c0 < 10, "after collect() count[0] is small, got {c0}");

    let young: Vec<Gc<Node>> = (0..5).map(|_| node(&drops)).collect();
    assert_eq!(gc::get_count(), (c0 + 5, 0, 0));
    // Deallocations of objects allocated before the collection count too.
    drop(old);
    assert_eq!(drops.get(), 3);
    assert_eq!(gc::get_count(), (c0 + 2, 0, 0));
    drop(young);
    assert_eq!(gc::get_count().0, c0.saturating_sub(3));

    // Untracked allocations do not change the count.
    let before = gc::get_count();
    let untracked: Vec<Gc<u64>> = (0..50).map(Gc::new).collect();
    let strings: Vec<Gc<String>> = (0..50).map(|i| Gc::new(i.to_string())).collect();
    assert_eq!(gc::get_count(), before);
    drop(untracked);
    drop(strings);
    assert_eq!(gc::get_count(), before);
}

#[test]
fn get_count_after_generation_collections() {
    // CPython's test_gc.test_collect_generations.
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    gc::collect();
    let _x = node(&drops);
    gc::collect_generation(0);
    let (_, b, c) = gc::get_count();
    assert_eq!((b, c), (1, 0));
    gc::collect_generation(0);
    assert_eq!(gc::get_count().1, 2);
    gc::collect_generation(1);
    let (_, e, f) = gc::get_count();
    assert_eq!((e, f), (0, 1));
    gc::collect_generation(2);
    let (_, h, i) = gc::get_count();
    assert_eq!((h, i), (0, 0));
    let _y = node(&drops);
    let (a, _, _) = gc::get_count();
    assert!(a >= 1, "a tracked allocation after a collection counts");
    assert_eq!(drops.get(), 0);
}

#[test]
fn collect_generation_increments_only_its_stats() {
    gc::disable();
    for gen in 0..3 {
        let before = gc::get_stats();
        gc::collect_generation(gen);
        let after = gc::get_stats();
        for g in 0..3 {
            let expect = before[g].collections + usize::from(g == gen);
            assert_eq!(
                after[g].collections, expect,
                "collect_generation({gen}) changed stats[{g}]"
            );
        }
    }
    let before = gc::get_stats();
    gc::collect();
    let after = gc::get_stats();
    assert_eq!(after[2].collections, before[2].collections + 1);
    assert_eq!(after[1].collections, before[1].collections);
    assert_eq!(after[0].collections, before[0].collections);
}

#[test]
fn collect_returns_objects_found_unreachable() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    assert_eq!(gc::collect(), 0, "fresh thread: no garbage");

    self_cycles(3, &drops);
    // A 2-cycle and a 3-cycle.
    {
        let a = node(&drops);
        let b = node(&drops);
        a.edges.borrow_mut().push(b.clone());
        b.edges.borrow_mut().push(a.clone());
        let c = node(&drops);
        let d = node(&drops);
        let e = node(&drops);
        c.edges.borrow_mut().push(d.clone());
        d.edges.borrow_mut().push(e.clone());
        e.edges.borrow_mut().push(c.clone());
    }
    assert_eq!(drops.get(), 0);
    let stats_before = gc::get_stats();
    assert_eq!(gc::collect(), 8, "one Gc allocation is one object");
    assert_eq!(drops.get(), 8);
    let stats_after = gc::get_stats();
    assert_eq!(stats_after[2].collected, stats_before[2].collected + 8);
    assert_eq!(stats_after[2].uncollectable, stats_before[2].uncollectable);
    assert_eq!(gc::collect(), 0, "nothing left");
    assert_eq!(drops.get(), 8);
}

#[test]
fn live_objects_survive_collection() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    let a = node(&drops);
    let b = node(&drops);
    a.edges.borrow_mut().push(b.clone());
    b.edges.borrow_mut().push(a.clone());
    drop(b);
    for gen in [0, 1, 2, 0, 2] {
        assert_eq!(gc::collect_generation(gen), 0);
    }
    assert_eq!(gc::collect(), 0);
    assert_eq!(drops.get(), 0);
    assert_eq!(a.edges.borrow().len(), 1);
    assert_eq!(a.edges.borrow()[0].edges.borrow().len(), 1);
    drop(a);
    assert_eq!(gc::collect(), 2);
    assert_eq!(drops.get(), 2);
}

#[test]
fn untracked_types() {
    gc::disable();
    let t0 = gc::tracked_count();
    let c0 = gc::get_count();
    let a = Gc::new(5u64);
    let b = Gc::new(String::from("s"));
    let c = Gc::new(vec![1u8, 2, 3]);
    let d = Gc::new(Some(4u32));
    let e = Gc::new((1u32, String::from("t")));
    let f = Gc::new(RefCell::new(vec![String::from("x")]));
    let g = Gc::new(Plain {
        a: 1,
        b: String::new(),
        c: vec![],
        d: None,
        e: (2, String::new()),
        f: RefCell::new(vec![]),
    });
    let h = Gc::new(1.5f64);
    let i = Gc::new(true);
    let j = Gc::new('c');
    assert!(!gc::is_tracked(&a));
    assert!(!gc::is_tracked(&b));
    assert!(!gc::is_tracked(&c));
    assert!(!gc::is_tracked(&d));
    assert!(!gc::is_tracked(&e));
    assert!(!gc::is_tracked(&f));
    assert!(!gc::is_tracked(&g));
    assert!(!gc::is_tracked(&h));
    assert!(!gc::is_tracked(&i));
    assert!(!gc::is_tracked(&j));
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(gc::get_count(), c0);
    assert_eq!(g.a + g.e.0, 3);
    assert_eq!(g.b.len() + g.c.len() + g.f.borrow().len(), 0);
    assert!(g.d.is_none());
    drop((a, b, c, d, e, f, g, h, i, j));
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(gc::get_count(), c0);
}

#[test]
fn tracked_types() {
    gc::disable();
    let t0 = gc::tracked_count();
    let drops = Rc::new(Cell::new(0));
    let n = node(&drops);
    let o = Gc::new(Opaque(1));
    let w = Gc::new(WithGc {
        name: "root".into(),
        child: None,
    });
    let v = Gc::new(RefCell::new(Vec::<Gc<Node>>::new()));
    assert!(gc::is_tracked(&n));
    assert!(
        gc::is_tracked(&o),
        "a hand-written Trace defining only `trace` is tracked"
    );
    assert!(gc::is_tracked(&w));
    assert!(gc::is_tracked(&v));
    assert_eq!(gc::tracked_count(), t0 + 4);
    assert_eq!(w.name, "root");
    assert!(w.child.is_none());

    // Clones and weak handles do not change the number of tracked objects.
    let n2 = n.clone();
    let nw = Gc::downgrade(&n);
    assert_eq!(gc::tracked_count(), t0 + 4);

    // Freed by refcounting: leaves tracked_count at once.
    drop(o);
    assert_eq!(gc::tracked_count(), t0 + 3);
    drop(n);
    assert_eq!(gc::tracked_count(), t0 + 3);
    drop(n2);
    assert_eq!(gc::tracked_count(), t0 + 2);
    assert!(nw.upgrade().is_none());
    drop((w, v));
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(drops.get(), 1);

    // try_unwrap takes the object off the collector's lists too.
    let x = node(&drops);
    assert_eq!(gc::tracked_count(), t0 + 1);
    let value = Gc::try_unwrap(x).ok().expect("unique");
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(drops.get(), 1);
    drop(value);
    assert_eq!(drops.get(), 2);

    // Cyclic garbage stays tracked until collected.
    self_cycles(10, &drops);
    assert_eq!(gc::tracked_count(), t0 + 10);
    assert_eq!(gc::collect(), 10);
    assert_eq!(gc::tracked_count(), t0);
}

#[test]
fn freeze_and_unfreeze() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    assert_eq!(gc::get_freeze_count(), 0);
    // A garbage 2-cycle, still alive because nobody collected it.
    {
        let a = node(&drops);
        let b = node(&drops);
        a.edges.borrow_mut().push(b.clone());
        b.edges.borrow_mut().push(a.clone());
    }
    let keep = node(&drops);
    let tracked = gc::tracked_count();
    assert!(tracked >= 3);
    gc::freeze();
    assert_eq!(
        gc::get_freeze_count(),
        tracked,
        "freeze moves every tracked object to the permanent generation"
    );
    assert_eq!(gc::collect(), 0, "frozen garbage is not collected");
    assert_eq!(gc::collect_generation(0), 0);
    assert_eq!(drops.get(), 0);

    // Objects made after the freeze are collected as usual, even when they
    // point into the frozen set.
    {
        let c = node(&drops);
        c.edges.borrow_mut().push(c.clone());
        c.edges.borrow_mut().push(keep.clone());
    }
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops.get(), 1);
    assert_eq!(Gc::strong_count(&keep), 1);

    // A frozen object freed by refcounting leaves the permanent generation.
    let fc = gc::get_freeze_count();
    drop(keep);
    assert_eq!(drops.get(), 2);
    assert_eq!(gc::get_freeze_count(), fc - 1);

    gc::unfreeze();
    assert_eq!(gc::get_freeze_count(), 0);
    assert_eq!(gc::collect(), 2, "after unfreeze, the cycle is reclaimed");
    assert_eq!(drops.get(), 4);
}

#[test]
fn automatic_collection_by_threshold() {
    assert!(gc::is_enabled());
    assert_eq!(gc::get_threshold(), (700, 10, 10));
    let drops = Rc::new(Cell::new(0));
    let before = gc::get_stats();
    self_cycles(2000, &drops);
    let after = gc::get_stats();
    let young_collections = after[0].collections - before[0].collections;
    assert!(
        young_collections >= 1,
        "2000 tracked allocations with threshold 700 must trigger a collection"
    );
    assert!(
        drops.get() >= 700,
        "cycles reclaimed without calling collect(): {} dropped",
        drops.get()
    );
    assert!(
        gc::get_count().0 <= 700,
        "count[0] never stays above threshold 0: {:?}",
        gc::get_count()
    );
    let auto_dropped = drops.get();
    assert_eq!(gc::collect() + auto_dropped, 2000);
    assert_eq!(drops.get(), 2000);
}

#[test]
fn automatic_collection_with_small_thresholds() {
    gc::set_threshold(10, 3, 3);
    let drops = Rc::new(Cell::new(0));
    let before = gc::get_stats();
    self_cycles(1000, &drops);
    let after = gc::get_stats();
    let total: usize = (0..3)
        .map(|g| after[g].collections - before[g].collections)
        .sum();
    // About one collection per 11 allocations.
    assert!(total >= 50, "only {total} automatic collections");
    assert!(
        after[1].collections > before[1].collections,
        "threshold 1 triggers generation-1 collections"
    );
    assert!(drops.get() >= 900, "{} dropped", drops.get());
    gc::collect();
    assert_eq!(drops.get(), 1000);
}

#[test]
fn disable_stops_automatic_collection() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    let before = gc::get_stats();
    self_cycles(3000, &drops);
    let after = gc::get_stats();
    for g in 0..3 {
        assert_eq!(after[g].collections, before[g].collections);
    }
    assert_eq!(drops.get(), 0);
    assert_eq!(gc::get_count().0, 3000);
    // Explicit collection still works while disabled.
    assert_eq!(gc::collect(), 3000);
    assert_eq!(drops.get(), 3000);
    gc::enable();
    self_cycles(2000, &drops);
    assert!(drops.get() > 3000, "re-enabled: automatic collection again");
    gc::collect();
    assert_eq!(drops.get(), 5000);
}

#[test]
fn untracked_allocations_never_trigger_collection() {
    gc::set_threshold(5, 10, 10);
    let before = gc::get_stats();
    let v: Vec<Gc<u64>> = (0..1000).map(Gc::new).collect();
    let after = gc::get_stats();
    assert_eq!(after[0].collections, before[0].collections);
    assert_eq!(v.iter().map(|g| **g).sum::<u64>(), 999 * 1000 / 2);
}

#[test]
fn collector_is_per_thread() {
    gc::disable();
    let drops = Rc::new(Cell::new(0));
    self_cycles(5, &drops);
    let t0 = gc::tracked_count();
    // Another thread sees none of this thread's objects.
    let (other_tracked, other_collected) =
        std::thread::spawn(|| (gc::tracked_count(), gc::collect()))
            .join()
            .unwrap();
    assert_eq!(other_tracked, 0);
    assert_eq!(other_collected, 0);
    assert_eq!(drops.get(), 0);
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(gc::collect(), 5);
}

#[test]
fn long_lived_rule_keeps_building_linear() {
    // With tiny thresholds a generation-2 collection would be due every
    // 10 * 3 * 3 = 90 tracked allocations; CPython's long-lived rule runs
    // it only when the objects promoted since the last full collection
    // exceed 25% of those that survived it, so building N live objects
    // costs O(log N) full collections, not O(N).
    gc::set_threshold(10, 2, 2);
    let drops = Rc::new(Cell::new(0));
    let before = gc::get_stats();
    let mut head = node(&drops);
    for _ in 0..50_000 {
        let n = node(&drops);
        n.edges.borrow_mut().push(head);
        head = n;
    }
    let after = gc::get_stats();
    let full = after[2].collections - before[2].collections;
    let young = after[0].collections - before[0].collections;
    assert!(young > 1000, "{young} generation-0 collections");
    assert!(
        (1..=60).contains(&full),
        "{full} full collections while building 50,000 live objects"
    );
    assert_eq!(drops.get(), 0);
    drop(head);
    assert_eq!(drops.get(), 50_001);
}
