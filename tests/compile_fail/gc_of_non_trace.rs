// `Gc::new` of a type without `Trace`.
use pymem::Gc;

pub struct Plain {
    pub x: u32,
}

pub fn make() {
    let _ = Gc::new(Plain { x: 1 });
}
