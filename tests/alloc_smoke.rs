//! Smoke test: the test harness itself and std collections run on PyMalloc.
use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

#[test]
fn collections_work_under_pymalloc() {
    let mut map = BTreeMap::new();
    for i in 0..100_000u32 {
        map.insert(format!("key{i:06}"), i);
    }
    assert_eq!(map.len(), 100_000);
    assert_eq!(map["key054321"], 54321);
    let mut h: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..50_000u64 {
        h.insert(i % 1000, vec![i as u8; (i % 700) as usize]);
    }
    assert_eq!(h.len(), 1000);
    let mut v: Vec<String> = (0..20_000).rev().map(|i| i.to_string()).collect();
    v.sort();
    assert_eq!(v[0], "0");
    let stats = pymem::alloc_stats();
    assert!(stats.small_blocks_in_use > 0);
    println!("{stats}");
}

#[test]
fn threads_exchange_blocks() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<[u8; 40]>>>();
    let producer = std::thread::spawn(move || {
        for round in 0..200u8 {
            let batch: Vec<Box<[u8; 40]>> = (0..500).map(|_| Box::new([round; 40])).collect();
            tx.send(batch).unwrap();
        }
    });
    let mut n = 0;
    for (round, batch) in rx.iter().enumerate() {
        for b in &batch {
            assert!(b.iter().all(|&x| x == round as u8));
        }
        n += batch.len();
    }
    producer.join().unwrap();
    assert_eq!(n, 100_000);
    for _ in 0..500 {
        std::thread::spawn(|| {
            let v: Vec<Box<u64>> = (0..100).map(Box::new).collect();
            assert_eq!(*v[99], 99);
        })
        .join()
        .unwrap();
    }
    let released = pymem::release_free_memory();
    let stats = pymem::alloc_stats();
    println!("released {released}\n{stats}");
    assert!(stats.heaps < 20, "heaps {}", stats.heaps);
}
