//! The medium classes (C's `malloc` only, 640..4,096 bytes) give an
//! emptied pool back to its arena instead of keeping it per class: a
//! thread that allocates and frees a block in each of the classes must
//! not be left holding an empty pool in each, with a resident page or more
//! (`threadchurn` of bench/c: peak RSS 1.9x glibc's with them kept).
//! Every C entry point routes the same way, the debug allocator's outer
//! blocks included.

#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

use pymem::__cabi::{free, malloc};

const SMALL_CLASSES: usize = 32;

/// The tests that count the process's pools and blocks, one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn medium_pools() -> usize {
    medium_pools_in(&pymem::alloc_stats())
}

fn medium_pools_in(stats: &pymem::AllocStats) -> usize {
    stats
        .per_class
        .iter()
        .skip(SMALL_CLASSES)
        .map(|c| c.pools)
        .sum()
}

#[test]
fn a_thread_keeps_no_empty_medium_pools() {
    let _serial = serial();
    std::thread::spawn(|| {
        for size in (520..=2040).step_by(16) {
            // SAFETY: malloc and free of the C API, each block freed once.
            unsafe {
                let p = malloc(size);
                assert!(!p.is_null());
                p.cast::<u8>().write_bytes(1, size);
                free(p);
            }
        }
        // The thread is still alive: its heap would hold any kept pool.
        let pools = medium_pools();
        assert!(
            pools <= 1,
            "{pools} empty medium pools kept after one block in each class"
        );
    })
    .join()
    .unwrap();
}

/// Set in the child process the test below re-executes this binary as.
const CHILD: &str = "PYMEM_TEST_MEDIUM_DEBUG_CHILD";

/// Under the debug allocator (`PYMEM_DEBUG=1`, read at start-up, hence a
/// child process), a medium C request's outer block (the request plus its
/// guards, 1,000 + 32 bytes here) comes from a medium pool, as the same
/// request does with the allocator off: one routing rule for every C
/// entry point. It was a glibc block, counted as large.
#[test]
fn debug_allocator_serves_medium_c_requests_from_pools() {
    if std::env::var_os(CHILD).is_some() {
        assert!(pymem::debug_allocator_enabled());
        let before = pymem::alloc_stats();
        // SAFETY: malloc and free of the C API, the block freed once.
        let (during, usable) = unsafe {
            let p = malloc(1000);
            assert!(!p.is_null());
            p.cast::<u8>().write_bytes(7, 1000);
            let usable = pymem::__cabi::malloc_usable_size(p);
            let during = pymem::alloc_stats();
            free(p);
            (during, usable)
        };
        assert_eq!(usable, 1000, "the debug allocator's usable size");
        assert_eq!(
            during.large_allocs_in_use, before.large_allocs_in_use,
            "the outer block went to glibc"
        );
        assert_eq!(during.small_blocks_in_use, before.small_blocks_in_use + 1);
        assert!(medium_pools_in(&during) >= 1);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "debug_allocator_serves_medium_c_requests_from_pools",
            "--test-threads=1",
        ])
        .env("PYMEM_DEBUG", "1")
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

/// The poisoned redzone each pool block carries under AddressSanitizer
/// (`scripts/asan.sh`), counted in its class and its usable size.
const REDZONE: usize = if cfg!(pymem_asan) { 16 } else { 0 };

/// C's requests of 513 to 4,096 bytes are pool blocks of twelve medium
/// classes, four per doubling (640, 768, 896, 1,024, 1,280, ..., 4,096),
/// not glibc's and not one class every 16 bytes: a thread with one block
/// of every size there holds them in pools of those twelve classes only,
/// and each block's usable size is its class's, less than a fifth above
/// the request.
#[test]
fn requests_of_half_a_kib_to_4_kib_take_twelve_classes() {
    let _serial = serial();
    std::thread::spawn(|| {
        let top = 4096 - REDZONE;
        let sizes: Vec<usize> = (513 - REDZONE..=top).step_by(37).chain([top]).collect();
        // SAFETY: malloc, malloc_usable_size and free of the C API, each
        // block written within its size and freed once.
        unsafe {
            let before = pymem::alloc_stats();
            let blocks: Vec<_> = sizes.iter().map(|&n| (malloc(n), n)).collect();
            for &(p, n) in &blocks {
                assert!(!p.is_null());
                p.cast::<u8>().write_bytes(3, n);
                let usable = pymem::__cabi::malloc_usable_size(p);
                let padded = n + REDZONE;
                // An eighth of the power of two below the request.
                let step = 1 << (usize::BITS - (padded - 1).leading_zeros() - 3);
                assert_eq!(usable % step, 0, "{n} bytes: usable {usable}");
                assert!(
                    usable >= padded && usable - padded < step && usable * 4 < padded * 5,
                    "{n} bytes: usable {usable}"
                );
            }
            let during = pymem::alloc_stats();
            assert_eq!(
                during.large_allocs_in_use, before.large_allocs_in_use,
                "blocks of 0.5 to 4 KiB went to glibc"
            );
            assert_eq!(
                during.small_blocks_in_use,
                before.small_blocks_in_use + sizes.len()
            );
            let medium: Vec<usize> = during
                .per_class
                .iter()
                .filter(|c| c.block_size > 512 && c.blocks_in_use > 0)
                .map(|c| c.block_size)
                .collect();
            assert_eq!(
                medium,
                [640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096]
            );
            for (p, _) in blocks {
                free(p);
            }
        }
    })
    .join()
    .unwrap();
}
