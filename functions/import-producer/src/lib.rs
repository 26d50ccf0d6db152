//! `import-producer`: the HTTP API that accepts imports and queues their jobs.
//!
//! - `POST /uploads` with `{"format": "csv"}` answers `201` with a fresh object key in the
//!   caller's own upload folder and a presigned `PUT` URL for it (`uploads`).
//! - `POST /imports` with `{"objectKey": "uploads/...", "format": "csv"}` and an optional
//!   `Idempotency-Key` header records the import (status `QUEUED`), sends its job to the queue,
//!   and answers `202 Accepted` with the import and a `Location` header.
//!   A retry with the same key and body answers `200 OK` with the same import and the header
//!   `Idempotent-Replayed: true` (or `202` if the job had to be sent again); the same key with
//!   another body answers `409 Conflict`.
//! - `GET /imports/{id}` answers the import's status, counts, error and timestamps to the
//!   principal that created it, and `404` (the same body as for an unknown id) to anyone else.
//!
//! The caller is its principal, not its session: an assumed role is its account and role name,
//! so a credential refresh or another replica is the same caller and its retry replays the same
//! import; an IAM user is its ARN; a JWT its issuer and subject (`caller` has the rule, and the
//! `[To customize]` point for another authorizer).
//!
//! Every error is an RFC 9457 `application/problem+json` document that names the field at
//! fault. A failing dependency answers `503` with `Retry-After`; nothing is left that a retry with
//! the same key cannot finish.
//!
//! Layout: `routes` (the router and handlers), `caller` (who is calling), `uploads` (upload
//! URLs), `request` (body parsing), `problem` (this API's problem types and the domain's own
//! problems), `config`. The accept flow and the generic problems are the library's
//! (`queue_worker::accept`, `queue_worker::http`). The router is plain axum: `main.rs` runs it
//! on `lambda_http`, and the local runner serves the same router over TCP.

mod caller;
mod config;
mod problem;
mod request;
mod routes;
mod uploads;

pub use config::ProducerConfig;
pub use problem::{PROBLEM_TYPE_PREFIX, PROBLEMS, Problem};
pub use request::NewImport;
pub use routes::{Api, router};
pub use uploads::{UPLOAD_URL_TTL, UploadUrl, Uploads};

use imports::DynamoDbImports;
use queue_worker::job::SqsJobQueue;

/// The production API: the imports table and the job queue from `config`, on clients built
/// from `sdk`. Shared by `main.rs` and the local runner.
pub fn production_api(
    config: ProducerConfig,
    sdk: &aws_config::SdkConfig,
) -> Api<DynamoDbImports, SqsJobQueue> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(queue_worker::aws::endpoint_overridden())
            .build(),
    );
    Api {
        store: DynamoDbImports::new(aws_sdk_dynamodb::Client::new(sdk), config.imports_table),
        queue: SqsJobQueue::new(aws_sdk_sqs::Client::new(sdk), config.job_queue_url),
        uploads: Uploads::new(s3, config.upload_bucket),
        upload_prefix: config.upload_prefix,
        max_body_bytes: config.max_body_bytes,
    }
}
