use queue_worker::config::{ConfigError, Env};

/// Settings of the producer, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// The imports table (`IMPORTS_TABLE`).
    pub imports_table: String,
    /// The job queue (`JOB_QUEUE_URL`).
    pub job_queue_url: String,
    /// The bucket uploads go to (`UPLOAD_BUCKET`).
    pub upload_bucket: String,
    /// Object keys must start with this (`UPLOAD_PREFIX`, default `uploads/`).
    pub upload_prefix: String,
    /// Largest accepted request body in bytes (`MAX_BODY_BYTES`, default 16384).
    pub max_body_bytes: usize,
}

impl ProducerConfig {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            imports_table: env.required("IMPORTS_TABLE")?,
            job_queue_url: env.required("JOB_QUEUE_URL")?,
            upload_bucket: env.required("UPLOAD_BUCKET")?,
            upload_prefix: env.get("UPLOAD_PREFIX").unwrap_or("uploads/").to_owned(),
            max_body_bytes: usize::try_from(env.positive_or("MAX_BODY_BYTES", 16 * 1024)?)
                .unwrap_or(usize::MAX),
        })
    }
}
