//! `purge_in_background` serialises its calls with a control word that a
//! child of `fork` recognises as its parent's by the fork generation, which
//! the allocator's `fork` handler bumps. A program that calls it without
//! PyMalloc as its allocator (no heap ever bound, so no handler registered
//! by a bind) and forks while another thread holds the word must not leave
//! the child waiting for ever in its own call. (Review finding: before the
//! fix 19 of 20 children hung.) No `#[global_allocator]` here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_child_of_fork_can_call_purge_in_background() {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let toggler = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            pymem::purge_in_background(Some(Duration::from_secs(3600)));
            pymem::purge_in_background(None);
        }
    });
    let mut hung = 0;
    for _ in 0..20 {
        // SAFETY: the child calls the function under test and async-signal
        // -safe functions, then `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe calls; a hang ends by SIGALRM.
            unsafe { libc::alarm(2) };
            pymem::purge_in_background(None);
            // SAFETY: ends the child without running the parent's exit
            // handlers.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` a valid out-parameter.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
            hung += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    toggler.join().unwrap();
    assert_eq!(hung, 0, "{hung} of 20 children hung in purge_in_background");
}
