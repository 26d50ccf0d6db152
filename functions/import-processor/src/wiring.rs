//! [`Parts`]: the one way the processor is built, by `main.rs` (through
//! [`production_worker`] and the library's `run_worker`), the local runner, the tests and the
//! benches, so all of them run the same code.
//!
//! [`Parts::new`] makes the production seams from the configuration; a caller that needs another
//! seam (a fault injector, a counting client, an in-memory fake) puts it in that field, by
//! destructuring (a seam's type may change), and calls [`Parts::build`]:
//!
//! ```ignore
//! let Parts { guard, source, writer, imports, jobs, queue, config } = Parts::new(&config, &sdk);
//! let writer = Flaky::new(writer);
//! let processor = Parts { guard, source, writer, imports, jobs, queue, config }.build();
//! ```

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use imports::DynamoDbImports;
use queue_worker::batch::{BatchProcessor, SqsQueueActions};
use queue_worker::config::ConfigError;
use queue_worker::idempotency::DynamoDbStore;
use queue_worker::job::SqsJobQueue;
use queue_worker::lambda::Init;
use queue_worker::protection::Dependency;
use queue_worker::worker::Idempotent;

use crate::{DynamoDbItems, ImportWorker, ProcessorConfig, S3ObjectSource};

/// The processor's seams and settings, ready to [`build`](Self::build).
#[derive(Debug)]
pub struct Parts<S, O, W, R, Q, A> {
    /// The idempotency guard's store.
    pub guard: S,
    /// Where uploaded objects are read.
    pub source: O,
    /// Where rows are written.
    pub writer: W,
    /// The import records.
    pub imports: R,
    /// Where continuations are sent (the job queue).
    pub jobs: Q,
    /// Backoff and parking (the job queue and its dead-letter queue).
    pub queue: A,
    /// The settings.
    pub config: ProcessorConfig,
}

/// The production seams.
pub type ProductionParts = Parts<
    DynamoDbStore,
    S3ObjectSource,
    DynamoDbItems,
    DynamoDbImports,
    Option<SqsJobQueue>,
    SqsQueueActions,
>;

/// The production worker (what `main.rs` hands the library's `run_worker`).
pub type ProductionWorker = ImportWorker<S3ObjectSource, DynamoDbItems, DynamoDbImports>;

/// The processor built from a set of seams.
pub type Processor<S, O, W, R, Q, A> = BatchProcessor<Idempotent<ImportWorker<O, W, R>, S, Q>, A>;

/// The production processor: the library's `LambdaProcessor` of the [`ProductionWorker`].
pub type ProductionProcessor = queue_worker::lambda::LambdaProcessor<ProductionWorker>;

/// The production worker from the library's [`Init`]: the processor's own settings read beside
/// the worker settings, its clients built from the SDK configuration.
pub fn production_worker(init: Init<'_>) -> Result<ProductionWorker, ConfigError> {
    let config = init.config(|env| ProcessorConfig::with_settings(env, init.settings.clone()))?;
    let Parts {
        source,
        writer,
        imports,
        config,
        ..
    } = Parts::new(&config, init.sdk);
    Ok(worker(source, writer, imports, &config))
}

impl ProductionParts {
    /// The production seams: clients built once, the items table's client without SDK
    /// retries (the processor retries it inside its circuit breaker), S3 path-style when an
    /// endpoint is overridden (emulators), and the SQS clients only when a record first fails
    /// or an import first needs another chunk (a healthy environment of small imports never
    /// needs them).
    ///
    /// No request is made here. A warm-up call in init would only move the first connection's
    /// handshake from the first batch to the cold start: nobody waits on a queue worker's first
    /// record, while every cold start is billed and delays the first poll.
    pub fn new(config: &ProcessorConfig, sdk: &SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let items_client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(queue_worker::aws::endpoint_overridden())
                .build(),
        );
        Self {
            guard: DynamoDbStore::new(dynamodb.clone(), &config.worker.guard.table_name),
            source: S3ObjectSource::new(s3, &config.upload_bucket, config.max_object_bytes),
            writer: DynamoDbItems::new(items_client, &config.items_table),
            imports: DynamoDbImports::new(dynamodb, &config.imports_table),
            jobs: config
                .worker
                .job_queue_url
                .as_deref()
                .map(|url| SqsJobQueue::on_first_send(sdk, url)),
            queue: SqsQueueActions::on_first_failure(sdk, &config.worker.dead_letter_queue_url),
            config: config.clone(),
        }
    }
}

impl<S, O, W, R, Q, A> Parts<S, O, W, R, Q, A>
where
    S: queue_worker::idempotency::IdempotencyStore,
    O: crate::ObjectSource,
    W: crate::ItemWriter,
    R: imports::ImportResults,
    Q: queue_worker::job::JobQueue<imports::ImportJob>,
    A: queue_worker::batch::QueueActions,
{
    /// The batch processor running the import worker behind the idempotency guard.
    pub fn build(self) -> Processor<S, O, W, R, Q, A> {
        let worker = worker(self.source, self.writer, self.imports, &self.config);
        self.config
            .worker
            .processor_with(worker, self.guard, self.jobs, self.queue)
    }
}

fn worker<O, W, R>(
    source: O,
    writer: W,
    imports: R,
    config: &ProcessorConfig,
) -> ImportWorker<O, W, R>
where
    O: crate::ObjectSource,
    W: crate::ItemWriter,
    R: imports::ImportResults,
{
    ImportWorker::new(
        source,
        writer,
        imports,
        Dependency::new("items-table", config.items_table_protection),
        &config.upload_prefix,
    )
    .with_writes_in_flight(config.item_writes_in_flight)
    .with_stall_backoff(config.worker.batch.backoff)
}
