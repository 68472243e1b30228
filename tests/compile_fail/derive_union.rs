// Unions cannot be traced: which field is live is unknown.
use pymem::Trace;

#[derive(Trace)]
pub union Either {
    a: u32,
    b: f32,
}
