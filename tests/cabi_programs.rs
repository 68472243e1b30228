//! Real programs with `libpymem_malloc.so` preloaded, their output checked
//! against the same run on glibc alone: CPython with `PYTHONMALLOC=malloc`
//! (every object from the process's `malloc`), `sort` of a large file,
//! `gzip`/`gunzip`, `git` on a small repository, a multi-threaded C stress
//! program (`tests/c/stress.c`: cross-thread frees, random sizes, thread
//! churn) and `fork` while threads allocate (`tests/c/fork.c`). A tool
//! missing from the machine is skipped with a note.
//!
//! The runs are short so that `cargo test` stays quick;
//! `PYMEM_CABI_LONG=1` makes them longer (CI runs `scripts/cabi.sh`).

mod cabi_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cabi_common::{assert_success, compile_c, preload, run_preloaded};

fn long() -> bool {
    std::env::var_os("PYMEM_CABI_LONG").is_some()
}

/// The program, if it is installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: {name} is not installed");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cabi-programs")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `build()` on glibc and under the preload; both must succeed with
/// the same standard output, which is returned.
fn same_output(what: &str, library: &Path, build: impl Fn() -> Command) -> Vec<u8> {
    let plain = build().env_remove("LD_PRELOAD").output().unwrap();
    assert_success(&format!("{what} on glibc"), &plain);
    let ours = run_preloaded(library, &mut build());
    assert_success(&format!("{what} under the preload"), &ours);
    assert!(
        plain.stdout == ours.stdout,
        "{what}: output differs under the preload"
    );
    ours.stdout
}

#[test]
fn python_with_pythonmalloc_malloc() {
    let (Some(library), Some(python)) = (preload(), tool("python3")) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/alloc_heavy.py");
    let scale = if long() { "8" } else { "1" };
    let out = same_output("python3 alloc_heavy.py", library, || {
        let mut c = Command::new(&python);
        c.arg(&script)
            .arg(scale)
            .env("PYTHONMALLOC", "malloc")
            .env("PYTHONHASHSEED", "0");
        c
    });
    assert_eq!(out.len(), 65, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn python_is_really_served_by_pymem() {
    let (Some(library), Some(python)) = (preload(), tool("python3")) else {
        return;
    };
    // ctypes' malloc_usable_size of a fresh 24-byte malloc: a 32-byte pool
    // block under PyMalloc, 24 bytes under glibc.
    let probe = "import ctypes; c = ctypes.CDLL(None); c.malloc.restype = ctypes.c_void_p; \
                 c.malloc_usable_size.argtypes = [ctypes.c_void_p]; \
                 print(c.malloc_usable_size(c.malloc(24)))";
    let out = run_preloaded(
        library,
        Command::new(&python)
            .args(["-c", probe])
            .env("PYTHONMALLOC", "malloc"),
    );
    assert_success("python3 probe", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "32");
}

#[test]
fn sort_of_a_large_file() {
    let (Some(library), Some(sort)) = (preload(), tool("sort")) else {
        return;
    };
    let dir = scratch("sort");
    let input = dir.join("input.txt");
    let lines = if long() { 1_000_000 } else { 200_000 };
    let mut text = String::new();
    let mut x: u64 = 1;
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!(
            "{:x} line {i} {}\n",
            x,
            "z".repeat((x % 90) as usize)
        ));
    }
    std::fs::write(&input, text).unwrap();
    let out = same_output("sort", library, || {
        let mut c = Command::new(&sort);
        // A small buffer makes sort merge temporary files too.
        c.args(["-S", "4M", "-T"])
            .arg(&dir)
            .arg(&input)
            .env("LC_ALL", "C");
        c
    });
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), lines);
}

#[test]
fn gzip_and_gunzip_round_trip() {
    let (Some(library), Some(gzip)) = (preload(), tool("gzip")) else {
        return;
    };
    let dir = scratch("gzip");
    let original: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 % 17 + b'a')
        .collect();
    let input = dir.join("data");
    std::fs::write(&input, &original).unwrap();
    let compressed = run_preloaded(library, Command::new(&gzip).args(["-c", "-9"]).arg(&input));
    assert_success("gzip", &compressed);
    let packed = dir.join("data.gz");
    std::fs::write(&packed, &compressed.stdout).unwrap();
    let restored = run_preloaded(library, Command::new(&gzip).args(["-d", "-c"]).arg(&packed));
    assert_success("gunzip", &restored);
    assert!(
        restored.stdout == original,
        "gunzip did not restore the data"
    );
}

#[test]
fn git_on_a_small_repository() {
    let (Some(library), Some(git)) = (preload(), tool("git")) else {
        return;
    };
    let dir = scratch("git");
    let git_in = |args: &[&str]| -> Output {
        let out = run_preloaded(
            library,
            Command::new(&git)
                .args([
                    "-c",
                    "user.name=pymem",
                    "-c",
                    "user.email=pymem@example.invalid",
                ])
                .args(["-c", "init.defaultBranch=main", "-c", "gc.auto=0"])
                .args(args)
                .current_dir(&dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", &dir),
        );
        assert_success(&format!("git {args:?}"), &out);
        out
    };
    git_in(&["init", "-q"]);
    let commits = if long() { 30 } else { 6 };
    for c in 0..commits {
        for f in 0..20 {
            let body: String = (0..200)
                .map(|l| format!("file {f} commit {c} line {l}\n"))
                .collect();
            std::fs::write(dir.join(format!("f{f}.txt")), body).unwrap();
        }
        git_in(&["add", "-A"]);
        git_in(&["commit", "-q", "-m", &format!("commit {c}")]);
    }
    let log = git_in(&["log", "--oneline"]);
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).lines().count(),
        commits
    );
    let diff = git_in(&["diff", "--stat", "HEAD~1", "HEAD"]);
    assert!(String::from_utf8_lossy(&diff.stdout).contains("20 files changed"));
    git_in(&["gc", "-q"]);
    let fsck = git_in(&["fsck", "--strict"]);
    assert!(fsck.status.success());
}

#[test]
fn threaded_c_stress() {
    let Some(library) = preload() else { return };
    let exe = compile_c("stress");
    let args: &[&str] = if long() {
        &["8", "6", "10000"]
    } else {
        &["4", "4", "4000"]
    };
    let out = run_preloaded(library, Command::new(&exe).args(args));
    assert_success("stress", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("blocks checked"));
}

#[test]
fn fork_while_other_threads_allocate() {
    let Some(library) = preload() else { return };
    let exe = compile_c("fork");
    let forks = if long() { "200" } else { "40" };
    for debug in ["0", "1"] {
        let out = run_preloaded(
            library,
            Command::new(&exe).arg(forks).env("PYMEM_DEBUG", debug),
        );
        assert_success(&format!("fork with PYMEM_DEBUG={debug}"), &out);
    }
}

/// The deterministic half of the fork test above: glibc's allocator (which
/// serves the large blocks) is set up before `main`, so no thread can be
/// setting it up while another forks. Without that, a child forked while a
/// thread made the process's first large allocation inherited a main arena
/// caught half-extended and aborted in glibc's `sysmalloc` (about 1 run in
/// 12 of the fork test with `PYMEM_DEBUG=1`).
#[test]
fn glibc_allocator_is_set_up_before_main() {
    let Some(library) = preload() else { return };
    let exe = compile_c("glibc_ready");
    let plain = Command::new(&exe)
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    assert_success("glibc_ready on glibc", &plain);
    for debug in ["0", "1"] {
        let out = run_preloaded(library, Command::new(&exe).env("PYMEM_DEBUG", debug));
        assert_success("glibc_ready under the preload", &out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ready\n",
            "PYMEM_DEBUG={debug}: glibc's allocator was not set up before main"
        );
    }
}

#[test]
fn threaded_c_stress_under_the_debug_allocator() {
    let Some(library) = preload() else { return };
    let exe = compile_c("stress");
    let out = run_preloaded(
        library,
        Command::new(&exe)
            .args(["2", "3", "2000"])
            .env("PYMEM_DEBUG", "1"),
    );
    assert_success("stress under PYMEM_DEBUG=1", &out);
}

/// Whether the C toolchain has GCC's static unwinder (`libgcc_eh.a`),
/// which `pymem-malloc`'s build script links in place of `libgcc_s.so.1`.
fn static_unwinder_available() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .is_ok_and(|out| {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            path.is_absolute() && path.is_file()
        })
}

/// The preload brings no shared object of its own into the process: a C
/// program loads only libc and the loader, and `libpymem_malloc.so` must
/// not add `libgcc_s.so.1` (Rust's unwinder, which only a panic would run)
/// to every process it is preloaded into. Mapping, relocating and
/// initialising it cost a small program about a sixth of its resident
/// memory at start-up (see `docs/override.md`).
#[test]
fn the_preload_loads_no_other_library() {
    let Some(library) = preload() else { return };
    if !static_unwinder_available() {
        eprintln!("skipped: no libgcc_eh.a, the library keeps libgcc_s.so.1");
        return;
    }
    let Some(cat) = tool("cat") else { return };
    let out = run_preloaded(library, Command::new(cat).arg("/proc/self/maps"));
    assert_success("cat /proc/self/maps", &out);
    let maps = String::from_utf8_lossy(&out.stdout);
    assert!(maps.contains("libpymem_malloc.so"), "{maps}");
    assert!(!maps.contains("libgcc_s"), "{maps}");
}
