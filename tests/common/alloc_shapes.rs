//! The memory-return shapes of issue 8, generic over the allocator: the
//! tests in `tests/alloc_shapes.rs` run them on PyMalloc (smaller, in debug
//! builds) and `bench/benches/alloc_shapes.rs` on every allocator at full
//! size, for the figures. Included with `#[path]` beside `rng.rs`.
//!
//! Every block is allocated through [`GlobalAlloc`] directly and linked
//! into a list through its first two words (the next block, and the
//! block's size), so the harness itself holds no memory that would blur
//! the resident-set figures; the random-order shape keeps its pointers in
//! an array mapped straight from the OS.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rng::SplitMix64;

/// Runs the test `name` of the current test binary in a child process,
/// with `env` set (and `name` in `PYMEM_CHILD_TEST`, see [`is_child`]);
/// returns its output, or panics with it if the child failed.
pub fn run_child_test(name: &str, env: &[(&str, Option<&str>)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PYMEM_CHILD_TEST", name);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().expect("run the child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} failed:\n{text}"
    );
    text
}

/// Whether this process is the child [`run_child_test`] started for `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var("PYMEM_CHILD_TEST").as_deref() == Ok(name)
}

/// Smallest and largest block of the shapes (the small-object range).
pub const MIN_SIZE: usize = 16;
/// Largest block.
pub const MAX_SIZE: usize = 512;

/// Resident set size of this process, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Resident set size in MB (10^6 bytes, as the table).
pub fn rss_mb() -> f64 {
    rss_kib() as f64 * 1024.0 / 1e6
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// A list of blocks linked through their first word; the second word holds
/// the block's size.
#[derive(Clone, Copy)]
pub struct BlockList {
    head: usize,
    /// Blocks on the list.
    pub len: usize,
}

// SAFETY: a list is plain memory handed from thread to thread.
unsafe impl Send for BlockList {}

impl BlockList {
    /// Allocates blocks of random sizes in `MIN_SIZE..=MAX_SIZE` until they
    /// add up to `bytes`, writing each one's first and last cache line.
    pub fn allocate<A: GlobalAlloc>(a: &A, bytes: usize, seed: u64) -> BlockList {
        let mut rng = SplitMix64::new(seed);
        let mut list = BlockList { head: 0, len: 0 };
        let mut total = 0;
        while total < bytes {
            let size = rng.range(MIN_SIZE, MAX_SIZE);
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(layout(size)) };
            assert!(!p.is_null(), "allocation of {size} bytes failed");
            // SAFETY: the block holds `size >= 16` bytes, 8-aligned; the
            // marker byte lies past the two words when there is room.
            unsafe {
                p.cast::<usize>().write(list.head);
                p.cast::<usize>().add(1).write(size);
                if size > 16 {
                    p.add(size - 1).write(0x5A);
                }
            }
            list.head = p as usize;
            list.len += 1;
            total += size;
        }
        list
    }

    /// Frees every block of the list.
    pub fn free<A: GlobalAlloc>(self, a: &A) {
        let mut p = self.head as *mut u8;
        let mut n = 0;
        while !p.is_null() {
            // SAFETY: a live block of the list, allocated from `a` with the
            // size in its second word.
            unsafe {
                let next = p.cast::<*mut u8>().read();
                let size = p.cast::<usize>().add(1).read();
                assert!(
                    (MIN_SIZE..=MAX_SIZE).contains(&size)
                        && (size == 16 || p.add(size - 1).read() == 0x5A),
                    "block {p:p} corrupted"
                );
                a.dealloc(p, layout(size));
                p = next;
            }
            n += 1;
        }
        assert_eq!(n, self.len);
    }

    /// Moves the blocks' addresses into `out` (and forgets the list).
    fn addresses(self, out: &mut PointerArray) {
        let mut p = self.head as *mut u8;
        while !p.is_null() {
            out.push(p as usize);
            // SAFETY: a live block of the list.
            p = unsafe { p.cast::<*mut u8>().read() };
        }
    }
}

/// An array of addresses mapped straight from the OS, so that its memory is
/// nobody's allocator's.
pub struct PointerArray {
    base: *mut usize,
    len: usize,
    cap: usize,
}

impl PointerArray {
    /// Room for `cap` addresses.
    pub fn new(cap: usize) -> PointerArray {
        // SAFETY: an anonymous private mapping touches no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        PointerArray {
            base: base.cast(),
            len: 0,
            cap,
        }
    }

    fn push(&mut self, addr: usize) {
        assert!(self.len < self.cap);
        // SAFETY: within the mapping.
        unsafe { self.base.add(self.len).write(addr) };
        self.len += 1;
    }

    fn slice(&mut self) -> &mut [usize] {
        // SAFETY: the first `len` entries are written.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

impl Drop for PointerArray {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base.cast(), self.cap * 8) };
    }
}

/// Threads parked on a channel until the shape is dropped: live but idle.
pub struct IdleThreads {
    wake: Vec<Sender<()>>,
    handles: Vec<JoinHandle<()>>,
}

impl IdleThreads {
    fn new() -> IdleThreads {
        IdleThreads {
            wake: Vec::new(),
            handles: Vec::new(),
        }
    }

    /// Spawns a thread that runs `work`, then idles until woken.
    fn spawn(&mut self, work: impl FnOnce() + Send + 'static) {
        let (tx, rx): (Sender<()>, Receiver<()>) = channel();
        self.wake.push(tx);
        self.handles.push(std::thread::spawn(move || {
            work();
            let _ = rx.recv();
        }));
    }

    /// Wakes the threads and waits for them to exit.
    pub fn exit(self) {
        drop(self.wake);
        for h in self.handles {
            h.join().expect("shape thread panicked");
        }
    }
}

/// The server shape: `workers` threads allocate `bytes` in all, each hands
/// its blocks to one of `freers` other threads, which free them; then all
/// idle. Returns once every block is freed.
pub fn server<A: GlobalAlloc + Sync>(
    a: &'static A,
    workers: usize,
    freers: usize,
    bytes: usize,
) -> (IdleThreads, IdleThreads) {
    let (done_tx, done_rx) = channel::<()>();
    let mut inboxes = Vec::new();
    let mut freer_threads = IdleThreads::new();
    for _ in 0..freers {
        let (tx, rx) = channel::<BlockList>();
        inboxes.push(tx);
        let done = done_tx.clone();
        let per_freer = workers.div_ceil(freers);
        freer_threads.spawn(move || {
            for _ in 0..per_freer {
                let Ok(list) = rx.recv() else { break };
                list.free(a);
                done.send(()).expect("main waits");
            }
        });
    }
    let mut worker_threads = IdleThreads::new();
    for w in 0..workers {
        let inbox = inboxes[w % freers].clone();
        worker_threads.spawn(move || {
            let list = BlockList::allocate(a, bytes / workers, 0x5E4 + w as u64);
            inbox.send(list).expect("freer alive");
        });
    }
    for _ in 0..workers {
        done_rx.recv().expect("freers report");
    }
    (worker_threads, freer_threads)
}

/// The spike-then-block shape: one thread allocates `bytes`, frees them
/// itself, and idles. Returns once it has freed them.
pub fn spike_then_block<A: GlobalAlloc + Sync>(a: &'static A, bytes: usize) -> IdleThreads {
    let (done_tx, done_rx) = channel::<()>();
    let mut threads = IdleThreads::new();
    threads.spawn(move || {
        BlockList::allocate(a, bytes, 0x5B1).free(a);
        done_tx.send(()).expect("main waits");
    });
    done_rx.recv().expect("the worker reports");
    threads
}

/// The exited-threads shape: `threads` threads allocate `bytes` in all and
/// exit; then the calling thread frees their blocks in random order.
pub fn random_frees_of_exited_threads<A: GlobalAlloc + Sync>(
    a: &'static A,
    threads: usize,
    bytes: usize,
) {
    let lists: Vec<BlockList> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || BlockList::allocate(a, bytes / threads, 0xE1 + t as u64))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("allocating thread panicked"))
        .collect();
    let total: usize = lists.iter().map(|l| l.len).sum();
    let mut array = PointerArray::new(total);
    for list in lists {
        list.addresses(&mut array);
    }
    let addresses = array.slice();
    let mut rng = SplitMix64::new(0x5EED);
    for i in (1..addresses.len()).rev() {
        addresses.swap(i, rng.below(i + 1));
    }
    for &p in addresses.iter() {
        let p = p as *mut u8;
        // SAFETY: a live block with its size in its second word.
        unsafe {
            let size = p.cast::<usize>().add(1).read();
            a.dealloc(p, layout(size));
        }
    }
}

/// A thread that allocates and frees a little every `every`, until dropped:
/// "any other thread allocating now and then".
pub struct Trickle {
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl Trickle {
    /// Starts it.
    pub fn start<A: GlobalAlloc + Sync>(a: &'static A, every: Duration) -> Trickle {
        let (stop, rx) = channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut seed = 1;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                BlockList::allocate(a, 256 << 10, seed).free(a);
                seed += 1;
            }
        });
        Trickle { stop, handle }
    }

    /// Stops it.
    pub fn stop(self) {
        drop(self.stop);
        self.handle.join().expect("trickle thread panicked");
    }
}

/// Polls `rss_mb()` every 20 ms until it is at most `limit` or `within`
/// has passed; returns the last value and when it was read.
pub fn wait_for_rss(limit: f64, within: Duration) -> (f64, Duration) {
    let start = Instant::now();
    loop {
        let rss = rss_mb();
        if rss <= limit || start.elapsed() >= within {
            return (rss, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The waves shape: `total` threads in waves of `wave` alive at once; each
/// allocates `bytes_each`, frees all but a twentieth, and hands those to
/// the calling thread, which frees them after the wave (into the heaps of
/// exited threads).
pub fn waves<A: GlobalAlloc + Sync>(a: &'static A, total: usize, wave: usize, bytes_each: usize) {
    let mut seed = 0;
    for _ in 0..total / wave {
        let handles: Vec<JoinHandle<BlockList>> = (0..wave)
            .map(|_| {
                seed += 1;
                let s = seed;
                std::thread::spawn(move || {
                    let keep = BlockList::allocate(a, bytes_each / 20, s ^ 0xAB);
                    BlockList::allocate(a, bytes_each, s).free(a);
                    keep
                })
            })
            .collect();
        for h in handles {
            h.join().expect("wave thread panicked").free(a);
        }
    }
}
