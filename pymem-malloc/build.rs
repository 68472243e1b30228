//! Two link-time choices that keep down the memory every process pays for
//! preloading the library (see "Start-up memory" in `docs/override.md`).
//!
//! # No `libgcc_s.so.1`
//!
//! GCC's unwinder is linked statically (`libgcc_eh.a`) when the C
//! toolchain has it, so that the library does not depend on
//! `libgcc_s.so.1`.
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
//!
//! # The code the loader runs sits with the allocator's
//!
//! The kernel maps a file's pages in aligned 64 KiB windows around each
//! page fault ("fault-around"), so every separate place of the library's
//! code that runs costs up to 64 KiB of resident memory. The allocator's
//! own code is contiguous (its objects come first on the link line), but
//! the standard library adds one function that the dynamic loader runs at
//! start-up (`ARGV_INIT_ARRAY`'s `init_wrapper`, an `.init_array` entry
//! that saves `argc`/`argv`), hundreds of kilobytes further on, among code
//! that only a panic runs, and LLD puts the PLT (called at exit and by
//! thread-local accesses) after all the code. A linker script fragment
//! (`INSERT BEFORE .text`, which keeps the default layout otherwise; GNU ld
//! and LLD support it) places both in front of the allocator's code.
//! Should the standard library rename it, the pattern matches nothing and
//! the layout is the default one.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Sections placed before the rest of the code: the standard library's
/// start-up function (v0 and legacy manglings both contain the name), and
/// the PLT, through which the C run-time's exit code (`__cxa_finalize`)
/// and thread-local accesses (`__tls_get_addr`) call, which LLD otherwise
/// puts after all the code.
const LAYOUT_SCRIPT: &str = "\
SECTIONS {
  .text.pymem_startup : { *(.text.*ARGV_INIT_ARRAY*) }
  .plt : { *(.plt) *(.iplt) }
} INSERT BEFORE .text;
";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=TARGET_CC");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || target_env != "gnu" {
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out_dir.join("layout.ld");
    std::fs::write(&script, LAYOUT_SCRIPT).expect("write the linker script");
    println!("cargo:rustc-link-arg-cdylib=-Wl,-T,{}", script.display());
    link_unwinder_statically();
}

fn link_unwinder_statically() {
    // The archive must be the target's: when cross-compiling, ask the
    // target's C compiler if one is named (as the `cc` crate reads them),
    // else keep the default.
    let target = env::var("TARGET").unwrap_or_default();
    let cc = if target == env::var("HOST").unwrap_or_default() {
        env::var("CC").unwrap_or_else(|_| "cc".to_owned())
    } else {
        let named = [
            format!("CC_{target}"),
            format!("CC_{}", target.replace('-', "_")),
            "TARGET_CC".to_owned(),
        ];
        match named.iter().find_map(|v| env::var(v).ok()) {
            Some(cc) => cc,
            None => return,
        }
    };
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
