//! The debug build's checks take only block starts for blocks: where a
//! class's size does not divide the pool (640 bytes into 16 KiB), the
//! address just past the last block is no block, and a `free` of it is
//! reported instead of accepted (review finding: before the fix it was
//! accepted and the next `malloc`s handed it out, a "block" running 256
//! bytes past the pool).

#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

use pymem::__cabi::{free, malloc};

const CHILD: &str = "PYMEM_TEST_FALSE_BLOCK_START_CHILD";

#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checks run in debug builds")]
fn a_free_past_the_last_block_is_reported() {
    if std::env::var(CHILD).is_ok() {
        std::thread::spawn(|| {
            // SAFETY: deliberately wrong: frees a pointer never handed out
            // (the child is expected to abort there).
            unsafe {
                let p = malloc(600).cast::<u8>(); // a 640-byte class block
                let base = (p as usize) & !(16384 - 1);
                let past = (base + 25 * 640) as *mut u8; // 16,000: no block
                free(past.cast());
                let got: Vec<usize> = (0..40).map(|_| malloc(600) as usize).collect();
                assert!(!got.contains(&(past as usize)), "handed out {past:p}");
            }
        })
        .join()
        .unwrap();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_free_past_the_last_block_is_reported",
            "--nocapture",
            "--include-ignored",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not the start of a block"),
        "{:?}\n{err}",
        out.status
    );
}
