//! The real programs of `programs/` with PyMalloc as the global allocator
//! (run them all with `run_programs`).

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

#[path = "../../programs/mod.rs"]
mod programs;

fn main() {
    programs::main();
}
