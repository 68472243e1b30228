// Compiles: `Cell<Option<Gc<Self>>>` is traced through the cell (no
// internal type such as `Gc<()>` appears in any error), and a type that
// contains itself through std containers derives without a cycle.
use pymem::{Gc, Trace};
use std::cell::Cell;

#[derive(Trace)]
pub struct Linked {
    next: Cell<Option<Gc<Linked>>>,
    prev: Cell<Option<Gc<Self>>>,
    children: Vec<Linked>,
}

pub fn make() -> Gc<Linked> {
    Gc::new(Linked { next: Cell::new(None), prev: Cell::new(None), children: Vec::new() })
}
