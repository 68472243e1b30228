//! Binding heaps to threads.
//!
//! The heap pointer lives in `heap_slot`, a thread-local without a
//! destructor, so reading it is a single TLS load that works at any time,
//! even while the thread's other thread-locals are being torn down. A second thread-local,
//! `GUARD`, exists only for its destructor: it parks the heap when the
//! thread exits. After that, the thread has no heap; the rare allocations
//! it still makes borrow a parked heap for the duration of one call.

use core::cell::Cell;
use core::ptr;

use super::heap::{self, Heap, HeapState};
use super::heap_slot;
use super::pool::Pool;
use super::REGISTRY;

thread_local! {
    static EXITED: Cell<bool> = const { Cell::new(false) };
    static GUARD: ExitGuard = const { ExitGuard };
}

struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let heap = heap_slot::get();
        heap_slot::set(ptr::null_mut());
        EXITED.with(|e| e.set(true));
        if !heap.is_null() {
            // SAFETY: this thread owned the heap and forgets it just now.
            unsafe { (*heap).park() };
        }
    }
}

/// The calling thread's heap, or null if it has none (yet, or any more).
#[inline(always)]
pub(crate) fn current_heap() -> *mut Heap {
    heap_slot::get()
}

/// Gives the calling thread a heap if it can have one: not during its
/// thread-local teardown, and not if the OS refuses memory.
#[cold]
#[inline(never)]
fn bind() -> *mut Heap {
    if EXITED.with(|e| e.get()) {
        return ptr::null_mut();
    }
    let heap = REGISTRY.claim_heap(HeapState::Owned);
    if heap.is_null() {
        return heap;
    }
    // Bound before GUARD's destructor is registered: registering allocates
    // (glibc's `__cxa_thread_atexit_impl` calls `calloc`, which is ours when
    // PyMalloc is the process's `malloc`), and that allocation must find
    // the heap rather than bind again.
    heap_slot::set(heap);
    if GUARD.try_with(|_| ()).is_err() {
        heap_slot::set(ptr::null_mut());
        // SAFETY: bound just above and forgotten again.
        unsafe { (*heap).park() };
        return ptr::null_mut();
    }
    heap
}

/// Allocates a block of `class` for a thread that has no heap bound.
#[cold]
#[inline(never)]
pub(crate) fn alloc_unbound(class: usize) -> *mut u8 {
    let heap = bind();
    if !heap.is_null() {
        // SAFETY: the thread owns the heap it just bound.
        return unsafe { (*heap).alloc(class) };
    }
    // Thread teardown: borrow a heap for this one allocation.
    let heap = REGISTRY.claim_heap(HeapState::Busy);
    if heap.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: claimed (Busy) just now, parked again right after.
    unsafe {
        let block = (*heap).alloc(class);
        (*heap).park();
        block
    }
}

/// Frees a block of a pool the calling thread's heap does not own.
///
/// # Safety
/// As [`heap::free_remote`]; `me` is [`current_heap()`].
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_remote(me: *mut Heap, pool: *mut Pool, block: *mut u8) {
    let me = if me.is_null() { bind() } else { me };
    // SAFETY: forwarded; a freshly bound heap owns no pool yet... unless it
    // was adopted, in which case the block may be ours after all.
    unsafe {
        if !me.is_null() && (*pool).owner.load(crate::sync::Ordering::Relaxed) == me {
            (*me).free_local(pool, block);
        } else {
            heap::free_remote(me, pool, block);
        }
    }
}

/// Trims the calling thread's own heap, if it has one.
pub(crate) fn trim_current() -> usize {
    let heap = current_heap();
    if heap.is_null() {
        return 0;
    }
    // SAFETY: the thread owns its bound heap.
    unsafe { (*heap).trim() }
}
