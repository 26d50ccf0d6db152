//! The shared harness of the workspace-level integration tests.
//!
//! Integration tests talk to a real AWS API endpoint: the no-Docker emulator that `make test`
//! starts (or LocalStack). The endpoint comes from the standard `AWS_ENDPOINT_URL*` variables;
//! without one the harness refuses to run rather than reach real AWS by accident.
//!
//! Every test creates its own resources under a unique name ([`unique_name`]), so tests run in
//! parallel and never see each other's data.
//!
//! Layout: this file holds endpoint checks, names and resource helpers; [`guard_suite`] is the
//! behaviour suite of the idempotency guard, run against every store; [`template`] and
//! [`profiles`] check the invariants of `template.yaml` and of the build profiles it uses;
//! [`settings`] checks each function's environment against its code, and reads it to wire a
//! test's worker as the template wires the deployed one ([`settings::function_env`]);
//! [`TestQueue`] turns real SQS messages into the Lambda event the event source mapping would
//! deliver.

pub mod examples;
pub mod guard_suite;
pub mod profiles;
pub mod settings;
pub mod template;

mod clock;
mod request_counter;
mod sqs;

pub use clock::ManualClock;
pub use request_counter::RequestCounter;
pub use sqs::{TestQueue, acknowledge};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use queue_worker::idempotency::attributes;

/// Loads the SDK configuration for the emulator, or panics with instructions when no local
/// endpoint is configured.
pub async fn sdk_config() -> SdkConfig {
    let endpoint = [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SQS",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    let Some(endpoint) = endpoint else {
        panic!(
            "integration tests need a local AWS endpoint: run `make test`, or `make emulator-up` \
             and `eval \"$(infra/emulator/emulator.sh env)\"` before `cargo test -p integration-tests`"
        );
    };
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "integration tests only run against a local endpoint, not {endpoint}"
    );
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A name no other test uses: `prefix` plus a random suffix. Valid for tables and queues.
pub fn unique_name(prefix: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &suffix[..12])
}

/// Creates an idempotency table shaped as the guard expects (on-demand, string key
/// [`attributes::KEY`]) and returns its name.
pub async fn create_idempotency_table(client: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    create_table(client, prefix, attributes::KEY).await
}

/// An S3 client for the emulator (path-style addressing, as the processor uses locally).
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// Creates a uniquely named bucket and returns its name.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// Creates an on-demand table with the string partition key `key` under a unique name and
/// returns the name.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, prefix: &str, key: &str) -> String {
    let name = unique_name(prefix);
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition is complete"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key schema is complete"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
    name
}

/// Serves `router` over HTTP on an ephemeral port of 127.0.0.1 for the rest of the test, and
/// returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    format!("http://{address}")
}
