//! Reading uploaded objects.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use imports::ObjectKey;
use queue_worker::BoxError;
use tokio::io::AsyncBufRead;

/// An uploaded object's bytes, streamed.
pub type ObjectBody = Box<dyn AsyncBufRead + Send + Unpin>;

/// An opened object: its bytes from the asked offset on, and the version they belong to.
pub struct Opened {
    /// The bytes.
    pub body: ObjectBody,
    /// The object's ETag (empty if the store gives none: then a replaced object goes unseen).
    pub etag: String,
}

/// Where to start reading an object that an earlier chunk began.
#[derive(Debug, Clone, Copy)]
pub struct ReadFrom<'a> {
    /// The byte offset.
    pub offset: u64,
    /// The ETag the earlier chunk read: any other version is [`SourceError::Changed`].
    pub etag: &'a str,
}

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
    /// The object was replaced since the import began: continuing would mix two files.
    /// Permanent.
    #[error("object {key} changed since the import began (its ETag is no longer {etag})")]
    Changed {
        /// The key asked for.
        key: String,
        /// The version the import began with.
        etag: String,
    },
    /// The store could not be reached or refused (throttling, permissions). Retryable.
    #[error("the object store is unavailable")]
    Unavailable(#[source] BoxError),
}

/// Where uploaded objects are read from.
pub trait ObjectSource: Send + Sync {
    /// Opens `key` for streaming: the whole object, or with `from` its version `from.etag`
    /// from `from.offset` on.
    fn open(
        &self,
        key: &ObjectKey,
        from: Option<ReadFrom<'_>>,
    ) -> impl Future<Output = Result<Opened, SourceError>> + Send;
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
    async fn open(
        &self,
        key: &ObjectKey,
        from: Option<ReadFrom<'_>>,
    ) -> Result<Opened, SourceError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str());
        if let Some(from) = from {
            request = request.range(format!("bytes={}-", from.offset));
            if !from.etag.is_empty() {
                request = request.if_match(from.etag);
            }
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                let code = err.as_service_error().and_then(|e| e.code());
                return match (err.as_service_error(), from) {
                    (Some(GetObjectError::NoSuchKey(_)), _) => Err(SourceError::NotFound {
                        key: key.to_string(),
                    }),
                    (_, Some(from))
                        if status == Some(412) || code == Some("PreconditionFailed") =>
                    {
                        Err(SourceError::Changed {
                            key: key.to_string(),
                            etag: from.etag.to_owned(),
                        })
                    }
                    // The earlier chunk stopped at the very end: nothing is left to read.
                    (_, Some(from)) if status == Some(416) || code == Some("InvalidRange") => {
                        Ok(Opened {
                            body: Box::new(tokio::io::empty()),
                            etag: from.etag.to_owned(),
                        })
                    }
                    _ => Err(SourceError::Unavailable(Box::new(err))),
                };
            }
        };
        let size = output
            .content_range
            .as_deref()
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .or_else(|| output.content_length.and_then(|n| u64::try_from(n).ok()))
            .unwrap_or(0);
        if size > self.max_object_bytes {
            return Err(SourceError::TooLarge {
                key: key.to_string(),
                size,
                limit: self.max_object_bytes,
            });
        }
        Ok(Opened {
            etag: output.e_tag.unwrap_or_default(),
            body: Box::new(tokio::io::BufReader::with_capacity(
                64 * 1024,
                output.body.into_async_read(),
            )),
        })
    }
}
