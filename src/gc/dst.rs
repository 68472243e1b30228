//! Unsized values in a `Gc`: `Gc<str>`, `Gc<[T]>` and `Gc<dyn Trait>`,
//! made by the `From`/`FromIterator` impls `Rc` has, by [`Gc::from_box`],
//! and by [`coerce_gc!`](crate::coerce_gc) (the stable stand-in for
//! `CoerceUnsized`).
//!
//! An unsized value's allocation is decided by the value itself through
//! [`GcLayout`]: a `Gc<[u64]>` or `Gc<str>` is untracked with `Rc`'s
//! 16-byte header, a `Gc<[Gc<X>]>` tracked with its length stored before
//! the header, and a `Gc<dyn Trait>` is laid out as its concrete type
//! would be (tracked if that type may hold a `Gc`, with that type's
//! vtable), so the collector only ever sees thin pointers.

use std::alloc::{dealloc, Layout};
use std::ptr::{self, NonNull};

use super::header::{allocate, counts_of, free, prefix, SliceLay};
use super::ptr::Gc;
use super::trace::{GcLayout, Trace};

/// A wide pointer to `addr` with the metadata of `like` (a pointer to the
/// value about to be moved there), with the provenance of `addr`.
///
/// Stable Rust has no way to combine an address with the metadata of
/// another pointer (`ptr::from_raw_parts` is unstable), so this writes
/// the new address over the first word of a copy of `like`, where every
/// rustc keeps a wide pointer's address. The assertion checks that
/// assumption before the pointer is used: were the layout different, it
/// would panic instead of producing a bad pointer. Slices never need this
/// (`ptr::slice_from_raw_parts` builds them); `Gc::from_box` of a trait
/// object does.
fn with_metadata_of<T: ?Sized>(like: *mut T, addr: NonNull<u8>) -> *mut T {
    let mut p = like;
    // SAFETY: a pointer-sized write to the start of the local `p`, which is
    // at least pointer-sized and aligned; the stored pointer keeps its
    // provenance in memory, so reading `p` back yields one with the
    // provenance of `addr`.
    unsafe { ptr::addr_of_mut!(p).cast::<*mut u8>().write(addr.as_ptr()) };
    assert!(
        ptr::addr_eq(p, addr.as_ptr()),
        "pymem: this compiler lays out wide pointers differently (address not first)"
    );
    p
}

impl<T: ?Sized + Trace + 'static> Gc<T> {
    /// Moves a boxed value into a new `Gc`, as `Rc::from(Box<T>)`: the way
    /// to make a `Gc<dyn Trait>` (for a `trait Trait: Trace`) on stable
    /// Rust. The value is moved (copied bitwise), not cloned; the box's
    /// memory is freed.
    ///
    /// The allocation is the concrete type's: tracked if that type may
    /// hold a `Gc`, untracked (no list entry, `Rc`'s header) if not.
    ///
    /// ```
    /// use pymem::{gc, Gc, Trace};
    /// use std::cell::RefCell;
    ///
    /// trait Shape: Trace {
    ///     fn area(&self) -> f64;
    /// }
    ///
    /// #[derive(Trace)]
    /// struct Square(f64);
    /// impl Shape for Square {
    ///     fn area(&self) -> f64 { self.0 * self.0 }
    /// }
    ///
    /// #[derive(Trace)]
    /// struct Group { parts: RefCell<Vec<Gc<dyn Shape>>> }
    /// impl Shape for Group {
    ///     fn area(&self) -> f64 { self.parts.borrow().iter().map(|p| p.area()).sum() }
    /// }
    ///
    /// let sq: Gc<dyn Shape> = Gc::from_box(Box::new(Square(2.0)));
    /// assert!(!gc::is_tracked(&sq)); // a Square holds no Gc
    /// let g: Gc<dyn Shape> = Gc::from_box(Box::new(Group { parts: RefCell::default() }));
    /// assert!(gc::is_tracked(&g));
    /// assert_eq!(g.area(), 0.0);
    /// ```
    pub fn from_box(b: Box<T>) -> Gc<T> {
        let layout = Layout::for_value::<T>(&b);
        let header = <T as GcLayout>::__gc_header(&b);
        let dst = allocate(layout, header, 1, 1);
        let src: *mut T = Box::into_raw(b);
        let value = with_metadata_of(src, dst);
        // SAFETY: the new allocation has room for a value of `layout`
        // (allocated for it) and the two are distinct; the value is moved
        // bitwise, and the box's memory is freed without dropping it, with
        // the layout `Box` allocated it with (`Box` uses the global
        // allocator and `Layout::for_value`, and allocates nothing for a
        // zero-sized value). The object is initialised and owns one count.
        unsafe {
            ptr::copy_nonoverlapping(src.cast::<u8>(), dst.as_ptr(), layout.size());
            if layout.size() != 0 {
                dealloc(src.cast::<u8>(), layout);
            }
            let this = Gc::from_inner(NonNull::new_unchecked(value));
            // The handle just made, never listed: what `track_new` needs.
            Gc::track_new(&this);
            this
        }
    }
}

impl<T: ?Sized + Trace + 'static> From<Box<T>> for Gc<T> {
    /// [`Gc::from_box`].
    ///
    /// ```
    /// use pymem::Gc;
    /// let g: Gc<[u32]> = Gc::from(vec![1, 2, 3].into_boxed_slice());
    /// assert_eq!(*g, [1, 2, 3]);
    /// ```
    fn from(b: Box<T>) -> Gc<T> {
        Gc::from_box(b)
    }
}

/// An uninitialised `Gc<[T]>` of `len` elements (strong and weak 1, not
/// yet handed to the collector), and the bytes before its elements.
fn allocate_slice<T: Trace>(len: usize) -> (NonNull<[T]>, usize) {
    let value = match Layout::array::<T>(len) {
        Ok(l) => l,
        Err(_) => panic!("pymem: Gc<[T]> of {len} elements overflows isize"),
    };
    // The answer `GcLayout` gives for the finished slice.
    let header = if <[T; 0]>::may_contain_gc() {
        Some(SliceLay::<T>::header(len))
    } else {
        None
    };
    let elems = allocate(value, header, 1, 1).cast::<T>();
    (NonNull::slice_from_raw_parts(elems, len), prefix(header))
}

/// A `Gc<[T]>` being filled: on a panic (a `clone` that panics) drops
/// the elements written so far and frees the memory.
struct Filling<T> {
    elems: NonNull<[T]>,
    written: usize,
    prefix: usize,
}

impl<T> Drop for Filling<T> {
    fn drop(&mut self) {
        // SAFETY: the first `written` elements are initialised and owned
        // here (no handle exists yet); the memory is freed with the
        // placement it was allocated with.
        unsafe {
            let first = self.elems.cast::<T>().as_ptr();
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(first, self.written));
            free(
                counts_of(self.elems),
                size_of::<T>() * self.elems.len(),
                align_of::<T>(),
                self.prefix,
            );
        }
    }
}

impl<T: Trace + 'static + Clone> From<&[T]> for Gc<[T]> {
    /// Clones the elements into a new `Gc<[T]>`, as `Rc::from(&[T])`.
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let g: Gc<[u64]> = Gc::from(&[1u64, 2, 3][..]);
    /// assert_eq!(g.iter().sum::<u64>(), 6);
    /// assert!(!gc::is_tracked(&g));
    /// ```
    fn from(src: &[T]) -> Gc<[T]> {
        let (elems, prefix) = allocate_slice::<T>(src.len());
        let mut fill = Filling {
            elems,
            written: 0,
            prefix,
        };
        let first = elems.cast::<T>().as_ptr();
        for v in src {
            // SAFETY: `written < len`: in bounds of the allocation.
            unsafe { first.add(fill.written).write(v.clone()) };
            fill.written += 1;
        }
        std::mem::forget(fill);
        // SAFETY: initialised; we own its one strong count.
        let this = unsafe { Gc::from_inner(elems) };
        // SAFETY: the handle just made, never listed.
        unsafe { Gc::track_new(&this) };
        this
    }
}

impl<T: Trace + 'static> From<Vec<T>> for Gc<[T]> {
    /// Moves the elements into a new `Gc<[T]>`, as `Rc::from(Vec<T>)`.
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let inner = Gc::new(1);
    /// let g: Gc<[Gc<i32>]> = Gc::from(vec![inner.clone(), inner]);
    /// assert_eq!(g.len(), 2);
    /// assert!(gc::is_tracked(&g));
    /// ```
    fn from(mut v: Vec<T>) -> Gc<[T]> {
        let (elems, _) = allocate_slice::<T>(v.len());
        // SAFETY: `len` elements fit; the vector no longer owns them once
        // its length is 0 (it then frees only its buffer).
        unsafe {
            ptr::copy_nonoverlapping(v.as_ptr(), elems.cast::<T>().as_ptr(), v.len());
            v.set_len(0);
        }
        drop(v);
        // SAFETY: initialised; we own its one strong count.
        let this = unsafe { Gc::from_inner(elems) };
        // SAFETY: the handle just made, never listed.
        unsafe { Gc::track_new(&this) };
        this
    }
}

impl<T: Trace + 'static, const N: usize> From<[T; N]> for Gc<[T]> {
    /// Moves an array into a new `Gc<[T]>`.
    ///
    /// ```
    /// use pymem::Gc;
    /// let g: Gc<[char]> = Gc::from(['a', 'b']);
    /// assert_eq!(g.len(), 2);
    /// ```
    fn from(a: [T; N]) -> Gc<[T]> {
        crate::coerce_gc!(Gc::new(a) => [T])
    }
}

impl<T: Trace + 'static> FromIterator<T> for Gc<[T]> {
    /// Collects into a new `Gc<[T]>`, as `Rc<[T]>`'s `FromIterator`.
    ///
    /// ```
    /// use pymem::Gc;
    /// let squares: Gc<[u32]> = (1..=4).map(|i| i * i).collect();
    /// assert_eq!(*squares, [1, 4, 9, 16]);
    /// ```
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Gc<[T]> {
        Gc::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: Trace + 'static> Default for Gc<[T]> {
    /// An empty slice.
    ///
    /// ```
    /// use pymem::Gc;
    /// assert!(Gc::<[u8]>::default().is_empty());
    /// ```
    fn default() -> Self {
        Gc::from(Vec::new())
    }
}

impl From<&str> for Gc<str> {
    /// Copies the string into a new `Gc<str>`, as `Rc::from(&str)`;
    /// untracked, with `Rc`'s 16-byte header.
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let s: Gc<str> = Gc::from("hello");
    /// assert_eq!(&*s, "hello");
    /// assert!(!gc::is_tracked(&s));
    /// ```
    #[inline]
    fn from(s: &str) -> Gc<str> {
        let (bytes, _) = allocate_slice::<u8>(s.len());
        // SAFETY: `len` bytes fit; the bytes are valid UTF-8, and `str` and
        // `[u8]` have the same layout and metadata.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), bytes.cast::<u8>().as_ptr(), s.len());
            let this = Gc::from_inner(NonNull::new_unchecked(bytes.as_ptr() as *mut str));
            // The handle just made, never listed: what `track_new` needs.
            Gc::track_new(&this);
            this
        }
    }
}

impl From<String> for Gc<str> {
    /// Copies the string into a new `Gc<str>`, as `Rc::from(String)`.
    ///
    /// ```
    /// use pymem::Gc;
    /// let s: Gc<str> = Gc::from(String::from("owned"));
    /// assert_eq!(s.len(), 5);
    /// ```
    fn from(s: String) -> Gc<str> {
        Gc::from(&s[..])
    }
}

impl Default for Gc<str> {
    /// An empty string.
    ///
    /// ```
    /// use pymem::Gc;
    /// assert_eq!(&*Gc::<str>::default(), "");
    /// ```
    fn default() -> Self {
        Gc::from("")
    }
}

/// Converts a `Gc<T>` into a `Gc<U>` where `T` unsizes to `U`: a value to
/// a trait object it implements (`Gc<Square>` to `Gc<dyn Shape>`), an
/// array to a slice, a trait object to a supertrait's. The stable stand-in
/// for `CoerceUnsized`, which `Rc` uses implicitly. No allocation: the
/// same object, seen through a wide pointer.
///
/// Only unsizing coercions compile (the macro converts through an implicit
/// pointer coercion, which allows nothing else).
///
/// ```
/// use pymem::{coerce_gc, Gc, Trace};
/// use std::fmt::Display;
///
/// trait Label: Trace + Display {}
/// impl Label for u32 {}
///
/// let n = Gc::new(7u32);
/// let l: Gc<dyn Label> = coerce_gc!(n.clone() => dyn Label);
/// assert_eq!(l.to_string(), "7");
/// assert_eq!(Gc::strong_count(&n), 2); // one object, two handles
/// let s: Gc<[u8]> = coerce_gc!(Gc::new([1u8, 2, 3]) => [u8]);
/// assert_eq!(s.len(), 3);
/// ```
#[macro_export]
macro_rules! coerce_gc {
    ($gc:expr => $target:ty) => {{
        let raw = $crate::Gc::into_raw($gc);
        let raw: *const $target = raw;
        // SAFETY: `raw` comes from `Gc::into_raw` and is given back once;
        // the line above is an implicit coercion, so `$target` is the
        // handle's type or one it unsizes to, as `from_raw` requires.
        unsafe { $crate::Gc::<$target>::from_raw(raw) }
    }};
}
