//! A `trace` that breaks rule 5 of `Trace` by releasing the last handle of
//! the very object being traced, or by asking for `&mut` access to it or
//! its value, while the collector holds `&self` (review finding: the
//! object was freed at once, and the rest of its derived `trace` read the
//! freed value). The rule promises memory safety for this: the object
//! leaves the list at once but its value is dropped only when the
//! collection ends, and `get_mut`/`try_unwrap` refuse it meanwhile.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pymem::{gc, Gc, Trace, Tracer};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Act {
    Idle,
    DropLast,
    GetMut,
    TryUnwrap,
    MakeMut,
}

thread_local! {
    static HOLD: RefCell<Option<Gc<Outer>>> = const { RefCell::new(None) };
    static ACT: Cell<Act> = const { Cell::new(Act::Idle) };
    static OUTER_DROPPED: Cell<bool> = const { Cell::new(false) };
    static READ_AFTER_DROP: Cell<u32> = const { Cell::new(false as u32) };
    static GRANTED: Cell<bool> = const { Cell::new(false) };
}

/// The hostile field: acts once, when armed.
struct Hostile;

// SAFETY: deliberately breaks rule 5 (it drops, unwraps and borrows `Gc`s
// from inside `trace`), which the rule says keeps memory safety.
unsafe impl Trace for Hostile {
    fn trace(&self, _: &mut Tracer) {
        match ACT.with(|a| a.replace(Act::Idle)) {
            Act::Idle => {}
            Act::DropLast => drop(HOLD.with(|h| h.borrow_mut().take())),
            Act::GetMut => HOLD.with(|h| {
                let mut h = h.borrow_mut();
                let g = h.as_mut().expect("held");
                GRANTED.with(|x| x.set(Gc::get_mut(g).is_some()));
            }),
            Act::TryUnwrap => {
                let g = HOLD.with(|h| h.borrow_mut().take()).expect("held");
                match Gc::try_unwrap(g) {
                    Ok(value) => {
                        GRANTED.with(|x| x.set(true));
                        drop(value);
                    }
                    Err(g) => HOLD.with(|h| *h.borrow_mut() = Some(g)),
                }
            }
            Act::MakeMut => HOLD.with(|h| {
                let mut h = h.borrow_mut();
                let g = h.as_mut().expect("held");
                let _ = Gc::make_mut(g);
            }),
        }
    }
}

impl Clone for Hostile {
    fn clone(&self) -> Self {
        Hostile
    }
}

/// Traced after `Hostile` (fields are traced in order): notes whether its
/// value was already dropped when read.
#[derive(Clone)]
struct Probe;

// SAFETY: reads nothing of the heap.
unsafe impl Trace for Probe {
    fn trace(&self, _: &mut Tracer) {
        if OUTER_DROPPED.with(Cell::get) {
            READ_AFTER_DROP.with(|r| r.set(r.get() + 1));
        }
    }
}

#[derive(Trace, Clone)]
struct Leaf {
    next: RefCell<Option<Gc<Leaf>>>,
}

#[derive(Trace, Clone)]
struct Outer {
    hostile: Hostile,
    probe: Probe,
    items: Vec<Gc<Leaf>>,
}

impl Drop for Outer {
    fn drop(&mut self) {
        OUTER_DROPPED.with(|d| d.set(true));
    }
}

/// Makes the held object, examined by the next collection of any
/// generation, and arms `act`.
fn arm(act: Act) {
    drop(HOLD.with(|h| h.borrow_mut().take()));
    OUTER_DROPPED.with(|d| d.set(false));
    READ_AFTER_DROP.with(|r| r.set(0));
    GRANTED.with(|g| g.set(false));
    let items = (0..4)
        .map(|_| {
            Gc::new(Leaf {
                next: RefCell::new(None),
            })
        })
        .collect();
    let x = Gc::new(Outer {
        hostile: Hostile,
        probe: Probe,
        items,
    });
    // A decrement makes it dirty: full collections start from it.
    drop(x.clone());
    HOLD.with(|h| *h.borrow_mut() = Some(x));
    ACT.with(|a| a.set(act));
}

fn collect(g: usize) {
    if g == 2 {
        gc::collect();
    } else {
        gc::collect_generation(g);
    }
    assert_eq!(
        ACT.with(Cell::get),
        Act::Idle,
        "the collection never traced the object"
    );
}

#[test]
fn trace_dropping_its_own_last_handle_reads_no_dropped_value() {
    gc::disable();
    for g in 0..3 {
        arm(Act::DropLast);
        collect(g);
        assert_eq!(
            READ_AFTER_DROP.with(Cell::get),
            0,
            "generation {g}: the rest of the trace read a dropped value"
        );
        // The drop was deferred, not lost: done by the collection's end,
        // with the leaves the value owned.
        assert!(
            OUTER_DROPPED.with(Cell::get),
            "generation {g}: never dropped"
        );
        assert_eq!(gc::tracked_count(), 0, "generation {g}");
    }
}

#[test]
fn get_mut_and_try_unwrap_refuse_inside_trace() {
    gc::disable();
    for g in 0..3 {
        arm(Act::GetMut);
        collect(g);
        assert!(
            !GRANTED.with(Cell::get),
            "generation {g}: get_mut lent &mut under the collector's &T"
        );
        // After the collection, the same handle is unique again.
        HOLD.with(|h| {
            let mut h = h.borrow_mut();
            assert!(Gc::get_mut(h.as_mut().unwrap()).is_some());
        });

        arm(Act::TryUnwrap);
        collect(g);
        assert!(
            !GRANTED.with(Cell::get),
            "generation {g}: try_unwrap moved the value out"
        );
        assert_eq!(READ_AFTER_DROP.with(Cell::get), 0, "generation {g}");
        let x = HOLD
            .with(|h| h.borrow_mut().take())
            .expect("the handle was put back");
        assert!(Gc::try_unwrap(x).is_ok());
    }
}

#[test]
fn make_mut_inside_trace_panics_and_the_collector_recovers() {
    gc::disable();
    arm(Act::MakeMut);
    let r = catch_unwind(AssertUnwindSafe(gc::collect));
    let msg = r.expect_err("make_mut inside trace must panic");
    let msg = msg
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("make_mut"), "{msg}");
    assert_eq!(READ_AFTER_DROP.with(Cell::get), 0);
    // The collector still works: drop everything and collect.
    HOLD.with(|h| h.borrow_mut().take());
    gc::collect();
    assert_eq!(gc::tracked_count(), 0);
}
