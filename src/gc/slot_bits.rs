//! [`SlotBits`]: one bit per slot of the generation list, that a
//! `const`-initialised thread-local can hold without a destructor.

use std::cell::Cell;
use std::ptr;

/// A growable bit vector with no `Drop` (like `PtrVec`, so the
/// thread-local holding it needs no destructor); its buffer is freed
/// explicitly ([`free`](Self::free)). Bits past the end read as clear.
///
/// Invariant: `words` is null iff `cap == 0`, otherwise it is the buffer
/// of a `Vec<u64>` of capacity and length `cap`, all initialised.
pub(crate) struct SlotBits {
    words: Cell<*mut u64>,
    cap: Cell<usize>,
}

impl SlotBits {
    pub(crate) const fn new() -> Self {
        SlotBits {
            words: Cell::new(ptr::null_mut()),
            cap: Cell::new(0),
        }
    }

    /// Makes room for bits `0..n` (new bits clear).
    #[cold]
    #[inline(never)]
    pub(crate) fn reserve(&self, n: usize) {
        let want = n.div_ceil(64);
        let cap = self.cap.get();
        if want <= cap {
            return;
        }
        let mut v = vec![0u64; want.max(cap * 2)];
        v.resize(v.capacity(), 0);
        if self.cap.get() != cap {
            // The allocation re-entered (a global allocator creating `Gc`s,
            // see `PtrVec::grow`) and a nested call replaced the buffer:
            // start again from the fields as they are now.
            drop(v);
            return self.reserve(n);
        }
        let old = self.words.get();
        // SAFETY: `cap` is still the length of the buffer at `words`
        // (tested just above, after the last call that could re-enter), all
        // initialised (the type's invariant), and `v` is longer: the copy
        // is in bounds; the old buffer came from a Vec of length and
        // capacity `cap`, taken back here to be freed once, below.
        let old_buf = (cap != 0).then(|| unsafe {
            ptr::copy_nonoverlapping(old, v.as_mut_ptr(), cap);
            Vec::from_raw_parts(old, cap, cap)
        });
        // The new buffer is installed before the old one is freed: that
        // free may re-enter too (a `dealloc` creating `Gc`s), and must find
        // the fields consistent.
        let mut v = std::mem::ManuallyDrop::new(v);
        self.cap.set(v.len());
        self.words.set(v.as_mut_ptr());
        drop(old_buf);
    }

    /// Word `w`, 0 past the end.
    #[inline(always)]
    pub(crate) fn word(&self, w: usize) -> u64 {
        if w < self.cap.get() {
            // SAFETY: w < cap, initialised.
            unsafe { *self.words.get().add(w) }
        } else {
            0
        }
    }

    /// Whether bit `i` is set.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.word(i / 64) >> (i % 64) & 1 != 0
    }

    /// Sets bit `i` to `on`; ignored past the end (`reserve` first).
    #[inline(always)]
    pub(crate) fn assign(&self, i: usize, on: bool) {
        let w = i / 64;
        if w < self.cap.get() {
            let m = 1u64 << (i % 64);
            // SAFETY: w < cap, initialised.
            unsafe {
                let p = self.words.get().add(w);
                *p = if on { *p | m } else { *p & !m };
            }
        }
    }

    /// Clears bits `from..to`.
    pub(crate) fn clear_range(&self, from: usize, to: usize) {
        let mut i = from;
        while i < to {
            if i % 64 == 0 && to - i >= 64 {
                self.clear_word(i / 64);
                i += 64;
            } else {
                self.assign(i, false);
                i += 1;
            }
        }
    }

    fn clear_word(&self, w: usize) {
        if w < self.cap.get() {
            // SAFETY: w < cap.
            unsafe { *self.words.get().add(w) = 0 }
        }
    }

    /// Frees the buffer; every bit reads clear.
    pub(crate) fn free(&self) {
        let p = self.words.replace(ptr::null_mut());
        let cap = self.cap.replace(0);
        if !p.is_null() {
            // SAFETY: the buffer came from a Vec of this length and capacity.
            unsafe { drop(Vec::from_raw_parts(p, cap, cap)) }
        }
    }
}
