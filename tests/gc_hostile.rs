//! `Gc` under hostile user code (issue 4, item 5): `Drop` impls that panic,
//! allocate, build cycles, collect re-entrantly or freeze during a
//! collection; `Trace` impls that panic halfway or under-report; `RefCell`s
//! mutably borrowed while the collector runs.
//!
//! Every test runs in a child process (`common::isolated`), so that an
//! abort (a panic while panicking, say) fails that test alone. Runs over
//! `PyMalloc`.
#![allow(clippy::needless_range_loop)]

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

mod common;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{isolated, panic_message};
use pymem::{gc, Gc, Trace, Tracer, Weak};

thread_local! {
    static DROPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static TRACE_PANIC: Cell<bool> = const { Cell::new(false) };
    static KEEP: RefCell<Vec<Gc<HNode>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, PartialEq)]
enum OnDrop {
    Nothing,
    Panic,
    /// Panics unless the thread is already unwinding (so that a value
    /// dropped by an unwinding `Gc::new` does not abort).
    PanicUnlessUnwinding,
    PanicAny,
    /// Build a garbage 3-cycle and keep one new live node in `KEEP`.
    MakeCycles,
    /// Build a garbage cycle, then call `gc::collect()` re-entrantly.
    Collect,
    Freeze,
}

struct HNode {
    id: usize,
    edges: RefCell<Vec<Gc<HNode>>>,
    on_drop: OnDrop,
    trace_mode: TraceMode,
}

#[derive(Clone, Copy, PartialEq)]
enum TraceMode {
    Normal,
    /// Panics halfway through `trace` while `TRACE_PANIC` is set.
    PanicWhenArmed,
    /// Visits nothing (an under-reporting, but safe, Trace).
    Hide,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for HNode {
    fn trace(&self, tracer: &mut Tracer) {
        if self.trace_mode == TraceMode::Hide {
            return;
        }
        if self.trace_mode == TraceMode::PanicWhenArmed && TRACE_PANIC.with(Cell::get) {
            let edges = self.edges.borrow();
            for e in edges.iter().take(edges.len() / 2) {
                e.trace(tracer);
            }
            panic!("trace boom in node {}", self.id);
        }
        self.edges.trace(tracer);
    }
}

thread_local! {
    static NESTED: RefCell<Vec<(usize, Vec<u32>)>> = const { RefCell::new(Vec::new()) };
}

impl Drop for HNode {
    fn drop(&mut self) {
        DROPS.with(|d| d.borrow_mut()[self.id] += 1);
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::Panic => panic!("drop boom in node {}", self.id),
            OnDrop::PanicUnlessUnwinding => {
                if !std::thread::panicking() {
                    panic!("drop boom in node {}", self.id)
                }
            }
            OnDrop::PanicAny => std::panic::panic_any(self.id as i32),
            OnDrop::MakeCycles => {
                let a = new_node(OnDrop::Nothing);
                let b = new_node(OnDrop::Nothing);
                let c = new_node(OnDrop::Nothing);
                link(&a, &b);
                link(&b, &c);
                link(&c, &a);
                let keep = new_node(OnDrop::Nothing);
                link(&keep, &a);
                drop((a, b, c));
                KEEP.with(|k| k.borrow_mut().push(keep));
            }
            OnDrop::Collect => {
                let a = new_node(OnDrop::Nothing);
                let b = new_node(OnDrop::Nothing);
                link(&a, &b);
                link(&b, &a);
                let ids = [a.id, b.id];
                drop((a, b));
                let n = gc::collect();
                let m = gc::collect_generation(0);
                let still: Vec<u32> = ids.iter().map(|&i| drops_of(i)).collect();
                NESTED.with(|v| v.borrow_mut().push((n + m, still)));
            }
            OnDrop::Freeze => gc::freeze(),
        }
    }
}

fn new_node_with(on_drop: OnDrop, trace_mode: TraceMode) -> Gc<HNode> {
    let id = DROPS.with(|d| {
        let mut d = d.borrow_mut();
        d.push(0);
        d.len() - 1
    });
    Gc::new(HNode {
        id,
        edges: RefCell::new(Vec::new()),
        on_drop,
        trace_mode,
    })
}

fn armed_if(b: bool) -> TraceMode {
    if b {
        TraceMode::PanicWhenArmed
    } else {
        TraceMode::Normal
    }
}

fn new_node(on_drop: OnDrop) -> Gc<HNode> {
    new_node_with(on_drop, TraceMode::Normal)
}

fn link(from: &Gc<HNode>, to: &Gc<HNode>) {
    from.edges.borrow_mut().push(to.clone());
}

fn drops_of(id: usize) -> u32 {
    DROPS.with(|d| d.borrow()[id])
}

fn all_drops() -> Vec<u32> {
    DROPS.with(|d| d.borrow().clone())
}

/// A garbage ring of `n` nodes; `special(i)` gives node i's behaviour.
fn garbage_ring(n: usize, special: impl Fn(usize) -> OnDrop) -> Vec<Weak<HNode>> {
    let nodes: Vec<Gc<HNode>> = (0..n).map(|i| new_node(special(i))).collect();
    for i in 0..n {
        link(&nodes[i], &nodes[(i + 1) % n]);
    }
    nodes.iter().map(Gc::downgrade).collect()
}

/// A fresh 2-cycle is collected: the collector works.
fn assert_collector_usable() {
    let before = all_drops().len();
    let a = new_node(OnDrop::Nothing);
    let b = new_node(OnDrop::Nothing);
    link(&a, &b);
    link(&b, &a);
    drop((a, b));
    assert_eq!(gc::collect(), 2, "collector unusable afterwards");
    assert_eq!(&all_drops()[before..], [1, 1]);
}

#[test]
fn panic_in_drop_during_collection_loses_nothing() {
    isolated("panic_in_drop_during_collection_loses_nothing", || {
        gc::disable();
        const N: usize = 10_000;
        let weaks = garbage_ring(N, |i| {
            if i == N / 2 {
                OnDrop::Panic
            } else {
                OnDrop::Nothing
            }
        });
        let r = catch_unwind(AssertUnwindSafe(gc::collect));
        let payload = r.expect_err("the Drop panic is resumed after the collection");
        let msg = panic_message(&*payload).expect("string payload");
        assert!(msg.contains("drop boom"), "{msg}");
        let drops = all_drops();
        assert_eq!(drops.len(), N);
        assert!(
            drops.iter().all(|&d| d == 1),
            "{} of {N} nodes not dropped exactly once",
            drops.iter().filter(|&&d| d != 1).count()
        );
        assert!(weaks.iter().all(|w| w.upgrade().is_none()));
        assert_eq!(gc::tracked_count(), 0, "lists consistent, nothing left");
        assert_eq!(gc::collect(), 0);
        assert_collector_usable();
        assert_eq!(gc::get_count().1, 0);
    });
}

#[test]
fn panic_any_payload_is_resumed_unchanged() {
    isolated("panic_any_payload_is_resumed_unchanged", || {
        gc::disable();
        let _w = garbage_ring(100, |i| {
            if i == 7 {
                OnDrop::PanicAny
            } else {
                OnDrop::Nothing
            }
        });
        let payload = catch_unwind(AssertUnwindSafe(gc::collect)).expect_err("resumed");
        assert_eq!(payload.downcast_ref::<i32>(), Some(&7));
        assert!(all_drops().iter().all(|&d| d == 1));
        assert_collector_usable();
    });
}

#[test]
fn several_panicking_drops_in_one_collection() {
    isolated("several_panicking_drops_in_one_collection", || {
        gc::disable();
        const N: usize = 10_000;
        let _w = garbage_ring(N, |i| {
            if i % 3000 == 1 {
                OnDrop::Panic
            } else {
                OnDrop::Nothing
            }
        });
        // Plus separate garbage cycles, some panicking.
        for k in 0..100 {
            let a = new_node(if k % 10 == 0 {
                OnDrop::Panic
            } else {
                OnDrop::Nothing
            });
            let b = new_node(OnDrop::Nothing);
            link(&a, &b);
            link(&b, &a);
        }
        let r = catch_unwind(AssertUnwindSafe(gc::collect));
        let payload = r.expect_err("a panic is resumed");
        assert!(panic_message(&*payload).unwrap().contains("drop boom"));
        let drops = all_drops();
        assert_eq!(drops.len(), N + 200);
        assert!(drops.iter().all(|&d| d == 1));
        assert_eq!(gc::tracked_count(), 0);
        assert_collector_usable();
    });
}

#[test]
fn panic_in_drop_of_acyclic_tail_freed_during_collection() {
    isolated(
        "panic_in_drop_of_acyclic_tail_freed_during_collection",
        || {
            gc::disable();
            // A cycle a <-> b holding a chain of 1000 nodes; one chain node
            // panics when its drop cascades from the collection.
            let a = new_node(OnDrop::Nothing);
            let b = new_node(OnDrop::Nothing);
            link(&a, &b);
            link(&b, &a);
            let mut prev = a.clone();
            for i in 0..1000 {
                let n = new_node(if i == 500 {
                    OnDrop::Panic
                } else {
                    OnDrop::Nothing
                });
                link(&prev, &n);
                prev = n;
            }
            drop(prev);
            drop((a, b));
            let r = catch_unwind(AssertUnwindSafe(gc::collect));
            assert!(r.is_err(), "the panic is resumed");
            assert!(all_drops().iter().all(|&d| d == 1));
            assert_eq!(gc::tracked_count(), 0);
            assert_collector_usable();
        },
    );
}

#[test]
fn panic_in_drop_during_automatic_collection() {
    isolated("panic_in_drop_during_automatic_collection", || {
        gc::set_threshold(10, 5, 5);
        gc::enable();
        let mut caught = 0;
        for i in 0..500 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                let a = new_node(if i % 50 == 3 {
                    OnDrop::PanicUnlessUnwinding
                } else {
                    OnDrop::Nothing
                });
                let b = new_node(OnDrop::Nothing);
                link(&a, &b);
                link(&b, &a);
            }));
            if let Err(p) = r {
                assert!(panic_message(&*p).unwrap().contains("drop boom"));
                caught += 1;
            }
        }
        assert!(
            caught >= 1,
            "a Drop panic in an automatic collection surfaces"
        );
        gc::disable();
        let _ = catch_unwind(AssertUnwindSafe(gc::collect));
        let drops = all_drops();
        assert!(drops.len() >= 900);
        let bad: Vec<usize> = (0..drops.len()).filter(|&i| drops[i] != 1).collect();
        assert!(bad.is_empty(), "nodes not dropped exactly once: {bad:?}");
        assert_eq!(gc::tracked_count(), 0);
        assert_collector_usable();
    });
}

/// A live ring reachable from the returned handle (one node panics in
/// `trace`), garbage 2-cycles, and a garbage ring with a panicking tracer.
/// Returns (root, number of garbage objects, live ids).
fn trace_panic_heap() -> (Gc<HNode>, usize, Vec<usize>) {
    let live: Vec<Gc<HNode>> = (0..10)
        .map(|i| new_node_with(OnDrop::Nothing, armed_if(i == 4)))
        .collect();
    for i in 0..10 {
        link(&live[i], &live[(i + 1) % 10]);
        link(&live[i], &live[(i + 3) % 10]);
    }
    let live_ids = live.iter().map(|n| n.id).collect();
    let root = live[0].clone();
    drop(live);
    for _ in 0..50 {
        let a = new_node(OnDrop::Nothing);
        let b = new_node(OnDrop::Nothing);
        link(&a, &b);
        link(&b, &a);
    }
    let ring: Vec<Gc<HNode>> = (0..20)
        .map(|i| new_node_with(OnDrop::Nothing, armed_if(i == 10)))
        .collect();
    for i in 0..20 {
        link(&ring[i], &ring[(i + 1) % 20]);
        link(&ring[i], &ring[(i + 7) % 20]);
    }
    (root, 120, live_ids)
}

fn check_live_ring(root: &Gc<HNode>, live_ids: &[usize]) {
    let mut cur = root.clone();
    for k in 0..10 {
        assert_eq!(cur.id, live_ids[k]);
        assert_eq!(drops_of(cur.id), 0, "live node dropped");
        let next = cur.edges.borrow()[0].clone();
        cur = next;
    }
    assert!(Gc::ptr_eq(&cur, root));
}

#[test]
fn panic_in_trace_leaves_heap_consistent() {
    isolated("panic_in_trace_leaves_heap_consistent", || {
        gc::disable();
        let (root, garbage, live_ids) = trace_panic_heap();
        let total = all_drops().len();
        TRACE_PANIC.with(|p| p.set(true));
        let first = catch_unwind(AssertUnwindSafe(gc::collect));
        TRACE_PANIC.with(|p| p.set(false));
        if let Err(p) = &first {
            assert!(panic_message(&**p).unwrap().contains("trace boom"));
        }
        // Nothing live went, nothing went twice.
        check_live_ring(&root, &live_ids);
        assert!(all_drops().iter().all(|&d| d <= 1));

        let second = gc::collect();
        let found = second + first.as_ref().map_or(0, |n| *n);
        assert!(found <= garbage);
        let drops = all_drops();
        for id in 0..total {
            let expect = u32::from(!live_ids.contains(&id));
            assert_eq!(drops[id], expect, "node {id} after the next collection");
        }
        check_live_ring(&root, &live_ids);
        assert_eq!(gc::tracked_count(), 10);
        drop(root);
        assert_eq!(gc::collect(), 10);
        assert!(all_drops().iter().all(|&d| d == 1));
        assert_eq!(gc::tracked_count(), 0);
        assert_collector_usable();
    });
}

#[test]
fn panic_in_trace_during_young_and_automatic_collections() {
    isolated(
        "panic_in_trace_during_young_and_automatic_collections",
        || {
            gc::disable();
            let (root, _garbage, live_ids) = trace_panic_heap();
            TRACE_PANIC.with(|p| p.set(true));
            for gen in [0, 1, 0, 2] {
                let _ = catch_unwind(AssertUnwindSafe(|| gc::collect_generation(gen)));
                check_live_ring(&root, &live_ids);
            }
            // Automatic collections panicking out of Gc::new.
            gc::set_threshold(5, 2, 2);
            gc::enable();
            for _ in 0..200 {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let a = new_node(OnDrop::Nothing);
                    link(&a, &a);
                }));
            }
            gc::disable();
            TRACE_PANIC.with(|p| p.set(false));
            check_live_ring(&root, &live_ids);
            gc::collect();
            let drops = all_drops();
            for (id, &d) in drops.iter().enumerate() {
                let expect = u32::from(!live_ids.contains(&id));
                assert_eq!(d, expect, "node {id}");
            }
            drop(root);
            gc::collect();
            assert!(all_drops().iter().all(|&d| d == 1));
            assert_eq!(gc::tracked_count(), 0);
        },
    );
}

#[test]
fn under_reporting_trace_leaks_safely() {
    // A Trace that hides its edges makes their targets look referenced from
    // outside: the cycle is kept (a leak), never freed while in use.
    isolated("under_reporting_trace_leaks_safely", || {
        gc::disable();
        let a = new_node_with(OnDrop::Nothing, TraceMode::Hide);
        let b = new_node(OnDrop::Nothing);
        link(&a, &b);
        link(&b, &a);
        let wa = Gc::downgrade(&a);
        drop((a, b));
        assert_eq!(gc::collect(), 0);
        assert_eq!(all_drops(), [0, 0]);
        let a = wa.upgrade().expect("kept alive");
        assert_eq!(a.edges.borrow()[0].edges.borrow()[0].id, a.id);
        // Breaking the cycle by hand frees both by refcounting.
        let edges = std::mem::take(&mut *a.edges.borrow_mut());
        drop(edges);
        drop(a);
        assert_eq!(all_drops(), [1, 1]);
        assert_eq!(gc::tracked_count(), 0);
    });
}

#[test]
fn drop_creates_new_cycles_during_collection() {
    isolated("drop_creates_new_cycles_during_collection", || {
        gc::disable();
        const N: usize = 100;
        let _w = garbage_ring(N, |_| OnDrop::MakeCycles);
        assert_eq!(gc::collect(), N);
        let drops = all_drops();
        // 100 ring nodes, and 4 new nodes made by each Drop.
        assert_eq!(drops.len(), N + 4 * N);
        assert!(drops[..N].iter().all(|&d| d == 1));
        assert!(drops.iter().all(|&d| d <= 1));
        let kept = KEEP.with(|k| k.borrow().clone());
        assert_eq!(kept.len(), N);
        for k in &kept {
            assert_eq!(drops_of(k.id), 0);
            let a = k.edges.borrow()[0].clone();
            assert_eq!(drops_of(a.id), 0, "a cycle reachable from a kept node");
            let b = a.edges.borrow()[0].clone();
            let c = b.edges.borrow()[0].clone();
            assert_eq!(c.edges.borrow()[0].id, a.id);
        }
        drop(kept);
        KEEP.with(|k| k.borrow_mut().clear());
        gc::collect();
        assert!(all_drops().iter().all(|&d| d == 1));
        assert_eq!(gc::tracked_count(), 0);
    });
}

#[test]
fn drop_allocates_with_tiny_thresholds_during_collection() {
    // Allocations inside a Drop during a collection pass threshold 0: the
    // automatic collection they would trigger must be refused or harmless.
    isolated(
        "drop_allocates_with_tiny_thresholds_during_collection",
        || {
            gc::set_threshold(1, 1, 1);
            gc::enable();
            const N: usize = 200;
            let _w = garbage_ring(N, |_| OnDrop::MakeCycles);
            gc::collect();
            let kept = KEEP.with(|k| std::mem::take(&mut *k.borrow_mut()));
            assert_eq!(kept.len(), N);
            for k in &kept {
                let a = k.edges.borrow()[0].clone();
                assert_eq!(drops_of(a.id), 0);
                assert_eq!(drops_of(k.id), 0);
            }
            drop(kept);
            gc::disable();
            gc::collect();
            assert!(all_drops().iter().all(|&d| d == 1));
            assert_eq!(gc::tracked_count(), 0);
        },
    );
}

#[test]
fn drop_calls_collect_reentrantly() {
    isolated("drop_calls_collect_reentrantly", || {
        gc::disable();
        const N: usize = 1000;
        let _w = garbage_ring(N, |_| OnDrop::Collect);
        assert_eq!(gc::collect(), N);
        let nested = NESTED.with(|v| std::mem::take(&mut *v.borrow_mut()));
        assert_eq!(nested.len(), N);
        for (found, still) in &nested {
            assert_eq!(*found, 0, "a re-entrant collection returns 0");
            assert_eq!(still, &[0, 0], "and does nothing");
        }
        let drops = all_drops();
        assert_eq!(drops.len(), 3 * N);
        assert!(drops[..N].iter().all(|&d| d == 1));
        // The cycles made inside the Drops are ordinary garbage now.
        assert_eq!(gc::collect(), 2 * N);
        assert!(all_drops().iter().all(|&d| d == 1));
        assert_eq!(gc::tracked_count(), 0);
    });
}

#[test]
fn drop_freezes_during_collection() {
    isolated("drop_freezes_during_collection", || {
        gc::disable();
        let live = new_node(OnDrop::Nothing);
        link(&live, &live);
        let _w = garbage_ring(50, |i| {
            if i == 0 {
                OnDrop::Freeze
            } else {
                OnDrop::Nothing
            }
        });
        let _ = gc::collect();
        gc::unfreeze();
        assert_eq!(gc::get_freeze_count(), 0);
        gc::collect();
        let drops = all_drops();
        assert_eq!(drops[0], 0, "the live self-cycle survives");
        assert!(drops[1..].iter().all(|&d| d == 1));
        assert_eq!(live.edges.borrow().len(), 1);
        drop(live);
        assert_eq!(gc::collect(), 1);
        assert_eq!(gc::tracked_count(), 0);
    });
}

#[test]
fn mutably_borrowed_refcell_of_live_object_during_collect() {
    isolated(
        "mutably_borrowed_refcell_of_live_object_during_collect",
        || {
            gc::disable();
            // x -> y, y <-> z; only x is held.
            let x = new_node(OnDrop::Nothing);
            let y = new_node(OnDrop::Nothing);
            let z = new_node(OnDrop::Nothing);
            link(&x, &y);
            link(&y, &z);
            link(&z, &y);
            drop((y, z));
            {
                let mut guard = x.edges.borrow_mut();
                assert_eq!(gc::collect(), 0, "no panic, nothing reclaimed");
                for gen in 0..3 {
                    assert_eq!(gc::collect_generation(gen), 0);
                }
                assert_eq!(all_drops(), [0, 0, 0]);
                let first = guard[0].clone();
                guard.push(first);
                assert_eq!(guard[0].edges.borrow()[0].id, 2);
            }
            assert_eq!(gc::collect(), 0);
            drop(x);
            assert_eq!(all_drops(), [1, 0, 0]);
            assert_eq!(gc::collect(), 2);
            assert_eq!(all_drops(), [1, 1, 1]);
        },
    );
}

#[test]
fn mutably_borrowed_refcell_of_garbage_is_treated_as_reachable() {
    isolated(
        "mutably_borrowed_refcell_of_garbage_is_treated_as_reachable",
        || {
            gc::disable();
            // A self-cycle and a 2-cycle whose RefCells are mutably borrowed
            // while no handle to them exists: the collector cannot trace them,
            // so it must keep them (and what they reach).
            let s = new_node(OnDrop::Nothing);
            link(&s, &s);
            let a = new_node(OnDrop::Nothing);
            let b = new_node(OnDrop::Nothing);
            let c = new_node(OnDrop::Nothing); // reached only through a
            link(&a, &b);
            link(&b, &a);
            link(&a, &c);
            let ws = Gc::downgrade(&s);
            let wa = Gc::downgrade(&a);
            let (ps, pa) = (Gc::as_ptr(&s), Gc::as_ptr(&a));
            // SAFETY: the collector promises never to reclaim an object whose
            // RefCell is mutably borrowed during a collection; the assertions
            // below check that before the guards are used.
            let gs = unsafe { &*ps }.edges.borrow_mut();
            let ga = unsafe { &*pa }.edges.borrow_mut();
            drop((s, a, b, c));
            assert_eq!(gc::collect(), 0);
            if all_drops() != [0, 0, 0, 0] {
                // The guards point into reclaimed memory: never touch them.
                std::mem::forget(gs);
                std::mem::forget(ga);
                panic!("borrowed garbage was reclaimed: drops {:?}", all_drops());
            }
            assert!(ws.upgrade().is_some());
            assert!(wa.upgrade().is_some());
            assert_eq!(gs.len(), 1);
            assert_eq!(ga.len(), 2);
            assert_eq!(ga[1].id, 3);
            drop(gs);
            drop(ga);
            assert_eq!(gc::collect(), 4);
            assert_eq!(all_drops(), [1, 1, 1, 1]);
            assert_eq!(gc::tracked_count(), 0);
        },
    );
}

#[test]
fn mutably_borrowed_refcell_during_automatic_collection() {
    isolated(
        "mutably_borrowed_refcell_during_automatic_collection",
        || {
            gc::set_threshold(5, 2, 2);
            gc::enable();
            let holder = new_node(OnDrop::Nothing);
            let mut guard = holder.edges.borrow_mut();
            let before = gc::get_stats();
            // Allocating under the borrow triggers collections; the borrowed
            // holder keeps everything pushed into it.
            for _ in 0..300 {
                let n = new_node(OnDrop::Nothing);
                link(&n, &n);
                guard.push(n);
            }
            let after = gc::get_stats();
            assert!(after[0].collections > before[0].collections);
            assert!(all_drops().iter().all(|&d| d == 0));
            drop(guard);
            drop(holder);
            gc::collect();
            assert!(all_drops().iter().all(|&d| d == 1));
            assert_eq!(gc::tracked_count(), 0);
        },
    );
}

/// A node whose `trace` drops the last handle to what it just visited
/// (rule 5 of `Trace` broken) when `STEAL` is set.
struct Stealer {
    steal: bool,
    edges: RefCell<Vec<Gc<Stealer>>>,
}

thread_local! {
    static STEAL: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: visits its edges; then, armed, breaks rule 5 on purpose (the
// collector must stay sound and usable).
unsafe impl Trace for Stealer {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
        if self.steal && STEAL.with(Cell::get) {
            drop(self.edges.borrow_mut().pop());
        }
    }
}

#[test]
fn trace_freeing_a_dirty_member_it_visited_is_not_examined_twice() {
    // `a` holds the only handle to `b`, both dirty: a full collection from
    // the dirty seeds discovers `b` through `a`'s edge, then `a`'s trace
    // frees it, leaving a hole where a seed was. The hole must not be
    // taken as a seed again (it was: "a member examined twice").
    isolated(
        "trace_freeing_a_dirty_member_it_visited_is_not_examined_twice",
        || {
            gc::disable();
            let a = Gc::new(Stealer {
                steal: true,
                edges: RefCell::new(vec![]),
            });
            let b = Gc::new(Stealer {
                steal: false,
                edges: RefCell::new(vec![]),
            });
            a.edges.borrow_mut().push(b.clone());
            for _ in 0..3 {
                gc::collect();
            }
            drop(a.clone()); // a dirty
            drop(b); // b: 2 -> 1, dirty
            STEAL.with(|s| s.set(true));
            let r = catch_unwind(gc::collect);
            STEAL.with(|s| s.set(false));
            assert_eq!(r.map_err(|e| panic_message(&*e)), Ok(0));
            assert!(a.edges.borrow().is_empty());
            assert_eq!(gc::tracked_count(), 1);
            assert_eq!(gc::collect(), 0);
        },
    );
}

thread_local! {
    static ALLOCATE_IN_TRACE: Cell<bool> = const { Cell::new(false) };
    static RESURRECTED: RefCell<Option<Gc<Fin>>> = const { RefCell::new(None) };
    static STASH: RefCell<Vec<Gc<Leaf>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Trace)]
struct Leaf {
    next: RefCell<Option<Gc<Leaf>>>,
}

/// Has a finalizer; its `trace`, once armed, allocates a tracked object
/// and reports it (an edge it does not own: rule 1 broken).
struct Fin {
    id: u32,
    next: RefCell<Option<Gc<Fin>>>,
    payload: Vec<u64>,
}

// SAFETY: visits its one edge; armed, also a fresh object's handle (the
// collector must stay sound and exact about its own members).
unsafe impl Trace for Fin {
    fn trace(&self, tracer: &mut Tracer) {
        if ALLOCATE_IN_TRACE.with(Cell::get) {
            let g = Gc::new(Leaf {
                next: RefCell::new(None),
            });
            for _ in 0..3 {
                g.trace(tracer);
            }
            STASH.with(|s| s.borrow_mut().push(g));
        }
        self.next.trace(tracer);
    }
}

impl gc::Finalize for Fin {
    fn finalize(this: &Gc<Self>) {
        if this.id == 0 {
            RESURRECTED.with(|r| *r.borrow_mut() = Some(this.clone()));
        }
        ALLOCATE_IN_TRACE.with(|a| a.set(true));
    }
}

#[test]
fn objects_allocated_by_trace_during_the_resurrection_check_are_not_members() {
    // A cycle of two finalized objects; the first finalizer resurrects
    // both (one is stored, the other reachable from it). The check that
    // follows traces them again; a `trace` that allocates then got the
    // index the check gave the first member, and its edges counted
    // against it: the resurrected object was collected.
    isolated(
        "objects_allocated_by_trace_during_the_resurrection_check_are_not_members",
        || {
            gc::disable();
            let a = Gc::new_with_finalizer(Fin {
                id: 0,
                next: RefCell::new(None),
                payload: vec![1; 4],
            });
            let b = Gc::new_with_finalizer(Fin {
                id: 1,
                next: RefCell::new(None),
                payload: vec![2; 4],
            });
            *a.next.borrow_mut() = Some(b.clone());
            *b.next.borrow_mut() = Some(a.clone());
            drop((a, b));
            assert_eq!(gc::collect(), 0, "both were resurrected");
            ALLOCATE_IN_TRACE.with(|a| a.set(false));
            RESURRECTED.with(|r| {
                let r = r.borrow();
                let f = r.as_ref().expect("the finalizer stored it");
                assert_eq!((f.id, &f.payload[..]), (0, &[1u64; 4][..]));
                assert_eq!(f.next.borrow().as_ref().unwrap().id, 1);
            });
        },
    );
}

/// A cycle held by a thread-local set up before the thread's first `Gc`
/// is collected by the teardown that runs after every thread-local
/// destructor, and after the allocator has parked the thread's heap: the
/// `Drop` impls it runs allocate and free (the garbage is large enough to
/// fill pools), served then without a heap of the thread's own.
#[test]
fn cycles_of_an_earlier_thread_local_are_dropped_after_the_heap_is_parked() {
    isolated(
        "cycles_of_an_earlier_thread_local_are_dropped_after_the_heap_is_parked",
        || {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static DROPPED: AtomicUsize = AtomicUsize::new(0);
            #[derive(Trace)]
            struct Big {
                next: RefCell<Option<Gc<Big>>>,
                #[trace(skip)]
                payload: Vec<u64>,
            }
            impl Drop for Big {
                fn drop(&mut self) {
                    // Allocates and frees while the thread is exiting.
                    let v: Vec<u64> = self.payload.iter().map(|x| x + 1).collect();
                    assert_eq!(v.len(), 40);
                    DROPPED.fetch_add(1, Ordering::SeqCst);
                }
            }
            thread_local! {
                static CACHE: RefCell<Vec<Gc<Big>>> = const { RefCell::new(Vec::new()) };
            }
            std::thread::spawn(|| {
                CACHE.with(|c| {
                    let mut c = c.borrow_mut();
                    for _ in 0..2_000 {
                        let a = Gc::new(Big {
                            next: RefCell::new(None),
                            payload: vec![7; 40],
                        });
                        let b = Gc::new(Big {
                            next: RefCell::new(Some(a.clone())),
                            payload: vec![7; 40],
                        });
                        *a.next.borrow_mut() = Some(b);
                        c.push(a);
                    }
                });
            })
            .join()
            .unwrap();
            assert_eq!(DROPPED.load(Ordering::SeqCst), 4_000);
            let stats = pymem::alloc_stats();
            assert!(
                stats.small_blocks_in_use < 2_000,
                "{} blocks in use: the garbage's memory was not freed",
                stats.small_blocks_in_use
            );
        },
    );
}
