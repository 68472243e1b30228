//! A scene graph of trait objects, `Gc<dyn Shape>`, the way UI trees and
//! plugin graphs are built: groups own their children, every child keeps a
//! strong link back to its parent, and a few nodes are shared between
//! groups. Every parent link closes a cycle through two trait objects, so
//! with `Rc` the whole scene would leak; here dropping the root and
//! collecting reclaims it, and the example counts the drops.
//!
//! Shapes that can hold no `Gc` (a `Circle`) are untracked even behind
//! `dyn Shape`: the allocation is laid out as its concrete type's.
//!
//! Run with `cargo run --release --example scene_graph`.

use std::cell::{Cell, RefCell};

use pymem::gc::{self, AnyTrace};
use pymem::{Gc, Trace, Weak};

thread_local! {
    static DROPPED: Cell<usize> = const { Cell::new(0) };
}

/// A node of the scene. `AnyTrace` (a `Trace` that is also `Any`) lets a
/// `Gc<dyn Shape>` be downcast to its concrete type.
trait Shape: AnyTrace {
    fn area(&self) -> f64;
    fn describe(&self, depth: usize) -> String;
    /// Called when the node is added to a group.
    fn attach(&self, _parent: &Gc<dyn Shape>) {}
}

#[derive(Trace)]
struct Circle {
    r: f64,
}

#[derive(Trace)]
struct Text {
    text: String,
    parent: RefCell<Option<Gc<dyn Shape>>>,
}

#[derive(Trace)]
struct Group {
    name: String,
    children: RefCell<Vec<Gc<dyn Shape>>>,
    parent: RefCell<Option<Gc<dyn Shape>>>,
    /// Who looks at this group: not an owner, so a `Weak` (an `Option`:
    /// as for `rc::Weak`, `Weak::new()` exists for sized types only).
    observer: RefCell<Option<Weak<dyn Shape>>>,
}

impl Shape for Circle {
    fn area(&self) -> f64 {
        std::f64::consts::PI * self.r * self.r
    }
    fn describe(&self, depth: usize) -> String {
        format!("{:depth$}circle r={}\n", "", self.r)
    }
}

impl Shape for Text {
    fn area(&self) -> f64 {
        0.0
    }
    fn describe(&self, depth: usize) -> String {
        format!("{:depth$}text {:?}\n", "", self.text)
    }
    fn attach(&self, parent: &Gc<dyn Shape>) {
        *self.parent.borrow_mut() = Some(parent.clone());
    }
}

impl Shape for Group {
    fn area(&self) -> f64 {
        self.children.borrow().iter().map(|c| c.area()).sum()
    }
    fn describe(&self, depth: usize) -> String {
        let mut s = format!("{:depth$}group {}\n", "", self.name);
        for c in self.children.borrow().iter() {
            s += &c.describe(depth + 2);
        }
        s
    }
    fn attach(&self, parent: &Gc<dyn Shape>) {
        *self.parent.borrow_mut() = Some(parent.clone());
    }
}

macro_rules! counted_drop {
    ($($t:ty),*) => {$(
        impl Drop for $t {
            fn drop(&mut self) {
                DROPPED.with(|d| d.set(d.get() + 1));
            }
        }
    )*};
}
counted_drop!(Circle, Text, Group);

fn group(name: &str) -> Gc<dyn Shape> {
    Gc::from_box(Box::new(Group {
        name: name.into(),
        children: RefCell::default(),
        parent: RefCell::default(),
        observer: RefCell::default(),
    }))
}

/// Adds `child` to the group `parent`.
fn add(parent: &Gc<dyn Shape>, child: Gc<dyn Shape>) {
    child.attach(parent);
    let g = Gc::downcast_ref::<Group>(parent).expect("only groups have children");
    g.children.borrow_mut().push(child);
}

fn main() {
    gc::disable(); // collect by hand, to show what each step does
    let root = group("root");
    let mut made = 1;
    for g in 0..3 {
        let sub = group(&format!("panel{g}"));
        made += 1;
        for i in 0..4 {
            add(
                &sub,
                Gc::from_box(Box::new(Circle {
                    r: f64::from(i + 1),
                })),
            );
            add(
                &sub,
                Gc::from_box(Box::new(Text {
                    text: format!("label {g}.{i}"),
                    parent: RefCell::default(),
                })),
            );
            made += 2;
        }
        add(&root, sub);
    }
    // A panel shared by two groups (two parents: the second wins the
    // back-link, both own it).
    let shared = group("shared");
    made += 1;
    add(&shared, Gc::from_box(Box::new(Circle { r: 10.0 })));
    made += 1;
    let first = root_child(&root, 0);
    add(&first, shared.clone());
    add(&root, shared.clone());
    *Gc::downcast_ref::<Group>(&shared)
        .unwrap()
        .observer
        .borrow_mut() = Some(Gc::downgrade(&root));

    println!("{}", root.describe(0));
    println!("area {:.1}, {} objects made", root.area(), made);
    println!(
        "tracked by the collector: {} (groups and texts; circles hold no Gc)",
        gc::tracked_count()
    );

    let watch = Gc::downgrade(&root);
    drop((root, first, shared));
    println!(
        "after dropping the root: {} dropped (every node has a strong link to its parent: cycles)",
        DROPPED.with(Cell::get)
    );
    assert!(watch.upgrade().is_some());
    let found = gc::collect();
    println!(
        "gc::collect() found {found} unreachable objects; {} values dropped in all",
        DROPPED.with(Cell::get)
    );
    assert!(watch.upgrade().is_none());
    assert_eq!(DROPPED.with(Cell::get), made);
    assert_eq!(gc::tracked_count(), 0);
}

fn root_child(root: &Gc<dyn Shape>, i: usize) -> Gc<dyn Shape> {
    Gc::downcast_ref::<Group>(root).unwrap().children.borrow()[i].clone()
}
