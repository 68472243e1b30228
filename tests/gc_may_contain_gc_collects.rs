//! `Trace::may_contain_gc` is user code, and the handle's `drop` asks it.
//! An impl that keeps every rule of `Trace` (its answer is a constant) may
//! still run a collection there (a type keeping statistics and collecting
//! now and then). Before the fix `drop` asked after releasing its count,
//! so that collection found the object unreachable and freed it, and
//! `drop` went on with a stale word: a double free (debug: "free(): double
//! free detected"; ASan: heap-use-after-free in `Gc::drop`). (Review
//! finding.)

use pymem::{gc, Gc, Trace, Tracer};
use std::cell::{Cell, RefCell};

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static DROPS: Cell<u32> = const { Cell::new(0) };
}

struct Collecting {
    next: RefCell<Option<Gc<Collecting>>>,
    payload: Vec<u64>,
}

// SAFETY: rules 1-5 hold: `trace` visits the one owned Gc once and only
// reads; `may_contain_gc` is the constant `true`, and its side effect (a
// collection, run only outside any collection) is not one rule 5 forbids.
unsafe impl Trace for Collecting {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer)
    }
    fn may_contain_gc() -> bool {
        if ARMED.with(|a| a.replace(false)) {
            gc::collect_generation(0);
        }
        true
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
        assert_eq!(
            self.payload,
            [1, 2, 3, 4],
            "a value read after it was freed"
        );
    }
}

fn node() -> Gc<Collecting> {
    Gc::new(Collecting {
        next: RefCell::new(None),
        payload: vec![1, 2, 3, 4],
    })
}

/// Two fresh objects, after a collection that leaves nothing young and
/// with the drop count at zero.
fn two_fresh_nodes() -> (Gc<Collecting>, Gc<Collecting>) {
    gc::collect();
    DROPS.with(|d| d.set(0));
    (node(), node())
}

/// Drops `handle` with `may_contain_gc`'s collection armed, and checks
/// that it ran.
fn drop_collecting(handle: Gc<Collecting>) {
    ARMED.with(|x| x.set(true));
    drop(handle);
    assert!(!ARMED.with(Cell::get), "may_contain_gc ran its collection");
}

#[test]
fn a_collection_in_may_contain_gc_when_the_last_handle_drops() {
    let (a, b) = two_fresh_nodes();
    // Another young object decremented to a non-zero count, so that the
    // young collection is not skipped.
    drop(b.clone());
    drop_collecting(a);
    drop(b);
    assert_eq!(DROPS.with(Cell::get), 2, "each value dropped exactly once");
}

#[test]
fn a_collection_in_may_contain_gc_when_a_cycles_outside_handle_drops() {
    let (a, b) = two_fresh_nodes();
    *a.next.borrow_mut() = Some(b.clone());
    *b.next.borrow_mut() = Some(a.clone());
    drop(b);
    // The cycle's last outside handle: the collection that
    // `may_contain_gc` runs may find the cycle only once the count is
    // released, after the handle is done with the object.
    drop_collecting(a);
    assert_eq!(gc::collect(), 2, "the cycle is garbage, found once");
    assert_eq!(DROPS.with(Cell::get), 2, "each value dropped exactly once");
}
