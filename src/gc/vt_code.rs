//! 32-bit codes for the collector's vtables, so that a tracked header on a
//! 64-bit target is 24 bytes (the code shares a word with the weak count)
//! instead of 32.
//!
//! Why it matters: a tracked `Gc` of a 16-byte value (a binary tree node of
//! two handles) asks malloc for 40 bytes instead of 48, which glibc serves
//! from a 48-byte chunk instead of a 64-byte one, as it does `Rc`'s 32
//! bytes (figures in docs/performance.md, issue 9, fourth round).
//!
//! A code is the address of a vtable minus the address of [`ANCHOR`], a
//! static of this crate, as an `i32`: decoding it is one sign-extending
//! load of the weak word's low half and one add. Every vtable is a promoted
//! constant of the binary or shared object that instantiated
//! `Gc::new::<T>`, and a binary is linked within 2 GiB of itself on the
//! usual code models, so the offset fits for every object of a program
//! linked as one binary. A vtable too far away (a type instantiated in a
//! shared object loaded elsewhere) is copied once into a slot of
//! [`FAR`], a static table of this crate (so within 2 GiB of the anchor),
//! and the code is the slot's offset: slower to encode (a lock and a hash
//! lookup per allocation), as fast to decode, and only ever taken in such
//! programs. A vtable is plain data (function pointers and sizes), so its
//! copy works as the original; nothing compares vtables by address for
//! identity (the census merges them by type name).
//!
//! Decoding rebuilds the pointer from an address: the provenance of the
//! vtable (or of its slot) is exposed when the code is made
//! ([`pointer::expose_provenance`]) and taken back with
//! [`ptr::with_exposed_provenance`], so the pointer is the vtable's, not
//! the anchor's. Miri accepts this with its default, permissive
//! provenance, and warns once about the integer-to-pointer cast (only
//! vtables and their copies are exposed, so other pointers keep their
//! exact provenance under Miri).

use std::collections::HashMap;
use std::ptr;
use std::sync::Mutex;

use super::header::VTable;

/// The fixed point offsets are taken from. Its contents are never read.
#[repr(align(8))]
struct Anchor(#[allow(dead_code)] u8);

static ANCHOR: Anchor = Anchor(0);

/// The address of [`ANCHOR`].
#[inline(always)]
fn anchor_addr() -> usize {
    (&raw const ANCHOR).addr()
}

/// A vtable's 32-bit code (see the module docs), in the low bits of a
/// `usize`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct VtCode(u32);

impl VtCode {
    /// The code of `vt`: its offset from the anchor when it fits, the
    /// offset of its copy in [`FAR`] otherwise.
    #[inline(always)]
    pub(crate) fn of(vt: &'static VTable) -> VtCode {
        // Exposed so that `vtable` can take the provenance back from the
        // address (the module docs).
        let addr = (vt as *const VTable).expose_provenance();
        let d = addr.wrapping_sub(anchor_addr()) as isize;
        match i32::try_from(d) {
            Ok(off) if !force_far() => VtCode(off as u32),
            _ => far::code_of(vt),
        }
    }

    /// The code held in the low 32 bits of `word`.
    #[inline(always)]
    pub(crate) fn from_bits(word: usize) -> VtCode {
        VtCode(word as u32)
    }

    /// The code, as the low bits of a word.
    #[inline(always)]
    pub(crate) fn bits(self) -> usize {
        self.0 as usize
    }

    /// The vtable this code stands for.
    ///
    /// The code must have been made by [`VtCode::of`] (headers hold only
    /// such codes: `GcHeader::new` and `set_vtable` write them, and the
    /// weak-count operations change only the bits above them).
    #[inline(always)]
    pub(crate) fn vtable(self) -> &'static VTable {
        let addr = anchor_addr().wrapping_add_signed(self.0 as i32 as isize);
        // SAFETY: `of` made the code from a `&'static VTable` at exactly
        // this address (the anchor plus the offset it computed), the
        // caller's or its copy in a `FAR` slot, which is initialised
        // before its code is handed out and never written again; `of`
        // exposed that pointer's provenance. So the pointer is valid for
        // reads forever, and nothing writes through it.
        unsafe { &*ptr::with_exposed_provenance::<VTable>(addr) }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: treat every vtable as too far for an offset, to exercise the
    /// copies in a binary where every offset fits.
    pub(crate) static FORCE_FAR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline(always)]
fn force_far() -> bool {
    #[cfg(test)]
    {
        FORCE_FAR.with(|f| f.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// Copies of the vtables too far from the anchor for an offset.
mod far {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;

    use super::*;

    /// Slots: up to 2^16 distinct far vtables (3 MiB of zero-initialised
    /// static memory, which the OS maps only where it is touched).
    const SLOTS: usize = 1 << 16;

    /// Slot `i` is initialised (once, under `INDEX`'s lock) before the
    /// code of its copy is handed out, and never written again.
    struct Slots([UnsafeCell<MaybeUninit<VTable>>; SLOTS]);

    // SAFETY: a slot is written once, under `INDEX`'s lock, before its
    // code exists; readers reach it only through a code, so every read
    // happens after that write (on the thread that made the code, or on
    // one that received the object the code is in through a
    // synchronising hand-over).
    unsafe impl Sync for Slots {}

    static FAR: Slots = Slots([const { UnsafeCell::new(MaybeUninit::uninit()) }; SLOTS]);

    /// The far vtables copied so far (by address) and their codes; also
    /// the lock that serialises copies.
    static INDEX: Mutex<Option<HashMap<usize, u32>>> = Mutex::new(None);

    /// The code of a copy of `vt`, made the first time.
    #[cold]
    #[inline(never)]
    pub(super) fn code_of(vt: &'static VTable) -> VtCode {
        let addr = (vt as *const VTable).addr();
        // A panic never happens while the lock is held (the map's
        // operations below only allocate, and an allocation failure
        // aborts), so poisoning cannot occur; take the guard either way.
        let mut guard = INDEX.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        if let Some(&c) = map.get(&addr) {
            return VtCode(c);
        }
        let i = map.len();
        if i >= SLOTS {
            // 2^16 distinct types from far shared objects: refuse rather
            // than hand out a wrong code.
            std::process::abort();
        }
        let slot = FAR.0[i].get();
        // SAFETY: slot `i` has never been handed out (`map.len()` grows
        // by one per slot, under the lock we hold), so nothing reads it;
        // `UnsafeCell` makes writing through the shared static allowed.
        unsafe {
            slot.write(MaybeUninit::new(VTable {
                trace: vt.trace,
                drop_value: vt.drop_value,
                dealloc: vt.dealloc,
                type_name: vt.type_name,
                size: vt.size,
                finalize: vt.finalize,
            }))
        };
        // Exposed for `vtable`, as in `of`.
        let d = slot.expose_provenance().wrapping_sub(anchor_addr()) as isize;
        let Ok(off) = i32::try_from(d) else {
            // A static of this crate more than 2 GiB from another one.
            std::process::abort();
        };
        let c = off as u32;
        map.insert(addr, c);
        VtCode(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::header::Lay;

    #[test]
    fn offset_codes_round_trip() {
        let vt = Lay::<std::cell::RefCell<Option<crate::Gc<u8>>>>::VTABLE;
        let c = VtCode::of(vt);
        assert!(
            ptr::eq(c.vtable(), vt),
            "a vtable of this binary is within 2 GiB"
        );
    }

    #[test]
    fn far_codes_round_trip() {
        FORCE_FAR.with(|f| f.set(true));
        let a = Lay::<std::cell::RefCell<Option<crate::Gc<u16>>>>::VTABLE;
        let b = Lay::<std::cell::RefCell<Option<crate::Gc<u32>>>>::VTABLE;
        let (ca, cb, ca2) = (VtCode::of(a), VtCode::of(b), VtCode::of(a));
        FORCE_FAR.with(|f| f.set(false));
        assert_ne!(ca, cb);
        assert_eq!(ca, ca2, "one copy per vtable");
        let (va, vb) = (ca.vtable(), cb.vtable());
        assert!(!ptr::eq(va, a), "a copy");
        assert_eq!((va.type_name)(), (a.type_name)());
        assert_eq!((vb.type_name)(), (b.type_name)());
        assert_eq!(va.size as usize, a.size as usize, "the same size fn");
    }
}
