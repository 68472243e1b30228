//! A per-arena, per-pool picture of the heap, for tools that want to see
//! where memory sits (`examples/heap_map.rs` draws it as an SVG).

use super::heap::{Heap, HeapState};
use super::size_class::{blocks_per_pool, ARENA_SIZE, POOLS_PER_ARENA};
use super::{thread, REGISTRY};

/// One pool of a [`HeapMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolMap {
    /// Index of the arena in [`HeapMap::arenas`].
    pub arena: usize,
    /// Slot of the pool in its arena (1..64; slot 0 holds the headers).
    pub slot: usize,
    /// Block size of the pool's size class.
    pub block_size: usize,
    /// Blocks handed out (including those freed by other threads and not
    /// yet collected by the owner).
    pub blocks_in_use: usize,
    /// Blocks the pool holds when full.
    pub capacity: usize,
}

/// One arena of a [`HeapMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArenaMap {
    /// Address of the arena.
    pub address: usize,
    /// Bytes mapped (`ARENA_SIZE`).
    pub size: usize,
    /// Pool slots (excluding the header slot) not serving any class.
    pub free_slots: usize,
    /// Which heap owns it: 0 for the calling thread, 1.. for parked heaps
    /// of exited threads, in registry order.
    pub heap: usize,
}

/// Every arena and pool of the calling thread's heap and of the heaps of
/// exited threads, at one moment. The heaps of other live threads are not
/// included: only their owners may read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HeapMap {
    /// The arenas, the calling thread's first.
    pub arenas: Vec<ArenaMap>,
    /// The pools in use, grouped by arena, in slot order.
    pub pools: Vec<PoolMap>,
    /// Pool slots per arena, header slot included.
    pub slots_per_arena: usize,
}

/// Takes a [`HeapMap`] of the calling thread's heap and of parked heaps.
///
/// ```
/// let keep: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([0; 100])).collect();
/// let map = pymem::heap_map();
/// for pool in &map.pools {
///     assert!(pool.blocks_in_use <= pool.capacity);
/// }
/// # drop(keep);
/// ```
pub fn heap_map() -> HeapMap {
    let mut map = HeapMap {
        slots_per_arena: POOLS_PER_ARENA,
        ..HeapMap::default()
    };
    let own = thread::current_heap();
    if !own.is_null() {
        // SAFETY: the calling thread owns its bound heap.
        unsafe { record(own, 0, &mut map) };
    }
    let mut index = 0;
    REGISTRY.for_each_heap(|heap| {
        if heap.try_claim(HeapState::Busy) {
            index += 1;
            let heap = heap as *const Heap as *mut Heap;
            // SAFETY: claimed just now; parked again right after.
            unsafe {
                record(heap, index, &mut map);
                (*heap).park();
            }
        }
    });
    map
}

/// Appends `heap`'s arenas and pools to `map`.
///
/// Growing the vectors may allocate, and allocating may map an arena into
/// the very heap being walked, so the walk only starts once both vectors
/// have room for everything it can find, and starts again if the heap grew.
unsafe fn record(heap: *mut Heap, index: usize, map: &mut HeapMap) {
    loop {
        let mut arenas = 0;
        // SAFETY: the caller owns or has claimed the heap.
        unsafe { (*heap).for_each_arena(|_| arenas += 1) };
        map.arenas.reserve(arenas + 1);
        map.pools.reserve((arenas + 1) * POOLS_PER_ARENA);
        let mut seen = 0;
        // SAFETY: as above.
        unsafe { (*heap).for_each_arena(|_| seen += 1) };
        if seen <= arenas + 1 {
            break;
        }
    }
    // SAFETY: as above; nothing below allocates (capacity is reserved).
    unsafe {
        (*heap).for_each_arena(|arena| {
            let arena_index = map.arenas.len();
            let mut live = 0;
            arena.for_each_live_pool(|pool| {
                live += 1;
                map.pools.push(PoolMap {
                    arena: arena_index,
                    slot: pool.slot_index(),
                    block_size: pool.block_size(),
                    blocks_in_use: pool.used.get() as usize,
                    capacity: blocks_per_pool(pool.class()),
                });
            });
            map.arenas.push(ArenaMap {
                address: arena as *const _ as usize,
                size: ARENA_SIZE,
                free_slots: POOLS_PER_ARENA - 1 - live,
                heap: index,
            });
        })
    };
}
