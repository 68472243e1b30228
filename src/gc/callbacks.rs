//! Closures called at the start and the stop of every collection on this
//! thread, as Python's `gc.callbacks` list.
//!
//! Each is called with the [`Phase`] and a [`CallbackInfo`]. They run
//! while the collection is in progress, so a callback that calls
//! [`gc::collect`](crate::gc::collect) gets 0 and starts nothing. A
//! callback may add or remove callbacks (the change applies from the next
//! collection). A panic in a callback does not disturb the collection: the
//! remaining callbacks run, and the first panic is resumed when the
//! collection is over.
//!
//! ```
//! use pymem::gc::{self, callbacks, Phase};
//! use std::cell::RefCell;
//! use std::rc::Rc;
//!
//! let log = Rc::new(RefCell::new(Vec::new()));
//! let l = log.clone();
//! let id = callbacks::add(move |phase, info| {
//!     l.borrow_mut().push((phase, info.generation, info.collected));
//! });
//! gc::collect();
//! callbacks::remove(id);
//! gc::collect();
//! assert_eq!(*log.borrow(), [(Phase::Start, 2, 0), (Phase::Stop, 2, 0)]);
//! ```
//!
//! The collector calls `collection_start` and `collection_stop` around
//! each collection; they also print [`DEBUG_STATS`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::debug::{flags, DEBUG_STATS};
use super::state::State;

use super::collector::Panic;

type Callback = Rc<RefCell<dyn FnMut(Phase, &CallbackInfo)>>;

struct Registered {
    /// Registered callbacks, in registration order.
    list: RefCell<Vec<(u64, Callback)>>,
    /// Number of callbacks, readable without borrowing.
    len: Cell<usize>,
    next_id: Cell<u64>,
}

impl Drop for Registered {
    /// At thread exit: dropping the callbacks drops what they own (`Gc`s
    /// among it, whose `Drop` impls may panic), each under `catch_unwind`:
    /// a thread-local destructor must not unwind.
    fn drop(&mut self) {
        for (_, f) in std::mem::take(self.list.get_mut()) {
            super::weak_callbacks::drop_contained(f, "gc callbacks");
        }
    }
}

thread_local! {
    static CALLBACKS: Registered = const {
        Registered {
            list: RefCell::new(Vec::new()),
            len: Cell::new(0),
            next_id: Cell::new(1),
        }
    };
}

/// Initialises the registry, so that its destructor is registered before
/// the collector's teardown and runs after it (see
/// `state::register_owner`).
pub(crate) fn keep_through_teardown() {
    let _ = CALLBACKS.try_with(|_| ());
}

/// Registers `f`, called at the start and the stop of each collection
/// on this thread (see the module docs).
///
/// ```
/// use pymem::gc::{self, callbacks};
/// let id = callbacks::add(|phase, info| eprintln!("gc {phase}: {info:?}"));
/// gc::collect();
/// assert!(callbacks::remove(id));
/// ```
pub fn add(f: impl FnMut(Phase, &CallbackInfo) + 'static) -> CallbackId {
    // `try_with`: called by a `Drop` at thread exit after the list was
    // destroyed, it registers nothing (no collection runs any more) and
    // returns an id no callback has (ids start at 1), instead of
    // panicking inside a thread-local destructor (an abort).
    let mut f = Some(f);
    let id = CALLBACKS
        .try_with(|d| {
            let id = d.next_id.get();
            d.next_id.set(id + 1);
            let mut v = d.list.borrow_mut();
            let f = f.take().expect("taken once");
            v.push((id, Rc::new(RefCell::new(f)) as Callback));
            d.len.set(v.len());
            id
        })
        .unwrap_or(0);
    super::weak_callbacks::drop_contained(f, "gc callbacks");
    CallbackId(id)
}

/// Unregisters a callback; `false` if it was not registered (already
/// removed).
///
/// ```
/// use pymem::gc::callbacks;
/// let id = callbacks::add(|_, _| {});
/// assert!(callbacks::remove(id));
/// assert!(!callbacks::remove(id));
/// ```
pub fn remove(id: CallbackId) -> bool {
    // The removed closure is dropped after the list's borrow ends: what it
    // owns may run a `Drop` that collects, and the collection borrows the
    // list to call the callbacks.
    let removed = CALLBACKS
        .try_with(|d| {
            let mut v = d.list.borrow_mut();
            let at = v.iter().position(|(i, _)| *i == id.0);
            let removed = at.map(|at| v.remove(at));
            d.len.set(v.len());
            removed
        })
        .ok()
        .flatten();
    removed.is_some()
}

/// Unregisters every callback of this thread (`gc.callbacks.clear()`).
///
/// ```
/// use pymem::gc::callbacks;
/// callbacks::add(|_, _| {});
/// callbacks::clear();
/// assert_eq!(callbacks::len(), 0);
/// ```
pub fn clear() {
    let _ = CALLBACKS.try_with(|d| {
        let old = std::mem::take(&mut *d.list.borrow_mut());
        d.len.set(0);
        drop(old);
    });
}

/// Number of callbacks registered on this thread.
///
/// ```
/// assert_eq!(pymem::gc::callbacks::len(), 0);
/// ```
pub fn len() -> usize {
    CALLBACKS.try_with(|d| d.len.get()).unwrap_or(0)
}

/// Whether no callback is registered on this thread.
///
/// ```
/// assert!(pymem::gc::callbacks::is_empty());
/// ```
pub fn is_empty() -> bool {
    len() == 0
}

/// Which end of a collection a callback is called at, as the
/// `phase` argument of Python's `gc.callbacks` (`"start"` or `"stop"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The collection is about to start.
    Start,
    /// The collection has finished.
    Stop,
}

impl Phase {
    /// `"start"` or `"stop"`, Python's spelling.
    ///
    /// ```
    /// assert_eq!(pymem::gc::Phase::Stop.as_str(), "stop");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Stop => "stop",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a callback is told about a collection, as the `info`
/// dict of Python's `gc.callbacks` (with the `candidates` and `duration`
/// keys CPython 3.13 added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallbackInfo {
    /// The generation being collected (with the younger ones).
    pub generation: usize,
    /// Unreachable objects reclaimed (or saved by [`DEBUG_SAVEALL`](super::DEBUG_SAVEALL)); 0 at
    /// [`Phase::Start`]. Objects resurrected by a finalizer are not
    /// counted, as in CPython.
    pub collected: usize,
    /// Unreachable objects that could not be reclaimed: always 0 (see
    /// [`DEBUG_UNCOLLECTABLE`](super::DEBUG_UNCOLLECTABLE)).
    pub uncollectable: usize,
    /// Tracked objects the collection examines: those of generations
    /// `0..=generation`, counted at the start.
    pub candidates: usize,
    /// Time the collection took, from just after the start callbacks to
    /// just before the stop callbacks; zero at [`Phase::Start`].
    pub duration: Duration,
}

/// Identifies a closure registered with [`add`], to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);
/// What the collector remembers between [`collection_start`] and
/// [`collection_stop`] when debugging is active.
pub(crate) struct Session {
    started: Instant,
    candidates: usize,
    flags: u32,
    panic: Option<Panic>,
}

/// Live objects of list range `[from, to)`.
fn live_in(st: &State, from: usize, to: usize) -> usize {
    (from..to).filter(|&i| !st.list().get(i).is_null()).count()
}

/// Called by the collector when a collection of generation `g` starts
/// (with `collecting` set); `None`, costing two thread-local reads, when
/// no flag that needs it is set and no callback is registered.
pub(crate) fn collection_start(st: &State, g: usize) -> Option<Session> {
    let flags = flags();
    if flags & DEBUG_STATS == 0 && is_empty() {
        return None;
    }
    let len = st.list().len();
    let candidates = live_in(st, st.range_start(g), len);
    if flags & DEBUG_STATS != 0 {
        let s = st.boundaries();
        eprintln!("gc: collecting generation {g}...");
        eprintln!(
            "gc: objects in each generation: {} {} {}",
            live_in(st, s[2], s[3]),
            live_in(st, s[1], s[2]),
            live_in(st, s[0], s[1]),
        );
        eprintln!("gc: objects in permanent generation: {}", st.frozen_count());
    }
    let info = CallbackInfo {
        generation: g,
        candidates,
        ..CallbackInfo::default()
    };
    let panic = invoke(Phase::Start, &info);
    Some(Session {
        started: Instant::now(),
        candidates,
        flags,
        panic,
    })
}

/// Called by the collector when the collection of generation `g` is done
/// (still with `collecting` set); returns the first panic of a callback.
pub(crate) fn collection_stop(s: Option<Session>, g: usize, found: usize) -> Option<Panic> {
    let s = s?;
    let duration = s.started.elapsed();
    if s.flags & DEBUG_STATS != 0 {
        eprintln!(
            "gc: done, {found} unreachable, 0 uncollectable, {:.4}s elapsed",
            duration.as_secs_f64()
        );
    }
    let info = CallbackInfo {
        generation: g,
        collected: found,
        uncollectable: 0,
        candidates: s.candidates,
        duration,
    };
    let p = invoke(Phase::Stop, &info);
    s.panic.or(p)
}

/// Calls every registered callback (a snapshot of the list), each under
/// `catch_unwind`; returns the first panic.
fn invoke(phase: Phase, info: &CallbackInfo) -> Option<Panic> {
    // (`try_borrow`: the list is only borrowed mutably by `add`, `remove`
    // and `clear`, none of which runs code that could collect meanwhile;
    // were it borrowed, skipping the callbacks beats panicking with a
    // collection marked as running.)
    let snapshot: Vec<Callback> = CALLBACKS
        .try_with(|d| match d.list.try_borrow() {
            Ok(l) => l.iter().map(|(_, f)| f.clone()).collect(),
            Err(_) => Vec::new(),
        })
        .unwrap_or_default();
    let mut first = None;
    for f in snapshot {
        let r = catch_unwind(AssertUnwindSafe(|| {
            // A callback that is already running (it cannot be: collections
            // do not nest) is skipped rather than borrowed twice.
            if let Ok(mut f) = f.try_borrow_mut() {
                f(phase, info)
            }
        }));
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first
}
