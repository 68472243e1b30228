#!/usr/bin/env bash
# The C allocation API beyond `cargo test --workspace`: the `override`
# feature (lints and its test), the preload tests at length in a release
# build (PYMEM_CABI_LONG=1), and the C benchmarks in quick mode (does every
# workload run correctly under every allocator found?).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== override feature: clippy and tests/cabi_override.rs"
cargo clippy -p pymem --features override --lib --test cabi_override -- -D warnings
cargo test -p pymem --features override --test cabi_override
echo "== preload tests, long runs, release"
PYMEM_CABI_LONG=1 cargo test --release -p pymem --test cabi_api --test cabi_programs
echo "== C benchmarks, quick"
python3 bench/c/run.py --quick
