//! Deep structures never overflow the stack (CPython's trashcan): dropping
//! the head of a long `Gc` linked list, and collecting a long ring.
//!
//! Each case runs on a thread with a 256 KiB stack (far less than the
//! main thread's), inside a child process so that an overflow fails only
//! that test. The 10-million-element list runs in release builds only
//! (`cargo test --release`); 1 million runs always. Runs on the system
//! allocator.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{isolated, with_stack};
use pymem::{gc, Gc, Trace, Tracer};

const SMALL_STACK: usize = 256 * 1024;

/// A singly linked list node.
struct ListNode {
    next: Option<Gc<ListNode>>,
    drops: Rc<Cell<usize>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for ListNode {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
    }
}

impl Drop for ListNode {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

/// Builds a list of `n` nodes and drops its head: everything must be freed
/// by refcounting, at once, without overflowing a small stack.
fn drop_long_list(n: usize) {
    let dropped = with_stack(SMALL_STACK, move || {
        let drops = Rc::new(Cell::new(0));
        let mut head: Option<Gc<ListNode>> = None;
        for _ in 0..n {
            head = Some(Gc::new(ListNode {
                next: head.take(),
                drops: drops.clone(),
            }));
        }
        // A fresh thread: these are its only tracked objects.
        assert_eq!(gc::tracked_count(), n);
        drop(head);
        assert_eq!(gc::tracked_count(), 0);
        drops.get()
    });
    assert_eq!(dropped, n);
}

#[test]
fn drop_list_of_1m() {
    isolated("drop_list_of_1m", || drop_long_list(1_000_000));
}

#[test]
#[cfg_attr(debug_assertions, ignore = "10M nodes: run with --release")]
fn drop_list_of_10m() {
    isolated("drop_list_of_10m", || drop_long_list(10_000_000));
}

/// A ring node.
struct RingNode {
    next: RefCell<Option<Gc<RingNode>>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for RingNode {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
    }
}

static RING_DROPS: AtomicUsize = AtomicUsize::new(0);

impl Drop for RingNode {
    fn drop(&mut self) {
        RING_DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn collect_ring_of_1m() {
    isolated("collect_ring_of_1m", || {
        const N: usize = 1_000_000;
        let found = with_stack(SMALL_STACK, || {
            gc::disable();
            let first = Gc::new(RingNode {
                next: RefCell::new(None),
            });
            let mut last = first.clone();
            for _ in 1..N {
                let n = Gc::new(RingNode {
                    next: RefCell::new(None),
                });
                *last.next.borrow_mut() = Some(n.clone());
                last = n;
            }
            *last.next.borrow_mut() = Some(first.clone());
            drop(last);
            // Still alive: a young collection must keep it all.
            assert_eq!(gc::collect_generation(0), 0);
            assert_eq!(RING_DROPS.load(Ordering::Relaxed), 0);
            drop(first);
            let found = gc::collect();
            assert_eq!(gc::tracked_count(), 0);
            found
        });
        assert_eq!(found, N);
        assert_eq!(RING_DROPS.load(Ordering::Relaxed), N);
    });
}

/// A node with children in a `Vec`, as nested Python lists.
struct Nested {
    children: RefCell<Vec<Gc<Nested>>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Nested {
    fn trace(&self, tracer: &mut Tracer) {
        self.children.trace(tracer);
    }
}

static NESTED_DROPS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Nested {
    fn drop(&mut self) {
        NESTED_DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn nested_lists_deep_chain_dropped_and_collected() {
    // test_gc.test_trashcan: deeply nested lists, once freed by refcounting
    // and once hanging off a cycle, so that the collector reclaims the
    // chain and the drops cascade from inside a collection.
    isolated("nested_lists_deep_chain_dropped_and_collected", || {
        const N: usize = 300_000;
        with_stack(SMALL_STACK, || {
            gc::disable();
            let build = || {
                let root = Gc::new(Nested {
                    children: RefCell::new(Vec::new()),
                });
                let mut cur = root.clone();
                for _ in 1..N {
                    let c = Gc::new(Nested {
                        children: RefCell::new(Vec::new()),
                    });
                    cur.children.borrow_mut().push(c.clone());
                    cur = c;
                }
                (root, cur)
            };
            let (root, _tail) = build();
            drop(_tail);
            drop(root);
            assert_eq!(NESTED_DROPS.load(Ordering::Relaxed), N);

            // The chain's tail points back at its root: a cycle of N, plus
            // a second chain of N hanging off the root, reclaimed as part of
            // the same garbage.
            let (root, tail) = build();
            tail.children.borrow_mut().push(root.clone());
            let (root2, tail2) = build();
            drop(tail2);
            root.children.borrow_mut().push(root2);
            drop(tail);
            drop(root);
            assert_eq!(gc::collect(), 2 * N);
            assert_eq!(NESTED_DROPS.load(Ordering::Relaxed), 3 * N);
            assert_eq!(gc::tracked_count(), 0);
        });
    });
}

#[test]
fn deep_chain_through_an_untracked_looking_value() {
    // A chain through Option<Gc<_>> inside a tuple inside a Vec: the
    // std Trace impls compose and the drop is still iterative.
    isolated("deep_chain_through_an_untracked_looking_value", || {
        type Cons = (u32, Vec<Option<Gc<ConsCell>>>);
        struct ConsCell(Cons);
        // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
        // under-reports on purpose can only leak (see the `gc` module docs).
        unsafe impl Trace for ConsCell {
            fn trace(&self, tracer: &mut Tracer) {
                self.0.trace(tracer);
            }
        }
        let n = with_stack(SMALL_STACK, || {
            let mut head: Option<Gc<ConsCell>> = None;
            for i in 0..500_000u32 {
                head = Some(Gc::new(ConsCell((i, vec![head.take()]))));
            }
            let h = head.unwrap();
            let first = h.0 .0;
            drop(h);
            assert_eq!(gc::tracked_count(), 0);
            first
        });
        assert_eq!(n, 499_999);
    });
}

/// A list node whose `Drop` panics when its id is `panic_at`.
struct PanicNode {
    id: usize,
    panic_at: usize,
    next: Option<Gc<PanicNode>>,
    drops: Rc<Cell<usize>>,
}

// SAFETY: `trace` visits the `Gc` this type owns.
unsafe impl Trace for PanicNode {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
    }
}

impl Drop for PanicNode {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
        if self.id == self.panic_at {
            panic!("PanicNode {} panics in drop", self.id);
        }
    }
}

/// Drops a list of `n` nodes, one of which panics in its `Drop`, and
/// returns how many values were dropped when the panic reached the
/// caller, and how many objects the collector still tracked.
fn drop_list_with_panic(n: usize, panic_at: usize) -> (usize, usize) {
    let drops = Rc::new(Cell::new(0));
    let mut head: Option<Gc<PanicNode>> = None;
    for id in (0..n).rev() {
        head = Some(Gc::new(PanicNode {
            id,
            panic_at,
            next: head.take(),
            drops: drops.clone(),
        }));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(head)));
    assert!(r.is_err(), "the panic reaches the caller");
    // Nothing else has been dropped since: what the trashcan deferred must
    // already be gone.
    (drops.get(), gc::tracked_count())
}

/// Issue 12, item 3: a panic in a `Drop` within the first 64 levels of a
/// deep refcount drop unwinds through the outermost frame, which drains
/// the objects deferred past the depth limit as the panic leaves it.
#[test]
fn deferred_drops_are_drained_when_a_panic_leaves_the_outermost_drop() {
    with_stack(SMALL_STACK, || {
        gc::collect();
        assert_eq!(drop_list_with_panic(10_000, 10), (10_000, 0));
    });
}

/// The panicking value is itself a deferred one (dropped by the drain
/// loop): the rest of the queue is still drained.
#[test]
fn deferred_drops_are_drained_when_a_deferred_drop_panics() {
    with_stack(SMALL_STACK, || {
        gc::collect();
        assert_eq!(drop_list_with_panic(10_000, 5_000), (10_000, 0));
    });
}

/// Two panics: one in a nested frame, one in a drop drained while the
/// first unwinds. The second cannot propagate (a panic is already in
/// flight): it is caught and the drain goes on; the first reaches the
/// caller.
#[test]
fn second_panic_while_draining_on_unwind_is_contained() {
    with_stack(SMALL_STACK, || {
        gc::collect();
        let drops = Rc::new(Cell::new(0));
        let mut head: Option<Gc<PanicNode>> = None;
        for id in (0..1_000).rev() {
            // Node 3 panics while the list unwinds; node 500 (deferred)
            // panics again while the queue is drained on the way out.
            let panic_at = if id == 500 { 500 } else { 3 };
            head = Some(Gc::new(PanicNode {
                id,
                panic_at,
                next: head.take(),
                drops: drops.clone(),
            }));
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(head)));
        let msg = common::panic_message(&*r.unwrap_err()).unwrap();
        assert!(msg.contains("PanicNode 3"), "{msg}");
        assert_eq!(drops.get(), 1_000);
        assert_eq!(gc::tracked_count(), 0);
    });
}
