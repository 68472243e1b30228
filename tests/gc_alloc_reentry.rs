//! A global allocator that creates `Gc`s inside its own `alloc` (a
//! profiler recording into a graph, say) re-enters the collector's list
//! growth: the nested `Gc::new` finds the list full and grows it while the
//! outer growth waits for its buffer. The outer growth must then notice,
//! not copy from and free the nested growth's buffer with its own stale
//! (smaller) layout, which breaks `GlobalAlloc::dealloc`'s contract.
//! (Review finding; before the fix this test saw layout mismatches.)

use pymem::gc::Finalize;
use pymem::{gc, Gc, Trace};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Remembers the size of every allocation of at least `WATCH` bytes (the
/// collector's list buffers among them) and counts frees whose layout
/// differs from it.
struct Recording;

const WATCH: usize = 2048;
const SLOTS: usize = 1 << 14;
static ADDR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SIZE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static MISMATCHES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOOK_ON: Cell<bool> = const { Cell::new(false) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static KEPT: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
    static RESURRECTED: RefCell<Vec<Gc<Fin>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(p: *mut u8) -> usize {
    ((p as usize >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) % SLOTS
}

// SAFETY: every request is forwarded to `System` unchanged; the
// bookkeeping only reads and writes statics.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= WATCH
            && HOOK_ON.try_with(Cell::get).unwrap_or(false)
            && !IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true)
        {
            // The "profiler": a few tracked objects per large allocation.
            for _ in 0..4 {
                let n = node();
                KEPT.with(|k| k.borrow_mut().push(n));
            }
            IN_HOOK.with(|h| h.set(false));
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if layout.size() >= WATCH && !p.is_null() {
            let s = slot_of(p);
            ADDR[s].store(p as usize, Ordering::Relaxed);
            SIZE[s].store(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let s = slot_of(p);
        if ADDR[s].load(Ordering::Relaxed) == p as usize {
            if SIZE[s].load(Ordering::Relaxed) != layout.size() {
                MISMATCHES.fetch_add(1, Ordering::Relaxed);
            }
            ADDR[s].store(0, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

#[derive(Trace)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
}

fn node() -> Gc<Node> {
    Gc::new(Node {
        next: RefCell::new(None),
    })
}

#[test]
fn list_growth_reentered_from_the_global_allocator() {
    gc::disable();
    let mut held = Vec::with_capacity(20_000);
    HOOK_ON.with(|h| h.set(true));
    for _ in 0..10_000 {
        held.push(node());
    }
    HOOK_ON.with(|h| h.set(false));
    let kept = KEPT.with(|k| k.borrow().len());
    assert!(kept > 0, "the hook never ran: the test tests nothing");
    assert_eq!(
        MISMATCHES.load(Ordering::Relaxed),
        0,
        "a buffer was freed with a layout other than its allocation's"
    );
    // Every object is still tracked and the list is sound: a collection
    // walks it and finds nothing to free (all are held).
    assert_eq!(gc::tracked_count(), 10_000 + kept);
    assert_eq!(gc::collect(), 0);
    // Chain a cycle through some of them and drop everything: the
    // collector frees exactly the cycle.
    *held[0].next.borrow_mut() = Some(held[1].clone());
    *held[1].next.borrow_mut() = Some(held[0].clone());
    drop(held);
    KEPT.with(|k| k.borrow_mut().clear());
    assert_eq!(gc::collect(), 2);
    assert_eq!(gc::tracked_count(), 0);
}

/// Resurrects itself from its finalizer.
#[derive(Trace)]
struct Fin {
    me: RefCell<Option<Gc<Fin>>>,
}

impl Finalize for Fin {
    fn finalize(this: &Gc<Self>) {
        RESURRECTED.with(|r| r.borrow_mut().push(this.clone()));
    }
}

/// The same re-entry from the list growth of a collection that puts back
/// what finalizers resurrected (`State::retrack`): it read the index
/// before growing, so the header recorded a slot the hook's objects had
/// taken (review finding; before the fix the debug build's `assert_valid`
/// panicked "list entry ... holds another index", and a release build
/// under ASan read a freed object in the next collection).
#[test]
fn resurrected_objects_put_back_while_the_allocator_creates_gcs() {
    gc::disable();
    KEPT.with(|k| k.borrow_mut().reserve(100_000));
    RESURRECTED.with(|r| r.borrow_mut().reserve(100_000));
    // 192 live + 8,000 garbage = 8,192: the list is full when the
    // collection puts the resurrected objects back, so it grows then.
    let live: Vec<Gc<Node>> = (0..192).map(|_| node()).collect();
    for _ in 0..8000 {
        let f = Gc::new_with_finalizer(Fin {
            me: RefCell::new(None),
        });
        *f.me.borrow_mut() = Some(f.clone());
    }
    HOOK_ON.with(|h| h.set(true));
    gc::collect();
    HOOK_ON.with(|h| h.set(false));
    let resurrected = RESURRECTED.with(|r| r.borrow().len());
    assert_eq!(resurrected, 8000, "every finalizer resurrected its object");
    // The live and resurrected objects are tracked; of the hook's, those
    // made while the phases ran and the list was full are not.
    let kept = KEPT.with(|k| k.borrow().len());
    let tracked = gc::tracked_count();
    assert!(
        (192 + 8000..=192 + 8000 + kept).contains(&tracked),
        "{tracked} tracked ({kept} made by the hook)"
    );
    // Break the cycles and drop everything: each last drop takes its
    // object out of the list at the index its header records.
    RESURRECTED.with(|r| {
        for f in r.borrow().iter() {
            f.me.borrow_mut().take();
        }
        r.borrow_mut().clear();
    });
    KEPT.with(|k| k.borrow_mut().clear());
    drop(live);
    assert_eq!(gc::tracked_count(), 0);
    // A collection walks the list: a stale entry would be a freed object.
    assert_eq!(gc::collect(), 0);
    assert_eq!(gc::tracked_count(), 0);
}
