//! Memory comes back from the less obvious places: an empty pool that other
//! pools were linked in front of, and blocks other threads freed into the
//! pools of a thread that keeps running without ever running dry.

use std::sync::mpsc;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

/// Pools of this thread's heap (`heap == 0` in the map) serving `size`-byte
/// requests (the size class is the next multiple of 16; under ASan's
/// redzone, one class up), as (blocks in use) per pool.
fn own_pools(size: usize) -> Vec<usize> {
    let map = pymem::heap_map();
    map.pools
        .iter()
        .filter(|p| {
            map.arenas[p.arena].heap == 0 && p.block_size >= size && p.block_size < size + 32
        })
        .map(|p| p.blocks_in_use)
        .collect()
}

#[test]
#[cfg_attr(
    pymem_asan,
    ignore = "ASan's redzone sends 512-byte requests to the system"
)]
fn trim_releases_an_empty_pool_behind_others() {
    std::thread::spawn(|| {
        // Two and a half pools of 512-byte blocks (32 per pool).
        let mut blocks: Vec<Box<[u8; 512]>> = (0..80).map(|_| Box::new([1; 512])).collect();
        let last_pool: Vec<_> = blocks.drain(64..).collect();
        drop(last_pool); // the newest pool empties and is kept as the class's last
        blocks.remove(0); // a full pool gets a free block: linked in front of it
        assert!(
            own_pools(512).contains(&0),
            "the setup keeps an empty pool: {:?}",
            own_pools(512)
        );
        pymem::release_free_memory();
        let pools = own_pools(512);
        assert!(
            !pools.contains(&0),
            "an empty pool survived release_free_memory: {pools:?}"
        );
        drop(blocks);
    })
    .join()
    .unwrap();
}

#[test]
fn a_running_owner_takes_back_what_others_freed() {
    let (to_main, from_worker) = mpsc::channel::<Vec<Box<[u8; 100]>>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        to_main
            .send((0..20_000).map(|_| Box::new([7; 100])).collect())
            .unwrap();
        // A pool with a local free list, so the loop below never runs dry
        // (running dry would collect the remote frees anyway).
        drop((0..64).map(|_| Box::new([0u8; 100])).collect::<Vec<_>>());
        done_rx.recv().unwrap();
        // Keep working in the same class without ever running dry: the
        // periodic tick must collect the remote frees.
        let mut keep = Vec::with_capacity(16);
        for i in 0..20_000 {
            keep.push(Box::new([i as u8; 100]));
            if keep.len() == 16 {
                keep.clear();
            }
        }
        let in_use: usize = own_pools(100).iter().sum();
        assert!(
            in_use < 1_000,
            "{in_use} blocks still counted in the worker's pools"
        );
    });
    let blocks = from_worker.recv().unwrap();
    drop(blocks); // 20,000 remote frees into the worker's pools
    done_tx.send(()).unwrap();
    worker.join().unwrap();
}
