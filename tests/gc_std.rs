//! `Trace` for the std types people put in a `Gc` (issue 13, item 2): a
//! cycle through each container is collected (so its impl visits the
//! edge), a locked `Mutex`/`RwLock` is treated like a borrowed `RefCell`
//! (kept, never blocking), an unforced `LazyCell` is not forced, a
//! `Cell<Option<Gc<T>>>` is traced without being emptied, and the leaf
//! types are untracked. Runs on the system allocator.

use std::cell::{Cell, LazyCell, OnceCell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, LinkedList};
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use pymem::{gc, Gc, Trace, Weak};

/// A node whose outgoing edge is held by a container of type `C` (for
/// the tests that need only one).
#[derive(Trace)]
struct Node<C: Trace + 'static> {
    edge: C,
}

type Wide<T> = (u8, u16, u32, u64, char, bool, String, (), i8, i16, i32, T);

/// One field per container kind; each test cycle goes through one.
#[derive(Trace, Default)]
struct Hub {
    list: RefCell<LinkedList<Gc<Hub>>>,
    heap: RefCell<BinaryHeap<Keyed<Gc<Hub>>>>,
    rev: RefCell<BinaryHeap<Reverse<Keyed<Gc<Hub>>>>>,
    boxed: RefCell<Option<Box<[Gc<Hub>]>>>,
    mutex: Mutex<Option<Gc<Hub>>>,
    rw: RwLock<Vec<Gc<Hub>>>,
    once: OnceCell<Gc<Hub>>,
    cell: Cell<Option<Gc<Hub>>>,
    arr: RefCell<[Option<Gc<Hub>>; 9]>,
    tuple: RefCell<Option<Wide<Gc<Hub>>>>,
}

#[test]
fn cycles_through_each_container_are_collected() {
    gc::disable();
    gc::collect();
    for kind in 0..10 {
        let a = Gc::new(Hub::default());
        assert!(gc::is_tracked(&a));
        let b = a.clone();
        match kind {
            0 => a.list.borrow_mut().push_back(b),
            1 => a.heap.borrow_mut().push(Keyed(1, b)),
            2 => a.rev.borrow_mut().push(Reverse(Keyed(1, b))),
            3 => *a.boxed.borrow_mut() = Some(vec![b.clone(), b].into_boxed_slice()),
            4 => *a.mutex.lock().unwrap() = Some(b),
            5 => a.rw.write().unwrap().push(b),
            6 => assert!(a.once.set(b).is_ok()),
            7 => a.cell.set(Some(b)),
            8 => a.arr.borrow_mut()[8] = Some(b),
            _ => *a.tuple.borrow_mut() = Some((1, 2, 3, 4, 'x', true, "s".into(), (), 5, 6, 7, b)),
        }
        let w = Gc::downgrade(&a);
        drop(a);
        assert_eq!(gc::collect(), 1, "a cycle through field kind {kind}");
        assert!(w.upgrade().is_none());
    }
    gc::enable();
}

/// A heap element ordered by its key only.
#[derive(Trace)]
struct Keyed<T: Trace + 'static>(u32, T);
impl<T: Trace> PartialEq for Keyed<T> {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl<T: Trace> Eq for Keyed<T> {}
impl<T: Trace> PartialOrd for Keyed<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T: Trace> Ord for Keyed<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0)
    }
}

#[test]
fn a_cell_is_traced_without_being_emptied() {
    gc::disable();
    gc::collect();
    // Reachable from outside: the collection must leave the Cell as it was
    // (no take/replace), and the target alive.
    let a = Gc::new(Node {
        edge: Cell::new(None::<Gc<Node<Cell<Option<Gc<u32>>>>>>),
    });
    let b = Gc::new(Node {
        edge: Cell::new(Some(Gc::new(7u32))),
    });
    a.edge.set(Some(b.clone()));
    drop(b);
    assert_eq!(gc::collect(), 0);
    let inner = a.edge.take().unwrap();
    assert_eq!(**inner.edge.take().as_ref().unwrap(), 7);
    gc::enable();
}

#[test]
fn locked_mutex_and_write_locked_rwlock_are_kept_not_blocked() {
    gc::disable();
    gc::collect();
    let a = Gc::new(Hub::default());
    *a.mutex.lock().unwrap() = Some(a.clone());
    let raw: *const Hub = Gc::as_ptr(&a);
    let w = Gc::downgrade(&a);
    drop(a);
    {
        // SAFETY: the cycle keeps the hub alive until it is collected.
        let guard = unsafe { &*raw }.mutex.lock().unwrap();
        assert_eq!(
            gc::collect(),
            0,
            "locked: referenced from outside, no deadlock"
        );
        drop(guard);
    }
    assert_eq!(gc::collect(), 1);
    assert!(w.upgrade().is_none());

    let r = Gc::new(Hub::default());
    r.rw.write().unwrap().push(r.clone());
    let raw: *const Hub = Gc::as_ptr(&r);
    drop(r);
    {
        // SAFETY: as above.
        let guard = unsafe { &*raw }.rw.write().unwrap();
        assert_eq!(gc::collect(), 0);
        drop(guard);
        // Read-locked: can be read, so traced, and found unreachable. The
        // garbage is saved (DEBUG_SAVEALL) so that the guard outlives the
        // collection, then released.
        // SAFETY: as above.
        let reader = unsafe { &*raw }.rw.read().unwrap();
        gc::set_debug(gc::DEBUG_SAVEALL);
        assert_eq!(gc::collect(), 1, "read-locked: traced");
        drop(reader);
        gc::set_debug(0);
        gc::clear_garbage();
    }
    gc::enable();
}

#[test]
fn a_poisoned_mutex_is_still_traced() {
    gc::disable();
    gc::collect();
    let a = Gc::new(Hub::default());
    *a.mutex.lock().unwrap() = Some(a.clone());
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = a.mutex.lock().unwrap();
        panic!("poison it");
    }));
    assert!(a.mutex.is_poisoned());
    drop(a);
    assert_eq!(gc::collect(), 1);
    gc::enable();
}

#[test]
fn an_unforced_lazy_cell_is_not_forced() {
    gc::disable();
    gc::collect();
    let forced = Rc::new(Cell::new(0));
    let f = forced.clone();
    let lazy = Gc::new(Node {
        edge: LazyCell::new(move || {
            f.set(f.get() + 1);
            Some(Gc::new(1u8))
        }),
    });
    assert!(gc::is_tracked(&lazy));
    gc::collect();
    assert_eq!(
        forced.get(),
        0,
        "the collector does not run the initialiser"
    );
    assert_eq!(**lazy.edge.as_ref().unwrap(), 1);
    assert_eq!(forced.get(), 1);
    // A forced one holding a cycle is collected.
    #[derive(Trace)]
    struct Lazy {
        cell: LazyCell<RefCell<Option<Gc<Lazy>>>>,
    }
    let a = Gc::new(Lazy {
        cell: LazyCell::new(|| RefCell::new(None)),
    });
    *a.cell.borrow_mut() = Some(a.clone());
    drop(a);
    assert_eq!(gc::collect(), 1);
    gc::enable();
}

#[test]
fn leaf_types_are_untracked() {
    fn untracked<T: Trace + 'static>(v: T) {
        let g = Gc::new(v);
        assert!(!gc::is_tracked(&g), "{}", std::any::type_name::<T>());
        assert!(!T::may_contain_gc());
    }
    untracked(PathBuf::from("/tmp"));
    untracked(Duration::from_millis(5));
    untracked(Instant::now());
    untracked(NonZeroU64::new(3).unwrap());
    untracked(PhantomData::<Gc<u32>>);
    untracked(Rc::<str>::from("leaf"));
    untracked(Arc::<Path>::from(Path::new("/")));
    untracked("static str");
    untracked(Cell::new(5u32));
    untracked(Box::<[u64]>::from([1, 2]));
    untracked(Box::new(5u64));
    untracked(RefCell::new(vec![String::new()]));
    untracked(Mutex::new(Vec::<u8>::new()));
    untracked(OnceCell::<String>::new());
    untracked([0u8; 1000]);
    untracked((
        1u8,
        2u16,
        3u32,
        4u64,
        5u128,
        'c',
        true,
        (),
        1i8,
        2i16,
        3i32,
        4i64,
    ));
    untracked(BinaryHeap::<u32>::new());
    untracked(LinkedList::<String>::new());
    untracked(Vec::<Vec<Vec<u8>>>::new());
    let p: Gc<Path> = Gc::from(Box::<Path>::from(Path::new("/x")));
    assert!(!gc::is_tracked(&p) && p.ends_with("x"));
}

#[test]
fn conservative_answers_are_tracked() {
    // Beyond the budget of indirections, or behind a Box of a type with
    // drop glue, the answer is "tracked": costs speed, never a leak.
    type Deep = Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<u8>>>>>>>>>;
    assert!(<Deep>::may_contain_gc());
    assert!(<Box<String>>::may_contain_gc());
    assert!(<Gc<u32>>::may_contain_gc());
    assert!(!<Weak<u32>>::may_contain_gc());
}
