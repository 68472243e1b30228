//! Full collections from the dirty seeds (`collector::find_reachable_from_dirty`)
//! take each seed when the stack is empty and no edge met it before, and
//! settle phase 2 through the parent links with one-step passes before
//! they walk chains (`collector::resolve_through_parents`). These tests
//! build live and garbage structures of the shapes where a step or a
//! seed taken wrongly would change the answer: rings held at any node
//! (some links point forwards, some backwards), garbage rings with edges
//! into live ones, a live object's edge into a cycle whose links loop,
//! and seeds already met by an edge; every answer and every `Weak` is
//! checked.
//!
//! Each test runs on its own thread, so it starts with a fresh collector.

use std::cell::RefCell;

use pymem::{gc, Gc, Trace, Weak};

#[derive(Trace, Default)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
    other: RefCell<Option<Gc<Node>>>,
}

fn new() -> Gc<Node> {
    Gc::new(Node::default())
}

fn set_next(from: &Gc<Node>, to: &Gc<Node>) {
    *from.next.borrow_mut() = Some(to.clone());
}

/// A ring of `n` nodes built forwards, closed by the last node's edge to
/// the first; returns its nodes (the caller drops those it does not
/// keep).
fn ring(n: usize) -> Vec<Gc<Node>> {
    let nodes: Vec<Gc<Node>> = (0..n).map(|_| new()).collect();
    for i in 0..n {
        set_next(&nodes[i], &nodes[(i + 1) % n]);
    }
    nodes
}

/// A clean, live chain of `n` nodes (collected once), so that the seeds
/// of the next full collection are a small part of its range and it
/// examines what they reach rather than the whole range.
fn ballast(n: usize) -> Gc<Node> {
    let head = new();
    let mut tail = head.clone();
    for _ in 1..n {
        let x = new();
        set_next(&tail, &x);
        tail = x;
    }
    gc::collect();
    gc::collect();
    head
}

fn weaks(nodes: &[Gc<Node>]) -> Vec<Weak<Node>> {
    nodes.iter().map(Gc::downgrade).collect()
}

fn all_alive(ws: &[Weak<Node>]) -> bool {
    ws.iter().all(|w| w.upgrade().is_some())
}

fn all_dead(ws: &[Weak<Node>]) -> bool {
    ws.iter().all(|w| w.upgrade().is_none())
}

#[test]
fn rings_held_at_any_node_survive_and_garbage_rings_are_found() {
    std::thread::spawn(|| {
        gc::disable();
        let _ballast = ballast(20_000);
        let mut held = Vec::new();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        let mut last_live: Option<Gc<Node>> = None;
        for i in 0..60 {
            let nodes = ring(10);
            if i % 2 == 0 {
                // Held at node i % 10: the nodes after it resolve in one
                // step each, the ones before it through the chain that
                // wraps around.
                held.push(nodes[i % 10].clone());
                live.push(weaks(&nodes));
                last_live = Some(nodes[(i + 3) % 10].clone());
            } else {
                // Garbage with an edge into the last live ring: the live
                // node gets a second referrer that is garbage.
                if i % 4 == 1 {
                    if let Some(l) = &last_live {
                        *nodes[5].other.borrow_mut() = Some(l.clone());
                    }
                }
                dead.push(weaks(&nodes));
            }
        }
        drop(last_live);
        assert_eq!(gc::collect(), 300);
        assert!(live.iter().all(|w| all_alive(w)));
        assert!(dead.iter().all(|w| all_dead(w)));
        // Every other held ring dropped: found on the next collection.
        let mut k = 0;
        held.retain(|_| {
            k += 1;
            k % 2 == 0
        });
        assert_eq!(gc::collect(), 150);
        for (j, w) in live.iter().enumerate() {
            assert_eq!(all_alive(w), j % 2 == 1, "ring {j}");
        }
        drop(held);
        assert_eq!(gc::collect(), 150);
        assert!(live.iter().all(|w| all_dead(w)));
    })
    .join()
    .unwrap();
}

#[test]
fn a_cycle_reached_by_a_live_edge_is_kept_in_a_full_collection() {
    std::thread::spawn(|| {
        gc::disable();
        let _ballast = ballast(20_000);
        // b <-> c, held only by a's edge to c: their links may loop, so
        // only that edge (not a link) proves them reachable.
        let b = new();
        let c = new();
        let a = new();
        set_next(&b, &c);
        set_next(&c, &b);
        set_next(&a, &c);
        let (wb, wc) = (Gc::downgrade(&b), Gc::downgrade(&c));
        drop((b, c));
        assert_eq!(gc::collect(), 0);
        assert!(wb.upgrade().is_some() && wc.upgrade().is_some());
        drop(a);
        assert_eq!(gc::collect(), 2);
        assert!(wb.upgrade().is_none() && wc.upgrade().is_none());
    })
    .join()
    .unwrap();
}

#[test]
fn seeds_met_by_an_edge_before_their_turn_are_examined_once() {
    std::thread::spawn(|| {
        gc::disable();
        let _ballast = ballast(20_000);
        // A chain whose nodes are all dirty (each handle dropped after a
        // clone went into the previous node), built backwards so that the
        // first seed in list order reaches all the later ones by edges.
        let mut nodes: Vec<Gc<Node>> = (0..100).map(|_| new()).collect();
        for i in (0..99).rev() {
            set_next(&nodes[i], &nodes[i + 1]);
        }
        let ws = weaks(&nodes);
        let head = nodes[0].clone();
        // The tail points back at the head: one garbage cycle once the
        // head is dropped.
        set_next(&nodes[99], &head);
        nodes.clear();
        assert_eq!(gc::collect(), 0);
        assert!(all_alive(&ws));
        drop(head);
        assert_eq!(gc::collect(), 100);
        assert!(all_dead(&ws));
    })
    .join()
    .unwrap();
}

#[test]
fn a_chain_walked_after_pending_garbage_is_kept() {
    std::thread::spawn(|| {
        gc::disable();
        let _ballast = ballast(20_000);
        // First in list order, a garbage ring (one reference per node, so
        // the walks that leave it pending still settle phase 2)...
        let garbage = weaks(&ring(20));
        // ...then a live chain linked from newer to older nodes and held
        // at its newest: one step settles only the node next to the held
        // one; the rest need a walk of the chain, after the pending ones.
        let nodes: Vec<Gc<Node>> = (0..10).map(|_| new()).collect();
        for k in 0..9 {
            set_next(&nodes[k + 1], &nodes[k]);
        }
        let held = nodes[9].clone();
        let live = weaks(&nodes);
        drop(nodes);
        assert_eq!(gc::collect(), 20);
        assert!(all_dead(&garbage));
        assert!(all_alive(&live));
        drop(held);
        assert_eq!(gc::collect(), 0);
        assert!(all_dead(&live));
    })
    .join()
    .unwrap();
}

#[test]
fn dirty_frozen_objects_below_the_range_are_no_seeds() {
    std::thread::spawn(|| {
        gc::disable();
        // 100 frozen nodes (the permanent generation: list slots below
        // the full collection's range, which then starts mid-word), made
        // dirty after the freeze: their slot bits are set, but they are
        // outside the range.
        let frozen: Vec<Gc<Node>> = (0..100).map(|_| new()).collect();
        gc::freeze();
        for f in &frozen {
            drop(f.clone());
        }
        let _ballast = ballast(1000);
        let garbage = weaks(&ring(7));
        let kept = ring(3);
        let live = weaks(&kept);
        assert_eq!(gc::collect(), 7);
        assert!(all_dead(&garbage));
        assert!(all_alive(&live));
        drop(kept);
        assert_eq!(gc::collect(), 3);
        assert!(all_dead(&live));
        gc::unfreeze();
        drop(frozen);
        assert_eq!(gc::collect(), 0);
    })
    .join()
    .unwrap();
}
