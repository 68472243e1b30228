//! The criterion settings the allocator benches share (included with
//! `#[path = "support/config.rs"] mod config;`): short warm-up and
//! measurement, ten samples, as the shared 2-vCPU machine allows.

use std::time::Duration;

use criterion::Criterion;

/// Criterion configured for the allocator benches.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}
