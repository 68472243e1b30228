//! The fuzzer's heap: one object type, [`Obj`], whose `Drop`, PEP 442
//! finalizer and weak callbacks run small scripts ([`Act`], [`FinAct`],
//! [`CbAct`]) chosen when the object is made, and an event log that every
//! one of them (and the executor) appends to, in the order things really
//! happen. The model replays the log; nothing here decides whether a
//! behaviour is right, except for the few facts only observable inside a
//! `Drop` (is this edge's value already dropped?), which are logged as
//! [`Ev::Violation`].

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pymem::gc::{self, AnyTrace, Finalize};
use pymem::{coerce_gc, Gc, Trace, Tracer, Weak};

use super::common::panic_message;

/// A value's identity (kept when `try_unwrap` moves it out and a new
/// `Gc` wraps it again).
pub type Id = u32;
/// A weak callback's identity.
pub type CbId = u32;

/// The prefix of every panic the fuzzer raises on purpose.
pub const FUZZ_PANIC: &str = "fuzz-panic";

/// One step of a `Drop` script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Allocates this many tracked objects and drops them at once.
    Alloc(u8),
    /// Allocates a self-cycle and leaves it as garbage; `true`: its own
    /// `Drop` calls `gc::collect()`.
    AllocCycle(bool),
    /// `gc::collect()` (re-entrant during a collection: must return 0).
    Collect,
    /// `gc::collect_generation(g % 3)`.
    CollectGen(u8),
    /// Clones edge `k % len` into the stash (resurrection, or a handle to
    /// a member of the garbage being reclaimed).
    StashEdge(u8),
    /// Dereferences every edge: must panic exactly for values already
    /// dropped (by the collector), with a message saying so.
    DerefEdges,
    /// Upgrades every weak edge: `Some` only for values not dropped.
    UpgradeWeakEdges,
    /// Moves edge `k % len` out and `Gc::try_unwrap`s it.
    TryUnwrapEdge(u8),
    /// `gc::finalize` on edge `k % len`.
    RegisterOnEdge(u8),
    /// Panics (unless the thread is already unwinding).
    Panic,
}

/// One step of a PEP 442 finalizer script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinAct {
    /// Stores a clone of `this` in the stash.
    Resurrect,
    /// Stores a clone of edge `k % len` in the stash (resurrects another
    /// member of the garbage).
    StashEdge(u8),
    /// Drops every edge (breaks the cycle while it is being finalized).
    ClearEdges,
    /// Reads every edge's value: all must be alive.
    ReadEdges,
    Alloc(u8),
    Collect,
    RegisterOnEdge(u8),
    Panic,
}

/// One step of a weak callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbAct {
    Alloc(u8),
    AllocCycle,
    Collect,
    Panic,
}

/// What happened, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// A value was constructed (not yet in a `Gc`).
    Created {
        id: Id,
        script: Vec<Act>,
        fin: Vec<FinAct>,
    },
    /// `Gc::new`/`new_with_finalizer`/the end of `new_cyclic` is about to
    /// allocate and track `id` (the automatic collection check comes now).
    NewBegin {
        id: Id,
    },
    /// ... and returned: `id` is a live tracked object.
    Wrapped {
        id: Id,
        fin: bool,
    },
    /// `Gc::new_cyclic` started for `id`.
    CyclicBegin {
        id: Id,
    },
    /// `Obj::drop` started / the value's last field was dropped.
    Dropped {
        id: Id,
    },
    DropEnd {
        id: Id,
    },
    /// A strong handle was put in the stash, by a `Drop` (`dead`: it did
    /// not upgrade then: a member of the garbage being reclaimed) or by a
    /// finalizer.
    Stashed {
        id: Id,
        dead: bool,
        by_finalizer: bool,
    },
    FinalizerRan {
        id: Id,
    },
    /// `Gc::try_unwrap` is called on `id` / returned.
    UnwrapBegin {
        id: Id,
    },
    UnwrapEnd {
        id: Id,
        ok: bool,
    },
    /// A weak callback ran; `dead_now`: its referent's value was dropped
    /// or moved out.
    CallbackRan {
        cb: CbId,
        dead_now: bool,
    },
    /// A weak callback was registered (`alive`: `Finalizer::alive()`).
    Registered {
        cb: CbId,
        target: Id,
        alive: bool,
    },
    /// A callback handle was cancelled (`WeakRef` dropped, `detach`) or
    /// is about to be called early (`Finalizer::call`).
    Cancelled {
        cb: CbId,
    },
    CallBegin {
        cb: CbId,
    },
    /// `gc::collect*` is called / returned.
    CollectCall {
        gen: u8,
    },
    CollectReturn {
        found: usize,
    },
    /// From `gc::callbacks`.
    GcStart {
        gen: u8,
    },
    GcStop {
        gen: u8,
        collected: usize,
    },
    // The executor's changes to the graph, at the moment they happen.
    EdgeAdded {
        from: Id,
        to: Id,
    },
    WeakEdgeAdded {
        from: Id,
        to: Id,
        epoch: u32,
    },
    EdgeRemoved {
        from: Id,
        pos: usize,
    },
    EdgesSet {
        from: Id,
        to: Vec<Id>,
    },
    Frozen,
    Unfrozen,
    /// A check that can only be made inside a `Drop`/finalizer/callback
    /// failed.
    Violation(String),
    /// Something worth counting happened (coverage only).
    Note(&'static str),
}

/// A strong edge; `to` is the target's id (readable without a deref).
pub struct Edge {
    pub to: Id,
    pub gc: Gc<Obj>,
}

/// A weak edge to allocation `epoch` of value `to`.
pub struct WeakEdge {
    pub to: Id,
    pub epoch: u32,
    pub weak: Weak<Obj>,
}

/// Logs `DropEnd` when the value's last field is dropped.
struct EndMarker(Id);

impl Drop for EndMarker {
    fn drop(&mut self) {
        log(Ev::DropEnd { id: self.0 });
    }
}

/// Untracked handles: a `String`, the same text as a `str`, `id % 5`
/// words.
pub type Labels = (Gc<String>, Gc<str>, Gc<[u64]>);

/// The fuzzer's object. Fields drop in declaration order: the edges, then
/// the end marker.
pub struct Obj {
    pub id: Id,
    pub edges: RefCell<Vec<Edge>>,
    pub weak_edges: RefCell<Vec<WeakEdge>>,
    /// Untracked `Gc`s, sized and unsized (must change no collector count).
    pub label: Option<Labels>,
    pub script: Vec<Act>,
    pub fin: Vec<FinAct>,
    pub tag: Cell<u64>,
    _end: EndMarker,
}

// SAFETY: visits every `Gc<Obj>` the value owns (the strong edges), once;
// weak edges and the untracked label are not edges.
unsafe impl Trace for Edge {
    fn trace(&self, tracer: &mut Tracer) {
        self.gc.trace(tracer);
    }
}

// SAFETY: as above.
unsafe impl Trace for Obj {
    fn trace(&self, tracer: &mut Tracer) {
        self.edges.trace(tracer);
        self.label.trace(tracer);
    }
}

thread_local! {
    static NEXT_ID: Cell<Id> = const { Cell::new(0) };
    static NEXT_CB: Cell<CbId> = const { Cell::new(0) };
    /// Per id: times its value was dropped, and whether it is out of its
    /// `Gc` (moved out by `try_unwrap`).
    static DROPS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUT: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
    /// Ids whose `try_unwrap` is in progress (their callbacks may run).
    static UNWRAPPING: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
    static LOG: RefCell<Vec<Ev>> = const { RefCell::new(Vec::new()) };
    static STASH: RefCell<Vec<(Id, Gc<Obj>)>> = const { RefCell::new(Vec::new()) };
    /// `Drop` scripts run only while armed (the world disarms them while
    /// it tears down).
    static ARMED: Cell<bool> = const { Cell::new(true) };
}

/// Appends to the event log (silently nothing during thread teardown).
pub fn log(ev: Ev) {
    let _ = LOG.try_with(|l| l.borrow_mut().push(ev));
}

/// Takes the events logged so far.
pub fn take_log() -> Vec<Ev> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// Takes the handles stashed so far (in stash order).
pub fn take_stash() -> Vec<(Id, Gc<Obj>)> {
    STASH.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

pub fn set_armed(on: bool) {
    ARMED.with(|a| a.set(on));
}

fn armed() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

/// Times the value `id` was dropped.
pub fn drops(id: Id) -> u8 {
    DROPS.with(|d| d.borrow().get(id as usize).copied().unwrap_or(0))
}

pub fn set_out(id: Id, out: bool) {
    OUT.with(|o| o.borrow_mut()[id as usize] = out);
}

fn dead_now(id: Id) -> bool {
    drops(id) > 0
        || OUT.with(|o| o.borrow()[id as usize])
        || UNWRAPPING.with(|u| u.borrow().contains(&id))
}

/// The next value id (ids are dense from 0 on each thread).
pub fn next_id() -> Id {
    NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        DROPS.with(|d| d.borrow_mut().push(0));
        OUT.with(|o| o.borrow_mut().push(false));
        id
    })
}

/// A new value (logged as `Created`), with the given id.
pub fn make_obj_with_id(id: Id, script: Vec<Act>, fin: Vec<FinAct>, label: bool) -> Obj {
    log(Ev::Created {
        id,
        script: script.clone(),
        fin: fin.clone(),
    });
    Obj {
        id,
        edges: RefCell::new(Vec::new()),
        weak_edges: RefCell::new(Vec::new()),
        label: label.then(|| {
            let s = format!("obj {id}");
            let words: Gc<[u64]> = (0..u64::from(id % 5)).collect();
            (Gc::new(s.clone()), Gc::from(s), words)
        }),
        script,
        fin,
        tag: Cell::new(0),
        _end: EndMarker(id),
    }
}

/// Wraps a value in a new `Gc` (with a finalizer if `fin`), logging the
/// allocation around the call.
pub fn wrap(obj: Obj, fin: bool) -> Gc<Obj> {
    let id = obj.id;
    log(Ev::NewBegin { id });
    // Three ways to make the same `Gc<Obj>` (the allocation and the
    // automatic collection check are the same): `Gc::new`, `Gc::from_box`,
    // and a `Gc<dyn AnyTrace>` (`coerce_gc!`) downcast back.
    let g = if fin {
        Gc::new_with_finalizer(obj)
    } else if id % 3 == 1 {
        Gc::from_box(Box::new(obj))
    } else if id % 3 == 2 {
        let any: Gc<dyn AnyTrace> = coerce_gc!(Gc::new(obj) => dyn AnyTrace);
        if Gc::downcast_ref::<String>(&any).is_some() {
            log(Ev::Violation(format!(
                "{id}: a Gc<dyn AnyTrace> of an Obj downcast to a String"
            )));
        }
        match any.downcast::<Obj>() {
            Ok(g) => g,
            Err(_) => panic!("{id}: a Gc<dyn AnyTrace> of an Obj did not downcast to Obj"),
        }
    } else {
        Gc::new(obj)
    };
    log(Ev::Wrapped { id, fin });
    g
}

/// A new tracked object.
pub fn new_obj(script: Vec<Act>, fin: Option<Vec<FinAct>>, label: bool) -> Gc<Obj> {
    let has_fin = fin.is_some();
    let obj = make_obj_with_id(next_id(), script, fin.unwrap_or_default(), label);
    wrap(obj, has_fin)
}

/// Pushes a strong edge `from -> g`, logged.
pub fn push_edge(from: Id, edges: &mut Vec<Edge>, g: Gc<Obj>) {
    let to = g.id;
    edges.push(Edge { to, gc: g });
    log(Ev::EdgeAdded { from, to });
}

/// `gc::collect_generation`, logged around the call.
pub fn logged_collect(gen: u8) -> usize {
    log(Ev::CollectCall { gen });
    let found = gc::collect_generation(gen as usize);
    log(Ev::CollectReturn { found });
    found
}

/// A panic the fuzzer raises on purpose, unless the thread is unwinding
/// already (which would abort).
pub fn fuzz_panic(what: &str) {
    if !std::thread::panicking() {
        std::panic::panic_any(format!("{FUZZ_PANIC}: {what}"));
    }
}

fn alloc_temps(n: u8) {
    for _ in 0..n {
        drop(new_obj(Vec::new(), None, false));
    }
}

fn alloc_cycle(collect_on_drop: bool) {
    let script = if collect_on_drop {
        vec![Act::Collect]
    } else {
        Vec::new()
    };
    let g = new_obj(script, None, false);
    let c = g.clone();
    push_edge(g.id, &mut g.edges.borrow_mut(), c);
}

/// Registers a weak callback on `target` running `script`; logs it.
pub fn register(id: Id, target: &Gc<Obj>, script: Vec<CbAct>) -> (CbId, gc::Finalizer) {
    let cb = NEXT_CB.with(|n| {
        let c = n.get();
        n.set(c + 1);
        c
    });
    let f = gc::finalize(target, callback(cb, id, script));
    log(Ev::Registered {
        cb,
        target: id,
        alive: f.alive(),
    });
    (cb, f)
}

/// Registers a `Weak::with_callback`; logs it.
pub fn register_weakref(target: &Gc<Obj>, script: Vec<CbAct>) -> (CbId, pymem::gc::WeakRef<Obj>) {
    let cb = NEXT_CB.with(|n| {
        let c = n.get();
        n.set(c + 1);
        c
    });
    let w = Weak::with_callback(target, callback(cb, target.id, script));
    log(Ev::Registered {
        cb,
        target: target.id,
        alive: w.callback_pending(),
    });
    (cb, w)
}

fn callback(cb: CbId, target: Id, script: Vec<CbAct>) -> impl FnOnce() + 'static {
    move || {
        log(Ev::CallbackRan {
            cb,
            dead_now: dead_now(target),
        });
        if !armed() {
            return;
        }
        for act in script {
            match act {
                CbAct::Alloc(n) => alloc_temps(n),
                CbAct::AllocCycle => alloc_cycle(false),
                CbAct::Collect => {
                    logged_collect(2);
                }
                CbAct::Panic => fuzz_panic(&format!("callback {cb}")),
            }
        }
    }
}

fn register_on_edge(edges: &[Edge], k: u8) {
    if edges.is_empty() {
        return;
    }
    let e = &edges[k as usize % edges.len()];
    let upgrades = Gc::downgrade(&e.gc).upgrade().is_some();
    let (cb, f) = register(e.to, &e.gc, vec![CbAct::Alloc(1)]);
    if upgrades && !f.alive() {
        log(Ev::Violation(format!(
            "gc::finalize on live value {} (callback {cb}) registered nothing",
            e.to
        )));
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        let id = self.id;
        DROPS.with(|d| d.borrow_mut()[id as usize] += 1);
        log(Ev::Dropped { id });
        if !armed() {
            return;
        }
        for act in self.script.clone() {
            match act {
                Act::Alloc(n) => alloc_temps(n),
                Act::AllocCycle(c) => alloc_cycle(c),
                Act::Collect => {
                    logged_collect(2);
                }
                Act::CollectGen(g) => {
                    logged_collect(g % 3);
                }
                Act::StashEdge(k) => {
                    let edges = self.edges.get_mut();
                    if !edges.is_empty() {
                        let e = &edges[k as usize % edges.len()];
                        let dead = Gc::downgrade(&e.gc).upgrade().is_none();
                        STASH.with(|s| s.borrow_mut().push((e.to, e.gc.clone())));
                        log(Ev::Stashed {
                            id: e.to,
                            dead,
                            by_finalizer: false,
                        });
                    }
                }
                Act::DerefEdges => {
                    for e in self.edges.get_mut().iter() {
                        check_deref(id, e);
                    }
                }
                Act::UpgradeWeakEdges => {
                    for w in self.weak_edges.get_mut().iter() {
                        if let Some(g) = w.weak.upgrade() {
                            if drops(w.to) > 0 || g.id != w.to {
                                log(Ev::Violation(format!(
                                    "Drop of {id}: a Weak to {} upgraded to a dropped value",
                                    w.to
                                )));
                            }
                        }
                    }
                }
                Act::TryUnwrapEdge(k) => {
                    let edges = self.edges.get_mut();
                    if !edges.is_empty() {
                        let e = edges.remove(k as usize % edges.len());
                        try_unwrap_logged(e.to, e.gc, drop);
                    }
                }
                Act::RegisterOnEdge(k) => register_on_edge(self.edges.get_mut(), k),
                Act::Panic => fuzz_panic(&format!("Drop of {id}")),
            }
        }
    }
}

/// `Gc::try_unwrap` with the events around it; `then` gets the value.
pub fn try_unwrap_logged(id: Id, g: Gc<Obj>, then: impl FnOnce(Obj)) -> Option<Gc<Obj>> {
    log(Ev::UnwrapBegin { id });
    UNWRAPPING.with(|u| u.borrow_mut().push(id));
    let r = Gc::try_unwrap(g);
    UNWRAPPING.with(|u| {
        let mut u = u.borrow_mut();
        let i = u.iter().rposition(|&x| x == id).unwrap();
        u.remove(i);
    });
    match r {
        Ok(obj) => {
            set_out(id, true);
            log(Ev::UnwrapEnd { id, ok: true });
            then(obj);
            None
        }
        Err(g) => {
            log(Ev::UnwrapEnd { id, ok: false });
            Some(g)
        }
    }
}

/// Inside a `Drop`: dereferencing an edge panics exactly when its value
/// was already dropped, with a message that says so.
fn check_deref(from: Id, e: &Edge) {
    let dropped = drops(e.to) > 0;
    // `try_deref` asks first: `None` exactly for a dropped value.
    match Gc::try_deref(&e.gc) {
        Some(v) if !dropped && v.id == e.to => {
            if let Some((s, st, words)) = &v.label {
                if **s != **st || words.len() != (v.id % 5) as usize {
                    log(Ev::Violation(format!("{}: its labels changed", v.id)));
                }
            }
        }
        None if dropped => log(Ev::Note("try_deref of a dropped value gave None")),
        r => log(Ev::Violation(format!(
            "Drop of {from}: try_deref of {} (dropped: {dropped}) gave {:?}",
            e.to,
            r.map(|v| v.id)
        ))),
    }
    if dropped && std::thread::panicking() {
        return; // a second panic would abort
    }
    let r = catch_unwind(AssertUnwindSafe(|| e.gc.id));
    match (dropped, r) {
        (false, Ok(id)) if id == e.to => {}
        (true, Err(p)) => {
            log(Ev::Note("deref of a dropped value panicked"));
            let msg = panic_message(&*p).unwrap_or_default();
            if !msg.contains("already dropped") {
                log(Ev::Violation(format!(
                    "Drop of {from}: deref of dropped {} panicked with {msg:?}",
                    e.to
                )));
            }
        }
        (dropped, r) => log(Ev::Violation(format!(
            "Drop of {from}: deref of {} (dropped: {dropped}) gave {:?}",
            e.to,
            r.map_err(|p| panic_message(&*p))
        ))),
    }
}

impl Finalize for Obj {
    fn finalize(this: &Gc<Self>) {
        let id = this.id;
        log(Ev::FinalizerRan { id });
        if !armed() {
            return;
        }
        for act in this.fin.clone() {
            match act {
                FinAct::Resurrect => {
                    STASH.with(|s| s.borrow_mut().push((id, this.clone())));
                    log(Ev::Stashed {
                        id,
                        dead: false,
                        by_finalizer: true,
                    });
                }
                FinAct::StashEdge(k) => {
                    let Ok(edges) = this.edges.try_borrow() else {
                        continue;
                    };
                    if !edges.is_empty() {
                        let e = &edges[k as usize % edges.len()];
                        STASH.with(|s| s.borrow_mut().push((e.to, e.gc.clone())));
                        log(Ev::Stashed {
                            id: e.to,
                            dead: false,
                            by_finalizer: true,
                        });
                    }
                }
                FinAct::ClearEdges => {
                    let Ok(mut edges) = this.edges.try_borrow_mut() else {
                        continue;
                    };
                    let old = std::mem::take(&mut *edges);
                    drop(edges);
                    log(Ev::EdgesSet {
                        from: id,
                        to: Vec::new(),
                    });
                    drop(old);
                }
                FinAct::ReadEdges => {
                    let Ok(edges) = this.edges.try_borrow() else {
                        continue;
                    };
                    for e in edges.iter() {
                        let r = catch_unwind(AssertUnwindSafe(|| e.gc.id));
                        if !matches!(r, Ok(x) if x == e.to) {
                            log(Ev::Violation(format!(
                                "finalizer of {id}: edge to {} unreadable: {:?}",
                                e.to,
                                r.map_err(|p| panic_message(&*p))
                            )));
                        }
                    }
                }
                FinAct::Alloc(n) => alloc_temps(n),
                FinAct::Collect => {
                    logged_collect(2);
                }
                FinAct::RegisterOnEdge(k) => {
                    if let Ok(edges) = this.edges.try_borrow() {
                        register_on_edge(&edges, k);
                    }
                }
                FinAct::Panic => fuzz_panic(&format!("finalizer of {id}")),
            }
        }
    }
}
