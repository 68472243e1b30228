//! The calling thread's heap pointer: the one thread-local the fast paths
//! read.
//!
//! A `thread_local!` compiles to the TLS model the crate type allows. In an
//! executable that is one instruction (`mov %fs:OFFSET`). In a shared
//! object, such as the `pymem-malloc` preload, it is the general-dynamic
//! model: a call to `__tls_get_addr` on every `malloc` and `free`, which
//! is a large share of a small `malloc`/`free` pair. C allocators built as
//! preloads (mimalloc, jemalloc) declare their thread-locals `initial-exec`
//! for that reason; stable Rust cannot choose the model, so with the
//! `initial-exec-tls` feature (which `pymem-malloc` enables) on x86-64
//! Linux the slot is declared in assembly with the initial-exec access
//! sequence: the slot's offset from the thread pointer is read from the GOT
//! (a `R_X86_64_TPOFF64` relocation the loader fills once), and the slot
//! itself through `%fs`. A library using initial-exec TLS must be in the
//! initial TLS block: loaded at start-up (`LD_PRELOAD`, `DT_NEEDED`), as a
//! `malloc` replacement is; `dlopen` accepts it only while glibc's small
//! static TLS reserve lasts. That is why it is a feature: a Python
//! extension module using `PyMalloc` is loaded with `dlopen`, and keeps
//! the `thread_local!`.
//!
//! The symbol is hidden, so a process holding two copies of this crate (a
//! Rust program with `PyMalloc` and the preload) has two slots; it carries
//! the crate version so that two versions linked into one binary do not
//! clash.
//!
//! Otherwise (and under loom) the slot is a `const`-initialised
//! `thread_local!` without a destructor: usable at any time, even during
//! the thread's TLS teardown, and in an executable just as fast.

use super::heap::Heap;

#[cfg(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux",
    not(loom)
))]
mod imp {
    use super::Heap;

    // The slot: 16 zeroed bytes in `.tbss`, one per thread: the heap, then
    // the fast-path heap (see `super::fast`).
    core::arch::global_asm!(
        ".pushsection .tbss.__pymem_0_1_heap_slot,\"awT\",@nobits",
        ".p2align 3",
        ".globl __pymem_0_1_heap_slot",
        ".hidden __pymem_0_1_heap_slot",
        ".type __pymem_0_1_heap_slot, @object",
        ".size __pymem_0_1_heap_slot, 16",
        "__pymem_0_1_heap_slot:",
        ".zero 16",
        ".popsection",
    );

    /// Word `N` of this thread's slot (0: the heap, 1: the fast-path heap).
    #[inline(always)]
    fn word<const N: usize>() -> *mut Heap {
        let heap: *mut Heap;
        // SAFETY: reads word `N` (< 2) of this thread's 16-byte slot: the
        // GOT entry holds the slot's offset from the thread pointer (`%fs`
        // base), filled by the loader before any code runs. `pure,
        // readonly`: the value changes only through `set`, which is not
        // `readonly`, so reads are not moved across it.
        unsafe {
            core::arch::asm!(
                "mov {heap}, qword ptr [rip + __pymem_0_1_heap_slot@GOTTPOFF]",
                "mov {heap}, qword ptr fs:[{heap} + {offset}]",
                heap = out(reg) heap,
                offset = const N * 8,
                options(nostack, preserves_flags, pure, readonly),
            );
        }
        heap
    }

    #[inline(always)]
    pub(crate) fn get() -> *mut Heap {
        word::<0>()
    }

    #[inline(always)]
    pub(crate) fn fast() -> *mut Heap {
        word::<1>()
    }

    #[inline]
    pub(crate) fn set(heap: *mut Heap, fast: *mut Heap) {
        // SAFETY: writes this thread's 16-byte `.tbss` slot only: the GOT
        // entry holds its offset from this thread's `%fs` base, filled by the
        // loader before any code runs, and no other thread addresses it.
        unsafe {
            core::arch::asm!(
                "mov {offset}, qword ptr [rip + __pymem_0_1_heap_slot@GOTTPOFF]",
                "mov qword ptr fs:[{offset}], {heap}",
                "mov qword ptr fs:[{offset} + 8], {fast}",
                offset = out(reg) _,
                heap = in(reg) heap,
                fast = in(reg) fast,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux",
    not(loom)
)))]
mod imp {
    use super::Heap;
    use core::cell::Cell;

    std::thread_local! {
        // The heap, then the fast-path heap (see `super::fast`).
        static SLOT: [Cell<*mut Heap>; 2] =
            const { [Cell::new(core::ptr::null_mut()), Cell::new(core::ptr::null_mut())] };
    }

    #[inline(always)]
    pub(crate) fn get() -> *mut Heap {
        SLOT.with(|slot| slot[0].get())
    }

    #[inline(always)]
    pub(crate) fn fast() -> *mut Heap {
        SLOT.with(|slot| slot[1].get())
    }

    #[inline]
    pub(crate) fn set(heap: *mut Heap, fast: *mut Heap) {
        SLOT.with(|slot| {
            slot[0].set(heap);
            slot[1].set(fast);
        });
    }
}

/// The calling thread's heap, or null.
#[inline(always)]
pub(crate) fn get() -> *mut Heap {
    imp::get()
}

/// The calling thread's heap if the fast paths may use it, else null: the
/// bound heap when the debug allocator is known to be off (neither the
/// `debug` feature nor `PYMEM_DEBUG`, nor the debug checks compiled in),
/// null when it is on or the thread has no heap. One load then tells a
/// fast path both that the hooks are off and which heap is the thread's,
/// where it took two loads, a compare and two branches.
#[inline(always)]
pub(crate) fn fast() -> *mut Heap {
    imp::fast()
}

/// Binds (or, with null, unbinds) the calling thread's heap.
///
/// Decides whether the debug allocator is on, if no allocation did yet,
/// so that [`fast`] agrees with [`hooks::known_off`](super::hooks::known_off)
/// from here on (that is decided once for the process).
///
/// # Safety
/// `heap` is null or a heap the calling thread has claimed (owner
/// capacity) and no other thread has bound: the allocator's paths take
/// the bound heap as the calling thread's own without checking.
#[inline]
pub(crate) unsafe fn set(heap: *mut Heap) {
    let fast = if heap.is_null() || super::debug::CHECKS || super::hooks::enabled() {
        core::ptr::null_mut()
    } else {
        heap
    };
    imp::set(heap, fast)
}

#[cfg(test)]
mod tests {
    // The slot alone (`imp::set`), with values that are not heaps: the lib's
    // tests run on the system allocator, so nothing dereferences them.
    #[test]
    fn each_thread_has_its_own_slot() {
        let saved = super::get();
        let saved_fast = super::fast();
        let mine = 0x1000 as *mut super::Heap;
        super::imp::set(mine, mine);
        let other = std::thread::spawn(|| {
            let before = super::get() as usize;
            super::imp::set(0x2000 as *mut super::Heap, 0x3000 as *mut super::Heap);
            assert_eq!(super::fast() as usize, 0x3000);
            (before, super::get() as usize)
        })
        .join()
        .unwrap();
        // The spawned thread's allocations may have bound it a real heap;
        // what matters is that it never saw ours, and we never see its.
        assert_ne!(other.0, 0x1000);
        assert_eq!(other.1, 0x2000);
        assert_eq!(super::get(), mine);
        assert_eq!(super::fast(), mine);
        super::imp::set(saved, saved_fast);
    }
}
