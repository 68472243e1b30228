//! `gc::set_debug` (DEBUG_STATS, DEBUG_COLLECTABLE, DEBUG_SAVEALL,
//! DEBUG_LEAK), `gc::garbage`/`clear_garbage` and `gc::callbacks`, with
//! ports of CPython's `test_gc.GCCallbackTests` and the `gc.garbage`
//! tests. Output on stderr is checked by running this test binary again as
//! a child process.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use pymem::gc::{self, callbacks, CallbackInfo, Phase};
use pymem::{Gc, Trace, Weak};

thread_local! {
    static DROPS: Cell<usize> = const { Cell::new(0) };
}

#[derive(Trace)]
struct Node {
    id: u32,
    next: RefCell<Option<Gc<Node>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
    }
}

#[derive(Trace)]
struct Other {
    me: RefCell<Option<Gc<Other>>>,
}

fn ring(n: u32) -> Weak<Node> {
    let first = Gc::new(Node {
        id: 0,
        next: RefCell::new(None),
    });
    let mut prev = first.clone();
    for id in 1..n {
        let o = Gc::new(Node {
            id,
            next: RefCell::new(None),
        });
        *prev.next.borrow_mut() = Some(o.clone());
        prev = o;
    }
    *prev.next.borrow_mut() = Some(first.clone());
    Gc::downgrade(&first)
}

fn drops() -> usize {
    DROPS.with(Cell::get)
}

#[test]
fn flags_round_trip_with_python_values() {
    assert_eq!(gc::get_debug(), 0);
    assert_eq!(
        (
            gc::DEBUG_STATS,
            gc::DEBUG_COLLECTABLE,
            gc::DEBUG_UNCOLLECTABLE,
            gc::DEBUG_SAVEALL,
            gc::DEBUG_LEAK
        ),
        (1, 2, 4, 32, 38)
    );
    gc::set_debug(gc::DEBUG_LEAK);
    assert_eq!(gc::get_debug(), gc::DEBUG_LEAK);
    gc::set_debug(0);
    assert_eq!(gc::get_debug(), 0);
    // per thread
    gc::set_debug(gc::DEBUG_STATS);
    std::thread::spawn(|| assert_eq!(gc::get_debug(), 0))
        .join()
        .unwrap();
    gc::set_debug(0);
}

/// test_gc.test_saveall: with DEBUG_SAVEALL the garbage is kept, intact,
/// and listed; clearing it reclaims it.
#[test]
fn saveall_keeps_garbage() {
    gc::collect();
    gc::set_debug(gc::DEBUG_SAVEALL);
    let w = ring(3);
    let o = Gc::new(Other {
        me: RefCell::new(None),
    });
    *o.me.borrow_mut() = Some(o.clone());
    drop(o);
    assert_eq!(gc::collect(), 4, "saved objects count as found");
    assert_eq!(drops(), 0, "nothing dropped");
    assert!(w.upgrade().is_none(), "saved garbage is dead to Weak");
    let g = gc::garbage();
    assert_eq!(g.len(), 4);
    let nodes = g
        .iter()
        .filter(|i| i.type_name == std::any::type_name::<Node>())
        .count();
    assert_eq!(nodes, 3);
    assert!(g
        .iter()
        .any(|i| i.type_name == std::any::type_name::<Other>()));
    assert!(g.iter().all(|i| i.size >= 32));
    let mut addrs: Vec<usize> = g.iter().map(|i| i.address).collect();
    addrs.dedup();
    assert_eq!(addrs.len(), 4);
    assert!(g[0].to_string().starts_with('<'));
    // Saved objects are not tracked any more; a new collection finds nothing.
    assert_eq!(gc::collect(), 0);
    assert_eq!(gc::garbage().len(), 4);
    gc::set_debug(0);
    assert_eq!(gc::clear_garbage(), 4);
    assert_eq!(drops(), 3);
    assert!(gc::garbage().is_empty());
    assert_eq!(gc::clear_garbage(), 0);
}

/// Weak callbacks of saved objects wait until the garbage is cleared.
#[test]
fn saveall_defers_weak_callbacks_to_clear_garbage() {
    gc::set_debug(gc::DEBUG_SAVEALL);
    let called = Rc::new(Cell::new(false));
    let a = Gc::new(Other {
        me: RefCell::new(None),
    });
    *a.me.borrow_mut() = Some(a.clone());
    let c = called.clone();
    let f = gc::finalize(&a, move || c.set(true));
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert!(!called.get() && f.alive());
    gc::set_debug(0);
    gc::clear_garbage();
    assert!(called.get());
}

/// test_gc.GCCallbackTests.test_collect
#[test]
fn callbacks_start_and_stop() {
    gc::collect();
    let log: Rc<RefCell<Vec<(Phase, CallbackInfo)>>> = Rc::default();
    let l = log.clone();
    let id = callbacks::add(move |p, i| l.borrow_mut().push((p, *i)));
    let l = log.clone();
    let id2 = callbacks::add(move |p, i| l.borrow_mut().push((p, *i)));
    assert_eq!(callbacks::len(), 2);
    let _keep: Vec<_> = (0..5)
        .map(|i| {
            Gc::new(Node {
                id: i,
                next: RefCell::new(None),
            })
        })
        .collect();
    ring(10);
    assert_eq!(gc::collect(), 10);
    {
        let log = log.borrow();
        assert_eq!(log.len(), 4);
        assert_eq!(log[0].0, Phase::Start);
        assert_eq!(log[1].0, Phase::Start);
        assert_eq!(log[2].0, Phase::Stop);
        assert_eq!(log[3].0, Phase::Stop);
        let (start, stop) = (log[0].1, log[2].1);
        assert_eq!(start.generation, 2);
        assert_eq!((start.collected, start.uncollectable), (0, 0));
        assert_eq!(start.duration, Duration::ZERO);
        assert_eq!(start.candidates, 15);
        assert_eq!(stop.generation, 2);
        assert_eq!(stop.collected, 10);
        assert_eq!(stop.uncollectable, 0);
        assert_eq!(stop.candidates, 15);
        assert!(stop.duration > Duration::ZERO);
    }
    // test_collect_generation
    log.borrow_mut().clear();
    gc::collect_generation(1);
    assert_eq!(log.borrow().len(), 4);
    assert!(log.borrow().iter().all(|(_, i)| i.generation == 1));
    assert!(callbacks::remove(id));
    assert!(callbacks::remove(id2));
    assert!(!callbacks::remove(id));
    log.borrow_mut().clear();
    gc::collect();
    assert!(log.borrow().is_empty());
}

/// Automatic collections call the callbacks too.
#[test]
fn callbacks_on_automatic_collection() {
    let gens: Rc<RefCell<Vec<usize>>> = Rc::default();
    let g = gens.clone();
    callbacks::add(move |p, i| {
        if p == Phase::Stop {
            g.borrow_mut().push(i.generation)
        }
    });
    gc::set_threshold(10, 10, 10);
    let v: Vec<_> = (0..50)
        .map(|i| {
            Gc::new(Node {
                id: i,
                next: RefCell::new(None),
            })
        })
        .collect();
    gc::set_threshold(700, 10, 10);
    callbacks::clear();
    assert!(gens.borrow().len() >= 4);
    assert!(gens.borrow().iter().all(|&g| g == 0));
    drop(v);
}

/// A callback calling gc::collect() gets 0 (re-entrancy), and one adding a
/// callback during a collection does not disturb it.
#[test]
fn callbacks_are_not_reentrant() {
    let got: Rc<RefCell<Vec<usize>>> = Rc::default();
    let g = got.clone();
    callbacks::add(move |_, _| {
        g.borrow_mut().push(gc::collect());
        callbacks::add(|_, _| {});
    });
    ring(4);
    assert_eq!(gc::collect(), 4);
    assert_eq!(*got.borrow(), [0, 0]);
    assert_eq!(callbacks::len(), 3);
    callbacks::clear();
    assert!(callbacks::is_empty());
}

/// A panicking callback: the collection completes, the other callbacks
/// run, then the panic resumes; the collector stays usable.
#[test]
fn panicking_callback() {
    let calls = Rc::new(Cell::new(0));
    let id = callbacks::add(|p, _| {
        if p == Phase::Start {
            panic!("callback panics")
        }
    });
    let c = calls.clone();
    callbacks::add(move |_, _| c.set(c.get() + 1));
    let w = ring(5);
    let r = catch_unwind(AssertUnwindSafe(gc::collect));
    assert_eq!(
        r.unwrap_err().downcast_ref::<&str>(),
        Some(&"callback panics")
    );
    assert!(w.upgrade().is_none());
    assert_eq!(drops(), 5);
    assert_eq!(calls.get(), 2);
    callbacks::remove(id);
    ring(2);
    assert_eq!(gc::collect(), 2);
    callbacks::clear();
}

/// Resurrected objects are not counted as collected by the callbacks
/// either.
#[test]
fn callbacks_count_what_is_reclaimed() {
    use pymem::gc::Finalize;
    thread_local!(static KEEP: RefCell<Vec<Gc<L>>> = const { RefCell::new(Vec::new()) });
    #[derive(Trace)]
    struct L {
        me: RefCell<Option<Gc<L>>>,
    }
    impl Finalize for L {
        fn finalize(this: &Gc<Self>) {
            KEEP.with(|k| k.borrow_mut().push(this.clone()));
        }
    }
    let collected = Rc::new(Cell::new(usize::MAX));
    let c = collected.clone();
    callbacks::add(move |p, i| {
        if p == Phase::Stop {
            c.set(i.collected)
        }
    });
    let l = Gc::new_with_finalizer(L {
        me: RefCell::new(None),
    });
    *l.me.borrow_mut() = Some(l.clone());
    drop(l);
    ring(3);
    assert_eq!(gc::collect(), 3);
    assert_eq!(collected.get(), 3);
    callbacks::clear();
    KEEP.with(|k| k.borrow_mut().clear());
    assert_eq!(gc::collect(), 1);
}

// ---- stderr output, checked in a child process ---------------------------

const CHILD: &str = "PYMEM_GC_DEBUG_CHILD";

/// Runs `test` of this binary in a child process; returns its stderr.
fn child_stderr(test: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "child {test} failed: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // Shown with `-- --nocapture`.
    eprint!("{err}");
    err
}

#[test]
fn child_stats() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let _keep: Vec<_> = (0..7)
        .map(|i| {
            Gc::new(Node {
                id: i,
                next: RefCell::new(None),
            })
        })
        .collect();
    ring(10);
    gc::set_debug(gc::DEBUG_STATS);
    assert_eq!(gc::collect(), 10);
    gc::set_debug(0);
    gc::collect(); // prints nothing
}

#[test]
fn debug_stats_prints_a_report_per_collection() {
    let err = child_stderr("child_stats");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gc: ")).collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert_eq!(lines[0], "gc: collecting generation 2...");
    assert_eq!(lines[1], "gc: objects in each generation: 17 0 0");
    assert_eq!(lines[2], "gc: objects in permanent generation: 0");
    assert!(
        lines[3].starts_with("gc: done, 10 unreachable, 0 uncollectable, ")
            && lines[3].ends_with("s elapsed"),
        "{}",
        lines[3]
    );
}

#[test]
fn child_collectable() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    ring(3);
    let o = Gc::new(Other {
        me: RefCell::new(None),
    });
    *o.me.borrow_mut() = Some(o.clone());
    drop(o);
    gc::set_debug(gc::DEBUG_COLLECTABLE);
    assert_eq!(gc::collect(), 4);
    gc::set_debug(gc::DEBUG_LEAK);
    ring(2);
    assert_eq!(gc::collect(), 2);
    assert_eq!(gc::garbage().len(), 2);
    gc::set_debug(0);
    gc::clear_garbage();
}

#[test]
fn debug_collectable_names_reclaimed_types() {
    let err = child_stderr("child_collectable");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gc: ")).collect();
    let node = std::any::type_name::<Node>();
    let other = std::any::type_name::<Other>();
    assert_eq!(
        lines,
        [
            format!("gc: collectable 3 x {node}"),
            format!("gc: collectable 1 x {other}"),
            format!("gc: collectable 2 x {node}"),
        ],
        "{err}"
    );
}

#[test]
fn node_ids_are_read() {
    // Keeps the `id` field meaningful (and readable in saved garbage).
    let n = Gc::new(Node {
        id: 7,
        next: RefCell::new(None),
    });
    assert_eq!(n.id, 7);
}

/// A cycle whose `Drop` counts into a process-wide counter, so that a
/// drop on another thread is seen by the test.
#[derive(Trace)]
struct Counted {
    next: RefCell<Option<Gc<Counted>>>,
    #[trace(skip)]
    drops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn counted_cycle(drops: &std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let a = Gc::new(Counted {
        next: RefCell::new(None),
        drops: drops.clone(),
    });
    let b = Gc::new(Counted {
        next: RefCell::new(Some(a.clone())),
        drops: drops.clone(),
    });
    *a.next.borrow_mut() = Some(b);
}

/// Runs a thread that saves a pair with `DEBUG_SAVEALL`, optionally clears
/// the flag and the garbage, makes a second pair of garbage and exits;
/// returns how many of the four values were dropped.
fn saveall_thread(clear_before_exit: bool) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        gc::set_debug(gc::DEBUG_SAVEALL);
        counted_cycle(&d);
        assert_eq!(gc::collect(), 2);
        assert_eq!(gc::garbage().len(), 2);
        if clear_before_exit {
            gc::set_debug(0);
            assert_eq!(gc::clear_garbage(), 2);
        }
        counted_cycle(&d);
    })
    .join()
    .unwrap();
    drops.load(Ordering::SeqCst)
}

#[test]
fn saveall_at_thread_exit_leaks_what_it_saves_and_clear_garbage_before_exit_drops_it() {
    // With the flag still set at exit, neither the saved pair nor the one
    // the exit collection finds is dropped.
    assert_eq!(saveall_thread(false), 0);
    // The documented way out: clear the flag and the garbage before exit.
    assert_eq!(saveall_thread(true), 4);
}
