//! Size classes and the arithmetic of pools and arenas.
//!
//! Every small request is rounded up to a multiple of [`ALIGNMENT`]; the
//! 32 resulting block sizes (16, 32, ..., 512) are the size classes, as in
//! CPython on 64-bit platforms.
//!
//! Where PyMalloc is the process's `malloc` (the C entry points, `cabi`),
//! requests above 512 bytes and up to [`C_POOL_THRESHOLD`] (4,096 bytes)
//! take *medium* classes, four per doubling of the size (640, 768, 896,
//! 1,024, 1,280, ..., 4,096: see [`c_medium_block`]), which only C's
//! `malloc` uses. Rust's requests above
//! 512 bytes still go to the system allocator (`route` never returns a
//! medium class), as the contract says.
//!
//! A block of size `s` is placed at an address that is a multiple of the
//! largest power of two dividing `s` (its *natural alignment*: 16 for 48,
//! 64 for 192, 512 for 512). A request whose alignment exceeds 16 is served
//! from the smallest class that is a multiple of that alignment, so a
//! 40-byte request aligned to 32 gets a 64-byte block, which is 64-aligned.

/// Requests of at most this many bytes are served from pools; larger ones go
/// to the system allocator. CPython's `SMALL_REQUEST_THRESHOLD`.
pub const SMALL_REQUEST_THRESHOLD: usize = 512;

/// Granularity of size classes and the alignment every block guarantees.
pub(crate) const ALIGNMENT: usize = 16;
const ALIGNMENT_SHIFT: u32 = ALIGNMENT.trailing_zeros();

/// Number of small size classes, those of requests of at most
/// [`SMALL_REQUEST_THRESHOLD`] bytes: 512 / 16.
pub(crate) const NB_SMALL_CLASSES: usize = SMALL_REQUEST_THRESHOLD / ALIGNMENT;

/// C's `malloc` (only) serves default-aligned requests of at most this many
/// bytes from pools: the small classes and, above them, medium ones. Half
/// the requests of C programs between 512 bytes and 2 KiB would otherwise
/// be glibc's, whose bins cost 1.5 to 2 times a pool's pop or push (see
/// `docs/override.md`, "C entry points, seventh round"). The medium
/// classes are twelve, four per doubling ([`c_medium_block`]), not one
/// every 16 bytes: a thread holds a pool (16 KiB, most of it resident
/// once any pool has filled the slot) in every class it has a block of,
/// and a program's few blocks of many sizes between 512 bytes and 4 KiB
/// took a pool each in up to 224 classes (see "Twelfth round: peak RSS of
/// C programs" in `docs/override.md`).
pub(crate) const C_POOL_THRESHOLD: usize = 4096;

/// The C fast path serves requests of up to this many bytes (the class
/// from [`C_FAST_CLASS`]); larger ones take the general path.
pub(crate) const C_FAST_THRESHOLD: usize = 2048;

/// The largest default-aligned C request served from a pool: the block
/// must also hold AddressSanitizer's redzone (0 bytes in other builds).
pub(crate) const C_POOL_MAX_REQUEST: usize = C_POOL_THRESHOLD - super::asan::REDZONE;

/// The largest default-aligned C request the fast path serves, redzone
/// included as in [`C_POOL_MAX_REQUEST`].
pub(crate) const C_FAST_MAX_REQUEST: usize = C_FAST_THRESHOLD - super::asan::REDZONE;

/// The block size of C's medium class for `padded` bytes (more than 512,
/// at most [`C_POOL_THRESHOLD`]): `padded` rounded up to an eighth of the
/// power of two below it, so four classes per doubling (128 bytes apart
/// up to 1 KiB, 256 up to 2 KiB, 512 up to 4 KiB), each a multiple of
/// [`ALIGNMENT`], wasting less than a fifth of the block on any request it
/// serves.
#[cfg_attr(loom, allow(dead_code))] // only C's malloc routes with it
pub(crate) const fn c_medium_block(padded: usize) -> usize {
    let below = padded - 1;
    let step = 1 << (usize::BITS - below.leading_zeros() - 3);
    (below | (step - 1)) + 1
}

/// The class of C's default-aligned request of `padded` bytes (redzone
/// included), 1 to [`C_POOL_THRESHOLD`].
#[cfg_attr(loom, allow(dead_code))] // only C's malloc routes with it
const fn c_class_of(padded: usize) -> usize {
    if padded <= SMALL_REQUEST_THRESHOLD {
        class_of_size(padded)
    } else {
        class_of_size(c_medium_block(padded))
    }
}

/// The class of a default-aligned C request of `s` bytes (redzone
/// included, 1 to [`C_FAST_THRESHOLD`]), at `(s - 1) / 16`: the fast
/// path's lookup, one load where the 16-byte classes took a shift only.
/// Every class fits a `u8` (`NB_CLASSES` is 256).
#[cfg_attr(loom, allow(dead_code))] // only C's malloc routes with it
pub(crate) const C_FAST_CLASS: [u8; C_FAST_THRESHOLD / ALIGNMENT] = {
    let mut table = [0; C_FAST_THRESHOLD / ALIGNMENT];
    let mut i = 0;
    while i < table.len() {
        // Every size of the entry's 16 rounds to the same class: the
        // classes are multiples of 16.
        table[i] = c_class_of((i + 1) * ALIGNMENT) as u8;
        i += 1;
    }
    table
};

/// Number of size classes, small and medium: 4,096 / 16. Every array
/// indexed by class has this many entries.
#[cfg(not(loom))]
pub(crate) const NB_CLASSES: usize = C_POOL_THRESHOLD / ALIGNMENT;

/// Under loom, the small classes only: its models never reach C's
/// `malloc` (the only user of the medium classes), and their heaps, built
/// of loom's much larger atomics, live on the models' coroutine stacks,
/// which four times the per-class arrays overflowed.
#[cfg(loom)]
pub(crate) const NB_CLASSES: usize = NB_SMALL_CLASSES;

/// A pool: one size class's blocks, aligned to its own size so that a
/// block's pool is found by masking the block's address.
pub(crate) const POOL_SHIFT: u32 = 14;
/// 16 KiB, as in CPython 3.12 on 64-bit. See the module docs of `alloc`.
pub(crate) const POOL_SIZE: usize = 1 << POOL_SHIFT;

/// An arena: a run of pools mapped from the OS in one piece and aligned to
/// its size, so that a block's arena is found by masking too.
pub(crate) const ARENA_SHIFT: u32 = 20;
/// 1 MiB, as in CPython 3.12 on 64-bit.
pub(crate) const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
pub(crate) const ARENA_MASK: usize = !(ARENA_SIZE - 1);
/// Pool slots in an arena; slot 0 holds the arena and pool headers.
pub(crate) const POOLS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;

/// The OS page.
pub(crate) const PAGE_SIZE: usize = 4096;

/// The size class serving a request of `size` bytes aligned to `align`, or
/// `None` when the request must go to the system allocator.
///
/// The same `(size, align)` always routes the same way, which is what lets
/// `dealloc` and `realloc` trust the layout they are given instead of
/// looking the address up.
#[inline(always)]
pub(crate) fn route(size: usize, align: usize) -> Option<usize> {
    match route_fast(size, align) {
        Some(class) => Some(class),
        // Too large for any class whatever the alignment: decided here,
        // without the call (every large `alloc` and `free` passes here).
        None if size > SMALL_REQUEST_THRESHOLD - super::asan::REDZONE => None,
        // Under AddressSanitizer every request carries a poisoned redzone.
        None => route_aligned(size + super::asan::REDZONE, align),
    }
}

/// The class of a request with the default alignment, or `None` for
/// anything [`route`] must look at more closely (the redzone included).
#[inline(always)]
pub(crate) fn route_fast(size: usize, align: usize) -> Option<usize> {
    (size <= SMALL_REQUEST_THRESHOLD - super::asan::REDZONE && align <= ALIGNMENT)
        .then(|| class_of_size(size + super::asan::REDZONE))
}

/// The size class serving a request of C's `malloc` family (every C entry
/// point, and the debug allocator's outer blocks under them): a
/// default-aligned request takes a small or a medium class (see
/// [`C_POOL_THRESHOLD`]), a stricter alignment routes as [`route`] does;
/// `None` for glibc's.
#[inline(always)]
#[cfg_attr(loom, allow(dead_code))] // only C's malloc routes with it
pub(crate) fn route_c(size: usize, align: usize) -> Option<usize> {
    if align <= ALIGNMENT {
        if size > C_POOL_MAX_REQUEST {
            return None;
        }
        // At most `C_POOL_THRESHOLD`: a class below `NB_CLASSES`.
        Some(c_class_of(size + super::asan::REDZONE))
    } else {
        route(size, align)
    }
}

#[inline(never)]
fn route_aligned(size: usize, align: usize) -> Option<usize> {
    if size > SMALL_REQUEST_THRESHOLD || align > SMALL_REQUEST_THRESHOLD {
        return None;
    }
    // `align` is a power of two no larger than 512, so this cannot overflow.
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    (rounded <= SMALL_REQUEST_THRESHOLD).then(|| class_of_size(rounded))
}

/// Whether `realloc` from `old_size` to `new_size` bytes is a *small step*
/// of a buffer growing by increments. A caller that at least doubles its
/// block (`Vec`, `String`) amortises its own growth and is given exactly
/// what it asks for; a smaller step (a C-style buffer growing 8 bytes at a
/// time) is given headroom, so that the steps after it stay in place.
#[inline(always)]
pub(crate) fn is_small_step(old_size: usize, new_size: usize) -> bool {
    new_size > old_size && new_size / 2 < old_size
}

/// The class a small block moves to when `realloc` grows it from
/// `old_size` to `new_size` bytes (`new_class` being the class that fits
/// `new_size` exactly).
///
/// After a [small step](is_small_step) it is a class with room for half as
/// much again, capped at the largest class, so a run of 8-byte steps from
/// 8 to 512 bytes moves 7 times instead of 32. The block keeps every
/// class's guarantees (its natural alignment honours `align`), and
/// `dealloc` with the smaller layout finds its class in the pool header,
/// as every small free does.
#[inline]
pub(crate) fn growth_class(
    old_size: usize,
    new_size: usize,
    align: usize,
    new_class: usize,
) -> usize {
    if !is_small_step(old_size, new_size) {
        return new_class;
    }
    let roomy = (new_size + new_size / 2).min(SMALL_REQUEST_THRESHOLD - super::asan::REDZONE);
    match route(roomy, align) {
        Some(class) if class > new_class => class,
        _ => new_class,
    }
}

/// The bytes to ask the system allocator for when `realloc` grows a large
/// block from `old_size` to `new_size`: a quarter more after a
/// [small step](is_small_step), so the steps after it fit the block (see
/// `global::PyMalloc::realloc_large`), exactly `new_size` otherwise. The
/// headroom is never asked for past `isize::MAX / 2`, so the capacity is
/// always a valid `Layout` size at any alignment `new_size` is valid with.
#[inline]
pub(crate) fn large_growth_capacity(old_size: usize, new_size: usize) -> usize {
    if is_small_step(old_size, new_size) && new_size <= isize::MAX as usize / 4 {
        new_size + new_size / 4
    } else {
        new_size
    }
}

/// The class of a request of `size <= 2048` bytes with the default alignment.
/// A zero-byte request is given the smallest block.
#[inline(always)]
pub(crate) const fn class_of_size(size: usize) -> usize {
    size.saturating_sub(1) >> ALIGNMENT_SHIFT
}

/// Block size of class `class`.
#[inline(always)]
pub(crate) const fn block_size(class: usize) -> usize {
    (class + 1) << ALIGNMENT_SHIFT
}

/// The alignment every block of `class` has: the largest power of two that
/// divides its size.
#[cfg(test)]
pub(crate) const fn natural_alignment(class: usize) -> usize {
    1 << block_size(class).trailing_zeros()
}

/// How many blocks of `class` fit in one pool. Pool headers live apart
/// from the pools (see `pool`), so all of a pool is blocks.
#[inline]
pub(crate) const fn blocks_per_pool(class: usize) -> usize {
    POOL_SIZE / block_size(class)
}

#[cfg(test)]
mod tests {
    use super::super::asan::REDZONE;
    use super::*;

    #[test]
    fn thirty_two_classes_of_sixteen_bytes() {
        assert_eq!(NB_SMALL_CLASSES, 32);
        assert_eq!(block_size(0), 16);
        assert_eq!(block_size(NB_SMALL_CLASSES - 1), 512);
        for size in 1..=SMALL_REQUEST_THRESHOLD {
            let class = class_of_size(size);
            assert!(block_size(class) >= size, "size {size} class {class}");
            assert!(
                block_size(class) - size < ALIGNMENT,
                "size {size} wastes a class"
            );
        }
        assert_eq!(class_of_size(0), 0);
    }

    #[test]
    fn medium_classes_only_for_c() {
        assert_eq!(NB_CLASSES, 256);
        let medium: std::collections::BTreeSet<usize> = (513..=C_POOL_THRESHOLD)
            .map(|n| block_size(c_class_of(n)))
            .collect();
        let expected = [
            640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
        ];
        assert_eq!(medium.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(block_size(NB_CLASSES - 1), C_POOL_THRESHOLD);
        for size in 0..=C_POOL_THRESHOLD + 16 {
            let padded = size + REDZONE;
            match route_c(size, ALIGNMENT) {
                Some(class) => {
                    assert!(class < NB_CLASSES);
                    assert!(block_size(class) >= padded);
                    if padded <= SMALL_REQUEST_THRESHOLD {
                        assert!(block_size(class) - padded.max(1) < ALIGNMENT, "{size}");
                    } else {
                        // Four classes per doubling: 640, 768, 896, 1,024,
                        // 1,280, ..., 4,096.
                        let step = (padded - 1).next_power_of_two() / 8;
                        let step = if (padded - 1).is_power_of_two() {
                            step * 2
                        } else {
                            step
                        };
                        assert_eq!(block_size(class) % step, 0, "{size}");
                        assert!(block_size(class) - padded < step, "{size}");
                        // A block stays in place for C's `realloc` to any
                        // size that routes to its class (`fits_in_place`:
                        // a quarter of the block wasted at most).
                        assert!(size * 4 >= block_size(class) * 3, "{size}");
                    }
                    // The fast path's table agrees.
                    if (1..=C_FAST_MAX_REQUEST).contains(&size) {
                        assert_eq!(
                            usize::from(C_FAST_CLASS[(size - 1 + REDZONE) / ALIGNMENT]),
                            class
                        );
                    }
                }
                None => assert!(padded > C_POOL_THRESHOLD),
            }
            // Rust's requests never get a medium class.
            if let Some(class) = route(size, 8) {
                assert!(class < NB_SMALL_CLASSES, "{size}");
            }
            // Neither does an over-aligned C request: C routes it as Rust.
            for align in [32, 64, 512, 4096] {
                assert_eq!(route_c(size, align), route(size, align), "{size} {align}");
            }
        }
    }

    #[test]
    fn routing_honours_alignment() {
        for size in 0..=600usize {
            let mut align = 1;
            while align <= 8192 {
                let padded = size + REDZONE;
                match route(size, align) {
                    Some(class) => {
                        assert!(block_size(class) >= padded);
                        assert_eq!(natural_alignment(class) % align, 0, "{size}/{align}");
                    }
                    None => assert!(padded > 512 || align > 16),
                }
                align *= 2;
            }
        }
        if cfg!(pymem_asan) {
            return;
        }
        assert_eq!(route(40, 32), Some(class_of_size(64)));
        assert_eq!(route(300, 256), Some(class_of_size(512)));
        assert_eq!(route(1, 512), Some(class_of_size(512)));
        assert_eq!(route(1, 1024), None);
        assert_eq!(route(513, 8), None);
        assert_eq!(route(400, 256), Some(class_of_size(512)));
        assert_eq!(route(200, 1024), None);
    }

    #[test]
    fn growth_gives_headroom_to_small_steps_only() {
        assert!(is_small_step(16, 24) && is_small_step(1000, 1008));
        assert!(!is_small_step(64, 128) && !is_small_step(100, 100) && !is_small_step(100, 50));
        for align in [1, 8, 16, 32, 64, 128, 256, 512] {
            for old in 1..=SMALL_REQUEST_THRESHOLD {
                for new in old + 1..=SMALL_REQUEST_THRESHOLD {
                    let (Some(exact), Some(_)) = (route(new, align), route(old, align)) else {
                        continue;
                    };
                    let class = growth_class(old, new, align, exact);
                    assert!(class >= exact, "{old} -> {new} / {align}");
                    assert!(block_size(class) >= new + REDZONE);
                    assert_eq!(
                        natural_alignment(class) % align,
                        0,
                        "{old} -> {new} / {align}"
                    );
                    if !is_small_step(old, new) {
                        assert_eq!(class, exact, "a doubling {old} -> {new} got headroom");
                    }
                }
            }
        }
        if REDZONE == 0 {
            assert_eq!(block_size(growth_class(32, 40, 8, class_of_size(40))), 64);
        }
        assert_eq!(large_growth_capacity(1000, 1008), 1260);
        assert_eq!(large_growth_capacity(1000, 2000), 2000);
        assert_eq!(
            large_growth_capacity(usize::MAX / 2, usize::MAX / 2 + 8),
            usize::MAX / 2 + 8
        );
    }

    #[test]
    fn pool_geometry() {
        assert_eq!(POOL_SIZE, 16 * 1024);
        assert_eq!(POOLS_PER_ARENA, 64);
        assert_eq!(blocks_per_pool(0), 1024);
        assert_eq!(blocks_per_pool(class_of_size(48)), 341);
        assert_eq!(blocks_per_pool(class_of_size(512)), 32);
        for class in 0..NB_CLASSES {
            // Every block of a pool (whose start is POOL_SIZE-aligned) is
            // naturally aligned.
            assert_eq!(POOL_SIZE % natural_alignment(class), 0);
            assert!(blocks_per_pool(class) * block_size(class) <= POOL_SIZE);
            assert!(POOL_SIZE - blocks_per_pool(class) * block_size(class) < block_size(class));
        }
    }
}
