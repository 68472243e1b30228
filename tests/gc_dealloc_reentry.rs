//! A global allocator that creates `Gc`s inside its own `dealloc` (a
//! profiler recording frees into a graph) re-enters whatever collector
//! code is freeing a buffer: the list's growth, the dirty bits' growth,
//! the teardown at thread exit. The nested `Gc::new` must find the
//! collector's fields consistent: the new buffer installed before the old
//! one is freed, no room counted in a list being freed. (Review findings;
//! before the fix the growth case was a double free of the old list
//! buffer and the teardown case a push through a null buffer.)

use pymem::{gc, Gc, Trace};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

struct OnFree;

thread_local! {
    /// Frees of at least this many bytes run the hook (0: off).
    static HOOK_MIN: Cell<usize> = const { Cell::new(0) };
    /// How many more times the hook runs.
    static SHOTS: Cell<usize> = const { Cell::new(0) };
    static FIRED: Cell<usize> = const { Cell::new(0) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

#[derive(Trace)]
struct Node {
    next: RefCell<Option<Gc<Node>>>,
}

fn node() -> Gc<Node> {
    Gc::new(Node {
        next: RefCell::new(None),
    })
}

// SAFETY: every request is forwarded to `System` unchanged; the hook only
// touches thread-locals (with `try_with`, so also during thread exit) and
// creates a `Gc`, which allocates through this allocator's `alloc`.
unsafe impl GlobalAlloc for OnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let min = HOOK_MIN.try_with(Cell::get).unwrap_or(0);
        if min != 0
            && layout.size() >= min
            && SHOTS.try_with(Cell::get).unwrap_or(0) > 0
            && !IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true)
        {
            SHOTS.with(|s| s.set(s.get() - 1));
            FIRED.with(|f| f.set(f.get() + 1));
            // Kept alive (leaked) on purpose: the profiler's record.
            std::mem::forget(node());
            IN_HOOK.with(|h| h.set(false));
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: OnFree = OnFree;

fn arm(min: usize, shots: usize) {
    HOOK_MIN.with(|m| m.set(min));
    SHOTS.with(|s| s.set(shots));
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
        arm(2048, 3);
        keep.push(node());
        arm(0, 0);
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
        arm(1, usize::MAX);
    })
    .join()
    .unwrap();
}
