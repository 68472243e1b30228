//! Which addresses are PyMalloc's: one bit per possible arena.
//!
//! Rust's `dealloc` is given the layout, which routes a free to the pools
//! or to the large-block allocator without looking at the address. C's
//! `free(p)` is not, so the C entry points (`cabi`) and the debug allocator
//! must tell a pool block from everything else by its address alone:
//! CPython's `address_in_range` problem.
//!
//! # The structure
//!
//! Arenas are `ARENA_SIZE` (1 MiB) long and aligned to it, so "is `p` in
//! an arena?" is "is arena number `p >> 20` one of ours?". User addresses
//! lie below 2^48 on x86-64 (47 bits) and aarch64 (48 bits), which leaves
//! 2^28 arena numbers: a bitmap of 2^28 bits, 32 MiB of address space.
//! It is a zero-initialised static, so it lives in `.bss`: the kernel maps
//! its pages on first touch, and a page of it (32,768 bits, 32 GiB of
//! address space) is touched only when an arena is mapped in the range it
//! covers. A process with a few hundred megabytes of arenas makes one or
//! two of its pages resident. The lookup is
//!
//! ```text
//!  index = p >> 20;  if index >= 2^28: not ours
//!  ours  = (BITS[index / 64] >> (index % 64)) & 1
//! ```
//!
//! a compare, two shifts and one load: no pointer to chase, no lock, no
//! header read before the answer is known, so a wild or foreign pointer is
//! never dereferenced.
//!
//! The alternatives, and why not:
//! * CPython's own `address_in_range` reads the arena index stored in the
//!   pool header at `p & ~(POOL_SIZE - 1)` and compares it with its arena
//!   table: it reads memory it does not know to be mapped (CPython
//!   tolerates this with sanitizer exemptions), and for a foreign pointer
//!   that page may not exist.
//! * CPython 3.10+'s radix tree (`WITH_PYMALLOC_RADIX_TREE`) and
//!   mimalloc's segment map trade the flat map for two or three levels of
//!   lazily allocated nodes, whose pointers must be followed on every
//!   free; with the 48-bit space and 1 MiB granularity the flat bitmap is
//!   small enough that one level suffices.
//! * A header before every large block works only when every pointer the
//!   process frees came from us; foreign pointers (allocated before the
//!   override took effect, by another allocator) have no such header.
//!
//! # Orderings
//!
//! A bit is set (`fetch_or`) when its arena is mapped, before any block of
//! the arena is handed out, and cleared (`fetch_and`) when the arena is
//! empty, before it is unmapped. A thread that frees a block received the
//! pointer, directly or not, from the thread that allocated it, through
//! some synchronisation that orders the allocation, and so the bit's
//! setting, before the free: a `Relaxed` load reads that setting or a
//! later write, and every later write to the word is a read-modify-write
//! of other bits, or the clearing of this one, which only happens once the
//! arena holds no live block that could be freed. So the loads are
//! `Relaxed`, and the writes are read-modify-writes so that concurrent
//! updates of neighbouring bits are never lost.

use core::sync::atomic::{AtomicU64, Ordering};

use super::size_class::ARENA_SHIFT;

/// Arenas lie below `pool::ADDRESS_LIMIT` (2^48; checked when mapped).
const ADDRESS_BITS: u32 = super::pool::ADDRESS_LIMIT.trailing_zeros();
/// One bit per possible arena.
const ARENAS: usize = 1 << (ADDRESS_BITS - ARENA_SHIFT);
const WORDS: usize = ARENAS / 64;

/// The bitmap: bit `i` is set while the arena at `i << ARENA_SHIFT` is one
/// of PyMalloc's. 32 MiB of `.bss`, resident only where arenas are.
static BITS: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// The word and mask of the bit of arena number `index`.
#[inline(always)]
fn bit(index: usize) -> (&'static AtomicU64, u64) {
    (&BITS[index / 64], 1 << (index % 64))
}

/// Records that the arena at `base` (aligned to `ARENA_SIZE`, below 2^48)
/// is PyMalloc's.
pub(crate) fn insert(base: *mut u8) {
    let (word, mask) = bit(base as usize >> ARENA_SHIFT);
    // Relaxed: see the module docs (the block pointers carry the ordering).
    word.fetch_or(mask, Ordering::Relaxed);
}

/// Records that the arena at `base` is about to be unmapped.
pub(crate) fn remove(base: *mut u8) {
    let (word, mask) = bit(base as usize >> ARENA_SHIFT);
    // Relaxed: see the module docs.
    word.fetch_and(!mask, Ordering::Relaxed);
}

/// Whether `ptr` lies in an arena PyMalloc has mapped now. Reads nothing
/// but the bitmap, so any value may be passed.
#[inline(always)]
pub(crate) fn contains(ptr: *const u8) -> bool {
    let index = ptr as usize >> ARENA_SHIFT;
    if index >= ARENAS {
        return false;
    }
    // SAFETY: `index < ARENAS`, so `index / 64 < WORDS`.
    let word = unsafe { BITS.get_unchecked(index / 64) };
    // Relaxed: see the module docs.
    word.load(Ordering::Relaxed) & (1 << (index % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_cover_exactly_their_arena() {
        // An address range no arena will ever occupy in this test process:
        // the top of the 48-bit space.
        let base = ((ARENAS - 3) << ARENA_SHIFT) as *mut u8;
        let end = base.wrapping_add(1 << ARENA_SHIFT);
        assert!(!contains(base));
        insert(base);
        assert!(contains(base));
        assert!(contains(end.wrapping_sub(1)));
        assert!(!contains(end));
        assert!(!contains(base.wrapping_sub(1)));
        remove(base);
        assert!(!contains(base));
    }

    #[test]
    fn addresses_above_48_bits_are_never_ours() {
        assert!(!contains(usize::MAX as *const u8));
        assert!(!contains((1usize << 48) as *const u8));
        assert!(!contains(0xDDDD_DDDD_DDDD_DDDD_usize as *const u8));
        assert!(!contains(core::ptr::null()));
    }
}
