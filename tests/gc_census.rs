//! `gc::census()` and `Census::growth_since`: counts, bytes, order,
//! growth, display. Each test runs on its own thread, so it sees only its
//! own objects.

use std::any::type_name;
use std::cell::RefCell;

use pymem::gc::{self, Census};
use pymem::{Gc, Trace};

#[derive(Trace)]
struct Session {
    peer: RefCell<Option<Gc<Session>>>,
}

#[derive(Trace)]
struct Observer {
    session: Gc<Session>,
}

fn session() -> Gc<Session> {
    Gc::new(Session {
        peer: RefCell::new(None),
    })
}

/// Bytes before the value of a tracked sized object.
const TRACKED_HEADER: usize = if cfg!(target_pointer_width = "64") {
    24
} else {
    32
};

#[test]
fn counts_and_bytes_by_type_most_common_first() {
    assert_eq!(gc::census(), Census::default());
    let s: Vec<_> = (0..30).map(|_| session()).collect();
    let o: Vec<_> = s
        .iter()
        .take(10)
        .map(|s| Gc::new(Observer { session: s.clone() }))
        .collect();
    let _untracked = Gc::new(String::from("not listed"));
    let c = gc::census();
    assert_eq!(c.entries().len(), 2);
    assert_eq!(c.entries()[0].type_name, type_name::<Session>());
    assert_eq!(c.entries()[0].count, 30);
    assert_eq!(c.entries()[1].type_name, type_name::<Observer>());
    assert_eq!(c.count(type_name::<Observer>()), 10);
    assert_eq!(c.count_matching("::Observer"), 10);
    assert_eq!(c.total_count(), 40);
    assert_eq!(c.total_count(), gc::tracked_count());
    // Header and counts (24 bytes on 64-bit targets, 32 elsewhere) + the
    // value.
    let per = TRACKED_HEADER + size_of::<Session>();
    assert_eq!(c.get(type_name::<Session>()).unwrap().bytes, 30 * per);
    assert_eq!(c.most_common(1).len(), 1);
    assert_eq!(c.most_common(9).len(), 2);
    drop((s, o));
    assert_eq!(gc::census().total_count(), 0);
}

#[test]
fn growth_between_censuses() {
    let keep: Vec<_> = (0..5).map(|_| session()).collect();
    let before = gc::census();
    let mut leak = Vec::new();
    for _ in 0..3 {
        let s = session();
        leak.push(Gc::new(Observer { session: s.clone() }));
        leak.push(Gc::new(Observer { session: s }));
    }
    drop(keep);
    let after = gc::census();
    let g = after.growth_since(&before);
    assert_eq!(g.entries()[0].type_name, type_name::<Observer>());
    assert_eq!(g.delta(type_name::<Observer>()), 6);
    assert_eq!(g.delta(type_name::<Session>()), 3 - 5);
    assert_eq!(g.grown().len(), 1);
    assert_eq!(g.delta_matching("::Session"), -2);
    let obs = g.entries()[0];
    assert_eq!(obs.count, 6);
    assert_eq!(
        obs.bytes_delta,
        6 * (TRACKED_HEADER + size_of::<Observer>()) as isize
    );
    // A type that vanished is listed with a negative change.
    drop(leak);
    let g2 = gc::census().growth_since(&after);
    assert_eq!(g2.delta(type_name::<Observer>()), -6);
    assert_eq!(g2.entries().last().unwrap().count, 0);
    assert!(after.growth_since(&after).entries().is_empty());
}

#[test]
fn garbage_counts_until_collected_and_frozen_objects_count() {
    let a = session();
    *a.peer.borrow_mut() = Some(a.clone());
    drop(a);
    assert_eq!(gc::census().count(type_name::<Session>()), 1);
    gc::collect();
    assert_eq!(gc::census().count(type_name::<Session>()), 0);
    let f = session();
    gc::freeze();
    assert_eq!(gc::census().count(type_name::<Session>()), 1);
    gc::unfreeze();
    drop(f);
}

impl pymem::gc::Finalize for Session {
    fn finalize(_: &Gc<Self>) {}
}

#[test]
fn finalizer_objects_are_counted_with_their_type() {
    let a = session();
    let b = Gc::new_with_finalizer(Session {
        peer: RefCell::new(None),
    });
    let c = gc::census();
    assert_eq!(c.entries().len(), 1);
    assert_eq!(c.count(type_name::<Session>()), 2);
    drop((a, b));
}

#[test]
fn display_tables() {
    let v: Vec<_> = (0..12).map(|_| session()).collect();
    let before = gc::census();
    let o: Vec<_> = v
        .iter()
        .map(|s| Gc::new(Observer { session: s.clone() }))
        .collect();
    let c = gc::census();
    let table = c.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("type") && lines[0].contains("objects"));
    assert!(lines[1].starts_with("Observer") || lines[1].starts_with("Session"));
    assert!(lines[1].split_whitespace().nth(1) == Some("12"));
    assert!(lines[3].starts_with("total"));
    assert_eq!(lines[3].split_whitespace().nth(1), Some("24"));
    let g = c.growth_since(&before).to_string();
    let row = g.lines().nth(1).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[..3],
        ["Observer", "12", "+12"],
        "{g}"
    );
    drop((v, o));
}

/// A tracked slice's bytes include its elements: a census of two slices of
/// 1 and 101 handles counts 100 handles' bytes more than two of 1.
#[test]
fn slice_bytes_include_their_elements() {
    let elem = std::mem::size_of::<Gc<Session>>();
    let s = session();
    let bytes_of = |lens: [usize; 2]| {
        let slices: Vec<Gc<[Gc<Session>]>> = lens
            .iter()
            .map(|&n| (0..n).map(|_| s.clone()).collect())
            .collect();
        let c = gc::census();
        let t = c
            .entries()
            .iter()
            .find(|t| t.type_name == type_name::<[Gc<Session>]>())
            .expect("the slices are tracked");
        assert_eq!(t.count, 2);
        drop(slices);
        t.bytes
    };
    let small = bytes_of([1, 1]);
    let big = bytes_of([1, 101]);
    assert_eq!(big - small, 100 * elem);
    drop(s);
}
