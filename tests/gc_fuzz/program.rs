//! Random programs over the safe API, as data: a program is a list of
//! [`Op`]s generated from a seed alone (not from the heap's state), so that
//! the same seed always gives the same program and a failing program can
//! be minimized by deleting operations. Operations refer to handles and
//! objects by selectors ([`Sel`]) taken modulo what exists when they run;
//! one that finds nothing to act on does nothing.

use super::common::SplitMix64;
use super::heap::{Act, CbAct, FinAct};

/// Picks the `sel % len`-th of whatever the operation acts on.
pub type Sel = u16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `Gc::new` (or `new_with_finalizer`), kept as a root, and linked
    /// from a reachable object if `link_from`.
    New {
        script: Vec<Act>,
        fin: Option<Vec<FinAct>>,
        label: bool,
        link_from: Option<Sel>,
    },
    /// A linked list of `len` new objects (every `every`-th with
    /// `script`), its head kept as a root: deep drops (the trashcan).
    Chain {
        len: u16,
        every: u16,
        script: Vec<Act>,
    },
    /// `Gc::new_cyclic`, running `inner` inside its closure; the value gets
    /// a weak edge to itself (`self_weak`) and `take` edges to roots.
    Cyclic {
        self_weak: bool,
        keep_weak: bool,
        take: u8,
        inner: Vec<Op>,
    },
    Clone(Sel),
    DropRoot(Sel),
    /// Drops every root whose index is below `percent`% of them.
    DropRoots(u8),
    Downgrade(Sel),
    Upgrade(Sel),
    DropWeak(Sel),
    AddEdge {
        from: Sel,
        to: Sel,
    },
    AddWeakEdge {
        from: Sel,
        to: Sel,
    },
    RemoveEdge {
        from: Sel,
        k: Sel,
    },
    ClearEdges(Sel),
    Collect,
    CollectGen(u8),
    SetThreshold(u16, u16, u16),
    Enable,
    Disable,
    Freeze,
    Unfreeze,
    TryUnwrap(Sel),
    DropOut(Sel),
    Rewrap(Sel),
    /// `Gc::get_mut` on a root, or (`root: None`) on a new object given
    /// edges to the objects `fill` picks (repeats make duplicates) and to
    /// new objects with the `fresh` scripts (owned by it alone); with the
    /// `&mut` alive, `ops` run (their `Vec` operations act on the value's
    /// edge vector through `RefCell::get_mut`) if the get_mut operations
    /// are switched on.
    GetMut {
        root: Option<Sel>,
        fill: Vec<Sel>,
        fresh: Vec<Vec<Act>>,
        ops: Vec<Op>,
    },
    /// Holds a `RefCell` borrow of an object's edges while `ops` run
    /// (their `Vec` operations act on it if `mutable`).
    Borrow {
        node: Sel,
        mutable: bool,
        ops: Vec<Op>,
    },
    WeakRef {
        node: Sel,
        script: Vec<CbAct>,
    },
    Finalize {
        node: Sel,
        script: Vec<CbAct>,
    },
    DropWeakRef(Sel),
    Detach(Sel),
    Call(Sel),
    DropStash(Sel),
    /// Uses a stashed handle (a zombie's deref must panic).
    TouchStash(Sel),
    StashToRoot(Sel),
    /// An operation on the edge vector of the enclosing scope.
    Vec(VecOp),
    /// Panics (only inside scopes: unwinding with borrows held).
    Boom,
    /// `gc::census()`: counts every tracked object (frozen ones too).
    Census,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VecOp {
    PushNew(Vec<Act>),
    PushExisting(Sel),
    Remove(Sel),
    /// `Vec::retain` keeping element `i` if bit `i % 64` of `mask`; the
    /// closure runs `side` for each element.
    Retain {
        mask: u64,
        side: Side,
    },
    /// `Vec::dedup_by` on the target ids, running `side` in the closure.
    Dedup(Side),
    /// Assigns a new vector in place (the old one is dropped in place):
    /// the kept elements by `mask`, plus a new object.
    Replace {
        mask: u64,
        script: Vec<Act>,
    },
    Truncate(Sel),
}

/// What a `retain`/`dedup_by` closure does besides answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Nothing,
    Collect,
    Alloc,
    Cycle,
}

/// Knobs of the generator.
#[derive(Clone, Copy, Debug)]
pub struct GenCfg {
    pub ops: usize,
}

struct Gen {
    rng: SplitMix64,
}

/// Weighted choice among `n` kinds.
fn pick(rng: &mut SplitMix64, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut r = rng.below(total as usize) as u32;
    for (i, &w) in weights.iter().enumerate() {
        if r < w {
            return i;
        }
        r -= w;
    }
    unreachable!()
}

impl Gen {
    fn sel(&mut self) -> Sel {
        self.rng.next_u64() as Sel
    }

    fn act(&mut self) -> Act {
        let r = &mut self.rng;
        match pick(r, &[3, 2, 2, 1, 2, 2, 1, 1, 1, 2]) {
            0 => Act::Alloc(1 + r.below(3) as u8),
            1 => Act::AllocCycle(r.percent(30)),
            2 => Act::Collect,
            3 => Act::CollectGen(r.below(3) as u8),
            4 => Act::StashEdge(r.next_u64() as u8),
            5 => Act::DerefEdges,
            6 => Act::UpgradeWeakEdges,
            7 => Act::TryUnwrapEdge(r.next_u64() as u8),
            8 => Act::RegisterOnEdge(r.next_u64() as u8),
            _ => Act::Panic,
        }
    }

    /// Most objects do nothing special when dropped.
    fn script(&mut self) -> Vec<Act> {
        if self.rng.percent(60) {
            return Vec::new();
        }
        let n = 1 + self.rng.below(3);
        (0..n).map(|_| self.act()).collect()
    }

    fn fin_script(&mut self) -> Vec<FinAct> {
        let n = 1 + self.rng.below(3);
        (0..n)
            .map(|_| {
                let r = &mut self.rng;
                match pick(r, &[3, 2, 1, 1, 1, 1, 2, 1]) {
                    0 => FinAct::Resurrect,
                    1 => FinAct::ReadEdges,
                    2 => FinAct::Alloc(1 + r.below(2) as u8),
                    3 => FinAct::Collect,
                    4 => FinAct::RegisterOnEdge(r.next_u64() as u8),
                    5 => FinAct::Panic,
                    6 => FinAct::StashEdge(r.next_u64() as u8),
                    _ => FinAct::ClearEdges,
                }
            })
            .collect()
    }

    fn cb_script(&mut self) -> Vec<CbAct> {
        let n = self.rng.below(3);
        (0..n)
            .map(|_| {
                let r = &mut self.rng;
                match pick(r, &[2, 1, 2, 1]) {
                    0 => CbAct::Alloc(1 + r.below(2) as u8),
                    1 => CbAct::AllocCycle,
                    2 => CbAct::Collect,
                    _ => CbAct::Panic,
                }
            })
            .collect()
    }

    fn side(&mut self) -> Side {
        match pick(&mut self.rng, &[4, 2, 1, 1]) {
            0 => Side::Nothing,
            1 => Side::Collect,
            2 => Side::Alloc,
            _ => Side::Cycle,
        }
    }

    fn vec_op(&mut self) -> VecOp {
        match pick(&mut self.rng, &[3, 2, 2, 2, 2, 2, 1]) {
            0 => VecOp::PushNew(self.script()),
            1 => VecOp::PushExisting(self.sel()),
            2 => VecOp::Remove(self.sel()),
            3 => VecOp::Retain {
                mask: self.rng.next_u64(),
                side: self.side(),
            },
            4 => VecOp::Dedup(self.side()),
            5 => VecOp::Replace {
                mask: self.rng.next_u64(),
                script: self.script(),
            },
            _ => VecOp::Truncate(self.sel()),
        }
    }

    fn inner(&mut self, depth: u32, vec_ops: bool) -> Vec<Op> {
        let n = 1 + self.rng.below(6);
        (0..n)
            .map(|_| {
                if vec_ops && self.rng.percent(45) {
                    Op::Vec(self.vec_op())
                } else if self.rng.percent(6) {
                    Op::Boom
                } else {
                    self.op(depth + 1)
                }
            })
            .collect()
    }

    fn threshold(&mut self) -> Op {
        const T: [(u16, u16, u16); 8] = [
            (700, 10, 10),
            (1, 1, 1),
            (2, 3, 2),
            (5, 2, 2),
            (10, 5, 5),
            (0, 10, 10),
            (3, 1, 1),
            (25, 4, 3),
        ];
        let (a, b, c) = T[self.rng.below(T.len())];
        Op::SetThreshold(a, b, c)
    }

    fn op(&mut self, depth: u32) -> Op {
        // Scopes nest at most twice.
        let scope = if depth < 2 { 2 } else { 0 };
        let w = [
            16,        // New
            1,         // Chain
            scope / 2, // Cyclic
            6,         // Clone
            12,        // DropRoot
            1,         // DropRoots
            4,         // Downgrade
            3,         // Upgrade
            3,         // DropWeak
            14,        // AddEdge
            3,         // AddWeakEdge
            7,         // RemoveEdge
            2,         // ClearEdges
            4,         // Collect
            3,         // CollectGen
            1,         // SetThreshold
            1,         // Enable
            1,         // Disable
            1,         // Freeze
            1,         // Unfreeze
            2,         // TryUnwrap
            1,         // DropOut
            1,         // Rewrap
            scope,     // GetMut
            scope,     // Borrow
            2,         // WeakRef
            2,         // Finalize
            1,         // DropWeakRef
            1,         // Detach
            1,         // Call
            2,         // DropStash
            3,         // TouchStash
            1,         // StashToRoot
            1,         // Census
        ];
        match pick(&mut self.rng, &w) {
            0 => {
                let script = self.script();
                let fin = self.rng.percent(12).then(|| self.fin_script());
                Op::New {
                    script,
                    fin,
                    label: self.rng.percent(20),
                    link_from: self.rng.percent(50).then(|| self.sel()),
                }
            }
            1 => Op::Chain {
                len: 40 + self.rng.below(120) as u16,
                every: 1 + self.rng.below(40) as u16,
                script: self.script(),
            },
            2 => Op::Cyclic {
                self_weak: self.rng.percent(70),
                keep_weak: self.rng.percent(40),
                take: self.rng.below(3) as u8,
                inner: if self.rng.percent(60) {
                    self.inner(depth, false)
                } else {
                    Vec::new()
                },
            },
            3 => Op::Clone(self.sel()),
            4 => Op::DropRoot(self.sel()),
            5 => Op::DropRoots(10 + self.rng.below(90) as u8),
            6 => Op::Downgrade(self.sel()),
            7 => Op::Upgrade(self.sel()),
            8 => Op::DropWeak(self.sel()),
            9 => Op::AddEdge {
                from: self.sel(),
                to: self.sel(),
            },
            10 => Op::AddWeakEdge {
                from: self.sel(),
                to: self.sel(),
            },
            11 => Op::RemoveEdge {
                from: self.sel(),
                k: self.sel(),
            },
            12 => Op::ClearEdges(self.sel()),
            13 => Op::Collect,
            14 => Op::CollectGen(self.rng.below(3) as u8),
            15 => self.threshold(),
            16 => Op::Enable,
            17 => Op::Disable,
            18 => Op::Freeze,
            19 => Op::Unfreeze,
            20 => Op::TryUnwrap(self.sel()),
            21 => Op::DropOut(self.sel()),
            22 => Op::Rewrap(self.sel()),
            23 => {
                let fresh_target = self.rng.percent(60);
                let (mut fill, mut fresh) = (Vec::new(), Vec::new());
                if fresh_target {
                    for _ in 0..self.rng.below(5) {
                        let s = self.sel();
                        fill.push(s);
                        if self.rng.percent(40) {
                            fill.push(s);
                        }
                    }
                    fresh = (0..self.rng.below(4)).map(|_| self.script()).collect();
                }
                Op::GetMut {
                    root: (!fresh_target).then(|| self.sel()),
                    fill,
                    fresh,
                    ops: self.inner(depth, true),
                }
            }
            24 => {
                let mutable = self.rng.percent(60);
                Op::Borrow {
                    node: self.sel(),
                    mutable,
                    ops: self.inner(depth, mutable),
                }
            }
            25 => Op::WeakRef {
                node: self.sel(),
                script: self.cb_script(),
            },
            26 => Op::Finalize {
                node: self.sel(),
                script: self.cb_script(),
            },
            27 => Op::DropWeakRef(self.sel()),
            28 => Op::Detach(self.sel()),
            29 => Op::Call(self.sel()),
            30 => Op::DropStash(self.sel()),
            31 => Op::TouchStash(self.sel()),
            32 => Op::StashToRoot(self.sel()),
            _ => Op::Census,
        }
    }
}

/// The program of `seed`.
pub fn program(seed: u64, cfg: GenCfg) -> Vec<Op> {
    let mut g = Gen {
        rng: SplitMix64::new(seed ^ 0x5eed_f022_0000_0000),
    };
    (0..cfg.ops).map(|_| g.op(0)).collect()
}

/// The program without finalizers and weak callbacks (every object then
/// dies through `Gc::drop_slow`'s main path, never `finalize::last_drop`):
/// to run under Miri past `last_drop_frees_no_allocation_a_live_reference_points_into`.
pub fn without_callbacks(ops: Vec<Op>) -> Vec<Op> {
    let acts = |s: Vec<Act>| -> Vec<Act> {
        s.into_iter()
            .filter(|a| !matches!(a, Act::RegisterOnEdge(_)))
            .collect()
    };
    ops.into_iter()
        .filter(|op| !matches!(op, Op::WeakRef { .. } | Op::Finalize { .. }))
        .map(|op| match op {
            Op::New {
                script,
                fin: _,
                label,
                link_from,
            } => Op::New {
                script: acts(script),
                fin: None,
                label,
                link_from,
            },
            Op::Chain { len, every, script } => Op::Chain {
                len,
                every,
                script: acts(script),
            },
            Op::Cyclic {
                self_weak,
                keep_weak,
                take,
                inner,
            } => Op::Cyclic {
                self_weak,
                keep_weak,
                take,
                inner: without_callbacks(inner),
            },
            Op::GetMut {
                root,
                fill,
                fresh,
                ops,
            } => Op::GetMut {
                root,
                fill,
                fresh: fresh.into_iter().map(acts).collect(),
                ops: without_callbacks(ops),
            },
            Op::Borrow { node, mutable, ops } => Op::Borrow {
                node,
                mutable,
                ops: without_callbacks(ops),
            },
            Op::Vec(VecOp::PushNew(s)) => Op::Vec(VecOp::PushNew(acts(s))),
            Op::Vec(VecOp::Replace { mask, script }) => Op::Vec(VecOp::Replace {
                mask,
                script: acts(script),
            }),
            op => op,
        })
        .collect()
}

/// Counts the operations of a program, nested ones included.
pub fn size(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| {
            1 + match op {
                Op::Cyclic { inner, .. } => size(inner),
                Op::GetMut { ops, .. } | Op::Borrow { ops, .. } => size(ops),
                _ => 0,
            }
        })
        .sum()
}

/// The program without the operation at pre-order position `at` (and
/// what it contains).
pub fn without(ops: &[Op], at: usize) -> Vec<Op> {
    fn go(ops: &[Op], at: &mut usize, out: &mut Vec<Op>) {
        for op in ops {
            if *at == 0 {
                *at = usize::MAX;
                continue;
            }
            if *at != usize::MAX {
                *at -= 1;
            }
            let mut op = op.clone();
            match &mut op {
                Op::Cyclic { inner: v, .. }
                | Op::GetMut { ops: v, .. }
                | Op::Borrow { ops: v, .. } => {
                    let mut nv = Vec::new();
                    go(v, at, &mut nv);
                    *v = nv;
                }
                _ => {}
            }
            out.push(op);
        }
    }
    let mut out = Vec::new();
    let mut at = at;
    go(ops, &mut at, &mut out);
    out
}

/// The program with the top-level operations `from..to` removed.
pub fn without_range(ops: &[Op], from: usize, to: usize) -> Vec<Op> {
    ops[..from].iter().chain(&ops[to..]).cloned().collect()
}
