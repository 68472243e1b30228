//! `libpymem_malloc.so`: PyMalloc as the `malloc` of any program on glibc.
//!
//! ```sh
//! cargo build --release -p pymem-malloc
//! LD_PRELOAD=target/release/libpymem_malloc.so python3 script.py
//! ```
//!
//! The library exports `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`,
//! `valloc`, `pvalloc`, `malloc_usable_size`, `free_sized`,
//! `free_aligned_sized`, `cfree`, `malloc_trim`, `malloc_stats`, `mallinfo`
//! and `mallinfo2`; the dynamic loader binds every call of the process
//! (libc's own included) to them. Requests of up to 2,048 bytes are served
//! from PyMalloc's pools, larger ones by glibc's allocator through its
//! `__libc_*` entry points, and `free` tells them apart by address; see
//! `docs/override.md`.
//!
//! `PYMEM_DEBUG=1` switches the debug allocator on, as for a Rust program.
//! A Rust program gets the same by enabling the `override` feature of
//! `pymem` instead.
#![deny(unsafe_op_in_unsafe_fn)]

pymem::__export_c_allocator!();
