//! Object headers: the refcount words every `Gc` allocation starts with,
//! the two collector words that precede them in tracked allocations, the
//! per-type vtable, and allocation/deallocation.
//!
//! ```text
//!  untracked (T::MAY_CONTAIN_GC == false), 16 bytes like Rc:
//!                 ┌──────────────┬──────────────┬───────────┐
//!  Gc points ───► │ strong usize │ weak usize   │ value: T  │
//!                 └──────────────┴──────────────┴───────────┘
//!  tracked, 32 bytes:
//!  ┌───────────────┬──────────────────┬──────────────┬──────────────┬───────────┐
//!  │ vtable &'stat │ gc word usize    │ strong usize │ weak usize   │ value: T  │
//!  └───────────────┴──────────────────┴──────────────┴──────────────┴───────────┘
//!   -16             -8                 ▲ Gc points here (same code as untracked)
//!  gc word = index in the generation list << 8
//!          | flags (DIRTY UNTRACKED DEAD DROPPED FINALIZER_RAN FINALIZER_PENDING
//!                   WEAK_CALLBACKS LENT_MUT)
//! ```

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};

use super::trace::Trace;
use super::tracer::Tracer;

/// The refcount words at the start of every `Gc` allocation.
///
/// `weak` counts the `Weak`s plus one for all the strong handles together,
/// as in `Rc`.
#[repr(C)]
pub(crate) struct Counts {
    pub(crate) strong: Cell<usize>,
    pub(crate) weak: Cell<usize>,
}

/// The refcount words followed by the value; what a `Gc<T>` points at.
#[repr(C)]
pub(crate) struct GcBox<T> {
    pub(crate) counts: Counts,
    pub(crate) value: T,
}

/// The collector's words, immediately before the [`Counts`] of a tracked
/// allocation.
#[repr(C)]
pub(crate) struct GcHeader {
    pub(crate) vtable: &'static VTable,
    /// `index in the generation list << SHIFT | flags`.
    pub(crate) gc: Cell<usize>,
}

/// A type-erased pointer to the [`Counts`] of a tracked object.
pub(crate) type ObjPtr = *const Counts;

/// Bits of the low byte of the gc word.
pub(crate) const SHIFT: u32 = 8;
/// Strong count decremented to a non-zero value since the collector last
/// looked (the skip rule, see `collector`).
pub(crate) const DIRTY: usize = 1 << 0;
/// Not in the generation list (the index is stale): being freed, garbage
/// being reclaimed, resurrected after its value was dropped, under
/// construction in `new_cyclic`, or created after the thread's collector
/// was torn down.
pub(crate) const UNTRACKED: usize = 1 << 1;
/// Found unreachable: `Weak::upgrade` returns `None`.
pub(crate) const DEAD: usize = 1 << 2;
/// The value has been dropped (by the collector or refcounting).
pub(crate) const DROPPED: usize = 1 << 3;
/// PEP 442: the object's finalizer already ran (see `finalizers`).
pub(crate) const FINALIZER_RAN: usize = 1 << 4;
/// The object has a finalizer that has not run yet (see `finalizers`):
/// the refcount death path tests it together with `DROPPED`, so objects
/// without one pay nothing.
pub(crate) const FINALIZER_PENDING: usize = 1 << 5;
/// Weak callbacks (`gc::finalize`, `Weak::with_callback`) may be
/// registered for the object in the thread's side table (see
/// `weak_callbacks`).
pub(crate) const WEAK_CALLBACKS: usize = 1 << 6;
/// `Gc::get_mut` lent out a `&mut` to the value, which may still be
/// alive: the collector must not read the value. It treats the object as
/// referenced from outside (as a mutably borrowed `RefCell`) until it has
/// proof that the `&mut` ended: the strong or weak count is no longer 1
/// (a clone or a downgrade happened, which needs the handle the `&mut`
/// borrows), or its tracing meets the edge that is the only strong handle
/// (a handle the collector can read is not mutably borrowed). Either
/// proof clears the flag.
pub(crate) const LENT_MUT: usize = 1 << 7;
/// The flag bits.
pub(crate) const FLAG_MASK: usize = (1 << SHIFT) - 1;

/// Per-type operations the type-erased collector needs.
pub(crate) struct VTable {
    /// `Trace::trace` of the value.
    pub(crate) trace: unsafe fn(ObjPtr, &mut Tracer),
    /// Drops the value in place (does not touch counts or memory).
    pub(crate) drop_value: unsafe fn(ObjPtr),
    /// Frees the allocation.
    pub(crate) dealloc: unsafe fn(ObjPtr),
    /// `core::any::type_name::<T>()` (for the census and debug output).
    pub(crate) type_name: fn() -> &'static str,
    /// Bytes of the whole allocation.
    pub(crate) size: usize,
    /// The PEP 442 finalizer (`gc::Finalize`), if the object was created
    /// with one (`Gc::new_with_finalizer` uses a second vtable).
    pub(crate) finalize: Option<unsafe fn(ObjPtr)>,
}

impl GcHeader {
    /// The collector header of a tracked object.
    ///
    /// # Safety
    /// `obj` points at the `Counts` of a live tracked allocation, with the
    /// provenance of the whole allocation.
    #[inline(always)]
    pub(crate) unsafe fn of<'a>(obj: *const Counts) -> &'a GcHeader {
        // SAFETY: tracked allocations place a GcHeader immediately before
        // the Counts (see `alloc_tracked`), and the caller guarantees the
        // allocation is live and `obj` carries its provenance.
        unsafe {
            &*obj
                .cast::<u8>()
                .sub(size_of::<GcHeader>())
                .cast::<GcHeader>()
        }
    }

    #[inline(always)]
    pub(crate) fn flags(&self) -> usize {
        self.gc.get() & FLAG_MASK
    }

    #[inline(always)]
    pub(crate) fn has(&self, f: usize) -> bool {
        self.gc.get() & f != 0
    }

    #[inline(always)]
    pub(crate) fn set_flags(&self, f: usize) {
        self.gc.set(self.gc.get() | f)
    }

    #[inline(always)]
    pub(crate) fn clear_flags(&self, f: usize) {
        self.gc.set(self.gc.get() & !f)
    }

    /// The upper bits: the object's index in the generation list (the
    /// collector keeps gc_refs in a side array, so a listed object's
    /// index is valid even during a collection).
    #[inline(always)]
    pub(crate) fn index(&self) -> usize {
        self.gc.get() >> SHIFT
    }

    #[inline(always)]
    pub(crate) fn set_index(&self, i: usize) {
        self.gc.set((i << SHIFT) | self.flags())
    }
}

/// Layout facts for a `GcBox<T>`.
pub(crate) struct Lay<T>(std::marker::PhantomData<T>);

impl<T: Trace + 'static> Lay<T> {
    /// Offset of the `GcBox<T>` from the start of a tracked allocation: the
    /// header fits before it and the box stays aligned.
    pub(crate) const OFFSET: usize = {
        let a = align_of::<GcBox<T>>();
        let h = size_of::<GcHeader>();
        if a > h {
            a
        } else {
            h
        }
    };

    /// The layout of the whole allocation.
    #[inline(always)]
    pub(crate) fn layout() -> Layout {
        if T::MAY_CONTAIN_GC {
            let a = align_of::<GcBox<T>>().max(align_of::<GcHeader>());
            match Layout::from_size_align(Self::OFFSET + size_of::<GcBox<T>>(), a) {
                Ok(l) => l,
                Err(_) => capacity_overflow(),
            }
        } else {
            Layout::new::<GcBox<T>>()
        }
    }

    pub(crate) const VTABLE: &'static VTable = &VTable {
        trace: trace_erased::<T>,
        drop_value: drop_value_erased::<T>,
        dealloc: dealloc_erased::<T>,
        type_name: std::any::type_name::<T>,
        size: Self::OFFSET + size_of::<GcBox<T>>(),
        finalize: None,
    };

    /// Allocates a box with `strong`/`weak` counts and, for tracked types,
    /// a header with the vtable and the given gc word; the value is left
    /// uninitialised.
    #[inline(always)]
    pub(crate) fn allocate(strong: usize, weak: usize, gc: usize) -> NonNull<GcBox<T>> {
        // (`gc` is written here; `track` overwrites it with the index.)
        let layout = Self::layout();
        // SAFETY: the layout has non-zero size (it holds the counts).
        let base = unsafe { alloc(layout) };
        if base.is_null() {
            handle_alloc_error(layout);
        }
        let boxp = if T::MAY_CONTAIN_GC {
            // SAFETY: OFFSET + size_of::<GcBox<T>>() == layout.size(), and
            // OFFSET >= size_of::<GcHeader>(), so both writes are in bounds
            // and aligned (OFFSET is a multiple of GcBox<T>'s alignment and
            // of 8, the header's).
            unsafe {
                let boxp = base.add(Self::OFFSET).cast::<GcBox<T>>();
                let h = boxp
                    .cast::<u8>()
                    .sub(size_of::<GcHeader>())
                    .cast::<GcHeader>();
                ptr::write(
                    h,
                    GcHeader {
                        vtable: Self::VTABLE,
                        gc: Cell::new(gc),
                    },
                );
                boxp
            }
        } else {
            base.cast::<GcBox<T>>()
        };
        // SAFETY: `boxp` is in bounds of the fresh allocation and aligned.
        unsafe {
            ptr::write(
                ptr::addr_of_mut!((*boxp).counts),
                Counts {
                    strong: Cell::new(strong),
                    weak: Cell::new(weak),
                },
            );
            NonNull::new_unchecked(boxp)
        }
    }

    /// Frees the allocation of `boxp`.
    ///
    /// # Safety
    /// `boxp` came from [`Lay::allocate`] for this `T`, the value is dropped
    /// or was never written, and no handle will touch it again.
    #[inline]
    pub(crate) unsafe fn deallocate(boxp: NonNull<GcBox<T>>) {
        let base = if T::MAY_CONTAIN_GC {
            // SAFETY: undoes the offset applied by `allocate`.
            unsafe { boxp.as_ptr().cast::<u8>().sub(Self::OFFSET) }
        } else {
            boxp.as_ptr().cast::<u8>()
        };
        // SAFETY: same pointer and layout as the allocation.
        unsafe { dealloc(base, Self::layout()) }
    }
}

#[cold]
fn capacity_overflow() -> ! {
    panic!("pymem: Gc allocation size overflows isize")
}

unsafe fn trace_erased<T: Trace + 'static>(obj: ObjPtr, tracer: &mut Tracer) {
    // SAFETY: the collector only passes live tracked objects of this
    // vtable's type whose value has not been dropped.
    let v = unsafe { &(*obj.cast::<GcBox<T>>()).value };
    v.trace(tracer)
}

unsafe fn drop_value_erased<T: Trace + 'static>(obj: ObjPtr) {
    // SAFETY: the caller (collector or trashcan) drops each value at most
    // once, marking it DROPPED first.
    unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*(obj as *mut GcBox<T>)).value)) }
}

unsafe fn dealloc_erased<T: Trace + 'static>(obj: ObjPtr) {
    // SAFETY: the caller frees only when strong == weak == 0, once; the
    // pointer came from `allocate` for this T (vtable per T).
    unsafe { Lay::<T>::deallocate(NonNull::new_unchecked(obj as *mut GcBox<T>)) }
}

/// Decrements the implicit weak reference held by the strong handles once
/// the last of them is gone, freeing the memory if no `Weak` remains.
///
/// # Safety
/// `obj` is a live tracked object with strong == 0 and its value dropped.
#[inline]
pub(crate) unsafe fn release_implicit_weak(obj: ObjPtr) {
    // SAFETY: live per the contract.
    let c = unsafe { &*obj };
    let w = c.weak.get() - 1;
    c.weak.set(w);
    if w == 0 {
        // SAFETY: no strong and no weak handle remain; tracked, so the
        // header (and vtable) exists.
        unsafe { (GcHeader::of(obj).vtable.dealloc)(obj) }
    }
}
