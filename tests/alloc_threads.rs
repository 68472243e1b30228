//! `PyMalloc` across threads.
//!
//! Checks:
//! * blocks allocated in one thread and freed in another (over channels,
//!   4 threads, to a neighbour and to random threads) keep their contents
//!   until freed, and after the threads exit and `release_free_memory()`
//!   nothing stays counted in use;
//! * 2,000 short-lived threads, each allocating, freeing, and leaving some
//!   blocks for the main thread to free, leave `arenas_in_use` bounded
//!   (checked along the way and at the end against the start, with a small
//!   constant allowance);
//! * blocks of a thread that exited with them live still count as in use,
//!   and once the main thread frees them, they stop counting at the latest
//!   after `release_free_memory()` (DESIGN.md contract).

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{channel, Sender};

use alloc_util::{assert_pattern, fill, layout, serial, SplitMix64};
use pymem::{alloc_stats, release_free_memory, PyMalloc};

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

/// A block in transit: address, layout, pattern id (owner << 40 | seq).
struct Block {
    addr: usize,
    size: usize,
    align: usize,
    id: u64,
}

impl Block {
    fn new(rng: &mut SplitMix64, owner: u64, seq: u64) -> Block {
        let size = if rng.percent(85) {
            rng.range(1, 512)
        } else {
            rng.range(513, 2048)
        };
        let align = 1 << rng.range(0, 6);
        let l = layout(size, align);
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(l) };
        assert!(!p.is_null() && p as usize % align == 0, "alloc {l:?}");
        let id = owner << 40 | seq;
        // SAFETY: `p` holds `size` bytes.
        unsafe { fill(p, size, id) };
        Block {
            addr: p as usize,
            size,
            align,
            id,
        }
    }

    fn layout(&self) -> Layout {
        layout(self.size, self.align)
    }

    fn free(self, freer: u64) {
        let p = self.addr as *mut u8;
        // SAFETY: a live block with this layout, patterned with `id`.
        unsafe {
            assert_pattern(
                p,
                self.size,
                self.id,
                &format!("thread {freer} freeing a block of thread {}", self.id >> 40),
            );
            GLOBAL.dealloc(p, self.layout());
        }
    }
}

/// Small-block and arena counts after `release_free_memory()`.
fn settled() -> (usize, usize) {
    release_free_memory();
    let s = alloc_stats();
    (s.small_blocks_in_use, s.arenas_in_use)
}

/// Blocks in use the harness may add or remove while a test runs.
const NOISE: usize = 64;

#[test]
fn cross_thread_frees_over_channels() {
    let _g = serial();
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 15_000;
    let (blocks0, _) = settled();
    let (txs, rxs): (Vec<Sender<Block>>, Vec<_>) = (0..THREADS).map(|_| channel()).unzip();
    // `spawn` + `join`, not a scope: `join` returns once a thread has really
    // exited, thread-local destructors (which park its heap) included.
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let t = t as u64;
            let txs = txs.clone();
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(0xC0DE + t);
                let mut received = 0u64;
                for seq in 0..PER_THREAD {
                    let b = Block::new(&mut rng, t, seq);
                    // Half go to the next thread, half to a random other one.
                    let to = if seq % 2 == 0 {
                        (t + 1) % THREADS
                    } else {
                        (t + 1 + rng.below(THREADS as usize - 1) as u64) % THREADS
                    };
                    txs[to as usize].send(b).expect("receiver alive");
                    if seq % 8 == 0 {
                        while let Ok(b) = rx.try_recv() {
                            b.free(t);
                            received += 1;
                        }
                    }
                }
                drop(txs);
                for b in rx.iter() {
                    b.free(t);
                    received += 1;
                }
                received
            })
        })
        .collect();
    drop(txs);
    let received: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .sum();
    assert_eq!(received, THREADS * PER_THREAD, "blocks lost in transit");
    let (blocks1, _) = settled();
    assert!(
        blocks1 <= blocks0 + NOISE,
        "after all blocks were freed and the threads exited: {blocks1} small blocks in use, \
         {blocks0} before"
    );
}

#[test]
fn two_thousand_short_lived_threads_keep_arenas_bounded() {
    let _g = serial();
    const THREADS: usize = 2_000;
    const AT_ONCE: usize = 4;
    /// What a short-lived thread does: allocate 200 blocks, free 180, hand
    /// 20 back (in a Vec it allocated, freed by the main thread too).
    fn short_life(seed: u64) -> Vec<Block> {
        let mut rng = SplitMix64::new(seed);
        let mut blocks: Vec<Block> = (0..200).map(|i| Block::new(&mut rng, seed, i)).collect();
        let keep = blocks.split_off(180);
        for b in blocks {
            b.free(seed);
        }
        keep
    }
    // Warm up: the first threads create the heaps later threads reuse.
    for i in 0..AT_ONCE {
        for b in std::thread::spawn(move || short_life(i as u64))
            .join()
            .unwrap()
        {
            b.free(0);
        }
    }
    let (blocks0, arenas0) = settled();
    let mut most_arenas = arenas0;
    for wave in 0..THREADS / AT_ONCE {
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let seed = (1_000 + wave * AT_ONCE + i) as u64;
                std::thread::spawn(move || short_life(seed))
            })
            .collect();
        for h in handles {
            for b in h.join().expect("thread panicked") {
                b.free(u64::MAX);
            }
        }
        if wave % 50 == 49 {
            // Without any release call: memory must not grow with threads.
            let s = alloc_stats();
            most_arenas = most_arenas.max(s.arenas_in_use);
            assert!(
                s.arenas_in_use <= arenas0 + 16,
                "after {} threads: {} arenas in use, {arenas0} at the start",
                (wave + 1) * AT_ONCE,
                s.arenas_in_use
            );
        }
    }
    let (blocks1, arenas1) = settled();
    assert!(
        arenas1 <= arenas0 + 2,
        "2,000 threads later: {arenas1} arenas in use after release_free_memory(), \
         {arenas0} before (at most {most_arenas} along the way)"
    );
    assert!(
        blocks1 <= blocks0 + NOISE,
        "2,000 threads later: {blocks1} small blocks in use, {blocks0} before"
    );
}

#[cfg_attr(
    pymem_asan,
    ignore = "ASan redzones move requests to larger size classes"
)]
#[test]
fn blocks_of_an_exited_thread_stop_counting_once_freed() {
    let _g = serial();
    const N: usize = 3_000;
    let l = layout(64, 8);
    let class = 3; // 64-byte blocks
    release_free_memory();
    let s0 = alloc_stats();
    let (class0, small0) = (s0.per_class[class].blocks_in_use, s0.small_blocks_in_use);
    drop(s0);
    let ptrs: Vec<usize> = std::thread::spawn(move || {
        (0..N)
            .map(|i| {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(l) };
                assert!(!p.is_null());
                // SAFETY: 64 bytes.
                unsafe { fill(p, 64, i as u64) };
                p as usize
            })
            .collect()
    })
    .join()
    .unwrap();
    // The thread is gone; its blocks are alive and must count as in use.
    let s1 = alloc_stats();
    let class1 = s1.per_class[class].blocks_in_use;
    drop(s1);
    assert!(
        class1.abs_diff(class0 + N) <= NOISE,
        "{N} live blocks of an exited thread: class 64 in use went {class0} -> {class1}"
    );
    for (i, p) in ptrs.into_iter().enumerate() {
        // SAFETY: live 64-byte blocks patterned with their index.
        unsafe {
            assert_pattern(p as *mut u8, 64, i as u64, "block of an exited thread");
            GLOBAL.dealloc(p as *mut u8, l);
        }
    }
    release_free_memory();
    let s2 = alloc_stats();
    assert!(
        s2.per_class[class].blocks_in_use <= class0 + NOISE,
        "after freeing an exited thread's {N} blocks and release_free_memory(): class 64 \
         has {} in use, {class0} before",
        s2.per_class[class].blocks_in_use
    );
    assert!(
        s2.small_blocks_in_use <= small0 + NOISE,
        "after freeing an exited thread's {N} blocks and release_free_memory(): {} small \
         blocks in use, {small0} before",
        s2.small_blocks_in_use
    );
}

/// Blocks handed to the main thread by thread-local destructors.
static FROM_TLS_DTORS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// Allocates while it is dropped, at thread exit: part freed at once, part
/// handed to the main thread. `LATE` is first touched from `EARLY`'s
/// destructor, so its own destructor is registered (and runs) after the
/// allocator's thread-local state may already be gone.
struct TlsAllocator {
    held: Vec<Box<[u8]>>,
    touch_late: bool,
}

impl Drop for TlsAllocator {
    fn drop(&mut self) {
        for (i, b) in self.held.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8), "TLS-held block corrupted");
        }
        self.held.clear();
        let mut rng = SplitMix64::new(self.held.capacity() as u64);
        let mut handed = Vec::new();
        for i in 0..500usize {
            let size = rng.range(1, 1500);
            let l = layout(size, 8);
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(l) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `size` bytes.
            unsafe { fill(p, size, i as u64) };
            if i % 2 == 0 {
                handed.push((p as usize, size));
            } else {
                // SAFETY: live with `l`.
                unsafe {
                    assert_pattern(p, size, i as u64, "TLS destructor");
                    GLOBAL.dealloc(p, l);
                }
            }
        }
        FROM_TLS_DTORS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(handed);
        if self.touch_late {
            LATE.with(|late| {
                late.borrow_mut()
                    .held
                    .push(vec![0u8; 100].into_boxed_slice())
            });
        }
    }
}

thread_local! {
    static EARLY: std::cell::RefCell<TlsAllocator> =
        const { std::cell::RefCell::new(TlsAllocator { held: Vec::new(), touch_late: true }) };
    static LATE: std::cell::RefCell<TlsAllocator> =
        const { std::cell::RefCell::new(TlsAllocator { held: Vec::new(), touch_late: false }) };
}

#[test]
fn thread_local_destructors_can_allocate_and_free_at_thread_exit() {
    let _g = serial();
    const THREADS: usize = 50;
    release_free_memory();
    let blocks0 = alloc_stats().small_blocks_in_use;
    for t in 0..THREADS {
        std::thread::spawn(move || {
            // Keep the heap busy so thread exit has pools with live blocks.
            let keep: Vec<Box<[u8; 48]>> = (0..300).map(|_| Box::new([t as u8; 48])).collect();
            EARLY.with(|e| {
                e.borrow_mut().held = (0..100)
                    .map(|i| vec![i as u8; 1 + i * 7].into_boxed_slice())
                    .collect()
            });
            std::mem::forget(keep); // leaked on purpose: a thread's live blocks at exit
        })
        .join()
        .expect("thread panicked at exit");
    }
    let handed = std::mem::take(&mut *FROM_TLS_DTORS.lock().unwrap());
    // Each thread: EARLY hands 250 blocks, LATE hands 250 more.
    assert_eq!(handed.len(), THREADS * 2 * 250, "a destructor did not run");
    for (i, &(p, size)) in handed.iter().enumerate() {
        let id = (i % 250 * 2) as u64;
        // SAFETY: live blocks patterned by their index within a destructor.
        unsafe {
            assert_pattern(p as *mut u8, size, id, "block from a TLS destructor");
            GLOBAL.dealloc(p as *mut u8, layout(size, 8));
        }
    }
    release_free_memory();
    let blocks1 = alloc_stats().small_blocks_in_use;
    // Only the deliberately leaked 48-byte boxes (and the 100-byte box LATE
    // got, which its owner never frees: it is dropped... with LATE itself)
    // may remain.
    let leaked = THREADS * 300;
    assert!(
        blocks1 <= blocks0 + leaked + THREADS + NOISE,
        "{blocks1} small blocks in use after the TLS blocks were freed; {blocks0} before, \
         {leaked} leaked on purpose"
    );
    assert!(
        blocks1 + NOISE >= blocks0 + leaked,
        "{blocks1} small blocks in use, but {leaked} were leaked on purpose ({blocks0} before)"
    );
}

#[test]
fn a_burst_of_64_threads_gives_its_arenas_back() {
    let _g = serial();
    const THREADS: usize = 64;
    let (_, arenas0) = settled();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    // `spawn` + `join` (not a scope): `join` returns only once the thread
    // has really exited, its thread-local destructors included.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(t as u64);
                // ~1 MiB per thread, all threads alive at once.
                let blocks: Vec<Block> = (0..4_000)
                    .map(|i| Block::new(&mut rng, t as u64, i))
                    .collect();
                barrier.wait();
                for b in blocks {
                    b.free(t as u64);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread panicked");
    }
    let s = alloc_stats();
    let during = s.arenas_highwater;
    drop(s);
    let (_, arenas1) = settled();
    assert!(
        arenas1 <= arenas0 + 2,
        "64 threads came and went: {arenas1} arenas in use after release_free_memory(), \
         {arenas0} before (high-water {during})"
    );
}
