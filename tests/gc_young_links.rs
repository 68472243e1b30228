//! Young collections that follow parent links (`collector::finish`,
//! `State::links_pay`): when the last collection of a generation found
//! its candidates mostly reachable, phase 1 records for each member the
//! oldest member with an edge to it, and phase 2 settles the candidates
//! whose chain of links reaches a root without tracing them. The links
//! only prove reachability; a candidate they leave pending with more than
//! one reference may still be reachable through another edge, and phase
//! 2 must then trace. These tests build young generations of exactly
//! those shapes, with the links in use and not (the hint follows the
//! history), and check every answer.
//!
//! Each test runs on its own thread, so it starts with a fresh collector
//! (the hint on).

use std::cell::RefCell;

use pymem::{gc, Gc, Trace, Weak};

#[derive(Trace, Default)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
    prev: RefCell<Option<Gc<Node>>>,
}

fn new() -> Gc<Node> {
    Gc::new(Node::default())
}

fn set_next(from: &Gc<Node>, to: &Gc<Node>) {
    *from.next.borrow_mut() = Some(to.clone());
}

/// `b <-> c` a cycle, allocated before `a`, which holds `c` and is held
/// by the caller. Phase 1 traces the newest first, so `c`'s last referrer
/// is `b` and `b`'s is `c`: their links loop, and only `a`'s edge (not a
/// link) makes them reachable.
fn pending_but_reachable() -> (Gc<Node>, Weak<Node>, Weak<Node>) {
    let b = new();
    let c = new();
    let a = new();
    set_next(&b, &c);
    set_next(&c, &b);
    set_next(&a, &c);
    let (wb, wc) = (Gc::downgrade(&b), Gc::downgrade(&c));
    drop((b, c));
    (a, wb, wc)
}

/// A doubly linked list of `n` nodes grown at its tail (the shape the
/// links settle in one step per node); returns its tail.
fn dlist(n: usize) -> Gc<Node> {
    let mut tail = new();
    for _ in 1..n {
        let x = new();
        *x.prev.borrow_mut() = Some(tail.clone());
        set_next(&tail, &x);
        tail = x;
    }
    tail
}

/// Rings of 10 dropped as they are built: young garbage only (which turns
/// the links off for the next collection of generation 0).
fn garbage_rings(n: usize) {
    for _ in 0..n {
        let first = new();
        let mut last = first.clone();
        for _ in 1..10 {
            let x = new();
            set_next(&last, &x);
            last = x;
        }
        set_next(&last, &first);
    }
}

#[test]
fn a_pending_cycle_reachable_through_another_edge_is_kept() {
    gc::disable();
    assert_eq!(gc::collect(), 0);
    // A young generation of objects still being built keeps the links on.
    let keep = dlist(100);
    assert_eq!(gc::collect_generation(0), 0);
    let (a, wb, wc) = pending_but_reachable();
    // The links leave b and c pending with c held twice: phase 2 traces
    // from a and finds them.
    assert_eq!(gc::collect_generation(0), 0);
    assert!(wb.upgrade().is_some() && wc.upgrade().is_some());
    assert_eq!(a.next.borrow().as_ref().map(Gc::strong_count), Some(2));
    // Once a is gone, the cycle is garbage.
    drop(a);
    assert_eq!(gc::collect_generation(1), 2);
    assert!(wb.upgrade().is_none() && wc.upgrade().is_none());
    drop(keep);
    assert_eq!(gc::collect(), 100);
    gc::enable();
}

#[test]
fn a_list_grown_at_its_tail_is_kept_then_collected_whole() {
    gc::disable();
    let tail = dlist(500);
    let head_weak = {
        let mut x = tail.clone();
        loop {
            let p = x.prev.borrow().clone();
            match p {
                Some(p) => x = p,
                None => break Gc::downgrade(&x),
            }
        }
    };
    // Every node is reachable from the tail through the prev edges, and
    // each one's oldest referrer is the node before it: settled by links.
    assert_eq!(gc::collect_generation(0), 0);
    assert!(head_weak.upgrade().is_some());
    // A second list in the young generation, the first in generation 1.
    let second = dlist(300);
    assert_eq!(gc::collect_generation(0), 0);
    drop(tail);
    assert_eq!(gc::collect_generation(1), 500);
    assert!(head_weak.upgrade().is_none());
    drop(second);
    assert_eq!(gc::collect(), 300);
    gc::enable();
}

/// The hint turns the links off (garbage floods) and back on (objects
/// being built), and off for a while after they failed to settle (the
/// pending cycle): every answer stays exact through all of it.
#[test]
fn exact_answers_whichever_way_the_hint_goes() {
    gc::disable();
    for round in 0..40 {
        match round % 4 {
            0 => {
                garbage_rings(20);
                assert_eq!(gc::collect_generation(0), 200, "round {round}");
            }
            1 => {
                let tail = dlist(64);
                assert_eq!(gc::collect_generation(0), 0, "round {round}");
                drop(tail);
                assert_eq!(gc::collect_generation(1), 64, "round {round}");
            }
            _ => {
                let (a, wb, wc) = pending_but_reachable();
                let tail = dlist(32);
                assert_eq!(gc::collect_generation(0), 0, "round {round}");
                assert!(wb.upgrade().is_some() && wc.upgrade().is_some());
                drop(a);
                drop(tail);
                assert_eq!(gc::collect_generation(1), 34, "round {round}");
            }
        }
    }
    assert_eq!(gc::collect(), 0);
    gc::enable();
}

/// With automatic collection on, lists built while others are dropped
/// (the bench's `dlists` shape): young collections meet lists being
/// built, lists dropped mid-generation and garbage spanning generations.
#[test]
fn dlists_under_automatic_collection_are_all_reclaimed() {
    gc::enable();
    assert_eq!(gc::collect(), 0);
    let before: usize = gc::get_stats().iter().map(|s| s.collected).sum();
    for _ in 0..12 {
        let tail = dlist(1500);
        drop(tail);
    }
    let found_now = gc::collect();
    let after: usize = gc::get_stats().iter().map(|s| s.collected).sum();
    assert_eq!(after - before, 12 * 1500);
    assert!(found_now <= 12 * 1500);
    assert_eq!(gc::tracked_count(), 0);
}
