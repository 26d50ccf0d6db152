//! The HTTP side of an accepting API, for axum: RFC 9457 problem details, the request helpers
//! every JSON route needs, and the answer to an [`Acceptance`]. Behind the `http` feature, so a
//! worker does not compile axum.
//!
//! Every error is an `application/problem+json` [`Problem`] whose `type` is a URI in the API's
//! own namespace: an API names it once ([`ProblemTypes::new`]) and makes its problems through
//! it, the generic ones here and its domain's own with [`ProblemTypes::problem`].

use axum::body::{Bytes, to_bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::accept::Acceptance;
use crate::idempotency::IdempotencyKey;
use crate::trace::{TRACEPARENT, TRACESTATE, TraceContext};

/// The header a client sends to make a `POST` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that replays an earlier request's result.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The header API Gateway and the load balancers put the X-Ray trace context in: the parent of a
/// request without a W3C `traceparent` ([`trace_parent`]).
pub const XRAY_TRACE_HEADER: &str = "x-amzn-trace-id";
/// Seconds a client is asked to wait before retrying a `503`.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// An API's namespace of problem types: every problem's `type` is this prefix and a slug.
/// `[To customize]`: a URL under your API's documentation, or a tag URI that is stable and not
/// meant to be dereferenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemTypes {
    prefix: &'static str,
}

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

impl ProblemTypes {
    /// Problem types named `{prefix}{slug}`.
    pub const fn new(prefix: &'static str) -> Self {
        Self { prefix }
    }

    /// The prefix of every problem type.
    pub const fn prefix(self) -> &'static str {
        self.prefix
    }

    /// A problem of type `{prefix}{slug}`: the way to make a domain's own problems.
    pub fn problem(
        self,
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind: format!("{}{slug}", self.prefix),
            title,
            status,
            detail: detail.into(),
            field: None,
            allow: None,
            retry_after_seconds: None,
        }
    }

    /// The body is not JSON (`400`).
    pub fn invalid_json(self, detail: impl Into<String>) -> Problem {
        self.problem(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Body is not valid JSON",
            detail,
        )
    }

    /// The body is JSON but not an object (`422`); `detail` shows what one looks like.
    pub fn body_not_an_object(self, detail: impl Into<String>) -> Problem {
        self.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Body must be a JSON object",
            detail,
        )
    }

    /// A required field is absent (`422`).
    pub fn missing_field(self, field: &str) -> Problem {
        self.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-field",
            "Required field is missing",
            format!("field {field} is required"),
        )
        .with_field(field)
    }

    /// A field has the wrong JSON type (`422`).
    pub fn wrong_type(self, field: &str, expected: &str) -> Problem {
        self.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field-type",
            "Field has the wrong type",
            format!("field {field} must be {expected}"),
        )
        .with_field(field)
    }

    /// A field the API does not know (`422`).
    pub fn unknown_field(self, field: &str, known: &[&str]) -> Problem {
        self.problem(
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

    /// A field has a value the API does not accept (`422`).
    pub fn invalid_value(self, field: &str, detail: impl Into<String>) -> Problem {
        self.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field-value",
            "Field has an invalid value",
            detail,
        )
        .with_field(field)
    }

    /// The `Idempotency-Key` header is malformed (`400`).
    pub fn invalid_idempotency_key(self, detail: impl Into<String>) -> Problem {
        self.problem(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Idempotency-Key header is invalid",
            detail,
        )
        .with_field("Idempotency-Key")
    }

    /// The key was used before for a different request (`409`); `detail` says what it made.
    /// Nothing else of that request is shown.
    pub fn idempotency_key_reused(self, detail: impl Into<String>) -> Problem {
        self.problem(
            StatusCode::CONFLICT,
            "idempotency-key-reused",
            "Idempotency-Key was used for a different request",
            detail,
        )
        .with_field("Idempotency-Key")
    }

    /// No route matches the path (`404`).
    pub fn route_not_found(self, path: &str) -> Problem {
        self.problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("nothing is served at {path}"),
        )
    }

    /// The route exists, the method does not (`405`, with `Allow`).
    pub fn method_not_allowed(self, method: &str, allow: &'static str) -> Problem {
        let mut problem = self.problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not allowed here; use {allow}"),
        );
        problem.allow = Some(allow);
        problem
    }

    /// The body is over the limit (`413`).
    pub fn payload_too_large(self, limit: usize) -> Problem {
        self.problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Body is too large",
            format!("the request body must be at most {limit} bytes"),
        )
    }

    /// The body is not declared as JSON (`415`); `found` is its `Content-Type`, if any.
    pub fn unsupported_media_type(self, found: Option<&str>) -> Problem {
        self.problem(
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

    /// A dependency failed; nothing is lost and the same request may be retried (`503`, with
    /// `Retry-After`).
    pub fn dependency_unavailable(self, detail: impl Into<String>) -> Problem {
        let mut problem = self.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            "Service temporarily unavailable",
            detail,
        );
        problem.retry_after_seconds = Some(RETRY_AFTER_SECONDS);
        problem
    }
}

impl Problem {
    /// Replaces the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
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

/// The request's parts and its body, which must be declared as JSON and be at most `limit`
/// bytes. The body is read, not parsed.
pub async fn json_body(
    problems: ProblemTypes,
    request: Request,
    limit: usize,
) -> Result<(Parts, Bytes), Problem> {
    let (parts, body) = request.into_parts();
    require_json(problems, &parts.headers)?;
    let body = to_bytes(body, limit)
        .await
        .map_err(|_| problems.payload_too_large(limit))?;
    Ok((parts, body))
}

fn require_json(problems: ProblemTypes, headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(problems.unsupported_media_type(content_type)),
    }
}

/// The request's `Idempotency-Key`, `None` when it has none.
pub fn idempotency_key(
    problems: ProblemTypes,
    headers: &HeaderMap,
) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| problems.invalid_idempotency_key("Idempotency-Key must be visible ASCII"))?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| problems.invalid_idempotency_key(e.to_string()))
}

/// The context a request names as its parent: its W3C `traceparent` (with `tracestate`), else
/// the X-Ray header API Gateway adds ([`XRAY_TRACE_HEADER`], when it names a parent span), else
/// none (the request starts a trace).
pub fn trace_parent(headers: &HeaderMap) -> Option<TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header(TRACEPARENT)
        .and_then(|parent| TraceContext::parse(parent, header(TRACESTATE)))
        .or_else(|| header(XRAY_TRACE_HEADER).and_then(TraceContext::from_xray))
}

/// A span per request, for `Router::layer(axum::middleware::from_fn(trace_requests))`: named
/// `<method> <route>` (kind server), a child of the request's [`trace_parent`] or the root of a
/// new trace, with `trace_id` and `span_id` on every log line inside it. A handler sends its jobs
/// with [`TraceContext::current`], so the job's records link back to this span.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if let Some(parent) = trace_parent(request.headers()) {
        // Fails only without the trace layer, and then there is no trace to join.
        let _ = span.set_parent(parent.context());
    }
    crate::trace::record_ids(&span);
    let response = next.run(request).instrument(span).await;
    // The request's span has ended: send it before Lambda may freeze the environment.
    crate::trace::flush().await;
    response
}

/// The answer to an accept decision that shows the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `202` for a job sent now (a new request or a resend), `200` for a replay.
    pub status: StatusCode,
    /// Whether the answer replays an earlier request ([`IDEMPOTENT_REPLAYED`]).
    pub replayed: bool,
}

impl<R> Acceptance<R> {
    /// The record and how to answer with it, or `None` for [`Acceptance::KeyReused`], whose
    /// answer is [`ProblemTypes::idempotency_key_reused`] and shows nothing of the record.
    pub fn into_answer(self) -> Option<(R, Answer)> {
        let (record, status, replayed) = match self {
            Self::Accepted(record) => (record, StatusCode::ACCEPTED, false),
            Self::Resent(record) => (record, StatusCode::ACCEPTED, true),
            Self::Replayed(record) => (record, StatusCode::OK, true),
            Self::KeyReused => return None,
        };
        Some((record, Answer { status, replayed }))
    }
}

impl Answer {
    /// The response: `body` as JSON, with `location` (where the client reads the request back)
    /// and, on a replay, `Idempotent-Replayed: true`.
    pub fn respond(self, location: HeaderValue, body: impl Serialize) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, location);
        if self.replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

#[cfg(test)]
mod tests;
