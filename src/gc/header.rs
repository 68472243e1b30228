//! Object headers: the refcount words every `Gc` allocation starts with,
//! the collector words that precede them in tracked allocations, the
//! per-type vtable, and allocation/deallocation.
//!
//! ```text
//!  untracked (the value can hold no Gc), 16 bytes like Rc, any T:
//!                 ┌──────────────┬──────────────┬───────────┐
//!  Gc points ───► │ strong usize │ weak usize   │ value: T  │
//!                 └──────────────┴──────────────┴───────────┘
//!  tracked, 32 bytes (sized values, and trait objects: the concrete type's):
//!  ┌───────────────┬──────────────────┬──────────────┬──────────────┬───────────┐
//!  │ vtable &'stat │ gc word usize    │ strong usize │ weak usize   │ value: T  │
//!  └───────────────┴──────────────────┴──────────────┴──────────────┴───────────┘
//!   -16             -8                 ▲ Gc points here (same code as untracked)
//!  tracked slice [T], 40 bytes: the element count precedes the header,
//!  so the type-erased vtable can rebuild the wide pointer:
//!  ┌───────────┬───────────────┬─────────┬────────┬──────┬─────────────┐
//!  │ len usize │ vtable        │ gc word │ strong │ weak │ [T; len]    │
//!  └───────────┴───────────────┴─────────┴────────┴──────┴─────────────┘
//!   -24
//!  gc word = index in the generation list << 8
//!          | flags (DIRTY UNTRACKED DEAD DROPPED FINALIZED FINALIZE WEAK_CALLBACKS, 1 bit free)
//! ```
//!
//! Whether an allocation is tracked is the value's
//! [`GcLayout`](super::trace::GcLayout) answer, which for a sized type is
//! its `Trace::may_contain_gc()` (a constant the optimizer folds, so the
//! code for sized types is the same as if it were written per type) and
//! for a trait object that of the concrete type behind it.

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
/// For an unsized `T` a pointer to it is wide (the value's length or
/// vtable), exactly as `Rc`'s.
#[repr(C)]
pub(crate) struct GcBox<T: ?Sized> {
    pub(crate) counts: Counts,
    pub(crate) value: T,
}

/// The collector's words, immediately before the [`Counts`] of a tracked
/// allocation.
#[repr(C)]
pub(crate) struct GcHeader {
    pub(crate) vtable: &'static VTable,
    /// `(index or gc_refs) << SHIFT | flags`.
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
/// PEP 442: the object's finalizer already ran (see `finalize`).
pub(crate) const FINALIZED: usize = 1 << 4;
/// The object has a finalizer that has not run yet (see `finalize`): the
/// refcount death path tests it together with `DROPPED`, so objects
/// without one pay nothing.
pub(crate) const FINALIZE: usize = 1 << 5;
/// Weak callbacks (`gc::finalize`, `Weak::with_callback`) may be
/// registered for the object in the thread's side table (see `finalize`).
pub(crate) const WEAK_CALLBACKS: usize = 1 << 6;
/// The flag bits.
pub(crate) const FLAG_MASK: usize = (1 << SHIFT) - 1;

/// Per-type operations the type-erased collector needs.
///
/// There is one per sized type ([`Lay::VTABLE`]) and one per slice type
/// ([`SliceLay::VTABLE`]); a trait object's allocation carries the one of
/// its concrete type, so the collector never needs a wide pointer.
pub(crate) struct VTable {
    /// `Trace::trace` of the value.
    pub(crate) trace: unsafe fn(ObjPtr, &mut Tracer),
    /// Drops the value in place (does not touch counts or memory).
    pub(crate) drop_value: unsafe fn(ObjPtr),
    /// Frees the allocation.
    pub(crate) dealloc: unsafe fn(ObjPtr),
    /// `core::any::type_name::<T>()` (for the census and debug output).
    pub(crate) type_name: fn() -> &'static str,
    /// Bytes of the whole allocation; for a slice type, of an empty one
    /// (the elements are not counted).
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
        // the Counts (see `allocate`), and the caller guarantees the
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

    /// The upper bits: list index, or gc_refs during a collection.
    #[inline(always)]
    pub(crate) fn word(&self) -> usize {
        self.gc.get() >> SHIFT
    }

    #[inline(always)]
    pub(crate) fn set_word(&self, w: usize) {
        self.gc.set((w << SHIFT) | self.flags())
    }
}

/// What the header of a tracked allocation holds besides the gc word: the
/// vtable, and for a slice its length. A value's
/// [`GcLayout`](super::trace::GcLayout) hands it to the allocator.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct HeaderSpec {
    pub(crate) vtable: &'static VTable,
    pub(crate) slice_len: Option<usize>,
}

impl HeaderSpec {
    /// Bytes before the `Counts`: the header, and the slice length.
    #[inline(always)]
    pub(crate) fn prefix(self) -> usize {
        size_of::<GcHeader>()
            + match self.slice_len {
                Some(_) => size_of::<usize>(),
                None => 0,
            }
    }
}

/// Where the parts of one allocation are: its `Counts` `offset` bytes from
/// the start, and its size and alignment. The only place allocation sizes
/// are computed, so allocating and freeing always agree.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) offset: usize,
    pub(crate) size: usize,
    pub(crate) align: usize,
}

/// `n` rounded up to a multiple of `align` (a power of two).
#[inline(always)]
const fn round_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// Offset of the value in a `GcBox` (`repr(C)`: the counts, then the value
/// at the next multiple of its alignment).
#[inline(always)]
pub(crate) const fn value_offset(value_align: usize) -> usize {
    round_up(size_of::<Counts>(), value_align)
}

impl Placement {
    /// The placement of a `GcBox` whose value has `value_size` bytes and
    /// alignment `value_align`, preceded by `prefix` bytes of header (0 for
    /// an untracked allocation). `GcBox` is `repr(C)`: the value follows
    /// the counts at the next multiple of its alignment, and the box is
    /// padded to its own alignment, as `Layout::extend` computes.
    ///
    /// `value_size` is at most `isize::MAX` (it comes from a `Layout`), so
    /// the sums cannot overflow; [`layout`](Self::layout) checks the total.
    #[inline(always)]
    pub(crate) const fn new(value_size: usize, value_align: usize, prefix: usize) -> Placement {
        let align = if value_align > align_of::<Counts>() {
            value_align
        } else {
            align_of::<Counts>()
        };
        let box_size = round_up(value_offset(value_align) + value_size, align);
        let offset = round_up(prefix, align);
        Placement {
            offset,
            size: offset + box_size,
            align,
        }
    }

    #[inline(always)]
    pub(crate) fn layout(self) -> Layout {
        match Layout::from_size_align(self.size, self.align) {
            Ok(l) => l,
            Err(_) => capacity_overflow(),
        }
    }
}

/// Allocates memory for an object whose value has layout `value`: writes
/// the counts and, if `header` is given (a tracked object), the header
/// with gc word `gc` (and the slice length). The value is left
/// uninitialised. Returns the pointer to the counts, carrying the
/// provenance of the whole allocation.
///
/// For a sized value every argument but the counts is a constant, and so
/// is the whole computation (the generated code is a call to `alloc` and
/// the stores).
#[inline(always)]
pub(crate) fn allocate(
    value: Layout,
    header: Option<HeaderSpec>,
    strong: usize,
    weak: usize,
    gc: usize,
) -> NonNull<Counts> {
    let prefix = match header {
        Some(h) => h.prefix(),
        None => 0,
    };
    let pl = Placement::new(value.size(), value.align(), prefix);
    let layout = pl.layout();
    // SAFETY: the layout has non-zero size (it holds the counts).
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `pl.offset + size_of::<GcBox<..>>() == layout.size()` and
    // `pl.offset >= prefix` (Placement::new), so the counts, the header
    // right before them and the slice length before that are in bounds;
    // `pl.offset` is a multiple of the box's alignment (>= 8), so every
    // word written is aligned.
    unsafe {
        let counts = base.add(pl.offset).cast::<Counts>();
        if let Some(h) = header {
            let hp = counts
                .cast::<u8>()
                .sub(size_of::<GcHeader>())
                .cast::<GcHeader>();
            ptr::write(
                hp,
                GcHeader {
                    vtable: h.vtable,
                    gc: Cell::new(gc),
                },
            );
            if let Some(len) = h.slice_len {
                ptr::write(hp.cast::<usize>().sub(1), len);
            }
        }
        ptr::write(
            counts,
            Counts {
                strong: Cell::new(strong),
                weak: Cell::new(weak),
            },
        );
        NonNull::new_unchecked(counts)
    }
}

/// Frees the memory of an object allocated by [`allocate`].
///
/// # Safety
/// `obj` came from [`allocate`] with a header of `prefix` bytes (0 if
/// none) for a value of `value_size` bytes aligned to `value_align`, the
/// value is dropped or was never written, and no handle will touch it
/// again.
#[inline(always)]
pub(crate) unsafe fn free(obj: ObjPtr, value_size: usize, value_align: usize, prefix: usize) {
    let pl = Placement::new(value_size, value_align, prefix);
    // SAFETY: undoes the offset applied by `allocate`, with the same
    // layout; `obj` carries the allocation's provenance.
    unsafe { dealloc(obj.cast::<u8>().cast_mut().sub(pl.offset), pl.layout()) }
}

/// Layout facts and the vtable of a sized `T`.
pub(crate) struct Lay<T>(std::marker::PhantomData<T>);

impl<T: Trace> Lay<T> {
    /// The allocation of a tracked `T`.
    pub(crate) const TRACKED: Placement =
        Placement::new(size_of::<T>(), align_of::<T>(), size_of::<GcHeader>());

    /// The layout of the whole allocation of a `T`, tracked or not.
    #[cfg(test)]
    pub(crate) fn layout() -> Layout {
        if T::may_contain_gc() {
            Self::TRACKED.layout()
        } else {
            Placement::new(size_of::<T>(), align_of::<T>(), 0).layout()
        }
    }

    pub(crate) const VTABLE: &'static VTable = &VTable {
        trace: trace_erased::<T>,
        drop_value: drop_value_erased::<T>,
        dealloc: dealloc_erased::<T>,
        type_name: std::any::type_name::<T>,
        size: Self::TRACKED.size,
        finalize: None,
    };

    /// The header of a tracked `T`.
    pub(crate) const HEADER: HeaderSpec = HeaderSpec {
        vtable: Self::VTABLE,
        slice_len: None,
    };
}

#[cold]
fn capacity_overflow() -> ! {
    panic!("pymem: Gc allocation size overflows isize")
}

unsafe fn trace_erased<T: Trace>(obj: ObjPtr, tracer: &mut Tracer) {
    // SAFETY: the collector only passes live tracked objects of this
    // vtable's type whose value has not been dropped.
    let v = unsafe { &(*obj.cast::<GcBox<T>>()).value };
    v.trace(tracer)
}

unsafe fn drop_value_erased<T: Trace>(obj: ObjPtr) {
    // SAFETY: the caller (collector or trashcan) drops each value at most
    // once, marking it DROPPED first.
    unsafe {
        ptr::drop_in_place(ptr::addr_of_mut!(
            (*obj.cast::<GcBox<T>>().cast_mut()).value
        ))
    }
}

unsafe fn dealloc_erased<T: Trace>(obj: ObjPtr) {
    // SAFETY: the caller frees only when strong == weak == 0, once; the
    // object was allocated for this T with a header (vtable per T).
    unsafe { free(obj, size_of::<T>(), align_of::<T>(), size_of::<GcHeader>()) }
}

/// Layout facts and the vtable of a tracked slice `[T]`, whose element
/// count is stored before its header.
pub(crate) struct SliceLay<T>(std::marker::PhantomData<T>);

impl<T: Trace> SliceLay<T> {
    /// The header of a tracked slice of `len` elements.
    #[inline(always)]
    pub(crate) fn header(len: usize) -> HeaderSpec {
        HeaderSpec {
            vtable: Self::VTABLE,
            slice_len: Some(len),
        }
    }

    pub(crate) const VTABLE: &'static VTable = &VTable {
        trace: trace_slice::<T>,
        drop_value: drop_slice::<T>,
        dealloc: dealloc_slice::<T>,
        type_name: std::any::type_name::<[T]>,
        size: Placement::new(
            0,
            align_of::<T>(),
            size_of::<GcHeader>() + size_of::<usize>(),
        )
        .size,
        finalize: None,
    };

    /// The element count of the slice object at `obj`.
    ///
    /// # Safety
    /// `obj` is a live tracked `[T]` allocation made with this vtable.
    #[inline(always)]
    unsafe fn len(obj: ObjPtr) -> usize {
        // SAFETY: `allocate` wrote the length right before the header of
        // a slice allocation (HeaderSpec::slice_len).
        unsafe {
            *obj.cast::<u8>()
                .sub(size_of::<GcHeader>() + size_of::<usize>())
                .cast::<usize>()
        }
    }

    /// The wide pointer to the slice object at `obj`.
    ///
    /// # Safety
    /// As [`len`](Self::len).
    #[inline(always)]
    unsafe fn boxp(obj: ObjPtr) -> *mut GcBox<[T]> {
        // SAFETY: forwarded contract.
        let len = unsafe { Self::len(obj) };
        // A wide pointer whose address is the box and whose metadata is
        // the element count: `GcBox<[T]>`'s metadata is its tail's.
        ptr::slice_from_raw_parts_mut(obj.cast::<T>().cast_mut(), len) as *mut GcBox<[T]>
    }
}

unsafe fn trace_slice<T: Trace>(obj: ObjPtr, tracer: &mut Tracer) {
    // SAFETY: as `trace_erased`; the vtable is this slice type's.
    unsafe { (*SliceLay::<T>::boxp(obj)).value.trace(tracer) }
}

unsafe fn drop_slice<T: Trace>(obj: ObjPtr) {
    // SAFETY: as `drop_value_erased`.
    unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*SliceLay::<T>::boxp(obj)).value)) }
}

unsafe fn dealloc_slice<T: Trace>(obj: ObjPtr) {
    // SAFETY: as `dealloc_erased`; the length read back is the one the
    // allocation was sized for.
    unsafe {
        let len = SliceLay::<T>::len(obj);
        free(
            obj,
            size_of::<T>() * len,
            align_of::<T>(),
            size_of::<GcHeader>() + size_of::<usize>(),
        )
    }
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
