//! `Gc::get_mut` and the collector (issue 12, item 1): while the `&mut T`
//! that `get_mut` returned may be alive, no collection reads the value
//! (an aliasing violation, and a use-after-free when the value is
//! mid-update); the object is treated as referenced from outside, and
//! nothing is leaked once the `&mut` has ended.

use std::cell::{Cell, RefCell};

use pymem::{gc, Gc, Trace, Tracer};

/// A tracked object an `Item`'s `Drop` allocates.
type Bag = RefCell<Vec<Gc<Item>>>;

thread_local! {
    /// The test is between taking a `&mut` through `get_mut` and its end.
    static MUTATING: Cell<bool> = const { Cell::new(false) };
    /// Times a `Holder` was traced while `MUTATING` was set.
    static TRACED_WHILE_MUT: Cell<usize> = const { Cell::new(0) };
    static DROPS: Cell<usize> = const { Cell::new(0) };
    /// What the `Drop` of an `Item` allocates.
    static KEEP: RefCell<Vec<Gc<Bag>>> = const { RefCell::new(Vec::new()) };
}

/// Holds `Gc`s in a plain `Vec` (no `RefCell`): mutated only through
/// `Gc::get_mut`.
struct Holder {
    items: Vec<Gc<Item>>,
}

// SAFETY: visits every `Gc` a `Holder` owns, once; the counter only
// observes.
unsafe impl Trace for Holder {
    fn trace(&self, tracer: &mut Tracer) {
        if MUTATING.with(Cell::get) {
            TRACED_WHILE_MUT.with(|c| c.set(c.get() + 1));
        }
        self.items.trace(tracer);
    }
}

/// An element whose `Drop` allocates enough tracked objects to start an
/// automatic collection (with threshold 0 at 1).
#[derive(Trace)]
struct Item {
    id: u32,
    alloc_on_drop: bool,
    next: RefCell<Option<Gc<Item>>>,
}

impl Drop for Item {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
        if self.alloc_on_drop {
            for _ in 0..8 {
                // Kept: allocations minus deallocations pass threshold 0.
                let g = Gc::new(Bag::default());
                // 2 -> 1: the skip rule cannot skip the collection.
                drop(std::hint::black_box(g.clone()));
                KEEP.with(|k| k.borrow_mut().push(g));
            }
        }
    }
}

fn item(id: u32, alloc_on_drop: bool) -> Gc<Item> {
    Gc::new(Item {
        id,
        alloc_on_drop,
        next: RefCell::new(None),
    })
}

fn reset() {
    gc::collect();
    TRACED_WHILE_MUT.with(|c| c.set(0));
    KEEP.with(|k| k.borrow_mut().clear());
    DROPS.with(|d| d.set(0));
}

#[test]
fn collection_never_traces_a_value_borrowed_through_get_mut() {
    reset();
    let mut h = Gc::new(Holder {
        items: vec![item(1, false), item(2, false)],
    });
    // A seed of the full collection below (a decrement to non-zero), so
    // that it would trace `h` if the flag did not stop it.
    drop(h.clone());
    let m = Gc::get_mut(&mut h).expect("unique");
    MUTATING.with(|f| f.set(true));
    m.items.push(item(3, false));
    // A count decremented to non-zero: the collection cannot be skipped.
    let other = item(9, false);
    drop(other.clone());
    // Safe code may collect while `m` is alive.
    assert_eq!(gc::collect(), 0);
    m.items.pop();
    MUTATING.with(|f| f.set(false));
    assert_eq!(
        TRACED_WHILE_MUT.with(Cell::get),
        0,
        "the collector read a value while a &mut from get_mut was alive"
    );
    assert_eq!(h.items.len(), 2);
}

/// The ASan reproducer of the issue: `Vec::dedup_by` drops a duplicate in
/// place while the `Vec`'s length still covers it, and the element's
/// `Drop` allocates `Gc`s, which starts an automatic collection.
#[test]
fn dedup_by_with_allocating_drop_is_not_traced_mid_update() {
    reset();
    gc::set_threshold(1, 10, 10);
    let mut h = Gc::new(Holder {
        items: (0..16).map(|i| item(i / 2, true)).collect(),
    });
    let m = Gc::get_mut(&mut h).expect("unique");
    MUTATING.with(|f| f.set(true));
    let before = gc::get_stats()[0].collections;
    m.items.dedup_by(|a, b| a.id == b.id);
    assert!(gc::get_stats()[0].collections > before, "no collection ran");
    MUTATING.with(|f| f.set(false));
    gc::set_threshold(700, 10, 10);
    assert_eq!(TRACED_WHILE_MUT.with(Cell::get), 0);
    assert_eq!(h.items.len(), 8);
    assert_eq!(DROPS.with(Cell::get), 8);
}

/// The other reproducer: assigning a field drops the old `Vec<Gc<_>>` in
/// place, and an element's `Drop` triggers a collection.
#[test]
fn field_assignment_dropping_old_vec_is_not_traced_mid_update() {
    reset();
    gc::set_threshold(1, 10, 10);
    let mut h = Gc::new(Holder {
        items: (0..8).map(|i| item(i, true)).collect(),
    });
    let m = Gc::get_mut(&mut h).expect("unique");
    MUTATING.with(|f| f.set(true));
    let before = gc::get_stats()[0].collections;
    m.items = vec![item(100, false)];
    assert!(gc::get_stats()[0].collections > before, "no collection ran");
    MUTATING.with(|f| f.set(false));
    gc::set_threshold(700, 10, 10);
    assert_eq!(TRACED_WHILE_MUT.with(Cell::get), 0);
    assert_eq!(DROPS.with(Cell::get), 8);
    assert_eq!(h.items[0].id, 100);
}

#[derive(Trace)]
struct TreeNode {
    parent: Option<Gc<TreeNode>>,
    children: RefCell<Vec<Gc<TreeNode>>>,
}

fn node(parent: Option<Gc<TreeNode>>) -> Gc<TreeNode> {
    Gc::new(TreeNode {
        parent,
        children: RefCell::new(Vec::new()),
    })
}

/// The common pattern: fill in a fresh node through `get_mut`, then store
/// it; once everything is dropped, the next `collect()` finds it all.
#[test]
fn get_mut_then_store_is_collected_exactly() {
    reset();
    let p = node(None);
    for _ in 0..3 {
        let mut n = node(None);
        Gc::get_mut(&mut n).expect("unique").parent = Some(p.clone());
        p.children.borrow_mut().push(n);
    }
    drop(p);
    assert_eq!(gc::collect(), 4);
    assert_eq!(gc::tracked_count(), 0);
}

/// The child is older than its parent (its list position comes first),
/// so the edge that proves its `&mut` ended is met after the child: it is
/// traced late, in the same collection.
#[test]
fn get_mut_on_an_older_object_stored_in_a_younger_one_is_collected() {
    reset();
    let mut children: Vec<Gc<TreeNode>> = (0..3).map(|_| node(None)).collect();
    let p = node(None);
    for mut n in children.drain(..) {
        Gc::get_mut(&mut n).expect("unique").parent = Some(p.clone());
        p.children.borrow_mut().push(n);
    }
    drop(p);
    assert_eq!(gc::collect(), 4);
    assert_eq!(gc::tracked_count(), 0);
}

/// A chain of objects each filled in through `get_mut` and stored in the
/// previous one, closed into a cycle: every flag is proven stale by the
/// edge to its only handle, one after the other.
#[test]
fn chain_of_get_mut_objects_in_a_cycle_is_collected() {
    reset();
    let head = node(None);
    let mut prev: Option<Gc<TreeNode>> = None;
    for _ in 0..50 {
        let mut n = node(None);
        if let Some(p) = prev.take() {
            Gc::get_mut(&mut n)
                .expect("unique")
                .children
                .get_mut()
                .push(p);
        }
        prev = Some(n);
    }
    let mut last = prev.unwrap();
    Gc::get_mut(&mut last).expect("unique").parent = Some(head.clone());
    head.children.borrow_mut().push(last);
    drop(head);
    assert_eq!(gc::collect(), 51);
    assert_eq!(gc::tracked_count(), 0);
}

/// A handle cloned after `get_mut` (so the `&mut` is over) into a cycle:
/// the object is shared, so the flag is stale and the cycle is found.
#[test]
fn get_mut_then_clone_into_cycle_is_collected() {
    reset();
    let mut a = node(None);
    Gc::get_mut(&mut a).expect("unique").parent = None;
    a.children.borrow_mut().push(a.clone());
    drop(a);
    assert_eq!(gc::collect(), 1);
}

/// While the handle itself is on the stack, the object (and what it
/// refers to) is alive: a collection keeps it whether or not the flag
/// is set, and later collects it once it is garbage.
#[test]
fn get_mut_object_on_the_stack_keeps_its_cycle_alive() {
    reset();
    let child = node(None);
    child.children.borrow_mut().push(child.clone());
    let mut h = node(None);
    Gc::get_mut(&mut h).expect("unique").parent = Some(child.clone());
    drop(child);
    assert_eq!(gc::collect(), 0);
    assert_eq!(gc::tracked_count(), 2);
    drop(h);
    assert_eq!(gc::collect(), 1);
    assert_eq!(gc::tracked_count(), 0);
}

/// A trait object over a `Holder`, mutated through `Gc::get_mut` on the
/// `Gc<dyn HasItems>` handle.
trait HasItems: Trace {
    fn items_mut(&mut self) -> &mut Vec<Gc<Item>>;
}

impl HasItems for Holder {
    fn items_mut(&mut self) -> &mut Vec<Gc<Item>> {
        &mut self.items
    }
}

/// `get_mut` through an unsized handle (`Gc<dyn Trait>`, `Gc<[T]>`) lends
/// the value out as through a sized one: the tracked allocation behind it
/// is flagged, and no collection reads it while the `&mut` is alive. Each
/// object is made a seed of the full collection first (a clone dropped:
/// a decrement to non-zero), so that the collection would trace it.
#[test]
fn get_mut_through_unsized_handles_is_not_traced() {
    reset();
    let h = Gc::new(Holder {
        items: vec![item(1, false)],
    });
    let mut d: Gc<dyn HasItems> = pymem::coerce_gc!(h => dyn HasItems);
    assert!(gc::is_tracked(&d));
    drop(d.clone());
    let m = Gc::get_mut(&mut d).expect("unique");
    MUTATING.with(|f| f.set(true));
    m.items_mut().push(item(2, false));
    assert_eq!(gc::collect(), 0);
    MUTATING.with(|f| f.set(false));

    let mut s: Gc<[Holder]> = vec![Holder {
        items: vec![item(3, false)],
    }]
    .into();
    assert!(gc::is_tracked(&s));
    drop(s.clone());
    let m = Gc::get_mut(&mut s).expect("unique");
    MUTATING.with(|f| f.set(true));
    m[0].items.push(item(4, false));
    assert_eq!(gc::collect(), 0);
    MUTATING.with(|f| f.set(false));
    assert_eq!(
        TRACED_WHILE_MUT.with(Cell::get),
        0,
        "the collector read an unsized value while a &mut from get_mut was alive"
    );
    assert_eq!(s[0].items.len(), 2);
    drop((d, s));
    assert_eq!(DROPS.with(Cell::get), 4);
}
