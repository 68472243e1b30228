//! PEP 442 finalizers and weak callbacks: ports of the matching cases of
//! CPython's `Lib/test/test_gc.py` (test_del, the resurrection tests, the
//! bug1055820 family) and `Lib/test/test_weakref.py` (callbacks,
//! `weakref.finalize`). Each test runs on its own thread, so on its own
//! collector.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use pymem::gc::{self, Finalize};
use pymem::{Gc, Trace, Weak};

thread_local! {
    static FINALIZED: Cell<usize> = const { Cell::new(0) };
    static DROPPED: Cell<usize> = const { Cell::new(0) };
    static KEEP: RefCell<Vec<Gc<Obj>>> = const { RefCell::new(Vec::new()) };
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn finalized() -> usize {
    FINALIZED.with(Cell::get)
}
fn dropped() -> usize {
    DROPPED.with(Cell::get)
}

/// What a finalizer does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    /// Counts, and reads every neighbour (they must all be alive).
    Read,
    /// Stores a handle to itself in `KEEP` (Lazarus).
    Resurrect,
    /// Upgrades its `watch` weak refs and records the result.
    Upgrade,
    /// Panics.
    Panic,
}

#[derive(Trace)]
struct Obj {
    name: String,
    links: RefCell<Vec<Gc<Obj>>>,
    watch: RefCell<Vec<Weak<Obj>>>,
    #[trace(skip)]
    act: Act,
}

impl Obj {
    fn new(name: &str, act: Act) -> Gc<Obj> {
        Gc::new_with_finalizer(Obj {
            name: name.into(),
            links: RefCell::default(),
            watch: RefCell::default(),
            act,
        })
    }
    fn plain(name: &str) -> Gc<Obj> {
        Gc::new(Obj {
            name: name.into(),
            links: RefCell::default(),
            watch: RefCell::default(),
            act: Act::Read,
        })
    }
    fn link(&self, to: &Gc<Obj>) {
        self.links.borrow_mut().push(to.clone());
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        DROPPED.with(|d| d.set(d.get() + 1));
    }
}

impl Finalize for Obj {
    fn finalize(this: &Gc<Self>) {
        FINALIZED.with(|f| f.set(f.get() + 1));
        match this.act {
            Act::Read => {
                for l in this.links.borrow().iter() {
                    // Derefs a member of the same garbage: alive.
                    SEEN.with(|s| s.borrow_mut().push(format!("{}->{}", this.name, l.name)));
                }
            }
            Act::Resurrect => KEEP.with(|k| k.borrow_mut().push(this.clone())),
            Act::Upgrade => {
                for w in this.watch.borrow().iter() {
                    let alive = w.upgrade().is_some();
                    SEEN.with(|s| s.borrow_mut().push(format!("{}:{alive}", this.name)));
                }
            }
            Act::Panic => panic!("finalizer of {} panics", this.name),
        }
    }
}

fn self_loop(o: &Gc<Obj>) {
    o.link(o);
}

#[test]
fn finalizer_runs_on_refcount_death_once_before_drop() {
    let a = Obj::new("a", Act::Read);
    let b = Obj::plain("b");
    a.link(&b);
    assert!(!gc::is_finalized(&a));
    drop(b);
    drop(a);
    assert_eq!((finalized(), dropped()), (1, 2));
    assert_eq!(SEEN.with(|s| s.borrow().clone()), ["a->b"]);
}

#[test]
fn objects_from_gc_new_have_no_finalizer() {
    let a = Obj::plain("a");
    self_loop(&a);
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert_eq!((finalized(), dropped()), (0, 1));
}

/// test_gc.test_del-like: a cycle whose members have finalizers that read
/// each other; they all run before any value is dropped.
#[test]
fn finalizers_of_a_cycle_see_all_members_alive() {
    let a = Obj::new("a", Act::Read);
    let b = Obj::new("b", Act::Read);
    let c = Obj::plain("c");
    a.link(&b);
    b.link(&c);
    c.link(&a);
    drop((a, b, c));
    assert_eq!(gc::collect(), 3);
    assert_eq!((finalized(), dropped()), (2, 3));
    let mut seen = SEEN.with(|s| s.borrow().clone());
    seen.sort();
    assert_eq!(seen, ["a->b", "b->c"]);
}

/// test_gc.test_resurrection_only_happens_once_per_object
#[test]
fn resurrection_only_happens_once_per_object() {
    let laz = Obj::new("lazarus", Act::Resurrect);
    self_loop(&laz);
    let w = Gc::downgrade(&laz);
    drop(laz);
    assert_eq!(gc::collect(), 0, "resurrected: nothing collected");
    assert_eq!(finalized(), 1);
    assert_eq!(dropped(), 0);
    let back = KEEP.with(|k| k.borrow()[0].clone());
    assert!(gc::is_finalized(&back));
    assert!(gc::is_tracked(&back));
    assert!(
        w.upgrade().is_some(),
        "a resurrected object is alive for Weak"
    );
    assert_eq!(back.name, "lazarus");
    drop(back);
    // Clearing the references and collecting must not resurrect it again.
    KEEP.with(|k| k.borrow_mut().clear());
    assert_eq!(gc::collect(), 1);
    assert_eq!((finalized(), dropped()), (1, 1));
    assert!(w.upgrade().is_none());
}

/// test_gc.test_resurrection_is_transitive
#[test]
fn resurrection_is_transitive() {
    let laz = Obj::new("lazarus", Act::Resurrect);
    let cargo = Obj::plain("cargo");
    self_loop(&cargo);
    laz.link(&cargo);
    cargo.link(&laz);
    let cargo_ptr = Gc::as_ptr(&cargo);
    drop((laz, cargo));
    assert_eq!(gc::collect(), 0);
    let back = KEEP.with(|k| k.borrow_mut().pop()).unwrap();
    let cargo = back.links.borrow()[0].clone();
    assert_eq!(Gc::as_ptr(&cargo), cargo_ptr);
    assert_eq!(cargo.name, "cargo"); // intact
    assert_eq!(dropped(), 0);
    drop((back, cargo));
    assert_eq!(gc::collect(), 2);
    assert_eq!(dropped(), 2);
}

/// test_gc.test_resurrection_does_not_block_cleanup_of_other_objects
#[test]
fn resurrection_does_not_block_cleanup_of_other_objects() {
    const N: usize = 100;
    gc::collect();
    gc::disable();
    let stats = || {
        let s = gc::get_stats()[2];
        (s.collected, s.uncollectable)
    };
    // No problems if just collecting plain cycles.
    let (oldc, oldnc) = stats();
    for i in 0..N {
        self_loop(&Obj::plain(&format!("a{i}")));
    }
    assert_eq!(gc::collect(), N);
    let (c, nc) = stats();
    assert_eq!((c - oldc, nc - oldnc), (N, 0));
    // A resurrecting one is not collected.
    let (oldc, oldnc) = (c, nc);
    self_loop(&Obj::new("z1", Act::Resurrect));
    assert_eq!(gc::collect(), 0);
    let (c, nc) = stats();
    assert_eq!((c - oldc, nc - oldnc), (0, 0));
    // ...and does not prevent anything else from being collected.
    let (oldc, oldnc) = (c, nc);
    for i in 0..N {
        self_loop(&Obj::plain(&format!("b{i}")));
    }
    self_loop(&Obj::new("z2", Act::Resurrect));
    assert_eq!(gc::collect(), N);
    let (c, nc) = stats();
    assert_eq!((c - oldc, nc - oldnc), (N, 0));
    // All that is left is the two resurrected ones.
    KEEP.with(|k| k.borrow_mut().clear());
    let (oldc, _) = (c, nc);
    assert_eq!(gc::collect(), 2);
    assert_eq!(stats().0 - oldc, 2);
    assert_eq!(finalized(), 2);
    assert_eq!(dropped(), 2 * N + 2);
    gc::enable();
}

/// A finalizer that resurrects on refcount death: the value survives, and
/// the next death drops it without finalizing again.
#[test]
fn refcount_resurrection() {
    let laz = Obj::new("lazarus", Act::Resurrect);
    drop(laz);
    assert_eq!((finalized(), dropped()), (1, 0));
    let back = KEEP.with(|k| k.borrow_mut().pop()).unwrap();
    assert_eq!(Gc::strong_count(&back), 1);
    assert!(gc::is_finalized(&back));
    drop(back);
    assert_eq!((finalized(), dropped()), (1, 1));
}

/// test_gc.test_bug1055820d: a finalizer of a cycle member reaching
/// another member through a weak reference gets nothing (weak references
/// to the garbage are cleared before finalizers run).
#[test]
fn bug1055820d_weak_refs_cleared_before_finalizers() {
    let c = Obj::plain("c");
    self_loop(&c);
    let d = Obj::new("d", Act::Upgrade);
    d.watch.borrow_mut().push(Gc::downgrade(&c));
    d.link(&c);
    c.link(&d);
    drop((c, d));
    assert_eq!(gc::collect(), 2);
    assert_eq!(SEEN.with(|s| s.borrow().clone()), ["d:false"]);
}

/// test_gc.test_bug1055820b: weak callbacks on cycle members cannot
/// resurrect them: inside the callbacks every weak ref to them is dead.
#[test]
fn bug1055820b_weak_callbacks_see_dead_referents() {
    let ouch: Rc<RefCell<Vec<Option<Gc<Obj>>>>> = Rc::default();
    let weaks: Rc<RefCell<Vec<Weak<Obj>>>> = Rc::default();
    let cs: Vec<Gc<Obj>> = (0..2).map(|i| Obj::plain(&format!("c{i}"))).collect();
    let mut wrs = Vec::new();
    for c in &cs {
        self_loop(c);
        weaks.borrow_mut().push(Gc::downgrade(c));
        let (o, w) = (ouch.clone(), weaks.clone());
        wrs.push(Weak::with_callback(c, move || {
            *o.borrow_mut() = w.borrow().iter().map(|w| w.upgrade()).collect();
        }));
    }
    gc::collect();
    assert!(ouch.borrow().is_empty());
    drop(cs);
    gc::collect();
    assert_eq!(ouch.borrow().len(), 2, "the callbacks ran");
    assert!(ouch.borrow().iter().all(Option::is_none));
    assert!(wrs
        .iter()
        .all(|w| w.upgrade().is_none() && !w.callback_pending()));
}

/// A panic in a finalizer during a collection: everything else is still
/// finalized and reclaimed, then the panic resumes; the collector works.
#[test]
fn panic_in_finalizer_during_collection() {
    let a = Obj::new("a", Act::Panic);
    let b = Obj::new("b", Act::Read);
    a.link(&b);
    b.link(&a);
    drop((a, b));
    let r = catch_unwind(AssertUnwindSafe(gc::collect));
    let msg = r.unwrap_err();
    assert_eq!(
        msg.downcast_ref::<String>().map(String::as_str),
        Some("finalizer of a panics")
    );
    assert_eq!((finalized(), dropped()), (2, 2));
    let c = Obj::plain("c");
    self_loop(&c);
    drop(c);
    assert_eq!(gc::collect(), 1);
}

#[test]
fn panic_in_finalizer_on_refcount_death_still_drops() {
    let a = Obj::new("a", Act::Panic);
    let r = catch_unwind(AssertUnwindSafe(move || drop(a)));
    assert!(r.is_err());
    assert_eq!((finalized(), dropped()), (1, 1));
}

#[test]
fn try_unwrap_does_not_finalize() {
    let a = Obj::new("a", Act::Read);
    let v = Gc::try_unwrap(a).ok().unwrap();
    assert_eq!(finalized(), 0);
    drop(v);
    assert_eq!(dropped(), 1);
}

/// Re-entrant collection from a finalizer does nothing.
#[test]
fn collect_inside_finalizer_returns_zero() {
    #[derive(Trace)]
    struct R {
        me: RefCell<Option<Gc<R>>>,
        #[trace(skip)]
        got: Rc<Cell<Option<usize>>>,
    }
    impl Finalize for R {
        fn finalize(this: &Gc<Self>) {
            this.got.set(Some(gc::collect()));
        }
    }
    let got = Rc::new(Cell::new(None));
    let r = Gc::new_with_finalizer(R {
        me: RefCell::new(None),
        got: got.clone(),
    });
    *r.me.borrow_mut() = Some(r.clone());
    drop(r);
    assert_eq!(gc::collect(), 1);
    assert_eq!(got.get(), Some(0));
}

// ---- weak callbacks (test_weakref.py) ------------------------------------

/// test_weakref.test_basic_callback: the callback runs once when the
/// referent dies by refcounting, after its value was dropped.
#[test]
fn basic_callback() {
    let calls = Rc::new(Cell::new(0));
    let o = Obj::plain("o");
    let c = calls.clone();
    let w = Weak::with_callback(&o, move || {
        assert_eq!(dropped(), 1, "runs after the value is dropped");
        c.set(c.get() + 1)
    });
    drop(o);
    assert_eq!(calls.get(), 1);
    assert!(w.upgrade().is_none());
}

/// test_weakref.test_multiple_callbacks
#[test]
fn multiple_callbacks() {
    let calls = Rc::new(Cell::new(0));
    let o = Obj::plain("o");
    let ws: Vec<_> = (0..2)
        .map(|_| {
            let c = calls.clone();
            Weak::with_callback(&o, move || c.set(c.get() + 1))
        })
        .collect();
    drop(o);
    assert_eq!(calls.get(), 2);
    drop(ws);
}

/// A weak reference that dies before its referent never calls back
/// (test_weakref: "callback is not called if the weakref dies first").
#[test]
fn callback_dropped_with_its_weakref() {
    let o = Obj::plain("o");
    let w = Weak::with_callback(&o, || panic!("must not run"));
    drop(w);
    drop(o);
    assert_eq!(dropped(), 1);
}

/// test_weakref.test_callback_in_cycle_*: objects in a collected cycle run
/// their callbacks.
#[test]
fn callback_on_cycle_member() {
    let calls = Rc::new(Cell::new(0));
    let a = Obj::plain("a");
    let b = Obj::plain("b");
    a.link(&b);
    b.link(&a);
    let (c1, c2) = (calls.clone(), calls.clone());
    let _w1 = Weak::with_callback(&a, move || c1.set(c1.get() + 1));
    let _f = gc::finalize(&b, move || c2.set(c2.get() + 10));
    drop((a, b));
    assert_eq!(calls.get(), 0);
    assert_eq!(gc::collect(), 2);
    assert_eq!(calls.get(), 11);
}

/// test_weakref.FinalizeTestCase.test_finalize: alive, calling, detaching.
#[test]
fn finalize_object() {
    let res: Rc<RefCell<Vec<i32>>> = Rc::default();
    let a = Obj::plain("a");
    let r = res.clone();
    let f = gc::finalize(&a, move || r.borrow_mut().push(67 + 43));
    assert!(f.alive());
    assert!(f.call());
    assert!(!f.alive());
    assert!(!f.call());
    assert_eq!(*res.borrow(), [110]);

    let r = res.clone();
    let f = gc::finalize(&a, move || r.borrow_mut().push(1));
    assert!(f.detach());
    assert!(!f.alive());
    assert!(!f.detach());
    drop(a);
    assert_eq!(*res.borrow(), [110]);

    let a = Obj::plain("a");
    let r = res.clone();
    // The handle is not kept: the callback stays registered.
    let _ = gc::finalize(&a, move || r.borrow_mut().push(2));
    drop(a);
    assert_eq!(*res.borrow(), [110, 2]);
}

/// test_weakref.FinalizeTestCase.test_order (one object): callbacks run
/// most recently registered first.
#[test]
fn finalize_order() {
    let res: Rc<RefCell<Vec<i32>>> = Rc::default();
    let a = Obj::plain("a");
    for i in 0..4 {
        let r = res.clone();
        gc::finalize(&a, move || r.borrow_mut().push(i));
    }
    drop(a);
    assert_eq!(*res.borrow(), [3, 2, 1, 0]);
}

/// A finalizer that resurrects keeps its object's weak callbacks pending;
/// they run when the object is finally reclaimed.
#[test]
fn callbacks_wait_for_resurrected_objects() {
    let calls = Rc::new(Cell::new(0));
    let laz = Obj::new("lazarus", Act::Resurrect);
    self_loop(&laz);
    let c = calls.clone();
    let f = gc::finalize(&laz, move || c.set(c.get() + 1));
    drop(laz);
    assert_eq!(gc::collect(), 0);
    assert_eq!(calls.get(), 0);
    assert!(f.alive());
    KEEP.with(|k| k.borrow_mut().clear());
    assert_eq!(gc::collect(), 1);
    assert_eq!(calls.get(), 1);
}

#[test]
fn try_unwrap_runs_weak_callbacks() {
    let calls = Rc::new(Cell::new(0));
    let o = Obj::plain("o");
    let c = calls.clone();
    let w = Weak::with_callback(&o, move || c.set(c.get() + 1));
    let v = Gc::try_unwrap(o).ok().unwrap();
    assert_eq!(calls.get(), 1);
    assert!(w.upgrade().is_none());
    drop(v);
}

#[test]
fn into_weak_cancels_callback() {
    let o = Obj::plain("o");
    let w = Weak::with_callback(&o, || panic!("cancelled")).into_weak();
    assert!(w.upgrade().is_some());
    drop(o);
    assert!(w.upgrade().is_none());
}

/// A weak callback that panics: the panic is resumed after the
/// reclamation; the object is gone.
#[test]
fn panic_in_weak_callback() {
    let a = Obj::plain("a");
    self_loop(&a);
    let f = gc::finalize(&a, || panic!("callback"));
    drop(a);
    assert!(catch_unwind(gc::collect).is_err());
    assert!(!f.alive());
    assert_eq!(dropped(), 1);
    assert_eq!(gc::collect(), 0);
}

/// Finalizers work for deep garbage too (no recursion).
#[test]
fn many_finalizers_in_a_long_ring() {
    let n = 10_000;
    let first = Obj::new("0", Act::Read);
    let mut prev = first.clone();
    for i in 1..n {
        let o = Obj::new(&i.to_string(), Act::Read);
        prev.link(&o);
        prev = o;
    }
    prev.link(&first);
    drop((first, prev));
    assert_eq!(gc::collect(), n);
    assert_eq!((finalized(), dropped()), (n, n));
}

/// A `Drop` run by the collector that registers a callback on a member of
/// its own garbage (already dropped) registers nothing.
#[test]
fn callback_on_dropped_member_is_not_registered() {
    thread_local!(static REG: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) });
    #[derive(Trace)]
    struct D {
        other: RefCell<Option<Gc<D>>>,
    }
    impl Drop for D {
        fn drop(&mut self) {
            if let Some(o) = self.other.borrow().as_ref() {
                let f = gc::finalize(o, || panic!("never"));
                REG.with(|r| r.borrow_mut().push(f.alive()));
            }
        }
    }
    let a = Gc::new(D {
        other: RefCell::new(None),
    });
    let b = Gc::new(D {
        other: RefCell::new(Some(a.clone())),
    });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    // Neither registration took: both objects were being reclaimed.
    assert_eq!(REG.with(|r| r.borrow().clone()), [false, false]);
    // Nothing stale is left behind to fire on a later object (which may
    // reuse the address).
    for _ in 0..100 {
        let x = Gc::new(D {
            other: RefCell::new(None),
        });
        let f = gc::finalize(&x, || ());
        drop(x);
        assert!(!f.alive());
    }
}

/// A finalizer may register a weak callback on its own garbage; it runs
/// when the garbage is reclaimed.
#[test]
fn finalizer_registers_weak_callback() {
    thread_local!(static RAN: Cell<bool> = const { Cell::new(false) });
    #[derive(Trace)]
    struct F {
        me: RefCell<Option<Gc<F>>>,
    }
    impl Finalize for F {
        fn finalize(this: &Gc<Self>) {
            assert!(gc::finalize(this, || RAN.with(|r| r.set(true))).alive());
        }
    }
    let f = Gc::new_with_finalizer(F {
        me: RefCell::new(None),
    });
    *f.me.borrow_mut() = Some(f.clone());
    drop(f);
    assert_eq!(gc::collect(), 1);
    assert!(RAN.with(Cell::get));
}
