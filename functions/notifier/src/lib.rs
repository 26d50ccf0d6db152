//! `notifier`: the SQS-triggered worker that delivers notifications to a partner's HTTP API,
//! which is not idempotent: a repeated call would act twice. It is the minimal worker to copy for
//! any downstream like it (a webhook, a billing call, an email).
//!
//! A sender [`request`]s a notification: its record goes into the notifications table
//! (`PENDING`, with the payload), then a [`NotificationJob`] naming it goes on the queue. The
//! [`Notifier`] reads the record, POSTs the payload with an `Idempotency-Key` derived from the
//! notification's id, and marks it `DELIVERED` (the order and why: [`worker`]). The library runs
//! it (`queue_worker::lambda::run_worker`): it parses and claims each job, parks permanent
//! failures, backs off retries and reports partial batch failures.
//!
//! **The event source mapping must enable `ReportBatchItemFailures`.**
//!
//! Layout: `job` (the id and the job), [`store`] (the record, its store trait, DynamoDB and
//! in-memory stores), [`partner`] (the HTTP call and how its errors classify), [`worker`],
//! `request` (the sender's side), `config`, and [`production_worker`], what `main` runs.

mod config;
mod job;
pub mod partner;
mod request;
pub mod store;
pub mod worker;

pub use config::NotifierConfig;
pub use job::{NotificationId, NotificationJob};
pub use request::{RequestError, Requested, request};
pub use worker::{Notifier, NotifierFailure};

use queue_worker::config::ConfigError;
use queue_worker::lambda::{Init, WorkerSettings};
use queue_worker::protection::{Concurrency, Dependency};

use crate::partner::HttpPartner;
use crate::store::DynamoDbNotifications;

/// The notifier `main` runs: on DynamoDB and the partner over HTTPS.
pub type ProductionNotifier = Notifier<DynamoDbNotifications, HttpPartner>;

/// Builds the production notifier at init from its [`NotifierConfig`]: the clients once, and
/// the partner's protection, whose adaptive limit starts at (and never exceeds) the records an
/// invocation runs at once, since each record keeps one call in flight.
pub fn production_worker(init: Init<'_>) -> Result<ProductionNotifier, ConfigError> {
    let config = init.config(NotifierConfig::from_env)?;
    let partner =
        HttpPartner::new(config.partner_url.clone()).map_err(|e| ConfigError::Invalid {
            name: "PARTNER_URL".into(),
            value: config::redacted(config.partner_url.as_str()),
            reason: format!("no HTTPS client for it: {e}"),
        })?;
    let protection = partner_protection(&config, init.settings);
    let notifications = DynamoDbNotifications::new(
        aws_sdk_dynamodb::Client::new(init.sdk),
        config.notifications_table,
    );
    Ok(Notifier::new(notifications, partner, protection))
}

/// The partner's [`Dependency`] with `config`'s settings, for a worker running
/// `worker.batch.concurrency` records at once.
pub fn partner_protection(config: &NotifierConfig, worker: &WorkerSettings) -> Dependency {
    Dependency::new("partner", config.partner_protection).with_concurrency(Concurrency::Adaptive {
        max: worker.batch.concurrency.get(),
    })
}
