//! The debug allocator (`PYMEM_DEBUG=1`): each mistake runs in a child
//! process (this test binary, re-executed with the variable set) and must
//! abort with a message that names it.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

const MISTAKE: &str = "PYMEM_TEST_MISTAKE";

fn run_child(mistake: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("PYMEM_DEBUG", "1")
        .env(MISTAKE, mistake)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

unsafe fn alloc48() -> (*mut u8, Layout) {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: a valid layout.
    let ptr = unsafe { pymem::PyMalloc.alloc(layout) };
    assert!(!ptr.is_null());
    (ptr, layout)
}

/// The child's side; a no-op unless the parent asked for a mistake.
#[test]
fn child() {
    let Ok(mistake) = std::env::var(MISTAKE) else {
        return;
    };
    assert!(pymem::debug_allocator_enabled());
    // SAFETY: none of what follows is sound: each arm is the mistake the
    // debug allocator must catch before it does harm.
    unsafe {
        match mistake.as_str() {
            "clean" => {
                let (ptr, layout) = alloc48();
                let fresh = std::slice::from_raw_parts(ptr, 48);
                assert!(fresh.iter().all(|&b| b == pymem::CLEAN_BYTE), "{fresh:x?}");
                let zeroed = pymem::PyMalloc.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(zeroed, 48)
                    .iter()
                    .all(|&b| b == 0));
                let grown = pymem::PyMalloc.realloc(zeroed, layout, 700);
                assert!(std::slice::from_raw_parts(grown, 48)
                    .iter()
                    .all(|&b| b == 0));
                pymem::PyMalloc.dealloc(grown, Layout::from_size_align(700, 8).unwrap());
                pymem::PyMalloc.dealloc(ptr, layout);
                let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
                assert_eq!(v[9_999], "9999");
            }
            "overrun" => {
                let (ptr, layout) = alloc48();
                ptr.add(48).write(0x41);
                pymem::PyMalloc.dealloc(ptr, layout);
            }
            "underrun" => {
                let (ptr, layout) = alloc48();
                ptr.sub(1).write(0x42);
                pymem::PyMalloc.dealloc(ptr, layout);
            }
            "double-free" => {
                let (ptr, layout) = alloc48();
                pymem::PyMalloc.dealloc(ptr, layout);
                pymem::PyMalloc.dealloc(ptr, layout);
            }
            "foreign" => {
                let mut local = [0u8; 64];
                pymem::PyMalloc.dealloc(local.as_mut_ptr().add(16), Layout::new::<[u8; 48]>());
            }
            "wrong-size" => {
                let (ptr, _) = alloc48();
                pymem::PyMalloc.dealloc(ptr, Layout::from_size_align(40, 8).unwrap());
            }
            "large-overrun" => {
                let layout = Layout::from_size_align(5000, 8).unwrap();
                let ptr = pymem::PyMalloc.alloc(layout);
                ptr.add(5000).write(0);
                pymem::PyMalloc.dealloc(ptr, layout);
            }
            other => panic!("unknown mistake {other}"),
        }
    }
}

fn assert_caught(mistake: &str, expected: &[&str]) {
    let (code, stderr) = run_child(mistake);
    assert_ne!(code, Some(0), "{mistake} went unnoticed:\n{stderr}");
    for part in expected {
        assert!(
            stderr.contains(part),
            "{mistake}: expected {part:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("pymem: debug allocator"), "{stderr}");
}

#[test]
fn fresh_memory_is_filled_and_correct_use_passes() {
    let (code, stderr) = run_child("clean");
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn overrun_damages_the_rear_guard() {
    assert_caught("overrun", &["rear guard damaged", "size 48", "41, fd"]);
}

#[test]
fn underrun_damages_the_front_guard() {
    assert_caught("underrun", &["front guard damaged", "size 48", "fd, 42"]);
}

#[test]
fn double_free_is_caught() {
    assert_caught("double-free", &["double free"]);
}

#[test]
fn foreign_pointer_is_caught() {
    assert_caught("foreign", &["not a pointer PyMalloc handed out"]);
}

#[test]
fn wrong_layout_is_caught() {
    assert_caught(
        "wrong-size",
        &["freed with size 40 but allocated with size 48"],
    );
}

#[test]
fn large_blocks_are_guarded_too() {
    assert_caught("large-overrun", &["rear guard damaged", "size 5000"]);
}
