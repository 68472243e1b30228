//! Links GCC's unwinder statically (`libgcc_eh.a`) when the C toolchain
//! has it, so that the library does not depend on `libgcc_s.so.1`.
//!
//! Rust's standard library refers to the unwinder (`_Unwind_*`: panics,
//! backtraces), which rustc takes from `libgcc_s.so.1` on glibc targets.
//! A program written in C or Python does not load that library otherwise,
//! so preloading `libpymem_malloc.so` made the dynamic loader map, relocate
//! and initialise one more shared object in every process: about 240 KiB
//! more resident memory at start-up for a small C program (measured with
//! `/proc/self/smaps`; see `docs/override.md`), for code that only a panic
//! would run. Given first on the link line, the static archive resolves
//! those references, and `--as-needed` (which rustc passes) then drops
//! `libgcc_s.so.1`. The unwinder's symbols stay local to the library (the
//! cdylib exports only the allocator's functions), so they cannot interpose
//! on a C++ program's own unwinder.
//!
//! Where the archive is not found (another C toolchain), nothing changes.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || target_env != "gnu" {
        return;
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // The compiler prints the bare name back when it has no such file.
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return;
    }
    if let Some(dir) = path.parent() {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static=gcc_eh");
    }
}
