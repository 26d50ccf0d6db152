//! Building the production processor from its configuration: shared by `main.rs` and the local
//! runner, so both run exactly the same code.

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use imports::{DynamoDbImports, SqsJobQueue};
use queue_worker::batch::{BatchProcessor, SqsQueueActions};
use queue_worker::idempotency::{DynamoDbStore, GuardSettings, IdempotencyGuard};
use queue_worker::protection::Dependency;

use crate::{DynamoDbItems, ImportHandler, ItemWriter, ProcessorConfig, S3ObjectSource};

/// The record handler, with the production stores and a choice of item writer.
pub type Handler<W> = ImportHandler<DynamoDbStore, S3ObjectSource, W, DynamoDbImports, SqsJobQueue>;

/// The production record handler.
pub type ProductionHandler = Handler<DynamoDbItems>;

/// The production batch processor.
pub type ProductionProcessor = BatchProcessor<ProductionHandler, SqsQueueActions>;

/// Builds the processor: clients once, the items table's client without SDK retries (the
/// processor retries it inside its circuit breaker), S3 path-style when an endpoint is
/// overridden (emulators), and the SQS clients only when a record first fails or an import
/// first needs another chunk (a healthy environment of small imports never needs them).
///
/// No request is made here. A warm-up call in init would only move the first connection's
/// handshake from the first batch to the cold start: nobody waits on a queue worker's first
/// record, while every cold start is billed and delays the first poll.
pub fn build(config: &ProcessorConfig, sdk: &SdkConfig) -> ProductionProcessor {
    build_with_writer(config, sdk, |items| items)
}

/// [`build`], with the items table's writer wrapped by `wrap`: the local runner uses this to put
/// a fault injector between the processor and its downstream.
pub fn build_with_writer<W: ItemWriter>(
    config: &ProcessorConfig,
    sdk: &SdkConfig,
    wrap: impl FnOnce(DynamoDbItems) -> W,
) -> BatchProcessor<Handler<W>, SqsQueueActions> {
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
    let guard = IdempotencyGuard::new(
        DynamoDbStore::new(dynamodb.clone(), &config.guard.table_name),
        GuardSettings::from(&config.guard),
    );
    let handler = ImportHandler::new(
        guard,
        S3ObjectSource::new(s3, &config.upload_bucket, config.max_object_bytes),
        wrap(DynamoDbItems::new(items_client, &config.items_table)),
        DynamoDbImports::new(dynamodb, &config.imports_table),
        SqsJobQueue::on_first_send(sdk, &config.job_queue_url),
        Dependency::new("items-table", config.items_table_protection),
        &config.upload_prefix,
    )
    .with_writes_in_flight(config.item_writes_in_flight);
    let queue = SqsQueueActions::on_first_failure(sdk, &config.dead_letter_queue_url);
    BatchProcessor::new(handler, queue, config.batch)
}
