#!/usr/bin/env bash
# Model-checks the allocator's concurrent core with loom (loom-tests/).
# LOOM_MAX_PREEMPTIONS bounds the search; 3 keeps CI within minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
cargo test --manifest-path loom-tests/Cargo.toml --release --target-dir target/loom -- --test-threads=2 "$@"
