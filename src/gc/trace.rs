//! The [`Trace`] trait, its hidden companions ([`GcLayout`], [`Depth`]),
//! and the impls for std types.

use std::cell::{Cell, LazyCell, OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::ffi::{CStr, OsStr};
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock, TryLockError, TryLockResult};

use super::header::{HeaderSpec, Lay, SliceLay};
use super::tracer::Tracer;

/// A type whose `Gc` edges the cycle collector can enumerate.
///
/// Derive it: `#[derive(Trace)]` visits every field (`#[trace(skip)]`
/// leaves one out) and answers [`may_contain_gc`](Trace::may_contain_gc)
/// from the fields' types. A hand-written impl defines
/// [`trace`](Trace::trace), and [`may_contain_gc`](Trace::may_contain_gc)
/// only to opt out of tracking.
///
/// `Trace` is dyn-compatible: `trait Shape: Trace {}` makes `Gc<dyn
/// Shape>` and `Box<dyn Shape>` fields work, traced through the vtable.
///
/// # Tracking
///
/// [`may_contain_gc`](Trace::may_contain_gc) tells whether a value of the
/// type can own a [`Gc`](crate::Gc) at all. A type that cannot (an
/// integer, a `String`, a `Vec<u8>`, a struct of such fields) cannot be
/// part of a reference cycle, so `Gc::new` does not *track* it: no
/// collector list entry, a 16-byte header like `Rc`'s, no effect on
/// [`gc::get_count`](crate::gc::get_count), as CPython untracks atomic
/// objects. For a sized type the answer is a constant the optimizer
/// folds: `Gc::new` contains no test. The allocation remembers it, so a
/// `Gc<dyn Trait>` is tracked if the concrete type behind it is.
///
/// The default is `true`, so a hand-written impl that defines only `trace`
/// is tracked. Derived and std impls compute the answer from their
/// contents: `false` for primitives, `String`, `Vec<u8>`, `Option<u32>`,
/// `(u32, String)`, `RefCell<Vec<String>>` and derived types of such
/// fields. Recursion stays finite and errs on the side of tracking:
///
/// * a type reached through an indirection (`Vec`, `VecDeque`,
///   `HashMap`, ... : containers that store their elements on the heap)
///   is asked with a budget one smaller, and an exhausted budget answers
///   `true` (the budget is 8 indirections deep), so mutually recursive
///   types (`Expr` holding a `Vec<Stmt>`, `Stmt` a `Vec<Expr>`) compile
///   and are tracked;
/// * `Box<T>` (which also holds `dyn Trait`, whose type is unknown)
///   answers [`std::mem::needs_drop::<T>()`](std::mem::needs_drop): a type
///   without drop glue cannot own a `Gc`; `Box<u64>` and `Box<str>` are
///   untracked, `Box<String>` conservatively tracked;
/// * the derive treats a field that refers to the type itself with the
///   same generic arguments (`Box<Self>`, `Vec<Option<Box<Node<T>>>>`
///   inside `Node<T>`) as adding nothing (the least fixed point: a value
///   owns a `Gc` only if some part other than itself does), so
///   `enum Expr { Num(i64), Add(Box<Expr>, Box<Expr>) }` is untracked.
///   `Node<Gc<Cyc>>` inside `Node<T>` is another type and counts.
///
/// # Safety
///
/// The collector trusts `trace` and `may_contain_gc`. These are the rules,
/// and what breaking each one causes:
///
/// 1. **`trace` must not read data that may be mutably borrowed.** The
///    collector calls it at any allocation of a tracked `Gc` (an automatic
///    collection), at [`gc::collect`](crate::gc::collect) and while
///    reclaiming, that is while frames below may hold a `&mut` into other
///    values. A custom cell built on `UnsafeCell` must check whether its
///    contents are borrowed and, if they are, call
///    [`Tracer::mark_external`] instead of reading them, as `RefCell`'s,
///    `Mutex`'s and `RwLock`'s impls do. Reading them anyway is
///    **undefined behaviour** (a read of data under a live `&mut`); it is
///    why the trait is `unsafe`. Impls that only call `trace` on their
///    fields cannot break this rule.
/// 2. **`trace` visits every `Gc` the value owns** (directly or through
///    fields and containers it owns), by calling `Trace::trace` on it or
///    on something holding it. A `Gc` not visited makes its target look
///    referenced from outside: cycles through that edge are **leaked**,
///    as with `Rc`.
/// 3. **`trace` visits each owned `Gc` once per call, and nothing it does
///    not own** (a `Gc` reached through an `Rc`, a reference or a global
///    is not owned). An extra visit subtracts a reference that does not
///    exist, so live objects can be found unreachable: their values are
///    **dropped early**, and a later dereference of a handle to them
///    **panics** with a message naming the collector (a `Weak` stops
///    upgrading, [`Gc::try_deref`](crate::Gc::try_deref) returns `None`).
///    Memory is freed only when its strong and weak counts reach zero, the
///    collector holds a count on every object it reclaims, and every
///    dereference checks whether the value was dropped, so handles stay
///    safe to use; but a `&T` obtained from a handle *before* the
///    collection and used after it reads a dropped value, which is
///    **undefined behaviour**.
/// 4. **`may_contain_gc` is `false` only if no value of the type can own a
///    `Gc`**, and is the same on every call (a constant of the type).
///    An answer of `false` for a type whose values do own `Gc`s, given
///    consistently, makes `Gc`s of the type untracked, or containers of it
///    skip tracing it: cycles through such values **leak**. An answer
///    that *changes* from call to call breaks rule 3 as well: containers
///    and handles ask it of their elements at every visit, so one phase
///    of a collection may see an edge that another phase does not (the
///    references subtracted are not those followed), and a live object
///    can be found unreachable, with rule 3's consequences (its value
///    **dropped early**; handles stay safe, a `&T` held across the
///    collection does not). Each allocation keeps the tracking it was
///    made with. It is asked inside `trace`, so rule 5 binds it as it
///    binds `trace`; elsewhere (`Gc::new`, a handle's drop) it is asked
///    while the caller's handle keeps the object alive, so a collection
///    it runs there is harmless.
/// 5. **`trace` only reads**: it must not write through a shared
///    reference (borrow a `RefCell` mutably, `Cell::set`, ...), create,
///    clone or drop `Gc`s or `Weak`s, allocate tracked objects, or run
///    other code that may do any of these (callbacks, `Drop` impls: a
///    dropped handle may run its value's). `RefCell`'s impl reads the
///    contents without taking a borrow
///    ([`RefCell::try_borrow_unguarded`], which leaves the borrow flag
///    alone: tracing writes nothing), so a mutable borrow of a cell that
///    an enclosing `trace` is reading, made by `trace` or by code it ran,
///    is **undefined behaviour**, not a panic. Whatever else breaks this
///    rule, or a panic, keeps memory safety: the collector re-reads its
///    list; an object whose last handle is dropped meanwhile leaves the
///    list at once, but its value's drop and its memory wait until the
///    collection ends, so no value a `trace` is reading (its own `self`
///    included) is freed under it; [`Gc::get_mut`](crate::Gc::get_mut)
///    and [`Gc::try_unwrap`](crate::Gc::try_unwrap) treat every tracked
///    object as shared (`None`, `Err`) and
///    [`Gc::make_mut`](crate::Gc::make_mut) panics; a panic restores the
///    lists and is resumed. Which garbage that collection finds is
///    unspecified: rules 2 and 3 apply to the result. Taking a lock
///    without waiting, as `Mutex`'s and `RwLock`'s impls do (`try_lock`,
///    `try_read`), writes only the lock's own state, which no read of
///    the collector's covers: it is allowed.
///
/// The `#[doc(hidden)]` items of this trait and [`GcLayout`] are pymem's:
/// they are not part of the API and are not to be implemented by hand.
///
/// **Why the derive is always safe**: it visits each field that is not
/// `#[trace(skip)]` exactly once, through the field type's own `Trace`,
/// and reads nothing itself (rules 1 and 5 hold, and 2 and 3 reduce to the
/// fields' impls; a `#[trace(skip)]` field holding a `Gc` is a documented
/// leak); its `may_contain_gc` is an OR of the field types' answers, a
/// constant (rule 4); and it requires every traced field type to
/// implement `Trace`, so it cannot be used on a field it does not
/// understand.
///
/// There is no impl for `Rc<T>`/`Arc<T>` holding a `Gc`: a value shared by
/// several owners would be visited once per owner, while it holds only one
/// count of the `Gc` inside, which breaks rule 3. `Rc<str>`, `Rc<[u8]>`,
/// `Rc<Path>` and the like hold no `Gc` and implement `Trace`; mark other
/// `Rc` fields `#[trace(skip)]` (a `Gc` inside one is then never traced:
/// rule 2, a leak if it closes a cycle).
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
/// // SAFETY: `trace` visits every `Gc` a `Node` owns, each once;
/// // `may_contain_gc` keeps its default (`true`, a constant).
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `pymem::Trace`, so a `Gc` cannot hold it",
    label = "the collector cannot look inside `{Self}`",
    note = "add `#[derive(pymem::Trace)]` to the type if it is yours (its fields then need `Trace` too)",
    note = "or mark the field `#[trace(skip)]` if it can hold no `Gc` (a `Gc` in a skipped field is never traced, so a cycle through it is not collected)"
)]
pub unsafe trait Trace: GcLayout {
    /// Visits every `Gc` this value owns by calling `Trace::trace` on it
    /// (or on the field or container holding it).
    fn trace(&self, tracer: &mut Tracer);

    /// Whether a value of this type may own a [`Gc`](crate::Gc); `false`
    /// makes `Gc<Self>` untracked (see [Tracking](Trace#tracking)). A
    /// constant of the type (rule 4 of [Safety](Trace#safety)).
    ///
    /// Defaults to `true`. Override it only to return `false` in a
    /// hand-written impl of a type that holds no `Gc`; a container must
    /// not forward it to its element type (mutually recursive types would
    /// recurse without end): derive instead.
    ///
    /// ```
    /// use pymem::{Gc, Trace};
    /// use std::cell::RefCell;
    /// assert!(!<(u32, String)>::may_contain_gc());
    /// assert!(!<RefCell<Vec<String>>>::may_contain_gc());
    /// assert!(<Vec<Gc<u32>>>::may_contain_gc());
    /// ```
    #[inline(always)]
    fn may_contain_gc() -> bool
    where
        Self: Sized,
    {
        true
    }

    /// `may_contain_gc` with a budget of indirections (see
    /// [Tracking](Trace#tracking)); generated by the derive, implemented
    /// by the std containers. Not part of the API.
    #[doc(hidden)]
    #[inline(always)]
    fn __may_contain_gc_within<D: Depth>() -> bool
    where
        Self: Sized,
    {
        Self::may_contain_gc()
    }
}

/// The tracking answer and collector header of a value, dispatched
/// through the vtable of a trait object. Implemented by pymem for every
/// sized `Trace` type (from [`Trace::may_contain_gc`]), for slices and for
/// `str`, `Path`, `OsStr`, `CStr`; not part of the API.
///
/// # Safety
/// `__gc_header` returns `None` (untracked) or the header of this value's
/// type, whose vtable's functions handle an allocation made for it: a
/// wrong one is undefined behaviour (the collector would trace, drop and
/// free the allocation as another type).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is a dynamically sized type that pymem cannot place in a `Gc`",
    note = "unsized `Gc` values are `str`, slices and trait objects (`dyn Trait` where `Trait: pymem::Trace`)"
)]
pub unsafe trait GcLayout {
    /// The header a tracked allocation of this value needs (`None` if it
    /// is untracked).
    fn __gc_header(&self) -> Option<HeaderSpec>;
}

// SAFETY: the header spec names `Lay::<T>`'s vtable, whose entries treat
// the value as a `T` (this very type), and it is `None` exactly when
// `T::may_contain_gc()` is false (the allocation's tracking decision).
unsafe impl<T: Trace> GcLayout for T {
    #[inline(always)]
    fn __gc_header(&self) -> Option<HeaderSpec> {
        if T::may_contain_gc() {
            Some(Lay::<T>::HEADER)
        } else {
            None
        }
    }
}

// SAFETY: the vtable reads the length the header spec stores.
unsafe impl<T: Trace> GcLayout for [T] {
    #[inline(always)]
    fn __gc_header(&self) -> Option<HeaderSpec> {
        if <[T; 0]>::may_contain_gc() {
            Some(SliceLay::<T>::header(self.len()))
        } else {
            None
        }
    }
}

/// A budget of indirections for [`Trace::__may_contain_gc_within`]: a
/// type-level count ([`Exhausted`], [`Deeper`]) so that every recursion
/// through containers ends at compile time. Not part of the API.
#[doc(hidden)]
pub trait Depth {
    /// The answer of `T` one indirection further: `true` (conservative)
    /// once the budget is exhausted.
    fn through<T: Trace>() -> bool;
}

/// An exhausted [`Depth`]. Not part of the API.
#[doc(hidden)]
pub enum Exhausted {}

/// One more level of [`Depth`]. Not part of the API.
#[doc(hidden)]
pub struct Deeper<D>(PhantomData<D>);

impl Depth for Exhausted {
    #[inline(always)]
    fn through<T: Trace>() -> bool {
        true
    }
}

impl<D: Depth> Depth for Deeper<D> {
    #[inline(always)]
    fn through<T: Trace>() -> bool {
        T::__may_contain_gc_within::<D>()
    }
}

/// The budget `may_contain_gc` starts with: 8 indirections. Not part of
/// the API.
#[doc(hidden)]
pub type DefaultDepth = Deeper<Deeper<Deeper<Deeper<Deeper<Deeper<Deeper<Deeper<Exhausted>>>>>>>>;

/// What the derive substitutes for a field's reference to the type itself
/// when computing `may_contain_gc` (the least fixed point, see
/// [Tracking](Trace#tracking)): adds nothing. Never traced. Not part of
/// the API.
#[doc(hidden)]
pub enum SelfReference {}

// SAFETY: owns nothing (uninhabited); a constant answer.
unsafe impl Trace for SelfReference {
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
    #[inline(always)]
    fn may_contain_gc() -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// std impls

/// The tracking methods of a type that contains `$t` inline (no budget
/// spent) or behind an indirection (one level spent).
macro_rules! tracking {
    (inline $($t:ident),+) => {
        #[inline(always)]
        fn may_contain_gc() -> bool {
            Self::__may_contain_gc_within::<DefaultDepth>()
        }
        #[inline(always)]
        fn __may_contain_gc_within<Budget: Depth>() -> bool {
            false $(|| $t::__may_contain_gc_within::<Budget>())+
        }
    };
    (behind $($t:ident),+) => {
        #[inline(always)]
        fn may_contain_gc() -> bool {
            Self::__may_contain_gc_within::<DefaultDepth>()
        }
        #[inline(always)]
        fn __may_contain_gc_within<Budget: Depth>() -> bool {
            false $(|| Budget::through::<$t>())+
        }
    };
}

macro_rules! atomic {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: holds no Gc; visiting nothing is exact; a constant.
        unsafe impl Trace for $t {
            #[inline(always)]
            fn trace(&self, _: &mut Tracer) {}
            #[inline(always)]
            fn may_contain_gc() -> bool {
                false
            }
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
    String,
    std::ffi::OsString,
    std::ffi::CString,
    std::path::PathBuf,
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
    Rc<str>,
    Rc<[u8]>,
    Rc<Path>,
    Rc<OsStr>,
    Rc<CStr>,
    Arc<str>,
    Arc<[u8]>,
    Arc<Path>,
    Arc<OsStr>,
    Arc<CStr>,
);

/// Unsized types that hold no `Gc`: `Gc<str>` and friends are untracked.
macro_rules! atomic_unsized {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: holds no Gc, so visiting nothing is every owned edge,
        // once (rules 2, 3); reads nothing (1, 5).
        unsafe impl Trace for $t {
            #[inline(always)]
            fn trace(&self, _: &mut Tracer) {}
        }
        // SAFETY: never tracked, so no header is needed.
        unsafe impl GcLayout for $t {
            #[inline(always)]
            fn __gc_header(&self) -> Option<HeaderSpec> {
                None
            }
        }
    )*};
}

atomic_unsized!(str, Path, OsStr, CStr);

// SAFETY: a `&'static str` borrows static data and owns no Gc.
unsafe impl Trace for &'static str {
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
    #[inline(always)]
    fn may_contain_gc() -> bool {
        false
    }
}

// SAFETY: owns nothing (a marker), so visiting nothing is exact (rules 2,
// 3); `false` is a constant (4).
unsafe impl<T: ?Sized> Trace for PhantomData<T> {
    #[inline(always)]
    fn trace(&self, _: &mut Tracer) {}
    #[inline(always)]
    fn may_contain_gc() -> bool {
        false
    }
}

// SAFETY: reads the contents through `as_ptr` without moving them (rule 1
// of the contract: no `&mut` to them can be alive). No
// `&mut` to a `Cell`'s contents is alive while the collector traces: the
// cell is `!Sync` (only this thread), its methods hold one only across a
// bitwise move or swap (`replace`, `set`, `take`, `swap`), running no user
// code meanwhile (`set` drops the old value after the write), and
// `get_mut` needs `&mut Cell`, which for a value inside a `Gc` only
// `Gc::get_mut` gives (and the collector does not trace a value lent out
// that way: it is flagged `LENT_MUT` until the `&mut` provably ended, see
// `header::LENT_MUT`), or a `RefCell` or lock guard (whose impls do not
// read contents that are borrowed mutably). `trace` itself writes no
// `Cell` (rule 5). So `Cell<Option<Gc<T>>>` is traced without
// `take`/`replace`.
unsafe impl<T: Trace> Trace for Cell<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            // SAFETY: see the impl's comment: no `&mut` to the contents
            // exists now and none is created while the reference lives.
            unsafe { &*self.as_ptr() }.trace(tracer)
        }
    }
    tracking!(inline T);
}

// SAFETY: visits the contents when the cell is not mutably borrowed; a
// mutably borrowed cell is reported as an external reference
// (conservative).
unsafe impl<T: Trace> Trace for RefCell<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            // SAFETY: `try_borrow_unguarded` reads without writing the
            // borrow flag; the reference must not outlive a mutable
            // borrow starting. It lives only for this `trace` call, during
            // which nothing borrows a `RefCell` mutably: the collector
            // runs no code but `trace` impls, and those neither mutate nor
            // run code that may (rule 5 of the `Trace` contract).
            match unsafe { self.try_borrow_unguarded() } {
                Ok(v) => v.trace(tracer),
                Err(_) => tracer.mark_external(),
            }
        }
    }
    tracking!(inline T);
}

/// Traces what `Mutex::try_lock` / `RwLock::try_read` gave: the contents
/// if the lock was had at once (poisoned or not: the value is still
/// there), else an external reference, like a borrowed `RefCell` (`Gc` is
/// `!Send`, so a lock holding one is only used by this thread, and a held
/// lock is held by a frame below the collection: waiting would deadlock).
fn trace_locked<T: Trace, G: Deref<Target = T>>(r: TryLockResult<G>, tracer: &mut Tracer) {
    match r {
        Ok(v) => v.trace(tracer),
        Err(TryLockError::Poisoned(p)) => p.into_inner().trace(tracer),
        Err(TryLockError::WouldBlock) => tracer.mark_external(),
    }
}

// SAFETY: see `trace_locked`.
unsafe impl<T: Trace> Trace for Mutex<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            trace_locked(self.try_lock(), tracer)
        }
    }
    tracking!(inline T);
}

// SAFETY: see `trace_locked`: a read lock if one can be had at once.
unsafe impl<T: Trace> Trace for RwLock<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            trace_locked(self.try_read(), tracer)
        }
    }
    tracking!(inline T);
}

// SAFETY: an empty cell owns nothing; a full one owns its value. A cell
// being initialised is empty until the initialiser returns.
unsafe impl<T: Trace> Trace for OnceCell<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if let Some(v) = self.get() {
            v.trace(tracer)
        }
    }
    tracking!(inline T);
}

// SAFETY: a forced cell owns its value; an unforced one holds only the
// closure, which is not forced (that would run user code) and cannot be
// traced: `Gc`s it captured are unvisited edges (rule 2: a cycle through
// them leaks).
unsafe impl<T: Trace, F: FnOnce() -> T> Trace for LazyCell<T, F> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if let Some(v) = LazyCell::get(self) {
            v.trace(tracer)
        }
    }
    tracking!(inline T);
}

// SAFETY: forwards to the boxed value, which the box owns. Tracking is
// `needs_drop::<T>()`: a constant of `T`, and `false` only for types
// without drop glue, which cannot own a `Gc` (a `Gc` has drop glue). The
// impl covers `Box<dyn Trait>`, so it cannot ask `T` itself.
unsafe impl<T: Trace + ?Sized> Trace for Box<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        (**self).trace(tracer)
    }
    #[inline(always)]
    fn may_contain_gc() -> bool {
        std::mem::needs_drop::<T>()
    }
}

// SAFETY: visits the contents it owns, once, through their own impl, and
// reads nothing else (rules 1-3 and 5 reduce to the contents' impl).
unsafe impl<T: Trace> Trace for Option<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            if let Some(v) = self {
                v.trace(tracer)
            }
        }
    }
    tracking!(inline T);
}

// SAFETY: visits the contents it owns, once, through their own impl, and
// reads nothing else (rules 1-3 and 5 reduce to the contents' impl).
unsafe impl<T: Trace, E: Trace> Trace for Result<T, E> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        match self {
            Ok(v) => v.trace(tracer),
            Err(e) => e.trace(tracer),
        }
    }
    tracking!(inline T, E);
}

// SAFETY: visits the contents it owns, once, through their own impl, and
// reads nothing else (rules 1-3 and 5 reduce to the contents' impl).
unsafe impl<T: Trace> Trace for std::cmp::Reverse<T> {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        self.0.trace(tracer)
    }
    tracking!(inline T);
}

macro_rules! seq {
    ($($name:ident<$t:ident>),* $(,)?) => {$(
        // SAFETY: the collection owns its elements: visiting each once,
        // through the element's impl, is exact (rules 1-3 and 5 reduce
        // to it).
        unsafe impl<$t: Trace> Trace for $name<$t> {
            #[inline]
            fn trace(&self, tracer: &mut Tracer) {
                if $t::may_contain_gc() {
                    for v in self.iter() {
                        v.trace(tracer);
                    }
                }
            }
            tracking!(behind $t);
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

// SAFETY: the slice owns its elements: visiting each once, through the
// element's impl, is exact (rules 1-3 and 5 reduce to it). (A slice is only ever a `Gc`'s value or a
// box's contents, never a field: its tracking is its `GcLayout`'s.)
unsafe impl<T: Trace> Trace for [T] {
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            for v in self {
                v.trace(tracer);
            }
        }
    }
}

// SAFETY: the array owns its elements: visiting each once, through the
// element's impl, is exact (rules 1-3 and 5 reduce to it).
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    #[inline(always)]
    fn trace(&self, tracer: &mut Tracer) {
        self.as_slice().trace(tracer)
    }
    tracking!(inline T);
}

// SAFETY: the set owns its elements: visiting each once, through the
// element's impl, is exact (rules 1-3 and 5 reduce to it; the hasher `S`
// is never run).
unsafe impl<T: Trace, S> Trace for HashSet<T, S> {
    #[inline]
    fn trace(&self, tracer: &mut Tracer) {
        if T::may_contain_gc() {
            for v in self {
                v.trace(tracer);
            }
        }
    }
    tracking!(behind T);
}

macro_rules! map {
    ($($name:ident<K, V $(, $s:ident)?>),* $(,)?) => {$(
        // SAFETY: the map owns its keys and values: visiting each once,
        // through their impls, is exact (rules 1-3 and 5 reduce to them).
        unsafe impl<K: Trace, V: Trace $(, $s)?> Trace for $name<K, V $(, $s)?> {
            #[inline]
            fn trace(&self, tracer: &mut Tracer) {
                if Self::may_contain_gc() {
                    for (k, v) in self {
                        k.trace(tracer);
                        v.trace(tracer);
                    }
                }
            }
            tracking!(behind K, V);
        }
    )*};
}

map!(HashMap<K, V, S>, BTreeMap<K, V>);

macro_rules! tuple {
    ($(($($t:ident $i:tt),+))*) => {$(
        // SAFETY: the tuple owns its components: visiting each once,
        // through its impl, is exact (rules 1-3 and 5 reduce to them).
        unsafe impl<$($t: Trace),+> Trace for ($($t,)+) {
            #[inline(always)]
            fn trace(&self, tracer: &mut Tracer) {
                $(self.$i.trace(tracer);)+
            }
            tracking!(inline $($t),+);
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
