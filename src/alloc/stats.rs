//! Statistics: `alloc_stats()` and its `sys._debugmallocstats`-like table.

use core::fmt;

use super::large_count::LargeSum;
use super::registry::Ownership;
use super::registry::Registry;
use super::size_class::{
    block_size, blocks_per_pool, ARENA_SIZE, NB_CLASSES, NB_SMALL_CLASSES, POOL_SIZE,
    SMALL_REQUEST_THRESHOLD,
};
use crate::sync::{fence, Ordering};

/// Statistics of one size class, part of [`AllocStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClassStats {
    /// Size in bytes of the class's blocks (16, 32, ..., 512).
    pub block_size: usize,
    /// Pools currently serving this class.
    pub pools: usize,
    /// Blocks of this class handed out and not yet freed.
    pub blocks_in_use: usize,
    /// Blocks of this class's pools that are free (including those not yet
    /// carved out of fresh pool memory).
    pub free_blocks: usize,
}

/// A snapshot of [`PyMalloc`](crate::PyMalloc)'s state, in the spirit of
/// CPython's `sys._debugmallocstats()`. Plain integers; `Display` prints the
/// table.
///
/// Counts are summed over every thread's heap when the snapshot is taken;
/// while other threads allocate, each figure is exact for some moment close
/// to the call, and `per_class` always sums to `small_blocks_in_use`.
///
/// `per_class` has the 32 small classes (16 to 512 bytes); where PyMalloc
/// is the process's `malloc` (the `override` feature, `pymem-malloc`), C's
/// `malloc` also serves blocks of up to 4,096 bytes from pools, and the
/// medium classes (528 to 4,096 bytes, 16 apart; C uses only twelve of
/// them, four per doubling from 640) follow, up to the last one that holds
/// a pool or a block;
/// their blocks are counted in the `small_*` figures too.
///
/// ```
/// let stats = pymem::alloc_stats();
/// let sum: usize = stats.per_class.iter().map(|c| c.blocks_in_use).sum();
/// assert_eq!(sum, stats.small_blocks_in_use);
/// assert_eq!(stats.per_class.len(), 32);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AllocStats {
    /// Arenas mapped now.
    pub arenas_in_use: usize,
    /// Arenas mapped since the process started.
    pub arenas_allocated_total: usize,
    /// Arenas returned to the OS since the process started.
    pub arenas_freed_total: usize,
    /// Most arenas mapped at any one time.
    pub arenas_highwater: usize,
    /// Pools serving some size class.
    pub pools_in_use: usize,
    /// Small blocks handed out and not yet freed.
    pub small_blocks_in_use: usize,
    /// Bytes in those blocks (block sizes, not requested sizes).
    pub small_bytes_in_use: usize,
    /// Allocations above the small threshold (forwarded to the system
    /// allocator, or mapped by PyMalloc for 1.75 MiB and more) not yet
    /// freed.
    pub large_allocs_in_use: usize,
    /// Bytes requested by those allocations (the sizes last asked of
    /// `alloc` or `realloc`).
    pub large_bytes_in_use: usize,
    /// Bytes of freed large blocks (513 to 8,192 bytes) that threads keep
    /// to serve their next large requests of the same size class, the
    /// system allocator's memory still. Not counted in
    /// `large_bytes_in_use`; at most 64 KiB per thread, given back to the
    /// system allocator when the thread exits, once it has been idle for
    /// 200 ms, and by [`release_free_memory`] (except, in a child process
    /// after `fork`, the cache of a thread that was inside it when the
    /// process forked: left alone, at most 64 KiB). Always 0 under the
    /// `override` feature, which has no cache (C code may free Rust's
    /// blocks and the other way round).
    ///
    /// Also counted here: the freed mappings of blocks of 1.75 MiB and
    /// more that the process keeps to serve the next such request (at
    /// most four of at most 16 MiB each, unmapped once kept for 200 ms or
    /// by [`release_free_memory`]).
    ///
    /// [`release_free_memory`]: crate::release_free_memory
    pub large_bytes_cached: usize,
    /// High-water mark of the memory PyMalloc has held: bytes of arenas
    /// mapped plus bytes of large allocations in use (cached large blocks,
    /// `large_bytes_cached`, are not counted). Never below that true
    /// high-water mark nor `small_bytes_in_use + large_bytes_in_use`;
    /// above the true one by at most 128 KiB per thread (each thread
    /// counts its large blocks ahead, in steps of 64 KiB, so that an
    /// allocation need not update a figure shared by all threads).
    pub peak_bytes_in_use: usize,
    /// Heaps (one per thread that has allocated; reused after threads exit).
    pub heaps: usize,
    /// Heaps of exited threads, waiting to be adopted by new threads.
    pub heaps_parked: usize,
    /// Bytes of empty arenas kept mapped for reuse. Each goes back to the
    /// OS once it has been empty for 200 ms and its heap's thread, another
    /// thread's allocator activity or a background purge
    /// ([`purge_in_background`]) looks at it, or at once by
    /// [`release_free_memory`]; together they never exceed 64 MiB or an
    /// eighth of the arena memory in use, whichever is larger. A heap of
    /// an exited thread keeps none unless a background purge runs.
    ///
    /// [`release_free_memory`]: crate::release_free_memory
    /// [`purge_in_background`]: crate::purge_in_background
    pub bytes_retained_empty: usize,
    /// Empty arenas kept mapped for reuse now (`bytes_retained_empty` in
    /// arenas).
    pub arenas_retired: usize,
    /// Bytes of arenas returned to the OS since the process started.
    pub bytes_returned: usize,
    /// One entry per size class, smallest first: the 32 small classes,
    /// then the medium ones up to the last in use (see above).
    pub per_class: Vec<ClassStats>,
}

/// Takes a snapshot of the allocator's statistics.
///
/// ```
/// let before = pymem::alloc_stats();
/// println!("{before}");
/// assert!(before.peak_bytes_in_use >= before.small_bytes_in_use + before.large_bytes_in_use);
/// ```
#[cfg(not(loom))]
pub fn alloc_stats() -> AllocStats {
    super::purge::start_from_environment();
    snapshot(&super::REGISTRY)
}

pub(crate) fn snapshot(registry: &Registry) -> AllocStats {
    let mut frees = [0usize; NB_CLASSES];
    let mut allocs = [0usize; NB_CLASSES];
    let mut pools = [0usize; NB_CLASSES];
    let (mut heaps, mut parked, mut cached) = (0, 0, 0);
    // Frees first: a block's free is counted after its allocation, so any
    // free seen here has its allocation seen in the second pass.
    // Large blocks likewise (see `large_count`).
    let (mut large_losses, mut large_gains) = (LargeSum::default(), LargeSum::default());
    for (class, orphan) in registry.orphan_frees.iter().enumerate() {
        frees[class] = orphan.load(Ordering::Acquire);
    }
    registry.large_orphans.add_losses(&mut large_losses);
    for heap in registry.heaps() {
        for (class, count) in frees.iter_mut().enumerate() {
            *count += heap.class_slot(class).frees.load(Ordering::Acquire);
        }
        heap.large.add_losses(&mut large_losses);
    }
    fence(Ordering::SeqCst);
    registry.large_orphans.add_gains(&mut large_gains);
    for heap in registry.heaps() {
        heap.large.add_gains(&mut large_gains);
        heaps += 1;
        cached += heap.large_cache.bytes();
        parked += usize::from(heap.state() == Ownership::Parked as u8);
        for class in 0..NB_CLASSES {
            let slot = heap.class_slot(class);
            allocs[class] += slot.allocs.load(Ordering::Acquire);
            pools[class] += slot.pools.load(Ordering::Relaxed);
        }
    }
    // The small classes always; the medium ones (C's `malloc` only) up to
    // the last that holds a pool or a block.
    let listed = (NB_SMALL_CLASSES..NB_CLASSES)
        .rev()
        .find(|&class| pools[class] != 0 || allocs[class] != frees[class])
        .map_or(NB_SMALL_CLASSES, |last| last + 1);
    let per_class: Vec<ClassStats> = (0..listed)
        .map(|class| {
            let in_use = allocs[class].saturating_sub(frees[class]);
            let capacity = pools[class] * blocks_per_pool(class);
            ClassStats {
                block_size: block_size(class),
                pools: pools[class],
                blocks_in_use: in_use,
                free_blocks: capacity.saturating_sub(in_use),
            }
        })
        .collect();
    let small_blocks_in_use = per_class.iter().map(|c| c.blocks_in_use).sum();
    let small_bytes_in_use = per_class
        .iter()
        .map(|c| c.blocks_in_use * c.block_size)
        .sum();
    let arena_bytes = registry.arena_bytes.load(Ordering::Relaxed);
    let large = LargeSum::in_use(large_gains, large_losses);
    let large_bytes_in_use = large.bytes;
    let peak = registry.peak_bytes.load(Ordering::Relaxed);
    let retained = registry.retained_bytes.load(Ordering::Relaxed);
    // The freed large mappings kept for reuse (none under loom, which
    // leaves the large paths out).
    #[cfg(not(loom))]
    let kept_mappings = super::large_map::kept_bytes();
    #[cfg(loom)]
    let kept_mappings = 0;
    AllocStats {
        arenas_in_use: arena_bytes / ARENA_SIZE,
        arenas_allocated_total: registry.arenas_allocated_total.load(Ordering::Relaxed),
        arenas_freed_total: registry.arenas_freed_total.load(Ordering::Relaxed),
        arenas_highwater: registry.arenas_highwater.load(Ordering::Relaxed),
        pools_in_use: pools.iter().sum(),
        small_blocks_in_use,
        small_bytes_in_use,
        large_allocs_in_use: large.blocks,
        large_bytes_in_use,
        large_bytes_cached: cached + kept_mappings,
        peak_bytes_in_use: peak.max(arena_bytes + large_bytes_in_use),
        heaps,
        heaps_parked: parked,
        bytes_retained_empty: retained,
        arenas_retired: retained / ARENA_SIZE,
        bytes_returned: registry.bytes_returned.load(Ordering::Relaxed),
        per_class,
    }
}

/// Formats an integer with thousands separators, as CPython's table does.
struct Grouped(usize);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        f.pad(&out)
    }
}

impl fmt::Display for AllocStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Small block threshold = {SMALL_REQUEST_THRESHOLD}, in {NB_SMALL_CLASSES} size classes."
        )?;
        if self.per_class.len() > NB_SMALL_CLASSES {
            writeln!(
                f,
                "C's malloc: medium classes up to {} bytes.",
                block_size(self.per_class.len() - 1)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "class   size   num pools   blocks in use  avail blocks")?;
        writeln!(f, "-----   ----   ---------   -------------  ------------")?;
        let (mut in_blocks, mut available, mut quantization) = (0, 0, 0);
        for (class, c) in self.per_class.iter().enumerate() {
            if c.pools == 0 && c.blocks_in_use == 0 {
                continue;
            }
            writeln!(
                f,
                "{class:>5}   {:>4}   {:>9}   {:>13}  {:>12}",
                c.block_size, c.pools, c.blocks_in_use, c.free_blocks
            )?;
            in_blocks += c.blocks_in_use * c.block_size;
            available += c.free_blocks * c.block_size;
            quantization += c.pools * (POOL_SIZE - blocks_per_pool(class) * c.block_size);
        }
        let mapped = self.arenas_in_use * ARENA_SIZE;
        // Slot 0 of each arena holds the arena's and its pools' headers.
        let headers = self.arenas_in_use * POOL_SIZE;
        let unused_pools = mapped.saturating_sub(headers + self.pools_in_use * POOL_SIZE);
        let line = |f: &mut fmt::Formatter<'_>, label: &str, n: usize| {
            writeln!(f, "{label:<35}= {:>21}", Grouped(n))
        };
        writeln!(f)?;
        line(f, "# arenas allocated total", self.arenas_allocated_total)?;
        line(f, "# arenas reclaimed", self.arenas_freed_total)?;
        line(f, "# arenas highwater mark", self.arenas_highwater)?;
        line(f, "# arenas allocated current", self.arenas_in_use)?;
        line(
            f,
            &format!("{} arenas * {ARENA_SIZE} bytes/arena", self.arenas_in_use),
            mapped,
        )?;
        writeln!(f)?;
        line(f, "# bytes in allocated blocks", in_blocks)?;
        line(f, "# bytes in available blocks", available)?;
        line(
            f,
            &format!(
                "{} unused pools * {POOL_SIZE} bytes",
                unused_pools / POOL_SIZE
            ),
            unused_pools,
        )?;
        line(f, "# bytes lost to pool headers", headers)?;
        line(f, "# bytes lost to quantization", quantization)?;
        line(
            f,
            "Total",
            in_blocks + available + unused_pools + headers + quantization,
        )?;
        writeln!(f)?;
        line(f, "# large allocations in use", self.large_allocs_in_use)?;
        line(f, "# bytes in large allocations", self.large_bytes_in_use)?;
        line(f, "# bytes in cached large blocks", self.large_bytes_cached)?;
        line(f, "# peak bytes (arenas + large)", self.peak_bytes_in_use)?;
        line(f, "# thread heaps", self.heaps)?;
        line(f, "# thread heaps parked", self.heaps_parked)?;
        line(f, "# arenas retired (empty, kept)", self.arenas_retired)?;
        line(f, "# bytes retained empty", self.bytes_retained_empty)?;
        write!(
            f,
            "{:<35}= {:>21}",
            "# bytes returned to the OS",
            Grouped(self.bytes_returned)
        )
    }
}
