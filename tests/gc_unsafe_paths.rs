//! The rarely reached `unsafe` paths of `src/gc` that the review of issue
//! 12 asked "which safe caller sequence reaches this?" about, reached on
//! purpose, so that AddressSanitizer (`scripts/asan.sh`) and Miri (this
//! file keeps the system allocator) check them. Each test names the block.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use pymem::gc::{self, Finalize};
use pymem::{Gc, Trace, Tracer, Weak};

thread_local! {
    static DROPS: Cell<u32> = const { Cell::new(0) };
}

/// What a node's finalizer does.
#[derive(Clone, Copy, PartialEq)]
enum Fin {
    Nothing,
    /// Drops the node's edges (breaks the cycle while it is finalized).
    ClearEdges,
    /// Leaks a mutable borrow of the node's edges: every later `trace`
    /// of it must treat it as referenced from outside.
    LeakBorrow,
}

struct Node {
    edges: RefCell<Vec<Gc<Node>>>,
    fin: Fin,
    panic_on_drop: bool,
}

// SAFETY: visits the `Gc`s a node owns (its edges), once each.
unsafe impl Trace for Node {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
        if self.panic_on_drop && !std::thread::panicking() {
            panic!("a Drop that panics");
        }
    }
}

impl Finalize for Node {
    fn finalize(this: &Gc<Self>) {
        match this.fin {
            Fin::Nothing => {}
            Fin::ClearEdges => this.edges.borrow_mut().clear(),
            Fin::LeakBorrow => std::mem::forget(this.edges.borrow_mut()),
        }
    }
}

fn node(fin: Fin) -> Gc<Node> {
    Gc::new_with_finalizer(Node {
        edges: RefCell::new(Vec::new()),
        fin,
        panic_on_drop: false,
    })
}

/// A node without finalizer (its death never goes through
/// `finalize::last_drop`, whose bug Miri reports: see
/// `tests/gc_regressions.rs`).
fn plain(panic_on_drop: bool) -> Gc<Node> {
    Gc::new(Node {
        edges: RefCell::new(Vec::new()),
        fin: Fin::Nothing,
        panic_on_drop,
    })
}

fn drops() -> u32 {
    DROPS.with(Cell::get)
}

/// `finalize::revive`, the `n == 0` branch (finalize.rs, "Kept only by a
/// conservative check ... reclaim it after all"): garbage `{a, x}`, `a ->
/// x -> a`. `a`'s finalizer drops `a -> x`, so only the collector holds
/// `x`; `x`'s finalizer leaks a mutable borrow of its edges, so the
/// resurrection check cannot trace `x`: `x` counts as referenced from
/// outside, and `a` too (the edge `x -> a` is not seen). Both are
/// resurrected (the collection finds 0); when the collector lets go of
/// `x`, no handle is left, and `revive` drops its value itself (the
/// `RefCell` inside still leakily borrowed), which drops `a`.
#[test]
fn revive_reclaims_an_object_kept_only_by_a_leaked_borrow() {
    let a = node(Fin::ClearEdges);
    let x = node(Fin::LeakBorrow);
    a.edges.borrow_mut().push(x.clone());
    x.edges.borrow_mut().push(a.clone());
    let wa = Gc::downgrade(&a);
    let wx = Gc::downgrade(&x);
    drop((a, x));
    let before = drops();
    assert_eq!(gc::collect(), 0);
    // Both values are gone: `x` by `revive`, `a` by refcounting then.
    assert_eq!(drops() - before, 2);
    assert!(wa.upgrade().is_none() && wx.upgrade().is_none());
    assert_eq!(wx.strong_count(), 0);
}

/// `Gc::drop_slow` on an object that was never in the generation list
/// (ptr.rs, `untrack_at(obj, w >> SHIFT)` with the fresh gc word 0): the
/// automatic collection inside `Gc::new` resumes a `Drop`'s panic, so the
/// new handle is dropped while unwinding, before it is tracked.
#[test]
fn gc_new_whose_automatic_collection_panics_drops_the_new_value() {
    gc::set_threshold(1, 10, 10);
    // Garbage whose Drop panics, then enough allocations to trigger.
    let g = plain(true);
    g.edges.borrow_mut().push(g.clone());
    drop(g);
    let before = drops();
    let keep: Rc<RefCell<Vec<Gc<Node>>>> = Rc::default();
    let r = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..4 {
            keep.borrow_mut().push(plain(false));
        }
    }));
    gc::set_threshold(700, 10, 10);
    assert!(r.is_err(), "the automatic collection resumed the panic");
    // The garbage and the value whose Gc::new unwound were both dropped;
    // the list still holds only what `keep` has.
    assert_eq!(drops() - before, 2);
    assert_eq!(gc::tracked_count(), keep.borrow().len());
    drop(keep);
    assert_eq!(gc::tracked_count(), 0);
}

/// `Gc::new_cyclic` whose closure panics (ptr.rs, the value write is never
/// reached): the allocation lives on with a `Weak` the closure kept, and
/// is freed by that `Weak` without any value being dropped.
#[test]
fn new_cyclic_closure_panic_leaves_a_dead_weak() {
    let kept: RefCell<Option<Weak<Node>>> = RefCell::new(None);
    let before = drops();
    let r = catch_unwind(AssertUnwindSafe(|| {
        Gc::new_cyclic(|w: &Weak<Node>| -> Node {
            *kept.borrow_mut() = Some(w.clone());
            panic!("no value after all")
        })
    }));
    assert!(r.is_err());
    let w = kept.borrow_mut().take().unwrap();
    assert!(w.upgrade().is_none());
    assert_eq!((w.strong_count(), w.weak_count()), (0, 0));
    drop(w);
    assert_eq!(drops(), before);
}

/// A zombie (a handle a `Drop` cloned into the garbage being reclaimed)
/// outliving the collection, with a `Weak` beside it: ptr.rs
/// `drop_slow_unlisted`'s `DROPPED` branch frees nothing while the `Weak`
/// lives, and `Weak::drop` frees the memory without dropping the value a
/// second time.
#[test]
fn zombie_and_weak_free_the_memory_once() {
    thread_local! {
        static ZOMBIE: RefCell<Option<Gc<Zed>>> = const { RefCell::new(None) };
    }
    struct Zed {
        me: RefCell<Option<Gc<Zed>>>,
    }
    // SAFETY: visits its one `Gc`.
    unsafe impl Trace for Zed {
        fn trace(&self, tracer: &mut Tracer) {
            self.me.trace(tracer);
        }
    }
    impl Drop for Zed {
        fn drop(&mut self) {
            DROPS.with(|d| d.set(d.get() + 1));
            let me = self.me.get_mut().clone();
            ZOMBIE.with(|z| *z.borrow_mut() = me);
        }
    }
    let z = Gc::new(Zed {
        me: RefCell::new(None),
    });
    *z.me.borrow_mut() = Some(z.clone());
    let w = Gc::downgrade(&z);
    drop(z);
    let before = drops();
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops() - before, 1);
    let zombie = ZOMBIE.with(|z| z.borrow_mut().take()).unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| zombie.me.borrow().is_some())).is_err());
    assert!(w.upgrade().is_none());
    drop(zombie);
    drop(w);
    assert_eq!(drops() - before, 1);
}
