//! Cycles still alive when their thread exits are collected when the
//! thread's collector is torn down (issue 12, item 6; DESIGN.md's
//! contract additions): their `Drop` impls run, as dumpster does, even
//! when those allocate, create `Gc`s and new cycles, touch thread-locals
//! that are already gone, or panic.

mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::isolated;
use pymem::gc::{self, Finalize};
use pymem::{Gc, Trace};

#[derive(Trace)]
struct Node {
    #[trace(skip)]
    counter: &'static AtomicUsize,
    #[trace(skip)]
    on_drop: OnDrop,
    next: RefCell<Option<Gc<Node>>>,
}

#[derive(Clone, Copy, PartialEq)]
enum OnDrop {
    Nothing,
    /// Allocates tracked objects, and a new two-node cycle of `Nothing`
    /// nodes counted by the same counter.
    MakeCycle,
    /// Reads a thread-local with a destructor through `try_with`.
    TouchTls,
    Panic,
}

thread_local! {
    static SOME_TLS: RefCell<Vec<u8>> = RefCell::new(vec![1, 2, 3]);
}

impl Drop for Node {
    fn drop(&mut self) {
        self.counter.fetch_add(1, Ordering::SeqCst);
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::MakeCycle => {
                let _junk: Vec<_> = (0..100).map(|_| Gc::new(vec![Gc::new(1u8)])).collect();
                let (a, b) = pair(self.counter, OnDrop::Nothing);
                drop((a, b));
            }
            OnDrop::TouchTls => {
                let _ = SOME_TLS.try_with(|v| v.borrow().len());
            }
            OnDrop::Panic => panic!("a Drop panics during the thread-exit collection"),
        }
    }
}

fn node(counter: &'static AtomicUsize, on_drop: OnDrop) -> Gc<Node> {
    Gc::new(Node {
        counter,
        on_drop,
        next: RefCell::new(None),
    })
}

/// Two nodes pointing at each other.
fn pair(counter: &'static AtomicUsize, on_drop: OnDrop) -> (Gc<Node>, Gc<Node>) {
    let a = node(counter, on_drop);
    let b = node(counter, OnDrop::Nothing);
    *a.next.borrow_mut() = Some(b.clone());
    *b.next.borrow_mut() = Some(a.clone());
    (a, b)
}

/// An object whose finalizer counts in `finalized`.
#[derive(Trace)]
struct Fin {
    #[trace(skip)]
    finalized: &'static AtomicUsize,
    me: RefCell<Option<Gc<Fin>>>,
}

impl Finalize for Fin {
    fn finalize(this: &Gc<Self>) {
        this.finalized.fetch_add(1, Ordering::SeqCst);
    }
}

/// A `Fin` referencing itself, with a weak callback counting in
/// `callbacks`.
fn fin_cycle(finalized: &'static AtomicUsize, callbacks: &'static AtomicUsize) -> Gc<Fin> {
    let f = Gc::new_with_finalizer(Fin {
        finalized,
        me: RefCell::new(None),
    });
    *f.me.borrow_mut() = Some(f.clone());
    gc::finalize(&f, move || {
        callbacks.fetch_add(1, Ordering::SeqCst);
    });
    f
}

#[test]
fn cycles_alive_at_thread_exit_are_dropped() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    std::thread::spawn(|| {
        gc::disable();
        for _ in 0..10 {
            drop(pair(&DROPS, OnDrop::Nothing));
        }
        assert_eq!(DROPS.load(Ordering::SeqCst), 0);
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 20);
}

#[test]
fn cycles_held_by_a_later_thread_local_are_dropped() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HELD: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        let (a, b) = pair(&DROPS, OnDrop::Nothing);
        // Registered after the collector's own thread-local: destroyed
        // first, so the cycle is garbage when the collector is torn down.
        HELD.with(|h| h.borrow_mut().push(a));
        drop(b);
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}

/// The common shape: a thread-local cache set up before the thread's
/// first `Gc` (its first use creates one). Its destructor runs after the
/// collector's thread-local one; the teardown runs after both (review
/// finding: before, the cycle was never dropped).
#[test]
fn cycles_held_by_an_earlier_thread_local_are_dropped() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CACHE: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        CACHE.with(|c| {
            let (a, b) = pair(&DROPS, OnDrop::Nothing);
            c.borrow_mut().push(a);
            drop(b);
        });
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}

/// The same with the cycle frozen, and with a `Drop` that allocates and
/// makes new cycles while the teardown runs after every thread-local.
#[test]
fn frozen_cycles_held_by_an_earlier_thread_local_are_dropped() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CACHE: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        CACHE.with(|c| drop(c.borrow()));
        let (a, b) = pair(&DROPS, OnDrop::MakeCycle);
        gc::freeze();
        CACHE.with(|c| c.borrow_mut().push(a));
        drop(b);
    })
    .join()
    .unwrap();
    // The pair, and the pair its Drop made.
    assert_eq!(DROPS.load(Ordering::SeqCst), 4);
}

#[test]
fn drops_that_allocate_and_make_new_cycles_at_thread_exit() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    std::thread::spawn(|| {
        for _ in 0..5 {
            drop(pair(&DROPS, OnDrop::MakeCycle));
        }
    })
    .join()
    .unwrap();
    // 5 pairs, and the 5 pairs their Drops made.
    assert_eq!(DROPS.load(Ordering::SeqCst), 20);
}

#[test]
fn drops_that_touch_destroyed_thread_locals_at_thread_exit() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    std::thread::spawn(|| {
        SOME_TLS.with(|v| v.borrow_mut().push(4));
        drop(pair(&DROPS, OnDrop::TouchTls));
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}

#[test]
fn panicking_drop_at_thread_exit_is_contained() {
    // A panic escaping a thread-local destructor aborts the process: run
    // in a child so that such a failure is this test's alone.
    isolated("panicking_drop_at_thread_exit_is_contained", || {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        std::thread::spawn(|| {
            drop(pair(&DROPS, OnDrop::Panic));
            for _ in 0..3 {
                drop(pair(&DROPS, OnDrop::Nothing));
            }
        })
        .join()
        .unwrap();
        assert_eq!(DROPS.load(Ordering::SeqCst), 8);
    });
}

#[test]
fn finalizers_and_weak_callbacks_run_at_thread_exit() {
    static FINALIZED: AtomicUsize = AtomicUsize::new(0);
    static CALLBACKS: AtomicUsize = AtomicUsize::new(0);
    std::thread::spawn(|| {
        fin_cycle(&FINALIZED, &CALLBACKS);
    })
    .join()
    .unwrap();
    assert_eq!(FINALIZED.load(Ordering::SeqCst), 1);
    assert_eq!(CALLBACKS.load(Ordering::SeqCst), 1);
}

#[test]
fn frozen_cycles_are_dropped_at_thread_exit() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    std::thread::spawn(|| {
        drop(pair(&DROPS, OnDrop::Nothing));
        gc::freeze();
        assert_eq!(gc::collect(), 0);
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}

#[test]
fn objects_still_reachable_at_thread_exit_are_not_dropped_early() {
    // A cycle reachable from a thread-local that outlives the collector's
    // thread-local is not garbage while that thread-local lives: the exit
    // collections run then leave it alone. It is dropped once the
    // thread-local is gone (by the teardown that runs after every
    // thread-local destructor).
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static DROPS_WHILE_HELD: AtomicUsize = AtomicUsize::new(usize::MAX);
    struct Holder(Vec<Gc<Node>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            DROPS_WHILE_HELD.store(DROPS.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }
    thread_local! {
        static EARLY: RefCell<Holder> = const { RefCell::new(Holder(Vec::new())) };
    }
    std::thread::spawn(|| {
        // Registered before the collector's thread-local: destroyed after.
        EARLY.with(|_| ());
        let (a, b) = pair(&DROPS, OnDrop::Nothing);
        EARLY.with(|e| e.borrow_mut().0.push(a));
        drop(b);
    })
    .join()
    .unwrap();
    assert_eq!(DROPS_WHILE_HELD.load(Ordering::SeqCst), 0);
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}

/// Garbage that a thread-local destroyed after the collector's lets go
/// of is collected by the teardown after every thread-local destructor:
/// finalizers and weak callbacks (`gc::finalize`) run there.
#[test]
fn finalizers_of_an_earlier_thread_local_run_at_the_teardown() {
    static FINALIZED: AtomicUsize = AtomicUsize::new(0);
    static CALLBACKS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CACHE: RefCell<Vec<Gc<Fin>>> = const { RefCell::new(Vec::new()) };
    }
    std::thread::spawn(|| {
        CACHE.with(|c| {
            c.borrow_mut().push(fin_cycle(&FINALIZED, &CALLBACKS));
        });
    })
    .join()
    .unwrap();
    assert_eq!(FINALIZED.load(Ordering::SeqCst), 1);
    assert_eq!(CALLBACKS.load(Ordering::SeqCst), 1);
}
