//! The partner's API: the downstream that is not idempotent. `[To customize]`: your call.
//!
//! One call POSTs a notification's payload with an `Idempotency-Key` header. The partner is
//! expected to act once per key (the usual contract of payment and webhook APIs); the key is
//! derived from the notification's id, so every attempt and every delivery of one notification
//! sends the same key.

use queue_worker::BoxError;
use queue_worker::protection::{Classify, ErrorClass};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

/// The header that carries the key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Why a call failed, classified for `queue_worker::protection::Dependency`.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// The partner answered with a status other than 2xx.
    #[error("the partner answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// No answer: the connection failed or broke.
    #[error("the partner could not be reached")]
    Unreachable(#[source] BoxError),
}

impl Classify for PartnerError {
    /// 429 and 503 say "at capacity": the adaptive limit slows down, nothing counts against the
    /// circuit. 408, 409 (another request with this key is still in progress), other 5xx and
    /// no answer may pass. Any other status (4xx, a redirect) is an answer that will not change.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Status { status: 429 | 503 } => ErrorClass::Throttled,
            Self::Status {
                status: 408 | 409 | 500..,
            }
            | Self::Unreachable(_) => ErrorClass::Transient,
            Self::Status { .. } => ErrorClass::Permanent,
        }
    }
}

/// Delivers a payload to the partner.
pub trait Partner: Send + Sync {
    /// POSTs `payload` (JSON) under `key`; the partner's 2xx status on success.
    fn deliver(
        &self,
        key: &str,
        payload: &str,
    ) -> impl Future<Output = Result<u16, PartnerError>> + Send;
}

/// The partner over HTTPS.
///
/// The client is built once per execution environment and reused (its connection pool too).
/// TLS is rustls with aws-lc (the crypto the AWS SDK already uses); the partner's certificate
/// is checked against the platform's roots, read once when the client is built
/// (`SSL_CERT_FILE` names a bundle to read instead).
#[derive(Debug, Clone)]
pub struct HttpPartner {
    client: reqwest::Client,
    url: Url,
}

impl HttpPartner {
    /// The partner at `url`.
    pub fn new(url: Url) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect would repeat the POST somewhere else: a 3xx is the partner's answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, url })
    }
}

impl Partner for HttpPartner {
    async fn deliver(&self, key: &str, payload: &str) -> Result<u16, PartnerError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY, key)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(payload.to_owned())
            .send()
            .await
            // Without the URL: a webhook's URL may carry a token, and errors reach the logs.
            .map_err(|e| PartnerError::Unreachable(e.without_url().into()))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            Ok(status)
        } else {
            Err(PartnerError::Status { status })
        }
    }
}
