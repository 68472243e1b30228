//! `purge_in_background(Some(interval))` "starts it (or changes its
//! interval)" (found by review 6): retuning a running thread from a long interval to a short
//! one must take effect, not wait for the long sleep to end.

use std::time::Duration;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

fn spike_then_wait() -> (usize, u64, u64) {
    let before = pymem::alloc_stats().bytes_returned;
    let spike: Vec<Box<[u8; 64]>> = (0..100_000).map(|_| Box::new([0; 64])).collect();
    drop(spike);
    std::thread::sleep(Duration::from_millis(1500));
    let stats = pymem::alloc_stats();
    (
        stats.arenas_retired,
        before as u64,
        stats.bytes_returned as u64,
    )
}

#[test]
fn retuning_to_a_shorter_interval_takes_effect() {
    // Control: started with 50 ms at once, the spike's arenas go back.
    pymem::purge_in_background(Some(Duration::from_millis(50)));
    let (retired, before, after) = spike_then_wait();
    pymem::purge_in_background(None);
    eprintln!(
        "control: {retired} arenas retired, {} bytes returned",
        after - before
    );
    assert!(
        retired == 0 && after >= before + (4 << 20),
        "control failed"
    );
    // The stopped thread exits within a second.
    std::thread::sleep(Duration::from_millis(1200));
    // A long interval first (a program's default), then a short one.
    pymem::purge_in_background(Some(Duration::from_secs(3600)));
    std::thread::sleep(Duration::from_millis(100));
    pymem::purge_in_background(Some(Duration::from_millis(50)));
    let (retired, before, after) = spike_then_wait();
    pymem::purge_in_background(None);
    assert!(
        retired == 0 && after >= before + (4 << 20),
        "1.5 s after retuning to 50 ms: {retired} arenas still retired, {} bytes returned \
         (the thread still sleeps its first interval of an hour)",
        after - before
    );
}
