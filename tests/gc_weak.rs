//! Ports of the cases of CPython's `Lib/test/test_weakref.py` that apply to
//! `pymem::Weak` (no callbacks or proxies: those have no counterpart).
//! Runs on the system allocator.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Tracer, Weak};

/// What each object saw of its watched weak refs when it died.
type Seen = Rc<RefCell<Vec<(u32, Vec<bool>)>>>;

/// `class C: pass` with an optional link, a `__del__` counter, and a hook
/// that records what the object's weak references look like when it dies.
struct C {
    id: u32,
    link: RefCell<Vec<Gc<C>>>,
    watch: RefCell<Vec<Weak<C>>>,
    dels: Rc<Cell<usize>>,
    seen: Seen,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for C {
    fn trace(&self, tracer: &mut Tracer) {
        self.link.trace(tracer);
        self.watch.trace(tracer);
    }
}

impl Drop for C {
    fn drop(&mut self) {
        self.dels.set(self.dels.get() + 1);
        let ups = self
            .watch
            .borrow()
            .iter()
            .map(|w| w.upgrade().is_some())
            .collect();
        self.seen.borrow_mut().push((self.id, ups));
    }
}

struct World {
    dels: Rc<Cell<usize>>,
    seen: Seen,
}

impl World {
    fn new() -> Self {
        gc::disable();
        gc::collect();
        World {
            dels: Rc::new(Cell::new(0)),
            seen: Rc::new(RefCell::new(Vec::new())),
        }
    }
    fn c(&self, id: u32) -> Gc<C> {
        Gc::new(C {
            id,
            link: RefCell::new(Vec::new()),
            watch: RefCell::new(Vec::new()),
            dels: self.dels.clone(),
            seen: self.seen.clone(),
        })
    }
}

#[test]
fn test_basic_ref() {
    let w = World::new();
    let o = w.c(1);
    let r = Gc::downgrade(&o);
    let o2 = r.upgrade().expect("referent alive");
    assert!(Gc::ptr_eq(&o, &o2));
    assert_eq!(o2.id, 1);
    drop(o2);
    // A weak reference never keeps its referent alive.
    drop(o);
    assert_eq!(w.dels.get(), 1);
    assert!(r.upgrade().is_none(), "dead ref");
}

#[test]
fn test_dead_ref_stays_dead() {
    let w = World::new();
    let o = w.c(1);
    let r = Gc::downgrade(&o);
    drop(o);
    for _ in 0..3 {
        assert!(r.upgrade().is_none());
        assert_eq!(Weak::strong_count(&r), 0);
    }
    // A new object (possibly reusing the memory) is not seen by the old ref.
    let p = w.c(2);
    assert!(r.upgrade().is_none());
    assert_eq!(p.id, 2);
}

#[test]
fn test_multiple_refs() {
    // test_ref_reuse / test_getweakrefcount
    let w = World::new();
    let o = w.c(1);
    let r1 = Gc::downgrade(&o);
    let r2 = Gc::downgrade(&o);
    assert!(Weak::ptr_eq(&r1, &r2), "refs to one object are ptr_eq");
    assert_eq!(Gc::weak_count(&o), 2);
    let r3 = r1.clone();
    assert_eq!(Gc::weak_count(&o), 3);
    assert_eq!(Weak::weak_count(&r3), 3);
    drop(r1);
    drop(r2);
    assert_eq!(Gc::weak_count(&o), 1);
    drop(r3);
    assert_eq!(Gc::weak_count(&o), 0);
    let r4 = Gc::downgrade(&o);
    drop(o);
    assert!(r4.upgrade().is_none());
}

#[test]
fn test_ptr_eq_distinguishes_objects() {
    // test_equality / test_hashing: weak references to different objects
    // differ, also after death.
    let w = World::new();
    let a = w.c(1);
    let b = w.c(2);
    let ra = Gc::downgrade(&a);
    let rb = Gc::downgrade(&b);
    assert!(!Weak::ptr_eq(&ra, &rb));
    drop(b);
    assert!(!Weak::ptr_eq(&ra, &rb));
    drop(a);
    assert!(Weak::ptr_eq(&ra, &ra.clone()));
    assert!(!Weak::ptr_eq(&ra, &rb));
}

#[test]
fn test_weak_refs_to_a_cycle_die_with_collection() {
    let w = World::new();
    let a = w.c(1);
    let b = w.c(2);
    a.link.borrow_mut().push(b.clone());
    b.link.borrow_mut().push(a.clone());
    let (ra, rb) = (Gc::downgrade(&a), Gc::downgrade(&b));
    drop((a, b));
    // Uncollected cyclic garbage is still reachable through weak refs, as
    // in Python.
    let a2 = ra.upgrade().expect("not collected yet");
    assert_eq!(a2.id, 1);
    drop(a2);
    assert_eq!(gc::collect(), 2);
    assert!(ra.upgrade().is_none());
    assert!(rb.upgrade().is_none());
    assert_eq!(Weak::strong_count(&ra), 0);
    assert_eq!(Weak::strong_count(&rb), 0);
    assert_eq!(w.dels.get(), 2);
}

#[test]
fn test_trash_weakref_clear() {
    // Clearing weakrefs to garbage happens before any value of the garbage
    // is dropped: every Drop sees every weak ref into the garbage dead,
    // including the one to itself.
    let w = World::new();
    let nodes: Vec<Gc<C>> = (0..6).map(|i| w.c(i)).collect();
    for i in 0..6 {
        nodes[i].link.borrow_mut().push(nodes[(i + 1) % 6].clone());
        // Each watches all six.
        *nodes[i].watch.borrow_mut() = nodes.iter().map(Gc::downgrade).collect();
    }
    drop(nodes);
    assert_eq!(gc::collect(), 6);
    let seen = w.seen.borrow();
    assert_eq!(seen.len(), 6);
    for (id, ups) in seen.iter() {
        assert_eq!(ups.len(), 6);
        assert!(
            ups.iter().all(|u| !u),
            "object {id} saw a weak ref to garbage still upgrading: {ups:?}"
        );
    }
}

#[test]
fn test_weak_refs_to_live_objects_survive_collection_of_garbage_holding_them() {
    // Garbage that holds weak refs to live objects, and live objects that
    // hold weak refs to garbage.
    let w = World::new();
    let live = w.c(100);
    let g1 = w.c(1);
    let g2 = w.c(2);
    g1.link.borrow_mut().push(g2.clone());
    g2.link.borrow_mut().push(g1.clone());
    g1.watch.borrow_mut().push(Gc::downgrade(&live));
    live.watch.borrow_mut().push(Gc::downgrade(&g1));
    drop((g1, g2));
    assert_eq!(gc::collect(), 2);
    // g1's Drop saw the live object still upgrading.
    let seen = w.seen.borrow().clone();
    let g1_seen = seen.iter().find(|(id, _)| *id == 1).expect("g1 dropped");
    assert_eq!(g1_seen.1, [true]);
    assert!(live.watch.borrow()[0].upgrade().is_none());
    assert_eq!(
        Gc::weak_count(&live),
        0,
        "g1's weak ref to live was dropped"
    );
    assert_eq!(Gc::strong_count(&live), 1);
}

#[test]
fn test_ref_created_during_del() {
    // Bug #1377858: a weakref created in an object's __del__ crashed the
    // interpreter when it was cleaned up. Here a Drop running during a
    // collection downgrades a handle into the garbage and stores the Weak.
    thread_local! {
        static STASH: RefCell<Vec<Weak<D>>> = const { RefCell::new(Vec::new()) };
    }
    struct D {
        other: RefCell<Option<Gc<D>>>,
        dels: Rc<Cell<usize>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for D {
        fn trace(&self, tracer: &mut Tracer) {
            self.other.trace(tracer);
        }
    }
    impl Drop for D {
        fn drop(&mut self) {
            self.dels.set(self.dels.get() + 1);
            if let Some(o) = self.other.borrow().as_ref() {
                let w = Gc::downgrade(o);
                assert!(w.upgrade().is_none(), "a fresh Weak to garbage is dead");
                STASH.with(|s| s.borrow_mut().push(w));
            }
        }
    }
    gc::disable();
    let dels = Rc::new(Cell::new(0));
    let a = Gc::new(D {
        other: RefCell::new(None),
        dels: dels.clone(),
    });
    let b = Gc::new(D {
        other: RefCell::new(Some(a.clone())),
        dels: dels.clone(),
    });
    *a.other.borrow_mut() = Some(b);
    drop(a);
    assert_eq!(gc::collect(), 2);
    assert_eq!(dels.get(), 2);
    let stash = STASH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    assert_eq!(stash.len(), 2);
    assert!(stash.iter().all(|w| w.upgrade().is_none()));
    assert!(stash.iter().all(|w| Weak::strong_count(w) == 0));
    drop(stash);
    assert_eq!(gc::collect(), 0);
}

#[test]
fn test_weak_value_dictionary() {
    // WeakValueDictionary: values vanish when their objects die, by
    // refcounting or by collection.
    let w = World::new();
    let mut objs: Vec<Gc<C>> = (0..10).map(|i| w.c(i)).collect();
    let dict: HashMap<u32, Weak<C>> = objs.iter().map(|o| (o.id, Gc::downgrade(o))).collect();
    let live = |d: &HashMap<u32, Weak<C>>| {
        let mut v: Vec<u32> = d
            .iter()
            .filter(|(_, w)| w.upgrade().is_some())
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    };
    assert_eq!(live(&dict), (0..10).collect::<Vec<_>>());
    // Odd ones die by refcounting; 0 and 2 form a cycle and die by collection.
    objs[0].link.borrow_mut().push(objs[2].clone());
    objs[2].link.borrow_mut().push(objs[0].clone());
    let keep: Vec<Gc<C>> = objs
        .drain(..)
        .filter(|o| o.id % 2 == 0 && o.id > 2)
        .collect();
    assert_eq!(live(&dict), [0, 2, 4, 6, 8]);
    gc::collect();
    assert_eq!(live(&dict), [4, 6, 8]);
    drop(keep);
    assert!(live(&dict).is_empty());
    assert_eq!(w.dels.get(), 10);
}

#[test]
fn test_trashcan_16602() {
    // Issue #16602: a deep chain kept only through strong refs, observed by
    // weak refs from outside, all of which die cleanly.
    let w = World::new();
    let mut head = w.c(0);
    let mut weaks = vec![Gc::downgrade(&head)];
    for i in 1..10_000 {
        let n = w.c(i);
        n.link.borrow_mut().push(head);
        weaks.push(Gc::downgrade(&n));
        head = n;
    }
    drop(head);
    assert_eq!(w.dels.get(), 10_000);
    assert!(weaks.iter().all(|r| r.upgrade().is_none()));
}

#[test]
fn test_weak_in_new_cyclic_of_a_collected_cycle() {
    // A node built by new_cyclic holds a Weak to itself and a strong edge
    // into a cycle that points back: collected, and the self-Weak is dead.
    gc::disable();
    struct N {
        me: Weak<N>,
        next: RefCell<Option<Gc<N>>>,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for N {
        fn trace(&self, tracer: &mut Tracer) {
            self.me.trace(tracer);
            self.next.trace(tracer);
        }
    }
    let a = Gc::new_cyclic(|w| N {
        me: w.clone(),
        next: RefCell::new(None),
    });
    let b = Gc::new_cyclic(|w| N {
        me: w.clone(),
        next: RefCell::new(Some(a.clone())),
    });
    *a.next.borrow_mut() = Some(b.clone());
    let wa = a.me.clone();
    assert_eq!(Gc::weak_count(&a), 2);
    drop((a, b));
    assert!(wa.upgrade().is_some());
    assert_eq!(gc::collect(), 2, "Weak edges are not strong edges");
    assert!(wa.upgrade().is_none());
}
