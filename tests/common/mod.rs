//! Helpers shared by the `gc_*` integration tests: a seeded PRNG (we do not
//! depend on `rand`), panic payload inspection, and a way to run a test in a
//! child process so that an abort (stack overflow, panic while panicking)
//! fails that one test instead of killing the whole test binary.
#![allow(dead_code)]

use std::any::Any;
use std::process::Command;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for tests.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
}

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
