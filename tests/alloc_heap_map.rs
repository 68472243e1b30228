//! `heap_map()`: the per-arena, per-pool picture agrees with what the
//! calling thread allocated and with `alloc_stats()`.

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

/// The class serving 200-byte requests: 208-byte blocks, or 224 under
/// AddressSanitizer, which adds a 16-byte redzone to each request.
fn serves_200(block_size: usize) -> bool {
    (208..=224).contains(&block_size)
}

#[test]
fn heap_map_shows_the_threads_pools() {
    // A fresh thread has a heap of its own (or adopts a parked one).
    std::thread::spawn(|| {
        let boxes: Vec<Box<[u8; 200]>> = (0..5_000).map(|_| Box::new([3; 200])).collect();
        let map = pymem::heap_map();
        assert_eq!(map.slots_per_arena, 64);
        let in_class: usize = map
            .pools
            .iter()
            .filter(|p| serves_200(p.block_size) && map.arenas[p.arena].heap == 0)
            .map(|p| p.blocks_in_use)
            .sum();
        assert!(
            in_class >= 5_000,
            "only {in_class} 208-byte blocks in this thread's pools"
        );
        for pool in &map.pools {
            assert!(pool.blocks_in_use <= pool.capacity);
            assert!((1..64).contains(&pool.slot));
            let arena = map.arenas[pool.arena];
            assert_eq!(
                arena.address % arena.size,
                0,
                "arenas are aligned to their size"
            );
        }
        for (index, arena) in map.arenas.iter().enumerate() {
            let live = map.pools.iter().filter(|p| p.arena == index).count();
            assert_eq!(live + arena.free_slots, 63);
        }
        drop(boxes);
        pymem::release_free_memory();
        let after = pymem::heap_map();
        let left: usize = after
            .pools
            .iter()
            .filter(|p| serves_200(p.block_size) && after.arenas[p.arena].heap == 0)
            .map(|p| p.blocks_in_use)
            .sum();
        assert!(
            left < 100,
            "{left} blocks of 208 bytes still in use after freeing them all"
        );
    })
    .join()
    .unwrap();
}
