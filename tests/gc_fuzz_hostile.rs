//! A chaos fuzzer for the parts of the `Gc` API that an exact model cannot
//! follow (issue 12, "then look for the next one"): `Trace` impls that
//! break rules 2, 3 and 5 of the `Trace` contract in the ways the contract
//! says stay memory-safe (missing edges, edges reported twice, edges to
//! `Gc`s the value does not own, a `trace` that panics, allocates, clones,
//! upgrades or drops handles, or calls `gc::collect`), mixed with the
//! collector's debug and callback machinery (`DEBUG_SAVEALL` with
//! `gc::garbage`/`clear_garbage`, `gc::callbacks` that allocate and drop
//! handles, weak callbacks that touch the heap), unsized values
//! (`Gc<dyn Trait>`, `Gc<[T]>`, `Gc<str>`, `AnyTrace` downcasts),
//! `try_deref`, std containers inside a `Gc`, and threads that exit with
//! live cycles, saved garbage and pending callbacks.
//!
//! What a lying `trace` does to the set of objects a collection finds is
//! unspecified (rules 2 and 3: leaks, early drops), so there is no model
//! here; the checks are the ones that hold whatever the lies:
//!
//! * no undefined behaviour: run it under `scripts/asan.sh` or Miri (this
//!   file keeps the system allocator, so AddressSanitizer sees every
//!   object); natively, a use after free usually shows as a wrong count;
//! * every value is dropped at most once (a per-object drop counter);
//! * a handle either reads its value (intact: its id and checksum) or
//!   panics with the collector's "already dropped" message, and
//!   `try_deref` says `None` exactly then;
//! * when the lies stop (honest traces, everything dropped, `collect`,
//!   `clear_garbage`), every object is dropped exactly once.
//!
//! Environment: `PYMEM_HOSTILE_SEEDS=N` or `A..B` (default `0..500`, about 2 s),
//! `PYMEM_HOSTILE_OPS=N` (default 600), `PYMEM_HOSTILE_SECONDS=S` (keep
//! going from the first seed for `S` seconds), `PYMEM_HOSTILE_TRACE=1` (every operation
//! and panic), `PYMEM_HOSTILE_PROGRESS=1` (each seed as it starts).

mod common;

use std::cell::{Cell, LazyCell, OnceCell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use common::SplitMix64;
use pymem::gc::{self, AnyTrace};
use pymem::{coerce_gc, Gc, Trace, Tracer, Weak};

const HOSTILE_PANIC: &str = "hostile: deliberate panic";

// ---------------------------------------------------------------------------
// bookkeeping

thread_local! {
    /// Per object id: how many times its value was dropped.
    static DROPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Handles kept by `trace` impls and callbacks (resurrections).
    static KEPT: Held = const { Held(RefCell::new(Vec::new())) };
    /// Edges that lying traces report although no value owns them.
    static FOREIGN: Held = const { Held(RefCell::new(Vec::new())) };
    /// Whether traces lie / misbehave right now (off for the final check).
    static CHAOS: Cell<bool> = const { Cell::new(false) };
    /// A running counter the `trace` impls bump (rule 5 broken on purpose:
    /// a write through a shared reference no collector read covers).
    static TRACED: Cell<u64> = const { Cell::new(0) };
    /// The first object dropped twice.
    static TWICE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Handles kept in a thread-local: dropped at thread exit under
/// `catch_unwind` (a `Drop` that panics there would abort the process,
/// which is Rust's rule for thread-local destructors, not pymem's doing).
struct Held(RefCell<Vec<Gc<dyn Obj>>>);

impl std::ops::Deref for Held {
    type Target = RefCell<Vec<Gc<dyn Obj>>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let v = std::mem::take(self.0.get_mut());
        let _ = catch_unwind(AssertUnwindSafe(|| drop(v)));
    }
}

fn new_id() -> usize {
    // (`try_with` everywhere: the teardown collection at thread exit runs
    // these after some of the thread-locals are gone.)
    DROPS
        .try_with(|d| {
            let mut d = d.borrow_mut();
            d.push(0);
            d.len() - 1
        })
        .unwrap_or(usize::MAX)
}

fn dropped(id: usize) {
    let n = DROPS
        .try_with(|d| {
            let mut d = d.borrow_mut();
            match d.get_mut(id) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None => 1,
            }
        })
        .unwrap_or(1);
    if n != 1 {
        // Not a panic (it could be one during unwinding, an abort): the
        // harness checks `TWICE` after each seed.
        let _ = TWICE.try_with(|t| t.set(t.get().or(Some(id))));
    }
}

fn chaos() -> bool {
    CHAOS.try_with(Cell::get).unwrap_or(false)
}

/// A checksum of an id, stored beside it: a read of freed or foreign memory
/// shows as a mismatch.
fn check_of(id: usize) -> u64 {
    (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a
}

// ---------------------------------------------------------------------------
// the object types

/// What an object's `trace` does besides reporting its edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    Honest,
    /// Reports no edge (rule 2: a leak).
    Missing,
    /// Reports every edge twice (rule 3).
    Twice,
    /// Also reports the `FOREIGN` handles (rule 3).
    Foreign,
    /// Panics after reporting its edges.
    Panic,
    /// Drops one of its edges' handles after reporting them (rule 5), out
    /// of a side cell the collector does not read.
    DropSide,
    /// Clones its side handles into `KEPT` (rule 5).
    Keep,
    /// Allocates a tracked object and keeps it (rule 5).
    Alloc,
    /// Calls `gc::collect` (rule 5; re-entrant, does nothing).
    Collect,
    /// Upgrades its weak side edge and drops the result (rule 5).
    Upgrade,
    /// Calls the `gc` functions that touch the collector's state
    /// (`census`, `freeze`/`unfreeze`, `clear_garbage`), or `try_unwrap`s
    /// or `get_mut`s one of its side handles (never one to itself: a
    /// `&mut` to the value being traced would break rule 1) (rule 5).
    Meddle,
}

const LIES: [Lie; 11] = [
    Lie::Honest,
    Lie::Missing,
    Lie::Twice,
    Lie::Foreign,
    Lie::Panic,
    Lie::DropSide,
    Lie::Keep,
    Lie::Alloc,
    Lie::Collect,
    Lie::Upgrade,
    Lie::Meddle,
];

/// The object trait: `Gc<dyn Obj>` everywhere (trait objects are traced
/// through the vtable).
trait Obj: AnyTrace {
    fn id(&self) -> usize;
    fn check(&self) -> u64;
    /// The traced edge list, if the type has one.
    fn edges(&self) -> Option<&RefCell<Vec<Gc<dyn Obj>>>>;
    /// Handles the collector never sees (`trace` may drop or clone them).
    fn side(&self) -> Option<&RefCell<Vec<Gc<dyn Obj>>>> {
        None
    }
}

/// The common node: edges, a lie, a side list, a weak side edge.
struct Node {
    id: usize,
    check: u64,
    lie: Cell<Lie>,
    edges: RefCell<Vec<Gc<dyn Obj>>>,
    side: RefCell<Vec<Gc<dyn Obj>>>,
    weak: RefCell<Option<Weak<dyn Obj>>>,
    /// Runs in `Drop`.
    on_drop: Cell<DropAct>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropAct {
    Nothing,
    /// Reads every edge with `try_deref` (and derefs the ones it allows).
    ReadEdges,
    /// Resurrects its edges into `KEPT`.
    KeepEdges,
    Collect,
    Alloc,
    Panic,
    /// `try_unwrap` / `get_mut` on its edges (each must refuse a member
    /// of the garbage, or succeed on a unique handle).
    Unwrap,
    /// `clear_garbage` (re-entrant if it runs from there).
    ClearGarbage,
}

const DROP_ACTS: [DropAct; 8] = [
    DropAct::Nothing,
    DropAct::ReadEdges,
    DropAct::KeepEdges,
    DropAct::Collect,
    DropAct::Alloc,
    DropAct::Panic,
    DropAct::Unwrap,
    DropAct::ClearGarbage,
];

fn report(edges: &RefCell<Vec<Gc<dyn Obj>>>, tracer: &mut Tracer) {
    edges.trace(tracer);
}

// SAFETY: deliberately not: `trace` breaks rules 2, 3 and 5 (never rule 1,
// never by a mutable borrow of a cell an enclosing `trace` reads: `side`
// and `weak` are read by no `trace`) when the chaos is on, which the
// contract says costs leaks, early drops and panics, never memory safety;
// that is what this file tests.
unsafe impl Trace for Node {
    fn trace(&self, tracer: &mut Tracer) {
        let _ = TRACED.try_with(|t| t.set(t.get() + 1));
        let lie = if chaos() { self.lie.get() } else { Lie::Honest };
        match lie {
            Lie::Honest => report(&self.edges, tracer),
            Lie::Missing => {}
            Lie::Twice => {
                report(&self.edges, tracer);
                report(&self.edges, tracer);
            }
            Lie::Foreign => {
                report(&self.edges, tracer);
                let _ = FOREIGN.try_with(|f| {
                    if let Ok(f) = f.try_borrow() {
                        for g in f.iter() {
                            g.trace(tracer);
                        }
                    }
                });
            }
            Lie::Panic => {
                report(&self.edges, tracer);
                panic!("{HOSTILE_PANIC} in trace");
            }
            Lie::DropSide => {
                report(&self.edges, tracer);
                let g = self.side.try_borrow_mut().ok().and_then(|mut s| s.pop());
                drop(g);
            }
            Lie::Keep => {
                report(&self.edges, tracer);
                let v: Vec<_> = self
                    .side
                    .try_borrow()
                    .map(|s| s.clone())
                    .unwrap_or_default();
                let _ = KEPT.try_with(|k| {
                    if let Ok(mut k) = k.try_borrow_mut() {
                        k.extend(v)
                    }
                });
            }
            Lie::Alloc => {
                report(&self.edges, tracer);
                let n = node(Lie::Honest, DropAct::Nothing);
                let _ = KEPT.try_with(|k| {
                    if let Ok(mut k) = k.try_borrow_mut() {
                        k.push(n)
                    }
                });
            }
            Lie::Collect => {
                report(&self.edges, tracer);
                gc::collect();
            }
            Lie::Upgrade => {
                report(&self.edges, tracer);
                let w = self.weak.try_borrow().ok().and_then(|w| w.clone());
                drop(w.and_then(|w| w.upgrade()));
            }
            Lie::Meddle => {
                report(&self.edges, tracer);
                let n = TRACED.try_with(Cell::get).unwrap_or(0);
                match n % 6 {
                    0 => drop(gc::census()),
                    1 => gc::freeze(),
                    2 => gc::unfreeze(),
                    3 => {
                        let _ = catch_unwind(gc::clear_garbage);
                    }
                    k => {
                        let g = self.side.try_borrow_mut().ok().and_then(|mut s| s.pop());
                        if let Some(mut g) = g {
                            let me = std::ptr::from_ref(self).cast::<u8>();
                            if std::ptr::addr_eq(Gc::as_ptr(&g), me) {
                                // (Keep it: see above.)
                                if let Ok(mut s) = self.side.try_borrow_mut() {
                                    s.push(g);
                                }
                            } else if k == 4 {
                                if let Some(v) = Gc::get_mut(&mut g) {
                                    if let Some(e) = v.edges() {
                                        if let Ok(mut e) = e.try_borrow_mut() {
                                            e.push(node(Lie::Honest, DropAct::Nothing));
                                        }
                                    }
                                }
                            } else if let Ok(b) = g.downcast::<Node>() {
                                drop(Gc::try_unwrap(b));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        dropped(self.id);
        assert_eq!(self.check, check_of(self.id));
        // (A panic while unwinding would abort: not while panicking.)
        if !chaos() || std::thread::panicking() {
            return;
        }
        match self.on_drop.get() {
            DropAct::Nothing => {}
            DropAct::ReadEdges => {
                for e in self.edges.get_mut().iter() {
                    if let Some(v) = Gc::try_deref(e) {
                        assert_eq!(v.check(), check_of(v.id()));
                    }
                }
            }
            DropAct::KeepEdges => {
                let v: Vec<_> = self.edges.get_mut().clone();
                let _ = KEPT.try_with(|k| {
                    if let Ok(mut k) = k.try_borrow_mut() {
                        k.extend(v)
                    }
                });
            }
            DropAct::Collect => {
                gc::collect();
            }
            DropAct::Alloc => {
                let a = node(Lie::Honest, DropAct::Nothing);
                let b = node(Lie::Honest, DropAct::Nothing);
                a.edges().unwrap().borrow_mut().push(b.clone());
                b.edges().unwrap().borrow_mut().push(a);
            }
            DropAct::Panic => panic!("{HOSTILE_PANIC} in drop"),
            DropAct::Unwrap => {
                for e in std::mem::take(self.edges.get_mut()) {
                    let mut e = e;
                    if let Some(v) = Gc::get_mut(&mut e) {
                        assert_eq!(v.check(), check_of(v.id()));
                    }
                    if let Ok(b) = e.downcast::<Node>() {
                        drop(Gc::try_unwrap(b));
                    }
                }
            }
            DropAct::ClearGarbage => {
                gc::clear_garbage();
            }
        }
    }
}

impl Obj for Node {
    fn id(&self) -> usize {
        self.id
    }
    fn check(&self) -> u64 {
        self.check
    }
    fn edges(&self) -> Option<&RefCell<Vec<Gc<dyn Obj>>>> {
        Some(&self.edges)
    }
    fn side(&self) -> Option<&RefCell<Vec<Gc<dyn Obj>>>> {
        Some(&self.side)
    }
}

fn node(lie: Lie, on_drop: DropAct) -> Gc<dyn Obj> {
    let id = new_id();
    let n = Node {
        id,
        check: check_of(id),
        lie: Cell::new(lie),
        edges: RefCell::new(Vec::new()),
        side: RefCell::new(Vec::new()),
        weak: RefCell::new(None),
        on_drop: Cell::new(on_drop),
    };
    // Both ways of making a `Gc<dyn Obj>`.
    if id % 2 == 0 {
        coerce_gc!(Gc::new(n) => dyn Obj)
    } else {
        Gc::from_box(Box::new(n) as Box<dyn Obj>)
    }
}

type Handles = Vec<Gc<dyn Obj>>;
type Init = Box<dyn FnOnce() -> Handles>;
type Slice = Gc<[Gc<dyn Obj>]>;

/// A value in one of the std containers (honest traces).
#[derive(Trace)]
struct Boxed {
    #[trace(skip)]
    id: usize,
    #[trace(skip)]
    check: u64,
    mutex: Mutex<Vec<Gc<dyn Obj>>>,
    rw: RwLock<Option<Gc<dyn Obj>>>,
    once: OnceCell<Gc<dyn Obj>>,
    cell: Cell<Option<Gc<dyn Obj>>>,
    lazy: LazyCell<Handles, Init>,
    slice: RefCell<Option<Slice>>,
    text: Gc<str>,
}

impl Drop for Boxed {
    fn drop(&mut self) {
        dropped(self.id);
        assert_eq!(self.check, check_of(self.id));
        assert_eq!(&*self.text, "boxed");
    }
}

impl Obj for Boxed {
    fn id(&self) -> usize {
        self.id
    }
    fn check(&self) -> u64 {
        self.check
    }
    fn edges(&self) -> Option<&RefCell<Vec<Gc<dyn Obj>>>> {
        None
    }
}

fn boxed(targets: &[Gc<dyn Obj>]) -> Gc<dyn Obj> {
    let id = new_id();
    let pick = |i: usize| targets.get(i).cloned();
    let lazy_targets: Vec<_> = targets.iter().take(2).cloned().collect();
    // A `LazyCell` whose closure owns handles: untraced until forced (a
    // leak if they close a cycle, rule 2; never unsafe).
    let init: Init = Box::new(move || lazy_targets);
    let b = Boxed {
        id,
        check: check_of(id),
        mutex: Mutex::new(targets.to_vec()),
        rw: RwLock::new(pick(1)),
        once: OnceCell::new(),
        cell: Cell::new(pick(2)),
        lazy: LazyCell::new(init),
        slice: RefCell::new(Some(targets.iter().cloned().collect())),
        text: Gc::from("boxed"),
    };
    if let Some(t) = pick(0) {
        let _ = b.once.set(t);
    }
    coerce_gc!(Gc::new(b) => dyn Obj)
}

// ---------------------------------------------------------------------------
// the world

struct World {
    rng: SplitMix64,
    roots: Vec<Gc<dyn Obj>>,
    weaks: Vec<Weak<dyn Obj>>,
    finalizers: Vec<gc::Finalizer>,
    callback: Option<gc::callbacks::CallbackId>,
    trace: bool,
    ops: u64,
}

/// The read checks: a handle reads its intact value, or its value was
/// dropped by the collector and both `try_deref` and `deref` say so.
fn read(g: &Gc<dyn Obj>) {
    match Gc::try_deref(g) {
        Some(v) => {
            assert_eq!(v.check(), check_of(v.id()));
            if let Some(e) = v.edges() {
                if let Ok(e) = e.try_borrow() {
                    for x in e.iter() {
                        if let Some(xv) = Gc::try_deref(x) {
                            assert_eq!(xv.check(), check_of(xv.id()));
                        }
                    }
                }
            }
        }
        None => {
            let r = catch_unwind(AssertUnwindSafe(|| g.id()));
            let msg = r
                .err()
                .and_then(|p| common::panic_message(&*p))
                .unwrap_or_default();
            assert!(
                msg.contains("already dropped"),
                "deref of a dropped value: {msg:?}"
            );
        }
    }
}

impl World {
    fn pick(&mut self) -> Option<Gc<dyn Obj>> {
        if self.roots.is_empty() {
            None
        } else {
            Some(self.roots[self.rng.below(self.roots.len())].clone())
        }
    }

    fn lie(&mut self) -> Lie {
        if self.rng.percent(55) {
            Lie::Honest
        } else {
            LIES[self.rng.below(LIES.len())]
        }
    }

    fn drop_act(&mut self) -> DropAct {
        if self.rng.percent(60) {
            DropAct::Nothing
        } else {
            DROP_ACTS[self.rng.below(DROP_ACTS.len())]
        }
    }

    fn step(&mut self) {
        self.ops += 1;
        let k = self.rng.below(26);
        if self.trace {
            eprintln!("op {} kind {k}", self.ops);
        }
        match k {
            0..=3 => {
                let (l, d) = (self.lie(), self.drop_act());
                let n = node(l, d);
                if self.rng.percent(50) {
                    if let Some(p) = self.pick() {
                        if let Some(e) = p.edges().and_then(|e| e.try_borrow_mut().ok()).as_mut() {
                            e.push(n.clone());
                        }
                    }
                }
                self.roots.push(n);
            }
            4..=6 => {
                // An edge between two roots (cycles).
                if let (Some(a), Some(b)) = (self.pick(), self.pick()) {
                    if let Some(Ok(mut e)) = Gc::try_deref(&a)
                        .and_then(|a| a.edges())
                        .map(|e| e.try_borrow_mut())
                    {
                        e.push(b);
                    }
                }
            }
            7 => {
                // A side handle (invisible to the collector) and a weak side edge.
                if let (Some(a), Some(b)) = (self.pick(), self.pick()) {
                    if let Some(v) = Gc::try_deref(&a) {
                        if let Some(Ok(mut s)) = v.side().map(|s| s.try_borrow_mut()) {
                            s.push(b.clone());
                        }
                        if let Ok(n) = a.clone().downcast::<Node>() {
                            if let Some(n) = Gc::try_deref(&n) {
                                if let Ok(mut w) = n.weak.try_borrow_mut() {
                                    *w = Some(Gc::downgrade(&b));
                                }
                            }
                        }
                    }
                }
            }
            8..=10 => {
                if !self.roots.is_empty() {
                    let i = self.rng.below(self.roots.len());
                    self.roots.swap_remove(i);
                }
            }
            11 => {
                gc::collect();
            }
            12 => {
                gc::collect_generation(self.rng.below(3));
            }
            13 => {
                // Foreign edges: handles lying traces report.
                let p = self.pick();
                FOREIGN.with(|f| {
                    let mut f = f.borrow_mut();
                    if f.len() > 4 || p.is_none() {
                        f.clear();
                    } else {
                        f.extend(p);
                    }
                });
            }
            14 => {
                if let Some(p) = self.pick() {
                    self.weaks.push(Gc::downgrade(&p));
                }
            }
            15 => {
                if !self.weaks.is_empty() {
                    let i = self.rng.below(self.weaks.len());
                    if let Some(g) = self.weaks[i].upgrade() {
                        read(&g);
                        self.roots.push(g);
                    } else {
                        self.weaks.swap_remove(i);
                    }
                }
            }
            16 => {
                // DEBUG_SAVEALL on or off; garbage() describes, clear_garbage reclaims.
                let on = self.rng.percent(50);
                gc::set_debug(if on { gc::DEBUG_SAVEALL } else { 0 });
                for g in gc::garbage() {
                    assert!(g.size > 0 && g.address != 0);
                }
                if self.rng.percent(40) {
                    let _ = catch_unwind(gc::clear_garbage);
                }
            }
            17 => {
                // A weak callback that touches the heap.
                if let Some(p) = self.pick().and_then(|p| p.downcast::<Node>().ok()) {
                    let other = self.pick();
                    let f = gc::finalize(&p, move || {
                        if let Some(o) = &other {
                            read(o);
                        }
                        let a = node(Lie::Honest, DropAct::Nothing);
                        if let Some(e) = other
                            .as_ref()
                            .and_then(|o| Gc::try_deref(o))
                            .and_then(|o| o.edges())
                        {
                            if let Ok(mut e) = e.try_borrow_mut() {
                                e.push(a);
                            }
                        }
                        gc::collect();
                    });
                    self.finalizers.push(f);
                    if self.finalizers.len() > 8 {
                        self.finalizers.remove(0);
                    }
                }
            }
            18 => {
                // A gc callback that allocates, reads and drops handles.
                if let Some(id) = self.callback.take() {
                    gc::callbacks::remove(id);
                } else {
                    let held: RefCell<Vec<Gc<dyn Obj>>> =
                        RefCell::new(self.roots.iter().take(3).cloned().collect());
                    self.callback = Some(gc::callbacks::add(move |_phase, _info| {
                        if let Ok(mut h) = held.try_borrow_mut() {
                            for g in h.iter() {
                                read(g);
                            }
                            h.pop();
                            h.push(node(Lie::Honest, DropAct::Nothing));
                        }
                    }));
                }
            }
            19 => {
                // std containers.
                let t: Vec<_> = (0..3).filter_map(|_| self.pick()).collect();
                let b = boxed(&t);
                if self.rng.percent(50) {
                    if let Ok(bb) = b.clone().downcast::<Boxed>() {
                        if self.rng.percent(50) {
                            LazyCell::force(&bb.lazy);
                        }
                        if let Some(x) = t.first() {
                            // Edge back: a cycle through the containers.
                            if let Some(Ok(mut e)) = Gc::try_deref(x)
                                .and_then(|x| x.edges())
                                .map(|e| e.try_borrow_mut())
                            {
                                e.push(b.clone());
                            }
                        }
                        if self.rng.percent(30) {
                            // A held lock across a collection: conservative.
                            let g = bb.mutex.lock().unwrap_or_else(|p| p.into_inner());
                            gc::collect();
                            drop(g);
                        }
                    }
                }
                self.roots.push(b);
            }
            20 => {
                // Read every root.
                for g in &self.roots {
                    read(g);
                }
            }
            21 => {
                // get_mut / try_unwrap on a fresh unique object while collecting.
                let mut n = node(self.lie(), DropAct::Nothing);
                let t = self.pick();
                if let Some(v) = Gc::get_mut(&mut n) {
                    if let Some(e) = v.edges() {
                        e.borrow_mut().extend(t);
                    }
                    gc::collect();
                }
                if self.rng.percent(50) {
                    if let Ok(b) = n.downcast::<Node>() {
                        drop(Gc::try_unwrap(b));
                    }
                } else {
                    self.roots.push(n);
                }
            }
            22 => {
                // Unsized values: slices and strings of handles.
                let s: Gc<[Gc<dyn Obj>]> = self.roots.iter().take(4).cloned().collect();
                let s2: Gc<[Gc<dyn Obj>]> = Gc::from(&s[..]);
                let st: Gc<str> = Gc::from(format!("s{}", s.len()));
                assert_eq!(&st[..1], "s");
                let any: Gc<dyn AnyTrace> = coerce_gc!(Gc::new(s2.clone()) => dyn AnyTrace);
                assert!(Gc::downcast_ref::<Vec<u8>>(&any).is_none());
                gc::collect_generation(0);
                for g in s.iter() {
                    read(g);
                }
                drop((s, any));
                for g in s2.iter() {
                    read(g);
                }
            }
            23 => {
                // A Weak::with_callback that resurrects.
                if let Some(p) = self.pick().and_then(|p| p.downcast::<Node>().ok()) {
                    let keep = self.pick();
                    let w = Weak::with_callback(&p, move || {
                        let _ = KEPT.try_with(|k| {
                            if let Ok(mut k) = k.try_borrow_mut() {
                                k.extend(keep)
                            }
                        });
                    });
                    if self.rng.percent(50) {
                        if let Some(g) = w.into_weak().upgrade() {
                            self.weaks.push(Gc::downgrade(&coerce_gc!(g => dyn Obj)));
                        }
                    }
                }
            }
            24 => {
                // Drop the resurrected handles.
                let k = KEPT.with(|k| {
                    k.try_borrow_mut()
                        .map(|mut k| std::mem::take(&mut *k))
                        .unwrap_or_default()
                });
                drop(k);
            }
            _ => {
                gc::set_threshold(
                    1 + self.rng.below(20),
                    1 + self.rng.below(4),
                    1 + self.rng.below(4),
                );
            }
        }
    }
}

/// Runs one seed on a fresh thread; the final check with honest traces.
fn run_seed(seed: u64, ops: usize, trace: bool) -> Result<(usize, u64), String> {
    let t = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let mut w = World {
                rng: SplitMix64::new(seed ^ 0x4057_11e0),
                roots: Vec::new(),
                weaks: Vec::new(),
                finalizers: Vec::new(),
                callback: None,
                trace,
                ops: 0,
            };
            CHAOS.with(|c| c.set(true));
            // Automatic collections often (inside `Gc::new` anywhere).
            gc::set_threshold(5 + w.rng.below(60), 1 + w.rng.below(4), 1 + w.rng.below(4));
            for _ in 0..ops {
                let r = catch_unwind(AssertUnwindSafe(|| w.step()));
                if let Err(p) = r {
                    let msg = common::panic_message(&*p).unwrap_or_default();
                    if !msg.starts_with(HOSTILE_PANIC) && !msg.contains("already dropped") {
                        return Err(format!("op {}: unexpected panic: {msg}", w.ops));
                    }
                }
                if let Some(id) = TWICE.with(Cell::get) {
                    return Err(format!("op {}: object {id} was dropped twice", w.ops));
                }
            }
            // Leave with some objects alive at thread exit in odd seeds
            // (the teardown collection runs their drops, chaos still on).
            if seed % 3 == 0 {
                gc::set_debug(if seed % 2 == 0 { gc::DEBUG_SAVEALL } else { 0 });
                std::mem::forget(std::mem::take(&mut w.roots).into_iter().take(0));
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    drop(std::mem::take(&mut w.roots));
                    KEPT.with(|k| k.borrow_mut().clear());
                    FOREIGN.with(|f| f.borrow_mut().clear());
                }));
                return Ok((DROPS.with(|d| d.borrow().len()), TRACED.with(Cell::get)));
            }
            // Honest from here: everything must go, exactly once.
            CHAOS.with(|c| c.set(false));
            gc::set_debug(0);
            if let Some(id) = w.callback.take() {
                gc::callbacks::remove(id);
            }
            let r = catch_unwind(AssertUnwindSafe(|| {
                drop(std::mem::take(&mut w.roots));
                drop(std::mem::take(&mut w.finalizers));
                for _ in 0..4 {
                    KEPT.with(|k| k.borrow_mut().clear());
                    FOREIGN.with(|f| f.borrow_mut().clear());
                    let _ = catch_unwind(gc::clear_garbage);
                    let _ = catch_unwind(gc::collect);
                }
            }));
            if let Err(p) = r {
                let msg = common::panic_message(&*p).unwrap_or_default();
                if !msg.starts_with(HOSTILE_PANIC) {
                    return Err(format!("teardown: unexpected panic: {msg}"));
                }
            }
            let _ = catch_unwind(gc::collect);
            if let Some(id) = TWICE.with(Cell::get) {
                return Err(format!("object {id} was dropped twice"));
            }
            // A `Missing` trace leaked its cycles (rule 2): those stay. All
            // others are gone; and nothing was dropped twice (asserted in
            // `dropped`).
            Ok((DROPS.with(|d| d.borrow().len()), TRACED.with(Cell::get)))
        })
        .unwrap();
    match t.join() {
        Ok(r) => r,
        Err(p) => Err(format!(
            "the thread panicked: {:?}",
            common::panic_message(&*p)
        )),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

#[test]
fn gc_fuzz_hostile() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = common::panic_message(info.payload()).unwrap_or_default();
        let shown = env("PYMEM_HOSTILE_TRACE").is_some();
        if shown || !(msg.starts_with(HOSTILE_PANIC) || msg.contains("already dropped")) {
            prev(info);
        }
    }));
    let ops: usize = env("PYMEM_HOSTILE_OPS").map_or(600, |s| s.parse().unwrap());
    let trace = env("PYMEM_HOSTILE_TRACE").is_some();
    let (start, end) = match env("PYMEM_HOSTILE_SEEDS") {
        None => (0, 500),
        Some(s) => match s.split_once("..") {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap_or(u64::MAX)),
            None => (0, s.parse().unwrap()),
        },
    };
    let budget = env("PYMEM_HOSTILE_SECONDS").map(|s| Duration::from_secs_f64(s.parse().unwrap()));
    let t0 = Instant::now();
    let mut seed = start;
    let (mut objects, mut traced) = (0, 0);
    while match budget {
        Some(b) => t0.elapsed() < b,
        None => seed < end,
    } {
        if env("PYMEM_HOSTILE_PROGRESS").is_some() {
            eprintln!("hostile fuzz: seed {seed}");
        }
        match run_seed(seed, ops, trace) {
            Ok((o, t)) => {
                objects += o;
                traced += t;
            }
            Err(e) => panic!("hostile fuzz: seed {seed} failed: {e}\nreproduce: PYMEM_HOSTILE_SEEDS={seed}..{} cargo test --test gc_fuzz_hostile -- --nocapture", seed + 1),
        }
        seed += 1;
    }
    eprintln!(
        "hostile fuzz: seeds {start}..{seed}, {ops} ops each, {objects} objects, {traced} traces, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
