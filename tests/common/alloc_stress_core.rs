//! The randomized multi-threaded allocator stress workload, shared by
//! `tests/alloc_stress.rs` (fixed size, for CI) and `examples/soak.rs` (runs
//! for as long as asked). Both include it with `#[path]` beside
//! `alloc_util.rs`, at their crate root.
//!
//! `threads` slots each run a succession of short-lived worker threads
//! (so threads exit with live blocks and new ones adopt their heaps). A
//! worker allocates blocks of mixed sizes 1..=4,096 and alignments up to
//! 4,096 through the global allocator, fills each with a pattern naming its
//! owner (word 0 is `owner << 32 | seq` when the block has room, and every
//! other byte derives from it), and then at random frees one, reallocates
//! one, sends one to a random slot's inbox, or takes in its own inbox and
//! frees or keeps what it finds. A worker that ends leaves half its blocks
//! as orphans for the next workers. Every block is verified in full by
//! whoever frees or reallocates it, and a mismatch panics naming the
//! block's owner and what was found instead.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::alloc_util::{check, fill, SplitMix64};

/// A live block: address, layout, and the id its pattern was written with.
#[derive(Debug)]
pub struct Block {
    addr: usize,
    size: u32,
    align: u32,
    id: u64,
}

fn owner_of(id: u64) -> String {
    who(id >> 32)
}

fn seq_of(id: u64) -> u64 {
    id & 0xFFFF_FFFF
}

/// A worker's name: `slot.life` (owner ids are `life << 8 | slot`).
fn who(owner: u64) -> String {
    if owner == MAIN {
        "main".into()
    } else {
        format!("worker {}.{}", owner & 0xFF, owner >> 8)
    }
}

/// The owner id of the thread draining what is left at the end.
const MAIN: u64 = 0xFFFF_FFFF;

fn random_layout(rng: &mut SplitMix64) -> Layout {
    let size = match rng.below(20) {
        0..=9 => rng.range(1, 64),
        10..=14 => rng.range(65, 512),
        15..=16 => rng.range(513, 4096),
        _ => 1 << rng.range(0, 12),
    };
    let align = if rng.percent(90) {
        1 << rng.range(0, 4)
    } else {
        1 << rng.range(5, 12)
    };
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Writes the pattern of `id` over `size` bytes at `p`.
///
/// # Safety
/// `p` must be valid for `size` bytes of writes.
unsafe fn write_pattern(p: *mut u8, size: usize, id: u64) {
    // SAFETY: forwarded.
    unsafe {
        if size >= 8 {
            p.cast::<u64>().write_unaligned(id);
            fill(p.add(8), size - 8, id);
        } else {
            fill(p, size, id);
        }
    }
}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size as usize, self.align as usize).expect("valid layout")
    }

    fn alloc<A: GlobalAlloc>(a: &A, rng: &mut SplitMix64, owner: u64, seq: u64) -> Block {
        let l = random_layout(rng);
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null(), "{}: alloc({l:?}) returned null", who(owner));
        assert_eq!(
            p as usize % l.align(),
            0,
            "{}: {p:p} misaligned for {l:?}",
            who(owner)
        );
        let id = owner << 32 | seq;
        // SAFETY: the block holds `l.size()` bytes.
        unsafe { write_pattern(p, l.size(), id) };
        Block {
            addr: p as usize,
            size: l.size() as u32,
            align: l.align() as u32,
            id,
        }
    }

    /// Verifies the first `len` bytes of the pattern; panics naming the
    /// owner on a mismatch.
    fn verify_prefix(&self, len: usize, by: u64, what: &str) {
        let p = self.addr as *const u8;
        let bad = if len >= 8 {
            // SAFETY: the block holds at least `len` bytes.
            let tag = unsafe { p.cast::<u64>().read_unaligned() };
            if tag != self.id {
                panic!(
                    "{} {what}: block of {} #{} ({} bytes at {p:p}) carries the tag of {} #{} \
                     (handed out twice, or overwritten)",
                    who(by),
                    owner_of(self.id),
                    seq_of(self.id),
                    self.size,
                    owner_of(tag),
                    seq_of(tag)
                );
            }
            // SAFETY: as above.
            unsafe { check(p.add(8), len - 8, self.id) }.map_err(|off| off + 8)
        } else {
            // SAFETY: as above.
            unsafe { check(p, len, self.id) }
        };
        if let Err(off) = bad {
            panic!(
                "{} {what}: block of {} #{} ({} bytes at {p:p}) corrupted at offset {off}",
                who(by),
                owner_of(self.id),
                seq_of(self.id),
                self.size
            );
        }
    }

    fn free<A: GlobalAlloc>(self, a: &A, by: u64) {
        self.verify_prefix(self.size as usize, by, "freeing");
        // SAFETY: live with this layout.
        unsafe { a.dealloc(self.addr as *mut u8, self.layout()) };
    }

    fn realloc<A: GlobalAlloc>(&mut self, a: &A, rng: &mut SplitMix64, by: u64, seq: u64) {
        self.verify_prefix(self.size as usize, by, "before realloc");
        let new_size = random_layout(rng).size();
        // SAFETY: live with this layout; non-zero new size.
        let p = unsafe { a.realloc(self.addr as *mut u8, self.layout(), new_size) };
        assert!(
            !p.is_null(),
            "{}: realloc to {new_size} returned null",
            who(by)
        );
        assert_eq!(
            p as usize % self.align as usize,
            0,
            "{}: realloc to {new_size} misaligned for {}",
            who(by),
            self.align
        );
        let kept = (self.size as usize).min(new_size);
        self.addr = p as usize;
        // The prefix must have survived the move (word 0 only when whole).
        self.verify_prefix(
            if kept >= 8 || self.size < 8 { kept } else { 0 },
            by,
            "after realloc",
        );
        self.size = new_size as u32;
        self.id = by << 32 | seq;
        // SAFETY: the block now holds `new_size` bytes.
        unsafe { write_pattern(p, new_size, self.id) };
    }
}

/// Sizes of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Slots, each running one worker thread at a time.
    pub threads: usize,
    /// Operations of one worker thread before it exits and is replaced.
    pub ops_per_life: u64,
    /// Blocks a worker keeps at most.
    pub max_local: usize,
    /// Blocks waiting in one inbox at most (beyond it, senders free instead).
    pub max_inbox: usize,
    /// Orphans kept at most for the next workers (beyond it, freed).
    pub max_orphans: usize,
}

/// State shared by all workers.
pub struct Shared {
    inboxes: Vec<Mutex<Vec<Block>>>,
    orphans: Mutex<Vec<Block>>,
    /// Operations done so far (updated every few hundred).
    pub ops: AtomicU64,
    /// Blocks verified and freed so far.
    pub freed: AtomicU64,
    /// Worker threads that have run to completion.
    pub lives: AtomicU64,
    /// Set to make workers stop early (soak).
    pub stop: AtomicBool,
    cfg: Config,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Empty inboxes for `cfg.threads` slots.
    pub fn new(cfg: Config) -> Self {
        Shared {
            inboxes: (0..cfg.threads).map(|_| Mutex::new(Vec::new())).collect(),
            orphans: Mutex::new(Vec::new()),
            ops: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            lives: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            cfg,
        }
    }

    /// One worker thread's life in slot `slot`; `owner` names its blocks.
    pub fn worker<A: GlobalAlloc>(&self, a: &A, slot: usize, owner: u64) {
        let cfg = self.cfg;
        let mut rng = SplitMix64::new(owner.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA110C);
        let mut local: Vec<Block> = Vec::with_capacity(cfg.max_local);
        {
            let mut orphans = lock(&self.orphans);
            let n = orphans.len().min(cfg.max_local / 2);
            let at = orphans.len() - n;
            local.extend(orphans.drain(at..));
        }
        let mut seq = 0u64;
        let mut freed = 0u64;
        let mut pending_ops = 0u64;
        let mut inbox: Vec<Block> = Vec::new();
        for _ in 0..cfg.ops_per_life {
            pending_ops += 1;
            if pending_ops == 256 {
                self.ops.fetch_add(pending_ops, Ordering::Relaxed);
                self.freed.fetch_add(freed, Ordering::Relaxed);
                (pending_ops, freed) = (0, 0);
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            seq += 1;
            let roll = rng.below(100);
            if local.is_empty() || roll < 35 {
                if local.len() >= cfg.max_local {
                    let i = rng.below(local.len());
                    local.swap_remove(i).free(a, owner);
                    freed += 1;
                }
                local.push(Block::alloc(a, &mut rng, owner, seq));
            } else if roll < 50 {
                let i = rng.below(local.len());
                local.swap_remove(i).free(a, owner);
                freed += 1;
            } else if roll < 70 {
                let i = rng.below(local.len());
                let b = local.swap_remove(i);
                let to = rng.below(cfg.threads);
                let mut target = lock(&self.inboxes[to]);
                if target.len() < cfg.max_inbox {
                    target.push(b);
                } else {
                    drop(target);
                    b.free(a, owner);
                    freed += 1;
                }
            } else if roll < 75 {
                let i = rng.below(local.len());
                local[i].realloc(a, &mut rng, owner, seq);
            } else if roll < 85 {
                std::mem::swap(&mut inbox, &mut lock(&self.inboxes[slot]));
                for b in inbox.drain(..) {
                    if local.len() < cfg.max_local && rng.percent(30) {
                        b.verify_prefix(b.size as usize, owner, "adopting");
                        local.push(b);
                    } else {
                        b.free(a, owner);
                        freed += 1;
                    }
                }
            } else {
                local.push(Block::alloc(a, &mut rng, owner, seq));
                if local.len() > cfg.max_local {
                    let i = rng.below(local.len());
                    local.swap_remove(i).free(a, owner);
                    freed += 1;
                }
            }
        }
        // Exit: leave half the blocks (verified later by someone else).
        let mut orphans = lock(&self.orphans);
        for b in local {
            if orphans.len() < cfg.max_orphans && rng.percent(50) {
                orphans.push(b);
            } else {
                b.free(a, owner);
                freed += 1;
            }
        }
        drop(orphans);
        self.ops.fetch_add(pending_ops, Ordering::Relaxed);
        self.freed.fetch_add(freed, Ordering::Relaxed);
        self.lives.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `slot`: worker after worker, until `lives` have run or `stop`
    /// is set. A worker's panic is propagated.
    pub fn run_slot<A: GlobalAlloc + Sync>(&self, a: &A, slot: usize, lives: u64) {
        for life in 0..lives {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let owner = (life << 8) | slot as u64;
            let result = std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name(format!("stress-{slot}-{life}"))
                    .spawn_scoped(s, || self.worker(a, slot, owner))
                    .expect("spawn worker")
                    .join()
            });
            if let Err(panic) = result {
                self.stop.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Runs every slot at once for `lives` workers each.
    pub fn run<A: GlobalAlloc + Sync>(&self, a: &A, lives: u64) {
        std::thread::scope(|s| {
            let slots: Vec<_> = (0..self.cfg.threads)
                .map(|slot| s.spawn(move || self.run_slot(a, slot, lives)))
                .collect();
            // Joining each handle waits until the thread has really exited
            // (thread-local destructors included), which leaving the scope
            // alone does not.
            for h in slots {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
    }

    /// Frees (verifying) everything left in inboxes and orphans; returns how
    /// many blocks that was.
    pub fn drain<A: GlobalAlloc>(&self, a: &A) -> usize {
        let mut n = 0;
        for inbox in &self.inboxes {
            for b in lock(inbox).drain(..) {
                b.free(a, MAIN);
                n += 1;
            }
        }
        for b in lock(&self.orphans).drain(..) {
            b.free(a, MAIN);
            n += 1;
        }
        self.freed.fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}
