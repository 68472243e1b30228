//! The C allocation API of `libpymem_malloc.so`, exercised by a C program
//! (`tests/c/api.c`): alignment, usable size, overflow, NULL, `realloc`
//! edges, foreign pointers, `errno`. The same program must pass against
//! glibc alone, so its expectations are glibc's.

mod cabi_common;

use std::process::Command;

use cabi_common::{assert_success, compile_c, preload, run_preloaded};

#[test]
fn api_program_passes_against_glibc_alone() {
    let exe = compile_c("api");
    let out = Command::new(&exe)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert_success("api against glibc", &out);
}

#[test]
fn api_program_passes_under_the_preload() {
    let Some(library) = preload() else { return };
    let exe = compile_c("api");
    let out = run_preloaded(library, Command::new(&exe).arg("pymem"));
    assert_success("api under the preload", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}

#[test]
fn api_program_passes_under_the_debug_allocator() {
    let Some(library) = preload() else { return };
    let exe = compile_c("api");
    let out = run_preloaded(
        library,
        Command::new(&exe)
            .arg("pymem-debug")
            .env("PYMEM_DEBUG", "1"),
    );
    assert_success("api under PYMEM_DEBUG=1", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pymem: debug allocator on"), "{stderr}");
}

/// The debug allocator under the preload reports C's mistakes by name, and
/// never dereferences a pointer it did not hand out (a wild or stack
/// pointer is reported, not followed).
#[test]
fn debug_allocator_reports_c_mistakes() {
    use std::os::unix::process::ExitStatusExt;
    let Some(library) = preload() else { return };
    let exe = compile_c("mistakes");
    let cases = [
        ("double-free-small", "double free"),
        ("double-free-large", "or one already freed"),
        ("overrun", "rear guard damaged"),
        ("wild", "use after free"),
        ("stack", "not a pointer PyMalloc handed out"),
        (
            "wrong-size",
            "freed with size 64 but allocated with size 100",
        ),
    ];
    for (mistake, message) in cases {
        let out = run_preloaded(
            library,
            Command::new(&exe).arg(mistake).env("PYMEM_DEBUG", "1"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{mistake}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(message) && stderr.contains("pymem: debug allocator"),
            "{mistake}: expected {message:?} in:\n{stderr}"
        );
    }
}
