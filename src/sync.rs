//! The one door through which the allocator reaches atomics.
//!
//! Under `--cfg loom` these are loom's instrumented types, so the model
//! checks in `loom-tests/` explore the interleavings of the real code
//! rather than of a copy of it (the approach of crossbeam and tokio).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

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

impl CasStart<u8> for AtomicU8 {
    #[inline(always)]
    fn load_for_cas(&self) -> u8 {
        #[cfg(loom)]
        return self.fetch_add(0, Ordering::Relaxed);
        #[cfg(not(loom))]
        return self.load(Ordering::Relaxed);
    }
}
