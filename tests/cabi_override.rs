//! The `override` feature: this test binary exports `malloc` and the rest
//! of the family from PyMalloc, so that C code in the process (libc's own
//! `strdup`, a shared library loaded with `dlopen`, Rust's `System`) gets
//! pool blocks, and `free` takes pointers from anywhere.
//!
//! Built only with the feature:
//! `cargo test -p pymem --features override --test cabi_override`
//! (CI runs it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_void, CStr};

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

/// A pool block of a 24-byte request has 32 usable bytes; glibc's has 24.
fn is_pool_block(ptr: *mut c_void) -> bool {
    // SAFETY: a live block of the process's malloc family.
    unsafe { malloc_usable_size(ptr) == 32 }
}

#[test]
fn libc_internal_allocations_come_from_the_pools() {
    // SAFETY: strdup returns a malloc'd copy, freed with free.
    unsafe {
        let copy = libc::strdup(c"twenty-three characters".as_ptr());
        assert!(is_pool_block(copy.cast()), "strdup did not call our malloc");
        assert_eq!(CStr::from_ptr(copy).to_str(), Ok("twenty-three characters"));
        libc::free(copy.cast());
    }
}

#[test]
fn rust_system_allocator_is_pymem_too() {
    let layout = Layout::from_size_align(24, 8).unwrap();
    // SAFETY: a valid layout; freed with the same allocator and layout.
    unsafe {
        let p = System.alloc(layout);
        assert!(is_pool_block(p.cast()));
        System.dealloc(p, layout);
    }
}

#[test]
fn large_blocks_do_not_recurse_and_cross_the_two_apis() {
    // Large Rust blocks come from glibc's entry points, not from `malloc`
    // (which is us): no recursion, and C's free takes them.
    let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
    v.resize(1 << 20, 7);
    assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 7 << 20);
    let big = vec![1u64; 100_000];
    let ptr = Box::into_raw(big.into_boxed_slice());
    // SAFETY: a Box's block of the global allocator, which is the process's
    // malloc family: C's free accepts it.
    unsafe { libc::free(ptr.cast()) };
    // And a pool block from C freed by Rust with its layout.
    // SAFETY: malloc(24) is a 16-aligned block of at least 24 bytes.
    unsafe {
        let p = libc::malloc(24).cast::<u8>();
        GLOBAL.dealloc(p, Layout::from_size_align(24, 8).unwrap());
    }
}

#[test]
fn c_blocks_of_the_large_cache_sizes_freed_by_rust_stay_exact() {
    // A 3,000-byte block of C's `malloc` (glibc's: above the medium
    // classes) holds 3,000 bytes. Freed by Rust with its layout, it must
    // not be kept as a block of its cache class (3,072 bytes): the next
    // Rust request of that class would write past its end, into the
    // chunk header of the C block after it.
    let layout = Layout::from_size_align(3000, 1).unwrap();
    let class = Layout::from_size_align(3072, 1).unwrap();
    // SAFETY: C blocks of the process's malloc family, freed once each,
    // the first by Rust with the layout of its 3,000 bytes; every write
    // stays within what was asked for.
    unsafe {
        let first = libc::malloc(3000).cast::<u8>();
        let next = libc::malloc(3000).cast::<u8>();
        assert!(!first.is_null() && !next.is_null());
        next.write_bytes(5, 3000);
        GLOBAL.dealloc(first, layout);
        let again = GLOBAL.alloc(class);
        assert!(!again.is_null());
        again.write_bytes(0xab, 3072);
        assert!(malloc_usable_size(again.cast()) >= 3072);
        GLOBAL.dealloc(again, class);
        assert!((0..3000).all(|i| *next.add(i) == 5));
        libc::free(next.cast()); // glibc checks the chunk header here
    }
}

#[test]
fn a_dlopened_c_library_allocates_from_the_pools() {
    if cfg!(pymem_asan) {
        return;
    }
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/override_probe.c");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cabi");
    std::fs::create_dir_all(&dir).unwrap();
    let library = dir.join("liboverride_probe.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(cc)
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let path = std::ffi::CString::new(library.to_str().unwrap()).unwrap();
    // SAFETY: dlopen/dlsym with valid strings; the symbols have the C
    // signatures declared in override_probe.c.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null());
        let sym = |name: &CStr| {
            let f = libc::dlsym(handle, name.as_ptr());
            assert!(!f.is_null(), "{name:?}");
            f
        };
        let probe_malloc: extern "C" fn(usize) -> *mut c_void =
            std::mem::transmute(sym(c"probe_malloc"));
        let probe_free: extern "C" fn(*mut c_void) = std::mem::transmute(sym(c"probe_free"));
        let probe_strdup: extern "C" fn(*const c_char) -> *mut c_char =
            std::mem::transmute(sym(c"probe_strdup"));
        let before = pymem::alloc_stats().small_blocks_in_use;
        let blocks: Vec<*mut c_void> = (0..1000).map(|_| probe_malloc(24)).collect();
        assert!(blocks.iter().all(|&b| is_pool_block(b)));
        assert!(pymem::alloc_stats().small_blocks_in_use >= before + 1000);
        // Freed by Rust's side of the process, and the other way round.
        for b in blocks {
            libc::free(b);
        }
        probe_free(libc::malloc(100));
        let copy = probe_strdup(c"from a library".as_ptr());
        // 15 bytes: a 16-byte pool block (glibc's would have 24 usable).
        assert_eq!(malloc_usable_size(copy.cast()), 16);
        probe_free(copy.cast());
    }
}
