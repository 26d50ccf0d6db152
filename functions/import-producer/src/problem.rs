//! RFC 9457 problem details: every error response of the API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Prefix of every problem `type`: a tag URI, stable and not meant to be dereferenced.
/// `[To customize]`: use a URL under your API's documentation.
pub const PROBLEM_TYPE_PREFIX: &str = "tag:import-api,2026:problem:";

/// An error response: `application/problem+json` with a type, title, status and detail, and the
/// offending field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    #[serde(serialize_with = "serialize_status")]
    status: StatusCode,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip)]
    allow: Option<&'static str>,
    #[serde(skip)]
    retry_after_seconds: Option<u32>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title,
            status,
            detail: detail.into(),
            field: None,
            allow: None,
            retry_after_seconds: None,
        }
    }

    /// Replaces the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// The body is not JSON.
    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Body is not valid JSON",
            detail,
        )
    }

    /// The body is JSON but not an object.
    pub fn body_not_an_object() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Body must be a JSON object",
            "the request body must be a JSON object such as {\"objectKey\": \"uploads/file.csv\"}",
        )
    }

    /// A required field is absent.
    pub fn missing_field(field: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-field",
            "Required field is missing",
            format!("field {field} is required"),
        )
        .with_field(field)
    }

    /// A field has the wrong JSON type.
    pub fn wrong_type(field: &str, expected: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field-type",
            "Field has the wrong type",
            format!("field {field} must be {expected}"),
        )
        .with_field(field)
    }

    /// A field the API does not know.
    pub fn unknown_field(field: &str, known: &[&str]) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-field",
            "Unknown field",
            format!(
                "field {field} is not accepted; known fields: {}",
                known.join(", ")
            ),
        )
        .with_field(field)
    }

    /// A field has a value the API does not accept.
    pub fn invalid_value(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field-value",
            "Field has an invalid value",
            detail,
        )
        .with_field(field)
    }

    /// The object key is not safe to read.
    pub fn unsafe_object_key(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsafe-object-key",
            "Object key is not allowed",
            detail,
        )
        .with_field(field)
    }

    /// The object key is safe, but outside the caller's own upload folder.
    pub fn foreign_object_key(field: &str, own_folder: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "foreign-object-key",
            "Object key is not in your upload folder",
            format!(
                "{field} must be under {own_folder}/, where POST /uploads issues your upload URLs"
            ),
        )
        .with_field(field)
    }

    /// The `Idempotency-Key` header is malformed.
    pub fn invalid_idempotency_key(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Idempotency-Key header is invalid",
            detail,
        )
        .with_field("Idempotency-Key")
    }

    /// The key was used before for a different request.
    pub fn idempotency_key_reused() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "idempotency-key-reused",
            "Idempotency-Key was used for a different request",
            "this Idempotency-Key already created an import with a different body; use a new key for a new import",
        )
        .with_field("Idempotency-Key")
    }

    /// The path's import id is malformed.
    pub fn invalid_import_id(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-import-id",
            "Import id is invalid",
            detail,
        )
        .with_field("id")
    }

    /// An authorizer let the request through, but its identity is not one this API can tell
    /// apart from others' (see the `caller` module). The detail stays generic; the reason is
    /// logged.
    pub fn unidentified_caller() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "unidentified-caller",
            "Caller cannot be identified",
            "the API cannot tell which principal sent this request, so it cannot scope the request to it",
        )
    }

    /// No import has this id, or it is another principal's: the answer is the same either way,
    /// so a caller cannot learn that someone else's import exists.
    pub fn import_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "import-not-found",
            "Import not found",
            format!("no import has id {id}"),
        )
    }

    /// No route matches the path.
    pub fn route_not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("nothing is served at {path}"),
        )
    }

    /// The route exists, the method does not.
    pub fn method_not_allowed(method: &str, allow: &'static str) -> Self {
        let mut problem = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not allowed here; use {allow}"),
        );
        problem.allow = Some(allow);
        problem
    }

    /// The body is over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Body is too large",
            format!("the request body must be at most {limit} bytes"),
        )
    }

    /// The body is not declared as JSON.
    pub fn unsupported_media_type(found: Option<&str>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Content-Type must be application/json",
            match found {
                Some(found) => {
                    format!("Content-Type {found:?} is not accepted; send application/json")
                }
                None => "the request has no Content-Type; send application/json".to_owned(),
            },
        )
        .with_field("Content-Type")
    }

    /// A dependency failed; nothing is lost and the same request may be retried.
    pub fn dependency_unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            "Service temporarily unavailable",
            detail,
        );
        problem.retry_after_seconds = Some(5);
        problem
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self).expect("a problem always serialises");
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
