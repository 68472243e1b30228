//! Pools: one size class's blocks in a `POOL_SIZE`-aligned slot of an
//! arena. Their headers are not in the pools but side by side at the start
//! of the arena, one 64-byte line each, as mimalloc keeps its page
//! descriptors:
//!
//! ```text
//!  arena                                    slot i (16 KiB)
//! +--------+--------+-----+--------+ ... ---+---------+---------+-----+---------+-----------+
//! | arena  | pool 1 | ... | pool 63|        | block 0 | block 1 | ... | block k | never used|
//! | header | header |     | header |        |         |         |     |         |           |
//! +--------+--------+-----+--------+ ... ---+---------+---------+-----+---------+-----------+
//!  \___ slot 0: 64 x 64 bytes ___/                                              ^ carve
//!
//!  header of block p = (p & ARENA_MASK) + 64 * ((p & !ARENA_MASK) >> POOL_SHIFT)
//! ```
//!
//! Two reasons for keeping headers apart. Headers at the front of 16 KiB
//! pools would all fall in the same few L1 cache sets (addresses 16 KiB apart
//! alias), so a program using many classes at once would keep evicting its
//! own pool headers; side by side they use distinct sets. And with no header
//! inside, a pool is all blocks, so every block is naturally aligned with
//! nothing lost to padding.
//!
//! A block is in exactly one of four places: handed out to the program, on
//! the owner's `free` list, on the `remote` list (freed by another thread
//! and not yet collected), or past `carve` (never used). `used` counts the
//! first and third kinds, so a pool is empty exactly when `used == 0`.

use core::cell::Cell;
use core::ptr;

use super::asan;
use super::heap::Heap;
use super::size_class::{
    block_size, ARENA_MASK, PAGE_SIZE, POOLS_PER_ARENA, POOL_SHIFT, POOL_SIZE,
};
use crate::sync::{AtomicPtr, AtomicUsize, CasStart, Ordering};

/// A free block; its first word links it into a free list.
#[repr(C)]
pub(crate) struct Block {
    next: *mut Block,
}

impl Block {
    /// The block after `this` on its list.
    ///
    /// # Safety
    /// `this` must be a free block the caller may read.
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Block) -> *mut Block {
        asan::unpoison(this.cast(), LINK);
        // SAFETY: caller contract.
        let next = unsafe { (*this).next };
        asan::poison(this.cast(), LINK);
        next
    }

    /// Links `this` to `next`.
    ///
    /// # Safety
    /// `this` must be a free block the caller may write.
    #[inline(always)]
    pub(crate) unsafe fn set_next(this: *mut Block, next: *mut Block) {
        asan::unpoison(this.cast(), LINK);
        // SAFETY: caller contract.
        unsafe { (*this).next = next };
        asan::poison(this.cast(), LINK);
    }
}

const LINK: usize = core::mem::size_of::<*mut Block>();

/// Blocks freed into a pool by threads other than its owner: a Treiber
/// stack whose head word also counts the blocks on it, so the owner learns
/// how many it takes without walking them (each is a cache miss, the line
/// last written by another core).
///
/// ```text
///  63        48 47                                 0
/// +-----------+------------------------------------+
/// |   count   |  address of the last block pushed  |
/// +-----------+------------------------------------+
/// ```
///
/// Block addresses fit in 48 bits (arenas are checked when mapped) and a
/// pool holds at most 1,024 blocks. The owner takes the whole stack at once
/// and never pops single blocks, so the push CAS has no ABA hazard.
pub(crate) struct RemoteList(AtomicUsize);

/// Addresses above this are refused for arenas (see [`RemoteList`]).
pub(crate) const ADDRESS_LIMIT: usize = 1 << 48;
const COUNT_SHIFT: u32 = 48;
const ADDRESS_MASK: usize = ADDRESS_LIMIT - 1;

impl RemoteList {
    pub(crate) fn new() -> RemoteList {
        RemoteList(AtomicUsize::new(0))
    }

    /// Pushes a block. Returns true if the list was empty before.
    ///
    /// # Safety
    /// `block` must be a block of this list's pool that the caller is
    /// freeing, below [`ADDRESS_LIMIT`].
    pub(crate) unsafe fn push(&self, block: *mut Block) -> bool {
        let mut old = self.0.load_for_cas();
        loop {
            // SAFETY: the block is ours to write until the CAS publishes it.
            unsafe { Block::set_next(block, (old & ADDRESS_MASK) as *mut Block) };
            let count = (old >> COUNT_SHIFT) + 1;
            let new = block as usize | (count << COUNT_SHIFT);
            // AcqRel: Release publishes the link just written; Acquire orders
            // our later push of the pool on the pending list after the
            // owner's `take` that emptied this list (see `Pool`).
            match self
                .0
                .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return old == 0,
                Err(now) => old = now,
            }
        }
    }

    /// The block pushed last, for debug checks (it may change at once).
    pub(crate) fn head(&self) -> *mut Block {
        (self.0.load(Ordering::Relaxed) & ADDRESS_MASK) as *mut Block
    }

    /// Takes every block: the head of their list and how many there are.
    pub(crate) fn take(&self) -> (*mut Block, u32) {
        // AcqRel: Acquire sees the pushers' links; Release orders the
        // owner's earlier read of `pending_next` before a later pusher's
        // write of it.
        let word = self.0.swap(0, Ordering::AcqRel);
        (
            (word & ADDRESS_MASK) as *mut Block,
            (word >> COUNT_SHIFT) as u32,
        )
    }
}

/// Written into every pool header in use, so debug builds can tell a pool
/// in use from a free slot.
pub(crate) const POOL_MAGIC: u16 = 0x9E3A;

/// The header of a pool.
///
/// Invariants:
/// * `owner` is set when the pool is handed to a heap and does not change
///   until every block is back (pools never move between heaps while in
///   use). Only the thread that currently owns that heap touches the
///   `Cell` fields.
/// * `remote` is pushed to by any thread. The pool is on its owner's
///   pending list exactly when `remote` is non-empty, except for the
///   moment between a push that found `remote` empty and that pusher's
///   push of the pool onto the pending list; the owner takes `remote` only
///   after taking the pool off the pending list, so it never sees that
///   moment.
#[repr(C, align(64))]
pub(crate) struct Pool {
    /// Owner-local free list (LIFO).
    pub(crate) free: Cell<*mut Block>,
    /// Blocks handed out or on `remote`.
    pub(crate) used: Cell<u32>,
    /// Offset of the first never-used block.
    pub(crate) carve: Cell<u32>,
    pub(crate) class: Cell<u8>,
    /// Off its class list because it had no free block when last looked at.
    pub(crate) full: Cell<bool>,
    pub(crate) magic: Cell<u16>,
    /// Neighbours in the heap's list of pools of this class.
    pub(crate) next: Cell<*mut Pool>,
    pub(crate) prev: Cell<*mut Pool>,
    pub(crate) owner: AtomicPtr<Heap>,
    /// Blocks freed by threads other than the owner.
    pub(crate) remote: RemoteList,
    /// Link in the owner's list of pools with remote frees.
    pub(crate) pending_next: AtomicPtr<Pool>,
}

/// Bytes of each pool header in an arena's slot 0.
pub(crate) const POOL_HEADER_SIZE: usize = core::mem::size_of::<Pool>();

#[cfg(not(loom))]
const _: () = assert!(
    POOL_HEADER_SIZE == 64,
    "the pool header must fit one cache line"
);
const _: () = assert!(
    POOL_HEADER_SIZE * POOLS_PER_ARENA <= POOL_SIZE,
    "an arena's pool headers must fit in its slot 0"
);

impl Pool {
    /// A header describing no blocks: the sentinel a heap's class list
    /// points at while the class has no pool, so the allocation fast path
    /// needs no null check.
    pub(crate) fn empty() -> Pool {
        Pool {
            free: Cell::new(ptr::null_mut()),
            used: Cell::new(0),
            carve: Cell::new(0),
            class: Cell::new(0),
            full: Cell::new(false),
            magic: Cell::new(0),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            owner: AtomicPtr::new(ptr::null_mut()),
            remote: RemoteList::new(),
            pending_next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Writes a fresh header for `class` at `pool`, owned by `owner`.
    ///
    /// # Safety
    /// `pool` must be the header of a pool slot that no thread is using.
    pub(crate) unsafe fn init(pool: *mut Pool, class: usize, owner: *mut Heap) {
        let header = Pool::empty();
        header.class.set(class as u8);
        header.magic.set(POOL_MAGIC);
        header.owner.store(owner, Ordering::Relaxed);
        // SAFETY: the caller guarantees the slot is ours to write.
        unsafe { ptr::write(pool, header) };
    }

    /// The header of the pool a block lives in.
    #[inline(always)]
    pub(crate) fn of(block: *mut u8) -> *mut Pool {
        let addr = block as usize;
        let index = (addr & !ARENA_MASK) >> POOL_SHIFT;
        ((addr & ARENA_MASK) + index * POOL_HEADER_SIZE) as *mut Pool
    }

    /// The header for pool slot `index` of the arena at `arena`.
    pub(crate) fn header_of_slot(arena: usize, index: usize) -> *mut Pool {
        (arena + index * POOL_HEADER_SIZE) as *mut Pool
    }

    /// The slot index of this header in its arena.
    pub(crate) fn slot_index(&self) -> usize {
        (self as *const Pool as usize & !ARENA_MASK) / POOL_HEADER_SIZE
    }

    /// The first byte of the pool this header describes.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        let arena = self as *const Pool as usize & ARENA_MASK;
        (arena + self.slot_index() * POOL_SIZE) as *mut u8
    }

    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        self.class.get() as usize
    }

    #[inline(always)]
    pub(crate) fn block_size(&self) -> usize {
        block_size(self.class())
    }

    /// Pops a block from the local free list, if any.
    #[inline(always)]
    pub(crate) fn pop(&self) -> *mut Block {
        let block = self.free.get();
        if !block.is_null() {
            // SAFETY: blocks on the free list are ours and start with a link.
            self.free.set(unsafe { Block::next(block) });
            self.used.set(self.used.get() + 1);
        }
        block
    }

    /// Pushes a block onto the local free list. Returns the new `used`.
    ///
    /// # Safety
    /// `block` must be a block of this pool that is handed out, and the
    /// caller must own the pool.
    #[inline(always)]
    pub(crate) unsafe fn push(&self, block: *mut Block) -> u32 {
        // SAFETY: the block is ours again and at least 16 bytes long.
        unsafe { Block::set_next(block, self.free.get()) };
        self.free.set(block);
        let used = self.used.get() - 1;
        self.used.set(used);
        used
    }

    /// Turns the next never-used run of blocks, up to the end of the OS
    /// page the first one starts in, into the free list. Returns false when
    /// the pool is fully carved. Carving a page at a time keeps untouched
    /// pool memory out of the resident set.
    ///
    /// # Safety
    /// The caller must own the pool, and its free list must be empty.
    pub(crate) unsafe fn carve_page(&self) -> bool {
        let size = self.block_size();
        let start = self.carve.get() as usize;
        if start + size > POOL_SIZE {
            return false;
        }
        let page_end = (start / PAGE_SIZE + 1) * PAGE_SIZE;
        // At least one block, then every block that starts in this page.
        let mut end = start + size;
        while end < page_end && end + size <= POOL_SIZE {
            end += size;
        }
        let base = self.base();
        let mut offset = end - size;
        let mut next: *mut Block = ptr::null_mut();
        // Link back to front so the list hands blocks out in address order.
        loop {
            // SAFETY: `offset` lies in the never-used part of this pool.
            let block = unsafe { base.add(offset) } as *mut Block;
            // SAFETY: as above; the block is at least 16 bytes.
            unsafe { Block::set_next(block, next) };
            next = block;
            if offset == start {
                break;
            }
            offset -= size;
        }
        self.free.set(next);
        self.carve.set(end as u32);
        true
    }

    /// Whether `block` is the start of a block of this pool.
    pub(crate) fn is_block_start(&self, block: *mut u8) -> bool {
        let offset = block as usize - self.base() as usize;
        offset < POOL_SIZE && offset % self.block_size() == 0
    }
}
