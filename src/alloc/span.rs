//! Huge-page spans: how a large heap maps its arenas.
//!
//! A heap maps its first [`SPANS_FROM_ARENAS`] arenas (32 MiB) one by one,
//! each a 1 MiB mapping of 4 KiB pages, as always. Past that, it maps them
//! two at a time: a *span* of 2 MiB aligned to 2 MiB (one huge page on
//! x86-64 and aarch64), advised with `madvise(MADV_HUGEPAGE)`, so that
//! where the kernel's THP mode is `madvise` or `always` the first touch
//! faults in one 2 MiB page and the span is reached through one TLB entry
//! instead of 512. The two halves are ordinary arenas of the heap (masking
//! an address still finds its arena, both are in the arena bitmap, both on
//! the heap's list of all arenas); each has `huge` set, and its *buddy* is
//! the other half.
//!
//! Why only large heaps: a huge page is resident as a whole from its first
//! touch, so an arena with one pool in use costs 2 MiB of RSS with its
//! buddy, where a 4 KiB-paged arena costs the pages its pools touched. A
//! small heap (the churn shapes, idle workers' last pools, a program's
//! first megabytes) keeps 4 KiB pages and its resident set exactly as
//! before. A heap with 32 MiB mapped spends at most one 2 MiB span beyond
//! what it touched per span it holds, and only while it is that large.
//!
//! # The span's life
//!
//! * Mapping ([`Heap::map_fresh_arena`]): the lower half serves the pool
//!   asked for; the upper half is *retired* at once (empty, kept, counted
//!   in `retained_bytes`), so the heap's next demand takes it
//!   ([`Heap::unretire`] takes the oldest retired arena, which for a
//!   growing heap is this one). Taking it counts as a reuse, so a heap
//!   growing through spans is *swinging* for the retention rules
//!   (`Heap::retention_for`): its retired arenas keep the full `RETAIN_MS`
//!   over the cap while it grows, which only a heap past 32 MiB sees.
//! * Retirement: a half that empties is retired as any arena.
//! * Return ([`Heap::doom_retired`]): the span goes back to the OS whole,
//!   with one `munmap` of 2 MiB, when a half's retention is over and its
//!   buddy is retired too. Unmapping one half alone would split the huge
//!   page: the kernel would remap the other half with 4 KiB entries (the
//!   TLB benefit gone), and keep the whole 2 MiB page allocated until
//!   memory pressure splits it. So a half whose buddy is in use is kept
//!   retired, with its retention started again (*pinned*): it costs nothing
//!   the huge page did not already hold resident, and it is the first
//!   memory the heap reuses. (If the kernel could not find a huge page for
//!   the span, a pinned half holds the 4 KiB pages its pools touched, as a
//!   retired arena does, until its buddy empties.)
//! * Returning everything (`release_free_memory()`, a parked heap): a half
//!   whose buddy is in use is unmapped alone, splitting the span; both
//!   halves lose `huge` and live on as ordinary arenas. The contract is
//!   that empty memory goes back, and it does.
//!
//! Anything that gives back part of a span while the span stays mapped
//! (`MADV_DONTNEED` of a free pool slot, say) splits its huge page the
//! same way, and should skip arenas with `huge` set, or work in whole
//! spans.
//!
//! # Address ranges, the C ABI, fork
//!
//! A span lies below `ADDRESS_LIMIT` (checked when mapped, as for an
//! arena), and both of its arenas are in the arena bitmap from before
//! their first block is handed out until they are unmapped, so C's `free`
//! tells their blocks from foreign pointers exactly as for any arena. The
//! C entry points use the same heaps and arenas, so a C program's large
//! heap gets spans too. After `fork` the child has the same mappings (the
//! kernel copies huge pages on write like any page, and keeps the advice),
//! and the same heap lists, so nothing is done for it.

use super::arena::{self, Arena};
use super::heap::Heap;
use super::os;
use super::registry::Locked;
use super::size_class::ARENA_SIZE;
use crate::sync::Ordering;

/// A heap maps its arenas in huge-page spans once it has this many
/// arenas mapped (32 MiB).
pub(crate) const SPANS_FROM_ARENAS: usize = 32;

/// For how long after its thread's `release_free_memory()` found the heap
/// had been large (it had [`SPANS_FROM_ARENAS`] arenas or more since the
/// last return of everything) the heap maps spans once it has
/// [`SPANS_AFTER_RELEASE_FROM`] arenas: a program that releases its
/// memory between bursts builds the same large heap again, and its first
/// 32 MiB in 4 KiB pages cost 8,192 page faults per burst where spans
/// cost 16.
pub(crate) const SPANS_AFTER_RELEASE_MS: u64 = 1_000;

/// The arenas a heap maps in 4 KiB pages after a release that found it
/// large (see [`SPANS_AFTER_RELEASE_MS`]), 4 MiB: what a program keeps
/// allocating after a release without growing large again (a report, the
/// next small task) stays in 4 KiB pages, its resident set the pages it
/// touched, as for any small heap.
pub(crate) const SPANS_AFTER_RELEASE_FROM: usize = 4;

impl Heap {
    /// Maps a fresh arena for a new pool and adds it to the heap's list of
    /// all arenas; a heap with [`SPANS_FROM_ARENAS`] arenas or more maps a
    /// huge-page span, whose upper half it retires at once. Null when the
    /// OS refuses memory.
    #[cold]
    #[inline(never)]
    pub(super) fn map_fresh_arena(&self, _locked: &Locked<'_>) -> *mut Arena {
        let registry = self.registry();
        // Not where retention is brief (`purge::retain_briefly`: the C
        // entry points): a span unmapped 20 ms after it empties is mapped
        // and faulted again at the next growth, and each fresh huge page
        // may make the kernel compact memory first (its `defrag` setting
        // for advised regions): `fragment` of bench/c took 0.6-1.0 s of
        // system time in that work where 4 KiB pages cost 0.25 s.
        let count = self.arenas.count();
        if (count >= SPANS_FROM_ARENAS
            || (count >= SPANS_AFTER_RELEASE_FROM && self.large_before_release()))
            && !super::purge::brief_retention()
            && os::huge_pages_enabled()
        {
            let lower = arena::map_span(registry);
            if !lower.is_null() {
                let upper = Arena::buddy(lower);
                // Relaxed: a statistic and the retention cap's input, read
                // with no ordering (see `over_retained_cap`).
                registry
                    .retained_bytes
                    .fetch_add(ARENA_SIZE, Ordering::Relaxed);
                // SAFETY: both halves are fresh arenas of this heap, on no
                // list (`add`'s requirement); `upper` is empty, live, ours
                // and not on the usable list (`push_retired`'s); the lock is
                // held (`_locked`), under which the lists are written.
                unsafe {
                    self.arenas.add(lower);
                    self.arenas.add(upper);
                    self.arenas.push_retired(upper, os::now_ms());
                }
                return lower;
            }
            // The OS refused 2 MiB; an arena of 1 MiB may still be had.
        }
        let fresh = arena::map_arena(registry);
        if !fresh.is_null() {
            // SAFETY: a fresh arena of this heap, on no list; the lock is
            // held.
            unsafe { self.arenas.add(fresh) };
        }
        fresh
    }

    /// Whether its thread's release found the heap had been large within
    /// the last [`SPANS_AFTER_RELEASE_MS`]: its growth since maps
    /// spans from [`SPANS_AFTER_RELEASE_FROM`] arenas on.
    fn large_before_release(&self) -> bool {
        let at = self.arenas.large_at_release_ms.get();
        at != 0 && os::now_ms().saturating_sub(at) < SPANS_AFTER_RELEASE_MS
    }

    /// Returns a retired arena whose retention is over (`age_ms` is the
    /// retention that applied, 0 when everything goes back): an ordinary
    /// arena is doomed; a span's half is doomed with its buddy if that is
    /// retired too, kept (its retention restarted at `now`) if the buddy is
    /// in use, or, when everything goes back, split off and doomed alone.
    ///
    /// # Safety
    /// The lock must be held; `arena` must be on this heap's retired list.
    pub(super) unsafe fn doom_retired(
        &self,
        locked: &Locked<'_>,
        arena: *mut Arena,
        now: u64,
        age_ms: u64,
    ) {
        let registry = self.registry();
        // SAFETY: `arena` is on the retired list (this function's `# Safety`),
        // as `unlink_retired` requires; the lock, held, guards that list.
        unsafe { self.arenas.unlink_retired(arena) };
        // SAFETY: retired arenas are live arenas of this heap, whose
        // headers are written under the lock, held.
        let a = unsafe { &*arena };
        let mut doomed = arena;
        let mut bytes = ARENA_SIZE;
        if a.huge.get() {
            let buddy = Arena::buddy(arena);
            // SAFETY: a span's halves belong to the same heap and are
            // mapped together (`map_span`), so the buddy is a live arena of
            // this heap, under the same lock.
            let b = unsafe { &*buddy };
            if b.is_retired() {
                // SAFETY: the buddy is on the retired list (`is_retired`);
                // the lock is held.
                unsafe { self.arenas.unlink_retired(buddy) };
                // SAFETY: off the retired list, the buddy is on `all` only
                // (a retired arena is on no other list: `push_retired`).
                unsafe { self.arenas.remove(buddy) };
                doomed = arena.min(buddy);
                bytes = 2 * ARENA_SIZE;
            } else if age_ms > 0 {
                // Pinned: its huge page stays resident for the buddy anyway.
                // SAFETY: `arena` is empty, live, ours, and on no list but
                // `all` after the unlink above; the lock is held.
                unsafe { self.arenas.push_retired(arena, now) };
                return;
            } else {
                // Everything goes back: split the span.
                a.huge.set(false);
                b.huge.set(false);
            }
        }
        // SAFETY: off the retired list, `arena` is on `all` only (see
        // above); the lock is held.
        unsafe { self.arenas.remove(arena) };
        // Relaxed: see `map_fresh_arena`.
        registry.retained_bytes.fetch_sub(bytes, Ordering::Relaxed);
        // `doomed` is an ordinary arena, or the lower half of a span whose
        // halves are both off every list: what `unmap_arena` requires.
        locked.doom(doomed);
    }
}
