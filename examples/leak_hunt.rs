//! Hunting a leak that goes through a reference cycle, with
//! `gc::census()` and `gc::set_debug(gc::DEBUG_COLLECTABLE)`.
//!
//! A server handles requests in rounds. Each request opens a `Session`
//! and subscribes an `Observer` to a long-lived `EventBus`; the observer
//! points back at its session.
//!
//! 1. **The leak.** The bus holds its observers strongly and nobody
//!    unsubscribes: every session stays reachable from the bus, so no
//!    collection can free it. Memory grows; `gc::collect()` finds nothing;
//!    the census growth between two rounds names the culprits.
//! 2. **Half a fix.** The bus now holds `Weak`s, but a session holds its
//!    observer and the observer its session: every request leaves a
//!    garbage cycle that only the collector reclaims (with `gc::disable()`,
//!    or between collections, they pile up). `DEBUG_COLLECTABLE` names
//!    what each collection reclaims; `DEBUG_SAVEALL` keeps it to look at.
//! 3. **The fix.** The observer's back-pointer becomes a `Weak`: sessions
//!    are freed by reference counting the moment a request ends, and the
//!    collector finds nothing.
//!
//! Run with `cargo run --release --example leak_hunt`.

use std::cell::RefCell;

use pymem::{gc, Gc, Trace, Weak};

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

const REQUESTS: u32 = 1_000;

/// Lives for the whole program.
#[derive(Trace, Default)]
struct EventBus {
    strong: RefCell<Vec<Gc<Observer>>>,
    weak: RefCell<Vec<Weak<Observer>>>,
}

#[derive(Trace)]
struct Session {
    id: u32,
    payload: Vec<u8>,
    observer: RefCell<Option<Gc<Observer>>>,
}

#[derive(Trace)]
struct Observer {
    /// Version 1 and 2: a strong back-reference.
    session: Option<Gc<Session>>,
    /// Version 3: a weak one.
    session_weak: Weak<Session>,
}

#[derive(Clone, Copy, PartialEq)]
enum Version {
    Leaky,
    Cyclic,
    Fixed,
}

fn handle_request(bus: &EventBus, id: u32, v: Version) {
    let session = Gc::new(Session {
        id,
        payload: vec![0; 64],
        observer: RefCell::new(None),
    });
    let observer = Gc::new(Observer {
        session: (v != Version::Fixed).then(|| session.clone()),
        session_weak: Gc::downgrade(&session),
    });
    *session.observer.borrow_mut() = Some(observer.clone());
    match v {
        Version::Leaky => bus.strong.borrow_mut().push(observer),
        _ => bus.weak.borrow_mut().push(Gc::downgrade(&observer)),
    }
    // ... the request is served, the session goes out of scope.
    assert_eq!(session.payload.len(), 64);
}

fn round(bus: &EventBus, v: Version) {
    for id in 0..REQUESTS {
        handle_request(bus, id, v);
    }
    // A real bus would prune dead weak entries now and then.
    bus.weak.borrow_mut().retain(|w| w.upgrade().is_some());
}

fn main() {
    let bus = EventBus::default();

    println!("== 1. memory grows: what is piling up? ==\n");
    round(&bus, Version::Leaky); // warm up
    gc::collect();
    let before = gc::census();
    round(&bus, Version::Leaky);
    let found = gc::collect();
    let growth = gc::census().growth_since(&before);
    println!("after one more round of {REQUESTS} requests, gc::collect() found {found} unreachable objects,");
    println!("but the census grew:\n\n{growth}");
    assert_eq!(found, 0);
    assert_eq!(growth.delta_matching("::Session"), REQUESTS as isize);
    assert_eq!(growth.delta_matching("::Observer"), REQUESTS as isize);
    let oldest = bus.strong.borrow()[0].session.clone().unwrap();
    println!(
        "One Session and one Observer per request survive, reachable from the bus: \
         the oldest, session #{}, is still there. Nobody unsubscribes.\n",
        oldest.id
    );
    drop(oldest);
    bus.strong.borrow_mut().clear(); // unsubscribe everyone
    let freed = gc::collect();
    println!(
        "Clearing the bus leaves {freed} objects that only the collector can free \
         (each Session and its Observer form a cycle).\n"
    );
    assert_eq!(freed, 4 * REQUESTS as usize);

    println!("== 2. the bus holds Weak observers; with automatic collection off ==\n");
    gc::disable();
    let before = gc::census();
    round(&bus, Version::Cyclic);
    println!("{}", gc::census().growth_since(&before));
    println!("gc::set_debug(gc::DEBUG_COLLECTABLE); gc::collect() prints on stderr:");
    gc::set_debug(gc::DEBUG_COLLECTABLE);
    let freed = gc::collect();
    gc::set_debug(0);
    println!("-> {freed} objects reclaimed: every request leaves a Session <-> Observer cycle.\n");
    assert_eq!(freed, 2 * REQUESTS as usize);

    println!("With DEBUG_SAVEALL the cycles are kept instead, to be looked at:");
    gc::set_debug(gc::DEBUG_SAVEALL);
    handle_request(&bus, 0, Version::Cyclic);
    gc::collect();
    for g in gc::garbage() {
        println!("  {g}  ({} bytes)", g.size);
    }
    gc::set_debug(0);
    println!("gc::clear_garbage() reclaimed {}.\n", gc::clear_garbage());

    println!("== 3. the fix: the Observer points back with a Weak ==\n");
    let before = gc::census();
    round(&bus, Version::Fixed);
    let growth = gc::census().growth_since(&before);
    let found = gc::collect();
    println!(
        "census growth over a round: {} types changed; gc::collect() found {found}: \
         sessions are freed by reference counting as soon as a request ends.",
        growth.entries().len()
    );
    assert!(growth.entries().is_empty());
    assert_eq!(found, 0);
    gc::enable();
    let leftover = bus.weak.borrow().iter().filter_map(Weak::upgrade).count();
    assert_eq!(leftover, 0);
    // Observer::session_weak is read by real handlers:
    assert!(bus.weak.borrow().iter().all(|w| w
        .upgrade()
        .is_none_or(|o| o.session_weak.upgrade().is_some())));
}
