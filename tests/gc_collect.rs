//! Ports of the cases of CPython's `Lib/test/test_gc.py` that apply to
//! `Gc<T>`, plus the collection contract of DESIGN.md (what a `Drop` running
//! during a collection may do). Runs over `PyMalloc`.
//!
//! Python objects are modelled by a small dynamic object type `Obj` with
//! list, tuple, dict and instance variants; `Trace` impls are written by
//! hand here (the derive is tested in `gc_derive.rs`).

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use common::panic_message;
use pymem::{gc, Gc, Trace, Tracer, Weak};

// ---------------------------------------------------------------------------
// A tiny Python object model.

#[derive(Clone)]
enum Obj {
    None,
    Int(i64),
    List(Gc<RefCell<Vec<Obj>>>),
    Tuple(Gc<Vec<Obj>>),
    Dict(Gc<RefCell<HashMap<i64, Obj>>>),
    Inst(Gc<Instance>),
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Obj {
    fn trace(&self, tracer: &mut Tracer) {
        match self {
            Obj::None | Obj::Int(_) => {}
            Obj::List(g) => g.trace(tracer),
            Obj::Tuple(g) => g.trace(tracer),
            Obj::Dict(g) => g.trace(tracer),
            Obj::Inst(g) => g.trace(tracer),
        }
    }
}

/// An instance of a user class: a `__dict__` of attributes, and a drop
/// counter standing for `__del__`.
struct Instance {
    attrs: RefCell<HashMap<String, Obj>>,
    del_count: Rc<Cell<usize>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Instance {
    fn trace(&self, tracer: &mut Tracer) {
        self.attrs.trace(tracer);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.del_count.set(self.del_count.get() + 1);
    }
}

fn list() -> Gc<RefCell<Vec<Obj>>> {
    Gc::new(RefCell::new(Vec::new()))
}

fn dict() -> Gc<RefCell<HashMap<i64, Obj>>> {
    Gc::new(RefCell::new(HashMap::new()))
}

fn instance(del_count: &Rc<Cell<usize>>) -> Gc<Instance> {
    Gc::new(Instance {
        attrs: RefCell::new(HashMap::new()),
        del_count: del_count.clone(),
    })
}

fn setattr(i: &Gc<Instance>, name: &str, v: Obj) {
    i.attrs.borrow_mut().insert(name.to_string(), v);
}

/// Start every test from a known state: no automatic collection, no
/// garbage left behind.
fn setup() {
    gc::disable();
    gc::collect();
}

// ---------------------------------------------------------------------------
// test_gc.py: GCTests

#[test]
fn test_list() {
    setup();
    let l = list();
    l.borrow_mut().push(Obj::List(l.clone()));
    let w = Gc::downgrade(&l);
    drop(l);
    assert!(
        w.upgrade().is_some(),
        "a self-cycle is not freed by refcounting"
    );
    assert_eq!(gc::collect(), 1);
    assert!(w.upgrade().is_none());
}

#[test]
fn test_dict() {
    setup();
    let d = dict();
    d.borrow_mut().insert(1, Obj::Dict(d.clone()));
    drop(d);
    assert_eq!(gc::collect(), 1);
}

#[test]
fn test_tuple() {
    // Tuples are immutable, so a tuple can be part of a cycle only through
    // a mutable object: t = ([],); t[0].append(t)
    setup();
    let l = list();
    let t = Gc::new(vec![Obj::List(l.clone()), Obj::Int(3)]);
    l.borrow_mut().push(Obj::Tuple(t.clone()));
    drop(t);
    drop(l);
    assert_eq!(gc::collect(), 2);
}

#[test]
fn test_class() {
    // class A: pass; A.a = A
    setup();
    let dels = Rc::new(Cell::new(0));
    let a = instance(&dels);
    setattr(&a, "a", Obj::Inst(a.clone()));
    drop(a);
    assert_eq!(dels.get(), 0);
    assert_eq!(gc::collect(), 1);
    assert_eq!(dels.get(), 1);
}

#[test]
fn test_instance() {
    // a = A(); a.a = a  -- plus an instance dict holding other containers.
    setup();
    let dels = Rc::new(Cell::new(0));
    let a = instance(&dels);
    setattr(&a, "a", Obj::Inst(a.clone()));
    let l = list();
    l.borrow_mut().push(Obj::Int(1));
    l.borrow_mut().push(Obj::Inst(a.clone()));
    setattr(&a, "l", Obj::List(l));
    drop(a);
    assert_eq!(gc::collect(), 2);
    assert_eq!(dels.get(), 1);
}

#[test]
fn test_newinstance_chain() {
    // Several instances pointing at each other through dicts and lists.
    setup();
    let dels = Rc::new(Cell::new(0));
    let a = instance(&dels);
    let b = instance(&dels);
    let c = instance(&dels);
    let d = dict();
    d.borrow_mut().insert(0, Obj::Inst(b.clone()));
    setattr(&a, "d", Obj::Dict(d));
    setattr(
        &b,
        "t",
        Obj::Tuple(Gc::new(vec![Obj::Inst(c.clone()), Obj::None])),
    );
    setattr(&c, "back", Obj::Inst(a.clone()));
    drop((a, b, c));
    // a, b, c, the dict and the tuple.
    assert_eq!(gc::collect(), 5);
    assert_eq!(dels.get(), 3);
}

#[test]
fn test_finalizer() {
    // Objects with __del__ in cycles are collected (Python >= 3.4: PEP 442),
    // and __del__ runs once for each.
    setup();
    let dels = Rc::new(Cell::new(0));
    let a = instance(&dels);
    setattr(&a, "a", Obj::Inst(a.clone()));
    let id_a = Gc::as_ptr(&a) as usize;
    let b = instance(&dels);
    setattr(&b, "b", Obj::Int(id_a as i64));
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert_eq!(dels.get(), 1);
    assert!(matches!(b.attrs.borrow()["b"], Obj::Int(v) if v == id_a as i64));
    drop(b);
    assert_eq!(dels.get(), 2);
    assert_eq!(gc::collect(), 0);
    assert_eq!(dels.get(), 2);
}

#[test]
fn test_del_with_allocation_and_automatic_collection() {
    // test_del: __del__ that allocates while thresholds are tiny, so the
    // allocation inside the finalizer would trigger a collection.
    gc::collect();
    gc::set_threshold(1, 1, 1);
    gc::enable();
    thread_local! {
        static MADE: RefCell<Vec<Gc<Instance>>> = const { RefCell::new(Vec::new()) };
    }
    struct Allocating {
        me: RefCell<Option<Gc<Allocating>>>,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for Allocating {
        fn trace(&self, tracer: &mut Tracer) {
            self.me.trace(tracer);
        }
    }
    impl Drop for Allocating {
        fn drop(&mut self) {
            // dir(self): build some tracked garbage and a cycle.
            for _ in 0..5 {
                let i = instance(&self.dels);
                setattr(&i, "self", Obj::Inst(i.clone()));
            }
            let keep = instance(&self.dels);
            MADE.with(|m| m.borrow_mut().push(keep));
        }
    }
    let dels = Rc::new(Cell::new(0));
    for _ in 0..50 {
        let a = Gc::new(Allocating {
            me: RefCell::new(None),
            dels: dels.clone(),
        });
        *a.me.borrow_mut() = Some(a.clone());
    }
    gc::disable();
    gc::collect();
    gc::collect();
    // Every Allocating was reclaimed, and every instance it made as garbage
    // (5 per Allocating) was collected; the kept ones are alive.
    let kept = MADE.with(|m| m.borrow().len());
    assert_eq!(kept, 50);
    assert_eq!(dels.get(), 250);
    MADE.with(|m| m.borrow_mut().clear());
    assert_eq!(dels.get(), 300);
}

#[test]
fn test_get_count() {
    setup();
    let (a, b, c) = gc::get_count();
    let dels = Rc::new(Cell::new(0));
    let _x = instance(&dels);
    let (d, e, f) = gc::get_count();
    assert_eq!((b, c), (0, 0));
    assert_eq!((e, f), (0, 0));
    assert!(a < 5, "count[0] after collect() is small: {a}");
    assert!(d > a, "a tracked allocation increments count[0]");
}

#[test]
fn test_collect_generations() {
    setup();
    let dels = Rc::new(Cell::new(0));
    let _x = instance(&dels);
    gc::collect_generation(0);
    let (_, b, c) = gc::get_count();
    gc::collect_generation(1);
    let (_, e, f) = gc::get_count();
    gc::collect_generation(2);
    let (_, h, i) = gc::get_count();
    assert_eq!((b, c), (1, 0));
    assert_eq!((e, f), (0, 1));
    assert_eq!((h, i), (0, 0));
}

#[test]
fn test_get_stats() {
    setup();
    let old = gc::get_stats();
    gc::collect_generation(0);
    let new = gc::get_stats();
    assert_eq!(new[0].collections, old[0].collections + 1);
    assert_eq!(new[1].collections, old[1].collections);
    assert_eq!(new[2].collections, old[2].collections);
    gc::collect_generation(2);
    let new2 = gc::get_stats();
    assert_eq!(new2[0].collections, new[0].collections);
    assert_eq!(new2[1].collections, new[1].collections);
    assert_eq!(new2[2].collections, new[2].collections + 1);
}

#[test]
fn test_freeze() {
    setup();
    let dels = Rc::new(Cell::new(0));
    let _x = instance(&dels);
    gc::freeze();
    assert!(gc::get_freeze_count() > 0);
    gc::unfreeze();
    assert_eq!(gc::get_freeze_count(), 0);
}

#[test]
fn test_is_tracked() {
    // None, ints, floats, strings and bytes are not tracked; containers and
    // instances are.
    let dels = Rc::new(Cell::new(0));
    assert!(!gc::is_tracked(&Gc::new(1i64)));
    assert!(!gc::is_tracked(&Gc::new(1.0f64)));
    assert!(!gc::is_tracked(&Gc::new(String::from("a"))));
    assert!(!gc::is_tracked(&Gc::new(b"a".to_vec())));
    assert!(!gc::is_tracked(&Gc::new(Some(1u32))));
    assert!(gc::is_tracked(&list()));
    assert!(gc::is_tracked(&dict()));
    assert!(gc::is_tracked(&Gc::new(vec![Obj::None])));
    assert!(gc::is_tracked(&instance(&dels)));
}

#[test]
fn test_collect_in_a_fresh_thread_state() {
    // Garbage made before a thread's first collect() is collected by it.
    let n = std::thread::spawn(|| {
        let l = list();
        l.borrow_mut().push(Obj::List(l.clone()));
        drop(l);
        gc::collect()
    })
    .join()
    .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn test_boom() {
    // a <-> b are in a trash cycle. Finalizing a deletes b's link to a as a
    // side effect (and the other way round), which makes refcounts fall to
    // zero in the middle of the collection. Used to crash Python.
    setup();
    struct Boom {
        attr: RefCell<Option<Gc<Boom>>>,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for Boom {
        fn trace(&self, tracer: &mut Tracer) {
            self.attr.trace(tracer);
        }
    }
    impl Drop for Boom {
        fn drop(&mut self) {
            self.dels.set(self.dels.get() + 1);
            // del self.attr
            let other = self.attr.borrow_mut().take();
            if let Some(other) = other {
                // Try to cut the other's link too; it may be dropped already,
                // in which case the deref panics (never a dangling read).
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    other.attr.borrow_mut().take();
                }));
            }
        }
    }
    let dels = Rc::new(Cell::new(0));
    let a = Gc::new(Boom {
        attr: RefCell::new(None),
        dels: dels.clone(),
    });
    let b = Gc::new(Boom {
        attr: RefCell::new(Some(a.clone())),
        dels: dels.clone(),
    });
    *a.attr.borrow_mut() = Some(b.clone());
    gc::collect();
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(dels.get(), 2);
    assert_eq!(gc::collect(), 0);
}

#[test]
fn test_boom2() {
    // Like test_boom, but only the second finalizer to run mutates the
    // graph, and a longer cycle.
    setup();
    thread_local! {
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }
    struct Boom2 {
        attr: RefCell<Option<Gc<Boom2>>>,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for Boom2 {
        fn trace(&self, tracer: &mut Tracer) {
            self.attr.trace(tracer);
        }
    }
    impl Drop for Boom2 {
        fn drop(&mut self) {
            self.dels.set(self.dels.get() + 1);
            let x = CALLS.with(|c| {
                c.set(c.get() + 1);
                c.get()
            });
            if x > 1 {
                self.attr.borrow_mut().take();
            }
        }
    }
    let dels = Rc::new(Cell::new(0));
    let nodes: Vec<Gc<Boom2>> = (0..4)
        .map(|_| {
            Gc::new(Boom2 {
                attr: RefCell::new(None),
                dels: dels.clone(),
            })
        })
        .collect();
    for i in 0..4 {
        *nodes[i].attr.borrow_mut() = Some(nodes[(i + 1) % 4].clone());
    }
    drop(nodes);
    assert_eq!(gc::collect(), 4);
    assert_eq!(dels.get(), 4);
}

#[test]
fn test_boom_new() {
    // The finalizer replaces its link into the garbage with a new object:
    // the link's target (garbage) loses a reference mid-collection, and the
    // new object is released normally when the finalized value's fields drop.
    setup();
    struct BoomNew {
        attr: RefCell<Option<Gc<BoomNew>>>,
        fresh: bool,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for BoomNew {
        fn trace(&self, tracer: &mut Tracer) {
            self.attr.trace(tracer);
        }
    }
    impl Drop for BoomNew {
        fn drop(&mut self) {
            self.dels.set(self.dels.get() + 1);
            if !self.fresh {
                let fresh = Gc::new(BoomNew {
                    attr: RefCell::new(None),
                    fresh: true,
                    dels: self.dels.clone(),
                });
                *self.attr.borrow_mut() = Some(fresh);
            }
        }
    }
    let dels = Rc::new(Cell::new(0));
    let a = Gc::new(BoomNew {
        attr: RefCell::new(None),
        fresh: false,
        dels: dels.clone(),
    });
    let b = Gc::new(BoomNew {
        attr: RefCell::new(Some(a.clone())),
        fresh: false,
        dels: dels.clone(),
    });
    *a.attr.borrow_mut() = Some(b);
    drop(a);
    assert_eq!(gc::collect(), 2);
    // a and b, and the two fresh objects freed by refcounting.
    assert_eq!(dels.get(), 4);
    assert_eq!(gc::collect(), 0);
    assert_eq!(gc::tracked_count(), 0);
}

#[test]
fn test_collect_inside_drop_is_harmless() {
    // gc.collect() called re-entrantly from a finalizer returns 0 and does
    // nothing; the outer collection finishes normally.
    setup();
    thread_local! {
        static INNER: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }
    struct Collects {
        me: RefCell<Option<Gc<Collects>>>,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for Collects {
        fn trace(&self, tracer: &mut Tracer) {
            self.me.trace(tracer);
        }
    }
    impl Drop for Collects {
        fn drop(&mut self) {
            self.dels.set(self.dels.get() + 1);
            let n = gc::collect();
            let m = gc::collect_generation(0);
            INNER.with(|v| v.borrow_mut().extend([n, m]));
        }
    }
    let dels = Rc::new(Cell::new(0));
    for _ in 0..10 {
        let c = Gc::new(Collects {
            me: RefCell::new(None),
            dels: dels.clone(),
        });
        *c.me.borrow_mut() = Some(c.clone());
    }
    assert_eq!(gc::collect(), 10);
    assert_eq!(dels.get(), 10);
    let inner = INNER.with(|v| v.borrow().clone());
    assert_eq!(inner, vec![0; 20]);
    // The collector is usable afterwards.
    let c = Gc::new(Collects {
        me: RefCell::new(None),
        dels: dels.clone(),
    });
    *c.me.borrow_mut() = Some(c.clone());
    drop(c);
    INNER.with(|v| v.borrow_mut().clear());
    assert_eq!(gc::collect(), 1);
    assert_eq!(dels.get(), 11);
}

// ---------------------------------------------------------------------------
// The collection contract (DESIGN.md): what a Drop running during a
// collection sees.

/// A node whose Drop probes the other members of its garbage cycle.
struct Probe {
    id: usize,
    next: RefCell<Option<Gc<Probe>>>,
    weak_next: RefCell<Weak<Probe>>,
    log: Rc<RefCell<ProbeLog>>,
}

#[derive(Default)]
struct ProbeLog {
    drops: Vec<usize>,
    /// (dropping id, result of reading next.id: Ok(id) or Err(message))
    reads: Vec<(usize, Result<usize, Option<String>>)>,
    weak_upgrades: Vec<bool>,
    resurrected: Vec<Gc<Probe>>,
    clone_ok: Vec<bool>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Probe {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
        self.weak_next.trace(tracer);
    }
}

thread_local! {
    static RESURRECT: Cell<bool> = const { Cell::new(false) };
}

impl Drop for Probe {
    fn drop(&mut self) {
        let mut log = self.log.borrow_mut();
        log.drops.push(self.id);
        let up = self.weak_next.borrow().upgrade().is_some();
        log.weak_upgrades.push(up);
        if let Some(next) = self.next.borrow().as_ref() {
            let r = catch_unwind(AssertUnwindSafe(|| next.id));
            let r = r.map_err(|p| panic_message(&*p));
            log.reads.push((self.id, r));
            if RESURRECT.with(Cell::get) {
                let c = catch_unwind(AssertUnwindSafe(|| next.clone()));
                log.clone_ok.push(c.is_ok());
                if let Ok(c) = c {
                    log.resurrected.push(c);
                }
            }
        }
    }
}

fn probe_ring(n: usize, log: &Rc<RefCell<ProbeLog>>) -> Vec<Weak<Probe>> {
    let nodes: Vec<Gc<Probe>> = (0..n)
        .map(|id| {
            Gc::new(Probe {
                id,
                next: RefCell::new(None),
                weak_next: RefCell::new(Weak::new()),
                log: log.clone(),
            })
        })
        .collect();
    for i in 0..n {
        let next = &nodes[(i + 1) % n];
        *nodes[i].next.borrow_mut() = Some(next.clone());
        *nodes[i].weak_next.borrow_mut() = Gc::downgrade(next);
    }
    nodes.iter().map(Gc::downgrade).collect()
}

#[test]
fn weak_upgrade_to_garbage_is_none_inside_drop() {
    // test_bug1055820d: a finalizer of cyclic trash sees weakrefs to other
    // trash already cleared.
    setup();
    let log = Rc::new(RefCell::new(ProbeLog::default()));
    let weaks = probe_ring(5, &log);
    assert_eq!(gc::collect(), 5);
    let log = log.borrow();
    let mut dropped = log.drops.clone();
    dropped.sort();
    assert_eq!(dropped, [0, 1, 2, 3, 4]);
    assert_eq!(log.weak_upgrades, [false; 5]);
    assert!(weaks.iter().all(|w| w.upgrade().is_none()));
    assert!(weaks.iter().all(|w| Weak::strong_count(w) == 0));
}

#[test]
fn deref_of_dropped_garbage_panics_with_a_message() {
    setup();
    for n in [2, 3, 10] {
        let log = Rc::new(RefCell::new(ProbeLog::default()));
        let _weaks = probe_ring(n, &log);
        assert_eq!(gc::collect(), n);
        let log = log.borrow();
        assert_eq!(log.reads.len(), n);
        let mut panics = 0;
        for (id, r) in &log.reads {
            match r {
                Ok(next_id) => assert_eq!(*next_id, (id + 1) % n, "read a wrong value"),
                Err(msg) => {
                    panics += 1;
                    let msg = msg
                        .as_ref()
                        .expect("the panic payload is a &str or a String");
                    assert!(!msg.is_empty());
                }
            }
        }
        // The last value dropped in the ring reaches one that is already
        // dropped, whatever the order.
        assert!(
            panics >= 1,
            "ring of {n}: some Drop read a value already dropped without a panic"
        );
    }
}

#[test]
fn resurrection_by_clone_inside_drop() {
    setup();
    RESURRECT.with(|r| r.set(true));
    let log = Rc::new(RefCell::new(ProbeLog::default()));
    let weaks = probe_ring(3, &log);
    assert_eq!(gc::collect(), 3);
    RESURRECT.with(|r| r.set(false));
    let resurrected = std::mem::take(&mut log.borrow_mut().resurrected);
    {
        let l = log.borrow();
        assert_eq!(l.clone_ok, [true; 3], "Gc::clone into garbage succeeds");
    }
    assert_eq!(resurrected.len(), 3);
    // The memory stays valid: counts can be read; the value is either
    // intact or reading it panics with a message (it was dropped).
    for g in &resurrected {
        assert!(Gc::strong_count(g) >= 1);
        match catch_unwind(AssertUnwindSafe(|| g.id)) {
            Ok(id) => assert!(id < 3),
            Err(p) => assert!(panic_message(&*p).is_some()),
        }
    }
    // Weak handles stay dead: the objects were garbage.
    assert!(weaks.iter().all(|w| w.upgrade().is_none()));
    drop(resurrected);
    gc::collect();
    // Each value dropped exactly once overall.
    let mut dropped = log.borrow().drops.clone();
    dropped.sort();
    assert_eq!(dropped, [0, 1, 2]);
    assert_eq!(gc::collect(), 0);
    assert_eq!(gc::tracked_count(), 0);
}

#[test]
fn garbage_with_acyclic_tail_and_shared_leaves() {
    // A cycle holding a long acyclic tail and a leaf also held from outside:
    // the tail is reclaimed with the cycle, the shared leaf survives.
    setup();
    let dels = Rc::new(Cell::new(0));
    let shared = instance(&dels);
    let a = instance(&dels);
    setattr(&a, "self", Obj::Inst(a.clone()));
    setattr(&a, "shared", Obj::Inst(shared.clone()));
    let mut tail = Obj::None;
    for i in 0..100 {
        let l = list();
        l.borrow_mut().push(Obj::Int(i));
        l.borrow_mut().push(tail);
        tail = Obj::List(l);
    }
    setattr(&a, "tail", tail);
    drop(a);
    let n = gc::collect();
    assert_eq!(n, 101);
    assert_eq!(dels.get(), 1);
    assert_eq!(Gc::strong_count(&shared), 1);
    drop(shared);
    assert_eq!(dels.get(), 2);
}

#[test]
fn survivors_are_promoted_and_young_collections_skip_old_garbage() {
    setup();
    let dels = Rc::new(Cell::new(0));
    // An old cycle: alive during a collection, so promoted to generation 1.
    let old = instance(&dels);
    setattr(&old, "self", Obj::Inst(old.clone()));
    assert_eq!(gc::collect_generation(0), 0);
    drop(old);
    // A young cycle.
    let young = instance(&dels);
    setattr(&young, "self", Obj::Inst(young.clone()));
    drop(young);
    assert_eq!(gc::collect_generation(0), 1, "only the young cycle");
    assert_eq!(dels.get(), 1);
    assert_eq!(gc::collect_generation(1), 1, "the promoted one");
    assert_eq!(dels.get(), 2);
}

#[test]
fn young_garbage_referenced_from_old_live_object_survives() {
    setup();
    let dels = Rc::new(Cell::new(0));
    let old = list();
    gc::collect_generation(0);
    gc::collect_generation(1);
    // A young cycle reachable only from an old object.
    let y = instance(&dels);
    setattr(&y, "self", Obj::Inst(y.clone()));
    old.borrow_mut().push(Obj::Inst(y.clone()));
    drop(y);
    assert_eq!(gc::collect_generation(0), 0);
    assert_eq!(dels.get(), 0);
    assert_eq!(gc::collect(), 0);
    old.borrow_mut().clear();
    assert_eq!(gc::collect(), 1);
    assert_eq!(dels.get(), 1);
}
