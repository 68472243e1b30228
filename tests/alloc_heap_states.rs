//! `heap_map()` tells each heap's state (owned by a working thread, owned
//! by an idle one, parked by an exited one), and `alloc_stats()` tells how
//! much empty memory is retained and how much has gone back to the OS.

#[path = "common/alloc_shapes.rs"]
mod alloc_shapes;
#[path = "common/rng.rs"]
mod rng;

use std::sync::mpsc::channel;
use std::time::Duration;

use pymem::{alloc_stats, heap_map, release_free_memory, HeapState, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// The tests look at process-wide figures: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// In a child process of its own: a thread the test harness starts
/// meanwhile (for another test) would adopt the parked heap.
#[test]
fn heap_map_tells_owned_idle_and_parked_heaps() {
    alloc_shapes::run_child_test("child_heap_states", &[]);
}

#[test]
fn child_heap_states() {
    if !alloc_shapes::is_child("child_heap_states") {
        return;
    }
    // A thread that allocates, then blocks: its heap goes idle.
    let (wake_tx, wake_rx) = channel::<()>();
    let (ready_tx, ready_rx) = channel::<()>();
    let idle = std::thread::spawn(move || {
        let keep: Vec<Box<u64>> = (0..100).map(Box::new).collect();
        ready_tx.send(()).unwrap();
        wake_rx.recv().unwrap();
        drop(keep);
    });
    ready_rx.recv().unwrap();
    // A thread that exits (after the idle one took a heap): its heap is
    // parked.
    std::thread::spawn(|| {
        let v: Vec<u64> = (0..1_000).collect();
        assert_eq!(v.len(), 1_000);
    })
    .join()
    .unwrap();
    let _first_look = heap_map();
    std::thread::sleep(Duration::from_millis(300));
    let map = heap_map();
    assert!(map.heaps[0].current_thread);
    assert_eq!(map.heaps[0].state, HeapState::Owned);
    let states: Vec<HeapState> = map.heaps.iter().map(|h| h.state).collect();
    assert!(
        states.contains(&HeapState::Idle),
        "no idle heap among {states:?}"
    );
    assert!(
        states.contains(&HeapState::Parked),
        "no parked heap among {states:?}"
    );
    assert_eq!(
        map.heaps.iter().filter(|h| h.current_thread).count(),
        1,
        "one heap is the calling thread's"
    );
    wake_tx.send(()).unwrap();
    idle.join().unwrap();
}

#[test]
fn stats_count_retained_and_returned_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    release_free_memory();
    let before = alloc_stats();
    assert_eq!(before.bytes_retained_empty, 0, "a release retains nothing");
    assert_eq!(before.arenas_retired, 0);
    // 16 MB freed at once by a live thread: its emptied arenas are retired.
    let boxes: Vec<Box<[u8; 64]>> = (0..250_000).map(|_| Box::new([7; 64])).collect();
    drop(boxes);
    let retained = alloc_stats();
    assert!(
        retained.arenas_retired >= 4,
        "{} arenas retired after freeing 16 MB",
        retained.arenas_retired
    );
    assert_eq!(
        retained.bytes_retained_empty,
        retained.arenas_retired << 20,
        "retained bytes are whole arenas"
    );
    let released = release_free_memory();
    let after = alloc_stats();
    assert_eq!(after.bytes_retained_empty, 0);
    assert!(released >= retained.bytes_retained_empty);
    assert!(
        after.bytes_returned >= before.bytes_returned + released,
        "bytes returned so far: {} before, {} after releasing {released}",
        before.bytes_returned,
        after.bytes_returned
    );
    let table = after.to_string();
    assert!(table.contains("# bytes returned to the OS"), "{table}");
    assert!(table.contains("# arenas retired (empty, kept)"), "{table}");
}
