//! The executor: runs a program's operations on real handles, feeds the
//! event log to the model after every operation (nested ones included)
//! and checks the collector's public state and the real object graph
//! against it.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pymem::gc::{self, Finalizer, WeakRef};
use pymem::{Gc, Weak};

use super::common::panic_message;
use super::heap::{
    self, fuzz_panic, log, logged_collect, new_obj, push_edge, try_unwrap_logged, CbId, Edge, Ev,
    Id, Obj, WeakEdge, FUZZ_PANIC,
};
use super::model::{CbSt, Fin, Holders, Model, St, StepInfo};
use super::program::{Op, Side, VecOp};

/// Options of a run.
#[derive(Clone, Copy, Debug)]
pub struct RunCfg {
    /// Run the operations inside `GetMut` scopes (issue 12 item 1: the
    /// collector traces a value mutably borrowed through `get_mut`).
    pub get_mut_ops: bool,
    /// Print each operation as it runs.
    pub trace: bool,
    pub tolerate: super::model::Tolerate,
}

/// A failed check.
#[derive(Debug, Clone)]
pub struct Fail {
    /// Pre-order index of the operation whose step failed.
    pub at: usize,
    pub op: String,
    pub msgs: Vec<String>,
}

impl Fail {
    /// A short key for "the same failure" while minimizing.
    pub fn key(&self) -> String {
        let m = self.msgs.first().cloned().unwrap_or_default();
        // Drop the numbers (ids, counts) so that a smaller program failing
        // the same way matches.
        m.chars().filter(|c| !c.is_ascii_digit()).collect()
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "operation #{}: {}", self.at, self.op)?;
        for m in &self.msgs {
            writeln!(f, "  - {m}")?;
        }
        Ok(())
    }
}

/// What a leaf operation expects its step to show.
enum Expect {
    None,
    /// A full collection: exactly these pre-existing values dropped, and
    /// others only if they were unreachable (`garbage`) before.
    Full {
        dropped: Vec<Id>,
        garbage: Vec<bool>,
        before: Vec<St>,
    },
}

/// The edge vector a scope holds mutably (`RefMut`, or `get_mut`'s
/// `&mut`), which inner operations use instead of borrowing the cell.
pub struct Ov<'a> {
    id: Id,
    edges: &'a mut Vec<Edge>,
    /// `get_mut`: the object has no other handle (not navigable).
    exclusive: bool,
}

struct StashEntry {
    id: Id,
    zombie_ok: bool,
    gc: Gc<Obj>,
}

/// The program's handles and the model.
pub struct World {
    pub model: Model,
    cfg: RunCfg,
    roots: Vec<(Id, Gc<Obj>)>,
    /// Handles held by scopes, navigable.
    pins: Vec<(Id, Gc<Obj>)>,
    /// Handles held by scopes' stack frames (not navigable).
    held: Vec<Id>,
    weaks: Vec<(Id, u32, Weak<Obj>)>,
    weakrefs: Vec<(CbId, Id, u32, WeakRef<Obj>)>,
    finalizers: Vec<(CbId, Finalizer)>,
    stash: Vec<StashEntry>,
    out: Vec<Obj>,
    /// Pre-order index of the operation running.
    pub at: usize,
    callback: Option<gc::CallbackId>,
    /// What the run exercised (event kinds and notable outcomes).
    pub coverage: BTreeMap<String, u64>,
}

type Res = Result<(), Fail>;

/// What `World::walk` calls for each object: its handle (`None` for a
/// value held outside a `Gc`), the value, its edges; `true` stops.
type Visit<'f> = dyn FnMut(Option<&Gc<Obj>>, &Obj, &[Edge]) -> bool + 'f;

impl World {
    pub fn new(cfg: RunCfg) -> World {
        let callback = gc::callbacks::add(|phase, info| {
            let gen = info.generation as u8;
            log(match phase {
                gc::Phase::Start => Ev::GcStart { gen },
                gc::Phase::Stop => Ev::GcStop {
                    gen,
                    collected: info.collected,
                },
            })
        });
        let mut model = Model::new();
        model.tolerate = cfg.tolerate;
        World {
            model,
            cfg,
            roots: Vec::new(),
            pins: Vec::new(),
            held: Vec::new(),
            weaks: Vec::new(),
            weakrefs: Vec::new(),
            finalizers: Vec::new(),
            stash: Vec::new(),
            out: Vec::new(),
            at: 0,
            callback: Some(callback),
            coverage: BTreeMap::new(),
        }
    }

    fn cover(&mut self, what: &str) {
        *self.coverage.entry(what.to_string()).or_default() += 1;
    }

    fn fail(&self, op: &Op, msgs: Vec<String>) -> Fail {
        let mut op = format!("{op:?}");
        if op.len() > 300 {
            op.truncate(300);
            op.push_str("...");
        }
        Fail {
            at: self.at,
            op,
            msgs,
        }
    }

    fn holders(&self, ov: &Option<Ov<'_>>) -> Holders {
        let mut h = Holders::default();
        h.strong.extend(self.roots.iter().map(|r| r.0));
        h.strong.extend(self.pins.iter().map(|r| r.0));
        h.strong.extend(self.held.iter().copied());
        for s in &self.stash {
            h.strong.push(s.id);
            h.stash.push((s.id, s.zombie_ok));
        }
        h.out.extend(self.out.iter().map(|o| o.id));
        h.weak.extend(self.weaks.iter().map(|w| (w.0, w.1)));
        h.weak.extend(self.weakrefs.iter().map(|w| (w.1, w.2)));
        let _ = ov;
        h
    }

    // ------------------------------------------------------------------
    // the real graph

    /// Depth-first walk over everything the program's handles reach,
    /// without touching any count: `f(handle, value, edges)` for each
    /// object once (the handle is `None` for values held outside a `Gc`).
    /// Stops when `f` returns true.
    fn walk(&self, ov: &Option<Ov<'_>>, f: &mut Visit<'_>) {
        let mut seen = vec![false; self.model.nodes.len() + 1];
        let ovr: Option<(Id, &[Edge])> = ov.as_ref().map(|o| (o.id, &o.edges[..]));
        fn go(
            g: &Gc<Obj>,
            id: Id,
            ovr: Option<(Id, &[Edge])>,
            seen: &mut Vec<bool>,
            f: &mut Visit<'_>,
        ) -> bool {
            let i = id as usize;
            if i >= seen.len() {
                seen.resize(i + 1, false);
            }
            if seen[i] {
                return false;
            }
            seen[i] = true;
            let obj: &Obj = g;
            let guard;
            let edges: &[Edge] = match ovr {
                Some((oid, e)) if oid == id => e,
                _ => match obj.edges.try_borrow() {
                    Ok(b) => {
                        guard = b;
                        &guard
                    }
                    Err(_) => return false,
                },
            };
            if f(Some(g), obj, edges) {
                return true;
            }
            edges.iter().any(|e| go(&e.gc, e.to, ovr, seen, f))
        }
        for (id, g) in self.roots.iter().chain(&self.pins) {
            if go(g, *id, ovr, &mut seen, f) {
                return;
            }
        }
        for s in &self.stash {
            if self.model.st(s.id) == St::Live && go(&s.gc, s.id, ovr, &mut seen, f) {
                return;
            }
        }
        for o in &self.out {
            let Ok(edges) = o.edges.try_borrow() else {
                continue;
            };
            if f(None, o, &edges) {
                return;
            }
            if edges.iter().any(|e| go(&e.gc, e.to, ovr, &mut seen, f)) {
                return;
            }
        }
        if let Some((id, edges)) = ovr {
            if ov.as_ref().is_some_and(|o| o.exclusive) {
                let i = id as usize;
                if i < seen.len() {
                    seen[i] = true;
                }
                edges.iter().any(|e| go(&e.gc, e.to, ovr, &mut seen, f));
            }
        }
    }

    /// Ids of the objects a handle can be obtained for, sorted.
    fn navigable(&self, ov: &Option<Ov<'_>>) -> Vec<Id> {
        let mut v = Vec::new();
        self.walk(ov, &mut |g, o, _| {
            if g.is_some() {
                v.push(o.id);
            }
            false
        });
        v.sort_unstable();
        v
    }

    fn pick(&self, ov: &Option<Ov<'_>>, sel: u16) -> Option<Gc<Obj>> {
        let nav = self.navigable(ov);
        if nav.is_empty() {
            return None;
        }
        self.pick_id(ov, nav[sel as usize % nav.len()])
    }

    /// Runs `f` on the edge vector of the object `sel` picks (the scope's
    /// own vector if it is that one, or the exclusive scope's object),
    /// unless its `RefCell` is borrowed.
    fn with_edges(
        &mut self,
        ov: &mut Option<Ov<'_>>,
        sel: u16,
        f: impl FnOnce(&mut World, Id, &mut Vec<Edge>),
    ) {
        let mut nav = self.navigable(ov);
        if let Some(o) = ov.as_ref().filter(|o| o.exclusive) {
            nav.push(o.id);
            nav.sort_unstable();
        }
        if nav.is_empty() {
            return;
        }
        let id = nav[sel as usize % nav.len()];
        if let Some(o) = ov.as_mut().filter(|o| o.id == id) {
            return f(self, id, o.edges);
        }
        let Some(g) = self.pick_id(ov, id) else {
            return;
        };
        let Ok(mut edges) = g.edges.try_borrow_mut() else {
            return;
        };
        f(self, id, &mut edges);
    }

    /// A handle to object `id`, if the program's handles reach it.
    fn pick_id(&self, ov: &Option<Ov<'_>>, id: Id) -> Option<Gc<Obj>> {
        let mut found = None;
        self.walk(ov, &mut |g, o, _| {
            if o.id == id {
                found = g.cloned();
                true
            } else {
                false
            }
        });
        found
    }

    // ------------------------------------------------------------------
    // steps

    /// Runs one top-level operation, catching the panics it may raise on
    /// purpose.
    pub fn run_top(&mut self, op: &Op) -> Res {
        let r = catch_unwind(AssertUnwindSafe(|| self.step(op, &mut None)));
        match r {
            Ok(res) => res,
            Err(p) => {
                let msg = panic_message(&*p).unwrap_or_else(|| "<non-string payload>".into());
                // Scopes' handles went with the unwinding.
                let pins = std::mem::take(&mut self.pins);
                self.held.clear();
                let again = catch_unwind(AssertUnwindSafe(|| drop(pins)));
                let again = again.err().and_then(|p| panic_message(&*p));
                let r = self.finish(op, &mut None, true, Expect::None);
                let unexpected = [Some(msg), again]
                    .into_iter()
                    .flatten()
                    .find(|m| !m.starts_with(FUZZ_PANIC));
                if let Some(msg) = unexpected {
                    let mut f = self.fail(op, vec![format!("unexpected panic: {msg}")]);
                    if let Err(e) = r {
                        f.msgs.extend(e.msgs);
                    }
                    return Err(f);
                }
                r
            }
        }
    }

    fn step(&mut self, op: &Op, ov: &mut Option<Ov<'_>>) -> Res {
        self.at += 1;
        if self.cfg.trace {
            eprintln!("#{} {op:?}", self.at - 1);
        }
        match op {
            Op::GetMut {
                root,
                fill,
                fresh,
                ops,
            } => self.get_mut_scope(op, *root, fill, fresh, ops, ov),
            Op::Borrow { node, mutable, ops } => self.borrow_scope(op, *node, *mutable, ops, ov),
            Op::Cyclic {
                self_weak,
                keep_weak,
                take,
                inner,
            } => self.cyclic(op, *self_weak, *keep_weak, *take, inner, ov),
            _ => {
                let e = self.leaf(op, ov)?;
                self.finish(op, ov, false, e)
            }
        }
    }

    fn skip_ops(&mut self, ops: &[Op]) {
        self.at += super::program::size(ops);
    }

    fn get_mut_scope(
        &mut self,
        op: &Op,
        root: Option<u16>,
        fill: &[u16],
        fresh: &[Vec<heap::Act>],
        ops: &[Op],
        ov: &mut Option<Ov<'_>>,
    ) -> Res {
        let (id, mut g) = match root {
            Some(_) if self.roots.is_empty() => {
                self.skip_ops(ops);
                return self.finish(op, ov, false, Expect::None);
            }
            Some(r) => self.roots.swap_remove(r as usize % self.roots.len()),
            None => {
                let g = new_obj(Vec::new(), None, false);
                for &sel in fill {
                    if let Some(t) = self.pick(ov, sel) {
                        push_edge(g.id, &mut g.edges.borrow_mut(), t);
                    }
                }
                for script in fresh {
                    let t = new_obj(script.clone(), None, false);
                    push_edge(g.id, &mut g.edges.borrow_mut(), t);
                }
                self.held.push(g.id);
                if let Err(f) = self.finish(op, ov, false, Expect::None) {
                    self.held.pop();
                    self.roots.push((g.id, g));
                    return Err(f);
                }
                self.held.pop();
                (g.id, g)
            }
        };
        self.held.push(id);
        let h = self.holders(ov);
        let expect = self.model.st(id) == St::Live
            && self.model.strong_count(id, &h) == 1
            && self.model.weak_count(id, &h) == 0;
        let mut res = Ok(());
        self.cover(if expect {
            "get_mut Some"
        } else {
            "get_mut None"
        });
        match Gc::get_mut(&mut g) {
            Some(m) => {
                if !expect {
                    let msg = format!(
                        "Gc::get_mut on {id} returned Some with {} strong, {} weak handles",
                        self.model.strong_count(id, &h),
                        self.model.weak_count(id, &h)
                    );
                    res = Err(self.fail(op, vec![msg]));
                }
                m.tag.set(m.tag.get() + 1);
                if res.is_ok() && self.cfg.get_mut_ops && ov.is_none() && !ops.is_empty() {
                    let mut inner = Some(Ov {
                        id,
                        edges: m.edges.get_mut(),
                        exclusive: true,
                    });
                    res = self.finish(op, &mut inner, false, Expect::None);
                    for o in ops {
                        if res.is_err() {
                            break;
                        }
                        res = self.step(o, &mut inner);
                    }
                } else {
                    self.skip_ops(ops);
                }
            }
            None => {
                if expect {
                    res = Err(self.fail(
                        op,
                        vec![format!("Gc::get_mut on unique {id} returned None")],
                    ));
                }
                self.skip_ops(ops);
            }
        }
        let k = self.held.iter().rposition(|&x| x == id).unwrap();
        self.held.remove(k);
        self.roots.push((id, g));
        res?;
        self.finish(op, ov, false, Expect::None)
    }

    fn borrow_scope(
        &mut self,
        op: &Op,
        node: u16,
        mutable: bool,
        ops: &[Op],
        ov: &mut Option<Ov<'_>>,
    ) -> Res {
        let picked = if mutable && ov.is_some() {
            None
        } else {
            self.pick(ov, node)
        };
        let Some(g) = picked else {
            self.skip_ops(ops);
            return self.finish(op, ov, false, Expect::None);
        };
        let id = g.id;
        self.cover(if mutable {
            "borrow scope (mut)"
        } else {
            "borrow scope (shared)"
        });
        self.pins.push((id, g.clone()));
        self.held.push(id);
        let mut res = self.finish(op, ov, false, Expect::None);
        if mutable {
            match g.edges.try_borrow_mut() {
                Ok(mut guard) => {
                    let mut inner = Some(Ov {
                        id,
                        edges: &mut guard,
                        exclusive: false,
                    });
                    for o in ops {
                        if res.is_err() {
                            break;
                        }
                        res = self.step(o, &mut inner);
                    }
                }
                Err(_) => self.skip_ops(ops),
            }
        } else {
            match g.edges.try_borrow() {
                Ok(guard) => {
                    for o in ops {
                        if res.is_err() {
                            break;
                        }
                        res = self.step(o, ov);
                    }
                    drop(guard);
                }
                Err(_) => self.skip_ops(ops),
            }
        }
        let k = self.pins.iter().rposition(|p| p.0 == id).unwrap();
        let pin = self.pins.remove(k);
        let k = self.held.iter().rposition(|&x| x == id).unwrap();
        self.held.remove(k);
        drop(pin);
        drop(g);
        res?;
        self.finish(op, ov, false, Expect::None)
    }

    fn cyclic(
        &mut self,
        op: &Op,
        self_weak: bool,
        keep_weak: bool,
        take: u8,
        inner: &[Op],
        ov: &mut Option<Ov<'_>>,
    ) -> Res {
        let id = heap::next_id();
        log(Ev::CyclicBegin { id });
        let mut res = Ok(());
        let g = Gc::new_cyclic(|w: &Weak<Obj>| {
            if w.upgrade().is_some() || w.strong_count() != 0 {
                log(Ev::Violation(format!(
                    "new_cyclic's Weak to {id} upgrades (strong {}) before the value exists",
                    w.strong_count()
                )));
            }
            if keep_weak {
                self.weaks.push((id, 0, w.clone()));
            }
            res = self.finish(op, ov, false, Expect::None);
            for o in inner {
                if res.is_err() {
                    break;
                }
                res = self.step(o, ov);
            }
            let obj = heap::make_obj_with_id(id, Vec::new(), Vec::new(), false);
            if self_weak {
                obj.weak_edges.borrow_mut().push(WeakEdge {
                    to: id,
                    epoch: 0,
                    weak: w.clone(),
                });
                log(Ev::WeakEdgeAdded {
                    from: id,
                    to: id,
                    epoch: 0,
                });
            }
            for k in 0..take as usize {
                if self.roots.is_empty() {
                    break;
                }
                let c = self.roots[k % self.roots.len()].1.clone();
                push_edge(id, &mut obj.edges.borrow_mut(), c);
            }
            log(Ev::NewBegin { id });
            obj
        });
        log(Ev::Wrapped { id, fin: false });
        self.roots.push((id, g));
        res?;
        self.finish(op, ov, false, Expect::None)
    }

    fn leaf(&mut self, op: &Op, ov: &mut Option<Ov<'_>>) -> Result<Expect, Fail> {
        match op {
            Op::New {
                script,
                fin,
                label,
                link_from,
            } => {
                let g = new_obj(script.clone(), fin.clone(), *label);
                if let Some(sel) = link_from {
                    let c = g.clone();
                    self.with_edges(ov, *sel, |_, from, edges| push_edge(from, edges, c));
                }
                self.roots.push((g.id, g));
            }
            Op::Chain { len, every, script } => {
                let head = new_obj(Vec::new(), None, false);
                let mut cur = head.clone();
                for i in 1..*len {
                    let s = if i % (*every).max(1) == 0 {
                        script.clone()
                    } else {
                        Vec::new()
                    };
                    let n = new_obj(s, None, false);
                    push_edge(cur.id, &mut cur.edges.borrow_mut(), n.clone());
                    cur = n;
                }
                drop(cur);
                self.roots.push((head.id, head));
            }
            Op::Clone(sel) => {
                if !self.roots.is_empty() {
                    let r = &self.roots[*sel as usize % self.roots.len()];
                    let c = (r.0, r.1.clone());
                    self.roots.push(c);
                }
            }
            Op::DropRoot(sel) => {
                if !self.roots.is_empty() {
                    let r = self.roots.swap_remove(*sel as usize % self.roots.len());
                    drop(r);
                }
            }
            Op::DropRoots(percent) => {
                let n = self.roots.len() * *percent as usize / 100;
                let gone: Vec<_> = self.roots.drain(..n).collect();
                drop(gone);
            }
            Op::Downgrade(sel) => {
                if let Some(g) = self.pick(ov, *sel) {
                    let ep = self.model.nodes[g.id as usize].epoch;
                    self.weaks.push((g.id, ep, Gc::downgrade(&g)));
                }
            }
            Op::Upgrade(sel) => {
                if !self.weaks.is_empty() {
                    let (id, ep, w) = &self.weaks[*sel as usize % self.weaks.len()];
                    let (id, ep) = (*id, *ep);
                    let up = w.upgrade();
                    if up.is_some() != self.model.upgrades(id, ep) {
                        return Err(self.fail(
                            op,
                            vec![format!(
                                "Weak::upgrade of {id} (allocation {ep}, state {:?}) gave {}",
                                self.model.st(id),
                                if up.is_some() { "Some" } else { "None" }
                            )],
                        ));
                    }
                    if let Some(g) = up {
                        self.roots.push((id, g));
                    }
                }
            }
            Op::DropWeak(sel) => {
                if !self.weaks.is_empty() {
                    let w = self.weaks.swap_remove(*sel as usize % self.weaks.len());
                    drop(w);
                }
            }
            Op::AddEdge { from, to } => {
                if let Some(t) = self.pick(ov, *to) {
                    self.with_edges(ov, *from, |_, from, edges| push_edge(from, edges, t));
                }
            }
            Op::AddWeakEdge { from, to } => {
                if let Some(t) = self.pick(ov, *to) {
                    let ep = self.model.nodes[t.id as usize].epoch;
                    let w = WeakEdge {
                        to: t.id,
                        epoch: ep,
                        weak: Gc::downgrade(&t),
                    };
                    drop(t);
                    let Some(f) = self.pick(ov, *from) else {
                        return Ok(Expect::None);
                    };
                    let from = f.id;
                    if let Ok(mut we) = f.weak_edges.try_borrow_mut() {
                        let to = w.to;
                        we.push(w);
                        log(Ev::WeakEdgeAdded {
                            from,
                            to,
                            epoch: ep,
                        });
                    };
                }
            }
            Op::RemoveEdge { from, k } => {
                let k = *k as usize;
                self.with_edges(ov, *from, |_, from, edges| {
                    if !edges.is_empty() {
                        let pos = k % edges.len();
                        let e = edges.remove(pos);
                        log(Ev::EdgeRemoved { from, pos });
                        drop(e);
                    }
                });
            }
            Op::ClearEdges(sel) => {
                self.with_edges(ov, *sel, |_, from, edges| {
                    let old = std::mem::take(edges);
                    log(Ev::EdgesSet {
                        from,
                        to: Vec::new(),
                    });
                    drop(old);
                });
            }
            Op::Collect => {
                let h = self.holders(ov);
                let (dropped, garbage) = self.model.expect_full_collection(&h, None);
                let found = dropped.len();
                let before = self.model.nodes.iter().map(|n| n.st).collect();
                let got = logged_collect(2);
                if got != found {
                    return Err(self.fail(
                        op,
                        vec![format!(
                            "gc::collect() returned {got}, the model expects {found}: {dropped:?}"
                        )],
                    ));
                }
                return Ok(Expect::Full {
                    dropped,
                    garbage,
                    before,
                });
            }
            Op::CollectGen(g) => {
                logged_collect(*g % 3);
            }
            Op::SetThreshold(a, b, c) => {
                let t = [*a as usize, *b as usize, *c as usize];
                gc::set_threshold(t[0], t[1], t[2]);
                self.model.threshold = t;
            }
            Op::Enable => {
                gc::enable();
                self.model.enabled = true;
            }
            Op::Disable => {
                gc::disable();
                self.model.enabled = false;
            }
            Op::Freeze => {
                gc::freeze();
                log(Ev::Frozen);
            }
            Op::Unfreeze => {
                gc::unfreeze();
                log(Ev::Unfrozen);
            }
            Op::TryUnwrap(sel) => {
                if !self.roots.is_empty() {
                    let (id, g) = self.roots.swap_remove(*sel as usize % self.roots.len());
                    let h = self.holders(ov);
                    let expect =
                        self.model.st(id) == St::Live && self.model.strong_count(id, &h) == 0;
                    let out = &mut self.out;
                    let back = try_unwrap_logged(id, g, |obj| out.push(obj));
                    let ok = back.is_none();
                    self.cover(if ok {
                        "try_unwrap Ok"
                    } else {
                        "try_unwrap Err"
                    });
                    if let Some(g) = back {
                        self.roots.push((id, g));
                    }
                    if ok != expect {
                        return Err(self.fail(
                            op,
                            vec![format!(
                                "Gc::try_unwrap of {id} gave {} with {} other strong handles",
                                if ok { "Ok" } else { "Err" },
                                self.model.strong_count(id, &h)
                            )],
                        ));
                    }
                }
            }
            Op::DropOut(sel) => {
                if !self.out.is_empty() {
                    let o = self.out.swap_remove(*sel as usize % self.out.len());
                    drop(o);
                }
            }
            Op::Rewrap(sel) => {
                if !self.out.is_empty() {
                    let o = self.out.swap_remove(*sel as usize % self.out.len());
                    heap::set_out(o.id, false);
                    let g = heap::wrap(o, false);
                    self.roots.push((g.id, g));
                }
            }
            Op::WeakRef { node, script } => {
                if let Some(g) = self.pick(ov, *node) {
                    let ep = self.model.nodes[g.id as usize].epoch;
                    let (cb, w) = heap::register_weakref(&g, script.clone());
                    self.weakrefs.push((cb, g.id, ep, w));
                }
            }
            Op::Finalize { node, script } => {
                if let Some(g) = self.pick(ov, *node) {
                    let (cb, f) = heap::register(g.id, &g, script.clone());
                    self.finalizers.push((cb, f));
                }
            }
            Op::DropWeakRef(sel) => {
                if !self.weakrefs.is_empty() {
                    let w = self
                        .weakrefs
                        .swap_remove(*sel as usize % self.weakrefs.len());
                    log(Ev::Cancelled { cb: w.0 });
                    drop(w);
                }
            }
            Op::Detach(sel) | Op::Call(sel) => {
                if !self.finalizers.is_empty() {
                    let (cb, f) = self.finalizers[*sel as usize % self.finalizers.len()].clone();
                    let pending = self.model.cbs[cb as usize].st == CbSt::Pending;
                    let r = if matches!(op, Op::Detach(_)) {
                        log(Ev::Cancelled { cb });
                        f.detach()
                    } else {
                        log(Ev::CallBegin { cb });
                        let r = f.call();
                        log(Ev::Cancelled { cb });
                        r
                    };
                    if r != pending {
                        return Err(self.fail(
                            op,
                            vec![format!(
                                "callback {cb}: detach/call gave {r}, pending {pending}"
                            )],
                        ));
                    }
                }
            }
            Op::DropStash(sel) => {
                if !self.stash.is_empty() {
                    let s = self.stash.swap_remove(*sel as usize % self.stash.len());
                    drop(s);
                }
            }
            Op::TouchStash(sel) => {
                if !self.stash.is_empty() {
                    let i = *sel as usize % self.stash.len();
                    let msgs = self.touch_stash(i);
                    if !msgs.is_empty() {
                        return Err(self.fail(op, msgs));
                    }
                }
            }
            Op::StashToRoot(sel) => {
                if !self.stash.is_empty() {
                    let i = *sel as usize % self.stash.len();
                    if self.model.st(self.stash[i].id) == St::Live {
                        let s = self.stash.swap_remove(i);
                        self.roots.push((s.id, s.gc));
                    }
                }
            }
            Op::Vec(v) => {
                if let Some(o) = ov.as_mut() {
                    self.vec_op(v, o.id, o.edges);
                }
            }
            Op::Boom => fuzz_panic("boom"),
            Op::Census => {
                let c = gc::census();
                let (tracked, frozen) = self.model.tracked();
                let objs = c.count(std::any::type_name::<Obj>());
                if c.total_count() != tracked + frozen || objs != tracked + frozen {
                    return Err(self.fail(
                        op,
                        vec![format!(
                            "census: {} objects, {objs} of Obj; model {tracked} tracked + {frozen} frozen",
                            c.total_count()
                        )],
                    ));
                }
            }
            Op::GetMut { .. } | Op::Borrow { .. } | Op::Cyclic { .. } => unreachable!(),
        }
        Ok(Expect::None)
    }

    /// A zombie (a handle to a value the collector dropped) panics on
    /// deref, does not unwrap or upgrade; a live stashed handle works.
    fn touch_stash(&mut self, i: usize) -> Vec<String> {
        let mut msgs = Vec::new();
        let id = self.stash[i].id;
        let dropped = self.model.st(id) == St::Dropped;
        self.cover(if dropped {
            "touch zombie"
        } else {
            "touch live stash"
        });
        let r = catch_unwind(AssertUnwindSafe(|| self.stash[i].gc.id));
        match (&r, dropped) {
            (Ok(x), false) if *x == id => {}
            (Err(p), true) => {
                let m = panic_message(&**p).unwrap_or_default();
                if !m.contains("already dropped") {
                    msgs.push(format!("deref of zombie {id} panicked with {m:?}"));
                }
            }
            _ => msgs.push(format!(
                "deref of stashed {id} (dropped: {dropped}) gave {:?}",
                r.as_ref().map_err(|p| panic_message(&**p))
            )),
        }
        if dropped {
            let s = self.stash.swap_remove(i);
            if Gc::downgrade(&s.gc).upgrade().is_some() {
                msgs.push(format!("a Weak to zombie {id} upgrades"));
            }
            let mut g = match Gc::try_unwrap(s.gc) {
                Ok(_) => {
                    msgs.push(format!("try_unwrap of zombie {id} succeeded"));
                    return msgs;
                }
                Err(g) => g,
            };
            if Gc::get_mut(&mut g).is_some() {
                msgs.push(format!("get_mut of zombie {id} succeeded"));
            }
            self.stash.push(StashEntry {
                id,
                zombie_ok: s.zombie_ok,
                gc: g,
            });
        }
        msgs
    }

    fn vec_op(&mut self, v: &VecOp, from: Id, edges: &mut Vec<Edge>) {
        match v {
            VecOp::PushNew(script) => {
                let g = new_obj(script.clone(), None, false);
                push_edge(from, edges, g);
            }
            VecOp::PushExisting(sel) => {
                // (The scope's own object is not navigable through its
                // vector while it is borrowed: pick among the others.)
                let nav = self.navigable_excluding(from, edges);
                if !nav.is_empty() {
                    let g = nav[*sel as usize % nav.len()].clone();
                    push_edge(from, edges, g);
                }
            }
            VecOp::Remove(sel) => {
                if !edges.is_empty() {
                    let pos = *sel as usize % edges.len();
                    let e = edges.remove(pos);
                    log(Ev::EdgeRemoved { from, pos });
                    drop(e);
                }
            }
            VecOp::Retain { mask, side } => {
                let (mut i, mut kept) = (0u32, 0usize);
                edges.retain(|_| {
                    side_effect(*side);
                    let keep = mask >> (i % 64) & 1 == 1;
                    i += 1;
                    if keep {
                        kept += 1;
                    } else {
                        log(Ev::EdgeRemoved { from, pos: kept });
                    }
                    keep
                });
            }
            VecOp::Dedup(side) => {
                let mut kept = 1usize;
                edges.dedup_by(|a, b| {
                    side_effect(*side);
                    let same = a.to == b.to;
                    if same {
                        log(Ev::EdgeRemoved { from, pos: kept });
                    } else {
                        kept += 1;
                    }
                    same
                });
            }
            VecOp::Replace { mask, script } => {
                let mut new: Vec<Edge> = edges
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
                    .map(|(_, e)| Edge {
                        to: e.to,
                        gc: e.gc.clone(),
                    })
                    .collect();
                let g = new_obj(script.clone(), None, false);
                new.push(Edge { to: g.id, gc: g });
                log(Ev::EdgesSet {
                    from,
                    to: new.iter().map(|e| e.to).collect(),
                });
                // The old vector is dropped in place, its elements one by
                // one, while the object still holds it.
                *edges = new;
            }
            VecOp::Truncate(sel) => {
                let n = *sel as usize % (edges.len() + 1);
                log(Ev::EdgesSet {
                    from,
                    to: edges[..n].iter().map(|e| e.to).collect(),
                });
                edges.truncate(n);
            }
        }
    }

    /// Handles to the navigable objects, the scope's own one excluded,
    /// found through the roots and the scope's vector.
    fn navigable_excluding(&self, own: Id, edges: &[Edge]) -> Vec<Gc<Obj>> {
        let mut out: Vec<Gc<Obj>> = Vec::new();
        let ov = None;
        self.walk(&ov, &mut |g, o, _| {
            if let Some(g) = g {
                if o.id != own {
                    out.push(g.clone());
                }
            }
            false
        });
        for e in edges {
            if e.to != own && !out.iter().any(|g| g.id == e.to) {
                out.push(e.gc.clone());
            }
        }
        out.sort_by_key(|g| g.id);
        out
    }

    // ------------------------------------------------------------------
    // the checks

    /// Moves the stash in, replays the log, settles the model, and checks
    /// the collector's state and the real graph.
    fn finish(&mut self, op: &Op, ov: &mut Option<Ov<'_>>, panicked: bool, e: Expect) -> Res {
        let evs = heap::take_log();
        if self.cfg.trace {
            for ev in &evs {
                eprintln!("    {ev:?}");
            }
        }
        let mut stashed = heap::take_stash().into_iter();
        for ev in &evs {
            if let Ev::Stashed {
                id,
                dead,
                by_finalizer,
            } = ev
            {
                let (sid, gc) = stashed.next().expect("harness: stash and log agree");
                assert_eq!(sid, *id, "harness: stash order");
                self.stash.push(StashEntry {
                    id: sid,
                    zombie_ok: *dead && !by_finalizer,
                    gc,
                });
            }
        }
        let h = self.holders(ov);
        self.count_coverage(&evs, panicked);
        let limbo = self
            .model
            .nodes
            .iter()
            .filter(|n| n.st == St::Limbo)
            .count();
        self.model.apply(&evs, &h);
        self.model
            .settle(&h, ov.as_ref().map(|o| o.id), &StepInfo { panicked });
        let limbo_after = self
            .model
            .nodes
            .iter()
            .filter(|n| n.st == St::Limbo)
            .count();
        if limbo_after > limbo {
            self.cover("deferred drops left queued by a panic (limbo)");
        }
        let mut msgs = std::mem::take(&mut self.model.violations);
        if let Expect::Full {
            dropped,
            garbage,
            before,
        } = e
        {
            for (i, st) in before.iter().enumerate() {
                let now = self.model.nodes[i].st;
                let newly = now == St::Dropped && *st != St::Dropped;
                let expected = dropped.contains(&(i as Id));
                // Unreachable values the collection did not take may go by
                // refcounting once it dropped those referring to them;
                // values outside a `Gc` or deferred are not its business.
                let excused = newly && (garbage[i] || !matches!(st, St::Live));
                if newly != expected && !excused {
                    msgs.push(format!(
                        "full collection: value {i} ({st:?} -> {now:?}) {} (model: {dropped:?})",
                        if expected {
                            "should have been dropped"
                        } else {
                            "should not have been dropped"
                        }
                    ));
                }
            }
        }
        if msgs.is_empty() {
            msgs = self.check_api(&h);
        }
        if msgs.is_empty() {
            msgs = self.audit(ov);
        }
        self.model.max_depth = 0;
        self.model.step_collections = 0;
        if msgs.is_empty() {
            Ok(())
        } else {
            Err(self.fail(op, msgs))
        }
    }

    fn count_coverage(&mut self, evs: &[Ev], panicked: bool) {
        let (mut collecting, mut depth, mut deep) = (self.model.collecting, 0u32, false);
        for ev in evs {
            let name = format!("{ev:?}");
            let cut = name.find([' ', '(']).unwrap_or(name.len());
            let key = match ev {
                Ev::Stashed { dead: true, .. } => "Stashed (zombie)",
                Ev::Stashed {
                    by_finalizer: true, ..
                } => "Stashed (finalizer)",
                Ev::GcStop { collected, .. } if *collected > 0 => "GcStop (found garbage)",
                Ev::CollectReturn { found: 0 } => "CollectReturn (0)",
                Ev::CallbackRan {
                    dead_now: false, ..
                } => "CallbackRan (early)",
                Ev::Dropped { .. } if collecting > 0 => "Dropped (in a collection)",
                Ev::Note(n) => n,
                _ => &name[..cut],
            };
            *self.coverage.entry(key.to_string()).or_default() += 1;
            match ev {
                Ev::GcStart { .. } => collecting += 1,
                Ev::GcStop { .. } => collecting = collecting.saturating_sub(1),
                Ev::Dropped { .. } => {
                    depth += 1;
                    deep |= depth >= 64;
                }
                Ev::DropEnd { .. } => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if panicked {
            self.cover("step panicked");
        }
        if deep {
            self.cover("drops nested 64 deep");
        }
    }

    /// The collector's public numbers and the handles' counts.
    fn check_api(&mut self, h: &Holders) -> Vec<String> {
        let mut msgs = Vec::new();
        let m = &mut self.model;
        let (tracked, frozen) = m.tracked();
        if gc::tracked_count() != tracked || gc::get_freeze_count() != frozen {
            msgs.push(format!(
                "tracked_count/get_freeze_count = {}/{}, model {tracked}/{frozen}",
                gc::tracked_count(),
                gc::get_freeze_count()
            ));
        }
        let stats = gc::get_stats();
        for (g, stats) in stats.iter().enumerate() {
            if stats.collections != m.stats_collections[g]
                || stats.collected != m.stats_collected[g]
                || stats.uncollectable != 0
            {
                msgs.push(format!(
                    "get_stats()[{g}] = {:?}, model collections {} collected {}",
                    stats, m.stats_collections[g], m.stats_collected[g]
                ));
            }
        }
        let (c0, c1, c2) = gc::get_count();
        if c1 != m.count[1] || c2 != m.count[2] {
            msgs.push(format!(
                "get_count() = {:?}, model (_, {}, {})",
                (c0, c1, c2),
                m.count[1],
                m.count[2]
            ));
        }
        let (lo, hi) = m.count0;
        let reordered = m.max_depth >= 16;
        if !(reordered || (lo <= c0 && c0 <= hi)) {
            msgs.push(format!("get_count()[0] = {c0}, model {lo}..={hi}"));
        }
        m.count0 = (c0, c0);
        m.count_uncertain = false;
        if gc::is_enabled() != m.enabled {
            msgs.push(format!("gc::is_enabled() = {}", gc::is_enabled()));
        }
        let t = gc::get_threshold();
        if [t.0, t.1, t.2] != m.threshold {
            msgs.push(format!(
                "gc::get_threshold() = {t:?}, model {:?}",
                m.threshold
            ));
        }
        let m = &self.model;
        let weak_handles = self
            .weaks
            .iter()
            .map(|(id, ep, w)| (*id, *ep, w))
            .chain(self.weakrefs.iter().map(|(_, id, ep, w)| (*id, *ep, &**w)));
        for (id, ep, w) in weak_handles {
            let up = m.upgrades(id, ep);
            let (s, wc) = if up {
                (m.strong_count(id, h), m.weak_count(id, h))
            } else {
                (0, 0)
            };
            if w.strong_count() != s || w.weak_count() != wc {
                msgs.push(format!(
                    "Weak to {id} (allocation {ep}, {:?}): strong/weak count {}/{}, model {s}/{wc}",
                    m.st(id),
                    w.strong_count(),
                    w.weak_count()
                ));
            }
        }
        for (cb, _, _, w) in &self.weakrefs {
            let pending = m.cbs[*cb as usize].st == CbSt::Pending;
            if w.callback_pending() != pending && m.cbs[*cb as usize].st != CbSt::Unknown {
                msgs.push(format!(
                    "WeakRef callback {cb}: callback_pending() = {}",
                    !pending
                ));
            }
        }
        for (cb, f) in &self.finalizers {
            let st = m.cbs[*cb as usize].st;
            if f.alive() != (st == CbSt::Pending) && st != CbSt::Unknown {
                msgs.push(format!("Finalizer {cb} ({st:?}): alive() = {}", f.alive()));
            }
        }
        for (id, g) in self.roots.iter().chain(&self.pins) {
            let n = &m.nodes[*id as usize];
            let (s, w) = (m.strong_count(*id, h), m.weak_count(*id, h));
            if Gc::strong_count(g) != s || Gc::weak_count(g) != w {
                msgs.push(format!(
                    "root {id}: strong/weak count {}/{}, model {s}/{w}",
                    Gc::strong_count(g),
                    Gc::weak_count(g)
                ));
            }
            if gc::is_finalized(g) != (n.fin == Fin::Done) || !gc::is_tracked(g) {
                msgs.push(format!(
                    "root {id}: is_finalized {} (model {:?}), is_tracked {}",
                    gc::is_finalized(g),
                    n.fin,
                    gc::is_tracked(g)
                ));
            }
        }
        for s in &self.stash {
            let want = m.strong_count(s.id, h);
            if Gc::strong_count(&s.gc) != want {
                msgs.push(format!(
                    "stashed {} ({:?}): strong count {}, model {want}",
                    s.id,
                    m.st(s.id),
                    Gc::strong_count(&s.gc)
                ));
            }
        }
        msgs
    }

    /// Every object the handles reach: its edges are the model's, each
    /// edge leads to the value it names.
    fn audit(&self, ov: &Option<Ov<'_>>) -> Vec<String> {
        let mut msgs = Vec::new();
        let m = &self.model;
        self.walk(ov, &mut |g, o, edges| {
            let id = o.id;
            let n = &m.nodes[id as usize];
            let want_st = if g.is_some() { St::Live } else { St::Out };
            if n.st != want_st {
                msgs.push(format!("object {id} reached in state {:?}", n.st));
                return true;
            }
            let ids: Vec<Id> = edges.iter().map(|e| e.to).collect();
            if ids != n.edges {
                msgs.push(format!("edges of {id}: real {ids:?}, model {:?}", n.edges));
            }
            if let Ok(we) = o.weak_edges.try_borrow() {
                let w: Vec<(Id, u32)> = we.iter().map(|w| (w.to, w.epoch)).collect();
                if w != n.weak_edges {
                    msgs.push(format!(
                        "weak edges of {id}: real {w:?}, model {:?}",
                        n.weak_edges
                    ));
                }
            }
            for e in edges {
                if m.st(e.to) != St::Live {
                    msgs.push(format!("edge {id} -> {} to a {:?} value", e.to, m.st(e.to)));
                } else if e.gc.id != e.to {
                    msgs.push(format!("edge {id} -> {} leads to {}", e.to, e.gc.id));
                }
            }
            !msgs.is_empty()
        });
        msgs
    }

    /// Drops everything, collects until nothing is left, and checks that
    /// every value was dropped exactly once and nothing stays tracked.
    pub fn teardown(&mut self) -> Res {
        let op = Op::Collect;
        let mut ov = None;
        gc::unfreeze();
        log(Ev::Unfrozen);
        gc::enable();
        self.model.enabled = true;
        self.finish(&op, &mut ov, false, Expect::None)?;
        // The scripts may stash and make new garbage: a few rounds.
        for _ in 0..20 {
            let mut panicked = false;
            let mut guarded = |f: &mut dyn FnMut()| {
                panicked |= catch_unwind(AssertUnwindSafe(f)).is_err();
            };
            guarded(&mut || drop(std::mem::take(&mut self.roots)));
            while let Some(w) = self.weakrefs.pop() {
                log(Ev::Cancelled { cb: w.0 });
                let mut w = Some(w);
                guarded(&mut || drop(w.take()));
            }
            guarded(&mut || drop(std::mem::take(&mut self.weaks)));
            guarded(&mut || drop(std::mem::take(&mut self.finalizers)));
            guarded(&mut || drop(std::mem::take(&mut self.stash)));
            guarded(&mut || drop(std::mem::take(&mut self.out)));
            let r: Result<(), ()> = if panicked { Err(()) } else { Ok(()) };
            self.finish(&op, &mut ov, r.is_err(), Expect::None)?;
            let h = self.holders(&None);
            let (dropped, _) = self.model.expect_full_collection(&h, None);
            let empty = self.roots.is_empty() && self.stash.is_empty() && self.out.is_empty();
            if dropped.is_empty() && empty {
                break;
            }
            let r = catch_unwind(AssertUnwindSafe(|| logged_collect(2)));
            self.finish(&op, &mut ov, r.is_err(), Expect::None)?;
        }
        // Whatever the scripts keep making, without them.
        heap::set_armed(false);
        let r = catch_unwind(AssertUnwindSafe(|| {
            drop(std::mem::take(&mut self.stash));
            drop(heap::take_stash());
            logged_collect(2)
        }));
        let _ = heap::take_log();
        heap::set_armed(true);
        if let Some(id) = self.callback.take() {
            gc::callbacks::remove(id);
        }
        let mut msgs = Vec::new();
        if r.is_err() {
            msgs.push("the last collection (scripts disarmed) panicked".into());
        }
        // With the trashcan's queue left behind by a panic (tolerated),
        // what it holds stays.
        let stuck = self.model.held_by_limbo();
        // (The last collection's events were not replayed: what it or a
        // drain of the queue dropped, the drop counts tell.)
        let live_stuck = (0..stuck.len())
            .filter(|&i| {
                stuck[i] && self.model.nodes[i].st == St::Live && heap::drops(i as Id) == 0
            })
            .count();
        if gc::tracked_count() != live_stuck || gc::get_freeze_count() != 0 {
            msgs.push(format!(
                "after teardown: tracked_count {} (model {live_stuck} held by deferred drops), freeze count {}",
                gc::tracked_count(),
                gc::get_freeze_count()
            ));
        }
        for (i, n) in self.model.nodes.iter().enumerate() {
            let d = heap::drops(i as Id);
            let ok = match n.st {
                St::Abandoned => d == 0,
                _ if stuck[i] => d <= 1,
                _ => d == 1,
            };
            if !ok {
                msgs.push(format!(
                    "after teardown: value {i} ({:?}) dropped {d} times",
                    n.st
                ));
            }
        }
        if msgs.is_empty() {
            Ok(())
        } else {
            Err(self.fail(&op, msgs))
        }
    }
}

/// What a `retain`/`dedup_by` closure does besides answering.
fn side_effect(side: Side) {
    match side {
        Side::Nothing => {}
        Side::Collect => {
            logged_collect(2);
        }
        Side::Alloc => drop(new_obj(Vec::new(), None, false)),
        Side::Cycle => {
            let g = new_obj(Vec::new(), None, false);
            let c = g.clone();
            push_edge(g.id, &mut g.edges.borrow_mut(), c);
        }
    }
}
