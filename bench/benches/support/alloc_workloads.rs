//! Allocation workloads shared by `benches/alloc.rs` and `examples/compare.rs`
//! (included in both with `#[path = ...] mod alloc_workloads;`).
//!
//! Every workload is generic over the allocator and drives it through
//! [`GlobalAlloc`] directly, so `PyMalloc`, `System`, `MiMalloc` and
//! `Jemalloc` run exactly the same code. Each function does its set-up and
//! tear-down outside the timed region and returns the time of the measured
//! part only. Every allocation is written once per 64-byte cache line (a
//! volatile store, so the compiler cannot drop it) so that no allocator wins
//! by handing out pages nobody touches.
//!
//! Units (what one "op" is, for `Throughput::Elements` and the demo table):
//!
//! | workload      | op                                                      |
//! |---------------|---------------------------------------------------------|
//! | churn         | free one of 1,000 live blocks, allocate a new one (8..=512 B) |
//! | churn 10k     | the same with 10,000 live blocks (whole pools fill, so one free in three is into a full pool) |
//! | LIFO 32 B     | one alloc + free pair of a round of 1M allocs, freed in reverse |
//! | FIFO          | one alloc + free pair of a round of 1M random sizes (8..=512 B), freed in order |
//! | cross-thread  | one 64 B block allocated by a producer thread and freed by a consumer thread |
//! | 2 threads     | one churn step; two threads churn at once, wall time over both threads' steps |
//! | realloc       | one chain: alloc 8 B, realloc doubling to 4,096 B, free |
#![allow(dead_code)]

use std::alloc::{handle_alloc_error, GlobalAlloc, Layout};
use std::ptr::null_mut;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// `PyMalloc` behind a function call, as every other contestant is (their
/// `GlobalAlloc` methods call into C) and as a program's allocations reach
/// a `#[global_allocator]` (through `__rust_alloc`). Without it the
/// compiler inlines PyMalloc's fast path into the workload loops, which no
/// real program gets, and PyMalloc would look faster than it is.
pub struct PyMallocCall;

// SAFETY: forwards every call to `PyMalloc` unchanged.
unsafe impl GlobalAlloc for PyMallocCall {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { pymem::PyMalloc.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { pymem::PyMalloc.dealloc(ptr, layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { pymem::PyMalloc.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { pymem::PyMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Live blocks kept by the churn workload.
pub const CHURN_SLOTS: usize = 1_000;
/// Live blocks kept by the large churn workload.
pub const CHURN_LARGE_SLOTS: usize = 10_000;
/// Blocks per round of the LIFO and FIFO workloads.
pub const ROUND_BLOCKS: usize = 1_000_000;
/// Block size of the LIFO workload.
pub const LIFO_SIZE: usize = 32;
/// Block size of the cross-thread workload.
pub const CROSS_SIZE: usize = 64;
/// Blocks handed from producer to consumer at once.
pub const CROSS_BATCH: usize = 1_024;
/// Smallest and largest request of the random-size workloads.
pub const MIN_SIZE: usize = 8;
/// Largest request of the random-size workloads (PyMalloc's threshold).
pub const MAX_SIZE: usize = 512;
/// First and last size of a realloc chain.
pub const REALLOC_FROM: usize = 8;
/// Last size of a realloc chain.
pub const REALLOC_TO: usize = 4_096;

#[path = "../../../tests/common/rng.rs"]
mod rng;
pub use rng::SplitMix64;

/// `8 + (bits % 505)` without a division: a size in `MIN_SIZE..=MAX_SIZE`
/// from 32 random bits.
#[inline]
fn size_from_bits(bits: u32) -> usize {
    MIN_SIZE + ((u64::from(bits) * (MAX_SIZE - MIN_SIZE + 1) as u64) >> 32) as usize
}

#[inline]
fn layout(size: usize) -> Layout {
    // Alignment 8 is what `Box`/`Vec` of word-sized data ask for.
    // SAFETY: 8 is a power of two and `size` is far from overflowing.
    unsafe { Layout::from_size_align_unchecked(size, 8) }
}

/// Writes one byte in each 64-byte cache line of `[p, p + len)`.
#[inline]
pub fn touch(p: *mut u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len` and the caller owns `len` bytes at `p`.
        unsafe { p.add(off).write_volatile(off as u8 ^ 0x5A) };
        off += 64;
    }
}

/// Allocates `size` bytes (align 8) from `a` and touches them.
#[inline]
pub fn alloc_touch<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    let l = layout(size);
    // SAFETY: non-zero size.
    let p = unsafe { a.alloc(l) };
    if p.is_null() {
        handle_alloc_error(l);
    }
    touch(p, size);
    p
}

/// Frees a block from [`alloc_touch`].
#[inline]
pub fn free<A: GlobalAlloc>(a: &A, p: *mut u8, size: usize) {
    // SAFETY: `p` came from `a` with this layout.
    unsafe { a.dealloc(p, layout(size)) }
}

/// Churn: 1,000 live blocks of random sizes 8..=512; each step frees a random
/// one and allocates a new random size in its place. Times `steps` steps.
pub fn churn<A: GlobalAlloc>(a: &A, steps: u64, seed: u64) -> Duration {
    churn_with(a, steps, seed, CHURN_SLOTS)
}

/// Churn over `live` live blocks (see [`churn`]).
pub fn churn_with<A: GlobalAlloc>(a: &A, steps: u64, seed: u64, live: usize) -> Duration {
    let mut rng = SplitMix64::new(seed);
    let mut slots = vec![(null_mut::<u8>(), 0usize); live];
    for slot in slots.iter_mut() {
        let size = size_from_bits(rng.next_u64() as u32);
        *slot = (alloc_touch(a, size), size);
    }
    let start = Instant::now();
    churn_steps(a, &mut slots, &mut rng, steps);
    let elapsed = start.elapsed();
    for &(p, size) in &slots {
        free(a, p, size);
    }
    elapsed
}

#[inline]
fn churn_steps<A: GlobalAlloc>(
    a: &A,
    slots: &mut [(*mut u8, usize)],
    rng: &mut SplitMix64,
    steps: u64,
) {
    let live = slots.len() as u64;
    for _ in 0..steps {
        let r = rng.next_u64();
        let i = (((r & 0xFFFF_FFFF) * live) >> 32) as usize;
        let size = size_from_bits((r >> 32) as u32);
        let (p, old) = slots[i];
        free(a, p, old);
        slots[i] = (alloc_touch(a, size), size);
    }
}

/// LIFO: `rounds` times, allocate 1M blocks of 32 B, then free them in
/// reverse order. Times the rounds (1M alloc + free pairs each).
pub fn lifo<A: GlobalAlloc>(a: &A, rounds: u64) -> Duration {
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(ROUND_BLOCKS);
    let start = Instant::now();
    for _ in 0..rounds {
        for _ in 0..ROUND_BLOCKS {
            ptrs.push(alloc_touch(a, LIFO_SIZE));
        }
        while let Some(p) = ptrs.pop() {
            free(a, p, LIFO_SIZE);
        }
    }
    start.elapsed()
}

/// FIFO: `rounds` times, allocate 1M blocks of random sizes 8..=512, then
/// free them in allocation order. Times the rounds (1M pairs each).
pub fn fifo<A: GlobalAlloc>(a: &A, rounds: u64, seed: u64) -> Duration {
    let mut rng = SplitMix64::new(seed);
    let sizes: Vec<u16> = (0..ROUND_BLOCKS)
        .map(|_| size_from_bits(rng.next_u64() as u32) as u16)
        .collect();
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(ROUND_BLOCKS);
    let start = Instant::now();
    for _ in 0..rounds {
        for &size in &sizes {
            ptrs.push(alloc_touch(a, usize::from(size)));
        }
        for (&p, &size) in ptrs.iter().zip(&sizes) {
            free(a, p, usize::from(size));
        }
        ptrs.clear();
    }
    start.elapsed()
}

/// FIFO when cold: as [`fifo`], but before each round (outside the timed
/// part) `release` gives the allocator's free memory back to the OS
/// (`release_free_memory()`, `malloc_trim(0)`, `mi_collect(true)`), as
/// happens to a program's memory between its bursts when other work runs
/// in between; so each round starts from unmapped (or decommitted) memory.
/// (`fifo_after_pause` passes a 300 ms sleep instead: each round starts
/// from whatever the allocator's own retention kept.)
pub fn fifo_cold<A: GlobalAlloc>(a: &A, rounds: u64, seed: u64, release: &dyn Fn()) -> Duration {
    let mut rng = SplitMix64::new(seed);
    let sizes: Vec<u16> = (0..ROUND_BLOCKS)
        .map(|_| size_from_bits(rng.next_u64() as u32) as u16)
        .collect();
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(ROUND_BLOCKS);
    let mut elapsed = Duration::ZERO;
    for _ in 0..rounds {
        release();
        let start = Instant::now();
        for &size in &sizes {
            ptrs.push(alloc_touch(a, usize::from(size)));
        }
        for (&p, &size) in ptrs.iter().zip(&sizes) {
            free(a, p, usize::from(size));
        }
        elapsed += start.elapsed();
        ptrs.clear();
    }
    elapsed
}

/// Cross-thread: a producer thread allocates `blocks` blocks of 64 B and
/// hands them over in batches of 1,024 through a channel; a consumer thread
/// frees them. Batch vectors are recycled, so the channel traffic allocates
/// nothing. Times from the start of both threads until the last free.
pub fn cross_thread<A: GlobalAlloc + Sync>(a: &A, blocks: u64) -> Duration {
    const IN_FLIGHT: usize = 8;
    let (full_tx, full_rx) = sync_channel::<Vec<usize>>(IN_FLIGHT);
    let (empty_tx, empty_rx) = sync_channel::<Vec<usize>>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        empty_tx
            .send(Vec::with_capacity(CROSS_BATCH))
            .expect("receiver alive");
    }
    let barrier = &Barrier::new(2);
    // The clock is read by the two threads themselves, from the first of
    // them past the barrier to the last to finish: a clock read by a third
    // thread counted nothing of a round run while that thread waited for
    // a CPU (on a loaded 2-vCPU host, rounds of 1M blocks came out at
    // 0.01 ns per block).
    let now = Instant::now();
    let mut times = (now, now, now, now);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            barrier.wait();
            let start = Instant::now();
            let mut left = blocks;
            while left > 0 {
                let mut batch = empty_rx.recv().expect("consumer alive");
                let n = left.min(CROSS_BATCH as u64);
                for _ in 0..n {
                    batch.push(alloc_touch(a, CROSS_SIZE) as usize);
                }
                left -= n;
                full_tx.send(batch).expect("consumer alive");
            }
            drop(full_tx);
            (start, Instant::now())
        });
        let consumer = s.spawn(move || {
            barrier.wait();
            let start = Instant::now();
            for mut batch in full_rx.iter() {
                for p in batch.drain(..) {
                    free(a, p as *mut u8, CROSS_SIZE);
                }
                // The producer may be gone already: then the batch is dropped.
                let _ = empty_tx.send(batch);
            }
            (start, Instant::now())
        });
        let (p0, p1) = producer.join().expect("producer panicked");
        let (c0, c1) = consumer.join().expect("consumer panicked");
        times = (p0, p1, c0, c1);
    });
    let (p0, p1, c0, c1) = times;
    p1.max(c1) - p0.min(c0)
}

/// Two threads churning at once, each as [`churn`] for `steps` steps.
/// Returns the time from the first thread's start to the last one's end,
/// read by the two threads themselves (as [`cross_thread`] does: a clock
/// read by a third thread missed or added whatever ran while that thread
/// waited for a CPU); the set-up and tear-down of each thread are outside
/// it.
pub fn two_thread_churn<A: GlobalAlloc + Sync>(a: &A, steps: u64, seed: u64) -> Duration {
    let start_line = Barrier::new(2);
    let finish_line = Barrier::new(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let (start_line, finish_line) = (&start_line, &finish_line);
                s.spawn(move || {
                    let mut rng =
                        SplitMix64::new(seed ^ (t + 1).wrapping_mul(0xA076_1D64_78BD_642F));
                    let mut slots = [(null_mut::<u8>(), 0usize); CHURN_SLOTS];
                    for slot in slots.iter_mut() {
                        let size = size_from_bits(rng.next_u64() as u32);
                        *slot = (alloc_touch(a, size), size);
                    }
                    start_line.wait();
                    let start = Instant::now();
                    churn_steps(a, &mut slots, &mut rng, steps);
                    let end = Instant::now();
                    finish_line.wait();
                    for &(p, size) in &slots {
                        free(a, p, size);
                    }
                    (start, end)
                })
            })
            .collect();
        let times: Vec<(Instant, Instant)> = workers
            .into_iter()
            .map(|w| w.join().expect("churn thread panicked"))
            .collect();
        let first = times.iter().map(|t| t.0).min().expect("two threads");
        let last = times.iter().map(|t| t.1).max().expect("two threads");
        last - first
    })
}

/// Realloc growth: `chains` times, allocate 8 B and grow the block by
/// doubling up to 4,096 B with `realloc` (writing the new part each time),
/// then free it.
pub fn realloc_growth<A: GlobalAlloc>(a: &A, chains: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..chains {
        let mut size = REALLOC_FROM;
        let mut p = alloc_touch(a, size);
        while size < REALLOC_TO {
            let new_size = size * 2;
            // SAFETY: `p` is live with `layout(size)`; `new_size` is valid.
            p = unsafe { a.realloc(p, layout(size), new_size) };
            if p.is_null() {
                handle_alloc_error(layout(new_size));
            }
            // SAFETY: the block now holds `new_size` bytes.
            touch(unsafe { p.add(size) }, new_size - size);
            size = new_size;
        }
        free(a, p, size);
    }
    start.elapsed()
}

/// The workloads, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// [`churn`]
    Churn,
    /// [`churn_with`] 10,000 live blocks
    ChurnLarge,
    /// [`lifo`]
    Lifo,
    /// [`fifo`]
    Fifo,
    /// [`cross_thread`]
    CrossThread,
    /// [`two_thread_churn`]
    TwoThreadChurn,
    /// [`realloc_growth`]
    Realloc,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 7] = [
        Workload::Churn,
        Workload::ChurnLarge,
        Workload::Lifo,
        Workload::Fifo,
        Workload::CrossThread,
        Workload::TwoThreadChurn,
        Workload::Realloc,
    ];

    /// Short name (criterion group name).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Churn => "churn",
            Workload::ChurnLarge => "churn_10k",
            Workload::Lifo => "lifo_32B",
            Workload::Fifo => "fifo",
            Workload::CrossThread => "cross_thread",
            Workload::TwoThreadChurn => "two_threads_churn",
            Workload::Realloc => "realloc_8_to_4096",
        }
    }

    /// What one op is, for people.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Churn => "churn 8..512 B, 1,000 live",
            Workload::ChurnLarge => "churn 8..512 B, 10,000 live",
            Workload::Lifo => "LIFO 1M x 32 B",
            Workload::Fifo => "FIFO 1M x 8..512 B",
            Workload::CrossThread => "cross-thread 64 B (per block)",
            Workload::TwoThreadChurn => "2 threads churning (wall)",
            Workload::Realloc => "realloc 8 -> 4,096 B (per chain)",
        }
    }

    /// Ops (alloc + free pairs, blocks or chains) done by one unit of `n`
    /// passed to [`Workload::run`]: a LIFO or FIFO round is 1M pairs, a
    /// two-thread step is two pairs (one per thread).
    pub fn ops_per_unit(self) -> u64 {
        match self {
            Workload::Lifo | Workload::Fifo => ROUND_BLOCKS as u64,
            Workload::TwoThreadChurn => 2,
            _ => 1,
        }
    }

    /// Runs `n` units of the workload on `a` and returns the measured time.
    pub fn run<A: GlobalAlloc + Sync>(self, a: &A, n: u64, seed: u64) -> Duration {
        match self {
            Workload::Churn => churn(a, n, seed),
            Workload::ChurnLarge => churn_with(a, n, seed, CHURN_LARGE_SLOTS),
            Workload::Lifo => lifo(a, n),
            Workload::Fifo => fifo(a, n, seed),
            Workload::CrossThread => cross_thread(a, n),
            Workload::TwoThreadChurn => two_thread_churn(a, n, seed),
            Workload::Realloc => realloc_growth(a, n),
        }
    }
}
