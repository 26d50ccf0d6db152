//! `import-processor`: the SQS-triggered worker that imports uploaded files.
//!
//! Each job names an uploaded object. The worker claims the job's chunk with the idempotency
//! guard, streams the object from S3, validates its rows, writes the valid ones to the items
//! table 25 per request with a few requests in flight (behind a circuit breaker), and records
//! the import as `COMPLETED` with its counts, or `FAILED` with a reason. An import that
//! outlasts its invocation checkpoints and continues in a new job (see `handler`). The worker is
//! one typed function ([`ImportWorker`] implements `queue_worker::worker::Worker`); the library
//! claims, parses, continues and reports the batch (partial batch failures, backoff, DLQ
//! parking). One EMF metrics line is printed per invocation.
//!
//! **The event source mapping must enable `ReportBatchItemFailures`.**
//!
//! Layout: `handler` (one chunk of an import), `failure` (the permanent failure classes),
//! `rows` (file schema and readers, `[To customize]`), `source` (S3), `items` (the items
//! table), `metrics` (EMF), `config`, and `wiring`: [`Parts`], the one builder that `main.rs`,
//! the local runner, the tests and the benches use.

mod config;
mod failure;
mod handler;
mod items;
mod metrics;
mod rows;
mod source;
mod wiring;

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use queue_worker::batch::{BatchProcessor, QueueActions, RecordHandler};

pub use config::ProcessorConfig;
pub use failure::ImportFailure;
pub use handler::ImportWorker;
pub use items::{BATCH_SIZE, DynamoDbItems, ItemWriter, WriteError};
pub use rows::Row;
pub use source::{ObjectBody, ObjectSource, Opened, ReadFrom, S3ObjectSource, SourceError};
pub use wiring::{Parts, Processor, ProductionParts, ProductionProcessor, build};

use metrics::{emf, oldest_message_age};

/// Handles one invocation: processes the batch and prints its metrics line. A
/// [`BatchError`](queue_worker::batch::BatchError) fails the invocation.
pub async fn handle_batch<H: RecordHandler, Q: QueueActions>(
    processor: &BatchProcessor<H, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let outcome = processor
        .process(&event.payload, event.context.deadline())
        .await;
    let now = SystemTime::now();
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "import-processor".into());
    let metrics = emf(
        &function,
        &outcome.summary,
        oldest_message_age(&event.payload, now),
        now,
    );
    println!("{metrics}");
    Ok(outcome.result?)
}
