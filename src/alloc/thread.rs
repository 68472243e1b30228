//! Binding heaps to threads, and the process's life events: thread exit
//! and `fork`.
//!
//! The heap pointer lives in `heap_slot`, a thread-local without a
//! destructor, so reading it is a single TLS load that works at any time,
//! even while the thread's thread-locals are being torn down.
//!
//! # Thread exit
//!
//! A thread's heap is parked by the destructor of a `pthread` key whose
//! value is set when the heap is bound (mimalloc does the same). glibc runs
//! `thread_local!` destructors first and `pthread_key` destructors after,
//! in up to four rounds, running a destructor again in a later round when
//! another destructor set its key: so whatever the order, the heap is
//! parked after the last Rust destructor, and a thread whose *first*
//! allocation happens in some other key's destructor (C libraries do this)
//! still sets our key in time to be parked. After that the thread has no
//! heap: the rare allocations it still makes are served by a parked heap
//! kept for one call, and its frees are delivered at once.
//!
//! # fork
//!
//! Nothing here takes a lock a `fork` could leave held, but a heap lock
//! held by a thread that did not survive the fork stays held in the child
//! (see `registry.rs`). The child's `pthread_atfork` handler starts a new
//! fork generation, so those locks are recognised; rebinds the forking
//! thread to a fresh heap if its own heap's lock is among them; lowers any
//! outbox flush request the parent had raised; and forgets the parent's
//! background purge thread.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use super::heap::Heap;
use super::heap_slot;
use super::{purge, REGISTRY};
use crate::exit_key::ExitKey;

thread_local! {
    /// Set once the thread's exit hook has run.
    static EXITED: Cell<bool> = const { Cell::new(false) };
}

/// The calling thread's heap, or null if it has none (yet, or any more).
#[inline(always)]
pub(crate) fn current_heap() -> *mut Heap {
    heap_slot::get()
}

/// The exit key, whose destructor parks the thread's heap: armed when a
/// heap is bound.
static EXIT: ExitKey = ExitKey::new(on_thread_exit);

/// What has been set up for the process (see `set_up_process`).
static PROCESS: AtomicU8 = AtomicU8::new(0);
const PROCESS_ATFORK: u8 = 1;

/// The exit key's destructor: parks the thread's heap.
extern "C" fn on_thread_exit(_value: *mut libc::c_void) {
    let heap = heap_slot::get();
    // SAFETY: unbinding (null) requires nothing.
    unsafe { heap_slot::set(ptr::null_mut()) };
    EXITED.with(|e| e.set(true));
    if !heap.is_null() {
        // SAFETY: this thread owned the heap and forgets it just now.
        unsafe {
            (*heap).large_cache.flush();
            (*heap).park()
        };
    }
}

/// Gives the calling thread a heap if it can have one: not once its exit
/// hook has run, and not if the OS refuses memory.
#[cold]
#[inline(never)]
fn bind() -> *mut Heap {
    if EXITED.with(|e| e.get()) {
        return ptr::null_mut();
    }
    // Read before any heap exists, without allocating (see
    // `purge_in_background`).
    let _ = purge::environment_interval();
    let heap = REGISTRY.claim_heap();
    if heap.is_null() {
        return heap;
    }
    // Bound before the exit key's value is set: both calls below may
    // allocate (glibc's second-level key blocks, its atfork list), and when
    // PyMalloc is the process's `malloc` (the C API) that allocation comes
    // back here: it must find the heap bound, an ordinary allocation of
    // this thread, rather than bind again (which recursed without end).
    // SAFETY: `claim_heap` just gave this thread the heap, in owner
    // capacity, and no other thread binds a claimed heap.
    unsafe { heap_slot::set(heap) };
    EXIT.arm(heap.cast());
    set_up_process();
    heap
}

/// Registers the `fork` handler, once. Also called by
/// `purge_in_background`, whose control word needs the child's new fork
/// generation even in a program that never binds a heap.
pub(crate) fn set_up_process() {
    if PROCESS.load(Ordering::Acquire) & PROCESS_ATFORK != 0 {
        return;
    }
    if PROCESS.fetch_or(PROCESS_ATFORK, Ordering::AcqRel) & PROCESS_ATFORK == 0 {
        super::os::register_atfork(None, None, Some(in_child_after_fork));
    }
}

/// The child's `fork` handler (see the module docs). The child has one
/// thread, which is outside the allocator.
extern "C" fn in_child_after_fork() {
    super::registry::FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    REGISTRY.flush_requests.store(0, Ordering::SeqCst);
    REGISTRY.pass_running.store(false, Ordering::SeqCst);
    purge::after_fork_in_child();
    let heap = current_heap();
    // SAFETY: heaps are never unmapped.
    if !heap.is_null() && unsafe { (*heap).lock_is_held() } {
        // Held by a thread of the parent: the heap may be mid-update.
        // SAFETY: unbinding (null) requires nothing.
        unsafe { heap_slot::set(ptr::null_mut()) };
        let fresh = REGISTRY.claim_heap();
        // SAFETY: `fresh` is null or a heap `claim_heap` just gave this
        // thread (the child's only one), in owner capacity.
        unsafe { heap_slot::set(fresh) };
        if !fresh.is_null() {
            EXIT.arm(fresh.cast());
        }
    }
}

/// Allocates a block of `class` for a thread that has no heap bound.
/// `class` must be below `NB_CLASSES`, which is not checked (though
/// `Heap::alloc` relies on it): its one caller, `PyMalloc::alloc_class`, requires
/// it of its own callers.
#[cold]
#[inline(never)]
pub(crate) fn alloc_unbound(class: usize) -> *mut u8 {
    let heap = bind();
    if !heap.is_null() {
        // SAFETY: `bind` claimed the heap for this thread and set its slot,
        // so we own it. `class < NB_CLASSES` is assumed, not checked: see
        // this function's docs.
        return unsafe { (*heap).alloc(class) };
    }
    // Thread teardown: serve this one from a parked heap.
    REGISTRY.alloc_elsewhere(class)
}

/// The heap of a thread about to free a block (or count a large one): its
/// own, or one bound now. Null if it cannot have one.
pub(crate) fn bind_for_free() -> *mut Heap {
    let heap = current_heap();
    if heap.is_null() {
        bind()
    } else {
        heap
    }
}

/// Starts the background purge thread if `PYMEM_PURGE_MS` asks for it,
/// before `main` (a constructor: never inside an allocation). It sits
/// beside `bind`, which every program using PyMalloc calls, so that the
/// linker keeps it.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static START_PURGE_FROM_ENVIRONMENT: extern "C" fn() = start_purge_from_environment;

#[cfg(target_os = "linux")]
extern "C" fn start_purge_from_environment() {
    purge::start_from_environment();
}
