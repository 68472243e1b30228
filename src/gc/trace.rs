//! The [`Trace`] trait, the [`Tracer`] the collector hands to it, and the
//! impls for std types.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::marker::PhantomData;

use super::tracer::Tracer;

/// A type whose `Gc` edges the cycle collector can enumerate.
///
/// `trace` must call [`Trace::trace`] on every field that may own a
/// [`Gc`](crate::Gc) (directly or through containers), and on nothing
/// else. Derive it with `#[derive(Trace)]` rather than writing it by hand.
///
/// # Tracking
///
/// [`MAY_CONTAIN_GC`](Trace::MAY_CONTAIN_GC) tells, at compile time,
/// whether a value of the type can own a `Gc` at all. A type that cannot
/// (an integer, a `String`, a `Vec<u8>`, a struct of such fields) cannot
/// be part of a reference cycle, so `Gc::new` does not *track* it: no
/// collector list entry, a 16-byte header like `Rc`'s, no effect on
/// [`gc::get_count`](crate::gc::get_count), exactly as CPython untracks
/// atomic objects. The default is `true`, so a hand-written impl that
/// defines only `trace` is tracked; opt out explicitly.
///
/// # Safety
///
/// The collector trusts `trace` and `MAY_CONTAIN_GC`. Apart from the
/// mutation rule below (whose breach is undefined behaviour), a wrong
/// impl can only cause these:
///
/// * a `Gc` edge not visited: the objects behind it look referenced from
///   outside, so a cycle through it is **leaked** (as with `Rc`);
/// * an edge visited twice, or a `Gc` visited that the value does not
///   own: the collector may find live objects unreachable and drop their
///   values early; a later dereference of such a `Gc` **panics** with a
///   message naming the collector (memory is never freed while a handle
///   exists);
/// * `MAY_CONTAIN_GC = false` on a type that does own a `Gc`: cycles
///   through it leak.
///
/// There is no impl for `Rc`/`Arc`: a `Gc` inside a shared `Rc` would be
/// visited once per owner of the `Rc`. Mark such fields `#[trace(skip)]`
/// when they hold no `Gc`.
///
/// `trace` must not mutate anything reachable from `self`: in
/// particular it must never borrow a `RefCell` mutably (nor write
/// through any other interior mutability). The collector reads
/// `RefCell`s while tracing without taking a borrow
/// (`RefCell::try_borrow_unguarded`, which does not write the borrow
/// flag): that is sound only because nothing else runs while a `trace`
/// holds such a read, so a `trace` that borrows mutably is **undefined
/// behaviour**, not a panic. Derived impls only call `trace` on fields.
///
/// `trace` must not create or drop `Gc`s or run arbitrary code; if it
/// does or panics, the collection is abandoned or becomes conservative.
/// It is `unsafe` to implement because the rest of the crate's guarantees
/// (no leak of cycles, and the unguarded reads above) rest on it.
///
/// # Examples
///
/// ```
/// use pymem::{Gc, Trace, Tracer};
/// use std::cell::RefCell;
///
/// // Usually: #[derive(Trace)]. By hand:
/// struct Node {
///     label: String,
///     next: RefCell<Option<Gc<Node>>>,
/// }
/// // SAFETY: `trace` visits every `Gc` a `Node` owns, each once.
/// unsafe impl Trace for Node {
///     fn trace(&self, tracer: &mut Tracer) {
///         self.next.trace(tracer); // `label` holds no Gc
///     }
/// }
///
/// let a = Gc::new(Node { label: "a".into(), next: RefCell::new(None) });
/// *a.next.borrow_mut() = Some(a.clone()); // a cycle
/// assert_eq!(a.label, "a");
/// drop(a);
/// assert_eq!(pymem::gc::collect(), 1);
/// ```
pub unsafe trait Trace {
    /// Whether a value of this type may own a [`Gc`](crate::Gc); `false`
    /// makes `Gc<Self>` untracked (see the [trait docs](Trace#tracking)).
    ///
    /// Defaults to `true`. Std impls set it from their contents: `false`
    /// for primitives, `String`, `Vec<u8>`, `Option<u32>`,
    /// `(u32, String)`, `RefCell<Vec<String>>`; the derive ORs its
    /// fields' values.
    ///
    /// ```
    /// use pymem::{Gc, Trace};
    /// assert!(!<(u32, String) as Trace>::MAY_CONTAIN_GC);
    /// assert!(<Vec<Gc<u32>> as Trace>::MAY_CONTAIN_GC);
    /// ```
    const MAY_CONTAIN_GC: bool = true;

    /// Visits every `Gc` this value owns by calling `Trace::trace` on it
    /// (or on the field or container holding it).
    fn trace(&self, tracer: &mut Tracer);
}

macro_rules! atomic {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: holds no Gc; visiting nothing is exact.
        unsafe impl Trace for $t {
            const MAY_CONTAIN_GC: bool = false;
            #[inline(always)]
            fn trace(&self, _: &mut Tracer) {}
        }
    )*};
}

atomic!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    str,
    String,
    std::ffi::OsString,
    std::ffi::OsStr,
    std::ffi::CString,
    std::ffi::CStr,
    std::path::PathBuf,
    std::path::Path,
    std::time::Duration,
    std::time::Instant,
    std::time::SystemTime,
    std::cmp::Ordering,
    std::num::NonZeroU8,
    std::num::NonZeroU16,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroU128,
    std::num::NonZeroUsize,
    std::num::NonZeroI8,
    std::num::NonZeroI16,
    std::num::NonZeroI32,
    std::num::NonZeroI64,
    std::num::NonZeroI128,
    std::num::NonZeroIsize,
    std::sync::atomic::AtomicBool,
    std::sync::atomic::AtomicU8,
    std::sync::atomic::AtomicU16,
    std::sync::atomic::AtomicU32,
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicI8,
    std::sync::atomic::AtomicI16,
    std::sync::atomic::AtomicI32,
    std::sync::atomic::AtomicI64,
    std::sync::atomic::AtomicIsize,
);

// SAFETY: a `&'static str` borrows static data and owns no Gc.
unsafe impl Trace for &'static str {
    const MAY_CONTAIN_GC: bool = false;
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: owns nothing.
unsafe impl<T: ?Sized> Trace for PhantomData<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: a `Cell<T: Copy>` cannot hold a `Gc` (`Gc` is not `Copy`).
unsafe impl<T: Copy> Trace for Cell<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: visits the contents when the cell is not mutably borrowed; a
// mutably borrowed cell is reported as an external reference
// (conservative).
unsafe impl<T: Trace + ?Sized> Trace for RefCell<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            // SAFETY: `try_borrow_unguarded` reads without writing the
            // borrow flag; the reference must not outlive a mutable
            // borrow starting. It lives only for this `trace` call, during
            // which the collector runs no code but `trace` impls, and those
            // never borrow a `RefCell` mutably (the `Trace` contract's
            // rule on mutation, see the trait docs).
            match unsafe { self.try_borrow_unguarded() } {
                Ok(v) => v.trace(tracer),
                Err(_) => tracer.mark_external(),
            }
        }
    }
}

// SAFETY: forwards to the boxed value, which the box owns.
unsafe impl<T: Trace + ?Sized> Trace for Box<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            (**self).trace(tracer)
        }
    }
}

// SAFETY: forwards to the contents.
unsafe impl<T: Trace> Trace for Option<T> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            if let Some(v) = self {
                v.trace(tracer)
            }
        }
    }
}

// SAFETY: forwards to the contents.
unsafe impl<T: Trace, E: Trace> Trace for Result<T, E> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC || E::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        match self {
            Ok(v) => v.trace(tracer),
            Err(e) => e.trace(tracer),
        }
    }
}

macro_rules! seq {
    ($($name:ident<$t:ident>),* $(,)?) => {$(
        // SAFETY: visits each element, all owned by the collection.
        unsafe impl<$t: Trace> Trace for $name<$t> {
            const MAY_CONTAIN_GC: bool = $t::MAY_CONTAIN_GC;
            #[inline]
            fn trace(&self, tracer: &mut Tracer) {
                if $t::MAY_CONTAIN_GC {
                    for v in self.iter() {
                        v.trace(tracer);
                    }
                }
            }
        }
    )*};
}

seq!(
    Vec<T>,
    VecDeque<T>,
    LinkedList<T>,
    BTreeSet<T>,
    BinaryHeap<T>
);

// SAFETY: visits each element.
unsafe impl<T: Trace> Trace for [T] {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            for v in self {
                v.trace(tracer);
            }
        }
    }
}

// SAFETY: visits each element.
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        self.as_slice().trace(tracer)
    }
}

// SAFETY: visits each element.
unsafe impl<T: Trace, S> Trace for HashSet<T, S> {
    const MAY_CONTAIN_GC: bool = T::MAY_CONTAIN_GC;
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if T::MAY_CONTAIN_GC {
            for v in self {
                v.trace(tracer);
            }
        }
    }
}

// SAFETY: visits each key and value.
unsafe impl<K: Trace, V: Trace, S> Trace for HashMap<K, V, S> {
    const MAY_CONTAIN_GC: bool = K::MAY_CONTAIN_GC || V::MAY_CONTAIN_GC;
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if Self::MAY_CONTAIN_GC {
            for (k, v) in self {
                k.trace(tracer);
                v.trace(tracer);
            }
        }
    }
}

// SAFETY: visits each key and value.
unsafe impl<K: Trace, V: Trace> Trace for BTreeMap<K, V> {
    const MAY_CONTAIN_GC: bool = K::MAY_CONTAIN_GC || V::MAY_CONTAIN_GC;
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if Self::MAY_CONTAIN_GC {
            for (k, v) in self {
                k.trace(tracer);
                v.trace(tracer);
            }
        }
    }
}

macro_rules! tuple {
    ($(($($t:ident $i:tt),+))*) => {$(
        // SAFETY: visits each component.
        unsafe impl<$($t: Trace),+> Trace for ($($t,)+) {
            const MAY_CONTAIN_GC: bool = false $(|| $t::MAY_CONTAIN_GC)+;
            #[inline(always)]
            fn trace(&self, tracer: &mut Tracer) {
                $(self.$i.trace(tracer);)+
            }
        }
    )*};
}

tuple! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11)
}
