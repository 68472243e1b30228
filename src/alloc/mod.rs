//! `PyMalloc`: CPython's small-object allocator, one heap per thread.
//!
//! # Arenas, pools and blocks
//!
//! Requests of at most [`SMALL_REQUEST_THRESHOLD`] (512) bytes are rounded
//! up to a multiple of 16 and served from the matching *size class*. Memory
//! comes from the OS in *arenas* of 1 MiB, each cut into 64 *pools* of
//! 16 KiB; a pool serves one size class and is cut into equal *blocks*.
//!
//! ```text
//!  arena (1 MiB, aligned to 1 MiB, mmap'd): 64 slots of 16 KiB
//! +--------------------+---------+---------+---------+-- ... --+---------+
//! | slot 0: headers    | pool 1  | pool 2  | (free)  |         | pool 63 |
//! | arena | p1 | p2 |..| 32 B    | 512 B   |         |         | 32 B    |
//! +--------------------+---------+---------+---------+-- ... --+---------+
//!          |    |                    |
//!          |    +-- 64-byte header of pool 2: owner, free list, remote
//!          |        list, class, counts
//!          v
//!      pool 1 (16 KiB, aligned to 16 KiB): nothing but blocks
//!     +-------+-------+-------+-----+-------+---------------------+
//!     | block | block | block | ... | block | not yet carved      |
//!     +-------+-------+-------+-----+-------+---------------------+
//! ```
//!
//! Arenas and pools are aligned to their own size, so from any block's
//! address the arena is `addr & !(ARENA_SIZE - 1)`, the pool's slot is the
//! next six bits, and the pool header is at `arena + 64 * slot`: no
//! per-object header, and no lookup. The headers sit side by side in slot 0
//! rather than at the front of each pool (as in CPython), because headers
//! 16 KiB apart all fall into the same few L1 cache sets; churn over all 32
//! classes ran about 17% faster this way. Because `dealloc` is given the
//! layout, the choice between pool and system allocator is recomputed from
//! it (CPython needs `address_in_range` for that; Rust callers tell us).
//!
//! # Threads
//!
//! Every thread allocates from its own *heap*: for each class a list of
//! pools with free blocks, the arenas those pools come from, and counters.
//! The fast paths are CPython's, with no atomic read-modify-write and no
//! lock:
//!
//! * `alloc`: pop the first block of the current pool of the class;
//! * `dealloc` by the owning thread: push the block on its pool's list
//!   (one dispatch, `free.rs`, answers "is this my pool?" for every caller).
//!
//! A block freed by another thread takes the *remote-free protocol*
//! (`remote.rs`): the freeing thread keeps it in its heap's *outbox*, a few
//! per-pool chains, and delivers each chain with one compare-and-swap onto
//! the pool's remote list (mimalloc's `thread_free`, batched as snmalloc
//! and jemalloc batch); the delivery that makes that list non-empty also
//! pushes the pool on the owner's *pending* list, which the owner drains
//! whenever its free lists run dry and on its periodic tick.
//!
//! Each heap has a lock (`registry.rs`), taken by its owner only on slow
//! paths (a fresh pool, taking back remote frees, an emptied pool), and by
//! *guests*: other threads that return the free memory of a heap whose
//! thread is alive but idle. A guest touches only the heap's arenas, its
//! outbox (with an asymmetric handshake that costs the owner two plain
//! stores, see `Outbox`) and the pools it takes off the pending list whose
//! every block in use has come back (see `Pool`): what the owner's fast
//! paths never touch. The protocol is model-checked with loom on the real
//! code (`loom-tests/`).
//!
//! When a thread exits (a `pthread` key's destructor, which runs after the
//! thread's `thread_local!` destructors however the thread was created),
//! its heap is *parked*: its outbox delivered, its live blocks and (within
//! the process's retention cap) its empty arenas kept; the next thread to
//! start adopts it and reuses them warm, threads freeing into a parked heap
//! collect it from time to time, and the process-wide passes trim it, so
//! memory does not grow with the number of threads a program creates.
//!
//! # fork
//!
//! Nothing on the common path takes a lock, and no lock is held across a
//! call out of the allocator, so a child after `fork` can always allocate.
//! A heap lock that a thread of the parent held at the fork stays held in
//! the child: the child's `pthread_atfork` handler starts a new *fork
//! generation*, so nobody waits for such a lock, and the heap it guards
//! (which may have been caught mid-update) is left alone for good; if it is
//! the forking thread's own heap, the thread is given a fresh one. The
//! heaps of the parent's other threads are not adopted in the child (their
//! owners may have been mid-update); what they held stays mapped there.
//! The child has no background purge thread until it asks for one.
//!
//! # Sizes, and returning memory
//!
//! 16 KiB pools and 1 MiB arenas are CPython 3.12's choice on 64-bit and
//! ours: per-pool overheads (taking a pool, linking it, the slow path when
//! it runs dry) are paid a quarter as often as with 4 KiB pools, the 512-byte
//! class wastes nothing at the end of a pool, and a pool's never-used
//! blocks are handed out by bumping a pointer, without being written first,
//! so its untouched pages never become resident. The cost is
//! slot 0 of each arena, of which only the first two pages (the headers)
//! are ever touched.
//!
//! A class allocates from the pool at the head of its list until it runs
//! dry; a pool that ran dry leaves the list, and rejoins it at the back
//! when a block is freed into it, so that it is reached again with every
//! block freed into it meanwhile rather than one (see
//! `Heap::free_to_detached`). Empty pools go back to their arena at once
//! (except the last pool of a class, kept to avoid churn at a pool
//! boundary). Pools are taken from the
//! fullest arena first (CPython's `usable_arenas` order) so lightly used
//! arenas drain. An arena whose pools are all free is *retired*: kept
//! mapped for up to 200 ms (50 ms while the process retains more than 64
//! MiB, or an eighth of what it uses, of such arenas), then unmapped with
//! `munmap`. Retirement is bounded in time, not in events: expired arenas
//! are returned by the next allocator activity of *any* thread (its tick,
//! a pool emptying, a fresh pool), which runs a process-wide pass at most
//! every 100 ms (`purge.rs`), and even with every thread idle by the
//! opt-in background thread of [`purge_in_background`] (or
//! `PYMEM_PURGE_MS`). [`release_free_memory`] returns, from any thread,
//! everything every heap can spare at once.
//!
//! # Alignment
//!
//! Blocks are aligned to the largest power of two dividing their size, so a
//! small request with an alignment above 16 is served from a class that is
//! a multiple of that alignment; alignments above 512 go to the system
//! allocator.
//!
//! # Misuse
//!
//! In debug builds (and with the `debug` feature), `dealloc` checks that the
//! pointer is the start of a block of a live pool and that the layout fits
//! it, and catches double frees, aborting with a message on stderr.

mod arena;
mod arena_bitmap;
mod asan;
#[cfg(all(not(loom), target_os = "linux", target_env = "gnu"))]
pub(crate) mod cabi;
#[cfg(not(loom))]
mod debug_large;
// The model checks drive heaps directly, without the front end that checks.
#[cfg_attr(loom, allow(dead_code))]
mod debug;
mod free;
#[cfg(not(loom))]
mod global;
mod heap;
#[cfg(not(loom))]
mod heap_slot;
#[cfg(not(loom))]
mod hooks;
#[cfg(not(loom))]
mod large;
#[cfg_attr(loom, allow(dead_code))]
mod large_cache;
#[cfg_attr(loom, allow(dead_code))]
mod large_count;
#[cfg(not(loom))]
mod large_map;
#[cfg(loom)]
pub mod model;
pub(crate) mod os;
mod pool;
mod purge;
mod registry;
mod remote;
mod size_class;
#[cfg(not(loom))]
mod snapshot;
mod span;
mod stats;
#[cfg(not(loom))]
mod thread;
#[cfg(all(
    not(loom),
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod vdso;

#[cfg(not(loom))]
pub use global::release_free_memory;
#[cfg(not(loom))]
pub use hooks::{debug_allocator_enabled, CLEAN_BYTE, DEAD_BYTE, FORBIDDEN_BYTE};
#[cfg(not(loom))]
pub use purge::purge_in_background;
pub use size_class::SMALL_REQUEST_THRESHOLD;
#[cfg(not(loom))]
pub use snapshot::{heap_map, ArenaMap, HeapMap, HeapState, PoolMap};
#[cfg(not(loom))]
pub use stats::alloc_stats;
pub use stats::{AllocStats, ClassStats};

#[cfg(not(loom))]
use global::REGISTRY;

/// CPython's `pymalloc` as a Rust global allocator.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
///
/// # fn main() {
/// let names: Vec<String> = (0..1000).map(|i| format!("object {i}")).collect();
/// assert_eq!(names[999], "object 999");
/// assert!(pymem::alloc_stats().small_blocks_in_use >= 1000);
/// # }
/// ```
///
/// It can also be driven directly, beside another allocator:
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(48, 8).unwrap();
/// // SAFETY: a non-zero layout; the block is written within its 48 bytes
/// // and freed once, with the layout it was allocated with.
/// unsafe {
///     let p = pymem::PyMalloc.alloc(layout);
///     assert!(!p.is_null());
///     p.write_bytes(0xAB, 48);
///     pymem::PyMalloc.dealloc(p, layout);
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PyMalloc;
