//! Upload URLs: every principal uploads into its own folder, through URLs the API signs.
//!
//! `POST /uploads` answers a fresh object key under the caller's folder
//! (`{UPLOAD_PREFIX}{folder}/{uuid}.{ext}`, the folder derived from the caller's principal,
//! [`imports::Principal::upload_folder`]) and a presigned `PUT` URL for exactly that key, valid
//! for [`UPLOAD_URL_TTL`]. The bucket policy lets only the producer's role write under the
//! prefix, so these URLs are the only way in, and `POST /imports` accepts only keys in the
//! caller's own folder: no caller can import, read back or overwrite another's upload.
//!
//! Presigning is local (it signs with the function's credentials, no request is made). The URL
//! is a bearer credential for one key: it is never logged, and the response is `no-store`.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use imports::ObjectKey;
use queue_worker::BoxError;

/// How long an upload URL stays valid.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);

/// Signs upload URLs for the upload bucket.
#[derive(Debug, Clone)]
pub struct Uploads {
    client: aws_sdk_s3::Client,
    bucket: String,
}

/// A signed upload: `PUT` the file's bytes to `url` before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadUrl {
    /// The presigned URL.
    pub url: String,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

impl Uploads {
    /// Upload URLs for `bucket`, signed with `client`'s credentials.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// A `PUT` URL for `key`, valid for [`UPLOAD_URL_TTL`] from now.
    pub async fn put_url(&self, key: &ObjectKey) -> Result<UploadUrl, BoxError> {
        let now = SystemTime::now();
        let config = PresigningConfig::builder()
            .start_time(now)
            .expires_in(UPLOAD_URL_TTL)
            .build()?;
        let signed = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(config)
            .await?;
        Ok(UploadUrl {
            url: signed.uri().to_owned(),
            expires_at: now + UPLOAD_URL_TTL,
        })
    }
}
