//! `PYMEM_PURGE_MS` starts the background purge without any call, and a
//! child after `fork` has no background thread until it asks for one.
//! Each case runs in a child process of this test binary.

#[path = "common/alloc_shapes.rs"]
mod alloc_shapes;
#[path = "common/rng.rs"]
mod rng;

use std::time::Duration;

use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

fn in_child(name: &str, purge_ms: Option<&str>) {
    alloc_shapes::run_child_test(name, &[("PYMEM_PURGE_MS", purge_ms)]);
}

/// Threads of this process named `pymem-purge`.
fn purge_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "pymem-purge")
        .count()
}

/// Waits up to 5 s for the number of `pymem-purge` threads to become
/// `n` (a thread names itself once it runs, and stops at its next
/// interval, so neither shows at once on a loaded machine); returns the
/// last count seen.
fn wait_for_purge_threads(n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = purge_threads();
        if now == n || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn the_environment_variable_starts_the_background_purge() {
    in_child("child_environment", Some("50"));
}

#[test]
fn child_environment() {
    if !alloc_shapes::is_child("child_environment") {
        return;
    }
    assert_eq!(wait_for_purge_threads(1), 1, "no pymem-purge thread");
    let worker = alloc_shapes::spike_then_block(&GLOBAL, 100_000_000);
    let (rss, after) = alloc_shapes::wait_for_rss(32.0, Duration::from_secs(1));
    assert!(
        rss <= 32.0,
        "{rss:.1} MB resident {after:?} after a 100 MB spike was freed"
    );
    worker.exit();
}

#[test]
fn without_the_variable_there_is_no_background_thread() {
    in_child("child_no_environment", None);
}

#[test]
fn child_no_environment() {
    if !alloc_shapes::is_child("child_no_environment") {
        return;
    }
    let v: Vec<u64> = (0..1_000).collect();
    assert_eq!(v.len(), 1_000);
    assert_eq!(purge_threads(), 0);
    pymem::purge_in_background(Some(Duration::from_millis(20)));
    assert_eq!(wait_for_purge_threads(1), 1);
    pymem::purge_in_background(None);
    assert_eq!(wait_for_purge_threads(0), 0, "None stops it");
}

#[test]
fn a_forked_child_has_no_background_thread_until_it_asks() {
    in_child("child_fork", Some("20"));
}

#[test]
fn child_fork() {
    if !alloc_shapes::is_child("child_fork") {
        return;
    }
    assert_eq!(wait_for_purge_threads(1), 1);
    // SAFETY: the child allocates (PyMalloc takes no lock a fork could
    // leave held on its common paths), checks and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let before = purge_threads();
        let v: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        drop(v);
        pymem::release_free_memory();
        pymem::purge_in_background(Some(Duration::from_millis(20)));
        let after = wait_for_purge_threads(1);
        let code = if before == 0 && after == 1 { 0 } else { 1 };
        // SAFETY: leave the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}
