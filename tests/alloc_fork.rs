//! `fork` while other threads allocate: PyMalloc holds no lock, so the
//! child can always allocate. 200 forks while two threads churn; each child
//! allocates, checks and frees memory, then exits 0 within a deadline the
//! parent enforces (a child deadlocked in the allocator would miss it).
#![cfg(unix)]

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloc_util::wait_with_deadline;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

/// What a child does: small and large allocations, some freed in another
/// order, contents verified. Returns the exit code.
fn child_work() -> i32 {
    let mut boxes: Vec<Box<[u64; 6]>> = (0..2_000).map(|i| Box::new([i; 6])).collect();
    let strings: Vec<String> = (0..500).map(|i| format!("child string {i}")).collect();
    let big = vec![7u8; 1 << 20];
    boxes.reverse();
    let ok = boxes
        .iter()
        .rev()
        .enumerate()
        .all(|(i, b)| b[5] == i as u64)
        && strings[499] == "child string 499"
        && big.iter().all(|&b| b == 7);
    drop(boxes);
    drop(strings);
    drop(big);
    if ok {
        0
    } else {
        3
    }
}

fn churn(stop: Arc<AtomicBool>, seed: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut x = seed | 1;
        let mut slots: Vec<Vec<u8>> = (0..256).map(|_| Vec::new()).collect();
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % 256) as usize;
            slots[i] = vec![i as u8; (x >> 20) as usize % 700 + 1];
            rounds += 1;
        }
        rounds
    })
}

#[test]
// Under AddressSanitizer the children's large allocations go to the
// sanitizer's own allocator, which a fork can leave locked (seen once in
// 200 forks); PyMalloc itself takes no lock.
#[cfg_attr(pymem_asan, ignore = "the ASan runtime's allocator is not fork-safe")]
fn children_forked_during_churn_can_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let churners = [
        churn(stop.clone(), 0x1234_5678),
        churn(stop.clone(), 0x9abc_def1),
    ];
    let mut failures = Vec::new();
    for round in 0..200 {
        // Some allocation on this thread too, so its heap is busy as well.
        let keep: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        // SAFETY: the child only runs `child_work` (our allocator holds no
        // lock a vanished thread could own) and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_work();
            // SAFETY: leave the child without running the parent's atexit
            // handlers or test harness.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        match wait_with_deadline(pid, Instant::now() + Duration::from_secs(10)) {
            Some(0) => {}
            Some(code) => failures.push(format!("round {round}: child exited with {code}")),
            None => failures.push(format!("round {round}: child hung (killed after 10 s)")),
        }
        drop(keep);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = churners.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(rounds > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}
