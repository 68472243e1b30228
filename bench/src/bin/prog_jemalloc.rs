//! The real programs of `programs/` with jemalloc as the global allocator
//! (run them all with `run_programs`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../../programs/mod.rs"]
mod programs;

fn main() {
    programs::main();
}
