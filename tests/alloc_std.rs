//! std collections give correct results with `PyMalloc` as the global
//! allocator.
//!
//! Checks, each against an independent expectation:
//! * a `BTreeMap` of 1M `String` keys (200k in debug builds): lookups,
//!   ordered iteration, removal of half, re-insertion;
//! * `HashMap` churn against a plain `Vec` model indexed by key;
//! * sorting a large `Vec<String>`: result ordered and a permutation of the
//!   input (multiset checksum);
//! * `Vec`, `String` and `VecDeque` growth through `realloc` from a few bytes
//!   past the small-block threshold into the system allocator, contents
//!   verified at every capacity change;
//! * `Box`, `Rc` and `Arc` payloads moved and dropped across threads.

#[path = "common/alloc_util.rs"]
mod alloc_util;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use alloc_util::{mix, SplitMix64};
use pymem::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc;

const MAP_KEYS: usize = if cfg!(debug_assertions) {
    200_000
} else {
    1_000_000
};

fn key(i: usize) -> String {
    format!("k{:016x}", mix(i as u64))
}

#[test]
fn btreemap_of_many_strings() {
    let mut map: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for i in 0..MAP_KEYS {
        let value = "v".repeat(i % 40);
        assert!(
            map.insert(key(i), (i, value)).is_none(),
            "duplicate key {i}"
        );
    }
    assert_eq!(map.len(), MAP_KEYS);
    for i in (0..MAP_KEYS).step_by(97) {
        let (n, v) = &map[&key(i)];
        assert_eq!((*n, v.len()), (i, i % 40));
        assert!(v.bytes().all(|b| b == b'v'));
    }
    let mut prev: Option<&String> = None;
    let mut seen = 0usize;
    for (k, (i, _)) in &map {
        assert_eq!(*k, key(*i), "key and value disagree");
        if let Some(p) = prev {
            assert!(p < k, "iteration out of order: {p} then {k}");
        }
        prev = Some(k);
        seen += 1;
    }
    assert_eq!(seen, MAP_KEYS);
    for i in (0..MAP_KEYS).filter(|i| i % 2 == 1) {
        let (n, _) = map.remove(&key(i)).expect("present");
        assert_eq!(n, i);
    }
    assert_eq!(map.len(), MAP_KEYS.div_ceil(2));
    assert!(map.keys().all(|k| {
        let (i, _) = &map[k];
        i % 2 == 0
    }));
    for i in (0..MAP_KEYS).filter(|i| i % 2 == 1).take(1000) {
        map.insert(key(i), (i, String::new()));
    }
    assert_eq!(map.len(), MAP_KEYS.div_ceil(2) + 1000);
}

#[test]
fn hashmap_churn_matches_a_model() {
    const KEYS: usize = 20_000;
    let ops = if cfg!(debug_assertions) {
        300_000
    } else {
        2_000_000
    };
    let mut rng = SplitMix64::new(42);
    let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut model: Vec<Option<(u8, usize)>> = vec![None; KEYS];
    for _ in 0..ops {
        let k = rng.below(KEYS);
        if rng.percent(60) {
            let len = rng.below(300);
            let byte = rng.next_u64() as u8;
            map.insert(k as u64, vec![byte; len]);
            model[k] = Some((byte, len));
        } else {
            let got = map.remove(&(k as u64));
            let want = model[k].take();
            match (got, want) {
                (None, None) => {}
                (Some(v), Some((byte, len))) => {
                    assert_eq!(v.len(), len, "key {k}");
                    assert!(v.iter().all(|&b| b == byte), "key {k} corrupted");
                }
                (got, want) => panic!("key {k}: map {:?} vs model {want:?}", got.map(|v| v.len())),
            }
        }
    }
    assert_eq!(map.len(), model.iter().flatten().count());
    for (k, v) in &map {
        let (byte, len) = model[*k as usize].expect("in model");
        assert_eq!(v.len(), len);
        assert!(v.iter().all(|&b| b == byte));
    }
}

#[test]
fn sorting_a_large_vec_of_strings() {
    let n = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let mut rng = SplitMix64::new(7);
    let mut v: Vec<String> = (0..n)
        .map(|_| {
            let len = rng.range(0, 60);
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let checksum = |v: &[String]| -> (u64, usize) {
        v.iter().fold((0u64, 0usize), |(h, len), s| {
            let sh = s.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
            });
            (h.wrapping_add(mix(sh)), len + s.len())
        })
    };
    let before = checksum(&v);
    v.sort();
    assert!(v.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    assert_eq!(checksum(&v), before, "sorting lost or changed strings");
    v.sort_unstable_by(|a, b| b.cmp(a));
    assert!(v.windows(2).all(|w| w[0] >= w[1]), "not reverse sorted");
    assert_eq!(checksum(&v), before);
    v.dedup();
    assert!(v.len() <= n);
}

#[test]
fn vec_string_and_deque_grow_through_realloc() {
    // u8 pushes: the buffer passes every small class, then the threshold.
    let mut bytes: Vec<u8> = Vec::new();
    let mut cap = bytes.capacity();
    for i in 0..200_000usize {
        bytes.push((i % 251) as u8);
        if bytes.capacity() != cap {
            cap = bytes.capacity();
            assert!(
                bytes.iter().enumerate().all(|(j, &b)| b == (j % 251) as u8),
                "Vec<u8> prefix lost when growing to capacity {cap}"
            );
        }
    }
    // u64 pushes and shrink_to_fit (realloc down, across the threshold).
    let mut words: Vec<u64> = Vec::new();
    for i in 0..100_000u64 {
        words.push(mix(i));
    }
    words.truncate(40);
    words.shrink_to_fit();
    assert!(words.iter().enumerate().all(|(i, &w)| w == mix(i as u64)));
    words.truncate(3);
    words.shrink_to_fit();
    assert_eq!(words, [mix(0), mix(1), mix(2)]);
    // String growth by pushes of multi-byte chars.
    let mut s = String::new();
    for i in 0..50_000u32 {
        s.push(char::from_u32(0x3B1 + i % 20).unwrap());
    }
    assert_eq!(s.chars().count(), 50_000);
    assert!(s
        .chars()
        .enumerate()
        .all(|(i, c)| c as u32 == 0x3B1 + i as u32 % 20));
    // VecDeque: push at both ends, wrapping around.
    let mut d: VecDeque<u32> = VecDeque::new();
    for i in 0..100_000u32 {
        if i % 3 == 0 {
            d.push_front(i);
        } else {
            d.push_back(i);
        }
        if i % 7 == 0 {
            d.pop_front();
        }
    }
    let sum: u64 = d.iter().map(|&x| u64::from(x)).sum();
    let mut model: VecDeque<u32> = VecDeque::with_capacity(100_000);
    for i in 0..100_000u32 {
        if i % 3 == 0 {
            model.push_front(i);
        } else {
            model.push_back(i);
        }
        if i % 7 == 0 {
            model.pop_front();
        }
    }
    assert_eq!(d, model);
    assert_eq!(sum, model.iter().map(|&x| u64::from(x)).sum::<u64>());
}

#[test]
fn boxes_rcs_and_arcs_across_threads() {
    let shared: Arc<Vec<Arc<String>>> = Arc::new(
        (0..10_000)
            .map(|i| Arc::new(format!("shared {i}")))
            .collect(),
    );
    let handles: Vec<_> = (0..4usize)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let local: Vec<Rc<Box<[u64]>>> = (0..2_000u64)
                    .map(|i| Rc::new(vec![i ^ t as u64; (i % 70) as usize].into_boxed_slice()))
                    .collect();
                let clones: Vec<Arc<String>> = shared.iter().step_by(t + 1).cloned().collect();
                for (i, r) in local.iter().enumerate() {
                    assert!(r.iter().all(|&x| x == i as u64 ^ t as u64));
                }
                // Hand back boxes this thread allocated: freed by main.
                let out: Vec<Box<[u8; 100]>> = (0..1_000)
                    .map(|i| Box::new([(i % 256) as u8; 100]))
                    .collect();
                (clones, out)
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let (clones, out) = h.join().expect("thread panicked");
        assert_eq!(clones.len(), 10_000usize.div_ceil(t + 1));
        for (i, s) in clones.iter().enumerate() {
            assert_eq!(**s, format!("shared {}", i * (t + 1)));
        }
        for (i, b) in out.iter().enumerate() {
            assert!(b.iter().all(|&x| x == (i % 256) as u8));
        }
    }
    assert_eq!(Arc::strong_count(&shared), 1);
    assert!(shared.iter().all(|s| Arc::strong_count(s) == 1));
}
