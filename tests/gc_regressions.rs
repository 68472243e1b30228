//! Regression tests for the bugs `tests/gc_fuzz.rs` found (issue 12),
//! each minimized to the smallest program that shows it.
//!
//! A test marked `#[ignore = "bug: ..."]` fails on the branch that added
//! it; the reason names the branch expected to fix it. Tests that show a
//! memory error only fail under AddressSanitizer (`scripts/asan.sh`, or
//! Miri, since this file keeps the system allocator).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Tracer};

/// A node with optional edges and a `Drop` that runs a closure.
struct Node {
    edges: RefCell<Vec<Gc<Node>>>,
    on_drop: Option<Box<dyn Fn()>>,
}

// SAFETY: visits the `Gc`s a node owns (its edges), once each.
unsafe impl Trace for Node {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(f) = &self.on_drop {
            f();
        }
    }
}

fn node(edges: Vec<Gc<Node>>, on_drop: Option<Box<dyn Fn()>>) -> Gc<Node> {
    Gc::new(Node {
        edges: RefCell::new(edges),
        on_drop,
    })
}

/// Found by the fuzzer (seed 95, one `Chain` operation): a weak callback
/// (`gc::finalize`, `Weak::with_callback`) promises to run after its
/// referent's value is dropped. When the refcount drop of that value is
/// nested deeper than the trashcan's limit, `finalize::last_drop` takes the
/// callbacks, calls `trashcan::drop_object`, which only queues the object,
/// and runs the callbacks at once: before the value is dropped.
#[test]
#[ignore = "bug: a weak callback runs before its referent's value is dropped when the trashcan defers that drop; fixed by unknown"]
fn weak_callback_runs_after_a_deferred_drop() {
    // A chain of 200, whatever the trashcan's limit: every node has a
    // callback that looks whether that node's value was dropped.
    const N: usize = 200;
    let dropped: Rc<Vec<Cell<bool>>> = Rc::new((0..N).map(|_| Cell::new(false)).collect());
    let early = Rc::new(Cell::new(0));
    let mut next: Option<Gc<Node>> = None;
    let mut callbacks = Vec::new();
    for i in (0..N).rev() {
        let d = dropped.clone();
        let n = node(
            next.take().into_iter().collect(),
            Some(Box::new(move || d[i].set(true))),
        );
        let (d, e) = (dropped.clone(), early.clone());
        callbacks.push(gc::finalize(&n, move || {
            if !d[i].get() {
                e.set(e.get() + 1);
            }
        }));
        next = Some(n);
    }
    drop(next); // the whole chain goes, 200 nested drops
    assert!(dropped.iter().all(Cell::get));
    assert!(callbacks.iter().all(|f| !f.alive()));
    assert_eq!(
        early.get(),
        0,
        "callbacks ran before the value they wait for was dropped"
    );
}

/// Issue 12 item 1, as the fuzzer found it (seed 131 with
/// `PYMEM_FUZZ_GET_MUT=1`, under AddressSanitizer): `Gc::get_mut` hands
/// out `&mut T` while the object stays in the collector's list. Assigning
/// a new edge vector through it drops the old one in place, element by
/// element; the second element's `Drop` collects, and the collector traces
/// the value (through `&T`, itself an aliasing violation) and reads the
/// old vector's first element, whose object was just freed:
/// use-after-free in `Tracer::visit` (ASan: "use-after-free" with the
/// system allocator, "use-after-poison" in a PyMalloc pool).
#[test]
#[ignore = "bug: Gc::get_mut lets the collector trace a value mutably borrowed (use-after-free under ASan); fixed by collector"]
fn get_mut_value_is_not_traced_while_its_vec_is_replaced_in_place() {
    let only_here = node(Vec::new(), None);
    let collects = node(
        Vec::new(),
        Some(Box::new(|| {
            gc::collect();
        })),
    );
    let mut owner = node(vec![only_here, collects], None);
    // A count decremented to non-zero, so the collection below is not
    // skipped (the skip rule) but really traces.
    drop(owner.clone());
    let m = Gc::get_mut(&mut owner).expect("unique");
    // The old vector is dropped in place: `only_here` is freed, then
    // `collects` runs a collection that traces `owner`.
    *m.edges.get_mut() = Vec::new();
    assert_eq!(owner.edges.borrow().len(), 0);
    assert_eq!(gc::collect(), 0);
}

/// Issue 12 item 3, as the fuzzer met it (seed 3538, in its teardown: a
/// `Drop` panicked after a 150-long chain had been dropped in the same
/// refcount cascade): the objects the trashcan deferred (those nested
/// past its limit) stay queued when the panic leaves the outermost drop,
/// until some unrelated later drop drains the queue, or for ever.
#[test]
#[ignore = "bug: after a panic leaves a deep refcount drop, the trashcan's deferred objects stay queued; fixed by collector"]
fn deferred_drops_are_not_left_queued_after_a_panic() {
    const N: usize = 150;
    let dropped: Rc<Vec<Cell<bool>>> = Rc::new((0..N).map(|_| Cell::new(false)).collect());
    let mut chain: Option<Gc<Node>> = None;
    for i in (0..N).rev() {
        let d = dropped.clone();
        chain = Some(node(
            chain.take().into_iter().collect(),
            Some(Box::new(move || d[i].set(true))),
        ));
    }
    let panics = node(
        Vec::new(),
        Some(Box::new(|| {
            if !std::thread::panicking() {
                panic!("a Drop that panics");
            }
        })),
    );
    // Dropping `head` drops the chain (deferring its deep part), then
    // `panics`, whose panic leaves the outermost drop.
    let head = node(vec![chain.unwrap(), panics], None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(head)));
    assert!(r.is_err());
    let left = dropped.iter().filter(|d| !d.get()).count();
    assert_eq!(left, 0, "{left} values of the chain are still queued");
}

/// Found by the review of `finalize::last_drop` and confirmed by the fuzzer
/// (`PYMEM_FUZZ_STRICT=1`): when the last handle of an object with a weak
/// callback goes and the object's `Drop` panics, `last_drop` has already
/// taken the callbacks out of the registry, and the panic unwinds past
/// `run_callbacks`: the callbacks are dropped without running. (A
/// collection runs them, panic or not.)
#[test]
#[ignore = "bug: a weak callback is lost when its referent's Drop panics on the refcount path; fixed by unknown"]
fn weak_callback_runs_when_the_referent_drop_panics() {
    let ran = Rc::new(Cell::new(false));
    let obj = node(
        Vec::new(),
        Some(Box::new(|| {
            if !std::thread::panicking() {
                panic!("a Drop that panics");
            }
        })),
    );
    let r = ran.clone();
    let f = gc::finalize(&obj, move || r.set(true));
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(obj)));
    assert!(p.is_err());
    assert!(!f.alive());
    assert!(ran.get(), "the callback never ran");
}

/// Found by Miri on the fuzzer (its first seeds; Stacked Borrows:
/// "deallocating while item [SharedReadOnly] is strongly protected",
/// Tree Borrows: "deallocation ... would cause the protected tag ... to
/// become Disabled", the tag created by `last_drop`'s closure): when the last handle of an object with a weak callback
/// (or a finalizer) goes, `finalize::last_drop` calls
/// `generations::with(|st| { .. st.untrack(obj, h); trashcan::drop_object(st, obj) })`:
/// the closure captures `h: &GcHeader`, a reference into the object's own
/// allocation, which is protected while the closure runs, and
/// `drop_object` frees that allocation (`release_weak` -> `dealloc`) when
/// no `Weak` is left. Only Miri sees it (the test passes natively): run
/// `cargo +nightly miri test --test gc_regressions -- --include-ignored last_drop`.
#[test]
#[ignore = "bug: finalize::last_drop frees the object while a &GcHeader captured by its closure is protected (UB under Miri); fixed by unknown"]
fn last_drop_frees_no_allocation_a_live_reference_points_into() {
    let ran = Rc::new(Cell::new(false));
    let obj = node(Vec::new(), None);
    let r = ran.clone();
    let _f = gc::finalize(&obj, move || r.set(true));
    drop(obj); // no Weak: the allocation is freed inside last_drop's closure
    assert!(ran.get());
}
