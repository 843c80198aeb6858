//! One module per command, each over the job engine (`crate::engine`).

pub mod apply;
pub mod bench;
pub mod blocks;
pub mod chart;
pub mod dataset;
pub mod gen;
pub mod manual;
pub mod npz;
pub mod ops;
pub mod raster;
pub mod run;
pub mod watch;
