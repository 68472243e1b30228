//! The collector's teardown runs after every thread-local destructor. A
//! collection first run there (nothing dirty at the thread-local phase's
//! exit collections, so they were skipped) must not keep its work arrays
//! in a thread-local touched for the first time then, whose destructor
//! would never run: a leak per exited thread (review finding: 328 bytes
//! per thread before the fix).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use pymem::{Gc, Trace};

/// Counts the bytes in use.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every request to `System` unchanged; counts with
// atomics only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::SeqCst);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::SeqCst);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Trace)]
struct Node {
    #[trace(skip)]
    drops: &'static AtomicUsize,
    me: RefCell<Option<Gc<Node>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static CACHE: RefCell<Vec<Gc<Node>>> = const { RefCell::new(Vec::new()) };
}

fn one_thread(drops: &'static AtomicUsize) {
    std::thread::spawn(move || {
        CACHE.with(|c| {
            // A self-cycle made with no decrement: nothing is dirty when
            // the collector's thread-local destructor runs its exit
            // collections, so they are skipped.
            let a = Gc::new(Node {
                drops,
                me: RefCell::new(None),
            });
            *a.me.borrow_mut() = Some(a.clone());
            c.borrow_mut().push(a);
        });
    })
    .join()
    .unwrap();
}

#[test]
fn a_collection_run_by_the_teardown_keeps_no_memory() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    // Warm up: std's one-time allocations.
    one_thread(&DROPS);
    let before = LIVE.load(Ordering::SeqCst);
    const N: usize = 100;
    for _ in 0..N {
        one_thread(&DROPS);
    }
    let after = LIVE.load(Ordering::SeqCst);
    assert_eq!(
        DROPS.load(Ordering::SeqCst),
        N + 1,
        "the cycles were collected"
    );
    let per_thread = (after - before) / N as isize;
    assert!(
        per_thread < 16,
        "{per_thread} bytes still allocated per exited thread"
    );
}
