//! The debug allocator's table of live large blocks.
//!
//! A pool block is recognised by address alone (`arena_bitmap`); a large
//! block comes from the system allocator, anywhere in memory, so the debug
//! allocator records each one it hands out here, and consults the table
//! before it reads a byte of a large block being freed. A wild pointer
//! (`0xDDDD...` read from freed memory, a pointer into the stack, a
//! pointer freed twice) is then reported instead of dereferenced.
//!
//! The table maps the pointer handed out to the block's encoded layout:
//! open addressing with linear probing and backward-shift deletion (no
//! tombstones, so a table that sees endless churn never degrades), grown
//! by doubling at half load. Its memory comes from `mmap`, never from an
//! allocator. It is only used with the debug allocator on, so a simple
//! spin lock guards it. Nothing inside the lock allocates (a thread
//! holding it never re-enters the allocator), and `fork` is covered by
//! `pthread_atfork` handlers that hold the lock across the fork, so the
//! child, whose other threads are gone, finds it free and the table whole.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::os;

/// One slot: a key of 0 is empty.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    key: usize,
    value: usize,
}

/// The table proper, only touched with [`LOCK`] held.
struct Table {
    slots: *mut Slot,
    /// A power of two, or 0 before the first insertion.
    capacity: usize,
    len: usize,
}

/// The table in an `UnsafeCell`, reached only with [`LOCK`] held.
struct Shared(core::cell::UnsafeCell<Table>);

// SAFETY: the table is only reached through `with_table`, which holds LOCK.
unsafe impl Sync for Shared {}

static TABLE: Shared = Shared(core::cell::UnsafeCell::new(Table {
    slots: ptr::null_mut(),
    capacity: 0,
    len: 0,
}));

static LOCK: AtomicBool = AtomicBool::new(false);

const ATFORK_NONE: u8 = 0;
const ATFORK_REGISTERING: u8 = 1;
const ATFORK_DONE: u8 = 2;
static ATFORK: AtomicU8 = AtomicU8::new(ATFORK_NONE);

const INITIAL_CAPACITY: usize = 1024;

fn lock() {
    // Acquire pairs with the Release in `unlock`: the previous holder's
    // writes to the table are visible to us.
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        let mut spins = 0;
        while LOCK.load(Ordering::Relaxed) {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: a plain system call.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

fn unlock() {
    // Release: publishes our table writes to the next holder.
    LOCK.store(false, Ordering::Release);
}

extern "C" fn before_fork() {
    lock();
}

extern "C" fn after_fork() {
    unlock();
}

/// Registers the fork handlers once. Called outside the lock: glibc's
/// `pthread_atfork` may allocate, and so come back here (a nested call
/// sees the registration in progress and goes on without it).
fn ensure_fork_handlers() {
    if ATFORK.load(Ordering::Acquire) == ATFORK_DONE {
        return;
    }
    if ATFORK
        .compare_exchange(
            ATFORK_NONE,
            ATFORK_REGISTERING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        super::os::register_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
        ATFORK.store(ATFORK_DONE, Ordering::Release);
    }
}

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    lock();
    // SAFETY: LOCK is held, so this is the only reference to the table.
    let result = f(unsafe { &mut *TABLE.0.get() });
    unlock();
    result
}

#[inline]
fn hash(key: usize, capacity: usize) -> usize {
    // Fibonacci hashing: block addresses share their low bits.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) & (capacity - 1)
}

impl Table {
    fn slot(&self, index: usize) -> *mut Slot {
        // SAFETY: callers pass `index < capacity`; the slots are mapped.
        unsafe { self.slots.add(index) }
    }

    /// The index holding `key`, if any.
    fn find(&self, key: usize) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let mut i = hash(key, self.capacity);
        loop {
            // SAFETY: `i < capacity`; the table is never full (half load).
            let slot = unsafe { *self.slot(i) };
            if slot.key == key {
                return Some(i);
            }
            if slot.key == 0 {
                return None;
            }
            i = (i + 1) & (self.capacity - 1);
        }
    }

    /// Inserts a key that is not present. False if memory ran out.
    fn insert(&mut self, key: usize, value: usize) -> bool {
        if (self.len + 1) * 2 > self.capacity && !self.grow() {
            return false;
        }
        let mut i = hash(key, self.capacity);
        // SAFETY: `i < capacity`; there is an empty slot (half load).
        unsafe {
            while (*self.slot(i)).key != 0 {
                i = (i + 1) & (self.capacity - 1);
            }
            *self.slot(i) = Slot { key, value };
        }
        self.len += 1;
        true
    }

    /// Removes the slot at `index`, shifting later members of its probe
    /// run back so that no lookup stops early.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.capacity - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            // SAFETY: indices are masked below capacity.
            let slot = unsafe { *self.slot(i) };
            if slot.key == 0 {
                break;
            }
            let home = hash(slot.key, self.capacity);
            // Move the entry into the hole unless its home lies cyclically
            // in (hole, i]: then it would be found before reaching the hole.
            let home_in_range = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !home_in_range {
                // SAFETY: `hole` is an index masked below capacity (it was
                // `i` or the removed index), so the slot is in the table.
                unsafe { *self.slot(hole) = slot };
                hole = i;
            }
        }
        // SAFETY: `hole` is an index masked below capacity, so the slot is
        // in the table.
        unsafe { *self.slot(hole) = Slot { key: 0, value: 0 } };
        self.len -= 1;
    }

    fn grow(&mut self) -> bool {
        let capacity = (self.capacity * 2).max(INITIAL_CAPACITY);
        let bytes = capacity * core::mem::size_of::<Slot>();
        let slots = os::map_aligned(bytes, 4096).cast::<Slot>();
        if slots.is_null() {
            return false;
        }
        let old = Table {
            slots: self.slots,
            capacity: self.capacity,
            len: self.len,
        };
        *self = Table {
            slots,
            capacity,
            len: 0,
        };
        for i in 0..old.capacity {
            // SAFETY: `i < old.capacity`.
            let slot = unsafe { *old.slot(i) };
            if slot.key != 0 {
                self.insert(slot.key, slot.value);
            }
        }
        if old.capacity != 0 {
            // SAFETY: the old slots were mapped by us and nothing refers to
            // them any more (we hold the lock).
            unsafe {
                os::unmap(
                    old.slots.cast(),
                    old.capacity * core::mem::size_of::<Slot>(),
                )
            };
        }
        true
    }
}

/// Records a live large block `ptr` with `value` (its encoded layout).
/// False if the table could not grow (the OS refused memory).
pub(crate) fn insert(ptr: *mut u8, value: usize) -> bool {
    ensure_fork_handlers();
    with_table(|t| t.insert(ptr as usize, value))
}

/// The value recorded for `ptr`, if it is a live large block.
pub(crate) fn get(ptr: *mut u8) -> Option<usize> {
    with_table(|t| {
        t.find(ptr as usize)
            // SAFETY: `find` returns an index below capacity.
            .map(|i| unsafe { (*t.slot(i)).value })
    })
}

/// Forgets `ptr`; returns its value if it was recorded.
pub(crate) fn remove(ptr: *mut u8) -> Option<usize> {
    with_table(|t| {
        let i = t.find(ptr as usize)?;
        // SAFETY: `find` returns an index below capacity.
        let value = unsafe { (*t.slot(i)).value };
        t.remove_at(i);
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_keeps_every_live_key_findable() {
        // Keys far from any real block (the table is process-wide).
        let key = |i: usize| ((1usize << 46) + i * 4096) as *mut u8;
        for i in 0..5000 {
            assert!(insert(key(i), i));
        }
        for i in (0..5000).step_by(3) {
            assert_eq!(remove(key(i)), Some(i));
        }
        for i in 0..5000 {
            let expected = (i % 3 != 0).then_some(i);
            assert_eq!(get(key(i)), expected, "key {i}");
        }
        for i in 0..5000 {
            if i % 3 != 0 {
                assert_eq!(remove(key(i)), Some(i));
            }
        }
        assert_eq!(get(key(1)), None);
    }
}
