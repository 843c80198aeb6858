//! The integration tests: one binary that drives the real `shmpipe` binary, real worker
//! processes, real shared memory and real files. Each module is one area; `util` holds the helpers
//! they share (spawning the binary, finding what a run left behind, a private `--backing` folder).

mod util;

mod apply;
mod augment;
mod bad_inputs;
mod bench_memory;
mod cli;
mod damaged;
mod dataset_faults;
mod disk_full;
mod dry_run;
mod durable;
mod fidelity;
mod foreign_blocks;
mod forged_blocks;
mod gen;
mod geometry_ops;
mod inputs;
mod inputs_untouched;
mod kill_workers;
mod output_names;
mod outputs;
mod python;
mod python_loader;
mod resize;
mod run;
mod shards;
mod signals;
mod small_shm;
mod stale;
mod summary;
mod temporaries;
mod timeout;
mod torch;
mod transparency;
mod watch;
