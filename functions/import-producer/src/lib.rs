//! `import-producer`: the HTTP API (behind API Gateway) that accepts imports and queues them.
//!
//! The routes (`POST /imports`, `GET /imports/{id}`) arrive with the producer issue; until then
//! every request gets `501 Not Implemented` as an RFC 9457 problem document, so a client can
//! never mistake the placeholder for an accepted import.

use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

/// Handles one API Gateway HTTP API (payload v2) request.
pub async fn handle_request(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tracing::info!(request_id = %event.context.request_id, "request received");
    let problem = json!({
        "type": "about:blank",
        "title": "Not Implemented",
        "status": 501,
        "detail": "the import API is not implemented yet"
    });
    Ok(json!({
        "statusCode": 501,
        "headers": { "content-type": "application/problem+json" },
        "body": problem.to_string()
    }))
}
