//! The one free dispatch: every free of a small block, whoever calls it
//! (`GlobalAlloc::dealloc`'s inlined fast path, the general path behind
//! the debug hooks, the C ABI's `free`, the loom models), asks "is this my
//! pool?" in [`push_if_mine`], once: [`free_block`] is that question and
//! its two answers; C's `free` asks it through the same function and
//! takes its slow answers by tail calls of its own (`cabi.rs`).

use super::asan;
use super::heap::Heap;
use super::pool::Pool;
use super::remote;
use crate::sync::Ordering;

/// Frees a small block: onto its pool's free list if `me` owns the pool,
/// else through the remote-free protocol (`remote.rs`).
///
/// # Safety
/// `ptr` must be a block PyMalloc handed out and still in use, freed by
/// the caller; `me` must be the calling thread's heap (the caller being its
/// owner) or null if it has none.
#[inline(always)]
pub(crate) unsafe fn free_block(me: *mut Heap, ptr: *mut u8) {
    // SAFETY: this function's `# Safety` is `push_if_mine`'s.
    match unsafe { push_if_mine(me, ptr) } {
        LocalFree::Pushed => {}
        // SAFETY: `push_if_mine` just freed into `pool`, an attached pool
        // of `me`'s, leaving `used` blocks in use: what `free_slow` requires.
        LocalFree::SlowPath(pool, used, frees) => unsafe { (*me).free_slow(pool, used, frees) },
        // SAFETY: `ptr` is a block in use freed by the caller and `me` the
        // calling thread's heap or null (this function's `# Safety`); `pool` is
        // its pool, and not an attached pool of `me`'s (the owner word differs
        // from `me`): what `free_elsewhere` requires.
        LocalFree::Elsewhere(pool) => unsafe { free_elsewhere(me, pool, ptr) },
    }
}

/// The answer of [`push_if_mine`].
pub(crate) enum LocalFree {
    /// Pushed on its pool's free list; nothing more to do.
    Pushed,
    /// Pushed, and the heap's slow path must run
    /// ([`Heap::free_slow`]: the pool emptied, or the tick is due), with
    /// the pool, its `used` count after the push, and the class's frees.
    SlowPath(*mut Pool, u32, usize),
    /// Not an attached pool of the caller's heap (another thread's, a
    /// detached one, or the caller has no heap): the block is untouched.
    Elsewhere(*mut Pool),
}

/// "Is this my pool?": if `me` owns the block's pool and the pool is
/// attached, pushes the block on its free list (the local free, inline);
/// otherwise touches nothing.
///
/// # Safety
/// As [`free_block`].
#[inline(always)]
pub(crate) unsafe fn push_if_mine(me: *mut Heap, ptr: *mut u8) -> LocalFree {
    let pool = Pool::of(ptr);
    // SAFETY: a block in use has a live pool header, whose owning heap does
    // not change while the block is in use (see `Pool`); nor does its class.
    let (owner, size) = unsafe { ((*pool).owner_word(), (*pool).block_size()) };
    asan::poison(ptr, size);
    if owner != me {
        return LocalFree::Elsewhere(pool);
    }
    // SAFETY: we own the block's pool and it is attached (a detached pool's
    // owner word is tagged; a real owner is never null, so a null `me`
    // never gets here), and `ptr` is a block of it in use, freed by the
    // caller: what `free_push` requires.
    match unsafe { (*me).free_push(pool, ptr) } {
        None => LocalFree::Pushed,
        Some((used, frees)) => LocalFree::SlowPath(pool, used, frees),
    }
}

/// A block of a detached pool of `me`'s, or of a pool that the calling
/// thread's heap does not own, or freed by a thread with no heap yet.
/// Every case leaves by a tail call, so the remote free (the common case
/// here) saves and restores no register.
///
/// `extern "C"` (the allocator's paths do not unwind) so that C's `free`
/// reaches it by a tail call too, keeping no frame for a landing pad; and
/// so are the functions it calls out of line (`free_unbound`,
/// `Heap::free_to_detached`, the outbox's slow append and single-block
/// delivery): a call from a function that may not unwind to one that may
/// needs an abort landing pad, which rules out the tail call and costs the
/// remote free a frame (a push and a pop) even on its inline path.
///
/// # Safety
/// As [`free_block`], with `pool` the block's pool, not an attached one of
/// `me`'s.
#[cold]
#[inline(never)]
pub(crate) unsafe extern "C" fn free_elsewhere(me: *mut Heap, pool: *mut Pool, ptr: *mut u8) {
    if me.is_null() {
        // SAFETY: `ptr` is a block in use of `pool`, freed by the caller (this
        // function's `# Safety`): what `free_unbound` requires.
        return unsafe { free_unbound(pool, ptr) };
    }
    // SAFETY: `ptr` is a block in use of `pool` (this function's `# Safety`),
    // so the pool header is live, and its owner does not change while the
    // block is in use (see `Pool`); `owner` only loads the atomic owner word.
    let (owner, detached) = unsafe { (*pool).owner(Ordering::Relaxed) };
    if owner == me {
        // Not the word `free_block` compared, so tagged: only we attach
        // our pools, so it is still detached.
        debug_assert!(detached);
        // SAFETY: we own `me` (this function's `# Safety`, as
        // `free_block`'s), so owner capacity; `pool` is `me`'s and detached
        // (owner word tagged), and `ptr` a block in use of it freed by us:
        // what `free_to_detached` requires.
        return unsafe { (*me).free_to_detached(pool, ptr) };
    }
    // SAFETY: `ptr` is a block in use of `pool` freed by the caller, and `me`
    // the calling thread's heap (this function's `# Safety`); `pool` is not
    // `me`'s (its owner is another heap): what `free_remote` requires.
    unsafe { remote::free_remote(me, pool, ptr) }
}

/// A free by a thread with no heap: it gets one, if it can, so that its
/// frees are batched (the heap it gets may turn out to own the pool).
///
/// # Safety
/// As [`free_block`], with `pool` the block's pool.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_unbound(pool: *mut Pool, ptr: *mut u8) {
    #[cfg(not(loom))]
    let me = super::thread::bind_for_free();
    #[cfg(loom)]
    let me: *mut Heap = core::ptr::null_mut();
    // SAFETY: `ptr` is a block in use of `pool` (this function's `# Safety`),
    // so the pool header is live, and its owner does not change while the
    // block is in use (see `Pool`); `owner` only loads the atomic owner word.
    let (owner, detached) = unsafe { (*pool).owner(Ordering::Relaxed) };
    if !me.is_null() && owner == me {
        // SAFETY: our own pool (a heap just bound, adopted, owns it).
        return unsafe {
            if detached {
                (*me).free_to_detached(pool, ptr)
            } else {
                (*me).free_local(pool, ptr)
            }
        };
    }
    // SAFETY: `ptr` is a block in use of `pool` freed by the caller (this
    // function's `# Safety`); `me` is null or the heap this thread just bound
    // and owns, which does not own `pool`: what `free_remote` requires.
    unsafe { remote::free_remote(me, pool, ptr) }
}

/// Frees a small block given only its address, as C's `free` is: the pool
/// header tells the block's class, so no layout is needed (the entry point
/// for the C API's slow paths, `cabi.rs`; its fast path asks
/// [`push_if_mine`] directly).
///
/// # Safety
/// `ptr` must be a block PyMalloc handed out from a pool and still in use,
/// freed by the caller.
#[cfg(not(loom))]
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn free_small(ptr: *mut u8) {
    // SAFETY: `ptr` is a pool block in use freed by the caller (this
    // function's `# Safety`), and `current_heap()` is the calling thread's
    // bound heap, which it owns, or null: what `free_block` requires.
    unsafe { free_block(super::thread::current_heap(), ptr) }
}
