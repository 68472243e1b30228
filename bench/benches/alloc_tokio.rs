//! A tokio multi-threaded program passing messages between tasks, with
//! each allocator as the process's global allocator (chosen when a child
//! process starts, by `ALLOC_TOKIO` in the environment, read without
//! allocating): 10,000 tasks in a ring, 2,000 messages travelling 1,000
//! hops each (2M hops); at each hop a task takes the message's buffer
//! (16..512 bytes), builds the next one in a fresh buffer of another size
//! and sends it on, so buffers are allocated on one worker thread and freed
//! on whichever runs the next task. Two worker threads. Prints the median
//! of 5 runs per allocator, in ms, and the ratio to jemalloc. Not a
//! criterion bench; run with
//! `cargo bench --manifest-path bench/Cargo.toml --bench alloc_tokio`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use mimalloc::MiMalloc;
use snmalloc_rs::SnMalloc;
use tikv_jemallocator::Jemalloc;

const NAMES: [&str; 5] = ["pymem", "glibc", "mimalloc", "jemalloc", "snmalloc"];

struct Chosen;
static CHOICE: AtomicU8 = AtomicU8::new(u8::MAX);

fn choice() -> u8 {
    let c = CHOICE.load(Ordering::Relaxed);
    if c != u8::MAX {
        return c;
    }
    // SAFETY: `getenv` does not allocate; a NUL-terminated name.
    let v = unsafe { libc::getenv(c"ALLOC_TOKIO".as_ptr()) };
    // SAFETY: a non-null result is a NUL-terminated string.
    let c = if v.is_null() {
        1
    } else {
        unsafe { *v as u8 - b'0' }
    };
    CHOICE.store(c, Ordering::Relaxed);
    c
}

macro_rules! forward {
    ($method:ident($($arg:expr),*)) => {
        // SAFETY: forwarded caller contract; one allocator per process.
        unsafe {
            match choice() {
                0 => pymem::PyMalloc.$method($($arg),*),
                2 => MiMalloc.$method($($arg),*),
                3 => Jemalloc.$method($($arg),*),
                4 => SnMalloc.$method($($arg),*),
                _ => System.$method($($arg),*),
            }
        }
    };
}

// SAFETY: forwards every call to the one allocator chosen for the process.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        forward!(alloc(l))
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        forward!(dealloc(p, l))
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        forward!(alloc_zeroed(l))
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        forward!(realloc(p, l, n))
    }
}

#[global_allocator]
static GLOBAL: Chosen = Chosen;

const TASKS: usize = 10_000;
const MESSAGES: usize = 2_000;
const HOPS: u32 = 1_000;

struct Message {
    hops_left: u32,
    body: Vec<u8>,
}

fn size_for(seed: u64) -> usize {
    16 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize % 497
}

async fn workload() -> u64 {
    use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
    let (done_tx, mut done_rx) = unbounded_channel::<u64>();
    let mut senders: Vec<UnboundedSender<Message>> = Vec::with_capacity(TASKS);
    let mut receivers = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let (tx, rx) = unbounded_channel::<Message>();
        senders.push(tx);
        receivers.push(rx);
    }
    for (i, mut rx) in receivers.into_iter().enumerate() {
        let next = senders[(i + 1) % TASKS].clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let sum: u64 = m.body.iter().map(|&b| u64::from(b)).sum();
                if m.hops_left == 0 {
                    let _ = done.send(sum);
                    continue;
                }
                let hops_left = m.hops_left - 1;
                let size = size_for(sum ^ u64::from(hops_left));
                let mut body = Vec::with_capacity(size);
                body.extend((0..size).map(|j| (j as u8).wrapping_add(hops_left as u8)));
                drop(m);
                let _ = next.send(Message { hops_left, body });
            }
        });
    }
    for i in 0..MESSAGES {
        let size = size_for(i as u64);
        let _ = senders[i * (TASKS / MESSAGES)].send(Message {
            hops_left: HOPS,
            body: vec![i as u8; size],
        });
    }
    let mut total = 0u64;
    for _ in 0..MESSAGES {
        total = total.wrapping_add(done_rx.recv().await.expect("a message finished"));
    }
    total
}

fn child() {
    let mut times = Vec::new();
    for _ in 0..5 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let start = Instant::now();
        let total = rt.block_on(workload());
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(total);
        drop(rt);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{:.1}", times[2]);
}

fn main() {
    if std::env::var_os("ALLOC_TOKIO").is_some() {
        return child();
    }
    let me = std::env::current_exe().expect("this binary");
    let mut results = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let out = Command::new(&me)
            .env("ALLOC_TOKIO", i.to_string())
            .output()
            .expect("run a child");
        assert!(out.status.success(), "{name}: {out:?}");
        let ms: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a time");
        results.push((name, ms));
    }
    let jemalloc = results.iter().find(|(n, _)| **n == "jemalloc").unwrap().1;
    println!("tokio ring, 2M hops of 16..512-byte buffers, median of 5 (ms):");
    for (name, ms) in results {
        println!("  {name:<9} {ms:>8.1}   {:.2}x jemalloc", ms / jemalloc);
    }
}
