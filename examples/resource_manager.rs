//! A `ResourceManager` owns its resources; each resource points back at
//! its manager.
//!
//! 1. With a `Weak` back-pointer, dropping the manager frees everything at
//!    once by reference counting, with no collection (as with `Rc`).
//! 2. With a strong back-pointer, every resource and the manager form a
//!    cycle: `Rc` leaks all of it; `Gc` reclaims it with `gc::collect()`.
//!
//! Run with `cargo run --release --example resource_manager`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pymem::{gc, Gc, Trace, Weak};

thread_local! {
    static DROPPED: Cell<usize> = const { Cell::new(0) };
}

fn dropped() -> usize {
    DROPPED.with(Cell::get)
}

fn note_drop() {
    DROPPED.with(|d| d.set(d.get() + 1));
}

const RESOURCES: usize = 10_000;

// ---- 1. Gc with a Weak back-pointer ---------------------------------------

#[derive(Trace)]
struct Manager {
    name: String,
    resources: RefCell<Vec<Gc<Resource>>>,
}

#[derive(Trace)]
struct Resource {
    id: usize,
    manager: Weak<Manager>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        note_drop();
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        note_drop();
    }
}

fn weak_back_pointers() {
    let manager = Gc::new(Manager {
        name: "weak".into(),
        resources: RefCell::new(Vec::new()),
    });
    for id in 0..RESOURCES {
        let r = Gc::new(Resource {
            id,
            manager: Gc::downgrade(&manager),
        });
        manager.resources.borrow_mut().push(r);
    }
    let last = manager.resources.borrow()[RESOURCES - 1].clone();
    let owner = last.manager.upgrade().expect("manager alive");
    println!(
        "[Gc + Weak] manager {:?} holds {} resources; resource {} points back at it",
        owner.name,
        owner.resources.borrow().len(),
        last.id
    );
    drop((owner, last));

    let before = dropped();
    let collections = gc::get_stats()[2].collections;
    drop(manager);
    println!(
        "[Gc + Weak] dropping the manager dropped {} objects at once, no collection ran ({} full collections before and after)",
        dropped() - before,
        collections
    );
    assert_eq!(dropped() - before, RESOURCES + 1);
    assert_eq!(gc::get_stats()[2].collections, collections);
}

// ---- 2a. Rc with a strong back-pointer: a leak ----------------------------

struct RcManager {
    resources: RefCell<Vec<Rc<RcResource>>>,
}

struct RcResource {
    _manager: Rc<RcManager>,
}

impl Drop for RcManager {
    fn drop(&mut self) {
        note_drop();
    }
}

impl Drop for RcResource {
    fn drop(&mut self) {
        note_drop();
    }
}

fn rc_strong_back_pointers() {
    let manager = Rc::new(RcManager {
        resources: RefCell::new(Vec::new()),
    });
    for _ in 0..RESOURCES {
        let r = Rc::new(RcResource {
            _manager: manager.clone(),
        });
        manager.resources.borrow_mut().push(r);
    }
    let probe = Rc::downgrade(&manager);
    let before = dropped();
    drop(manager);
    println!(
        "[Rc, strong back-pointers] after dropping the manager: {} objects dropped, manager strong_count still {} (leaked: {} objects)",
        dropped() - before,
        probe.strong_count(),
        RESOURCES + 1
    );
    assert_eq!(dropped(), before);
    assert_eq!(probe.strong_count(), RESOURCES);
}

// ---- 2b. Gc with a strong back-pointer: collected --------------------------

#[derive(Trace)]
struct GcManager {
    resources: RefCell<Vec<Gc<GcResource>>>,
}

#[derive(Trace)]
struct GcResource {
    manager: Gc<GcManager>,
}

impl Drop for GcManager {
    fn drop(&mut self) {
        note_drop();
    }
}

impl Drop for GcResource {
    fn drop(&mut self) {
        note_drop();
    }
}

fn gc_strong_back_pointers() {
    gc::disable(); // show the explicit collection, not an automatic one
    let manager = Gc::new(GcManager {
        resources: RefCell::new(Vec::new()),
    });
    for _ in 0..RESOURCES {
        let r = Gc::new(GcResource {
            manager: manager.clone(),
        });
        manager.resources.borrow_mut().push(r);
    }
    let probe = Gc::downgrade(&manager);
    let before = dropped();
    drop(manager);
    println!(
        "[Gc, strong back-pointers] after dropping the manager: {} objects dropped, strong_count {}, {} objects tracked",
        dropped() - before,
        probe.strong_count(),
        gc::tracked_count()
    );
    let t = std::time::Instant::now();
    let found = gc::collect();
    let elapsed = t.elapsed();
    println!(
        "[Gc, strong back-pointers] gc::collect() found {found} unreachable objects in {elapsed:?}; {} dropped; weak upgrade: {:?}; tracked now {}",
        dropped() - before,
        probe.upgrade().map(|_| "alive"),
        gc::tracked_count()
    );
    assert_eq!(found, RESOURCES + 1);
    assert_eq!(dropped() - before, RESOURCES + 1);
    assert!(probe.upgrade().is_none());
    gc::enable();
}

fn main() {
    weak_back_pointers();
    rc_strong_back_pointers();
    gc_strong_back_pointers();
    println!("gc::get_stats() = {:?}", gc::get_stats());
}
