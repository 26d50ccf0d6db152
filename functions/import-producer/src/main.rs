use std::sync::Arc;

use import_producer::{Api, ProducerConfig, router};
use lambda_http::{Error, run};
use shared::Env;
use shared::aws::AwsClients;
use shared::imports::{DynamoDbImports, SqsJobQueue};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = ProducerConfig::from_env(&Env::from_process())?;
    let clients = AwsClients::from_env().await;
    let api = Api {
        store: DynamoDbImports::new(clients.dynamodb, config.imports_table),
        queue: SqsJobQueue::new(clients.sqs, config.job_queue_url),
        upload_prefix: config.upload_prefix,
        max_body_bytes: config.max_body_bytes,
    };
    run(router(Arc::new(api))).await
}
