//! [`AnyTrace`]: `Gc<dyn AnyTrace>` is pymem's `Gc<dyn Any>`, with
//! [`Gc::downcast`].
//!
//! `Gc<dyn Any>` itself cannot exist: a `Gc`'s value must be `Trace`, and
//! `dyn Any` says nothing about `Gc`s inside. `AnyTrace` is both, for
//! every `'static` `Trace` type, so a heterogeneous heap of objects that
//! may form cycles is `Vec<Gc<dyn AnyTrace>>`. Downcasting checks the
//! concrete type's `TypeId` (through `Any`'s vtable entry) and then
//! reuses the same allocation as a `Gc<U>`: it was made for exactly that
//! type, so its layout and collector vtable are `U`'s. A user trait can
//! offer the same by extending it: `trait Shape: AnyTrace {}` gives
//! `Gc<dyn Shape>::downcast`.

use std::any::{Any, TypeId};

use super::ptr::Gc;
use super::trace::Trace;

/// A [`Trace`] type that can be downcast; implemented for every `'static`
/// `Trace` type. See [`Gc::downcast`].
///
/// ```
/// use pymem::{coerce_gc, gc::AnyTrace, Gc};
/// let objs: Vec<Gc<dyn AnyTrace>> = vec![
///     coerce_gc!(Gc::new(1u32) => dyn AnyTrace),
///     coerce_gc!(Gc::new(String::from("two")) => dyn AnyTrace),
/// ];
/// let strings = objs.iter().filter_map(|o| Gc::downcast_ref::<String>(o)).count();
/// assert_eq!(strings, 1);
/// ```
pub trait AnyTrace: Trace + Any {}

impl<T: Trace + Any> AnyTrace for T {}

impl<T: ?Sized + AnyTrace> Gc<T> {
    /// The same object as a `Gc<U>` if its concrete type is `U`, else the
    /// handle back, as [`Rc::downcast`](std::rc::Rc::downcast).
    ///
    /// # Panics
    /// If the collector already dropped the value (see [`Gc::try_deref`]).
    ///
    /// ```
    /// use pymem::{gc::AnyTrace, Gc, Trace};
    /// use std::cell::RefCell;
    ///
    /// #[derive(Trace)]
    /// struct Node { next: RefCell<Option<Gc<dyn AnyTrace>>> }
    ///
    /// let n: Gc<dyn AnyTrace> = Gc::from_box(Box::new(Node { next: RefCell::new(None) }));
    /// let n = n.downcast::<String>().unwrap_err(); // not a String
    /// let node: Gc<Node> = n.downcast::<Node>().ok().unwrap();
    /// assert!(node.next.borrow().is_none());
    /// ```
    pub fn downcast<U: AnyTrace>(self) -> Result<Gc<U>, Gc<T>> {
        if Gc::downcast_ref::<U>(&self).is_none() {
            return Err(self);
        }
        let raw = Gc::into_raw(self).cast::<U>();
        // SAFETY: the allocation was made for a `U` (same `TypeId`), by
        // `Gc::<U>::new` or by `from_box` of a `Box<U>` coerced to `T`; the
        // pointer is `into_raw`'s (keeping its address), given back once.
        Ok(unsafe { Gc::from_raw(raw) })
    }

    /// The value as a `&U` if its concrete type is `U`.
    ///
    /// # Panics
    /// If the collector already dropped the value (see [`Gc::try_deref`]).
    ///
    /// ```
    /// use pymem::{coerce_gc, gc::AnyTrace, Gc};
    /// let o: Gc<dyn AnyTrace> = coerce_gc!(Gc::new(5u8) => dyn AnyTrace);
    /// assert_eq!(Gc::downcast_ref::<u8>(&o), Some(&5));
    /// assert_eq!(Gc::downcast_ref::<u16>(&o), None);
    /// ```
    pub fn downcast_ref<U: AnyTrace>(this: &Self) -> Option<&U> {
        let v: &T = this;
        if <T as Any>::type_id(v) == TypeId::of::<U>() {
            // SAFETY: the value's concrete type is `U`.
            Some(unsafe { &*(v as *const T).cast::<U>() })
        } else {
            None
        }
    }
}
