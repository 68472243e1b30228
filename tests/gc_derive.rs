//! `#[derive(Trace)]`: structs (named, tuple, unit), enums, generics,
//! recursive types, `#[trace(skip)]`; the derived impl decides tracking at
//! compile time and visits every field, which is checked by making a cycle
//! through each kind of field and collecting it. Runs on the system
//! allocator.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Weak};

thread_local! {
    static DROPS: Cell<usize> = const { Cell::new(0) };
}

fn drops() -> usize {
    DROPS.with(Cell::get)
}

/// A drop counter usable as a skipped (non-Trace) field.
struct Counter;
impl Drop for Counter {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
    }
}

// ---- untracked shapes ------------------------------------------------------

#[derive(Trace)]
struct Unit;

#[derive(Trace)]
struct TupleAtoms(u8, String, Vec<u8>);

#[derive(Trace)]
struct NamedAtoms {
    a: u64,
    b: Option<u32>,
    c: (u32, String),
    d: RefCell<Vec<String>>,
    e: [u16; 4],
    f: Cell<u32>,
    g: HashMap<String, Vec<u8>>,
}

#[derive(Trace)]
enum AtomEnum {
    A,
    B(u32),
    C { s: String },
}

#[derive(Trace)]
struct WithSkipped {
    id: u32,
    #[trace(skip)]
    _perm: Rc<u32>, // not Trace
}

#[derive(Trace)]
struct Pair<A, B> {
    a: A,
    b: B,
}

#[test]
fn structs_of_atoms_are_untracked() {
    gc::disable();
    let t0 = gc::tracked_count();
    let c0 = gc::get_count();
    let unit = Gc::new(Unit);
    let t = Gc::new(TupleAtoms(1, "x".into(), vec![2]));
    let n = Gc::new(NamedAtoms {
        a: 1,
        b: Some(2),
        c: (3, "c".into()),
        d: RefCell::new(vec!["d".into()]),
        e: [5; 4],
        f: Cell::new(6),
        g: HashMap::new(),
    });
    let e = Gc::new(AtomEnum::C { s: "s".into() });
    let s = Gc::new(WithSkipped {
        id: 9,
        _perm: Rc::new(1),
    });
    let p = Gc::new(Pair {
        a: 1u32,
        b: String::new(),
    });
    for tracked in [
        gc::is_tracked(&unit),
        gc::is_tracked(&t),
        gc::is_tracked(&n),
        gc::is_tracked(&e),
        gc::is_tracked(&s),
        gc::is_tracked(&p),
    ] {
        assert!(!tracked);
    }
    assert!(!gc::is_tracked(&Gc::new(AtomEnum::A)));
    assert!(!gc::is_tracked(&Gc::new(AtomEnum::B(1))));
    assert_eq!(gc::tracked_count(), t0);
    assert_eq!(gc::get_count(), c0);
    assert_eq!(t.0 as u64 + n.a + u64::from(s.id) + u64::from(p.a), 12);
    assert_eq!(t.1.len() + t.2.len() + n.c.1.len() + n.d.borrow().len(), 4);
    assert_eq!(n.e[3] as u32 + n.f.get() + n.b.unwrap() + n.c.0, 16);
    assert!(n.g.is_empty() && p.b.is_empty());
    assert!(matches!(&*e, AtomEnum::C { s } if s == "s"));
    // A constant of the type (folded at compile time).
    assert!(!<NamedAtoms as Trace>::may_contain_gc());
}

// ---- tracked shapes, and cycles through every kind of field -------------------

#[derive(Trace)]
struct Named {
    name: String,
    next: RefCell<Option<Gc<Named>>>,
    _c: Counter2,
}

/// Counter with a (trivial) Trace impl so that it can be a traced field.
#[derive(Trace)]
struct Counter2 {
    #[trace(skip)]
    _c: Counter,
}

fn c2() -> Counter2 {
    Counter2 { _c: Counter }
}

#[derive(Trace)]
struct Tuple(u32, RefCell<Vec<Gc<Tuple>>>, Counter2);

#[derive(Trace)]
enum Shape {
    Empty,
    One(RefCell<Option<Gc<Shape>>>, Counter2),
    Many {
        kids: RefCell<VecDeque<Gc<Shape>>>,
        by_name: RefCell<BTreeMap<String, Gc<Shape>>>,
        c: Counter2,
    },
}

#[derive(Trace)]
struct Generic<T> {
    value: T,
    c: Counter2,
}

#[derive(Trace)]
enum Tree<T: Trace + 'static> {
    Leaf(T),
    Node {
        kids: RefCell<Vec<Gc<Tree<T>>>>,
        parent: RefCell<Weak<Tree<T>>>,
        #[trace(skip)]
        tag: std::fs::Permissions,
    },
}

/// A recursive type without a Gc in the recursion (Box<Self>).
#[derive(Trace)]
enum Expr {
    Num(i64),
    Add(Box<Expr>, Box<Expr>),
    Ref(Gc<RefCell<Option<Expr>>>),
}

#[derive(Trace)]
struct Containers {
    boxed: Box<RefCell<Option<Gc<Containers>>>>,
    map: RefCell<HashMap<u32, Gc<Containers>>>,
    set: RefCell<HashSet<u32>>,
    arr: [RefCell<Option<Gc<Containers>>>; 2],
    tup: (u8, RefCell<Option<Gc<Containers>>>),
    res: RefCell<Result<Gc<Containers>, String>>,
    c: Counter2,
}

fn setup() -> usize {
    gc::disable();
    gc::collect();
    drops()
}

#[test]
fn named_struct_cycle() {
    let d0 = setup();
    let a = Gc::new(Named {
        name: "a".into(),
        next: RefCell::new(None),
        _c: c2(),
    });
    let b = Gc::new(Named {
        name: "b".into(),
        next: RefCell::new(Some(a.clone())),
        _c: c2(),
    });
    *a.next.borrow_mut() = Some(b.clone());
    assert!(gc::is_tracked(&a));
    assert_eq!(a.next.borrow().as_ref().unwrap().name, "b");
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(drops() - d0, 2);
}

#[test]
fn tuple_struct_cycle() {
    let d0 = setup();
    let a = Gc::new(Tuple(1, RefCell::new(vec![]), c2()));
    a.1.borrow_mut().push(a.clone());
    a.1.borrow_mut().push(a.clone());
    assert_eq!(Gc::strong_count(&a), 3);
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops() - d0, 1);
}

#[test]
fn enum_cycles_through_every_variant() {
    let d0 = setup();
    let one = Gc::new(Shape::One(RefCell::new(None), c2()));
    let many = Gc::new(Shape::Many {
        kids: RefCell::new(VecDeque::new()),
        by_name: RefCell::new(BTreeMap::new()),
        c: c2(),
    });
    let many2 = Gc::new(Shape::Many {
        kids: RefCell::new(VecDeque::new()),
        by_name: RefCell::new(BTreeMap::new()),
        c: c2(),
    });
    let empty = Gc::new(Shape::Empty);
    assert!(gc::is_tracked(&empty), "the enum may hold a Gc");
    // one -> many (tuple variant), many -> many2 (VecDeque), many2 -> one (BTreeMap).
    if let Shape::One(next, _) = &*one {
        *next.borrow_mut() = Some(many.clone());
    }
    if let Shape::Many { kids, .. } = &*many {
        kids.borrow_mut().push_back(many2.clone());
        kids.borrow_mut().push_front(empty.clone());
    }
    if let Shape::Many { by_name, .. } = &*many2 {
        by_name.borrow_mut().insert("one".into(), one.clone());
    }
    drop((one, many, many2, empty));
    assert_eq!(gc::collect(), 4);
    assert_eq!(drops() - d0, 3);
}

#[test]
fn generic_struct_tracking_follows_the_parameter() {
    let d0 = setup();
    let atom = Gc::new(Generic {
        value: 5u32,
        c: c2(),
    });
    assert!(!gc::is_tracked(&atom));
    assert_eq!(atom.value, 5);
    let g = Gc::new(Generic {
        value: RefCell::new(Vec::<Gc<Generic<u8>>>::new()),
        c: c2(),
    });
    assert!(gc::is_tracked(&g));
    let p = Gc::new(Pair {
        a: 1u8,
        b: RefCell::new(None::<Gc<u8>>),
    });
    assert!(gc::is_tracked(&p));
    *p.b.borrow_mut() = Some(Gc::new(3));
    assert_eq!(**p.b.borrow().as_ref().unwrap(), 3);
    drop((atom, g, p));
    assert_eq!(drops() - d0, 2);

    // A cycle through a generic field.
    type Cyc = Generic<RefCell<Option<Gc<Named>>>>;
    let n = Gc::new(Named {
        name: "n".into(),
        next: RefCell::new(None),
        _c: c2(),
    });
    let holder: Gc<Cyc> = Gc::new(Generic {
        value: RefCell::new(Some(n.clone())),
        c: c2(),
    });
    *n.next.borrow_mut() = Some(n.clone());
    drop(n);
    assert_eq!(gc::collect(), 0, "held by a live generic holder");
    drop(holder);
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops() - d0, 4);
}

#[test]
fn tree_with_weak_parent_links_is_acyclic() {
    let _ = setup();
    let perm = std::fs::metadata("Cargo.toml").unwrap().permissions();
    let root = Gc::new(Tree::Node {
        kids: RefCell::new(vec![]),
        parent: RefCell::new(Weak::new()),
        tag: perm.clone(),
    });
    let t0 = gc::tracked_count();
    for i in 0..10 {
        let kid = Gc::new(Tree::Node {
            kids: RefCell::new(vec![Gc::new(Tree::Leaf(i))]),
            parent: RefCell::new(Gc::downgrade(&root)),
            tag: perm.clone(),
        });
        if let Tree::Node { kids, .. } = &*root {
            kids.borrow_mut().push(kid);
        }
    }
    assert_eq!(gc::tracked_count(), t0 + 20);
    if let Tree::Node { kids, tag, .. } = &*root {
        assert_eq!(tag.readonly(), perm.readonly());
        assert_eq!(kids.borrow().len(), 10);
    }
    assert!(gc::is_tracked(&Gc::new(Tree::Leaf(0u8))));
    let w = Gc::downgrade(&root);
    drop(root);
    assert!(w.upgrade().is_none(), "Weak parents are not strong edges");
    assert_eq!(gc::tracked_count(), t0 - 1);
    assert_eq!(gc::collect(), 0);
}

#[test]
fn recursive_box_type_without_gc_cycle() {
    let _ = setup();
    let cell = Gc::new(RefCell::new(None));
    let e = Expr::Add(
        Box::new(Expr::Num(1)),
        Box::new(Expr::Add(
            Box::new(Expr::Num(2)),
            Box::new(Expr::Ref(cell.clone())),
        )),
    );
    assert!(<Expr as Trace>::may_contain_gc());
    // The cell refers to an expression that refers back to the cell.
    *cell.borrow_mut() = Some(e);
    assert!(gc::is_tracked(&cell));
    let w = Gc::downgrade(&cell);
    drop(cell);
    assert!(w.upgrade().is_some());
    assert_eq!(gc::collect(), 1, "the cycle goes through Box<Expr> twice");
    assert!(w.upgrade().is_none());
}

fn containers() -> Gc<Containers> {
    Gc::new(Containers {
        boxed: Box::new(RefCell::new(None)),
        map: RefCell::new(HashMap::new()),
        set: RefCell::new(HashSet::new()),
        arr: [RefCell::new(None), RefCell::new(None)],
        tup: (0, RefCell::new(None)),
        res: RefCell::new(Err(String::new())),
        c: c2(),
    })
}

#[test]
fn cycles_through_std_containers() {
    // One self-cycle through each field kind: a field the derive or the
    // std impl failed to visit would leave its cycle uncollected.
    let d0 = setup();
    let mut weaks = Vec::new();
    for kind in 0..6 {
        let x = containers();
        let y = x.clone();
        match kind {
            0 => *x.boxed.borrow_mut() = Some(y),
            1 => {
                x.map.borrow_mut().insert(7, y);
            }
            2 => *x.arr[1].borrow_mut() = Some(y),
            3 => *x.tup.1.borrow_mut() = Some(y),
            4 => *x.res.borrow_mut() = Ok(y),
            _ => *x.arr[0].borrow_mut() = Some(y),
        }
        x.set.borrow_mut().insert(kind);
        weaks.push(Gc::downgrade(&x));
    }
    assert_eq!(gc::collect(), 6);
    assert_eq!(drops() - d0, 6);
    assert!(weaks.iter().all(|w| w.upgrade().is_none()));
}

#[test]
fn edges_are_visited_once_each() {
    // An object referenced twice from one value and once from outside
    // stays alive (an edge visited twice would make it look unreachable).
    let d0 = setup();
    let target = containers();
    let holder = containers();
    *holder.boxed.borrow_mut() = Some(target.clone());
    *holder.arr[0].borrow_mut() = Some(target.clone());
    holder.map.borrow_mut().insert(1, target.clone());
    *target.tup.1.borrow_mut() = Some(holder.clone()); // cycle, held from outside
    drop(holder);
    assert_eq!(gc::collect(), 0);
    assert_eq!(drops(), d0);
    assert!(target
        .tup
        .1
        .borrow()
        .as_ref()
        .unwrap()
        .map
        .borrow()
        .contains_key(&1));
    drop(target);
    assert_eq!(gc::collect(), 2);
}

#[test]
fn skipped_gc_field_is_not_traced() {
    // `#[trace(skip)]` really skips: a cycle through a skipped field looks
    // referenced from outside and is kept (a documented leak).
    #[derive(Trace)]
    struct Half {
        traced: RefCell<Option<Gc<Half>>>,
        #[trace(skip)]
        hidden: RefCell<Option<Gc<Half>>>,
    }
    let _ = setup();
    let a = Gc::new(Half {
        traced: RefCell::new(None),
        hidden: RefCell::new(None),
    });
    assert!(gc::is_tracked(&a));
    *a.hidden.borrow_mut() = Some(a.clone());
    let w = Gc::downgrade(&a);
    drop(a);
    assert_eq!(gc::collect(), 0);
    let a = w.upgrade().expect("kept");
    // Move the edge to the traced field: now collectable.
    let e = a.hidden.borrow_mut().take();
    *a.traced.borrow_mut() = e;
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert!(w.upgrade().is_none());
}

// ---- recursive and mutually recursive types (issue 12, item 2) --------------

mod ast {
    //! The interpreter AST of the issue: `Expr` and `Stmt` contain each
    //! other through `Vec` and `Box` without a `Gc` between them, and a
    //! closure's environment is a `Gc`.
    use super::*;

    #[derive(Trace)]
    pub enum Expr {
        Num(i64),
        Block(Vec<Stmt>),
        Closure(RefCell<Option<Gc<Env>>>),
    }

    #[derive(Trace)]
    pub enum Stmt {
        Expr(Box<Expr>),
        Let(String, Expr),
    }

    #[derive(Trace)]
    pub struct Env {
        pub vars: RefCell<HashMap<String, Expr>>,
        pub parent: Option<Gc<Env>>,
        pub _c: Counter2,
    }
}

#[test]
fn interpreter_ast_compiles_is_tracked_and_collects() {
    use ast::{Env, Expr, Stmt};
    let d0 = setup();
    assert!(Expr::may_contain_gc() && Stmt::may_contain_gc() && Env::may_contain_gc());
    let global = Gc::new(Env {
        vars: RefCell::new(HashMap::new()),
        parent: None,
        _c: c2(),
    });
    let local = Gc::new(Env {
        vars: RefCell::new(HashMap::new()),
        parent: Some(global.clone()),
        _c: c2(),
    });
    // global.f = { let x = closure(local) }: local -> global -> local.
    let body = Expr::Block(vec![
        Stmt::Let("x".into(), Expr::Closure(RefCell::new(Some(local.clone())))),
        Stmt::Expr(Box::new(Expr::Num(1))),
    ]);
    global.vars.borrow_mut().insert("f".into(), body);
    assert!(gc::is_tracked(&global));
    drop((global, local));
    assert_eq!(gc::collect(), 2);
    assert_eq!(drops() - d0, 2);
}

/// Recursion shapes: through `Vec`, `Box`, `Option<Box<_>>`, `HashMap`, a
/// generic wrapper, and three types in a ring; with a `Gc` somewhere
/// (tracked, and a cycle through it is collected) and without (any answer
/// is safe; the point is that it compiles).
#[allow(dead_code)]
mod shapes {
    use super::*;

    #[derive(Trace)]
    pub struct Wrap<T> {
        pub inner: T,
    }

    #[derive(Trace)]
    pub enum ViaVec {
        Leaf(u8),
        Kids(Vec<ViaVecB>),
    }
    #[derive(Trace)]
    pub struct ViaVecB {
        pub back: Vec<ViaVec>,
        pub gc: RefCell<Option<Gc<ViaVec>>>,
    }

    #[derive(Trace)]
    pub struct ViaOptBox {
        pub next: Option<Box<ViaOptBoxB>>,
    }
    #[derive(Trace)]
    pub struct ViaOptBoxB {
        pub back: Option<Box<ViaOptBox>>,
        pub gc: RefCell<Option<Gc<ViaOptBox>>>,
    }

    #[derive(Trace)]
    pub struct ViaMap {
        pub map: HashMap<u32, ViaMapB>,
    }
    #[derive(Trace)]
    pub struct ViaMapB {
        pub back: RefCell<HashMap<String, ViaMap>>,
        pub gc: RefCell<Option<Gc<ViaMap>>>,
    }

    #[derive(Trace)]
    pub struct ViaWrap {
        pub w: Wrap<Vec<Wrap<ViaWrapB>>>,
    }
    #[derive(Trace)]
    pub struct ViaWrapB {
        pub back: Wrap<Box<ViaWrap>>,
        pub gc: RefCell<Option<Gc<ViaWrap>>>,
    }

    // Three types in a ring, no Gc anywhere.
    #[derive(Trace)]
    pub struct RingA(pub Vec<RingB>);
    #[derive(Trace)]
    pub struct RingB(pub Option<Box<RingC>>);
    #[derive(Trace)]
    pub struct RingC(pub HashMap<u8, RingA>);

    // Three types in a ring, the Gc at the third.
    #[derive(Trace)]
    pub struct GRingA(pub RefCell<Vec<GRingB>>);
    #[derive(Trace)]
    pub struct GRingB(pub Option<Box<GRingC>>);
    #[derive(Trace)]
    pub struct GRingC(pub Option<Gc<GRingA>>, pub Counter2);
}

#[test]
fn mutually_recursive_types_compile_and_are_tracked_when_they_can_hold_a_gc() {
    use shapes::*;
    assert!(ViaVec::may_contain_gc() && ViaVecB::may_contain_gc());
    assert!(ViaOptBox::may_contain_gc() && ViaOptBoxB::may_contain_gc());
    assert!(ViaMap::may_contain_gc() && ViaMapB::may_contain_gc());
    assert!(ViaWrap::may_contain_gc() && ViaWrapB::may_contain_gc());
    assert!(GRingA::may_contain_gc() && GRingB::may_contain_gc() && GRingC::may_contain_gc());
    // No Gc in the ring: compiles; the answer only has to be safe.
    let _ = (
        RingA::may_contain_gc(),
        RingB::may_contain_gc(),
        RingC::may_contain_gc(),
    );

    // A cycle through the three-type ring: a -> Vec<B> -> Box<C> -> a.
    let d0 = setup();
    let a = Gc::new(GRingA(RefCell::new(Vec::new())));
    a.0.borrow_mut()
        .push(GRingB(Some(Box::new(GRingC(Some(a.clone()), c2())))));
    assert!(gc::is_tracked(&a));
    drop(a);
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops() - d0, 1);

    // And through a HashMap of the mutual pair.
    let m = Gc::new(ViaMap {
        map: HashMap::new(),
    });
    let inner = ViaMapB {
        back: RefCell::new(HashMap::new()),
        gc: RefCell::new(Some(m.clone())),
    };
    let holder = Gc::new(RefCell::new(vec![inner]));
    let w = Gc::downgrade(&m);
    drop(m);
    assert_eq!(gc::collect(), 0, "held by `holder`");
    drop(holder);
    assert_eq!(gc::collect(), 0, "acyclic: freed by refcounting");
    assert!(w.upgrade().is_none());
}

/// The generic self-reference: `Node<T>` holds a `Node<Gc<Cyc>>`,
/// a different type, which owns a `Gc`.
#[derive(Trace)]
struct GNode<T: Trace + 'static> {
    val: T,
    inner: Option<Box<GNode<Gc<Cyc>>>>,
}

#[derive(Trace)]
struct Cyc {
    next: RefCell<Option<Gc<GNode<u32>>>>,
    _c: Counter2,
}

/// A plain recursive list: the least fixed point makes it untracked.
#[derive(Trace)]
struct List<T: Trace + 'static> {
    val: T,
    next: Option<Box<List<T>>>,
    more: Vec<Self>,
}

#[test]
fn generic_self_reference_is_judged_by_its_arguments() {
    // Node<u32> owns (through `inner`) a Gc<Cyc>: tracked.
    assert!(<GNode<u32>>::may_contain_gc());
    let d0 = setup();
    let cyc = Gc::new(Cyc {
        next: RefCell::new(None),
        _c: c2(),
    });
    let n = Gc::new(GNode {
        val: 1u32,
        inner: Some(Box::new(GNode {
            val: cyc.clone(),
            inner: None,
        })),
    });
    assert!(gc::is_tracked(&n));
    *cyc.next.borrow_mut() = Some(n.clone()); // n -> Node<Gc<Cyc>> -> cyc -> n
    drop((n, cyc));
    assert_eq!(gc::collect(), 2, "the cycle through Node<u32> is collected");
    assert_eq!(drops() - d0, 1);

    // Self with the same arguments adds nothing: exact answers.
    assert!(!<List<u32>>::may_contain_gc());
    assert!(<List<Gc<u8>>>::may_contain_gc());
    let l = Gc::new(List {
        val: 1u8,
        next: Some(Box::new(List {
            val: 2,
            next: None,
            more: vec![],
        })),
        more: vec![],
    });
    assert!(!gc::is_tracked(&l));
}

/// A user wrapper around `Self` is not assumed to be std's: it is asked.
#[derive(Trace)]
struct Wrapper<T: Trace + 'static> {
    _t: Option<Box<T>>,
    extra: RefCell<Option<Gc<u8>>>,
}

#[derive(Trace)]
struct UsesWrapper {
    w: Option<Box<Wrapper<UsesWrapper>>>,
}

#[test]
fn a_user_wrapper_of_self_is_asked() {
    assert!(UsesWrapper::may_contain_gc(), "Wrapper holds a Gc");
}

/// `Cell<Option<Gc<Self>>>`: traced through the cell, without taking it.
#[derive(Trace)]
struct CellLinked {
    next: Cell<Option<Gc<CellLinked>>>,
    prev: Cell<Option<Gc<Self>>>,
    _c: Counter2,
}

#[test]
fn cell_of_option_gc_self_derives_and_collects() {
    let d0 = setup();
    let a = Gc::new(CellLinked {
        next: Cell::new(None),
        prev: Cell::new(None),
        _c: c2(),
    });
    let b = Gc::new(CellLinked {
        next: Cell::new(Some(a.clone())),
        prev: Cell::new(None),
        _c: c2(),
    });
    a.prev.set(Some(b.clone()));
    assert!(gc::is_tracked(&a));
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(drops() - d0, 2);
}
