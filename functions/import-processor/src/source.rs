//! Reading uploaded objects.

use aws_sdk_s3::operation::get_object::GetObjectError;
use shared::idempotency::BoxError;
use shared::imports::ObjectKey;
use tokio::io::AsyncBufRead;

/// An uploaded object's bytes, streamed.
pub type ObjectBody = Box<dyn AsyncBufRead + Send + Unpin>;

/// Why an object cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No object has this key. Permanent.
    #[error("object {key} does not exist")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The object is larger than one invocation may import. Permanent.
    #[error("object {key} is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The key asked for.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The store could not be reached or refused (throttling, permissions). Retryable.
    #[error("the object store is unavailable")]
    Unavailable(#[source] BoxError),
}

/// Where uploaded objects are read from.
pub trait ObjectSource: Send + Sync {
    /// Opens `key` for streaming.
    fn open(&self, key: &ObjectKey)
    -> impl Future<Output = Result<ObjectBody, SourceError>> + Send;
}

/// An [`ObjectSource`] on an S3 bucket. Needs `s3:GetObject` on the upload prefix.
#[derive(Debug, Clone)]
pub struct S3ObjectSource {
    client: aws_sdk_s3::Client,
    bucket: String,
    max_object_bytes: u64,
}

impl S3ObjectSource {
    /// Reads objects of `bucket` up to `max_object_bytes` long.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        max_object_bytes: u64,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            max_object_bytes,
        }
    }
}

impl ObjectSource for S3ObjectSource {
    async fn open(&self, key: &ObjectKey) -> Result<ObjectBody, SourceError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|err| match err.as_service_error() {
                Some(GetObjectError::NoSuchKey(_)) => SourceError::NotFound {
                    key: key.to_string(),
                },
                _ => SourceError::Unavailable(Box::new(err)),
            })?;
        let size = output
            .content_length
            .map_or(0, |n| u64::try_from(n).unwrap_or(0));
        if size > self.max_object_bytes {
            return Err(SourceError::TooLarge {
                key: key.to_string(),
                size,
                limit: self.max_object_bytes,
            });
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(
            64 * 1024,
            output.body.into_async_read(),
        )))
    }
}
