//! Benchmarks of pymem beside its peers; see `benches/` and the README's
//! "Performance" section. This library is empty: the workloads live in
//! `benches/support/`, shared with the root crate's `examples/compare.rs`.
