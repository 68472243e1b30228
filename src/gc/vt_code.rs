//! 32-bit codes for the collector's vtables, so that a tracked header on a
//! 64-bit target is 24 bytes (the code shares a word with the weak count)
//! instead of 32.
//!
//! Why it matters: a tracked `Gc` of a 16-byte value (a binary tree node of
//! two handles) asks malloc for 40 bytes instead of 48, which glibc serves
//! from a 48-byte chunk instead of a 64-byte one, as it does `Rc`'s 32
//! bytes (figures in docs/performance.md, issue 9, fourth round).
//!
//! A code is one of:
//!
//! * **an offset** (bit 0 clear): the vtable's address minus the address
//!   of [`ANCHOR`], a static of this crate, when the difference fits in an
//!   `i32`. Every vtable is a promoted constant of the binary or shared
//!   object that instantiated `Gc::new::<T>`, and a binary is linked within
//!   2 GiB of itself on the usual code models, so this is the case for
//!   every object of a program linked as one binary. Both addresses are
//!   multiples of 8 (`VTable` holds function pointers; `ANCHOR` is aligned
//!   to 8), so the offset's bit 0 is clear.
//! * **a registry index** (bit 0 set, index in bits 1-31): otherwise (a
//!   type instantiated in another shared object loaded far away), the
//!   vtable is entered once in a global append-only table and its index
//!   stored. Slower (a lock and a hash lookup per allocation, two loads
//!   per use), but only ever taken in such programs.
//!
//! Decoding an offset rebuilds the pointer from an address: the vtable's
//! provenance is exposed when the code is made
//! ([`pointer::expose_provenance`]) and taken back with
//! [`ptr::with_exposed_provenance`], so the pointer is the vtable's, not
//! the anchor's (Miri accepts this with its default, permissive
//! provenance).

use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
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
    /// The code of `vt`: its offset from the anchor when it fits, its
    /// registry index otherwise.
    #[inline(always)]
    pub(crate) fn of(vt: &'static VTable) -> VtCode {
        // Exposed so that `vtable` can take the provenance back from the
        // address (the module docs).
        let addr = (vt as *const VTable).expose_provenance();
        let d = addr.wrapping_sub(anchor_addr()) as isize;
        match i32::try_from(d) {
            Ok(off) if !force_registry() => VtCode(off as u32),
            _ => VtCode::registered(vt),
        }
    }

    #[cold]
    #[inline(never)]
    fn registered(vt: &'static VTable) -> VtCode {
        VtCode((registry::index_of(vt) << 1) | 1)
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
        if self.0 & 1 == 0 {
            let addr = anchor_addr().wrapping_add_signed(self.0 as i32 as isize);
            // SAFETY: a code with bit 0 clear was made by `of` from a
            // `&'static VTable` at exactly this address (anchor plus the
            // offset it computed), whose provenance `of` exposed; so the
            // pointer is that reference's, valid and immutable forever.
            unsafe { &*ptr::with_exposed_provenance::<VTable>(addr) }
        } else {
            registry::get(self.0 >> 1)
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: make every code a registry index, to exercise that path in a
    /// binary where every offset fits.
    pub(crate) static FORCE_REGISTRY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline(always)]
fn force_registry() -> bool {
    #[cfg(test)]
    {
        FORCE_REGISTRY.with(|f| f.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// The global table of vtables too far from the anchor for an offset:
/// append-only, read without a lock.
mod registry {
    use super::*;

    /// Entries per chunk, and chunks: up to 2^20 distinct far vtables.
    const CHUNK: usize = 1 << 10;
    const CHUNKS: usize = 1 << 10;

    /// The chunks, each a leaked array of `CHUNK` entries, allocated when
    /// the first index in it is handed out.
    static TABLE: [AtomicPtr<AtomicPtr<VTable>>; CHUNKS] =
        [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS];

    /// Registered vtables (by address) and their indexes; also the lock
    /// that serialises registrations.
    static INDEX: Mutex<Option<HashMap<usize, u32>>> = Mutex::new(None);

    /// The index of `vt`, registering it the first time.
    pub(super) fn index_of(vt: &'static VTable) -> u32 {
        let addr = (vt as *const VTable).addr();
        // A panic never happens while the lock is held (the map's
        // operations below only allocate, and an allocation failure
        // aborts), so poisoning cannot occur; take the guard either way.
        let mut guard = INDEX.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        if let Some(&i) = map.get(&addr) {
            return i;
        }
        let i = map.len();
        if i >= CHUNK * CHUNKS {
            // 2^20 distinct types from far shared objects: not a program
            // that exists; refuse rather than hand out a wrong code.
            std::process::abort();
        }
        let slot = &TABLE[i / CHUNK];
        let mut chunk = slot.load(Ordering::Relaxed);
        if chunk.is_null() {
            let fresh: Box<[AtomicPtr<VTable>]> = (0..CHUNK)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect();
            chunk = Box::leak(fresh).as_mut_ptr();
            // Release: a reader that loads the chunk pointer (Acquire in
            // `get`) sees its entries initialised. Only this function,
            // under the lock, stores chunk pointers (hence Relaxed above).
            slot.store(chunk, Ordering::Release);
        }
        // SAFETY: `chunk` points at a leaked array of CHUNK entries (just
        // made, or by an earlier registration), and `i % CHUNK < CHUNK`.
        let entry = unsafe { &*chunk.add(i % CHUNK) };
        // Release: pairs with `get`'s Acquire load of the entry, although
        // the vtable itself is immutable static data; a reader only gets
        // index `i` from a header written after this returns.
        entry.store((vt as *const VTable).cast_mut(), Ordering::Release);
        let i = i as u32;
        map.insert(addr, i);
        i
    }

    /// The vtable registered at `i`.
    #[inline(never)]
    pub(super) fn get(i: u32) -> &'static VTable {
        let i = i as usize;
        // Acquire: pairs with the Release stores of `index_of` (the chunk
        // pointer, then the entry), made before the index was handed out.
        let chunk = TABLE[i / CHUNK].load(Ordering::Acquire);
        assert!(!chunk.is_null(), "pymem: unregistered vtable code");
        // SAFETY: a non-null chunk pointer is a leaked array of CHUNK
        // entries (`index_of`), and `i % CHUNK < CHUNK`.
        let vt = unsafe { &*chunk.add(i % CHUNK) }.load(Ordering::Acquire);
        assert!(!vt.is_null(), "pymem: unregistered vtable code");
        // SAFETY: entries hold only `&'static VTable`s (`index_of`).
        unsafe { &*vt }
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
        assert_eq!(c.0 & 1, 0, "a vtable of this binary is within 2 GiB");
        assert!(ptr::eq(c.vtable(), vt));
    }

    #[test]
    fn registry_codes_round_trip() {
        FORCE_REGISTRY.with(|f| f.set(true));
        let a = Lay::<std::cell::RefCell<Option<crate::Gc<u16>>>>::VTABLE;
        let b = Lay::<std::cell::RefCell<Option<crate::Gc<u32>>>>::VTABLE;
        let (ca, cb) = (VtCode::of(a), VtCode::of(b));
        FORCE_REGISTRY.with(|f| f.set(false));
        assert_eq!(ca.0 & 1, 1);
        assert_ne!(ca, cb);
        assert_eq!(ca, VtCode::of_registered_for_test(a));
        assert!(ptr::eq(ca.vtable(), a));
        assert!(ptr::eq(cb.vtable(), b));
    }

    impl VtCode {
        fn of_registered_for_test(vt: &'static VTable) -> VtCode {
            VtCode::registered(vt)
        }
    }
}
