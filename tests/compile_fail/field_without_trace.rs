// A field whose type has no `Trace` impl: the error names the type and
// points to `#[derive(Trace)]` and `#[trace(skip)]`.
use pymem::{Gc, Trace};

struct Opaque(u32);

#[derive(Trace)]
pub struct Holder {
    id: u32,
    data: Opaque,
}

pub fn make() -> Gc<Holder> {
    Gc::new(Holder { id: 1, data: Opaque(2) })
}
