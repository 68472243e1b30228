//! Under the preload, glibc's allocator serves only the blocks above the
//! medium classes, and the preload caps its arenas at one per CPU the
//! process may run on (at least 2) so that a program's threads do not each
//! leave an arena of glibc's resident (`threadchurn` of bench/c; see
//! docs/override.md, "Eighth round: resident memory of C programs"). A cap
//! the user chose (`MALLOC_ARENA_MAX`) is left alone.

#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

mod cabi_common;

use std::process::Command;

use cabi_common::{assert_success, compile_c, preload, run_preloaded};

/// (glibc arenas, threads that held a block, CPUs) printed by
/// `tests/c/glibc_arenas.c`.
fn run(threads: usize, arena_max: Option<usize>) -> Option<(usize, usize, usize)> {
    let library = preload()?;
    let exe = compile_c("glibc_arenas");
    let mut command = Command::new(&exe);
    command
        .arg(threads.to_string())
        .env_remove("GLIBC_TUNABLES");
    match arena_max {
        Some(n) => command.env("MALLOC_ARENA_MAX", n.to_string()),
        None => command.env_remove("MALLOC_ARENA_MAX"),
    };
    let out = run_preloaded(library, &mut command);
    assert_success("glibc_arenas", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<usize> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 3, "unexpected output: {text}");
    Some((numbers[0], numbers[1], numbers[2]))
}

/// The CPUs the process may run on, as the C program counts them.
fn cap() -> Option<usize> {
    run(1, None).map(|(_, _, cpus)| cpus.max(2))
}

#[test]
fn threads_holding_large_blocks_share_glibc_arenas() {
    let Some(cap) = cap() else { return };
    // More threads than the cap, all holding a glibc block at once: without
    // the cap, glibc gives each its own arena (up to 8 per CPU).
    let threads = (2 * cap + 1).min(256);
    let (arenas, held, _) = run(threads, None).unwrap();
    assert_eq!(held, threads, "every thread must get its block");
    assert!(
        arenas <= cap,
        "{arenas} glibc arenas for {threads} threads (cap {cap})"
    );
}

#[test]
fn the_users_arena_max_wins() {
    let Some(cap) = cap() else { return };
    let threads = (2 * cap + 1).min(200);
    // One arena per thread and the main one, as the user asked.
    let (arenas, held, _) = run(threads, Some(threads + 1)).unwrap();
    assert_eq!(held, threads);
    assert_eq!(arenas, threads + 1, "MALLOC_ARENA_MAX was not honoured");
}
