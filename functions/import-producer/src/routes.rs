//! The routes: `POST /uploads`, `POST /imports` and `GET /imports/{id}`.
//!
//! Every import belongs to the principal that created it (see [`crate::caller`]): its
//! idempotency keys are scoped to that principal, and no other principal can read or replay it.
//! Every upload lives in its uploader's folder (see [`crate::uploads`]), and an import may name
//! only an object in its caller's own folder.
//!
//! `POST /imports` parses, authorises and builds the import's record; recording it, sending its
//! job, and answering a retry (replay, resend while `QUEUED`, `409` for a reused key, the `503`
//! paths) is the library's accept flow, [`queue_worker::accept`]. Every request has a span that
//! continues the caller's trace (`queue_worker::http::trace_requests`); the job carries it on.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use imports::{
    ImportId, ImportJob, ImportRecord, ImportRequests, ImportStatus, ImportStore, ObjectKey,
    Principal, StoreError,
};
use queue_worker::accept::{AcceptError, accept};
use queue_worker::http;
use queue_worker::job::JobQueue;
use queue_worker::telemetry::error_chain;
use queue_worker::trace::TraceContext;
use serde_json::json;
use tracing::Instrument;

use crate::caller::Caller;
use crate::problem::{self, PROBLEMS, Problem};
use crate::request::{NewImport, NewUpload};
use crate::uploads::Uploads;

/// What the routes need: the import store, the job queue, the upload signer and the request
/// limits.
#[derive(Debug)]
pub struct Api<S, Q> {
    /// Where import records live.
    pub store: S,
    /// Where jobs go.
    pub queue: Q,
    /// Signs upload URLs.
    pub uploads: Uploads,
    /// Object keys must start with this, then the caller's upload folder.
    pub upload_prefix: String,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
}

/// The API as an axum router: served by `lambda_http` in Lambda and by `axum::serve` locally.
pub fn router<S, Q>(api: Arc<Api<S, Q>>) -> Router
where
    S: ImportStore + 'static,
    Q: JobQueue<ImportJob> + 'static,
{
    Router::new()
        .route(
            "/uploads",
            post(create_upload::<S, Q>).fallback(|method: Method| async move {
                PROBLEMS.method_not_allowed(method.as_str(), "POST")
            }),
        )
        .route(
            "/imports",
            post(create_import::<S, Q>).fallback(|method: Method| async move {
                PROBLEMS.method_not_allowed(method.as_str(), "POST")
            }),
        )
        .route(
            "/imports/{id}",
            get(get_import::<S, Q>).fallback(|method: Method| async move {
                PROBLEMS.method_not_allowed(method.as_str(), "GET")
            }),
        )
        .fallback(|uri: Uri| async move { PROBLEMS.route_not_found(uri.path()) })
        .layer(axum::middleware::from_fn(http::trace_requests))
        .with_state(api)
}

async fn create_import<S: ImportStore, Q: JobQueue<ImportJob>>(
    State(api): State<Arc<Api<S, Q>>>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = http::json_body(PROBLEMS, request, api.max_body_bytes).await?;
    let new = NewImport::parse(&body, &api.upload_prefix)?;
    let key = http::idempotency_key(PROBLEMS, &parts.headers)?;
    let own_folder = format!("{}{}", api.upload_prefix, caller.upload_folder());
    if !new
        .object_key
        .as_str()
        .strip_prefix(&own_folder)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return Err(problem::foreign_object_key("objectKey", &own_folder));
    }
    let import_id = match &key {
        Some(key) => ImportId::for_idempotency_key(&caller, key),
        None => ImportId::generate(),
    };
    let record = ImportRecord::queued(
        import_id,
        new.object_key.clone(),
        new.format,
        new.fingerprint().as_str().to_owned(),
        caller,
        SystemTime::now(),
    );
    // The request's span (`http::trace_requests`): the job's records link to it.
    let trace = TraceContext::current();
    let decision = accept(
        &ImportRequests(&api.store),
        &api.queue,
        record,
        key.as_ref(),
        trace.as_ref(),
    )
    .instrument(tracing::info_span!("accept", %import_id))
    .await
    .map_err(unavailable)?;
    let (record, answer) = decision
        .into_answer()
        .ok_or_else(problem::idempotency_key_reused)?;
    let location = format!("/imports/{}", record.import_id);
    let location = HeaderValue::from_str(&location).expect("an import path is a valid header");
    Ok(answer.respond(location, view(&record)))
}

/// The `503` for a request the accept flow could not finish: a retry with the same key
/// finishes it.
fn unavailable(error: AcceptError<StoreError>) -> Problem {
    PROBLEMS.dependency_unavailable(match error {
        AcceptError::NotRecorded(_) => "the import could not be recorded; retry the request",
        AcceptError::NotQueued(_) => {
            "the import could not be queued; retry the request with the same Idempotency-Key"
        }
    })
}

/// Answers a fresh object key in the caller's upload folder and a presigned `PUT` URL for it.
async fn create_upload<S: ImportStore, Q: JobQueue<ImportJob>>(
    State(api): State<Arc<Api<S, Q>>>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let (_, body) = http::json_body(PROBLEMS, request, api.max_body_bytes).await?;
    let new = NewUpload::parse(&body)?;
    let name = format!(
        "{}{}/{}.{}",
        api.upload_prefix,
        caller.upload_folder(),
        uuid::Uuid::now_v7(),
        new.format.as_str()
    );
    let key = ObjectKey::parse(&name, &api.upload_prefix)
        .expect("a uuid file name in a hex folder is a safe key");
    let upload = api.uploads.put_url(&key).await.map_err(|e| {
        tracing::error!(error = %error_chain(e.as_ref()), "could not sign an upload URL");
        PROBLEMS.dependency_unavailable("the upload URL could not be signed; retry")
    })?;
    let body = json!({
        "objectKey": key.as_str(),
        "format": new.format.as_str(),
        "method": "PUT",
        "uploadUrl": upload.url,
        "expiresAt": humantime::format_rfc3339_seconds(upload.expires_at).to_string(),
    });
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    // The URL is a credential for one key: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Answers the import to the principal that created it, and the same `404` as for an unknown id
/// to anyone else: another principal cannot even learn that the import exists. A record written
/// before owners were stored has none and answers `404` to everyone: who created it is unknown,
/// and a guess could show it to the wrong caller.
async fn get_import<S: ImportStore, Q: JobQueue<ImportJob>>(
    State(api): State<Arc<Api<S, Q>>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let import_id = ImportId::parse(&id).map_err(|e| problem::invalid_import_id(e.to_string()))?;
    match api.store.get(import_id).await {
        Ok(Some(record)) if owned_by(&record, &caller) => {
            Ok((StatusCode::OK, axum::Json(view(&record))).into_response())
        }
        Ok(_) => Err(problem::import_not_found(&id)),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not read the import");
            Err(PROBLEMS.dependency_unavailable("the import could not be read; retry"))
        }
    }
}

fn owned_by(record: &ImportRecord, caller: &Principal) -> bool {
    record.owner.as_ref() == Some(caller)
}

/// The public view of an import.
fn view(record: &ImportRecord) -> serde_json::Value {
    let mut view = json!({
        "importId": record.import_id,
        "status": record.status.as_str(),
        "objectKey": record.object_key.as_str(),
        "format": record.format.as_str(),
        "createdAt": humantime::format_rfc3339_millis(record.created_at).to_string(),
        "updatedAt": humantime::format_rfc3339_millis(record.updated_at).to_string(),
    });
    if record.status != ImportStatus::Queued {
        view["rowsWritten"] = json!(record.rows_written.unwrap_or(0));
        view["rowsRejected"] = json!(record.rows_rejected.unwrap_or(0));
    }
    if let Some(chunks) = record.chunks {
        view["chunks"] = json!(chunks);
    }
    if let Some(error) = &record.error {
        view["error"] = json!(error);
    }
    view
}

#[cfg(test)]
mod tests;
