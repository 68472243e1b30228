//! A collection that runs while the thread is already unwinding (an
//! automatic one started by `Gc::new` in a destructor that the unwind
//! runs, or `gc::collect()` in a scope guard) must not let a panic of a
//! garbage object's `Drop` escape: a panic escaping a destructor during
//! cleanup aborts the process. The panic is contained and reported, as it
//! already was for weak callbacks and finalizers. (Review finding: before
//! the fix the child process aborted with "panic in a destructor during
//! cleanup", SIGABRT.)
//!
//! Each case runs in a child process, so that an abort fails the test
//! instead of killing the harness.

use pymem::{gc, Gc, Trace};
use std::cell::RefCell;
use std::panic::catch_unwind;
use std::process::Command;

/// Garbage whose `Drop` panics.
#[derive(Trace)]
struct Bomb {
    me: RefCell<Option<Gc<Bomb>>>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("bomb");
    }
}

#[derive(Trace)]
struct Plain {
    _e: RefCell<Vec<Gc<Plain>>>,
}

fn bomb_cycle() {
    let b = Gc::new(Bomb {
        me: RefCell::new(None),
    });
    *b.me.borrow_mut() = Some(b.clone());
}

/// Creates tracked objects in its `Drop`: with a low threshold, one of
/// them starts an automatic collection.
struct AllocOnDrop;

impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        let kept: Vec<_> = (0..10)
            .map(|_| {
                Gc::new(Plain {
                    _e: RefCell::new(vec![]),
                })
            })
            .collect();
        drop(kept);
    }
}

/// Collects in its `Drop`, as a scope guard would.
struct CollectOnDrop;

impl Drop for CollectOnDrop {
    fn drop(&mut self) {
        gc::collect();
    }
}

fn child(case: &str) {
    gc::disable();
    bomb_cycle();
    let r = catch_unwind(|| match case {
        "automatic" => {
            gc::enable();
            gc::set_threshold(2, 10, 10);
            let _guard = AllocOnDrop;
            panic!("first");
        }
        "explicit" => {
            let _guard = CollectOnDrop;
            panic!("first");
        }
        _ => unreachable!(),
    });
    let payload = r.expect_err("the first panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"first"));
    // The bomb was collected (its Drop ran, and panicked) in the unwind.
    gc::disable();
    assert_eq!(gc::tracked_count(), 0);
    // Outside an unwind, the same panic is resumed from `collect`.
    bomb_cycle();
    let r = catch_unwind(gc::collect);
    assert_eq!(
        r.expect_err("resumed").downcast_ref::<&str>(),
        Some(&"bomb")
    );
    println!("SURVIVED");
}

fn run_child(case: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("PYMEM_UNWIND_CASE", case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("SURVIVED"),
        "{case}: status {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("panicked while the thread was unwinding"),
        "{case}: the contained panic is reported\n{stderr}"
    );
}

/// The child's body; does nothing when the harness runs it directly.
#[test]
fn child_entry() {
    if let Some(case) = std::env::var_os("PYMEM_UNWIND_CASE") {
        child(case.to_str().unwrap());
    }
}

#[test]
fn automatic_collection_in_a_destructor_during_an_unwind() {
    run_child("automatic");
}

#[test]
fn explicit_collection_in_a_scope_guard_during_an_unwind() {
    run_child("explicit");
}
