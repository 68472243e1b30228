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
//! shared object loaded elsewhere) is copied into a slot of a static
//! table of this crate (so within 2 GiB of the anchor), and the code is
//! the slot's offset: slower to encode (a hash probe per allocation), as
//! fast to decode, and only ever taken in such programs. A vtable is plain
//! data (function pointers and sizes), so its copy works as the original;
//! the census merges vtables by type name, and the one comparison of
//! vtables for identity (a run of same-type members in a full collection,
//! `Tracer::count_run`) only ends a run early on a copy, so two copies of
//! one vtable are harmless, which is what lets the table be filled without
//! a lock (see `far`).
//!
//! Decoding rebuilds the pointer from an address: the provenance of the
//! vtable (or of its slot) is exposed when the code is made
//! ([`pointer::expose_provenance`]) and taken back with
//! [`ptr::with_exposed_provenance`], so the pointer is the vtable's, not
//! the anchor's. Miri accepts this with its default, permissive
//! provenance, and warns once about the integer-to-pointer cast (only
//! vtables and their copies are exposed, so other pointers keep their
//! exact provenance under Miri).

use std::ptr;

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
///
/// An open-addressed hash table filled without a lock, so that neither a
/// thread that dies mid-insertion (a `fork` while another thread copies a
/// vtable) nor a signal can leave a later caller waiting: no one ever
/// waits. Slot `i` of [`KEYS`] says what slot `i` of [`FAR`] holds:
///
/// * `0`: nothing; the first thread to swap in `addr | WRITING` owns it;
/// * `addr | WRITING`: its owner is writing a copy of the vtable at
///   `addr` (or died doing so: the slot is then lost, which is harmless);
/// * `addr`: a copy of the vtable at `addr`, written once and never again.
///
/// A thread that finds its vtable's slot still being written does not
/// wait: it goes on probing and makes a copy of its own elsewhere (two
/// codes for one type are harmless, see the module docs).
mod far {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Slots: up to 2^16 far vtables (3 MiB of zero-initialised static
    /// memory for the copies and 512 KiB for the keys, which the OS maps
    /// only where they are touched).
    const SLOTS: usize = 1 << 16;

    /// The low bit of a key whose copy is being written (vtables are
    /// aligned to at least 8, so an address never has it).
    const WRITING: usize = 1;

    /// The state of each slot of [`FAR`] (see the module docs). These are
    /// the gc's only atomics and no loom model covers them, so they are
    /// `std`'s rather than `crate::sync`'s.
    static KEYS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

    /// The copies. Slot `i` is written only by the thread that swapped
    /// `KEYS[i]` from 0, and only before it publishes the slot by storing
    /// the bare address there; it is read only through a code, which is
    /// handed out after that store (see `code_of`).
    struct Slots([UnsafeCell<MaybeUninit<VTable>>; SLOTS]);

    // SAFETY: a slot has one writer (the winner of `KEYS[i]`'s swap from
    // 0) that finishes before its Release store of the bare address;
    // readers reach a slot only through a code handed out after that
    // store, by the writer itself or by a thread whose Acquire load saw
    // it (or by one that received an object holding the code through a
    // synchronising hand-over). So no read races the write.
    unsafe impl Sync for Slots {}

    static FAR: Slots = Slots([const { UnsafeCell::new(MaybeUninit::uninit()) }; SLOTS]);

    /// Where the probe for the vtable at `addr` starts.
    fn home(addr: usize) -> usize {
        // Fibonacci hashing of the address without its always-zero low
        // bits: the top 16 bits of the product.
        (addr >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - SLOTS.trailing_zeros())
    }

    /// The code of slot `i` (its offset from the anchor).
    fn code_at(i: usize) -> VtCode {
        // Exposed for `vtable`, as in `of`.
        let d = FAR.0[i]
            .get()
            .expose_provenance()
            .wrapping_sub(anchor_addr()) as isize;
        let Ok(off) = i32::try_from(d) else {
            // A static of this crate more than 2 GiB from another one.
            std::process::abort();
        };
        VtCode(off as u32)
    }

    /// The code of a copy of `vt`, made the first time.
    #[cold]
    #[inline(never)]
    pub(super) fn code_of(vt: &'static VTable) -> VtCode {
        let addr = (vt as *const VTable).addr();
        let start = home(addr);
        for step in 0..SLOTS {
            let i = (start + step) & (SLOTS - 1);
            // Acquire: if the key is the bare address, the copy its
            // writer made before its Release store is visible to us, and
            // to whoever we hand the code to.
            let mut key = KEYS[i].load(Ordering::Acquire);
            if key == 0 {
                // Relaxed on success: the slot's contents are ours alone
                // until we publish them below. Acquire on failure: the
                // key we read then is treated as above.
                match KEYS[i].compare_exchange(
                    0,
                    addr | WRITING,
                    Ordering::Relaxed,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // SAFETY: we swapped `KEYS[i]` from 0, so we are
                        // slot `i`'s one writer, and no code for it exists
                        // yet, so nothing reads it (the invariant on
                        // `Slots`); `UnsafeCell` allows writing through
                        // the shared static.
                        unsafe {
                            FAR.0[i].get().write(MaybeUninit::new(VTable {
                                trace: vt.trace,
                                drop_value: vt.drop_value,
                                dealloc: vt.dealloc,
                                type_name: vt.type_name,
                                size: vt.size,
                                finalize: vt.finalize,
                            }))
                        };
                        // Release: publishes the copy to every thread
                        // that reads this key with Acquire.
                        KEYS[i].store(addr, Ordering::Release);
                        return code_at(i);
                    }
                    Err(now) => key = now,
                }
            }
            if key == addr {
                return code_at(i);
            }
            // Another vtable's slot, or ours still being written (by a
            // thread we will not wait for): probe on.
        }
        // 2^16 far copies: refuse rather than hand out a wrong code.
        std::process::abort();
    }

    /// Test hook: the state of `vt`'s first slot on its probe path that
    /// names it, as the key word (0 when none does).
    #[cfg(test)]
    pub(super) fn key_of(vt: &'static VTable) -> usize {
        let addr = (vt as *const VTable).addr();
        let start = home(addr);
        (0..SLOTS)
            .map(|s| KEYS[(start + s) & (SLOTS - 1)].load(Ordering::Acquire))
            .find(|&k| k & !WRITING == addr)
            .unwrap_or(0)
    }

    /// Test hook: claims `vt`'s home slot as if a thread had died while
    /// writing its copy there (a `fork` mid-insertion). False if the slot
    /// is taken already.
    #[cfg(test)]
    pub(super) fn strand_home_slot(vt: &'static VTable) -> bool {
        let addr = (vt as *const VTable).addr();
        KEYS[home(addr)]
            .compare_exchange(0, addr | WRITING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
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

    #[test]
    fn far_codes_never_wait_for_a_stranded_slot() {
        // A thread that died writing the copy of this vtable (a fork
        // while another thread held the slot) must not make later
        // callers wait: they make a copy of their own elsewhere.
        let vt = Lay::<std::cell::RefCell<Option<crate::Gc<i64>>>>::VTABLE;
        assert!(far::strand_home_slot(vt), "the home slot was free");
        FORCE_FAR.with(|f| f.set(true));
        let c = VtCode::of(vt);
        let again = VtCode::of(vt);
        FORCE_FAR.with(|f| f.set(false));
        assert_eq!(c, again, "one published copy serves later calls");
        assert_eq!((c.vtable().type_name)(), (vt.type_name)());
        assert_eq!(
            far::key_of(vt) & 1,
            1,
            "the stranded slot is first on the path"
        );
    }
}
