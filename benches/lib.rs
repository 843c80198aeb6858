//! Nothing but the home of the benchmarks in this folder (`kernels.rs`, `codecs.rs`, `run.rs`):
//! a package of their own, so that `cargo test` never builds Criterion.
