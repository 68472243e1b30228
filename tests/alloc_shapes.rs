//! Memory goes back to the OS in the shapes real servers and thread pools
//! have (issue 8), not only when one thread frees what it allocated:
//!
//! * server: 4 workers allocate 96 MB of 16..512-byte blocks, 4 other
//!   live threads free them all, everyone idles: `release_free_memory()`
//!   on the main thread brings the resident set to 32 MB or less, and so
//!   does `purge_in_background(100 ms)` without any call, within 1 s;
//! * spike then block: one thread frees its own 96 MB spike and blocks on
//!   a channel: the same two figures;
//! * exited threads: 32 threads allocate 96 MB and exit, the main thread
//!   frees their blocks in random order: 32 MB or less within 1 s while
//!   another thread allocates now and then, and after a release.
//!
//! (The figures are for 500 MB; `bench/benches/alloc_shapes.rs`
//! runs them at that size beside glibc and mimalloc. Here the sizes are
//! smaller so that the debug build stays fast; 32 MB is a third of
//! what was allocated.)
//!
//! Each shape runs in a child process of its own (this test binary, asked
//! to run one `child_*` test), so its resident set is its alone.

#[path = "common/alloc_shapes.rs"]
mod alloc_shapes;
#[path = "common/rng.rs"]
mod rng;

use std::time::Duration;

use alloc_shapes::{rss_mb, wait_for_rss, Trickle};
use pymem::{release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const BYTES: usize = 96_000_000;
const LIMIT_MB: f64 = 32.0;
/// Runs the test `name` of this binary in a child process, showing the
/// figures it printed.
fn in_child(name: &str) {
    let text = alloc_shapes::run_child_test(name, &[]);
    for line in text
        .lines()
        .filter_map(|l| l.find("shape:").map(|at| &l[at..]))
    {
        eprintln!("{line}");
    }
}

use alloc_shapes::is_child;

fn check(what: &str, rss: f64) {
    println!("shape: {what}: {rss:.1} MB");
    assert!(
        rss <= LIMIT_MB,
        "{what}: resident set {rss:.1} MB, above {LIMIT_MB} MB"
    );
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn server_release_returns_what_idle_threads_hold() {
    in_child("child_server_release");
}

#[test]
fn child_server_release() {
    if !is_child("child_server_release") {
        return;
    }
    let (workers, freers) = alloc_shapes::server(&GLOBAL, 4, 4, BYTES);
    println!("shape: server, everything freed: {:.1} MB", rss_mb());
    let released = release_free_memory();
    println!("shape: released {} MB", released / 1_000_000);
    check("server, after release on main", rss_mb());
    freers.exit();
    release_free_memory();
    check("server, freeing threads exited, after release", rss_mb());
    workers.exit();
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn server_background_purge_returns_what_idle_threads_hold() {
    in_child("child_server_background");
}

#[test]
fn child_server_background() {
    if !is_child("child_server_background") {
        return;
    }
    pymem::purge_in_background(Some(Duration::from_millis(100)));
    let (workers, freers) = alloc_shapes::server(&GLOBAL, 4, 4, BYTES);
    let (rss, after) = wait_for_rss(LIMIT_MB, Duration::from_secs(1));
    println!("shape: server, background purge: {rss:.1} MB after {after:?}");
    check("server, background purge, within 1 s", rss);
    freers.exit();
    workers.exit();
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn spike_then_block_release_returns_the_spike() {
    in_child("child_spike_release");
}

#[test]
fn child_spike_release() {
    if !is_child("child_spike_release") {
        return;
    }
    let worker = alloc_shapes::spike_then_block(&GLOBAL, BYTES);
    println!("shape: spike freed, worker blocked: {:.1} MB", rss_mb());
    release_free_memory();
    check("spike then block, after release on main", rss_mb());
    worker.exit();
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn spike_then_block_background_purge_returns_the_spike() {
    in_child("child_spike_background");
}

#[test]
fn child_spike_background() {
    if !is_child("child_spike_background") {
        return;
    }
    pymem::purge_in_background(Some(Duration::from_millis(100)));
    let worker = alloc_shapes::spike_then_block(&GLOBAL, BYTES);
    let (rss, after) = wait_for_rss(LIMIT_MB, Duration::from_secs(1));
    println!("shape: spike then block, background purge: {rss:.1} MB after {after:?}");
    check("spike then block, background purge, within 1 s", rss);
    worker.exit();
}

#[test]
#[cfg_attr(pymem_asan, ignore = "ASan's shadow memory stays resident")]
fn random_frees_of_exited_threads_blocks_come_back() {
    in_child("child_random_exited");
}

#[test]
fn child_random_exited() {
    if !is_child("child_random_exited") {
        return;
    }
    alloc_shapes::random_frees_of_exited_threads(&GLOBAL, 32, BYTES);
    println!("shape: exited threads' blocks freed: {:.1} MB", rss_mb());
    let trickle = Trickle::start(&GLOBAL, Duration::from_millis(10));
    let (rss, after) = wait_for_rss(LIMIT_MB, Duration::from_secs(1));
    println!("shape: exited threads, another thread allocating: {rss:.1} MB after {after:?}");
    check("exited threads, 1 s with another thread allocating", rss);
    trickle.stop();
    release_free_memory();
    check("exited threads, after release", rss_mb());
    let stats = pymem::alloc_stats();
    assert!(
        stats.small_blocks_in_use < 10_000,
        "{} blocks still counted in use",
        stats.small_blocks_in_use
    );
}
