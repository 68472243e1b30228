//! Running code at a thread's exit after every `thread_local!` destructor.
//!
//! glibc runs a thread's `thread_local!` destructors first and its
//! `pthread` keys' destructors after, in up to four rounds
//! (`PTHREAD_DESTRUCTOR_ITERATIONS`), running a key's destructor again in
//! a later round when another destructor set the key's value. So a key's
//! destructor runs once every Rust destructor of the thread is done,
//! whatever order the thread's thread-locals were first touched in. The
//! allocator parks a thread's heap there (`alloc/thread.rs`); the
//! collector runs its last collection and frees its lists there
//! (`gc/state.rs`). Key destructors do not run for the main thread: the
//! process is exiting.

use core::sync::atomic::{AtomicUsize, Ordering};

/// A `pthread` key created at first use, whose destructor is the hook.
pub(crate) struct ExitKey {
    /// `pthread_key_t + 1` of the key; 0 until created.
    key: AtomicUsize,
    /// Called at the exit of each thread that armed the key, with the
    /// value it armed it with.
    on_exit: unsafe extern "C" fn(*mut libc::c_void),
}

impl ExitKey {
    /// A key whose destructor is `on_exit`; nothing is created yet.
    pub(crate) const fn new(on_exit: unsafe extern "C" fn(*mut libc::c_void)) -> ExitKey {
        ExitKey {
            key: AtomicUsize::new(0),
            on_exit,
        }
    }

    /// The key, created at first use (`pthread_key_create` does not
    /// allocate). `None` if the system has no key left.
    pub(crate) fn get(&self) -> Option<libc::pthread_key_t> {
        // Acquire: pairs with the AcqRel of the creator's CAS, so the key
        // read is one `pthread_key_create` has finished creating.
        let key = self.key.load(Ordering::Acquire);
        if key != 0 {
            return Some((key - 1) as libc::pthread_key_t);
        }
        let mut new: libc::pthread_key_t = 0;
        // SAFETY: `new` is a valid out-parameter; the destructor has the
        // signature pthreads expects.
        if unsafe { libc::pthread_key_create(&mut new, Some(self.on_exit)) } != 0 {
            return None;
        }
        // AcqRel: publishes the created key (Release), and on a lost race
        // reads the winner's (Acquire).
        match self
            .key
            .compare_exchange(0, new as usize + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(new),
            Err(winner) => {
                // SAFETY: our key lost the race and no thread has a value
                // for it.
                unsafe { libc::pthread_key_delete(new) };
                Some((winner - 1) as libc::pthread_key_t)
            }
        }
    }

    /// Arms the hook for the calling thread: at its exit, `on_exit` runs
    /// with `value`, which must be non-null (pthreads skips null values).
    /// May allocate (glibc's second-level blocks of keys past the 32nd).
    /// `false` if the system has no key left.
    pub(crate) fn arm(&self, value: *mut libc::c_void) -> bool {
        debug_assert!(!value.is_null());
        let Some(key) = self.get() else {
            return false;
        };
        // SAFETY: a key this process created and never deleted (only a
        // losing duplicate is deleted, before anyone sees it).
        unsafe { libc::pthread_setspecific(key, value) == 0 }
    }
}
