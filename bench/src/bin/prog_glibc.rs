//! The real programs of `programs/` with the system allocator (glibc's malloc) as the global allocator
//! (run them all with `run_programs`).

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

#[path = "../../programs/mod.rs"]
mod programs;

fn main() {
    programs::main();
}
