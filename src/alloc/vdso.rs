//! The kernel's `clock_gettime` in the vDSO, called directly.
//!
//! glibc's `clock_gettime` is a small wrapper around the same vDSO
//! function, but it lives far from everything else the allocator calls in
//! libc, and with the kernel's fault-around (64 KiB windows of a file
//! mapped at each page fault) the first call made a window of libc's code
//! resident that no other code of a small program touches: 64 KiB of
//! resident memory in every process under the `LD_PRELOAD` library, for a
//! clock that is read a few dozen times per run (purge decisions; see
//! `docs/override.md`). A system call instead would cost half a
//! microsecond per read; the vDSO costs what glibc's wrapper does.
//!
//! The function is found once, by its ELF symbol in the vDSO image the
//! kernel maps into every process (`getauxval(AT_SYSINFO_EHDR)`, read
//! through its `DT_HASH` symbol table, which the kernel's vDSO carries
//! on x86-64 and aarch64). Anything unexpected falls back to glibc's
//! `clock_gettime`.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The vDSO's `clock_gettime`.
type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// Not looked up yet.
const UNKNOWN: usize = 0;
/// Looked up and not found: use glibc's.
const ABSENT: usize = 1;

/// The function's address, or `UNKNOWN`/`ABSENT`.
static FUNCTION: AtomicUsize = AtomicUsize::new(UNKNOWN);

#[cfg(target_arch = "x86_64")]
const NAME: &[u8] = b"__vdso_clock_gettime\0";
#[cfg(target_arch = "aarch64")]
const NAME: &[u8] = b"__kernel_clock_gettime\0";

/// `CLOCK_MONOTONIC_COARSE` now; what `libc::clock_gettime` would return.
pub(crate) fn monotonic_coarse() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut f = FUNCTION.load(Ordering::Acquire);
    if f == UNKNOWN {
        f = look_up().map_or(ABSENT, |f| f as usize);
        FUNCTION.store(f, Ordering::Release);
    }
    if f == ABSENT {
        // SAFETY: `ts` is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    } else {
        // SAFETY: `f` is the address of the vDSO's exported
        // `clock_gettime` (found by `look_up`), which has this signature;
        // the vDSO stays mapped for the life of the process (and at the
        // same address in a child after `fork`). `ts` is a valid
        // out-parameter.
        unsafe {
            let f: ClockGettime = core::mem::transmute::<usize, ClockGettime>(f);
            f(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
        }
    }
    ts
}

/// An entry of the `PT_DYNAMIC` array (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    tag: i64,
    value: u64,
}

const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;

/// Finds the vDSO's `clock_gettime`, or `None`.
fn look_up() -> Option<ClockGettime> {
    // SAFETY: `getauxval` reads the process's auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return None;
    }
    // SAFETY: a non-zero AT_SYSINFO_EHDR is the address of the vDSO's ELF
    // image, mapped readable by the kernel for the life of the process;
    // every read below stays inside the tables its own headers describe.
    unsafe {
        let header = &*(base as *const libc::Elf64_Ehdr);
        if header.e_ident[..4] != *b"\x7fELF" || header.e_ident[4] != 2 {
            return None;
        }
        let phdrs = core::slice::from_raw_parts(
            (base + header.e_phoff as usize) as *const libc::Elf64_Phdr,
            header.e_phnum as usize,
        );
        // Virtual addresses in the image are relative to its first load
        // segment's `p_vaddr`, mapped at `base + p_offset`.
        let load = phdrs.iter().find(|p| p.p_type == libc::PT_LOAD)?;
        let bias = (base + load.p_offset as usize).wrapping_sub(load.p_vaddr as usize);
        let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
        let mut entry = (base + dynamic.p_offset as usize) as *const Dyn;
        let (mut hash, mut strtab, mut symtab) = (0usize, 0usize, 0usize);
        while (*entry).tag != DT_NULL {
            let at = bias.wrapping_add((*entry).value as usize);
            match (*entry).tag {
                DT_HASH => hash = at,
                DT_STRTAB => strtab = at,
                DT_SYMTAB => symtab = at,
                _ => {}
            }
            entry = entry.add(1);
        }
        if hash == 0 || strtab == 0 || symtab == 0 {
            return None;
        }
        // DT_HASH: nbucket, nchain, ...; nchain is the number of symbols.
        let count = *(hash as *const u32).add(1) as usize;
        let symbols = core::slice::from_raw_parts(symtab as *const libc::Elf64_Sym, count);
        for symbol in symbols {
            if symbol.st_info & 0xf != STT_FUNC
                || symbol.st_shndx == SHN_UNDEF
                || symbol.st_value == 0
            {
                continue;
            }
            let name = (strtab + symbol.st_name as usize) as *const u8;
            // Byte by byte, so that nothing past the name's terminator is
            // read: `NAME` ends with one, so a match stops at it.
            if NAME.iter().enumerate().all(|(i, &b)| *name.add(i) == b) {
                let address = bias.wrapping_add(symbol.st_value as usize);
                return Some(core::mem::transmute::<usize, ClockGettime>(address));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vdso_clock_is_found_and_agrees_with_glibc() {
        assert!(super::look_up().is_some(), "no clock_gettime in the vDSO");
        let mut before = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut before) };
        let ours = super::monotonic_coarse();
        let mut after = before;
        // SAFETY: a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut after) };
        let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        assert!(ns(&before) <= ns(&ours) && ns(&ours) <= ns(&after));
    }
}
