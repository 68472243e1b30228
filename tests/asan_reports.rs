//! Under AddressSanitizer (`scripts/asan.sh`), PyMalloc poisons free blocks
//! and redzones, so mistakes inside pools are reported like mistakes in
//! malloc'd memory. Each test runs a deliberate bug in a child process (this
//! same test binary, re-executed) and checks ASan's report.
#![cfg(pymem_asan)]

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

const BUG_VAR: &str = "PYMEM_ASAN_BUG";

/// Runs `bug` in a child process; returns whether it exited successfully
/// and its stderr.
fn run_child(bug: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "deliberate_bug",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BUG_VAR, bug)
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The child's side: does nothing unless asked to by the parent.
#[test]
fn deliberate_bug() {
    match std::env::var(BUG_VAR).as_deref() {
        Ok("use-after-free") => {
            let block = Box::new([7u8; 48]);
            let ptr = &*block as *const [u8; 48] as *const u8;
            drop(block);
            // SAFETY: none — this is the bug ASan must report.
            let byte = unsafe { std::ptr::read_volatile(ptr.add(8)) };
            println!("read {byte} from a freed block");
        }
        Ok("overflow") => {
            let layout = Layout::from_size_align(48, 8).unwrap();
            // SAFETY: a valid layout.
            let ptr = unsafe { pymem::PyMalloc.alloc(layout) };
            // SAFETY: none — one byte past the 48 requested is the bug.
            unsafe { std::ptr::write_volatile(ptr.add(48), 1) };
            // SAFETY: allocated above with this layout.
            unsafe { pymem::PyMalloc.dealloc(ptr, layout) };
        }
        _ => {}
    }
}

fn assert_reported(bug: &str, kind: &str) {
    let (ok, stderr) = run_child(bug);
    println!("---- ASan report for the deliberate {bug} ----\n{stderr}");
    assert!(!ok, "the {bug} went unreported");
    assert!(
        stderr.contains("ERROR: AddressSanitizer"),
        "no ASan report:\n{stderr}"
    );
    assert!(stderr.contains(kind), "expected a {kind} report:\n{stderr}");
    assert!(
        stderr.contains("deliberate_bug"),
        "the report names the faulty function"
    );
}

#[test]
fn reading_a_freed_pool_block_is_reported() {
    assert_reported("use-after-free", "use-after-poison on address");
}

#[test]
fn writing_past_a_48_byte_block_is_reported() {
    assert_reported("overflow", "use-after-poison on address");
}

#[test]
fn correct_use_is_not_reported() {
    let (ok, stderr) = run_child("none");
    assert!(ok, "{stderr}");
    let v: Vec<Box<[u8; 48]>> = (0..10_000).map(|i| Box::new([i as u8; 48])).collect();
    assert!(v.iter().enumerate().all(|(i, b)| b[47] == i as u8));
}
