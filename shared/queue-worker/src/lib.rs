//! Reusable building blocks for queue-triggered Lambda workers.
//!
//! Both functions of the import pipeline (`import-producer` and `import-processor`) depend on this
//! crate; it holds everything that is not specific to one of them, so a fork can lift it whole.
//!
//! Layout:
//! - [`config`]: typed configuration read once from the environment, with errors that name the
//!   variable at fault.
//! - [`aws`]: AWS SDK configuration and clients, built once per execution environment. Endpoints
//!   come from the standard `AWS_ENDPOINT_URL*` variables, so the same binary talks to AWS or to a
//!   local emulator without code changes.
//! - [`telemetry`]: tracing set-up (JSON in Lambda, readable text on a terminal).
//! - [`idempotency`]: the guard that makes a handler's side effects happen once even when the
//!   queue delivers a job more than once, with a DynamoDB store and an in-memory store.

pub mod aws;
pub mod batch;
pub mod config;
pub mod dynamo;
pub mod idempotency;
pub mod protection;
pub mod telemetry;

pub use config::{ConfigError, Env};
