//! AWS SDK configuration and clients.
//!
//! Build [`AwsClients`] once per execution environment (in `main`, before the runtime loop) and
//! share it: SDK clients hold connection pools and credential caches that are expensive to
//! rebuild per invocation.
//!
//! Endpoints are not configured here on purpose: the SDK reads `AWS_ENDPOINT_URL` and the
//! per-service `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_S3`
//! itself, which is how local runs point the very same code at an emulator.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the shared SDK configuration (region, credentials, endpoints, retry policy) from the
/// standard sources: environment, profile files, and the Lambda execution role.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The service clients the pipeline uses, built from one [`SdkConfig`].
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// DynamoDB: idempotency records, import records, imported items.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SQS: the job queue and its dead-letter queue.
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    /// Builds every client from one configuration.
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
        }
    }

    /// Loads the configuration from the environment and builds the clients.
    pub async fn from_env() -> Self {
        Self::new(&load_sdk_config().await)
    }
}

/// Whether an endpoint override (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3`) is set: a local
/// emulator. S3 clients then need path-style addressing, because `bucket.127.0.0.1` does not
/// resolve.
pub fn endpoint_overridden() -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
}
