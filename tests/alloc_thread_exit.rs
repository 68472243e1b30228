//! Every thread's heap is parked when the thread exits, whatever the order
//! of its teardown (issue 12 item 5): glibc runs `thread_local!`
//! destructors before `pthread_key` destructors, so a thread whose *first*
//! allocation happens in a `pthread_key` destructor (C libraries do this)
//! used to register a heap whose exit hook never ran: 1,000 such threads
//! left 1,000 heaps and 1,000 arenas. Tested with raw `pthread_create`
//! threads, one at a time and 50 at once, and with a Rust thread whose first
//! allocation is in a `thread_local!` destructor.

use std::sync::atomic::{AtomicUsize, Ordering};

use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// `pthread_key_t + 1` of the test's key.
static KEY: AtomicUsize = AtomicUsize::new(0);
static DESTRUCTOR_RUNS: AtomicUsize = AtomicUsize::new(0);
/// The tests count heaps: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The key's destructor: the thread's first allocation through PyMalloc.
extern "C" fn allocate_at_exit(_value: *mut libc::c_void) {
    let v: Vec<u64> = (0..64).collect();
    let s = format!("{}", v.iter().sum::<u64>());
    assert_eq!(s, "2016");
    let boxes: Vec<Box<[u8; 200]>> = (0..20).map(|_| Box::new([1; 200])).collect();
    std::hint::black_box(&boxes);
    DESTRUCTOR_RUNS.fetch_add(1, Ordering::Relaxed);
}

/// A raw thread that allocates nothing itself: it only sets the key.
extern "C" fn thread_body(_arg: *mut libc::c_void) -> *mut libc::c_void {
    let key = (KEY.load(Ordering::Relaxed) - 1) as libc::pthread_key_t;
    // SAFETY: a key the test created; any non-null value arms its
    // destructor.
    unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
    std::ptr::null_mut()
}

fn key() {
    if KEY.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out-parameter and a destructor of the right type.
    assert_eq!(
        unsafe { libc::pthread_key_create(&mut key, Some(allocate_at_exit)) },
        0
    );
    KEY.store(key as usize + 1, Ordering::Relaxed);
}

/// Runs `total` raw threads, `at_once` at a time.
fn raw_threads(total: usize, at_once: usize) {
    key();
    let mut done = 0;
    while done < total {
        let n = at_once.min(total - done);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let mut id: libc::pthread_t = 0;
            // SAFETY: a valid out-parameter, default attributes, and a body
            // of the right type that ignores its argument.
            let rc = unsafe {
                libc::pthread_create(&mut id, std::ptr::null(), thread_body, std::ptr::null_mut())
            };
            assert_eq!(rc, 0, "pthread_create failed");
            ids.push(id);
        }
        for id in ids {
            // SAFETY: a thread we created and have not joined.
            assert_eq!(unsafe { libc::pthread_join(id, std::ptr::null_mut()) }, 0);
        }
        done += n;
    }
}

/// At most 50 heaps more after `threads` threads came and went (at most 50
/// ran at once): the heaps of exited threads were parked and adopted.
fn assert_heaps_reused(before: &pymem::AllocStats, after: &pymem::AllocStats, threads: usize) {
    assert!(
        after.heaps <= before.heaps + 50,
        "{} heaps after {threads} threads ({} before): exited threads' heaps were not parked",
        after.heaps,
        before.heaps
    );
}

#[test]
fn threads_first_allocating_in_a_key_destructor_park_their_heaps() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    release_free_memory();
    let before = alloc_stats();
    let runs = DESTRUCTOR_RUNS.load(Ordering::Relaxed);
    raw_threads(500, 1);
    raw_threads(500, 50);
    assert_eq!(
        DESTRUCTOR_RUNS.load(Ordering::Relaxed) - runs,
        1_000,
        "every destructor ran"
    );
    release_free_memory();
    let after = alloc_stats();
    assert_heaps_reused(&before, &after, 1_000);
    // The test harness's own threads come and go meanwhile: a little slack.
    let (owned_before, owned_after) = (
        before.heaps - before.heaps_parked,
        after.heaps - after.heaps_parked,
    );
    assert!(
        owned_after <= owned_before + 2,
        "{owned_after} heaps owned after the threads exited, {owned_before} before"
    );
    assert!(
        after.arenas_in_use <= before.arenas_in_use + 2,
        "{} arenas mapped after 1,000 threads ({} before)",
        after.arenas_in_use,
        before.arenas_in_use
    );
}

struct AllocatesOnDrop;

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        let s: String = (0..50).map(|i| char::from(b'a' + i % 26)).collect();
        assert_eq!(s.len(), 50);
    }
}

thread_local! {
    static LATE: AllocatesOnDrop = const { AllocatesOnDrop };
}

#[test]
fn threads_allocating_in_thread_local_destructors_park_their_heaps() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = alloc_stats();
    for _ in 0..200 {
        std::thread::spawn(|| LATE.with(|_| {})).join().unwrap();
    }
    assert_heaps_reused(&before, &alloc_stats(), 200);
}
