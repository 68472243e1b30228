//! The real programs of `programs/` with mimalloc as the global allocator
//! (run them all with `run_programs`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../programs/mod.rs"]
mod programs;

fn main() {
    programs::main();
}
