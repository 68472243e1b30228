#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer with PyMalloc's pool annotations
# (`--cfg pymem_asan`): free blocks, uncarved pool memory and a 16-byte
# redzone after each small block are poisoned, so use-after-free and
# overflows inside pools are reported. tests/asan_reports.rs proves it with
# two deliberate bugs; the rest of the suite must run clean.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address --cfg pymem_asan"
# Leak detection is off: tests leak on purpose (Gc cycles with the collector
# disabled, parked heaps); ASan's job here is memory errors.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0"
TARGET=x86_64-unknown-linux-gnu
ARGS=(--target "$TARGET" --target-dir target/asan -p pymem --tests)
cargo test "${ARGS[@]}" --no-run
cargo test "${ARGS[@]}" --no-fail-fast -- --test-threads=2
echo "== the two deliberate bugs, as ASan reports them"
cargo test "${ARGS[@]}" --test asan_reports -- --nocapture --test-threads=1 2>&1 \
    | grep -E "ASan report|ERROR: AddressSanitizer|^(READ|WRITE) of size|^    #[0-2] " | head -40
