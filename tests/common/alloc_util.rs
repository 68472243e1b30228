//! Helpers for the `tests/alloc_*.rs` integration tests (included with
//! `#[path = "common/alloc_util.rs"] mod alloc_util;`): a seeded SplitMix64
//! PRNG, fill patterns tied to a block's identity, `/proc/self/status`
//! readers and a lock serialising the tests that measure statistics.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[path = "rng.rs"]
mod rng;
#[allow(unused_imports)] // not every test binary draws random numbers
pub use rng::SplitMix64;

/// Bytes of a pool (pools are aligned to their size).
pub const POOL_SIZE: usize = 16 << 10;

/// The pool a small block lies in, as an address.
pub fn pool_of(p: *mut u8) -> usize {
    p as usize & !(POOL_SIZE - 1)
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th 8-byte word of the pattern of block `id`.
fn pattern_word(id: u64, i: usize) -> u64 {
    mix(id ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Fills `len` bytes at `p` with the pattern of `id` (every byte depends on
/// `id` and its position).
///
/// # Safety
/// `p` must be valid for `len` bytes of writes.
pub unsafe fn fill(p: *mut u8, len: usize, id: u64) {
    let words = len / 8;
    for i in 0..words {
        // SAFETY: within `len`.
        unsafe {
            p.add(i * 8)
                .cast::<u64>()
                .write_unaligned(pattern_word(id, i))
        };
    }
    let tail = pattern_word(id, words).to_le_bytes();
    for (j, b) in tail.iter().enumerate().take(len - words * 8) {
        // SAFETY: within `len`.
        unsafe { p.add(words * 8 + j).write(*b) };
    }
}

/// Checks that the first `len` bytes at `p` hold the pattern of `id`;
/// returns the offset of the first wrong byte.
///
/// # Safety
/// `p` must be valid for `len` bytes of reads.
pub unsafe fn check(p: *const u8, len: usize, id: u64) -> Result<(), usize> {
    let words = len / 8;
    for i in 0..words {
        // SAFETY: within `len`.
        let got = unsafe { p.add(i * 8).cast::<u64>().read_unaligned() };
        let want = pattern_word(id, i);
        if got != want {
            let first = ((got ^ want).trailing_zeros() / 8) as usize;
            return Err(i * 8 + first);
        }
    }
    let tail = pattern_word(id, words).to_le_bytes();
    for (j, b) in tail.iter().enumerate().take(len - words * 8) {
        // SAFETY: within `len`.
        if unsafe { p.add(words * 8 + j).read() } != *b {
            return Err(words * 8 + j);
        }
    }
    Ok(())
}

/// Panics with a precise message unless `p` holds the pattern of `id`.
///
/// # Safety
/// As [`check`].
pub unsafe fn assert_pattern(p: *const u8, len: usize, id: u64, what: &str) {
    // SAFETY: forwarded.
    if let Err(off) = unsafe { check(p, len, id) } {
        panic!(
            "{what}: block {id:#x} at {p:p} ({len} bytes) corrupted at offset {off} \
             (found {:#04x})",
            // SAFETY: `off < len`.
            unsafe { p.add(off).read() }
        );
    }
}

/// A layout that is valid by construction (`align` a power of two).
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// A field of `/proc/self/status` (`VmRSS`, `VmHWM`) in KiB.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary that measure allocator statistics
/// (tests run on parallel threads, whose allocations would be noise).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes each block whole (block `i` with the byte `i as u8`), checks
/// that every block kept its bytes, then frees them all with `layout`:
/// the blocks a test was handed do not overlap and hold what they should.
///
/// # Safety
/// Every block is live, holds `size` bytes, was allocated by `a` with
/// `layout`, and is not used after this call.
pub unsafe fn fill_check_and_free<A: GlobalAlloc>(
    a: &A,
    blocks: &[*mut u8],
    size: usize,
    layout: Layout,
) {
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: a live block of `size` bytes (this function's `# Safety`).
        unsafe { p.write_bytes(i as u8, size) };
    }
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: a live block of `size` bytes, written whole just above.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        assert!(
            bytes.iter().all(|&b| b == i as u8),
            "block {i} kept its bytes"
        );
        // SAFETY: allocated by `a` with `layout` (this function's
        // `# Safety`), freed once here.
        unsafe { a.dealloc(p, layout) };
    }
}

/// Waits for `pid` until `deadline`; kills it and returns None if it is
/// still running then (the fork tests' children).
pub fn wait_with_deadline(pid: libc::pid_t, deadline: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-parameter.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The bracketed word of the kernel's THP mode, if it can be read.
pub fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// One mapping of `/proc/self/smaps`.
#[derive(Debug)]
pub struct Vma {
    pub start: usize,
    pub end: usize,
    pub anon_huge_kb: u64,
    pub flags: Vec<String>,
}

pub fn smaps() -> Vec<Vma> {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                vmas.push(Vma {
                    start,
                    end,
                    anon_huge_kb: 0,
                    flags: Vec::new(),
                });
                continue;
            }
        }
        let Some(vma) = vmas.last_mut() else { continue };
        if let Some(rest) = line.strip_prefix("AnonHugePages:") {
            vma.anon_huge_kb = rest.trim().trim_end_matches("kB").trim().parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("VmFlags:") {
            vma.flags = rest.split_whitespace().map(str::to_string).collect();
        }
    }
    vmas
}

/// The mapping holding `addr`, if any.
pub fn vma_of(vmas: &[Vma], addr: usize) -> Option<&Vma> {
    vmas.iter().find(|v| v.start <= addr && addr < v.end)
}

/// Writes one byte per 4 KiB page of `p..p + len` (and its last byte),
/// `seed` plus the page's index: a pattern `check_pages` reads back.
pub fn fill_pages(p: *mut u8, len: usize, seed: u8) {
    for i in (0..len).step_by(4096).chain([len - 1]) {
        // SAFETY: `i < len`, inside the caller's live block.
        unsafe { p.add(i).write(seed.wrapping_add((i / 4096) as u8)) };
    }
}

/// Checks the bytes that `fill_pages(p, filled, seed)` wrote below `len`.
pub fn check_pages(p: *mut u8, len: usize, filled: usize, seed: u8, what: &str) {
    for i in (0..filled)
        .step_by(4096)
        .chain([filled - 1])
        .filter(|&i| i < len)
    {
        // SAFETY: `i < len`, inside the caller's live block.
        let b = unsafe { p.add(i).read() };
        assert_eq!(b, seed.wrapping_add((i / 4096) as u8), "{what}: byte {i}");
    }
}
