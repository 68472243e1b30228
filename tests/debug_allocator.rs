//! The debug allocator (`PYMEM_DEBUG=1`): each mistake runs in a child
//! process (this test binary, re-executed with the variable set) and must
//! abort with a message that names it.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

const MISTAKE: &str = "PYMEM_TEST_MISTAKE";

fn child_output(mistake: &str, debug: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("PYMEM_DEBUG", debug)
        .env(MISTAKE, mistake)
        .output()
        .unwrap()
}

fn run_child(mistake: &str) -> (Option<i32>, String) {
    let out = child_output(mistake, "1");
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
    if mistake == "none-off" {
        assert!(!pymem::debug_allocator_enabled());
        return;
    }
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
            "large-wild" => {
                // An unmapped address with a large layout: never readable.
                let layout = Layout::from_size_align(5000, 8).unwrap();
                pymem::PyMalloc.dealloc(std::ptr::without_provenance_mut(0x1000), layout);
            }
            "large-double-free" => {
                let layout = Layout::from_size_align(5000, 8).unwrap();
                let ptr = pymem::PyMalloc.alloc(layout);
                pymem::PyMalloc.dealloc(ptr, layout);
                pymem::PyMalloc.dealloc(ptr, layout);
            }
            "box-string-double-drop" => {
                let raw = Box::into_raw(Box::new(String::from("owns a heap buffer")));
                drop(Box::from_raw(raw));
                // The second drop reads the freed String: pointer and
                // capacity are now 0xDDDD... (the dead fill).
                drop(Box::from_raw(raw));
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
fn wild_large_pointer_is_reported_not_read() {
    assert_caught(
        "large-wild",
        &["free of 0x1000 (size 5000): not a pointer PyMalloc handed out"],
    );
}

#[test]
fn large_double_free_is_caught() {
    assert_caught("large-double-free", &["or one already freed"]);
}

#[test]
fn switched_on_by_true_yes_on_and_announced() {
    for value in ["true", "YES", "on", "1"] {
        let out = child_output("clean", value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "PYMEM_DEBUG={value}: {stderr}");
        assert!(
            stderr.contains(&format!("pymem: debug allocator on (PYMEM_DEBUG={value})")),
            "PYMEM_DEBUG={value}: {stderr}"
        );
    }
    let out = child_output("none-off", "off");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("debug allocator on"));
}

#[test]
fn large_blocks_are_guarded_too() {
    assert_caught("large-overrun", &["rear guard damaged", "size 5000"]);
}

/// Issue 12, item 4: the second drop of a `Box<String>` hands `dealloc` the
/// freed `String`'s pointer and capacity, both `0xDDDD...`. The debug
/// allocator used to dereference that pointer and die of SIGSEGV; it must
/// name the mistake instead. (In debug builds the `#[global_allocator]`
/// shim's own precondition check on the `Layout` fires first and aborts
/// with its message; that is a clear report too, and not a crash.)
#[test]
fn double_drop_of_a_box_string_is_a_use_after_free_not_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let out = child_output("box-string-double-drop", "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.signal(), Some(SIGSEGV), "crashed:\n{stderr}");
    assert!(!out.status.success(), "went unnoticed:\n{stderr}");
    let ours = stderr.contains("use after free") && stderr.contains("dead-fill byte 0xdd");
    let std_check = cfg!(debug_assertions) && stderr.contains("unsafe precondition(s) violated");
    assert!(ours || std_check, "{stderr}");
}

const SIGSEGV: i32 = 11;
