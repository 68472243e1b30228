//! Object headers: the words before the value of every `Gc` allocation,
//! the per-type vtable, and allocation/deallocation.
//!
//! ```text
//!  untracked (the value can hold no Gc), 16 bytes like Rc, any T:
//!         ┌────────────────────────────┬──────────────┬───────────┐
//!         │ weak word                  │ strong usize │ value: T  │
//!         │ weak<<32 | NO_HEADER       │              │           │
//!         └────────────────────────────┴──────────────┴───────────┘
//!  tracked, 24 bytes (sized values, and trait objects: the concrete type's):
//!         ┌────────────────────────────┬────────────────────┬──────────────┬───────────┐
//!         │ weak word                  │ gc word            │ strong usize │ value: T  │
//!         │ weak<<32 | vtable code     │ index<<SHIFT|flags │              │           │
//!         └────────────────────────────┴────────────────────┴──────────────┴───────────┘
//!          -16                          -8                   ▲ obj          ▲ Gc points here
//!  tracked slice [T], 32 bytes: the element count precedes the header,
//!  so that the type-erased vtable can rebuild the wide pointer.
//!  vtable code = the per-type vtable's address minus that of a static of
//!          this crate, as an i32 (`vt_code`; a vtable farther away is
//!          copied into a static table of this crate); on targets whose
//!          pointers are not 64 bits wide the vtable is a word of its own
//!          before the weak word (32 bytes) and the weak count is
//!          `weak << SHIFT`.
//!  gc word = index in the generation list << SHIFT (9)
//!          | flags (bits 0-7: CLEAN UNTRACKED DEAD DROPPED FINALIZER_RAN
//!                   FINALIZER_PENDING WEAK_CALLBACKS LENT_MUT;
//!                   bit 8, NO_HEADER, is never set in a gc word)
//! ```
//!
//! A `Gc` points at its value, as `Rc::into_raw` does, for every `T`. The
//! strong count is the word right before the value and the *flags word*
//! the one before it, in both layouts: the gc word of a tracked object,
//! the weak word of an untracked one.
//!
//! Invariant of an untracked object's flags word: its flag bits are
//! exactly `NO_HEADER`, from `allocate` on (nothing sets or clears a flag
//! in it; the weak count lives above `WEAK_SHIFT`). So the tests the handle's
//! hot paths make on the flags word need not know the kind of
//! allocation: `drop` leaving other handles tests `CLEAN | LENT_MUT`
//! (clear: it never asks the collector to mark an untracked object),
//! `deref`/`try_deref` test `DROPPED | LENT_MUT` and
//! `get_mut`/`try_unwrap`/`Weak::upgrade` `DROPPED | DEAD` (all clear);
//! and the last `drop` of an untracked object without `Weak`s finds the
//! word equal to `NO_HEADER | WEAK_ONE` (one compare), so it frees the
//! allocation without writing the word back. For tracked objects these
//! are the tests they were before unsized values existed. Handles of a
//! sized type that is never tracked (see [`statically_untracked`]) skip
//! the tests of `drop` and `trace`, and of `deref` when the value has no
//! drop glue; other handles to untracked objects pay one load and test
//! in `deref` and in a `drop` that leaves other handles. The collector
//! never takes an untracked object's flags word for a gc word (its
//! index, `CLEAN` or `LENT_MUT`). It reaches objects through its list
//! (tracked ones only: `track_new` asks `NO_HEADER` first),
//! `dirty_slots` (set by `note_dirty`, called for tracked objects only,
//! as above) and edges: `Tracer::visit` reads the flags word of every
//! target and returns at once when it says `NO_HEADER` (one mask with
//! the rare gc-word flags, so tracked edges pay nothing for it), without
//! writing it.
//!
//! Whether an allocation is tracked is decided once, when it is made: the
//! value's [`GcLayout`](super::trace::GcLayout) answer, which for a sized
//! type is its `Trace::may_contain_gc()` (a constant: `Gc::new` writes
//! constant words) and for a trait object that of the concrete type
//! behind it. Code generic over unsized types cannot ask a sized type for
//! a constant, and must not ask the value (while it is dropped in place it
//! is mutably borrowed, and handles to it are still dropped and
//! dereferenced), hence the flag in memory.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};

use super::trace::Trace;
use super::tracer::{Mode, Tracer};
#[cfg(target_pointer_width = "64")]
use super::vt_code::VtCode;

/// The strong count of an allocation, the word right before the value:
/// what the collector's type-erased object pointer ([`ObjPtr`]) points at.
#[repr(C)]
pub(crate) struct Counts {
    pub(crate) strong: Cell<usize>,
}

/// The collector's words, immediately before the [`Counts`] of a tracked
/// allocation: 16 bytes on 64-bit targets (the vtable is a 32-bit code in
/// the weak word, see [`VtCode`]), so that a tracked header is 24 bytes
/// with the strong count; on other targets the vtable is a word of its own.
#[repr(C)]
pub(crate) struct GcHeader {
    #[cfg(not(target_pointer_width = "64"))]
    vt: Cell<&'static VTable>,
    /// The weak count (the `Weak`s, plus one while strong handles exist)
    /// `<< WEAK_SHIFT`; on 64-bit targets the low 32 bits hold the
    /// vtable's code ([`VtCode`]), which no weak-count operation changes
    /// (they add or subtract multiples of `WEAK_ONE`).
    pub(crate) weak: Cell<usize>,
    /// `index in the generation list << SHIFT | flags`: the flags word of
    /// a tracked object.
    pub(crate) gc: Cell<usize>,
}

/// A type-erased pointer to the [`Counts`] of an object (8 bytes before
/// its value).
pub(crate) type ObjPtr = *const Counts;

/// Bits of the low bits of the gc word (and of an untracked object's weak
/// word).
pub(crate) const SHIFT: u32 = 9;
/// The object is *clean*: its strong count has not been decremented to a
/// non-zero value since the last full collection that examined it (or
/// since it was tracked); an object without the flag is *dirty* (the skip
/// rule and the seeds of full collections, see `collector`). `Gc::drop`
/// clears it on such a decrement (`State::note_dirty`). Stored as the
/// complement of "dirty" so that `drop` tests one mask, `CLEAN |
/// LENT_MUT`, for both reasons to call the collector; never set in an
/// untracked object's flags word, so that `drop` never reports one.
pub(crate) const CLEAN: usize = 1 << 0;
/// Not in the generation list (the index is stale): being freed, garbage
/// being reclaimed, resurrected after its value was dropped, not listed
/// yet (from `allocate` until `track_new`; under construction in
/// `new_cyclic`), or created after the thread's collector was torn down
/// (or while a collection could not grow the list).
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
/// The allocation has no collector header (it is untracked): the flags
/// word is its weak word. Never set in a gc word.
pub(crate) const NO_HEADER: usize = 1 << 8;
/// The flag bits.
pub(crate) const FLAG_MASK: usize = (1 << SHIFT) - 1;
/// Where the weak count starts in a weak word: above the flags of an
/// untracked object's word, and on 64-bit targets above the 32-bit
/// vtable code of a tracked one's (so at most `u32::MAX` weak references
/// per object; one more aborts, as `Rc` does at `usize::MAX`).
#[cfg(target_pointer_width = "64")]
pub(crate) const WEAK_SHIFT: u32 = 32;
/// On 64-bit targets, which `u32` half of a weak word (in memory order)
/// holds the weak count: the high half (`WEAK_SHIFT` is 32), whose place
/// depends on the endianness. `GcHeader::write_new` stores it and
/// `dec_weak_is_last` reads it by this one index.
#[cfg(target_pointer_width = "64")]
const WEAK_HALF: usize = if cfg!(target_endian = "little") { 1 } else { 0 };
#[cfg(not(target_pointer_width = "64"))]
pub(crate) const WEAK_SHIFT: u32 = SHIFT;
/// One weak reference, in a weak word.
pub(crate) const WEAK_ONE: usize = 1 << WEAK_SHIFT;

/// Per-type operations the type-erased collector needs.
///
/// There is one per sized type ([`Lay::VTABLE`]) and one per slice type
/// ([`SliceLay::VTABLE`]); a trait object's allocation carries the one of
/// its concrete type, so the collector never needs a wide pointer.
pub(crate) struct VTable {
    /// `Trace::trace` of the value, one entry per collector mode (indexed
    /// by `tracer.mode as usize`, see `Tracer::trace_in`).
    pub(crate) trace: [unsafe fn(ObjPtr, &mut Tracer); 4],
    /// Drops the value in place (does not touch counts or memory).
    pub(crate) drop_value: unsafe fn(ObjPtr),
    /// Frees the allocation.
    pub(crate) dealloc: unsafe fn(ObjPtr),
    /// `core::any::type_name::<T>()` (for the census and debug output).
    pub(crate) type_name: fn() -> &'static str,
    /// Bytes of the whole allocation of the live object at the pointer
    /// (header, value and, for a slice, its elements).
    pub(crate) size: unsafe fn(ObjPtr) -> usize,
    /// The PEP 442 finalizer (`gc::Finalize`), if the object was created
    /// with one (`Gc::new_with_finalizer` uses a second vtable).
    pub(crate) finalize: Option<unsafe fn(ObjPtr)>,
}

impl GcHeader {
    /// Initialises the header at `hp` with this vtable, `weak` weak
    /// references and gc word `gc` (left unwritten if `None`). On 64-bit
    /// targets the weak word is written as its two 32-bit halves, the
    /// code and the count: merging them into one word cost
    /// three instructions per `Gc::new` (a zero-extension, a 64-bit
    /// constant and an or), two stores cost one (issue 9, fifth round).
    ///
    /// # Safety
    /// `hp` is valid for writes of a `GcHeader`, aligned, and nothing
    /// else refers to that memory.
    #[inline(always)]
    pub(crate) unsafe fn write_new(
        hp: *mut GcHeader,
        vtable: &'static VTable,
        weak: usize,
        gc: Option<usize>,
    ) {
        #[cfg(target_pointer_width = "64")]
        {
            let code = VtCode::of(vtable).bits() as u32;
            // The high half is the count (`WEAK_SHIFT` is 32 here).
            let count = u32::try_from(weak).unwrap_or_else(|_| capacity_overflow());
            let (low, high) = (1 - WEAK_HALF, WEAK_HALF);
            // SAFETY: `hp` is valid for writes, aligned to 8 and unshared
            // (this function's `# Safety`); the weak word is a
            // `Cell<usize>` (no padding, no invariant beyond its bits),
            // and its low half in memory
            // order holds the low 32 bits on this endianness, so the two
            // halves make the word `weak << WEAK_SHIFT | code`.
            unsafe {
                let w = (&raw mut (*hp).weak).cast::<u32>();
                w.add(low).write(code);
                w.add(high).write(count);
                if let Some(gc) = gc {
                    (&raw mut (*hp).gc).write(Cell::new(gc));
                }
            }
        }
        #[cfg(not(target_pointer_width = "64"))]
        {
            // SAFETY: `hp` is valid for writes, aligned and unshared (this
            // function's `# Safety`).
            unsafe {
                (&raw mut (*hp).vt).write(Cell::new(vtable));
                (&raw mut (*hp).weak).write(Cell::new(weak * WEAK_ONE));
                if let Some(gc) = gc {
                    (&raw mut (*hp).gc).write(Cell::new(gc));
                }
            }
        }
    }

    /// The object's vtable.
    #[inline(always)]
    pub(crate) fn vtable(&self) -> &'static VTable {
        #[cfg(target_pointer_width = "64")]
        {
            VtCode::from_bits(self.weak.get()).vtable()
        }
        #[cfg(not(target_pointer_width = "64"))]
        {
            self.vt.get()
        }
    }

    /// Replaces the object's vtable (`Gc::new_with_finalizer`).
    #[inline]
    pub(crate) fn set_vtable(&self, vtable: &'static VTable) {
        #[cfg(target_pointer_width = "64")]
        {
            let w = self.weak.get();
            self.weak
                .set((w & !(WEAK_ONE - 1)) | VtCode::of(vtable).bits());
        }
        #[cfg(not(target_pointer_width = "64"))]
        {
            self.vt.set(vtable)
        }
    }

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

/// The flags word of any object: the word before its strong count (see
/// the module docs).
///
/// # Safety
/// `obj` points at the `Counts` of a live allocation, with its provenance.
#[inline(always)]
pub(crate) unsafe fn flags_word<'a>(obj: ObjPtr) -> &'a Cell<usize> {
    // SAFETY: both layouts have a word there (`allocate`); live per the
    // contract.
    unsafe { &*obj.cast::<Cell<usize>>().sub(1) }
}

/// The low byte of the flags word of any object (flags 0-7: `CLEAN` to
/// `LENT_MUT`). `Gc::drop` tests it when other handles remain: a load of
/// its own, which the compiler does not merge with (and hoist as) the
/// word the last drop reads, so the common path stays one test of memory.
///
/// # Safety
/// As [`flags_word`].
#[inline(always)]
pub(crate) unsafe fn low_flags(obj: ObjPtr) -> u8 {
    const LOW: usize = if cfg!(target_endian = "little") {
        0
    } else {
        size_of::<usize>() - 1
    };
    // SAFETY: a byte of the flags word (`flags_word`'s contract); only
    // read, never through a reference that outlives this call.
    unsafe { *flags_word(obj).as_ptr().cast::<u8>().add(LOW) }
}

/// The word holding the weak count of an object whose flags word is
/// `flags`: the flags word itself if it says `NO_HEADER`, the header's
/// otherwise.
///
/// # Safety
/// As [`flags_word`].
#[inline(always)]
pub(crate) unsafe fn weak_word<'a>(obj: ObjPtr, flags: usize) -> &'a Cell<usize> {
    if flags & NO_HEADER != 0 {
        // SAFETY: `obj` is a live object (this function's `# Safety`, that
        // of `flags_word`), so its flags word may be borrowed.
        unsafe { flags_word(obj) }
    } else {
        // SAFETY: `obj` is live (this function's `# Safety`) and its flags
        // lack `NO_HEADER`, so it is tracked and has a header.
        unsafe { &GcHeader::of(obj).weak }
    }
}

/// The weak count in a weak word.
#[inline(always)]
pub(crate) fn weak_count(word: usize) -> usize {
    word >> WEAK_SHIFT
}

/// Adds a weak reference to a weak word; aborts on overflow, as `Rc` does.
#[inline(always)]
pub(crate) fn inc_weak(w: &Cell<usize>) {
    let n = w.get().wrapping_add(WEAK_ONE);
    w.set(n);
    if n < WEAK_ONE {
        std::process::abort();
    }
}

/// Removes a weak reference from a weak word; returns whether it was the
/// last one, in which case the word is left as it was (the caller frees
/// the allocation: one compare with memory, no store).
///
/// On 64-bit targets the count is the word's high half (`WEAK_SHIFT` is
/// 32), which is read and written alone: the test is one compare of
/// memory with an immediate (the whole word's needs a shift first), and
/// the load of the last free is forwarded from the one store of that
/// half that `GcHeader::write_new` makes for a fresh object (a load of
/// the whole word cannot be forwarded from the two half stores, and
/// waits for them to reach the cache: issue 9, eleventh round).
#[inline(always)]
pub(crate) fn dec_weak_is_last(w: &Cell<usize>) -> bool {
    #[cfg(target_pointer_width = "64")]
    {
        // SAFETY: the word is a live, aligned `Cell<usize>` of this thread
        // (the `&Cell` proves it), so its two halves are valid, aligned
        // `u32`s; no reference to its contents exists (only to the
        // `Cell`), and the access ends before this function returns.
        unsafe {
            let high = w.as_ptr().cast::<u32>().add(WEAK_HALF);
            let count = high.read();
            // A count of one: the last weak reference.
            if count < 2 {
                return true;
            }
            high.write(count - 1);
        }
        false
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        let n = w.get();
        // The flags are below WEAK_ONE: a count of one is a word below
        // two.
        if n < 2 * WEAK_ONE {
            return true;
        }
        w.set(n - WEAK_ONE);
        false
    }
}

/// Adds a strong handle; aborts on overflow, as `Rc` does.
#[inline(always)]
pub(crate) fn inc_strong(c: &Counts) {
    let s = c.strong.get().wrapping_add(1);
    c.strong.set(s);
    if s == 0 {
        std::process::abort();
    }
}

/// Whether `T` is a sized type that is never tracked: for a sized `T`
/// the constant `!T::may_contain_gc()` (through [`GcLayout`]'s blanket
/// impl, which does not read the value), which code generic over `T:
/// ?Sized` cannot name directly; `false` for unsized types (`str`,
/// slices, trait objects), whose answer is per allocation, in its flags
/// word. So a `Gc<u64>` handle compiles to what an `Rc<u64>` handle
/// does, and a `Gc<dyn Trait>` handle tests its flags word.
///
/// The handle's hot paths use it only where trusting it cannot break
/// memory safety even if a hand-written `may_contain_gc` answers
/// differently on different calls (rule 4 of `Trace`'s safety section,
/// whose allocation may then be tracked after all): skipping the
/// collector's mark in `drop` (the skip rule may then miss that object's
/// cycles: a leak; a stale `LENT_MUT` stays set: conservative) and the
/// edge in `trace` (a missed edge: a leak), and the `DROPPED | LENT_MUT`
/// test of `deref` only for values without drop glue (whose bytes
/// `drop_in_place` leaves as they were, in memory that stays allocated
/// while a handle exists). The last `drop` still reads the flags word:
/// it decides how the memory is freed.
///
/// [`GcLayout`]: super::trace::GcLayout
#[inline(always)]
pub(crate) fn statically_untracked<T: ?Sized + Trace>(value: NonNull<T>) -> bool {
    size_of::<*const T>() == size_of::<ObjPtr>()
        // SAFETY: `value` points at the value of a live allocation (the
        // callers hold a handle). The value may have been dropped by the
        // collector: the reference only carries the address (a
        // reference's validity does not depend on the memory it points
        // to, t-opsem's decision in rust-lang/unsafe-code-guidelines#414),
        // and for a sized `T` `__gc_header` does not read it.
        && unsafe { value.as_ref() }.__gc_header().is_none()
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

/// Bytes before the value of an untracked allocation: the weak word and
/// the strong count.
pub(crate) const UNTRACKED_PREFIX: usize = 2 * size_of::<usize>();
/// Bytes before the value of a tracked sized allocation.
pub(crate) const TRACKED_PREFIX: usize = size_of::<GcHeader>() + size_of::<Counts>();

impl HeaderSpec {
    /// Bytes before the value: the header, the count, and a slice's
    /// length.
    #[inline(always)]
    pub(crate) fn prefix(self) -> usize {
        TRACKED_PREFIX
            + match self.slice_len {
                Some(_) => size_of::<usize>(),
                None => 0,
            }
    }
}

/// The bytes before the value of an allocation with this header (`None`:
/// untracked).
#[inline(always)]
pub(crate) fn prefix(header: Option<HeaderSpec>) -> usize {
    match header {
        Some(h) => h.prefix(),
        None => UNTRACKED_PREFIX,
    }
}

/// Where the parts of one allocation are: its value `offset` bytes from
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

impl Placement {
    /// The placement of an allocation whose value has `value_size` bytes
    /// and alignment `value_align`, preceded by `prefix` bytes of counts
    /// and header: the value at the first multiple of its alignment past
    /// them, the whole padded to that alignment (as `Rc` pads its box).
    ///
    /// `value_size` is at most `isize::MAX` (it comes from a `Layout`), so
    /// the sums cannot overflow; [`layout`](Self::layout) checks the total.
    #[inline(always)]
    pub(crate) const fn new(value_size: usize, value_align: usize, prefix: usize) -> Placement {
        let align = if value_align > align_of::<usize>() {
            value_align
        } else {
            align_of::<usize>()
        };
        let offset = round_up(prefix, align);
        Placement {
            offset,
            size: round_up(offset + value_size, align),
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
/// (and the slice length) with the gc word `UNTRACKED`, until `track_new`
/// lists it (so that a handle dropped before, as a panic unwinds, finds
/// no list index to remove); an untracked object's flags word gets
/// `NO_HEADER`. The value is left uninitialised.
/// Returns the pointer to where the value goes, carrying the provenance
/// of the whole allocation.
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
) -> NonNull<u8> {
    allocate_with(value, header, strong, weak, Some(UNTRACKED))
}

/// [`allocate`] for `Gc::new`, which writes a tracked object's gc word
/// itself (`State::track_fresh`: the list index, or `UNTRACKED` before
/// its slow path can collect), so that the word is stored once: `gc` is
/// the word to write, or `None` to leave it unwritten. Nothing may read
/// an unwritten gc word.
#[inline(always)]
pub(crate) fn allocate_with(
    value: Layout,
    header: Option<HeaderSpec>,
    strong: usize,
    weak: usize,
    gc: Option<usize>,
) -> NonNull<u8> {
    let pl = Placement::new(value.size(), value.align(), prefix(header));
    let layout = pl.layout();
    // SAFETY: the layout has non-zero size (it holds the counts).
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `pl.offset >= prefix(header)`, so every word written below
    // (the prefix's, counted back from the value) is in bounds; the offset
    // is a multiple of 8, so each word is aligned.
    unsafe {
        let value = base.add(pl.offset);
        let counts = value.cast::<Counts>().sub(1);
        ptr::write(
            counts,
            Counts {
                strong: Cell::new(strong),
            },
        );
        match header {
            Some(h) => {
                let hp = counts.cast::<GcHeader>().sub(1);
                GcHeader::write_new(hp, h.vtable, weak, gc);
                if let Some(len) = h.slice_len {
                    ptr::write(hp.cast::<usize>().sub(1), len);
                }
            }
            None => ptr::write(counts.cast::<usize>().sub(1), (weak * WEAK_ONE) | NO_HEADER),
        }
        NonNull::new_unchecked(value)
    }
}

/// Frees the memory of an object allocated by [`allocate`].
///
/// # Safety
/// `obj` came from [`allocate`] with a prefix of `prefix` bytes for a
/// value of `value_size` bytes aligned to `value_align`, the value is
/// dropped or was never written, and no handle will touch it again.
#[inline(always)]
pub(crate) unsafe fn free(obj: ObjPtr, value_size: usize, value_align: usize, prefix: usize) {
    let pl = Placement::new(value_size, value_align, prefix);
    // SAFETY: undoes the offset applied by `allocate` (the value is one
    // word past the counts), with the same layout; `obj` carries the
    // allocation's provenance.
    unsafe {
        let base = obj
            .cast::<u8>()
            .cast_mut()
            .add(size_of::<Counts>())
            .sub(pl.offset);
        dealloc(base, pl.layout())
    }
}

/// The value of the sized object at `obj`.
///
/// # Safety
/// `obj` points at the `Counts` of an allocation made for a `T`, with its
/// provenance.
#[inline(always)]
pub(crate) unsafe fn value_of<T>(obj: ObjPtr) -> NonNull<T> {
    // SAFETY: the value is one word past the counts (`allocate`).
    unsafe { NonNull::new_unchecked(obj.add(1).cast::<T>().cast_mut()) }
}

/// The counts of the object whose value is at `value` (any `T`).
#[inline(always)]
pub(crate) fn counts_of<T: ?Sized>(value: NonNull<T>) -> ObjPtr {
    // The counts are the word before the value (`allocate`); wrapping
    // arithmetic keeps the provenance and needs no proof of bounds here
    // (callers dereference it only for live allocations).
    value.as_ptr().cast::<Counts>().wrapping_sub(1)
}

/// Layout facts and the vtable of a sized `T`.
pub(crate) struct Lay<T>(std::marker::PhantomData<T>);

impl<T: Trace> Lay<T> {
    /// The allocation of a tracked `T`.
    pub(crate) const TRACKED: Placement =
        Placement::new(size_of::<T>(), align_of::<T>(), TRACKED_PREFIX);

    /// The layout of the whole allocation of a `T`, tracked or not.
    #[cfg(test)]
    pub(crate) fn layout() -> Layout {
        if T::may_contain_gc() {
            Self::TRACKED.layout()
        } else {
            Placement::new(size_of::<T>(), align_of::<T>(), UNTRACKED_PREFIX).layout()
        }
    }

    pub(crate) const VTABLE: &'static VTable = &VTable {
        trace: [
            trace_erased::<T, 0>,
            trace_erased::<T, 1>,
            trace_erased::<T, 2>,
            trace_erased::<T, 3>,
        ],
        drop_value: drop_value_erased::<T>,
        dealloc: dealloc_erased::<T>,
        type_name: std::any::type_name::<T>,
        size: size_erased::<T>,
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

unsafe fn trace_erased<T: Trace, const M: u8>(obj: ObjPtr, tracer: &mut Tracer) {
    if M == Mode::Count as u8 {
        // SAFETY: the collector only passes live tracked objects of this
        // vtable's type whose value has not been dropped, not lent out,
        // at `current`, with a run's slots as `count_run` needs them. A
        // run member has this vtable, whose Count entry is this very
        // function: reading it as a `T` is what the collector's call
        // through that entry would do (vtables are per type, and if the
        // compiler ever merged two types' identical vtables, their objects
        // were already traced through this one code).
        unsafe { tracer.count_run(obj, |p| value_of::<T>(p).as_ref()) }
    } else {
        // SAFETY: the collector only passes live tracked objects of this
        // vtable's type whose value has not been dropped.
        tracer.trace_in::<T, M>(unsafe { value_of::<T>(obj).as_ref() })
    }
}

unsafe fn drop_value_erased<T: Trace>(obj: ObjPtr) {
    // SAFETY: the caller (collector or trashcan) drops each value at most
    // once, marking it DROPPED first.
    unsafe { ptr::drop_in_place(value_of::<T>(obj).as_ptr()) }
}

/// The allocation size of a tracked `T` (the same for every object).
///
/// # Safety
/// None needed (it reads nothing); `unsafe` to share the vtable's type
/// with [`size_slice`].
unsafe fn size_erased<T: Trace>(_obj: ObjPtr) -> usize {
    Lay::<T>::TRACKED.size
}

/// The allocation size of the tracked slice object at `obj`.
///
/// # Safety
/// `obj` is a live tracked `[T]` allocation made with this vtable.
unsafe fn size_slice<T: Trace>(obj: ObjPtr) -> usize {
    // SAFETY: `obj` is a live tracked `[T]` object (this function's
    // `# Safety`), what `SliceLay::len` requires.
    let len = unsafe { SliceLay::<T>::len(obj) };
    Placement::new(size_of::<T>() * len, align_of::<T>(), SLICE_PREFIX).size
}

unsafe fn dealloc_erased<T: Trace>(obj: ObjPtr) {
    // SAFETY: the caller frees only when strong == weak == 0, once; the
    // object was allocated for this T with a header (vtable per T).
    unsafe { free(obj, size_of::<T>(), align_of::<T>(), TRACKED_PREFIX) }
}

/// Layout facts and the vtable of a tracked slice `[T]`, whose element
/// count is stored before its header.
pub(crate) struct SliceLay<T>(std::marker::PhantomData<T>);

/// Bytes before the elements of a tracked slice.
const SLICE_PREFIX: usize = TRACKED_PREFIX + size_of::<usize>();

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
        trace: [
            trace_slice::<T, 0>,
            trace_slice::<T, 1>,
            trace_slice::<T, 2>,
            trace_slice::<T, 3>,
        ],
        drop_value: drop_slice::<T>,
        dealloc: dealloc_slice::<T>,
        type_name: std::any::type_name::<[T]>,
        size: size_slice::<T>,
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
                .sub(SLICE_PREFIX - size_of::<Counts>())
                .cast::<usize>()
        }
    }

    /// The wide pointer to the elements of the slice object at `obj`.
    ///
    /// # Safety
    /// As [`len`](Self::len).
    #[inline(always)]
    unsafe fn elems(obj: ObjPtr) -> *mut [T] {
        // SAFETY: `obj` is a live tracked `[T]` allocation made with this
        // vtable (this function's `# Safety`), what `len` requires; the
        // elements start at the value's offset.
        unsafe { ptr::slice_from_raw_parts_mut(value_of::<T>(obj).as_ptr(), Self::len(obj)) }
    }
}

unsafe fn trace_slice<T: Trace, const M: u8>(obj: ObjPtr, tracer: &mut Tracer) {
    // SAFETY: as `trace_erased`; the vtable is this slice type's.
    tracer.trace_in::<[T], M>(unsafe { &*SliceLay::<T>::elems(obj) })
}

unsafe fn drop_slice<T: Trace>(obj: ObjPtr) {
    // SAFETY: as `drop_value_erased`.
    unsafe { ptr::drop_in_place(SliceLay::<T>::elems(obj)) }
}

unsafe fn dealloc_slice<T: Trace>(obj: ObjPtr) {
    // SAFETY: as `dealloc_erased`; the length read back is the one the
    // allocation was sized for.
    unsafe {
        let len = SliceLay::<T>::len(obj);
        free(obj, size_of::<T>() * len, align_of::<T>(), SLICE_PREFIX)
    }
}

/// Decrements the implicit weak reference held by the strong handles once
/// the last of them is gone, freeing the memory if no `Weak` remains.
///
/// # Safety
/// `obj` is a live tracked object with strong == 0 and its value dropped.
#[inline]
pub(crate) unsafe fn release_implicit_weak(obj: ObjPtr) {
    // SAFETY: `obj` is a live tracked object (this function's `# Safety`),
    // so its header exists and is live.
    let h = unsafe { GcHeader::of(obj) };
    if dec_weak_is_last(&h.weak) {
        // SAFETY: no strong and no weak handle remain; tracked, so the
        // header (and vtable) exists.
        unsafe { (h.vtable().dealloc)(obj) }
    }
}
