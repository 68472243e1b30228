//! The compile errors of the common mistakes with `Gc` and
//! `#[derive(Trace)]`, pinned (issue 13, item 3): each snippet in
//! `tests/compile_fail/NAME.rs` is compiled by `rustc` against the pymem
//! library this test was built with, and every line of `NAME.expected`
//! must appear in the compiler's output (a file saying `# compiles` means
//! the snippet must compile). Only the key lines are pinned, so a
//! compiler that words its own notes differently still passes.
//!
//! The library and its dependencies come from the test binary's own
//! `deps` directory (no extra build, no trybuild): a few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The `deps` directory of this test binary, and the pymem rlib it was
/// linked with: the newest one not newer than the binary (a later build
/// with other features leaves a newer one beside it).
fn library() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory").to_path_buf();
    let built = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::now());
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(&deps).expect("read deps").flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("libpymem-") && name.ends_with(".rlib")) {
            continue;
        }
        let Ok(t) = e.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if t <= built && best.as_ref().is_none_or(|(b, _)| t > *b) {
            best = Some((t, e.path()));
        }
    }
    let rlib = best
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no libpymem-*.rlib in {}", deps.display()));
    (deps, rlib)
}

/// Compiles `src` as a library; returns whether it compiled, and stderr.
fn rustc(src: &Path, deps: &Path, rlib: &Path, out: &Path) -> (bool, String) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "lib",
            "--emit=metadata",
        ])
        .arg("--crate-name")
        .arg(src.file_stem().unwrap())
        .arg("-o")
        .arg(out)
        .arg("--extern")
        .arg(format!("pymem={}", rlib.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("--color=never")
        .arg(src)
        .output()
        .expect("run rustc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn common_mistakes_give_the_pinned_errors() {
    if cfg!(pymem_asan) || cfg!(miri) {
        // The library is built with flags (a sanitizer, Miri) that a plain
        // rustc cannot link against.
        eprintln!("compile_fail: skipped under this build configuration");
        return;
    }
    let (deps, rlib) = library();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compile_fail");
    let out = std::env::temp_dir().join(format!("pymem-compile-fail-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "the snippets are missing: {cases:?}");
    // Two at a time (the machine has two cores).
    let results: Vec<(PathBuf, bool, String)> = cases
        .chunks(2)
        .flat_map(|pair| {
            std::thread::scope(|s| {
                let handles: Vec<_> = pair
                    .iter()
                    .map(|src| {
                        let meta = out.join(format!(
                            "{}.rmeta",
                            src.file_stem().unwrap().to_string_lossy()
                        ));
                        let (deps, rlib) = (&deps, &rlib);
                        s.spawn(move || {
                            let (ok, err) = rustc(src, deps, rlib, &meta);
                            (src.clone(), ok, err)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let _ = std::fs::remove_dir_all(&out);

    let mut failures = Vec::new();
    for (src, ok, stderr) in results {
        let expected = std::fs::read_to_string(src.with_extension("expected"))
            .unwrap_or_else(|_| panic!("missing {}", src.with_extension("expected").display()));
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        if expected.lines().any(|l| l.trim() == "# compiles") {
            if !ok {
                failures.push(format!("{name}: should compile, but:\n{stderr}"));
            }
            continue;
        }
        if ok {
            failures.push(format!("{name}: compiled, but should not"));
            continue;
        }
        let missing: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| !stderr.contains(l))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{name}: these expected lines are missing:\n  {}\ncompiler output:\n{stderr}",
                missing.join("\n  ")
            ));
        }
        for internal in [
            "Gc<()>",
            "SelfReference",
            "__private",
            "GcLayout",
            "HeaderSpec",
        ] {
            if stderr.contains(internal) {
                failures.push(format!(
                    "{name}: the error mentions pymem's internal `{internal}`:\n{stderr}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
