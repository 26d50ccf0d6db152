//! `import-processor`: the SQS-triggered worker that imports uploaded files.
//!
//! Each job names an uploaded object. The worker claims the job's chunk with the idempotency
//! guard, streams the object from S3, validates its rows, writes the valid ones to the items
//! table 25 per request with a few requests in flight (behind a circuit breaker), and records
//! the import as `COMPLETED` with its counts, or `FAILED` with a reason. An import that
//! outlasts its invocation checkpoints and continues in a new job (see `handler`). The worker is
//! one typed function ([`ImportWorker`] implements `queue_worker::worker::Worker`); the library
//! runs it in Lambda (`queue_worker::lambda::run_worker`), claims, parses, continues and reports
//! the batch (partial batch failures, backoff, DLQ parking, one metrics line per invocation).
//!
//! **The event source mapping must enable `ReportBatchItemFailures`.**
//!
//! Layout: `handler` (one chunk of an import), `failure` (the permanent failure classes),
//! `rows` (file schema and readers, `[To customize]`), `source` (S3), `items` (the items
//! table), `config`, and `wiring`: [`Parts`], the one builder that `main.rs`, the local runner,
//! the tests and the benches use.

mod config;
mod failure;
mod handler;
mod items;
mod rows;
mod source;
mod wiring;

pub use config::ProcessorConfig;
pub use failure::ImportFailure;
pub use handler::ImportWorker;
pub use items::{BATCH_SIZE, DynamoDbItems, ItemWriter, WriteError};
pub use rows::Row;
pub use source::{ObjectBody, ObjectSource, Opened, ReadFrom, S3ObjectSource, SourceError};
pub use wiring::{
    Parts, Processor, ProductionParts, ProductionProcessor, ProductionWorker, production_worker,
};
