//! Unit tests of the collector's internals.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::generations::with;
use super::header::{Counts, GcHeader};
use crate::{gc, Gc, Trace, Weak};

#[derive(Trace)]
struct Node {
    id: u32,
    edges: RefCell<Vec<Gc<Node>>>,
    #[trace(skip)]
    drops: Rc<Cell<usize>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn node(id: u32, drops: &Rc<Cell<usize>>) -> Gc<Node> {
    Gc::new(Node {
        id,
        edges: RefCell::new(Vec::new()),
        drops: drops.clone(),
    })
}

#[test]
fn header_sizes() {
    assert_eq!(size_of::<Counts>(), 16);
    assert_eq!(size_of::<GcHeader>() + size_of::<Counts>(), 32);
    assert_eq!(size_of::<Gc<u8>>(), size_of::<usize>());
    assert_eq!(size_of::<Option<Gc<u8>>>(), size_of::<usize>());
    assert_eq!(super::header::Lay::<u64>::layout().size(), 24);
    assert_eq!(super::header::Lay::<Option<Gc<Node>>>::layout().size(), 40);
}

#[test]
fn tracking_decisions() {
    fn t<T: Trace>() -> bool {
        T::MAY_CONTAIN_GC
    }
    assert!(!t::<u32>());
    assert!(!t::<String>());
    assert!(!t::<Vec<u8>>());
    assert!(!t::<Option<u32>>());
    assert!(!t::<(u32, String)>());
    assert!(!t::<RefCell<Vec<String>>>());
    assert!(!t::<Weak<Node>>());
    assert!(t::<Gc<u32>>());
    assert!(t::<Node>());
    assert!(t::<Vec<Option<Gc<Node>>>>());
    #[derive(Trace)]
    struct Atomic {
        _a: u32,
        _b: String,
        _c: Vec<u8>,
    }
    assert!(!t::<Atomic>());
    #[derive(Trace)]
    enum Expr {
        _Lit(i64),
        _Add(Box<Expr>, Box<Self>),
    }
    assert!(!t::<Expr>());
    #[derive(Trace)]
    enum GExpr {
        _Lit(Gc<u8>),
        _Add(Box<GExpr>),
    }
    assert!(t::<GExpr>());
    struct Hand;
    unsafe impl Trace for Hand {
        fn trace(&self, _: &mut crate::Tracer) {}
    }
    assert!(t::<Hand>());
}

#[test]
fn simple_cycle() {
    let drops = Rc::new(Cell::new(0));
    gc::collect();
    let a = node(1, &drops);
    let b = node(2, &drops);
    a.edges.borrow_mut().push(b.clone());
    b.edges.borrow_mut().push(a.clone());
    let w = Gc::downgrade(&a);
    assert_eq!(gc::tracked_count(), 2);
    drop((a, b));
    assert_eq!(drops.get(), 0);
    assert!(w.upgrade().is_some());
    assert_eq!(gc::collect(), 2);
    assert_eq!(drops.get(), 2);
    assert!(w.upgrade().is_none());
    assert_eq!(w.strong_count(), 0);
    assert_eq!(gc::tracked_count(), 0);
}
