//! Regression tests for the bugs `tests/gc_fuzz.rs` found (issue 12),
//! each minimized to the smallest program that shows it.
//!
//! Each test's doc says how the bug was found and what the fix was; each
//! failed before its fix. Tests that show a memory error only fail under
//! AddressSanitizer (`scripts/asan.sh`) or Miri (this file keeps the
//! system allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Tracer};

mod common;

/// The system allocator, counting the bytes each thread has live (tests
/// run on several threads at once, so a per-thread count keeps them
/// apart).
struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the allocator also serves this thread's TLS teardown.
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded to `System` unchanged; the counting
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: `GlobalAlloc::alloc`'s contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `GlobalAlloc::dealloc`'s contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
/// (with its tolerance of this bug off): when the last handle of an object with a weak
/// callback goes and the object's `Drop` panics, `last_drop` has already
/// taken the callbacks out of the registry, and the panic unwinds past
/// `run_callbacks`: the callbacks are dropped without running. (A
/// collection runs them, panic or not.)
#[test]
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
fn last_drop_frees_no_allocation_a_live_reference_points_into() {
    let ran = Rc::new(Cell::new(false));
    let obj = node(Vec::new(), None);
    let r = ran.clone();
    let _f = gc::finalize(&obj, move || r.set(true));
    drop(obj); // no Weak: the allocation is freed inside last_drop's closure
    assert!(ran.get());
}

/// Found by Miri's leak check on the fuzzer's programs: a tracked object
/// whose `Drop` panicked when its last handle went (the refcount path)
/// kept its allocation for ever, because the unwind skipped the release
/// of the strong handles' weak reference. The value has ended (its other
/// fields were dropped while unwinding), so the trashcan now releases it
/// on unwind too.
#[test]
fn a_drop_that_panics_on_the_refcount_path_frees_its_object() {
    let panics = || {
        node(
            Vec::new(),
            Some(Box::new(|| {
                if !std::thread::panicking() {
                    panic!("a Drop that panics");
                }
            })),
        )
    };
    // Warm up whatever the first panic allocates once (the hook's buffers).
    let first = panics();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(first))).is_err());
    // The collector's list may grow meanwhile (untracked slots are only
    // squeezed out by collections), a few bytes per object at most; a
    // leaked object is its whole allocation (80 bytes here).
    // The default hook writes each message into the harness's captured
    // output, which this thread's count would see grow: keep it quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    const N: isize = 1000;
    let before = LIVE_BYTES.with(Cell::get);
    for _ in 0..N {
        let obj = panics();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(obj)));
        assert!(r.is_err());
    }
    let leaked = LIVE_BYTES.with(Cell::get) - before;
    std::panic::set_hook(hook);
    assert!(
        leaked < N * 16,
        "{leaked} bytes still allocated after {N} panicking drops"
    );
}

/// A node whose `trace` breaks rule 5 of the `Trace` contract in one of
/// the ways the contract says stays memory-safe (the collector "re-reads
/// its list, objects freed meanwhile become holes").
struct Rogue {
    edges: RefCell<Vec<Gc<Rogue>>>,
    /// Handles the collector never sees; `trace` drops them.
    side: RefCell<Vec<Gc<Rogue>>>,
    /// `trace` allocates a tracked object (kept in `side`).
    alloc: bool,
}

// SAFETY: deliberately breaks rule 5 (drops and creates handles in
// `trace`), never rule 1: `side` is read by no `trace`.
unsafe impl Trace for Rogue {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
        if self.alloc {
            if let Ok(mut s) = self.side.try_borrow_mut() {
                s.push(rogue(false));
            }
        } else {
            drop(self.side.try_borrow_mut().ok().and_then(|mut s| s.pop()));
        }
    }
}

fn rogue(alloc: bool) -> Gc<Rogue> {
    Gc::new(Rogue {
        edges: RefCell::new(Vec::new()),
        side: RefCell::new(Vec::new()),
        alloc,
    })
}

/// Found by the hostile fuzzer (`tests/gc_fuzz_hostile.rs`, seed 3): a
/// `trace` that allocates a tracked object during a full collection from
/// the dirty seeds made `find_reachable_from_dirty` compute its holes as
/// `n - st.tracked()` with more objects tracked than the range holds:
/// "attempt to subtract with overflow" in debug builds (the collection
/// abandoned with a panic), a wrapped count in release builds.
#[test]
fn a_trace_that_allocates_during_a_full_collection_does_not_break_it() {
    gc::collect();
    let a = rogue(true);
    let b = rogue(false);
    a.edges.borrow_mut().push(b.clone());
    b.edges.borrow_mut().push(a.clone());
    // A full collection that examines the whole range first, then one from
    // the dirty seeds: `b`'s decrement makes it a seed.
    gc::collect();
    let (wa, wb) = (Gc::downgrade(&a), Gc::downgrade(&b));
    drop(b);
    drop(a);
    // (The objects the traces made are owned by `a`: freed with it.)
    assert_eq!(gc::collect(), 2);
    assert!(wa.upgrade().is_none() && wb.upgrade().is_none());
}

/// Found by the review of the collector's phases (rule 5 of `Trace` says a
/// `trace` that drops handles keeps memory safety): a `trace` that drops
/// the last handle of a member the collection already scanned frees it
/// during the phases, and its list slot becomes null. Phase 2 then took
/// that member, a root by its gc_refs, and read the header before the
/// null pointer (`GcHeader::of(null)`: a wild read, SIGSEGV natively).
#[test]
fn a_trace_that_frees_a_scanned_member_does_not_crash_the_collection() {
    gc::collect();
    // Listed in this order: the victim (scanned first), the rogue that
    // frees it, then a garbage pair so that phase 2 runs.
    let victim = rogue(false);
    let r = rogue(false);
    r.side.borrow_mut().push(victim);
    let x = rogue(false);
    let y = rogue(false);
    x.edges.borrow_mut().push(y.clone());
    y.edges.borrow_mut().push(x.clone());
    drop((x, y));
    // Young and full collections, from the dirty seeds too.
    assert_eq!(gc::collect_generation(0), 2);
    let victim = rogue(false);
    r.side.borrow_mut().push(victim);
    let x = rogue(false);
    let y = rogue(false);
    x.edges.borrow_mut().push(y.clone());
    y.edges.borrow_mut().push(x.clone());
    r.edges.borrow_mut().push(x.clone());
    r.edges.borrow_mut().clear();
    drop((x, y));
    assert_eq!(gc::collect(), 2);
    drop(r);
    gc::collect();
}

/// `common::isolated` (the body in a child process, so that an abort
/// fails one test), except under Miri, which cannot spawn processes: the
/// body runs in place there (after the fixes none of them aborts).
fn isolated(name: &str, body: impl FnOnce()) {
    if cfg!(miri) {
        body()
    } else {
        common::isolated(name, body)
    }
}

/// A node whose `Drop` panics (unless it runs during an unwind).
fn bomb() -> Gc<Node> {
    node(
        Vec::new(),
        Some(Box::new(|| {
            if !std::thread::panicking() {
                panic!("a Drop that panics at thread exit");
            }
        })),
    )
}

/// Found by the hostile fuzzer (`tests/gc_fuzz_hostile.rs`, seed 3): the
/// weak callbacks still registered when a thread exits (on objects still
/// reachable then) are dropped by the registry's thread-local destructor;
/// a callback that owns a `Gc` whose `Drop` panics made that destructor
/// unwind, and the process aborted ("thread local panicked on drop").
/// Issue 12 item 6 asks that `Drop` impls run at thread exit may panic:
/// the registry now drops each callback under `catch_unwind`, as the
/// teardown's collection does.
#[test]
fn a_weak_callback_owning_a_panicking_drop_does_not_abort_thread_exit() {
    isolated(
        "a_weak_callback_owning_a_panicking_drop_does_not_abort_thread_exit",
        || {
            std::thread::spawn(|| {
                EARLY.with(|_| ());
                let target = node(Vec::new(), None);
                let held = bomb();
                let _f = gc::finalize(&target, move || drop(held));
                // Still reachable when the registry is destroyed: kept by
                // a thread-local destroyed after pymem's.
                EARLY.with(|e| e.borrow_mut().push(target));
            })
            .join()
            .unwrap();
        },
    );
}

/// Found with the previous one, by review: the `gc::callbacks` registered
/// when a thread exits are dropped by their thread-local's destructor
/// just as well; a callback owning a `Gc` whose `Drop` panics aborted
/// the process.
#[test]
fn a_gc_callback_owning_a_panicking_drop_does_not_abort_thread_exit() {
    isolated(
        "a_gc_callback_owning_a_panicking_drop_does_not_abort_thread_exit",
        || {
            std::thread::spawn(|| {
                let held = bomb();
                gc::callbacks::add(move |_, _| {
                    let _ = &held;
                });
                gc::collect();
            })
            .join()
            .unwrap();
        },
    );
}

/// Found by the hostile fuzzer (seed 43, after the fix above): a full
/// collection from the dirty seeds makes its seeds clean after the phases
/// (`State::clear_seeds`), trusting that "nothing was freed since"; a
/// `trace` that dropped the last handle of a seed had nulled its slot, and
/// `clear_seeds` wrote the flags of the header before the null pointer
/// (SIGSEGV).
#[test]
fn a_trace_that_frees_a_dirty_seed_does_not_crash_the_full_collection() {
    gc::collect();
    let victim = rogue(false);
    let r = rogue(false);
    // Both dirty (a count decremented to a non-zero value): seeds of the
    // next full collection, the rogue traced first.
    r.side.borrow_mut().push(victim.clone());
    drop(victim);
    drop(r.clone());
    assert_eq!(gc::collect(), 0);
    assert!(r.side.borrow().is_empty());
    drop(r);
    gc::collect();
}

/// Found by the hostile fuzzer (seed 48): `gc::callbacks::remove` dropped
/// the removed closure while the callback list was mutably borrowed; a
/// `Gc` the closure owned ran a `Drop` that collected, the collection's
/// start borrowed the list to call the callbacks and panicked ("RefCell
/// already mutably borrowed") after `begin_collection` had marked a
/// collection as running: the flag was never cleared, so every later
/// collection on the thread returned 0 (cycles leaked for good, and the
/// collection at thread exit did nothing either).
#[test]
fn removing_a_gc_callback_whose_drop_collects_keeps_the_collector_working() {
    let collects_on_drop = node(
        Vec::new(),
        Some(Box::new(|| {
            gc::collect();
        })),
    );
    let id = gc::callbacks::add(move |_, _| {
        let _ = &collects_on_drop;
    });
    let r = std::panic::catch_unwind(|| gc::callbacks::remove(id));
    assert!(matches!(r, Ok(true)), "remove panicked or found nothing");
    let a = node(Vec::new(), None);
    let b = node(vec![a.clone()], None);
    a.edges.borrow_mut().push(b);
    drop(a);
    assert_eq!(gc::collect(), 2, "the collector stopped working");
}

/// Found by the hostile fuzzer (seed 268): when the last handle of an
/// object with a weak callback goes during an unwind (a local of a frame
/// that panicked), the callback runs from `Gc::drop`, and a panic in it
/// was resumed from there: a panic escaping a destructor that runs during
/// an unwind aborts the process ("panic in a destructor during cleanup").
/// It is now contained (reported on stderr) when the thread is already
/// unwinding; the first panic goes on.
#[test]
fn a_weak_callback_that_panics_while_an_unwind_drops_its_referent_does_not_abort() {
    isolated(
        "a_weak_callback_that_panics_while_an_unwind_drops_its_referent_does_not_abort",
        || {
            let r = std::panic::catch_unwind(|| {
                let target = node(Vec::new(), None);
                let _f = gc::finalize(&target, || panic!("a weak callback that panics"));
                panic!("the first panic");
            });
            let msg = common::panic_message(&*r.unwrap_err());
            assert_eq!(msg.as_deref(), Some("the first panic"));
        },
    );
}

/// A finalizer whose object dies by refcount during an unwind (the same
/// path: `finalize::last_drop`, then a panic resumed from `Gc::drop`).
#[test]
fn a_finalizer_that_panics_while_an_unwind_drops_its_object_does_not_abort() {
    #[derive(Trace)]
    struct Fin {
        next: RefCell<Option<Gc<Fin>>>,
    }
    impl gc::Finalize for Fin {
        fn finalize(_: &Gc<Self>) {
            panic!("a finalizer that panics");
        }
    }
    isolated(
        "a_finalizer_that_panics_while_an_unwind_drops_its_object_does_not_abort",
        || {
            let r = std::panic::catch_unwind(|| {
                let _target = Gc::new_with_finalizer(Fin {
                    next: RefCell::new(None),
                });
                panic!("the first panic");
            });
            let msg = common::panic_message(&*r.unwrap_err());
            assert_eq!(msg.as_deref(), Some("the first panic"));
        },
    );
}

thread_local! {
    /// A user thread-local touched before any `Gc` exists on the thread,
    /// so destroyed after pymem's (destructors run in reverse order).
    static EARLY: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
}

/// Found by review of the thread-locals the `gc` functions use (issue 12
/// item 6: `Drop` impls run at thread exit may "touch other thread-locals
/// that are already gone"): a `Drop` that runs after pymem's weak-callback
/// and gc-callback registries were destroyed (its object kept by a user
/// thread-local destroyed later) and calls `gc::finalize` or
/// `gc::callbacks::add` made them panic ("cannot access a Thread Local
/// Storage value during or after destruction") inside a thread-local
/// destructor: the process aborted. The gc-callback registry now
/// registers nothing then; the weak-callback table has no destructor (the
/// collector's teardown, after every thread-local destructor, empties
/// it), so a weak callback registered then still runs when its object
/// dies.
#[test]
fn registering_callbacks_from_a_drop_after_the_registries_are_gone_does_not_abort() {
    isolated(
        "registering_callbacks_from_a_drop_after_the_registries_are_gone_does_not_abort",
        || {
            use std::sync::atomic::{AtomicBool, Ordering};
            static RAN: AtomicBool = AtomicBool::new(false);
            std::thread::spawn(|| {
                EARLY.with(|_| ());
                let other = node(Vec::new(), None);
                let keep = other.clone();
                let late = node(
                    Vec::new(),
                    Some(Box::new(move || {
                        let _f = gc::finalize(&keep, || RAN.store(true, Ordering::SeqCst));
                        gc::callbacks::add(|_, _| {});
                    })),
                );
                EARLY.with(|e| e.borrow_mut().push(late));
                drop(other);
            })
            .join()
            .unwrap();
            assert!(RAN.load(Ordering::SeqCst), "the weak callback ran");
        },
    );
}
