//! A library for queue-triggered AWS Lambda workers: a producer accepts work now, a worker does
//! it later, exactly once in effect, however SQS delivers it.
//!
//! It names no domain. A worker is one typed function ([`worker::Worker`]); the library parses
//! its job, claims it, runs it, and reports the batch:
//!
//! - [`worker`]: [`worker::Idempotent`] runs a [`worker::Worker`] behind the idempotency guard
//!   as a [`batch::RecordHandler`], and carries its continuations.
//! - [`accept`]: the accepting side: an API records a request, queues its job, and answers a
//!   retry with the same idempotency key from the record (replay, resend, or a reused key).
//! - `http` (feature `http`): the HTTP side of an accepting API on axum: RFC 9457 problem
//!   details, the JSON body and `Idempotency-Key` helpers, and the answer to each accept decision.
//! - [`job`]: the [`job::Job`] trait for a typed message body, and the queue jobs are sent to.
//! - [`batch`]: the batch processor: per-record outcomes, partial batch responses, backoff,
//!   parking in the dead-letter queue, the invocation's deadline.
//! - [`idempotency`]: the fenced guard that makes side effects happen once, with a DynamoDB
//!   store and an in-memory store.
//! - [`protection`]: a downstream dependency's timeout, retries and circuit breaker.
//! - [`lambda`]: the Lambda entries: [`lambda::run_worker`], a worker's whole `main`, with the
//!   settings every worker shares ([`lambda::WorkerSettings`]) and the production seams; and
//!   [`lambda::start`] for a function that is no worker.
//! - [`check`]: the check-config mode of both entries: `QUEUE_WORKER_CHECK_CONFIG=1` makes a
//!   function's binary print the variables it reads and the configuration it would run with.
//! - [`metrics`]: the CloudWatch Embedded Metric Format lines of each invocation, whose contract
//!   is `METRICS.md`.
//! - [`config`]: typed configuration read once from the environment, with errors that name the
//!   variable at fault.
//! - [`aws`]: the SDK configuration, loaded once per execution environment. Endpoints come from
//!   the standard `AWS_ENDPOINT_URL*` variables, so the same binary talks to AWS or to a local
//!   emulator without code changes.
//! - [`telemetry`]: tracing set-up (JSON in Lambda, readable text on a terminal).
//! - [`trace`]: W3C trace context through the queue: a request's span, the job's
//!   `traceparent` attribute, a span per record linked to it, and continuations that carry it on.
//! - `testing` (feature `testing`): fault injectors for the library's seams, for chaos soaks.
//! - [`dynamo`]: checked access to DynamoDB items, for stores written by hand.
//!
//! The long form (semantics, settings, what each part guarantees) is in `shared/README.md`.

pub mod accept;
pub mod aws;
pub mod batch;
pub mod check;
pub mod config;
pub mod dynamo;
#[cfg(feature = "http")]
pub mod http;
pub mod idempotency;
pub mod job;
pub mod lambda;
pub mod metrics;
pub mod protection;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod worker;

pub use config::{ConfigError, Env};

/// The error a seam (a store, a queue, a source) returns for an unavailable dependency: boxed,
/// so each implementation carries its own SDK's error as the source, and callers classify by
/// the seam's own error type, not by this.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
