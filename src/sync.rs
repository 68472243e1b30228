//! The one door through which the allocator reaches atomics and cells.
//!
//! Under `--cfg loom` these are loom's instrumented types, so the model
//! checks in `loom-tests/` explore the interleavings of the real code
//! rather than of a copy of it (the approach of crossbeam and tokio). The
//! allocator's `Cell`s are loom's checked cells there: a model fails with a
//! causality error when two threads touch one without a happens-before
//! edge between them, which is how the models check the field ownership
//! rules written on `Heap`, `Pool` and `Outbox`.

#[cfg(loom)]
pub(crate) use loom::cell::Cell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub(crate) use core::cell::Cell;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// The cheap half of an asymmetric barrier: the thread that runs often
/// (a heap's owner entering its outbox) orders its store of a flag before
/// its load of another with this, and the thread that runs rarely (a
/// reclaimer) pays for both with [`heavy_barrier`].
///
/// In production it only stops the compiler from moving memory accesses
/// across it: the processor is made to order them by the heavy barrier,
/// which runs a full fence on every CPU running a thread of the process
/// (`membarrier(2)`), so that wherever that fence falls in this thread's
/// execution, the Dekker argument of `Outbox` holds (see there). Under loom
/// it is a sequentially consistent fence, the model of that fence landing
/// between the store and the load (the one placement that is not trivially
/// safe).
#[inline(always)]
pub(crate) fn light_barrier() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The expensive half of the asymmetric barrier (see [`light_barrier`]):
/// when it returns `true`, every thread of the process has executed a full
/// memory barrier since the call began, so each either has its stores
/// before its last [`light_barrier`] visible to the caller, or will see
/// the caller's stores before this call in its loads after its next one.
/// `false` when the OS offers no such barrier; the caller must then not
/// rely on it.
pub(crate) fn heavy_barrier() -> bool {
    #[cfg(loom)]
    {
        fence(Ordering::SeqCst);
        true
    }
    #[cfg(not(loom))]
    {
        crate::alloc::os::process_barrier()
    }
}

/// The first read of a compare-and-swap loop.
///
/// A plain relaxed load in production. Under loom it is a read-modify-write
/// that changes nothing: loom's partial-order reduction remembers only the
/// last access to each atomic, so a thread's own load just before its CAS
/// would hide other threads' earlier loads of that atomic, and the orders in
/// which those loads could have seen the CAS would never be explored.
pub(crate) trait CasStart<T> {
    fn load_for_cas(&self) -> T;
}

impl CasStart<usize> for AtomicUsize {
    #[inline(always)]
    fn load_for_cas(&self) -> usize {
        #[cfg(loom)]
        return self.fetch_add(0, Ordering::Relaxed);
        #[cfg(not(loom))]
        return self.load(Ordering::Relaxed);
    }
}

impl<P> CasStart<*mut P> for AtomicPtr<P> {
    #[inline(always)]
    fn load_for_cas(&self) -> *mut P {
        #[cfg(loom)]
        return self
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, Some)
            .unwrap();
        #[cfg(not(loom))]
        return self.load(Ordering::Relaxed);
    }
}

/// One step of a wait for another thread (the `attempt`-th): a pause
/// instruction, and after a while a yield of the CPU, so a waiter never
/// starves the thread it waits for on a loaded machine. Under loom, a
/// yield to the model's scheduler.
#[inline]
pub(crate) fn spin_wait(attempt: u32) {
    #[cfg(loom)]
    {
        let _ = attempt;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if attempt < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
