//! PyMalloc (placeholder forwarding to the system allocator while the pool
//! allocator is written).
use std::alloc::{GlobalAlloc, Layout, System};

/// Requests of at most this many bytes are served from pools.
pub const SMALL_REQUEST_THRESHOLD: usize = 512;

/// The allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyMalloc;

// SAFETY: forwards to System.
unsafe impl GlobalAlloc for PyMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Per-class statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size.
    pub block_size: usize,
    /// Pools.
    pub pools: usize,
    /// Blocks in use.
    pub blocks_in_use: usize,
    /// Free blocks.
    pub free_blocks: usize,
}

/// Allocator statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Arenas mapped now.
    pub arenas_in_use: usize,
    /// Arenas ever mapped.
    pub arenas_allocated_total: usize,
    /// Arenas ever unmapped.
    pub arenas_freed_total: usize,
    /// Pools in use.
    pub pools_in_use: usize,
    /// Small blocks in use.
    pub small_blocks_in_use: usize,
    /// Bytes in small blocks in use.
    pub small_bytes_in_use: usize,
    /// Large allocations in use.
    pub large_allocs_in_use: usize,
    /// Bytes of large allocations in use.
    pub large_bytes_in_use: usize,
    /// Peak bytes.
    pub peak_bytes_in_use: usize,
    /// Per class.
    pub per_class: Vec<ClassStats>,
}

impl std::fmt::Display for AllocStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Statistics snapshot.
pub fn alloc_stats() -> AllocStats {
    AllocStats::default()
}

/// Returns free memory to the OS.
pub fn release_free_memory() -> usize {
    0
}
