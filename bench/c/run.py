#!/usr/bin/env python3
"""Runs the C workloads of bench/c (and CPython) under each allocator as the
process's malloc, and prints wall time and peak RSS with ratios.

    python3 bench/c/run.py                 # every workload, 3 runs each
    python3 bench/c/run.py --quick         # tiny sizes, 1 run: checks it all works
    python3 bench/c/run.py --only churn,prodcons --reps 5

Allocators: glibc (nothing preloaded), pymem (target/release/libpymem_malloc.so,
or under $CARGO_TARGET_DIR when set,
built here), and mimalloc and jemalloc when their shared objects exist
(Debian: apt-get install libmimalloc2.0 libjemalloc2; or set MIMALLOC_SO /
JEMALLOC_SO). Each run checks the exit status and that every allocator
printed the same output. Runs of one workload are interleaved across
allocators (the order rotates every repetition) so that machine noise falls
on all of them alike; the figure kept is the median.
"""
import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "bench", "c")
# Cargo's target directory (CARGO_TARGET_DIR when set, as cargo itself
# reads it), where the preload is built and the workloads are put.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BUILD = os.path.join(TARGET, "bench-c")

# name: (arguments, quick arguments)
WORKLOADS = {
    "churn": (["30", "10000"], ["1", "1000"]),
    "simple-1t": (["1", "100"], ["1", "1"]),
    "simple-2t": (["2", "50"], ["2", "1"]),
    "prodcons": (["2", "6"], ["1", "1"]),
    "threadchurn": (["400", "4", "20000"], ["10", "2", "2000"]),
    "server": (["2", "10", "1500", "5000"], ["2", "2", "20", "500"]),
    "fragment": (["12", "400"], ["3", "20"]),
    "large": (["3000"], ["50"]),
    "leak": (["20"], ["1"]),
    "scratch": (["2", "3000", "50"], ["2", "20", "10"]),
}
PYTHON_SCALE = ("6", "1")


def build(quick):
    os.makedirs(BUILD, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    sources = sorted(f[:-2] for f in os.listdir(HERE) if f.endswith(".c"))
    sources.append("launcher/launch")
    for name in sources:
        exe = os.path.join(BUILD, os.path.basename(name))
        subprocess.run(
            [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", exe,
             os.path.join(HERE, name + ".c")],
            check=True,
        )
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "pymem-malloc",
         "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
        check=True,
    )


def allocators():
    found = [("glibc", None), ("pymem", os.path.join(TARGET, "release", "libpymem_malloc.so"))]
    for name, env, default in [
        ("mimalloc", "MIMALLOC_SO", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
        ("jemalloc", "JEMALLOC_SO", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ]:
        path = os.environ.get(env, default)
        if os.path.exists(path):
            found.append((name, path))
        else:
            print(f"note: {name} not found ({path}); set {env}", file=sys.stderr)
    return found


def run_measured(argv, preload, extra_env):
    """(wall seconds, peak RSS in KiB, stdout) of one run, measured by the
    launcher (see launcher/launch.c)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("PYMEM_DEBUG", None)
    env.update(extra_env)
    if preload:
        # The launcher sets the variable in its child just before the exec,
        # which keeps the launcher itself on glibc; not through env(1),
        # whose own peak RSS (larger than a small program's) the child's
        # ru_maxrss would keep.
        argv = ["LD_PRELOAD=" + preload] + argv
    proc = subprocess.run([os.path.join(BUILD, "launch")] + argv, env=env, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr.decode()[-2000:]}")
    line = [l for l in proc.stderr.decode().splitlines() if l.startswith("launch: ")][-1]
    _, wall, rss = line.split()
    return float(wall), int(rss), proc.stdout


def interpreter():
    """The CPython executable that `python3` runs, or None.

    `python3` on PATH may be a wrapper script rather than the interpreter
    (pyenv's shim is a bash script that runs about 35 bash processes before
    it execs CPython: 80 M instructions and 7,400 page faults per run, a
    tenth of alloc_heavy.py's time here), and under the preload those
    processes would be measured too. The interpreter reports its own path.
    """
    python = shutil.which("python3")
    if python is None:
        return None
    proc = subprocess.run(
        [python, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True
    )
    real = proc.stdout.strip()
    return real if proc.returncode == 0 and real and os.path.exists(real) else python


def geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-python", action="store_true")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    build(args.quick)
    allocs = allocators()
    names = [n for n in WORKLOADS if not args.only or n in args.only.split(",")]

    jobs = []  # (label, argv, extra env, allocators)
    for name in names:
        full, quick = WORKLOADS[name]
        exe = os.path.join(BUILD, name.split("-")[0])
        jobs.append((name, [exe] + (quick if args.quick else full), {}, allocs))
    python = interpreter()
    if python and not args.no_python and (not args.only or "python" in args.only.split(",")):
        script = os.path.join(ROOT, "tests", "c", "alloc_heavy.py")
        scale = PYTHON_SCALE[1] if args.quick else PYTHON_SCALE[0]
        env = {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}
        # CPython's own pymalloc is a fifth contestant here.
        contestants = allocs + [("cpython-pymalloc", "pymalloc")]
        jobs.append(("python", [python, script, scale], env, contestants))

    results = {}  # (label, allocator) -> (median wall, median rss KiB)
    for label, argv, env, contestants in jobs:
        samples = {name: [] for name, _ in contestants}
        outputs = {}
        for rep in range(reps):
            order = contestants[rep % len(contestants):] + contestants[: rep % len(contestants)]
            for name, lib in order:
                run_env = dict(env)
                preload = lib
                if lib == "pymalloc":
                    run_env.pop("PYTHONMALLOC", None)
                    preload = None
                wall, rss, out = run_measured(argv, preload, run_env)
                samples[name].append((wall, rss))
                outputs[name] = out
        if len(set(outputs.values())) != 1:
            raise SystemExit(f"{label}: outputs differ between allocators: {outputs}")
        for name, runs in samples.items():
            results[(label, name)] = (
                statistics.median(w for w, _ in runs),
                statistics.median(r for _, r in runs),
            )
        print(f"ran {label}", file=sys.stderr)

    columns = [name for name, _ in allocs]
    def table(title, index, fmt):
        print(f"\n### {title}\n")
        head = "| workload | " + " | ".join(columns) + " | pymem/glibc |"
        if "mimalloc" in columns:
            head += " pymem/mimalloc |"
        print(head)
        print("|" + " --- |" * (len(columns) + 2 + ("mimalloc" in columns)))
        ratios_g, ratios_m = [], []
        for label, _, _, contestants in jobs:
            row = [fmt(results[(label, c)][index]) for c in columns]
            g = results[(label, "pymem")][index] / results[(label, "glibc")][index]
            ratios_g.append(g)
            line = f"| {label} | " + " | ".join(row) + f" | {g:.2f}x |"
            if "mimalloc" in columns:
                m = results[(label, "pymem")][index] / results[(label, "mimalloc")][index]
                ratios_m.append(m)
                line += f" {m:.2f}x |"
            print(line)
        line = "| **geomean** |" + " |" * len(columns) + f" **{geomean(ratios_g):.2f}x** |"
        if ratios_m:
            line += f" **{geomean(ratios_m):.2f}x** |"
        print(line)

    table("Wall time (s, median)", 0, lambda v: f"{v:.3f}")
    table("Peak RSS (MiB, median)", 1, lambda v: f"{v / 1024:.1f}")
    if ("python", "cpython-pymalloc") in results:
        t, r = results[("python", "cpython-pymalloc")]
        pt, pr = results[("python", "pymem")]
        print(f"\nCPython ({python}) alloc_heavy.py: PYTHONMALLOC=malloc under pymem {pt:.3f} s / {pr / 1024:.1f} MiB; "
              f"CPython's own pymalloc {t:.3f} s / {r / 1024:.1f} MiB "
              f"(time {pt / t:.2f}x, peak RSS {pr / r:.2f}x)")


if __name__ == "__main__":
    main()
