//! RFC 9457 problem details: every error response of the API.
//!
//! The generic problems (bad JSON, a field at fault, a wrong method, a reused key, an
//! unavailable dependency...) are the library's ([`queue_worker::http::ProblemTypes`]), made in
//! this API's namespace through [`PROBLEMS`]; the ones below are the import domain's own.

use axum::http::StatusCode;
use queue_worker::http::ProblemTypes;

pub use queue_worker::http::Problem;

/// Prefix of every problem `type`: a tag URI, stable and not meant to be dereferenced.
/// `[To customize]`: use a URL under your API's documentation.
pub const PROBLEM_TYPE_PREFIX: &str = "tag:import-api,2026:problem:";

/// This API's problem types: every problem is made through it.
pub const PROBLEMS: ProblemTypes = ProblemTypes::new(PROBLEM_TYPE_PREFIX);

/// The body is JSON but not an object.
pub(crate) fn body_not_an_object() -> Problem {
    PROBLEMS.body_not_an_object(
        "the request body must be a JSON object such as {\"objectKey\": \"uploads/file.csv\"}",
    )
}

/// The object key is not safe to read.
pub(crate) fn unsafe_object_key(field: &str, detail: impl Into<String>) -> Problem {
    PROBLEMS
        .problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsafe-object-key",
            "Object key is not allowed",
            detail,
        )
        .with_field(field)
}

/// The object key is safe, but outside the caller's own upload folder.
pub(crate) fn foreign_object_key(field: &str, own_folder: &str) -> Problem {
    PROBLEMS
        .problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "foreign-object-key",
            "Object key is not in your upload folder",
            format!(
                "{field} must be under {own_folder}/, where POST /uploads issues your upload URLs"
            ),
        )
        .with_field(field)
}

/// The key was used before for a different request.
pub(crate) fn idempotency_key_reused() -> Problem {
    PROBLEMS.idempotency_key_reused(
        "this Idempotency-Key already created an import with a different body; use a new key for a new import",
    )
}

/// The path's import id is malformed.
pub(crate) fn invalid_import_id(detail: impl Into<String>) -> Problem {
    PROBLEMS
        .problem(
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
pub(crate) fn unidentified_caller() -> Problem {
    PROBLEMS.problem(
        StatusCode::FORBIDDEN,
        "unidentified-caller",
        "Caller cannot be identified",
        "the API cannot tell which principal sent this request, so it cannot scope the request to it",
    )
}

/// No import has this id, or it is another principal's: the answer is the same either way,
/// so a caller cannot learn that someone else's import exists.
pub(crate) fn import_not_found(id: &str) -> Problem {
    PROBLEMS.problem(
        StatusCode::NOT_FOUND,
        "import-not-found",
        "Import not found",
        format!("no import has id {id}"),
    )
}
