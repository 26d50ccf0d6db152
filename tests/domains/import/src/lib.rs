//! The import example's tooling, kept with its domain: what only the import example knows (how
//! to make a request, what a correct outcome is, its own faults), on top of the generic local
//! runner (`local_runner`: the template, provisioning, the event source mapping, the process
//! host) and the test harness (`harness`).
//!
//! [`pipeline`] runs the producer's API and the processor in process against the emulator or
//! LocalStack. [`demo`] fires a burst of imports and checks every outcome; [`chaos`] does the
//! same under kills, duplicate deliveries, faults on every AWS call path and a capacity-limited
//! downstream, and measures it. Both import the files of [`sample`], which repeat SKUs with
//! changing values, and check that every SKU holds its file's last value. [`cold_start`] is the
//! workload of the cold-start benchmark. The binary, `import-driver`, runs them (`make run`,
//! `make demo`, `make chaos`, `make bench`); [`fixtures`] serves the
//! integration tests and benches of `tests/it` and `benches`.

pub mod chaos;
pub mod cold_start;
pub mod demo;
pub mod fixtures;
pub mod flaky;
pub mod pipeline;
mod sample;

pub use fixtures::{create_imports_table, create_items_table, processor_config};
