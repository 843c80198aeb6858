//! The job engine every mode drives: plan (walk and probe the inputs, assign outputs), block
//! (create it, or attach to a kept one), supervise (spawn workers, restart the dead, stop on a
//! signal), report (the summary and its exit code).

pub mod dataset;
pub mod dry_run;
pub mod holding;
pub mod job;
pub mod labels;
pub mod memory;
pub mod naming;
pub mod outputs;
pub mod plan;
pub mod progress;
pub mod select;
pub mod settings;
pub mod shard;
pub mod summary;
pub mod supervise;
pub mod sweep;
