//! The OS layer: the only place that maps and unmaps memory or writes to
//! stderr. Nothing here allocates through the global allocator.

use core::fmt::{self, Write};
use core::ptr;

/// Maps `size` bytes of zeroed memory aligned to `align` (a power of two,
/// a multiple of the page size). Returns null when the OS refuses.
pub(crate) fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let Some(span) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = span - head - size;
    // SAFETY: both trimmed ranges lie inside the mapping made above and
    // outside the `size` bytes kept.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
    }
    aligned as *mut u8
}

/// Returns a mapping made by [`map_aligned`] to the OS.
///
/// # Safety
/// `ptr..ptr + size` must be a mapping from `map_aligned` that nothing
/// refers to any more.
pub(crate) unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: the caller hands over the whole mapping.
    let rc = unsafe { libc::munmap(ptr.cast(), size) };
    if rc != 0 {
        fatal(format_args!("munmap({ptr:p}, {size}) failed"));
    }
}

/// Gives the pages of `ptr..ptr + size` back to the OS while keeping the
/// mapping: the next touch of each page faults in a zeroed one
/// (`MADV_DONTNEED`, which drops them from the resident set at once, where
/// `MADV_FREE` would leave them counted until the kernel needs memory).
///
/// # Safety
/// The range must lie in a mapping from [`map_aligned`], be page-aligned,
/// and hold nothing anyone will read before writing it again.
pub(crate) unsafe fn decommit(ptr: *mut u8, size: usize) {
    // SAFETY: a page-aligned range of our own private anonymous mapping
    // whose contents nobody needs (the caller's contract); on failure the
    // pages just stay resident.
    unsafe { libc::madvise(ptr.cast(), size, libc::MADV_DONTNEED) };
}

#[cfg(not(loom))]
/// A `fork` handler: a plain function, which `fork` calls with no
/// argument (so nothing it relies on can be left unchecked).
pub(crate) type ForkHandler = Option<extern "C" fn()>;

/// Registers `fork` handlers (`pthread_atfork`); returns its error number.
///
/// On glibc this calls `__register_atfork`, the exported function that
/// `pthread_atfork` forwards to, directly: `pthread_atfork` itself is a
/// stub that glibc links statically into every object using it
/// (`libc_nonshared.a`), and the linker puts it at the very end of the
/// code, far from the rest of the allocator. In the `LD_PRELOAD` library
/// that one call made a page of code resident that nothing else touches,
/// and with the kernel's fault-around a whole 64 KiB window of it: memory
/// every process paid for at start-up (see `docs/override.md`).
#[cfg(not(loom))]
pub(crate) fn register_atfork(
    prepare: ForkHandler,
    parent: ForkHandler,
    child: ForkHandler,
) -> i32 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            /// glibc's registration: the three handlers and the object they
            /// belong to, whose handlers `__cxa_finalize` removes when it
            /// is unloaded (GLIBC_2.3.2).
            fn __register_atfork(
                prepare: ForkHandler,
                parent: ForkHandler,
                child: ForkHandler,
                dso_handle: *mut libc::c_void,
            ) -> libc::c_int;
            /// This object's handle, defined by the C run-time start files
            /// (`crtbegin`) of every glibc executable and shared object;
            /// Rust's standard library uses it the same way for thread-local
            /// destructors.
            static __dso_handle: u8;
        }
        // SAFETY: the handlers are safe functions of the signature `fork`
        // calls them with; `__dso_handle` is a static of this object, of which only the
        // address is taken, which is what `pthread_atfork` passes (so the
        // handlers are dropped if this object is ever unloaded).
        unsafe {
            __register_atfork(
                prepare,
                parent,
                child,
                ptr::addr_of!(__dso_handle).cast_mut().cast(),
            )
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let unsafe_fn = |f: ForkHandler| f.map(|f| f as unsafe extern "C" fn());
        // SAFETY: the handlers are safe functions of the signature `fork`
        // calls them with.
        unsafe { libc::pthread_atfork(unsafe_fn(prepare), unsafe_fn(parent), unsafe_fn(child)) }
    }
}

/// A coarse monotonic clock in milliseconds (a vDSO read, no system call).
///
/// Under loom it always reads 0: a model's executions must be
/// deterministic, so the models drive retention explicitly instead.
#[cfg(loom)]
pub(crate) fn now_ms() -> u64 {
    0
}

/// A coarse monotonic clock in milliseconds (a vDSO read, no system call).
#[cfg(not(loom))]
pub(crate) fn now_ms() -> u64 {
    let ts = monotonic_coarse();
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `CLOCK_MONOTONIC_COARSE`, from the vDSO directly where it can be found
/// (see `vdso.rs`: why not through glibc).
#[cfg(all(
    not(loom),
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn monotonic_coarse() -> libc::timespec {
    super::vdso::monotonic_coarse()
}

/// `CLOCK_MONOTONIC_COARSE`.
#[cfg(all(
    not(loom),
    not(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
))]
fn monotonic_coarse() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts
}

/// How [`process_barrier`] reaches the other threads, decided at its first
/// use.
#[cfg(not(loom))]
mod barrier_kind {
    pub(super) const UNKNOWN: u8 = 0;
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`: an IPI to the CPUs running this
    /// process's threads (a few microseconds).
    pub(super) const EXPEDITED: u8 = 1;
    /// `MEMBARRIER_CMD_GLOBAL`: waits for every CPU to pass a scheduling
    /// point (milliseconds), for kernels without the expedited command.
    pub(super) const GLOBAL: u8 = 2;
    /// No `membarrier` (a sandbox that forbids it, a pre-4.3 kernel).
    pub(super) const NONE: u8 = 3;
}

#[cfg(not(loom))]
static BARRIER_KIND: core::sync::atomic::AtomicU8 =
    core::sync::atomic::AtomicU8::new(barrier_kind::UNKNOWN);

#[cfg(not(loom))]
fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: `membarrier` takes two integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        ) == 0
    }
}

/// Makes every thread of this process execute a full memory barrier before
/// returning (`membarrier(2)`); returns false when the kernel offers no way
/// to. The expensive half of [`crate::sync::heavy_barrier`]. No lock, no
/// allocation: safe from any thread at any time, also in a child after
/// `fork` (whose registration for the expedited command is made anew: the
/// kernel does not carry it into the child).
#[cfg(not(loom))]
pub(crate) fn process_barrier() -> bool {
    use barrier_kind::*;
    use core::sync::atomic::Ordering::Relaxed;
    const CMD_QUERY: libc::c_int = 0;
    const CMD_GLOBAL: libc::c_int = 1;
    const CMD_PRIVATE_EXPEDITED: libc::c_int = 8;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 16;
    for _ in 0..3 {
        match BARRIER_KIND.load(Relaxed) {
            EXPEDITED => {
                if membarrier(CMD_PRIVATE_EXPEDITED) {
                    return true;
                }
                // EPERM: not registered in this process (a child after
                // fork); register again.
                BARRIER_KIND.store(UNKNOWN, Relaxed);
            }
            GLOBAL => return membarrier(CMD_GLOBAL),
            NONE => return false,
            _ => {
                let kind = if membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) {
                    EXPEDITED
                } else {
                    // SAFETY: `membarrier` with MEMBARRIER_CMD_QUERY takes two integers and
                    // touches no memory of ours: no pointer is passed.
                    let mask = unsafe { libc::syscall(libc::SYS_membarrier, CMD_QUERY, 0, 0) };
                    if mask > 0 && mask & libc::c_long::from(CMD_GLOBAL) != 0 {
                        GLOBAL
                    } else {
                        NONE
                    }
                };
                BARRIER_KIND.store(kind, Relaxed);
            }
        }
    }
    false
}

/// A fixed buffer that formats without allocating; what does not fit is cut.
struct StackWriter {
    buf: [u8; 1024],
    len: usize,
}

impl Write for StackWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `pymem: <message>` straight to stderr, without allocating.
pub(crate) fn report(args: fmt::Arguments<'_>) {
    let mut w = StackWriter {
        buf: [0; 1024],
        len: 0,
    };
    let _ = w.write_str("pymem: ");
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
    let mut done = 0;
    while done < w.len {
        // SAFETY: the range lies inside `w.buf`.
        let n = unsafe { libc::write(2, w.buf[done..].as_ptr().cast(), w.len - done) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
}

/// Reports a misuse of the allocator or a broken invariant and aborts. Used
/// where unwinding is not allowed (inside `GlobalAlloc` methods).
#[cold]
#[inline(never)]
pub(crate) fn fatal(args: fmt::Arguments<'_>) -> ! {
    report(args);
    std::process::abort()
}

/// The most arenas glibc's own allocator may keep once PyMalloc is the
/// process's `malloc` (it then serves only the blocks above the medium
/// classes): one per CPU this process may run on, and at least 2 (its
/// main arena and one for threads).
///
/// glibc gives each new thread an arena of its own, up to 8 per CPU, and
/// never unmaps it: a thread arena's heap stays resident as far as its
/// blocks ever reached (`threadchurn` of bench/c, whose threads allocate
/// one block in sixteen between 2 and 4 KiB: 132 to 200 KiB resident per
/// thread arena, 4 arenas, about 600 KiB of its 4.3 MiB peak). With
/// PyMalloc serving every request up to 4 KiB from its own per-thread
/// heaps, glibc's arenas see a small share of the requests, and one per
/// CPU is enough to keep them from contending (only threads that run at
/// the same time can). Measured on 2 CPUs: 16 threads replacing blocks of
/// 2..16 KiB ran in 0.68 to 0.95 s with the cap (2 arenas) against 1.21 to
/// 1.94 s without (17 arenas), at 10.5 to 11.2 MiB peak RSS against 13.8.
///
/// `None` if the mask cannot be read (a kernel configured for more CPUs
/// than a `cpu_set_t` holds): glibc's default then stays.
#[cfg(all(not(loom), target_os = "linux", target_env = "gnu"))]
pub(crate) fn glibc_arena_cap() -> Option<usize> {
    // SAFETY: a zeroed `cpu_set_t` is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // The system call rather than glibc's wrapper, which lies apart from
    // the rest of libc's code that a process runs: calling it cost a
    // small program 64 KiB of resident code (see docs/override.md,
    // "Start-up memory"); `syscall` lies with `mmap`.
    // SAFETY: `set` is a writable `cpu_set_t` of the size passed; the
    // kernel writes at most that many bytes and allocates nothing of ours.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            core::mem::size_of_val(&set),
            &mut set as *mut libc::cpu_set_t,
        )
    } > 0;
    if !ok {
        return None;
    }
    // SAFETY: `set` was filled in by `sched_getaffinity`.
    let cpus = unsafe { libc::CPU_COUNT(&set) }.max(0) as usize;
    Some(cpus.max(2))
}

/// Calls `f` with the value of the environment variable `name` (`None`
/// when it is unset), read with `getenv`, which allocates nothing (unlike
/// `std::env::var`, which the allocator cannot call from inside `alloc`).
///
/// `getenv` does not take std's environment lock. That is sound because
/// changing the environment while another thread may read it is already
/// unsound by std's own rule: `std::env::set_var` and `remove_var` are
/// documented as such (and are `unsafe` from Rust 2024 on), with C's
/// `getenv` named among the readers they race with; libc's `setenv` is
/// not thread-safe either. So the obligation lies with whoever changes
/// the environment, and this function relies on it holding for the
/// duration of `f`.
#[cfg_attr(loom, allow(dead_code))] // its readers are absent under loom
pub(crate) fn with_env<R>(name: &core::ffi::CStr, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    // SAFETY: `name` is NUL-terminated (a `CStr`); `getenv` only reads the
    // environment.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return f(None);
    }
    // SAFETY: a non-null result of `getenv` is a NUL-terminated string
    // that stays valid until the environment is changed, which nothing
    // does while `f` runs (the rule above).
    f(Some(unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes()))
}

/// Caps glibc's arenas at [`glibc_arena_cap`] (`mallopt(M_ARENA_MAX)`),
/// unless the user chose a cap (`MALLOC_ARENA_MAX`, or `arena_max` in
/// `GLIBC_TUNABLES`). Called once, before `main`, by the C entry points'
/// constructor; allocates nothing.
#[cfg(all(not(loom), target_os = "linux", target_env = "gnu"))]
pub(crate) fn cap_glibc_arenas() {
    let chosen = with_env(c"MALLOC_ARENA_MAX", |v| v.is_some())
        || with_env(c"GLIBC_TUNABLES", |v| {
            v.is_some_and(|v| v.windows(b"arena_max".len()).any(|w| w == b"arena_max"))
        });
    if chosen {
        return;
    }
    let Some(cap) = glibc_arena_cap() else {
        return;
    };
    let cap = libc::c_int::try_from(cap).unwrap_or(libc::c_int::MAX);
    // SAFETY: glibc's `mallopt` (PyMalloc does not export that symbol);
    // `M_ARENA_MAX` takes any positive count.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, cap) };
}

/// Asks the kernel to back `ptr..ptr + size` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`). Advice only: a kernel without THP refuses
/// (`EINVAL`) and the range keeps 4 KiB pages, which is no error for us.
///
/// # Safety
/// `ptr..ptr + size` must be a mapping of ours, page-aligned.
pub(crate) unsafe fn advise_huge_pages(ptr: *mut u8, size: usize) {
    // SAFETY: the range is a mapping of ours (the caller's guarantee);
    // `MADV_HUGEPAGE` changes how it is backed, never its contents.
    unsafe { libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE) };
}

/// Whether `madvise(MADV_HUGEPAGE)` can give a mapping transparent huge
/// pages: the kernel's THP mode (`/sys/kernel/mm/transparent_hugepage/enabled`)
/// is `always` or `madvise`. Read once, without allocating; false when the
/// file cannot be read (a kernel without THP) or says `never`.
#[cfg(not(loom))]
pub(crate) fn huge_pages_enabled() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;
    /// The answer, once read.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    // Relaxed: every thread that reads the file computes the same answer,
    // and the value is the only thing published.
    match STATE.load(Relaxed) {
        YES => return true,
        NO => return false,
        _ => {}
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    // SAFETY: the path is a NUL-terminated literal; `open` allocates
    // nothing of ours.
    let fd = unsafe {
        libc::open(
            c"/sys/kernel/mm/transparent_hugepage/enabled".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: `buf` is writable for its length; `fd` is the descriptor
        // opened above, closed right after.
        unsafe {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            len = n.max(0) as usize;
            libc::close(fd);
        }
    }
    // The file reads e.g. "always [madvise] never": the mode in brackets.
    let text = &buf[..len];
    let on =
        text.windows(8).any(|w| w == b"[always]") || text.windows(9).any(|w| w == b"[madvise]");
    STATE.store(if on { YES } else { NO }, Relaxed);
    on
}

/// Under loom no huge-page spans are made: the models' heaps stay small,
/// and a model must not depend on the machine's settings.
#[cfg(loom)]
pub(crate) fn huge_pages_enabled() -> bool {
    false
}
