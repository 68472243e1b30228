// A `trace` cannot move the `Tracer` it is lent out of its `&mut`: the
// collector traces through a bitwise copy of its own (`Tracer::trace_in`),
// which only stays sound while no safe code can take, replace or clone it.
use pymem::{Trace, Tracer};

pub struct Thief;

// SAFETY: visits nothing (this snippet must not compile anyway).
unsafe impl Trace for Thief {
    fn trace(&self, tracer: &mut Tracer) {
        let _taken = std::mem::take(tracer);
        let _cloned = tracer.clone();
    }
}
