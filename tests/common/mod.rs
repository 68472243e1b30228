//! Helpers shared by the `gc_*` integration tests: a seeded PRNG (we do not
//! depend on `rand`), panic payload inspection, and a way to run a test in a
//! child process so that an abort (stack overflow, panic while panicking)
//! fails that one test instead of killing the whole test binary.
#![allow(dead_code)]

use std::any::Any;
use std::process::Command;

#[path = "rng.rs"]
mod rng;
#[allow(unused_imports)] // not every test binary draws random numbers
pub use rng::SplitMix64;

/// The message of a panic payload, if it is a `&str` or a `String`.
pub fn panic_message(payload: &(dyn Any + Send)) -> Option<String> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Some((*s).to_string())
    } else {
        payload.downcast_ref::<String>().cloned()
    }
}

const CHILD_ENV: &str = "PYMEM_GC_TEST_CHILD";

/// Runs `body` in a child process (this same test binary, filtered to the
/// test `name`), so a stack overflow or an abort is reported as this test's
/// failure. `name` must be the test function's path in the binary (for a
/// top-level `#[test] fn foo` it is `"foo"`).
pub fn isolated(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, name)
        .output()
        .expect("spawn the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "isolated test `{name}` failed in its child process ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "isolated test `{name}` did not run in the child (wrong name?)\n{stdout}"
    );
}

/// Runs `f` on a fresh thread with a stack of `bytes` and returns its result
/// (panics are propagated).
pub fn with_stack<R: Send + 'static>(bytes: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .unwrap()
        .join()
    {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}
