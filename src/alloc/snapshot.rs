//! A per-heap, per-arena, per-pool picture of the allocator, for tools that
//! want to see where memory sits (`examples/heap_map.rs` draws it as an
//! SVG).

use super::heap::Heap;
use super::os;
use super::registry::{Capacity, Locked};
use super::size_class::{blocks_per_pool, ARENA_SIZE, POOLS_PER_ARENA};
use super::{purge, thread, REGISTRY};

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
    /// yet taken back by the owner).
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
    /// Which heap owns it: an index into [`HeapMap::heaps`], where 0 is
    /// the calling thread's heap (when it has one).
    pub heap: usize,
}

/// Who a heap of a [`HeapMap`] belongs to.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
///
/// # fn main() {
/// let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
/// let map = pymem::heap_map();
/// // The calling thread allocated, so it has a heap, listed first.
/// assert_eq!(map.heaps[0].state, pymem::HeapState::Owned);
/// assert!(map.heaps[0].current_thread);
/// # drop(names);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapState {
    /// A live thread owns it and has allocated or freed lately.
    Owned,
    /// A live thread owns it but has not allocated or freed for at least
    /// 200 ms (as far as the allocator has seen: a heap counts as idle
    /// once two looks at least 200 ms apart, by `heap_map()` or by the
    /// allocator's own passes, found its counters unchanged).
    Idle,
    /// Its thread has exited; the next thread to start will adopt it.
    Parked,
}

/// One heap of a [`HeapMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeapInfo {
    /// Whose it is.
    pub state: HeapState,
    /// Whether it is the calling thread's heap.
    pub current_thread: bool,
    /// Arenas it has mapped, the retired ones included (its entries in
    /// [`HeapMap::arenas`], unless it is another live thread's heap).
    pub arenas: usize,
    /// Of those, arenas that are empty and kept mapped for reuse.
    pub retired_arenas: usize,
}

/// Every heap of the allocator at one moment, with the arenas and pools of
/// the calling thread's heap and of parked heaps. Another live thread's
/// pools change under its fast paths, which take no lock, so its heap is
/// listed with its state and arena counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HeapMap {
    /// The heaps, the calling thread's first. A heap whose lock was busy
    /// throughout the call is left out (it is working; ask again).
    pub heaps: Vec<HeapInfo>,
    /// The arenas of the calling thread's heap and of parked heaps, grouped
    /// by heap in the order of `heaps`.
    pub arenas: Vec<ArenaMap>,
    /// The pools in use of those arenas, grouped by arena, in slot order.
    pub pools: Vec<PoolMap>,
    /// Pool slots per arena, header slot included.
    pub slots_per_arena: usize,
}

/// Takes a [`HeapMap`] of every heap: the calling thread's, other live
/// threads' and the parked heaps of exited threads (see [`HeapMap`] for
/// which pools it lists).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;
///
/// # fn main() {
/// let keep: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([0; 100])).collect();
/// let map = pymem::heap_map();
/// for pool in &map.pools {
///     assert!(pool.blocks_in_use <= pool.capacity);
/// }
/// let mine = map.arenas.iter().filter(|a| a.heap == 0).count();
/// assert_eq!(mine, map.heaps[0].arenas);
/// # drop(keep);
/// # }
/// ```
pub fn heap_map() -> HeapMap {
    purge::start_from_environment();
    let mut map = HeapMap {
        slots_per_arena: POOLS_PER_ARENA,
        ..HeapMap::default()
    };
    let now = os::now_ms();
    let own = thread::current_heap();
    // SAFETY: the calling thread owns its bound heap; heaps are never
    // unmapped.
    if let Some(own) = unsafe { own.as_ref() } {
        // SAFETY: `own` is this thread's bound heap, which it owns: owner
        // capacity, what `lock_as_owner` requires.
        record(&mut map, own, true, now, || unsafe { own.lock_as_owner() });
    }
    for heap in REGISTRY.heaps() {
        if !core::ptr::eq(heap, own) {
            record(&mut map, heap, false, now, || heap.visit());
        }
    }
    map
}

/// Appends `heap`'s entry, arenas and pools to `map`, under its lock
/// (`lock` takes it).
///
/// Growing the vectors may allocate, and allocating may need the very
/// heap being walked (our own), so the lock is taken to count, released to
/// reserve room, and taken again to walk; if the heap grew meanwhile, the
/// walk starts over.
fn record<'h>(
    map: &mut HeapMap,
    heap: &'h Heap,
    current_thread: bool,
    now: u64,
    mut lock: impl FnMut() -> Option<Locked<'h>>,
) {
    loop {
        let Some(locked) = lock() else { return };
        let mut arenas = 0;
        // SAFETY: `locked` holds the heap's lock: what `for_each_arena`
        // requires.
        unsafe { heap.for_each_arena(|_| arenas += 1) };
        locked.finish();
        map.arenas.reserve(arenas);
        map.pools.reserve(arenas * POOLS_PER_ARENA);
        map.heaps.reserve(1);
        let Some(locked) = lock() else { return };
        let mut seen = 0;
        // SAFETY: `locked` holds the heap's lock: what `for_each_arena`
        // requires.
        unsafe { heap.for_each_arena(|_| seen += 1) };
        if seen > arenas {
            continue;
        }
        let state = match locked.capacity() {
            Capacity::Keeper => HeapState::Parked,
            _ if heap.note_activity(&locked, now) && !current_thread => HeapState::Idle,
            _ => HeapState::Owned,
        };
        let index = map.heaps.len();
        let mut retired = 0;
        // A guest may not read the pools' counts, which their owner writes
        // without a lock: another live thread's heap is listed with its
        // arena counts only.
        let listed = locked.in_owner_capacity();
        // SAFETY: the lock is held: the heap's arenas and the set of its
        // pools are stable; in owner capacity, so are the pools. Nothing
        // below allocates (room is reserved).
        unsafe {
            heap.for_each_arena(|arena| {
                let arena_index = map.arenas.len();
                let mut live = 0;
                retired += usize::from(arena.is_retired());
                if !listed {
                    return;
                }
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
        map.heaps.push(HeapInfo {
            state,
            current_thread,
            arenas: seen,
            retired_arenas: retired,
        });
        locked.finish();
        return;
    }
}
