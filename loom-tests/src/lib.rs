//! Model checks of pymem's allocator live in `tests/`; run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p pymem-loom-tests --release`.
