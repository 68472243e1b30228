//! `Gc`/`Weak` behave like `Rc`/`rc::Weak` wherever there is no cycle
//! (DESIGN.md, "Public API" and the `Rc` contract details). Runs on the
//! system allocator.

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use pymem::{Gc, Trace, Tracer, Weak};

/// Counts its drops in a shared cell; holds no `Gc` (untracked when derived,
/// but here written by hand, so tracked).
struct Counted {
    id: u32,
    drops: Rc<Cell<u32>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Counted {
    fn trace(&self, _tracer: &mut Tracer) {}
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

/// A node of an acyclic chain.
struct Link {
    next: Option<Gc<Link>>,
    drops: Rc<Cell<u32>>,
}

// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Link {
    fn trace(&self, tracer: &mut Tracer) {
        self.next.trace(tracer);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[test]
fn new_deref_and_clone_share_the_value() {
    let a = Gc::new(String::from("hello"));
    let b = a.clone();
    assert_eq!(&*a, "hello");
    assert_eq!(b.len(), 5);
    assert!(Gc::ptr_eq(&a, &b));
    assert_eq!(Gc::as_ptr(&a), Gc::as_ptr(&b));
    assert_eq!(Gc::as_ptr(&a), &*a as *const String);
    let c = Gc::new(String::from("hello"));
    assert!(!Gc::ptr_eq(&a, &c));
    assert_ne!(Gc::as_ptr(&a), Gc::as_ptr(&c));
}

#[test]
fn display_passes_the_formatter_through() {
    assert_eq!(format!("{}", Gc::new(42)), "42");
    assert_eq!(format!("{:>5}", Gc::new(42)), "   42");
    assert_eq!(format!("{:<5}|", Gc::new(42)), "42   |");
    assert_eq!(format!("{:05}", Gc::new(42)), "00042");
    assert_eq!(format!("{:.2}", Gc::new(1.23456f64)), "1.23");
    assert_eq!(format!("{:^7}", Gc::new(String::from("ab"))), "  ab   ");
}

#[test]
fn debug_forwards() {
    assert_eq!(format!("{:?}", Gc::new(String::from("x"))), "\"x\"");
    assert_eq!(format!("{:?}", Gc::new(vec![1u8, 2])), "[1, 2]");
    assert_eq!(format!("{:#x?}", Gc::new(255u32)), "0xff");
    assert_eq!(format!("{:?}", Gc::new(Some(3u32))), "Some(3)");
}

#[test]
fn pointer_formats_the_address() {
    let a = Gc::new(7u64);
    let p = format!("{:p}", a);
    assert_eq!(p, format!("{:p}", Gc::as_ptr(&a)));
    assert!(p.starts_with("0x"));
}

#[test]
fn comparisons_and_hash_forward() {
    let one = Gc::new(1u32);
    let one_b = Gc::new(1u32);
    let two = Gc::new(2u32);
    assert_eq!(one, one_b);
    assert_ne!(one, two);
    assert!(one < two);
    assert!(two >= one);
    assert_eq!(one.cmp(&two), std::cmp::Ordering::Less);
    assert_eq!(two.partial_cmp(&one), Some(std::cmp::Ordering::Greater));
    assert_eq!(hash_of(&one), hash_of(&1u32));
    assert_eq!(hash_of(&Gc::new(String::from("k"))), hash_of("k"));

    // NaN: PartialEq forwards (no pointer-equality shortcut for PartialEq).
    let nan = Gc::new(f64::NAN);
    #[allow(clippy::eq_op)]
    let nan_eq_self = nan == nan;
    assert!(!nan_eq_self);

    // Ordered containers use the forwarded Ord.
    let set: BTreeSet<Gc<u32>> = [3u32, 1, 2].into_iter().map(Gc::new).collect();
    let v: Vec<u32> = set.iter().map(|g| **g).collect();
    assert_eq!(v, [1, 2, 3]);
}

#[test]
fn as_ref_borrow_from_default() {
    let g = Gc::new(String::from("abc"));
    let r: &String = g.as_ref();
    assert_eq!(r, "abc");
    let b: &String = g.borrow();
    assert_eq!(b, "abc");

    // Borrow<T> lets a set of Gc<String> be queried by &String.
    let mut set = HashSet::new();
    set.insert(Gc::new(String::from("k1")));
    set.insert(Gc::new(String::from("k2")));
    assert!(set.contains(&String::from("k1")));
    assert!(!set.contains(&String::from("k3")));

    let f: Gc<u32> = Gc::from(9);
    assert_eq!(*f, 9);
    let f2: Gc<String> = String::from("into").into();
    assert_eq!(&*f2, "into");

    let d: Gc<u32> = Gc::default();
    assert_eq!(*d, 0);
    let ds: Gc<String> = Default::default();
    assert!(ds.is_empty());
    let dv: Gc<Vec<u8>> = Gc::default();
    assert!(dv.is_empty());
}

#[test]
fn strong_and_weak_counts_along_the_way() {
    let a = Gc::new(5u32);
    assert_eq!(Gc::strong_count(&a), 1);
    assert_eq!(Gc::weak_count(&a), 0);
    let b = a.clone();
    assert_eq!(Gc::strong_count(&a), 2);
    assert_eq!(Gc::strong_count(&b), 2);
    let w1 = Gc::downgrade(&a);
    let w2 = w1.clone();
    assert_eq!(Gc::weak_count(&a), 2);
    assert_eq!(Weak::weak_count(&w1), 2);
    assert_eq!(Weak::strong_count(&w2), 2);
    drop(b);
    assert_eq!(Gc::strong_count(&a), 1);
    assert_eq!(Weak::strong_count(&w1), 1);
    {
        let up = w1.upgrade().expect("alive");
        assert_eq!(*up, 5);
        assert_eq!(Gc::strong_count(&a), 2);
        assert!(Gc::ptr_eq(&up, &a));
    }
    assert_eq!(Gc::strong_count(&a), 1);
    drop(w2);
    assert_eq!(Gc::weak_count(&a), 1);
    drop(a);
    assert_eq!(Weak::strong_count(&w1), 0);
    assert!(w1.upgrade().is_none());
}

#[test]
fn weak_new_is_empty() {
    let w: Weak<u32> = Weak::new();
    assert!(w.upgrade().is_none());
    assert_eq!(Weak::strong_count(&w), 0);
    assert_eq!(Weak::weak_count(&w), 0);
    let w2 = w.clone();
    assert!(w2.upgrade().is_none());
    // As with rc::Weak, two `Weak::new()` compare equal by pointer...
    assert!(Weak::ptr_eq(&w, &Weak::<u32>::new()));
    // ...and differ from a Weak to a live object.
    let g = Gc::new(1u32);
    assert!(!Weak::ptr_eq(&w, &Gc::downgrade(&g)));
}

#[test]
fn weak_dies_with_the_last_strong_handle() {
    let drops = Rc::new(Cell::new(0));
    let a = Gc::new(Counted {
        id: 1,
        drops: drops.clone(),
    });
    let w = Gc::downgrade(&a);
    let b = a.clone();
    drop(a);
    assert_eq!(w.upgrade().map(|g| g.id), Some(1));
    assert_eq!(drops.get(), 0);
    drop(b);
    assert_eq!(drops.get(), 1, "acyclic garbage is dropped at once");
    assert!(w.upgrade().is_none());
    assert_eq!(Weak::strong_count(&w), 0);
    // The Weak outlives the value without trouble; drop it last.
    let w2 = w.clone();
    drop(w);
    assert!(w2.upgrade().is_none());
}

#[test]
fn weak_ptr_eq() {
    let a = Gc::new(1u8);
    let b = Gc::new(1u8);
    let wa1 = Gc::downgrade(&a);
    let wa2 = Gc::downgrade(&a);
    let wb = Gc::downgrade(&b);
    assert!(Weak::ptr_eq(&wa1, &wa2));
    assert!(Weak::ptr_eq(&wa1, &wa1.clone()));
    assert!(!Weak::ptr_eq(&wa1, &wb));
    drop(a);
    // Still the same allocation after death.
    assert!(Weak::ptr_eq(&wa1, &wa2));
    assert!(!Weak::ptr_eq(&wa1, &wb));
}

#[test]
fn get_mut_only_when_unique() {
    let mut a = Gc::new(10u32);
    *Gc::get_mut(&mut a).expect("unique") += 1;
    assert_eq!(*a, 11);

    let b = a.clone();
    assert!(Gc::get_mut(&mut a).is_none(), "another Gc exists");
    drop(b);
    assert!(Gc::get_mut(&mut a).is_some());

    let w = Gc::downgrade(&a);
    assert!(Gc::get_mut(&mut a).is_none(), "a Weak exists");
    drop(w);
    *Gc::get_mut(&mut a).expect("unique again") = 42;
    assert_eq!(*a, 42);

    // Also on a tracked type.
    let drops = Rc::new(Cell::new(0));
    let mut t = Gc::new(Link {
        next: None,
        drops: drops.clone(),
    });
    let t2 = t.clone();
    assert!(Gc::get_mut(&mut t).is_none());
    drop(t2);
    Gc::get_mut(&mut t).expect("unique").next = Some(Gc::new(Link {
        next: None,
        drops: drops.clone(),
    }));
    drop(t);
    assert_eq!(drops.get(), 2);
}

#[test]
fn try_unwrap() {
    // Unique: Ok(value), the value is not dropped but moved out.
    let drops = Rc::new(Cell::new(0));
    let a = Gc::new(Counted {
        id: 3,
        drops: drops.clone(),
    });
    let w = Gc::downgrade(&a);
    let v = match Gc::try_unwrap(a) {
        Ok(v) => v,
        Err(_) => panic!("try_unwrap must succeed with only a Weak outstanding"),
    };
    assert_eq!(v.id, 3);
    assert_eq!(drops.get(), 0, "the value was moved out, not dropped");
    assert!(w.upgrade().is_none(), "the Weak is dead after try_unwrap");
    assert_eq!(Weak::strong_count(&w), 0);
    drop(v);
    assert_eq!(drops.get(), 1);
    drop(w);
    assert_eq!(drops.get(), 1);

    // Shared: Err gives the handle back intact.
    let b = Gc::new(String::from("shared"));
    let b2 = b.clone();
    let back = Gc::try_unwrap(b).expect_err("shared");
    assert!(Gc::ptr_eq(&back, &b2));
    assert_eq!(Gc::strong_count(&b2), 2);
    drop(b2);
    assert_eq!(Gc::try_unwrap(back).ok().as_deref(), Some("shared"));

    // Tracked value moved out keeps its Gc edges alive.
    let tail_drops = Rc::new(Cell::new(0));
    let tail = Gc::new(Link {
        next: None,
        drops: tail_drops.clone(),
    });
    let head = Gc::new(Link {
        next: Some(tail.clone()),
        drops: tail_drops.clone(),
    });
    drop(tail);
    let head_value = Gc::try_unwrap(head).ok().expect("unique");
    assert_eq!(tail_drops.get(), 0);
    assert_eq!(Gc::strong_count(head_value.next.as_ref().unwrap()), 1);
    drop(head_value);
    assert_eq!(tail_drops.get(), 2);
}

#[test]
fn new_cyclic() {
    struct SelfRef {
        me: Weak<SelfRef>,
        seen_in_closure: bool,
        value: u32,
    }
    // SAFETY: `trace` visits the `Gc`s this type owns; a test type that
    // under-reports on purpose can only leak (see the `gc` module docs).
    unsafe impl Trace for SelfRef {
        fn trace(&self, tracer: &mut Tracer) {
            self.me.trace(tracer);
        }
    }
    let g = Gc::new_cyclic(|w: &Weak<SelfRef>| {
        assert!(w.upgrade().is_none(), "upgrade inside new_cyclic is None");
        assert_eq!(Weak::strong_count(w), 0);
        SelfRef {
            me: w.clone(),
            seen_in_closure: w.upgrade().is_some(),
            value: 77,
        }
    });
    assert!(!g.seen_in_closure);
    let me = g.me.upgrade().expect("upgrade works after new_cyclic");
    assert!(Gc::ptr_eq(&me, &g));
    assert_eq!(me.value, 77);
    assert_eq!(Gc::strong_count(&g), 2);
    assert_eq!(Gc::weak_count(&g), 1);
    drop(me);
    let w = g.me.clone();
    drop(g);
    assert!(w.upgrade().is_none(), "no strong cycle: freed by refcount");
}

#[test]
fn acyclic_garbage_is_freed_at_once() {
    let drops = Rc::new(Cell::new(0));
    let c = Gc::new(Link {
        next: None,
        drops: drops.clone(),
    });
    let b = Gc::new(Link {
        next: Some(c.clone()),
        drops: drops.clone(),
    });
    let a = Gc::new(Link {
        next: Some(b.clone()),
        drops: drops.clone(),
    });
    drop(b);
    drop(c);
    assert_eq!(drops.get(), 0);
    let a2 = a.clone();
    drop(a);
    assert_eq!(drops.get(), 0);
    drop(a2);
    assert_eq!(drops.get(), 3, "the whole chain, without a collection");

    let s_drops = Rc::new(Cell::new(0));
    // A Vec of Gc to tracked leaves.
    let leaves: Vec<Gc<Counted>> = (0..100)
        .map(|i| {
            Gc::new(Counted {
                id: i,
                drops: s_drops.clone(),
            })
        })
        .collect();
    let holder = Gc::new(RefCell::new(leaves));
    assert_eq!(s_drops.get(), 0);
    drop(holder);
    assert_eq!(s_drops.get(), 100);
}

#[test]
fn values_with_drop_glue_and_zero_sized_values() {
    let z = Gc::new(());
    let z2 = z.clone();
    assert!(Gc::ptr_eq(&z, &z2));
    let arr = Gc::new([1u64; 64]);
    assert_eq!(arr.iter().sum::<u64>(), 64);
    let big = Gc::new(vec![String::from("a"); 1000]);
    assert_eq!(big.len(), 1000);
    let aligned = Gc::new(Aligned([7; 64]));
    assert_eq!(Gc::as_ptr(&aligned) as usize % 64, 0);
    assert_eq!(aligned.0[63], 7);
}

#[repr(align(64))]
struct Aligned([u8; 64]);
// SAFETY: `trace` visits the `Gc`s this type owns; a test type that
// under-reports on purpose can only leak (see the `gc` module docs).
unsafe impl Trace for Aligned {
    fn trace(&self, _tracer: &mut Tracer) {}
}

#[test]
fn many_handles_and_weaks_balance() {
    let g = Gc::new(String::from("x"));
    let handles: Vec<Gc<String>> = (0..1000).map(|_| g.clone()).collect();
    let weaks: Vec<Weak<String>> = handles.iter().map(Gc::downgrade).collect();
    assert_eq!(Gc::strong_count(&g), 1001);
    assert_eq!(Gc::weak_count(&g), 1000);
    drop(handles);
    assert_eq!(Gc::strong_count(&g), 1);
    drop(g);
    assert!(weaks.iter().all(|w| w.upgrade().is_none()));
}

/// Compiles only if `T` does not implement `Send` (resp. `Sync`): with both
/// impls applicable the inferred parameter would be ambiguous (the trick of
/// `static_assertions::assert_not_impl_any!`).
trait AmbiguousIfSend<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

trait AmbiguousIfSync<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

#[test]
fn gc_and_weak_are_neither_send_nor_sync() {
    // Unsync, as Rc: one collector per thread.
    <Gc<u32> as AmbiguousIfSend<_>>::check();
    <Gc<u32> as AmbiguousIfSync<_>>::check();
    <Weak<u32> as AmbiguousIfSend<_>>::check();
    <Weak<u32> as AmbiguousIfSync<_>>::check();
    // The trick does detect Send types (this one is Send and Sync):
    <u32 as AmbiguousIfSend<u8>>::check();
}

/// A tracked value that must not move once pinned.
struct Pinned {
    edge: RefCell<Option<Gc<Pinned>>>,
    _pin: std::marker::PhantomPinned,
}

// SAFETY: `trace` visits the one `Gc` field.
unsafe impl Trace for Pinned {
    fn trace(&self, tracer: &mut Tracer) {
        self.edge.trace(tracer);
    }
}

#[test]
fn gc_is_unpin_and_pin_keeps_the_value_in_place() {
    fn unpin<T: Unpin>() {}
    // As `Rc`: the handle is a pointer, whatever its value is.
    unpin::<Gc<Pinned>>();
    unpin::<Weak<Pinned>>();

    let p = Gc::pin(Pinned {
        edge: RefCell::new(None),
        _pin: std::marker::PhantomPinned,
    });
    let at: *const Pinned = &*p;
    let q = p.clone();
    pymem::gc::collect();
    assert!(std::ptr::eq(&*q, at));
    drop(p);
    assert!(std::ptr::eq(&*q, at));
}

/// Counts its clones.
#[derive(Debug)]
struct Cloned {
    v: Vec<u32>,
    clones: Rc<Cell<u32>>,
}

impl Clone for Cloned {
    fn clone(&self) -> Self {
        self.clones.set(self.clones.get() + 1);
        Cloned {
            v: self.v.clone(),
            clones: self.clones.clone(),
        }
    }
}

// SAFETY: holds no `Gc`; written by hand, so tracked (the tracked paths'
// `LENT_MUT` is what `make_mut` must set).
unsafe impl Trace for Cloned {
    fn trace(&self, _tracer: &mut Tracer) {}
}

#[test]
fn make_mut_clones_only_when_shared() {
    let clones = Rc::new(Cell::new(0));
    let mut a = Gc::new(Cloned {
        v: vec![1],
        clones: clones.clone(),
    });
    assert!(pymem::gc::is_tracked(&a));
    let at = Gc::as_ptr(&a);
    Gc::make_mut(&mut a).v.push(2); // unique: in place
    assert_eq!((clones.get(), Gc::as_ptr(&a)), (0, at));

    let b = a.clone();
    Gc::make_mut(&mut a).v.push(3); // shared: copied
    assert_eq!(clones.get(), 1);
    assert_eq!((&a.v[..], &b.v[..]), (&[1, 2, 3][..], &[1, 2][..]));
    assert_eq!((Gc::strong_count(&a), Gc::strong_count(&b)), (1, 1));

    // Only a `Weak` shares it: it stops upgrading, as with `Rc`.
    let w = Gc::downgrade(&a);
    Gc::make_mut(&mut a).v.push(4);
    assert!(w.upgrade().is_none());
    assert_eq!(a.v, [1, 2, 3, 4]);

    // The `&mut` it returns survives a collection: the collector, which
    // lists `a`, must not read the value meanwhile.
    let m = Gc::make_mut(&mut a);
    assert_eq!(pymem::gc::collect(), 0);
    m.v.push(5);
    assert_eq!(a.v, [1, 2, 3, 4, 5]);
}

#[test]
fn unwrap_or_clone_moves_when_unique() {
    let clones = Rc::new(Cell::new(0));
    let a = Gc::new(Cloned {
        v: vec![7],
        clones: clones.clone(),
    });
    let b = a.clone();
    let w = Gc::downgrade(&a);
    assert_eq!(Gc::unwrap_or_clone(a).v, [7]);
    assert_eq!(clones.get(), 1);
    assert_eq!(Gc::unwrap_or_clone(b).v, [7]);
    assert_eq!(clones.get(), 1, "the last handle's value is moved out");
    assert!(w.upgrade().is_none());
}

trait Named: Trace {
    fn name(&self) -> String;
}
impl Named for Counted {
    fn name(&self) -> String {
        format!("c{}", self.id)
    }
}

#[test]
fn weak_raw_round_trips() {
    let drops = Rc::new(Cell::new(0));
    let a = Gc::new(Counted {
        id: 3,
        drops: drops.clone(),
    });
    let w = Gc::downgrade(&a);
    assert!(std::ptr::eq(w.as_ptr(), Gc::as_ptr(&a)));
    let raw = Weak::into_raw(w);
    assert_eq!(Gc::weak_count(&a), 1, "into_raw keeps the count taken");
    // SAFETY: from `into_raw`; `a` keeps the value alive.
    assert_eq!(unsafe { (*raw).id }, 3);
    // An unsizing coercion on the way back, as `rc::Weak::from_raw` allows.
    let raw: *const dyn Named = raw;
    // SAFETY: from `into_raw`, given back once.
    let w: Weak<dyn Named> = unsafe { Weak::from_raw(raw) };
    assert_eq!(w.upgrade().unwrap().name(), "c3");
    drop(a);
    assert_eq!(drops.get(), 1);
    assert!(w.upgrade().is_none());
    drop(w);

    let empty = Weak::into_raw(Weak::<Counted>::new());
    // SAFETY: from `into_raw`, given back once.
    let empty = unsafe { Weak::from_raw(empty) };
    assert!(empty.upgrade().is_none());
    assert_eq!((empty.strong_count(), empty.weak_count()), (0, 0));
}

#[test]
fn strong_counts_through_raw_pointers() {
    let drops = Rc::new(Cell::new(0));
    let a = Gc::new(Counted {
        id: 1,
        drops: drops.clone(),
    });
    let raw = Gc::into_raw(a.clone());
    // SAFETY: `raw` holds the count `into_raw` took.
    unsafe { Gc::increment_strong_count(raw) };
    assert_eq!(Gc::strong_count(&a), 3);
    // SAFETY: two counts were taken through `raw`; each is given back once.
    unsafe {
        Gc::decrement_strong_count(raw);
        Gc::decrement_strong_count(raw);
    }
    assert_eq!((Gc::strong_count(&a), drops.get()), (1, 0));
    let raw = Gc::into_raw(a);
    // SAFETY: the last count, given back once: the value is dropped.
    unsafe { Gc::decrement_strong_count(raw) };
    assert_eq!(drops.get(), 1);
}
