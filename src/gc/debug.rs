//! Debugging the collector, as Python's `gc.set_debug`, `gc.garbage` and
//! `gc.callbacks`: debug flags, saved garbage, and callbacks run at the
//! start and the stop of every collection.
//!
//! All of it is per thread, like the collector's settings. The collector
//! consults this module once at the start and once at the end of a
//! collection, and once when it has garbage to reclaim; with no flag set
//! and no callback registered that is all it costs. `Gc::new`, `clone` and
//! `drop` never look here.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::generations::{with, State};
use super::header::{GcHeader, ObjPtr};

type Panic = Box<dyn Any + Send + 'static>;

/// Print statistics on stderr during each collection, as Python's
/// `gc.DEBUG_STATS`:
///
/// ```text
/// gc: collecting generation 2...
/// gc: objects in each generation: 12 0 3410
/// gc: objects in permanent generation: 0
/// gc: done, 1000 unreachable, 0 uncollectable, 0.0004s elapsed
/// ```
///
/// ```
/// use pymem::gc;
/// gc::set_debug(gc::DEBUG_STATS);
/// gc::collect(); // prints the four lines above on stderr
/// gc::set_debug(0);
/// ```
pub const DEBUG_STATS: u32 = 1;

/// Print the type names of the unreachable objects a collection reclaims,
/// on stderr, one line per type with its count, as Python's
/// `gc.DEBUG_COLLECTABLE`:
///
/// ```text
/// gc: collectable 1000 x leak_hunt::Session
/// ```
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// drop(a);
/// gc::set_debug(gc::DEBUG_COLLECTABLE);
/// assert_eq!(gc::collect(), 1); // "gc: collectable 1 x rust_out::Node"
/// gc::set_debug(0);
/// ```
pub const DEBUG_COLLECTABLE: u32 = 2;

/// Python's `gc.DEBUG_UNCOLLECTABLE`. Every unreachable object is
/// collectable here (every `Drop` and finalizer can run, as with PEP 442),
/// so this flag never prints anything; it exists so that [`DEBUG_LEAK`]
/// has Python's value.
///
/// ```
/// assert_eq!(pymem::gc::DEBUG_UNCOLLECTABLE, 4);
/// ```
pub const DEBUG_UNCOLLECTABLE: u32 = 4;

/// Keep the unreachable objects a collection finds instead of dropping
/// them, as Python's `gc.DEBUG_SAVEALL`: [`garbage`] tells what they are
/// and [`clear_garbage`] reclaims them.
///
/// Saved objects are dead to [`Weak::upgrade`](crate::Weak::upgrade) and no
/// longer tracked, but their values stay intact (their finalizers have
/// run, their `Drop` has not) until [`clear_garbage`].
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node { next: RefCell<Option<Gc<Node>>> }
///
/// gc::set_debug(gc::DEBUG_SAVEALL);
/// let a = Gc::new(Node { next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone());
/// drop(a);
/// assert_eq!(gc::collect(), 1);
/// let saved = gc::garbage();
/// assert_eq!(saved.len(), 1);
/// assert!(saved[0].type_name.ends_with("Node"));
/// gc::set_debug(0);
/// assert_eq!(gc::clear_garbage(), 1); // now dropped and freed
/// assert!(gc::garbage().is_empty());
/// ```
pub const DEBUG_SAVEALL: u32 = 32;

/// `DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL`, as Python's
/// `gc.DEBUG_LEAK`: name what is found and keep it for inspection.
///
/// ```
/// use pymem::gc;
/// assert_eq!(gc::DEBUG_LEAK, gc::DEBUG_COLLECTABLE | gc::DEBUG_UNCOLLECTABLE | gc::DEBUG_SAVEALL);
/// ```
pub const DEBUG_LEAK: u32 = DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL;

type Callback = Rc<RefCell<dyn FnMut(Phase, &CallbackInfo)>>;

struct DebugState {
    flags: Cell<u32>,
    /// Registered callbacks, in registration order.
    callbacks: RefCell<Vec<(u64, Callback)>>,
    /// Number of callbacks, readable without borrowing.
    n_callbacks: Cell<usize>,
    next_id: Cell<u64>,
    /// Objects kept by `DEBUG_SAVEALL`; the collector holds one strong
    /// count on each.
    garbage: RefCell<Vec<ObjPtr>>,
}

thread_local! {
    static DEBUG: DebugState = const {
        DebugState {
            flags: Cell::new(0),
            callbacks: RefCell::new(Vec::new()),
            n_callbacks: Cell::new(0),
            next_id: Cell::new(1),
            garbage: RefCell::new(Vec::new()),
        }
    };
}

/// Sets this thread's collector debug flags, as Python's `gc.set_debug`:
/// an OR of [`DEBUG_STATS`], [`DEBUG_COLLECTABLE`], [`DEBUG_UNCOLLECTABLE`],
/// [`DEBUG_SAVEALL`] ([`DEBUG_LEAK`] is the last three); 0 turns debugging
/// off.
///
/// ```
/// use pymem::gc;
/// gc::set_debug(gc::DEBUG_STATS | gc::DEBUG_COLLECTABLE);
/// assert_eq!(gc::get_debug(), gc::DEBUG_STATS | gc::DEBUG_COLLECTABLE);
/// gc::set_debug(0);
/// ```
pub fn set_debug(flags: u32) {
    let _ = DEBUG.try_with(|d| d.flags.set(flags));
}

/// This thread's collector debug flags (0 by default), as Python's
/// `gc.get_debug`.
///
/// ```
/// assert_eq!(pymem::gc::get_debug(), 0);
/// ```
pub fn get_debug() -> u32 {
    flags()
}

/// Initialises the debug state, so that its destructor is registered
/// before the collector's teardown and runs after it (see
/// `generations::register_owner`).
pub(crate) fn keep_through_teardown() {
    let _ = DEBUG.try_with(|_| ());
}

pub(crate) fn flags() -> u32 {
    DEBUG.try_with(|d| d.flags.get()).unwrap_or(0)
}

/// One object kept by [`DEBUG_SAVEALL`], as listed by [`garbage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GarbageInfo {
    /// The value's type, as [`std::any::type_name`] spells it.
    pub type_name: &'static str,
    /// Bytes of the object's `Gc` allocation (header and value; not the
    /// heap memory the value owns).
    pub size: usize,
    /// Address of the object's allocation (of its reference counts, just
    /// before the value), to tell objects apart.
    pub address: usize,
}

impl fmt::Display for GarbageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} at {:#x}>", self.type_name, self.address)
    }
}

/// The objects kept by [`DEBUG_SAVEALL`] on this thread, oldest first, as
/// Python's `gc.garbage` (which holds the objects; here, a description of
/// each).
///
/// ```
/// use pymem::gc;
/// assert!(gc::garbage().is_empty()); // nothing is saved unless DEBUG_SAVEALL is set
/// ```
pub fn garbage() -> Vec<GarbageInfo> {
    DEBUG
        .try_with(|d| {
            d.garbage
                .borrow()
                .iter()
                .map(|&p| {
                    // SAFETY: saved objects are live: the collector holds a
                    // strong count on each.
                    let h = unsafe { GcHeader::of(p) };
                    GarbageInfo {
                        type_name: (h.vtable.type_name)(),
                        size: h.vtable.size,
                        address: p as usize,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reclaims the objects kept by [`DEBUG_SAVEALL`] (drops their values,
/// runs the weak callbacks registered on them, frees their memory) and
/// returns how many there were, as `gc.garbage.clear()` followed by a
/// collection does in Python.
///
/// A panic in a `Drop` is resumed once every saved object is reclaimed.
///
/// ```
/// assert_eq!(pymem::gc::clear_garbage(), 0);
/// ```
pub fn clear_garbage() -> usize {
    let saved = DEBUG
        .try_with(|d| std::mem::take(&mut *d.garbage.borrow_mut()))
        .unwrap_or_default();
    let n = saved.len();
    if n > 0 {
        let panic = with(|st| super::finalize::delete(st, &saved));
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }
    n
}

/// Keeps `objs` (found unreachable, marked dead, each with a strong count
/// held by the collector) in the saved garbage.
pub(crate) fn save(objs: &[ObjPtr]) {
    // If the thread's debug state is gone the objects are leaked, as
    // everything still reachable at thread exit is.
    let _ = DEBUG.try_with(|d| d.garbage.borrow_mut().extend_from_slice(objs));
}

/// `DEBUG_COLLECTABLE`: one line per type, most frequent first.
pub(crate) fn print_collectable(objs: &[ObjPtr]) {
    let mut names: Vec<(&'static str, usize)> = Vec::new();
    for &p in objs {
        // SAFETY: garbage objects are live (the collector holds a count).
        let name = (unsafe { GcHeader::of(p) }.vtable.type_name)();
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += 1,
            None => names.push((name, 1)),
        }
    }
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (name, n) in names {
        eprintln!("gc: collectable {n} x {name}");
    }
}

// ---------------------------------------------------------------------------
// callbacks

/// Which end of a collection a [`callbacks`] closure is called at, as the
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

/// What a [`callbacks`] closure is told about a collection, as the `info`
/// dict of Python's `gc.callbacks` (with the `candidates` and `duration`
/// keys CPython 3.13 added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallbackInfo {
    /// The generation being collected (with the younger ones).
    pub generation: usize,
    /// Unreachable objects reclaimed (or saved by [`DEBUG_SAVEALL`]); 0 at
    /// [`Phase::Start`]. Objects resurrected by a finalizer are not
    /// counted, as in CPython.
    pub collected: usize,
    /// Unreachable objects that could not be reclaimed: always 0 (see
    /// [`DEBUG_UNCOLLECTABLE`]).
    pub uncollectable: usize,
    /// Tracked objects the collection examines: those of generations
    /// `0..=generation`, counted at the start.
    pub candidates: usize,
    /// Time the collection took, from just after the start callbacks to
    /// just before the stop callbacks; zero at [`Phase::Start`].
    pub duration: Duration,
}

/// Identifies a closure registered with [`callbacks::add`], to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

/// Closures called at the start and the stop of every collection on this
/// thread, as Python's `gc.callbacks` list.
///
/// Each is called with the [`Phase`] and a [`CallbackInfo`]. They run
/// while the collection is in progress, so a callback that calls
/// [`gc::collect`](crate::gc::collect) gets 0 and starts nothing. A
/// callback may add or remove callbacks (the change applies from the next
/// collection). A panic in a callback does not disturb the collection: the
/// remaining callbacks run, and the first panic is resumed when the
/// collection is over.
///
/// ```
/// use pymem::gc::{self, callbacks, Phase};
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let l = log.clone();
/// let id = callbacks::add(move |phase, info| {
///     l.borrow_mut().push((phase, info.generation, info.collected));
/// });
/// gc::collect();
/// callbacks::remove(id);
/// gc::collect();
/// assert_eq!(*log.borrow(), [(Phase::Start, 2, 0), (Phase::Stop, 2, 0)]);
/// ```
pub mod callbacks {
    use super::*;

    /// Registers `f`, called at the start and the stop of each collection
    /// on this thread (see the [module docs](self)).
    ///
    /// ```
    /// use pymem::gc::{self, callbacks};
    /// let id = callbacks::add(|phase, info| eprintln!("gc {phase}: {info:?}"));
    /// gc::collect();
    /// assert!(callbacks::remove(id));
    /// ```
    pub fn add(f: impl FnMut(Phase, &CallbackInfo) + 'static) -> CallbackId {
        DEBUG.with(|d| {
            let id = d.next_id.get();
            d.next_id.set(id + 1);
            let mut v = d.callbacks.borrow_mut();
            v.push((id, Rc::new(RefCell::new(f))));
            d.n_callbacks.set(v.len());
            CallbackId(id)
        })
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
        DEBUG
            .try_with(|d| {
                let mut v = d.callbacks.borrow_mut();
                let before = v.len();
                v.retain(|(i, _)| *i != id.0);
                d.n_callbacks.set(v.len());
                v.len() != before
            })
            .unwrap_or(false)
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
        let _ = DEBUG.try_with(|d| {
            let old = std::mem::take(&mut *d.callbacks.borrow_mut());
            d.n_callbacks.set(0);
            drop(old);
        });
    }

    /// Number of callbacks registered on this thread.
    ///
    /// ```
    /// assert_eq!(pymem::gc::callbacks::len(), 0);
    /// ```
    pub fn len() -> usize {
        DEBUG.try_with(|d| d.n_callbacks.get()).unwrap_or(0)
    }

    /// Whether no callback is registered on this thread.
    ///
    /// ```
    /// assert!(pymem::gc::callbacks::is_empty());
    /// ```
    pub fn is_empty() -> bool {
        len() == 0
    }
}

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
    (from..to).filter(|&i| !st.list.get(i).is_null()).count()
}

/// Called by the collector when a collection of generation `g` starts
/// (with `collecting` set); `None`, costing two thread-local reads, when
/// no flag that needs it is set and no callback is registered.
pub(crate) fn collection_start(st: &State, g: usize) -> Option<Session> {
    let flags = flags();
    if flags & DEBUG_STATS == 0 && callbacks::is_empty() {
        return None;
    }
    let len = st.list.len();
    let candidates = live_in(st, st.range_start(g), len);
    if flags & DEBUG_STATS != 0 {
        let s = [st.start[0].get(), st.start[1].get(), st.start[2].get(), len];
        eprintln!("gc: collecting generation {g}...");
        eprintln!(
            "gc: objects in each generation: {} {} {}",
            live_in(st, s[2], s[3]),
            live_in(st, s[1], s[2]),
            live_in(st, s[0], s[1]),
        );
        eprintln!("gc: objects in permanent generation: {}", st.frozen.get());
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
    let snapshot: Vec<Callback> = DEBUG
        .try_with(|d| {
            d.callbacks
                .borrow()
                .iter()
                .map(|(_, f)| f.clone())
                .collect()
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
