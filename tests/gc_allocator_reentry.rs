//! A global allocator that creates `Gc`s inside its own `alloc` or
//! `dealloc` (a profiler recording allocations into a graph) re-enters
//! whatever collector code is allocating or freeing a buffer: the list's
//! growth, the dirty bits' growth, the put-back of resurrected objects, the
//! teardown at thread exit. The nested `Gc::new` must find the collector's
//! fields consistent. (Review findings, each test failing before its fix:
//! buffers freed with a stale, smaller layout; a header recording a list
//! slot the hook's objects had taken; a double free of the old list buffer;
//! a push through a null buffer at teardown.)
//!
//! One allocator serves every test (a test binary has one global
//! allocator); its hooks are armed per thread, so the tests stay apart.

use pymem::gc::Finalize;
use pymem::{gc, Gc, Trace};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Remembers the size of every allocation of at least `WATCH` bytes (the
/// collector's list buffers among them) and counts frees whose layout
/// differs from it; runs the `alloc` hook (`HOOK_ON`) and the `dealloc`
/// hook (`HOOK_MIN`, `SHOTS`) when armed on the calling thread.
struct Hooking;

const WATCH: usize = 2048;
const SLOTS: usize = 1 << 14;
static ADDR: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SIZE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static MISMATCHES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations of at least `WATCH` bytes create four kept objects.
    static HOOK_ON: Cell<bool> = const { Cell::new(false) };
    /// Frees of at least this many bytes create a leaked object (0: off).
    static HOOK_MIN: Cell<usize> = const { Cell::new(0) };
    /// How many more times the `dealloc` hook runs.
    static SHOTS: Cell<usize> = const { Cell::new(0) };
    /// How many times the `dealloc` hook ran.
    static FIRED: Cell<usize> = const { Cell::new(0) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static KEPT: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
    static RESURRECTED: RefCell<Vec<Gc<Fin>>> = const { RefCell::new(Vec::new()) };
}

fn slot_of(p: *mut u8) -> usize {
    ((p as usize >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) % SLOTS
}

/// Enters the hook unless the thread is already in it (or is exiting and
/// its thread-locals are gone).
fn enter_hook() -> bool {
    !IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true)
}

fn leave_hook() {
    IN_HOOK.with(|h| h.set(false));
}

// SAFETY: every request is forwarded to `System` unchanged; the hooks only
// touch thread-locals (with `try_with`, so also during thread exit) and
// create `Gc`s, which allocate through this allocator again (the
// `IN_HOOK` flag stops the recursion); the bookkeeping only reads and
// writes statics.
unsafe impl GlobalAlloc for Hooking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= WATCH && HOOK_ON.try_with(Cell::get).unwrap_or(false) && enter_hook() {
            for _ in 0..4 {
                let n = node();
                KEPT.with(|k| k.borrow_mut().push(n));
            }
            leave_hook();
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
        let min = HOOK_MIN.try_with(Cell::get).unwrap_or(0);
        if min != 0
            && layout.size() >= min
            && SHOTS.try_with(Cell::get).unwrap_or(0) > 0
            && enter_hook()
        {
            SHOTS.with(|s| s.set(s.get() - 1));
            FIRED.with(|f| f.set(f.get() + 1));
            // Kept alive (leaked) on purpose: the profiler's record.
            std::mem::forget(node());
            leave_hook();
        }
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
static GLOBAL: Hooking = Hooking;

#[derive(Trace)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
}

fn node() -> Gc<Node> {
    Gc::new(Node {
        next: RefCell::new(None),
    })
}

fn arm_dealloc(min: usize, shots: usize) {
    HOOK_MIN.with(|m| m.set(min));
    SHOTS.with(|s| s.set(shots));
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

#[test]
fn gc_created_while_the_list_growth_frees_the_old_buffer() {
    gc::disable();
    gc::collect();
    let mut keep = Vec::with_capacity(1 << 12);
    // Through several growths of the list (and of the dirty bits), each
    // old buffer's free creating tracked objects.
    for round in 0..4 {
        let target = 256 << round;
        while gc::tracked_count() < target {
            keep.push(node());
        }
        arm_dealloc(2048, 3);
        keep.push(node());
        arm_dealloc(0, 0);
    }
    assert!(FIRED.with(Cell::get) >= 4, "the hook ran in each growth");
    // Every list entry is read: a stale or lost entry shows here (and in
    // debug builds the collector's own list check runs).
    gc::enable();
    assert_eq!(gc::collect(), 0);
    let tracked = gc::tracked_count();
    assert!(
        tracked >= keep.len() + 4,
        "{tracked} tracked, {} kept",
        keep.len()
    );
    drop(keep);
    // A cycle is still collected exactly after all that.
    let a = node();
    let b = node();
    *a.next.borrow_mut() = Some(b.clone());
    *b.next.borrow_mut() = Some(a.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
}

#[test]
fn gc_created_while_the_teardown_frees_the_list() {
    std::thread::spawn(|| {
        let keep: Vec<Gc<Node>> = (0..10).map(|_| node()).collect();
        gc::collect();
        drop(keep);
        // Every free at thread exit may create a tracked object, the
        // collector's list buffer among them.
        arm_dealloc(1, usize::MAX);
    })
    .join()
    .unwrap();
}
