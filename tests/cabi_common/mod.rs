//! Shared by the `cabi_*` tests: building `libpymem_malloc.so` (with the
//! profile and target directory of the test itself), compiling the C
//! programs of `tests/c/` with the system C compiler, and running programs
//! with the library preloaded.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// `libpymem_malloc.so`, built by `cargo build -p pymem-malloc` into the
/// directory this test binary was built in (a no-op when `cargo test
/// --workspace` built it already). `None` under AddressSanitizer, whose
/// runtime replaces `malloc` itself: preloading another makes no sense.
pub fn preload() -> Option<&'static Path> {
    static LIBRARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            if cfg!(pymem_asan) {
                eprintln!("skipped: the preload is not built under AddressSanitizer");
                return None;
            }
            Some(build_library())
        })
        .as_deref()
}

fn build_library() -> PathBuf {
    // This binary is <target>/[<triple>/]<profile>/deps/<name>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut target_dir = profile_dir.parent().unwrap().to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", "pymem-malloc", "--manifest-path"]);
    cargo.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // Cargo tags the target directory it creates; a build that made it
    // without the tag (another cargo invocation first) is still native.
    let tagged = |d: &Path| d.join("CACHEDIR.TAG").exists();
    if !tagged(&target_dir) && target_dir.parent().is_some_and(tagged) {
        // A cross layout: <target>/<triple>/<profile>.
        let triple = target_dir.file_name().unwrap().to_owned();
        cargo.arg("--target").arg(triple);
        target_dir = target_dir.parent().unwrap().to_path_buf();
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    cargo.arg("--target-dir").arg(&target_dir);
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "cargo build -p pymem-malloc failed");
    let library = profile_dir.join("libpymem_malloc.so");
    assert!(library.exists(), "{} missing", library.display());
    library
}

/// Compiles `tests/c/<name>.c` with `$CC` (default `cc`) into the test
/// scratch directory, once per test binary; returns the executable.
pub fn compile_c(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, exe)) = built.iter().find(|(n, _)| n == name) {
        return exe.clone();
    }
    let exe = compile_c_now(name);
    built.push((name.to_owned(), exe.clone()));
    exe
}

fn compile_c_now(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cabi");
    std::fs::create_dir_all(&out_dir).unwrap();
    // Named after the test binary too: test binaries run concurrently.
    let exe = out_dir.join(format!("{name}-{}", env!("CARGO_CRATE_NAME")));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(
        out.status.success(),
        "{cc} {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `command` with the library preloaded (and `PYMEM_DEBUG` cleared
/// unless the caller set it); returns its output.
pub fn run_preloaded(library: &Path, command: &mut Command) -> Output {
    command.env("LD_PRELOAD", library);
    let has_debug = command
        .get_envs()
        .any(|(key, _)| key == std::ffi::OsStr::new("PYMEM_DEBUG"));
    if !has_debug {
        command.env_remove("PYMEM_DEBUG");
    }
    command.output().expect("run the program")
}

/// Asserts that a run succeeded, showing its output if not.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
