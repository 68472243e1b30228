//! The reference model: the object graph as the program built it, replayed
//! from the event log ([`Ev`]), and the checks of what the contract in
//! DESIGN.md promises about it.
//!
//! The model is exact where the contract is:
//! * a value is dropped at most once, never while it is reachable from
//!   the program's handles, and, outside a collection, never while any
//!   strong handle to it exists (so cyclic garbage goes only in a
//!   collection);
//! * acyclic garbage is dropped at once (refcounting);
//! * a full `gc::collect()` drops exactly the unreachable objects that are
//!   not referenced from the permanent generation, less those a PEP 442
//!   finalizer resurrects (computed here), and returns their number;
//! * finalizers run once, before the value is dropped; weak callbacks run
//!   once, after it is dropped (or moved out), unless cancelled;
//! * `get_count()`, `get_stats()`, `tracked_count()`, `get_freeze_count()`
//!   follow CPython's rules, with the collections' exact positions in the
//!   event stream coming from `gc::callbacks`; automatic collections happen
//!   exactly when `Gc::new` finds count 0 above threshold 0.
//!
//! It says "unknown" only where it must: after a panic escaped a step, an
//! unreachable object that refcounting should have freed may still be
//! queued in the trashcan (the deferred drops of a deep chain): it becomes
//! `Limbo` (may be dropped by any later step, or never, but only once, and
//! it holds its edges meanwhile); `get_count()[0]` is an interval when a
//! drop may have been deferred or may have been the collector's.

use super::heap::{CbId, Ev, FinAct, Id};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    /// Constructed, not yet in a `Gc` (or its `Gc::new` unwound).
    Fresh,
    /// Inside `Gc::new_cyclic`'s closure.
    Constructing,
    /// In a `Gc`, value alive, tracked.
    Live,
    /// Moved out by `try_unwrap`, held by the program.
    Out,
    /// Strong count 0 but value not dropped (deferred after a panic).
    Limbo,
    Dropped,
    /// `new_cyclic`'s closure panicked: never had a value.
    Abandoned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fin {
    None,
    Pending,
    Done,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub st: St,
    pub edges: Vec<Id>,
    pub weak_edges: Vec<(Id, u32)>,
    /// Allocation number of the value (bumped when re-wrapped).
    pub epoch: u32,
    pub frozen: bool,
    pub fin: Fin,
    pub fin_script: Vec<FinAct>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            st: St::Fresh,
            edges: Vec::new(),
            weak_edges: Vec::new(),
            epoch: 0,
            frozen: false,
            fin: Fin::None,
            fin_script: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbSt {
    Pending,
    Ran,
    Cancelled,
    /// Registration returned a handle that is not alive.
    Inert,
    /// Its referent died in a step a panic escaped: may have been lost.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Cb {
    pub target: Id,
    pub epoch: u32,
    pub st: CbSt,
}

/// Who holds strong handles (or values) outside the graph, as the
/// executor's containers say after the operation.
#[derive(Default, Debug)]
pub struct Holders {
    /// One entry per strong handle: roots, handles held by scopes, stash.
    pub strong: Vec<Id>,
    /// Stash entries (a subset of `strong`), with "may be a zombie".
    pub stash: Vec<(Id, bool)>,
    /// Values held out of their `Gc` (their edges are held).
    pub out: Vec<Id>,
    /// One entry per `Weak` held by the program (plain or with callback).
    pub weak: Vec<(Id, u32)>,
}

/// What the executor tells the model about the step being settled.
#[derive(Default, Debug)]
pub struct StepInfo {
    /// A panic escaped the step.
    pub panicked: bool,
}

#[derive(Clone, Copy, Debug)]
struct Call {
    in_collection: bool,
    started: bool,
    collected: usize,
}

/// Known bugs the model tolerates (each narrowly), so that a long run
/// looks for the next one; every flag names its regression test in
/// `tests/gc_regressions.rs`. All fixed, so all off unless
/// `PYMEM_FUZZ_TOLERATE` names them (to run against an older commit).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tolerate {
    /// `weak_callbacks_wait_for_deferred_drop`: a weak callback runs
    /// before its referent's value is dropped when the trashcan deferred
    /// that drop (nested drops past its limit).
    pub early_callback_in_deep_drop: bool,
    /// `deferred_drops_are_not_left_queued_after_a_panic` (issue 12 item
    /// 3): after a panic leaves a deep drop, the trashcan's deferred
    /// objects stay queued (the model's `Limbo`) until an unrelated later
    /// drop, or for ever.
    pub queued_after_panic: bool,
    /// `weak_callback_runs_when_the_referent_drop_panics`: the weak
    /// callbacks of an object whose `Drop` panics on the refcount path are
    /// dropped without running.
    pub callback_lost_on_panic: bool,
}

/// The model.
#[derive(Default)]
pub struct Model {
    pub tolerate: Tolerate,
    pub nodes: Vec<Node>,
    pub cbs: Vec<Cb>,
    pub enabled: bool,
    pub threshold: [usize; 3],
    /// count[0] as an interval, count[1], count[2].
    pub count0: (usize, usize),
    pub count: [usize; 3],
    pub stats_collections: [usize; 3],
    pub stats_collected: [usize; 3],
    pub collecting: u32,
    /// Pending `Gc::new`s: (id, must collect first: Some(bool) or unknown,
    /// collected).
    news: Vec<(Id, Option<bool>, bool)>,
    calls: Vec<Call>,
    /// `try_unwrap`s in progress: (id, collections, events) when it began.
    unwrapping: Vec<(Id, usize, usize)>,
    /// Events applied so far.
    events: usize,
    /// The callback `Finalizer::call` is running.
    pub early_cb: Option<CbId>,
    open_drops: u32,
    /// Deepest nesting of drops in the current step.
    pub max_depth: u32,
    /// Collections started in the current step.
    pub step_collections: usize,
    /// A drop may have been deferred or been the collector's: count[0]
    /// is known only as an interval.
    pub count_uncertain: bool,
    pub violations: Vec<String>,
}

/// Nesting of drops past which the trashcan may have deferred some (its
/// limit is an implementation detail; this is well below it).
const DEEP: u32 = 16;

impl Model {
    pub fn new() -> Model {
        Model {
            enabled: true,
            threshold: [700, 10, 10],
            ..Model::default()
        }
    }

    fn fail(&mut self, msg: String) {
        self.violations.push(msg);
    }

    fn node(&mut self, id: Id) -> &mut Node {
        let i = id as usize;
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, Node::default);
        }
        &mut self.nodes[i]
    }

    pub fn st(&self, id: Id) -> St {
        self.nodes.get(id as usize).map_or(St::Fresh, |n| n.st)
    }

    /// Values that exist and hold their edges (not dropped, not
    /// abandoned).
    fn holding(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| {
            matches!(
                n.st,
                St::Live | St::Out | St::Limbo | St::Constructing | St::Fresh
            )
        })
    }

    /// Strong edges to `id` from the values that exist.
    fn edges_to(&self, id: Id) -> usize {
        self.holding()
            .map(|n| n.edges.iter().filter(|&&t| t == id).count())
            .sum()
    }

    /// Strong handles to `id` from the graph (values not dropped) and
    /// from the holders.
    pub fn strong_count(&self, id: Id, h: &Holders) -> usize {
        self.edges_to(id) + h.strong.iter().filter(|&&t| t == id).count()
    }

    /// `Weak` handles to the current allocation of `id`.
    pub fn weak_count(&self, id: Id, h: &Holders) -> usize {
        let ep = self.nodes[id as usize].epoch;
        let from_graph: usize = self
            .holding()
            .map(|n| n.weak_edges.iter().filter(|&&w| w == (id, ep)).count())
            .sum();
        from_graph + h.weak.iter().filter(|&&w| w == (id, ep)).count()
    }

    /// Whether a `Weak` to allocation `epoch` of `id` must upgrade.
    pub fn upgrades(&self, id: Id, epoch: u32) -> bool {
        let n = &self.nodes[id as usize];
        n.st == St::Live && n.epoch == epoch
    }

    fn dec_count0(&mut self, certain: bool) {
        let (lo, hi) = self.count0;
        self.count0 = (
            lo.saturating_sub(1),
            if certain { hi.saturating_sub(1) } else { hi },
        );
        if !certain {
            self.count_uncertain = true;
        }
    }

    /// Applies the events of one step, in order.
    pub fn apply(&mut self, evs: &[Ev], h: &Holders) {
        for ev in evs {
            self.apply_one(ev, h);
        }
    }

    fn collections(&self) -> usize {
        self.stats_collections.iter().sum()
    }

    fn apply_one(&mut self, ev: &Ev, h: &Holders) {
        self.events += 1;
        match ev {
            Ev::Created { id, script: _, fin } => {
                let n = self.node(*id);
                if n.st == St::Fresh || n.st == St::Constructing {
                    // (`new_cyclic`'s value now exists.)
                    n.st = St::Fresh;
                    n.fin_script = fin.clone();
                } else {
                    let st = n.st;
                    self.fail(format!("value {id} created twice (state {st:?})"));
                }
            }
            Ev::CyclicBegin { id } => self.node(*id).st = St::Constructing,
            Ev::NewBegin { id } => {
                let thr0 = self.threshold[0];
                // A `try_unwrap` in progress (running weak callbacks) may
                // have untracked its object already.
                let mut lo = self.count0.0.saturating_sub(self.unwrapping.len());
                if self.max_depth >= DEEP {
                    // The trashcan may have deferred drops: those objects
                    // left the count already, their `Dropped` comes later.
                    lo = 0;
                }
                let expect = if self.collecting > 0 || !self.enabled || thr0 == 0 {
                    Some(false)
                } else if lo > thr0 {
                    Some(true)
                } else if self.count0.1 <= thr0 {
                    Some(false)
                } else {
                    None
                };
                self.news.push((*id, expect, false));
            }
            Ev::Wrapped { id, fin } => {
                match self.news.pop() {
                    Some((nid, expect, collected)) if nid == *id => {
                        if let Some(e) = expect {
                            if e != collected {
                                let (c, t) = (self.count0, self.threshold[0]);
                                self.fail(format!(
                                    "Gc::new of {id}: automatic collection {} (count[0] in {c:?}, \
                                     threshold 0 = {t}, enabled {})",
                                    if collected {
                                        "ran but was not due"
                                    } else {
                                        "was due but did not run"
                                    },
                                    self.enabled
                                ));
                            }
                        }
                    }
                    other => self.fail(format!(
                        "harness: Wrapped {id} without NewBegin ({other:?})"
                    )),
                }
                let n = self.node(*id);
                if n.st == St::Out {
                    n.epoch += 1;
                }
                n.st = St::Live;
                n.frozen = false;
                n.fin = if *fin { Fin::Pending } else { Fin::None };
                self.count0 = (self.count0.0 + 1, self.count0.1 + 1);
            }
            Ev::GcStart { gen } => self.gc_start(*gen as usize),
            Ev::GcStop { gen, collected } => {
                self.collecting = self.collecting.saturating_sub(1);
                self.stats_collected[*gen as usize] += collected;
                if let Some(c) = self.calls.last_mut() {
                    if c.started {
                        c.collected = *collected;
                    }
                }
            }
            Ev::CollectCall { .. } => {
                let in_collection = self.collecting > 0;
                self.calls.push(Call {
                    in_collection,
                    started: false,
                    collected: 0,
                });
            }
            Ev::CollectReturn { found } => match self.calls.pop() {
                Some(c) if c.in_collection => {
                    if c.started || *found != 0 {
                        self.fail(format!(
                            "gc::collect called during a collection returned {found} (started: {})",
                            c.started
                        ));
                    }
                }
                Some(c) => {
                    if !c.started {
                        self.fail("gc::collect outside a collection started none".into());
                    } else if c.collected != *found {
                        self.fail(format!(
                            "gc::collect returned {found}, its stop callback said {}",
                            c.collected
                        ));
                    }
                }
                None => self.fail("harness: CollectReturn without CollectCall".into()),
            },
            Ev::Dropped { id } => self.dropped(*id, h),
            Ev::DropEnd { .. } => self.open_drops = self.open_drops.saturating_sub(1),
            Ev::Stashed { .. } => {}
            Ev::FinalizerRan { id } => {
                let n = self.node(*id);
                let (st, fin) = (n.st, n.fin);
                if fin != Fin::Pending {
                    self.fail(format!(
                        "finalizer of {id} ran but none was pending ({fin:?})"
                    ));
                }
                if st != St::Live {
                    self.fail(format!("finalizer of {id} ran on a value in state {st:?}"));
                }
                self.node(*id).fin = Fin::Done;
            }
            Ev::UnwrapBegin { id } => {
                let at = (*id, self.collections(), self.events);
                self.unwrapping.push(at);
            }
            Ev::UnwrapEnd { id, ok } => {
                let (_, collections, events) = self.unwrapping.pop().unwrap_or_default();
                if *ok {
                    let st = self.st(*id);
                    let others = self.edges_to(*id);
                    if st != St::Live || others != 0 {
                        self.fail(format!(
                            "try_unwrap of {id} succeeded in state {st:?} with {others} edges to it"
                        ));
                    }
                    let n = self.node(*id);
                    n.st = St::Out;
                    n.fin = Fin::None;
                    n.frozen = false;
                    // `try_unwrap` untracks before the weak callbacks run:
                    // a collection they started reset the count after it.
                    if self.collections() == collections {
                        self.dec_count0(self.events == events + 1);
                    }
                }
            }
            Ev::CallbackRan { cb, dead_now } => {
                let Some(c) = self.cbs.get_mut(*cb as usize) else {
                    return self.fail(format!("unknown callback {cb} ran"));
                };
                match c.st {
                    CbSt::Pending | CbSt::Unknown => c.st = CbSt::Ran,
                    st => {
                        let t = c.target;
                        self.fail(format!("weak callback {cb} (on {t}) ran in state {st:?}"))
                    }
                }
                let deep = self.open_drops >= DEEP && self.tolerate.early_callback_in_deep_drop;
                if !dead_now && self.early_cb != Some(*cb) && !deep {
                    let t = self.cbs[*cb as usize].target;
                    self.fail(format!(
                        "weak callback {cb} ran while its referent {t} was alive (value not dropped)"
                    ));
                }
            }
            Ev::Registered { cb, target, alive } => {
                let i = *cb as usize;
                if self.cbs.len() != i {
                    self.fail(format!("harness: callback ids out of order ({cb})"));
                }
                let n = self.node(*target);
                let (st, epoch) = (n.st, n.epoch);
                if *alive && st != St::Live {
                    self.fail(format!(
                        "callback {cb} registered on {target} in state {st:?}"
                    ));
                }
                self.cbs.push(Cb {
                    target: *target,
                    epoch,
                    st: if *alive { CbSt::Pending } else { CbSt::Inert },
                });
            }
            Ev::Cancelled { cb } => {
                if let Some(c) = self.cbs.get_mut(*cb as usize) {
                    if c.st == CbSt::Pending || c.st == CbSt::Unknown {
                        c.st = CbSt::Cancelled;
                    }
                }
            }
            Ev::CallBegin { cb } => self.early_cb = Some(*cb),
            Ev::EdgeAdded { from, to } => self.node(*from).edges.push(*to),
            Ev::WeakEdgeAdded { from, to, epoch } => {
                self.node(*from).weak_edges.push((*to, *epoch))
            }
            Ev::EdgeRemoved { from, pos } => {
                let n = self.node(*from);
                if *pos < n.edges.len() {
                    n.edges.remove(*pos);
                } else {
                    self.fail(format!("harness: EdgeRemoved {from}[{pos}] out of range"));
                }
            }
            Ev::EdgesSet { from, to } => self.node(*from).edges = to.clone(),
            Ev::Frozen => {
                for n in &mut self.nodes {
                    if n.st == St::Live {
                        n.frozen = true;
                    }
                }
                self.count0 = (0, 0);
            }
            Ev::Unfrozen => {
                for n in &mut self.nodes {
                    n.frozen = false;
                }
            }
            Ev::Violation(s) => self.fail(s.clone()),
            Ev::Note(_) => {}
        }
    }

    fn gc_start(&mut self, gen: usize) {
        if self.collecting > 0 {
            self.fail(format!(
                "collection of generation {gen} started inside another"
            ));
        }
        let explicit = match self.calls.last_mut() {
            Some(c) if !c.started && !c.in_collection => {
                c.started = true;
                true
            }
            _ => false,
        };
        if !explicit {
            match self.news.last_mut() {
                Some(n) if !n.2 => n.2 = true,
                _ => self.fail(format!(
                    "automatic collection of generation {gen} outside Gc::new"
                )),
            }
            let c = [self.count0.1, self.count[1], self.count[2]];
            let t = self.threshold;
            let ok = match gen {
                0 => c[0] > t[0] && c[1] <= t[1],
                g => c[g] > t[g],
            };
            if !ok {
                self.fail(format!(
                    "automatic collection chose generation {gen} with counts {:?}/{c:?}, thresholds {t:?}",
                    self.count0
                ));
            }
        }
        self.collecting += 1;
        self.step_collections += 1;
        self.stats_collections[gen] += 1;
        if gen < 2 {
            self.count[gen + 1] += 1;
        }
        for g in 1..=gen {
            self.count[g] = 0;
        }
        self.count0 = (0, 0);
    }

    fn dropped(&mut self, id: Id, h: &Holders) {
        if self.st(id) == St::Live && self.unwrapping.iter().any(|u| u.0 == id) {
            // `try_unwrap` moved the value out, then a weak callback's
            // panic unwound through it: the value goes with the unwinding.
            let n = self.node(id);
            n.st = St::Out;
            n.fin = Fin::None;
            self.dec_count0(false);
        }
        self.open_drops += 1;
        self.max_depth = self.max_depth.max(self.open_drops);
        if self.open_drops >= DEEP {
            self.count_uncertain = true;
        }
        let st = self.st(id);
        match st {
            St::Live => {
                let held = self.strong_count(id, h);
                if held > 0 && self.collecting == 0 {
                    self.fail(format!(
                        "value {id} dropped outside any collection while {held} strong handles to it existed"
                    ));
                }
                if self.node(id).fin == Fin::Pending {
                    self.fail(format!("value {id} dropped before its finalizer ran"));
                }
                if held == 0 {
                    // Refcounting (outside a collection, exact) or the
                    // collector reclaiming garbage whose other members are
                    // already gone (no decrement): unknown.
                    self.dec_count0(self.collecting == 0);
                }
            }
            St::Fresh | St::Out | St::Limbo => {}
            St::Dropped => self.fail(format!("value {id} dropped twice")),
            St::Constructing | St::Abandoned => {
                self.fail(format!("value {id} dropped in state {st:?}"))
            }
        }
        let n = self.node(id);
        n.st = St::Dropped;
        n.edges.clear();
        n.weak_edges.clear();
        n.frozen = false;
    }

    /// Nodes reachable from the holders (and the scope's override node).
    pub fn reachable(&self, h: &Holders, extra: Option<Id>) -> Vec<bool> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<Id> = Vec::new();
        for &id in &h.strong {
            if self.st(id) != St::Dropped {
                stack.push(id);
            }
        }
        stack.extend(extra);
        for &id in &h.out {
            stack.extend(self.nodes[id as usize].edges.iter().copied());
        }
        while let Some(id) = stack.pop() {
            let i = id as usize;
            if i >= seen.len() || seen[i] {
                continue;
            }
            seen[i] = true;
            stack.extend(self.nodes[i].edges.iter().copied());
        }
        seen
    }

    /// The checks at the end of a step (no drop in progress).
    pub fn settle(&mut self, h: &Holders, extra: Option<Id>, info: &StepInfo) {
        if info.panicked {
            // Whatever the unwinding cut short.
            for n in &mut self.nodes {
                if n.st == St::Constructing {
                    n.st = St::Abandoned;
                }
            }
            self.news.clear();
            self.calls.clear();
            self.unwrapping.clear();
            self.collecting = 0;
            self.open_drops = 0;
        }
        self.early_cb = None;
        if self.open_drops != 0 || !self.news.is_empty() || !self.calls.is_empty() {
            let s = (self.open_drops, self.news.len(), self.calls.len());
            self.fail(format!(
                "harness: step ended inside (drop, new, collect) {s:?}"
            ));
            self.open_drops = 0;
        }
        let reach = self.reachable(h, extra);
        for (i, n) in self.nodes.iter().enumerate() {
            if reach[i] && !matches!(n.st, St::Live) {
                let st = n.st;
                self.violations.push(format!(
                    "reachable object {i} is in state {st:?} (value dropped?)"
                ));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if matches!(n.st, St::Live | St::Limbo | St::Out) {
                for &t in &n.edges {
                    if self.nodes[t as usize].st == St::Dropped {
                        self.violations.push(format!(
                            "object {i} ({:?}) has an edge to {t} whose value was dropped",
                            n.st
                        ));
                    }
                }
            }
        }
        for &(id, zombie_ok) in &h.stash {
            if self.st(id) == St::Dropped && !zombie_ok {
                self.violations.push(format!(
                    "stashed handle to {id} (a root when stashed) now points to a dropped value"
                ));
            }
        }
        // Refcounting: an unreachable object that no other unreachable
        // object (or deferred one) refers to has strong count 0.
        let n = self.nodes.len();
        let mut indeg = vec![0usize; n];
        for (i, node) in self.nodes.iter().enumerate() {
            let holder = node.st == St::Limbo || (node.st == St::Live && !reach[i]);
            if holder {
                for &t in &node.edges {
                    indeg[t as usize] += 1;
                }
            }
        }
        for i in 0..n {
            if self.nodes[i].st == St::Live && !reach[i] && indeg[i] == 0 {
                if info.panicked && !self.tolerate.queued_after_panic {
                    self.violations.push(format!(
                        "unreachable object {i} left undropped (queued by the trashcan?) after a panic"
                    ));
                } else if info.panicked {
                    self.nodes[i].st = St::Limbo;
                    self.nodes[i].frozen = false;
                    self.count_uncertain = true;
                } else {
                    self.violations.push(format!(
                        "unreachable object {i} has no strong handle left but was not dropped"
                    ));
                }
            }
        }
        // Weak callbacks of dead referents have run.
        for (cb, c) in self.cbs.iter_mut().enumerate() {
            let t = &self.nodes[c.target as usize];
            let dead = matches!(t.st, St::Dropped | St::Out) || t.epoch != c.epoch;
            if dead && c.st == CbSt::Pending {
                if info.panicked && self.tolerate.callback_lost_on_panic {
                    c.st = CbSt::Unknown;
                } else {
                    self.violations.push(format!(
                        "weak callback {cb} did not run although its referent {} is dead ({:?})",
                        c.target, t.st
                    ));
                }
            }
        }
    }

    /// Values that may stay undropped for ever: deferred ones (`Limbo`)
    /// and what only they reach.
    pub fn held_by_limbo(&self) -> Vec<bool> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].st == St::Limbo)
            .collect();
        while let Some(i) = stack.pop() {
            if seen[i] || !matches!(self.nodes[i].st, St::Limbo | St::Live) {
                continue;
            }
            seen[i] = true;
            stack.extend(self.nodes[i].edges.iter().map(|&t| t as usize));
        }
        seen
    }

    /// `(tracked_count, get_freeze_count)` the collector must report.
    pub fn tracked(&self) -> (usize, usize) {
        let live = self.nodes.iter().filter(|n| n.st == St::Live);
        let (mut t, mut f) = (0, 0);
        for n in live {
            if n.frozen {
                f += 1;
            } else {
                t += 1;
            }
        }
        (t, f)
    }

    /// What a full collection must do now: the values it drops (its
    /// result is their number), and the unreachable values (others among
    /// them may go too, by refcounting, once those are dropped).
    pub fn expect_full_collection(&self, h: &Holders, extra: Option<Id>) -> (Vec<Id>, Vec<bool>) {
        let reach = self.reachable(h, extra);
        let n = self.nodes.len();
        let garbage = |i: usize| self.nodes[i].st == St::Live && !reach[i];
        let in_range = |i: usize| garbage(i) && !self.nodes[i].frozen;
        // Referenced from outside the range: by frozen garbage or by a
        // deferred (limbo) value.
        let mut kept = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.st == St::Limbo || (garbage(i) && node.frozen) {
                stack.extend(node.edges.iter().map(|&t| t as usize));
            }
        }
        while let Some(i) = stack.pop() {
            if !in_range(i) || kept[i] {
                continue;
            }
            kept[i] = true;
            stack.extend(self.nodes[i].edges.iter().map(|&t| t as usize));
        }
        let collected: Vec<usize> = (0..n).filter(|&i| in_range(i) && !kept[i]).collect();
        // PEP 442: pending finalizers run (their scripts up to a panic):
        // what they stash is referenced from outside, and the edges they
        // drop are gone; everything reachable from the former is kept.
        let mut back = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut cleared = vec![false; n];
        for &i in &collected {
            let node = &self.nodes[i];
            if node.fin != Fin::Pending {
                continue;
            }
            let mut edges: &[Id] = &node.edges;
            for act in node.fin_script.iter().take_while(|a| **a != FinAct::Panic) {
                match *act {
                    FinAct::Resurrect => stack.push(i),
                    FinAct::StashEdge(k) if !edges.is_empty() => {
                        stack.push(edges[k as usize % edges.len()] as usize)
                    }
                    FinAct::ClearEdges => {
                        edges = &[];
                        cleared[i] = true;
                    }
                    _ => {}
                }
            }
        }
        let in_collected = |i: usize| in_range(i) && !kept[i];
        while let Some(i) = stack.pop() {
            if !in_collected(i) || back[i] {
                continue;
            }
            back[i] = true;
            if !cleared[i] {
                stack.extend(self.nodes[i].edges.iter().map(|&t| t as usize));
            }
        }
        let dropped: Vec<Id> = collected
            .iter()
            .copied()
            .filter(|&i| !back[i])
            .map(|i| i as Id)
            .collect();
        let garbage = (0..n).map(garbage).collect();
        (dropped, garbage)
    }
}
