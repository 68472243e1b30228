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

/// The tests measure the process's bytes in use: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_collection_run_by_the_teardown_keeps_no_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

/// A weak callback on an object that never dies (leaked on purpose) is
/// dropped unrun by the teardown, with what it owns: the callback table,
/// which has no destructor of its own, is emptied there.
#[test]
fn callbacks_of_objects_that_never_die_are_dropped_at_thread_exit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    fn one() {
        std::thread::spawn(|| {
            let a = Gc::new(vec![Gc::new(1u8)]);
            let owned = vec![7u8; 1000];
            pymem::gc::finalize(&a, move || drop(owned));
            std::mem::forget(a);
        })
        .join()
        .unwrap();
    }
    one();
    let before = LIVE.load(Ordering::SeqCst);
    const N: usize = 50;
    for _ in 0..N {
        one();
    }
    let per_thread = (LIVE.load(Ordering::SeqCst) - before) / N as isize;
    // The leaked objects stay (a few dozen bytes each); the callbacks'
    // 1,000-byte vectors do not.
    assert!(
        per_thread < 500,
        "{per_thread} bytes still allocated per exited thread"
    );
}
