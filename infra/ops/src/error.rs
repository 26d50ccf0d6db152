//! Errors an operator can act on: which call failed, and why in words (missing permission,
//! endpoint down, unknown resource), not a wall of SDK debug output.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed operation, explained.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The caller's credentials lack a permission.
    #[error("{action}: permission denied ({detail}); the caller needs {permission}")]
    PermissionDenied {
        /// What was being done.
        action: String,
        /// The IAM action that is missing.
        permission: &'static str,
        /// The service's message.
        detail: String,
    },
    /// The endpoint did not answer.
    #[error("{action}: cannot reach the endpoint ({detail}); is the emulator or network up?")]
    Unreachable {
        /// What was being done.
        action: String,
        /// The transport error.
        detail: String,
    },
    /// The stack, queue or output does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The backend does not implement the operation (e.g. `StartMessageMoveTask` on moto).
    #[error("{action}: not supported by this backend ({detail})")]
    Unsupported {
        /// What was being done.
        action: String,
        /// The service's message.
        detail: String,
    },
    /// Any other service error.
    #[error("{action}: {detail}")]
    Service {
        /// What was being done.
        action: String,
        /// The service's message.
        detail: String,
    },
    /// Bad arguments or state, e.g. a declined confirmation.
    #[error("{0}")]
    Invalid(String),
}

impl OpsError {
    /// Classifies an SDK error of `action`, which needs the IAM `permission`.
    pub fn from_sdk<E>(
        action: &str,
        permission: &'static str,
        error: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let action = action.to_owned();
        match &error {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Self::Unreachable {
                action,
                detail: DisplayErrorContext(&error).to_string(),
            },
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or_default();
                let detail = service
                    .err()
                    .message()
                    .map_or_else(|| code.to_owned(), |m| format!("{code}: {m}"));
                let detail = if detail.is_empty() {
                    format!("HTTP {}", service.raw().status().as_u16())
                } else {
                    detail
                };
                if code.contains("AccessDenied") || code.contains("NotAuthorized") {
                    Self::PermissionDenied {
                        action,
                        permission,
                        detail,
                    }
                } else if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
                    Self::NotFound(format!("{action}: the queue does not exist ({detail})"))
                } else if code.contains("UnsupportedOperation")
                    || code.contains("InvalidAction")
                    || code.contains("NotImplemented")
                    || code.contains("InternalFailure")
                    || code.contains("InternalError")
                    // moto answers actions it lacks with a bare HTTP 500.
                    || (code.is_empty() && service.raw().status().is_server_error())
                {
                    Self::Unsupported { action, detail }
                } else {
                    Self::Service { action, detail }
                }
            }
            _ => Self::Service {
                action,
                detail: DisplayErrorContext(&error).to_string(),
            },
        }
    }
}
