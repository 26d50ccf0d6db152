use std::num::NonZeroUsize;

use queue_worker::config::{ConfigError, Env};
use queue_worker::lambda::WorkerSettings;
use queue_worker::protection::DependencySettings;

/// Settings of the processor, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// What every worker is configured with (the guard, batches, the queues, metrics). The
    /// processor continues its imports, so `JOB_QUEUE_URL` is required.
    pub worker: WorkerSettings,
    /// Protection of the items table.
    pub items_table_protection: DependencySettings,
    /// The imports table (`IMPORTS_TABLE`).
    pub imports_table: String,
    /// The items table (`ITEMS_TABLE`).
    pub items_table: String,
    /// The upload bucket (`UPLOAD_BUCKET`).
    pub upload_bucket: String,
    /// Object keys must start with this (`UPLOAD_PREFIX`, default `uploads/`).
    pub upload_prefix: String,
    /// Largest object imported (`MAX_OBJECT_BYTES`, default 1 GiB): imports continue across
    /// invocations, so this is a sanity limit, not a time limit.
    pub max_object_bytes: u64,
    /// Item writes one job keeps in flight (`ITEM_WRITES_IN_FLIGHT`, default 2).
    pub item_writes_in_flight: NonZeroUsize,
}

impl ProcessorConfig {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::with_settings(env, WorkerSettings::from_env(env)?)
    }

    /// Reads the processor's own settings, beside the worker settings already read.
    pub fn with_settings(env: &Env, worker: WorkerSettings) -> Result<Self, ConfigError> {
        if worker.job_queue_url.is_none() {
            return Err(ConfigError::Missing {
                name: "JOB_QUEUE_URL".into(),
            });
        }
        Ok(Self {
            worker,
            items_table_protection: DependencySettings::from_env(env)?,
            imports_table: env.required("IMPORTS_TABLE")?,
            items_table: env.required("ITEMS_TABLE")?,
            upload_bucket: env.required("UPLOAD_BUCKET")?,
            upload_prefix: env.get("UPLOAD_PREFIX").unwrap_or("uploads/").to_owned(),
            max_object_bytes: env.positive_or("MAX_OBJECT_BYTES", 1024 * 1024 * 1024)?,
            item_writes_in_flight: env.parsed_or(
                "ITEM_WRITES_IN_FLIGHT",
                crate::handler::DEFAULT_WRITES_IN_FLIGHT,
            )?,
        })
    }
}
