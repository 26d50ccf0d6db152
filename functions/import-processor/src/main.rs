use aws_config::retry::RetryConfig;
use import_processor::{
    DynamoDbItems, ImportHandler, ProcessorConfig, S3ObjectSource, handle_batch,
};
use lambda_runtime::{Error, run, service_fn};
use shared::Env;
use shared::aws::load_sdk_config;
use shared::batch::{BatchProcessor, SqsQueueActions};
use shared::idempotency::{DynamoDbStore, GuardSettings, IdempotencyGuard};
use shared::imports::DynamoDbImports;
use shared::protection::Dependency;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = ProcessorConfig::from_env(&Env::from_process())?;
    let sdk = load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    // The items table is retried by the processor inside its circuit breaker, not by the SDK.
    let items_client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(shared::aws::endpoint_overridden())
            .build(),
    );

    // Warm the connection during init, so the first record does not pay for it.
    if let Err(e) = items_client
        .describe_table()
        .table_name(&config.items_table)
        .send()
        .await
    {
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "warm-up call failed");
    }

    let guard = IdempotencyGuard::new(
        DynamoDbStore::new(dynamodb.clone(), &config.guard.table_name),
        GuardSettings::from(&config.guard),
    );
    let handler = ImportHandler::new(
        guard,
        S3ObjectSource::new(s3, &config.upload_bucket, config.max_object_bytes),
        DynamoDbItems::new(items_client, &config.items_table),
        DynamoDbImports::new(dynamodb, &config.imports_table),
        Dependency::new("items-table", config.items_table_protection),
        &config.upload_prefix,
    );
    let queue = SqsQueueActions::new(
        aws_sdk_sqs::Client::new(&sdk),
        &config.dead_letter_queue_url,
    );
    let processor = BatchProcessor::new(handler, queue, config.batch);
    run(service_fn(|event| handle_batch(&processor, event))).await
}
