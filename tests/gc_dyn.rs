//! `Gc<dyn Trait>` for `trait Trait: Trace`: a scene graph of trait
//! objects with parent back-links and cycles through them, collected
//! exactly (every value dropped once); `Box<dyn Trait>` fields traced
//! through the vtable; tracking decided by the concrete type; downcasting
//! through `dyn AnyTrace`; `Drop` impls of cycle members asking
//! `Gc::try_deref`. Runs on the system allocator.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pymem::gc::AnyTrace;
use pymem::{coerce_gc, gc, Gc, Trace, Weak};

thread_local! {
    /// Drops per node name.
    static DROPS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

fn note_drop(name: &str) {
    DROPS.with(|d| *d.borrow_mut().entry(name.to_string()).or_default() += 1);
}

/// The drop count of every name seen, and the total.
fn drops() -> (usize, u32) {
    DROPS.with(|d| {
        let d = d.borrow();
        assert!(d.values().all(|&n| n == 1), "a value dropped twice: {d:?}");
        (d.len(), d.values().sum())
    })
}

fn reset() {
    gc::disable();
    gc::collect();
    DROPS.with(|d| d.borrow_mut().clear());
}

/// A drawable node of the scene graph; `AnyTrace` (a `Trace` supertrait
/// with `Any`) gives `Gc<dyn Shape>` downcasting.
trait Shape: AnyTrace {
    fn name(&self) -> String;
    fn area(&self) -> f64;
    /// Sets the parent link (groups keep it; leaves have none).
    fn set_parent(&self, _parent: &Gc<dyn Shape>) {}
}

/// A leaf that holds no `Gc`: untracked even behind `dyn Shape`.
#[derive(Trace)]
struct Circle {
    name: String,
    r: f64,
}

impl Drop for Circle {
    fn drop(&mut self) {
        note_drop(&self.name);
    }
}

impl Shape for Circle {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn area(&self) -> f64 {
        3.0 * self.r * self.r
    }
}

/// A leaf that knows its parent (a strong back-link: a cycle).
#[derive(Trace)]
struct Label {
    name: String,
    parent: RefCell<Option<Gc<dyn Shape>>>,
}

impl Drop for Label {
    fn drop(&mut self) {
        note_drop(&self.name);
    }
}

impl Shape for Label {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn area(&self) -> f64 {
        0.0
    }
    fn set_parent(&self, parent: &Gc<dyn Shape>) {
        *self.parent.borrow_mut() = Some(parent.clone());
    }
}

/// An interior node: children as trait objects, a strong parent link
/// (read without `take`, through a `Cell`), and an owned decoration.
#[derive(Trace)]
struct Group {
    name: String,
    children: RefCell<Vec<Gc<dyn Shape>>>,
    parent: Cell<Option<Gc<dyn Shape>>>,
    decoration: Box<dyn Shape>,
}

impl Drop for Group {
    fn drop(&mut self) {
        note_drop(&self.name);
    }
}

impl Shape for Group {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn area(&self) -> f64 {
        self.children.borrow().iter().map(|c| c.area()).sum::<f64>() + self.decoration.area()
    }
    fn set_parent(&self, parent: &Gc<dyn Shape>) {
        self.parent.set(Some(parent.clone()));
    }
}

fn circle(name: &str, r: f64) -> Gc<dyn Shape> {
    Gc::from_box(Box::new(Circle {
        name: name.into(),
        r,
    }))
}

fn group(name: &str) -> Gc<dyn Shape> {
    Gc::from_box(Box::new(Group {
        name: name.into(),
        children: RefCell::new(Vec::new()),
        parent: Cell::new(None),
        decoration: Box::new(Circle {
            name: format!("{name}.decoration"),
            r: 0.0,
        }),
    }))
}

/// Adds `child` under `parent` (which must be a `Group`).
fn add(parent: &Gc<dyn Shape>, child: Gc<dyn Shape>) {
    child.set_parent(parent);
    Gc::downcast_ref::<Group>(parent)
        .expect("a group")
        .children
        .borrow_mut()
        .push(child);
}

#[test]
fn scene_graph_with_back_links_is_collected_exactly() {
    reset();
    let t0 = gc::tracked_count();
    let root = group("root");
    let left = group("left");
    // Made sized, then seen as a trait object: the same allocation.
    let right: Gc<dyn Shape> = coerce_gc!(Gc::new(Group {
        name: "right".into(),
        children: RefCell::new(Vec::new()),
        parent: Cell::new(None),
        decoration: Box::new(Circle {
            name: "right.decoration".into(),
            r: 0.0,
        }),
    }) => dyn Shape);
    add(&root, left.clone());
    add(&root, right.clone());
    for i in 0..3 {
        add(&left, circle(&format!("left.c{i}"), 1.0));
        add(
            &right,
            Gc::from_box(Box::new(Label {
                name: format!("right.l{i}"),
                parent: RefCell::new(None),
            })),
        );
    }
    // A cross link: right's children include left (left has two parents).
    add(&right, left.clone());
    assert_eq!(
        root.area(),
        3.0 * 3.0 * 2.0,
        "left counted twice (two parents)"
    );
    // 3 groups + 3 labels are tracked; circles (and decorations) are not.
    assert_eq!(gc::tracked_count(), t0 + 6);
    assert!(!gc::is_tracked(&circle("probe", 1.0)));
    assert!(gc::is_tracked(&root));
    let weak_root: Weak<dyn Shape> = Gc::downgrade(&root);
    drop((root, left, right));
    let (n, _) = drops();
    assert_eq!(n, 1, "only the probe circle so far");
    assert!(weak_root.upgrade().is_some(), "cycles keep the scene alive");
    // groups <-> children, labels -> right: all one garbage set.
    assert_eq!(gc::collect(), 6);
    assert!(weak_root.upgrade().is_none());
    // 3 groups, 3 decorations, 3 circles, 3 labels, the probe: each once.
    assert_eq!(drops(), (13, 13));
    assert_eq!(gc::tracked_count(), t0);
    gc::enable();
}

/// A trait object that owns, through a `Box<dyn Shape>` field, the only
/// path back to its own handle.
#[derive(Trace)]
struct Frame {
    inner: Box<dyn Shape>,
}

impl Shape for Frame {
    fn name(&self) -> String {
        format!("frame({})", self.inner.name())
    }
    fn area(&self) -> f64 {
        self.inner.area()
    }
}

#[test]
fn box_dyn_fields_are_traced_through_the_vtable() {
    reset();
    // frame -> Box<dyn Shape> (a Label) -> parent: frame.
    let label = Label {
        name: "boxed-label".into(),
        parent: RefCell::new(None),
    };
    let frame: Gc<dyn Shape> = Gc::from_box(Box::new(Frame {
        inner: Box::new(label),
    }));
    assert!(gc::is_tracked(&frame));
    Gc::downcast_ref::<Frame>(&frame)
        .unwrap()
        .inner
        .set_parent(&frame);
    assert_eq!(frame.name(), "frame(boxed-label)");
    let w = Gc::downgrade(&frame);
    drop(frame);
    assert!(w.upgrade().is_some());
    assert_eq!(
        gc::collect(),
        1,
        "one object: the label lives inside the frame's box"
    );
    assert_eq!(drops(), (1, 1));
    gc::enable();
}

#[test]
fn tracking_follows_the_concrete_type() {
    gc::disable();
    let t0 = gc::tracked_count();
    let plain = circle("plain", 2.0);
    let linked: Gc<dyn Shape> = Gc::from_box(Box::new(Label {
        name: "linked".into(),
        parent: RefCell::new(None),
    }));
    assert!(!gc::is_tracked(&plain));
    assert!(gc::is_tracked(&linked));
    assert_eq!(gc::tracked_count(), t0 + 1);
    assert_eq!(plain.area(), 12.0);
    // The same answer whether made sized and coerced, or boxed.
    let c: Gc<dyn Shape> = coerce_gc!(Gc::new(Circle { name: "c".into(), r: 1.0 }) => dyn Shape);
    assert!(!gc::is_tracked(&c));
    drop((plain, linked, c));
    assert_eq!(gc::tracked_count(), t0);
    gc::enable();
}

#[test]
fn dyn_any_trace_downcasts() {
    let objs: Vec<Gc<dyn AnyTrace>> = vec![
        coerce_gc!(Gc::new(7u32) => dyn AnyTrace),
        Gc::from_box(Box::new(String::from("seven"))),
        Gc::from_box(Box::new(Circle {
            name: "any-circle".into(),
            r: 1.0,
        })),
    ];
    assert_eq!(Gc::downcast_ref::<u32>(&objs[0]), Some(&7));
    assert_eq!(Gc::downcast_ref::<u64>(&objs[0]), None);
    assert_eq!(Gc::downcast_ref::<String>(&objs[1]).unwrap(), "seven");
    let c = objs[2].clone();
    let c = c.downcast::<String>().unwrap_err();
    let circle: Gc<Circle> = c.downcast::<Circle>().ok().unwrap();
    assert_eq!(circle.r, 1.0);
    assert_eq!(Gc::strong_count(&circle), 2, "the same allocation");
    drop(objs);
    drop(circle);
    assert_eq!(
        DROPS.with(|d| d.borrow().get("any-circle").copied()),
        Some(1)
    );
}

/// A cycle member whose `Drop` reads its partner if it is still there.
#[derive(Trace)]
struct Peer {
    name: &'static str,
    partner: RefCell<Option<Gc<dyn Greets>>>,
    #[trace(skip)]
    log: Rc<RefCell<Vec<String>>>,
}

trait Greets: AnyTrace {
    fn greeting(&self) -> String;
}

impl Greets for Peer {
    fn greeting(&self) -> String {
        format!("hello from {}", self.name)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let seen = match self.partner.borrow().as_ref().map(Gc::try_deref) {
            Some(Some(p)) => p.greeting(),
            Some(None) => "partner already dropped".to_string(),
            None => "no partner".to_string(),
        };
        self.log.borrow_mut().push(format!("{}: {seen}", self.name));
    }
}

#[test]
fn drop_of_a_cycle_member_can_ask_for_its_partner() {
    reset();
    let log = Rc::new(RefCell::new(Vec::new()));
    let a: Gc<dyn Greets> = Gc::from_box(Box::new(Peer {
        name: "a",
        partner: RefCell::new(None),
        log: log.clone(),
    }));
    let b: Gc<dyn Greets> = Gc::from_box(Box::new(Peer {
        name: "b",
        partner: RefCell::new(Some(a.clone())),
        log: log.clone(),
    }));
    *Gc::downcast_ref::<Peer>(&a).unwrap().partner.borrow_mut() = Some(b.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    let log = log.borrow();
    assert_eq!(log.len(), 2);
    assert!(log[0].ends_with("hello from b") || log[0].ends_with("hello from a"));
    assert!(log[1].ends_with("partner already dropped"), "{log:?}");
    gc::enable();
}

#[test]
fn weak_handles_to_trait_objects() {
    gc::disable();
    let s = circle("weakly", 1.0);
    let w = Gc::downgrade(&s);
    assert_eq!(w.upgrade().map(|s| s.name()), Some("weakly".into()));
    assert_eq!((w.strong_count(), w.weak_count()), (1, 1));
    drop(s);
    assert!(w.upgrade().is_none());
    // Tracked, dead by collection, memory freed after the last Weak.
    let l: Gc<dyn Shape> = Gc::from_box(Box::new(Label {
        name: "weak-label".into(),
        parent: RefCell::new(None),
    }));
    l.set_parent(&l);
    let w = Gc::downgrade(&l);
    drop(l);
    gc::collect();
    assert!(w.upgrade().is_none());
    assert_eq!(w.strong_count(), 0);
    gc::enable();
}

#[test]
fn zero_sized_trait_objects() {
    #[derive(Trace)]
    struct Nothing;
    impl Shape for Nothing {
        fn name(&self) -> String {
            "nothing".into()
        }
        fn area(&self) -> f64 {
            0.0
        }
    }
    let n: Gc<dyn Shape> = Gc::from_box(Box::new(Nothing));
    assert_eq!(n.name(), "nothing");
    assert!(!gc::is_tracked(&n));
    let m = n.clone();
    drop(n);
    assert_eq!(m.area(), 0.0);
}
