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
BASE=(--target "$TARGET" --target-dir target/asan -p pymem)
ARGS=("${BASE[@]}" --tests)
cargo test "${ARGS[@]}" --no-run
cargo test "${ARGS[@]}" --no-fail-fast -- --test-threads=2
# The Gc fuzzer (tests/gc_fuzz.rs) for longer: consecutive seeds from 1000
# until the time is up (PYMEM_FUZZ_SECONDS, PYMEM_FUZZ_SEEDS=A.. and the
# other PYMEM_FUZZ_* variables of tests/gc_fuzz.rs override).
echo "== the Gc fuzzer, ${PYMEM_FUZZ_SECONDS:-60} s"
PYMEM_FUZZ_SECONDS="${PYMEM_FUZZ_SECONDS:-60}" PYMEM_FUZZ_SEEDS="${PYMEM_FUZZ_SEEDS:-1000..}" \
    cargo test "${BASE[@]}" --test gc_fuzz gc_fuzz -- --exact --nocapture
# The hostile fuzzer (tests/gc_fuzz_hostile.rs: lying Trace impls, saved
# garbage, callbacks, unsized values, thread exit) for longer too; it keeps
# the system allocator, so ASan sees every object. (The panics its
# objects' `Drop` impls raise at thread exit are contained and reported
# by pymem, one line each: left out.)
echo "== the hostile Gc fuzzer, ${PYMEM_HOSTILE_SECONDS:-60} s"
PYMEM_HOSTILE_SECONDS="${PYMEM_HOSTILE_SECONDS:-60}" PYMEM_HOSTILE_SEEDS="${PYMEM_HOSTILE_SEEDS:-100000..}" \
    cargo test "${BASE[@]}" --test gc_fuzz_hostile -- --nocapture 2>&1 \
    | { grep -v "^pymem: a Drop.*was contained$" || true; }
echo "== the two deliberate bugs, as ASan reports them"
# Only the asan_reports binary (ARGS' --tests would run the whole suite
# again), its output kept whole, so a missing report fails by name.
REPORTS="$(mktemp)"
cargo test "${BASE[@]}" --test asan_reports -- --nocapture --test-threads=1 >"$REPORTS" 2>&1
grep -E "ASan report|ERROR: AddressSanitizer|^(READ|WRITE) of size|^    #[0-2] " "$REPORTS" \
    | sed -n '1,40p'
if [ "$(grep -c "ERROR: AddressSanitizer" "$REPORTS")" -lt 2 ]; then
    echo "asan.sh: expected the two deliberate AddressSanitizer reports; the run printed:"
    cat "$REPORTS"
    exit 1
fi
rm -f "$REPORTS"
