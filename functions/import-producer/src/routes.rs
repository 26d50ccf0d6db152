//! The routes: `POST /uploads`, `POST /imports` and `GET /imports/{id}`.
//!
//! Every import belongs to the principal that created it (see [`crate::caller`]): its
//! idempotency keys are scoped to that principal, and no other principal can read or replay it.
//! Every upload lives in its uploader's folder (see [`crate::uploads`]), and an import may name
//! only an object in its caller's own folder.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use imports::{
    CreateOutcome, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore, ObjectKey,
    Principal,
};
use queue_worker::idempotency::IdempotencyKey;
use queue_worker::job::JobQueue;
use queue_worker::telemetry::error_chain;
use serde_json::json;

use crate::caller::Caller;
use crate::problem::Problem;
use crate::request::{NewImport, NewUpload};
use crate::uploads::Uploads;

/// The header a client sends to make `POST /imports` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that replays an earlier request's result.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

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
                Problem::method_not_allowed(method.as_str(), "POST")
            }),
        )
        .route(
            "/imports",
            post(create_import::<S, Q>).fallback(|method: Method| async move {
                Problem::method_not_allowed(method.as_str(), "POST")
            }),
        )
        .route(
            "/imports/{id}",
            get(get_import::<S, Q>).fallback(|method: Method| async move {
                Problem::method_not_allowed(method.as_str(), "GET")
            }),
        )
        .fallback(|uri: Uri| async move { Problem::route_not_found(uri.path()) })
        .with_state(api)
}

async fn create_import<S: ImportStore, Q: JobQueue<ImportJob>>(
    State(api): State<Arc<Api<S, Q>>>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = json_body(request, api.max_body_bytes).await?;
    let new = NewImport::parse(&body, &api.upload_prefix)?;
    let key = idempotency_key(&parts.headers)?;
    let own_folder = format!("{}{}", api.upload_prefix, caller.upload_folder());
    if !new
        .object_key
        .as_str()
        .strip_prefix(&own_folder)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return Err(Problem::foreign_object_key("objectKey", &own_folder));
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
    let trace = parts
        .headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok());
    accept(&api, &record, key.is_some(), trace).await
}

/// Answers a fresh object key in the caller's upload folder and a presigned `PUT` URL for it.
async fn create_upload<S: ImportStore, Q: JobQueue<ImportJob>>(
    State(api): State<Arc<Api<S, Q>>>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, Problem> {
    let (_, body) = json_body(request, api.max_body_bytes).await?;
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
        Problem::dependency_unavailable("the upload URL could not be signed; retry")
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

/// Records the import and queues its job, or replays what an earlier request with the same key
/// did.
#[tracing::instrument(skip_all, fields(import_id = %record.import_id))]
async fn accept<S: ImportStore, Q: JobQueue<ImportJob>>(
    api: &Api<S, Q>,
    record: &ImportRecord,
    has_key: bool,
    trace: Option<&str>,
) -> Result<Response, Problem> {
    let import_id = record.import_id;
    let existing = match api.store.create(record).await {
        Ok(CreateOutcome::Created) => None,
        Ok(CreateOutcome::Exists(existing)) => Some(*existing),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not record the import");
            return Err(Problem::dependency_unavailable(
                "the import could not be recorded; retry the request",
            ));
        }
    };

    match existing {
        None => {
            if let Err(problem) = send_job(api, record, trace).await {
                if !has_key {
                    // Without a key the client cannot come back to this import: close it.
                    let reason = "the job could not be queued; submit the import again";
                    if let Err(e) = api
                        .store
                        .abandon_unsent(import_id, reason, SystemTime::now())
                        .await
                    {
                        tracing::error!(error = %error_chain(&e), "could not mark the unsent import failed");
                    }
                }
                return Err(problem);
            }
            tracing::info!("import accepted");
            Ok(accepted(StatusCode::ACCEPTED, record, false))
        }
        Some(existing) => match replay(&existing, record) {
            Replay::Conflict => Err(Problem::idempotency_key_reused()),
            Replay::SendAgain => {
                tracing::info!("retried import whose job may not have been sent; sending it again");
                send_job(api, &existing, trace).await?;
                Ok(accepted(StatusCode::ACCEPTED, &existing, true))
            }
            Replay::Answer => Ok(accepted(StatusCode::OK, &existing, true)),
        },
    }
}

/// What a `POST` does when its import id exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Another request made this import: `409`, and nothing about the import is shown.
    Conflict,
    /// The same request, and the job may never have reached the queue: send it, then replay.
    SendAgain,
    /// The same request: answer with the import as it is now.
    Answer,
}

/// Decides what `request` does with `existing`, the import its id names.
///
/// - Another principal's import is a conflict, never a replay, so no path shows it to a caller
///   that does not own it. Ids derived from a key include the principal, so this only happens
///   for a record written before owners were stored (it belongs to nobody).
/// - The same key with another body is a conflict.
/// - The job is sent again only while the import is `QUEUED` and not known sent: once the
///   processor has moved it on, the job evidently arrived, and sending chunk 0 of a `COMPLETED`,
///   `PROCESSING` or `FAILED` import again would start it over.
fn replay(existing: &ImportRecord, request: &ImportRecord) -> Replay {
    let same_owner = request
        .owner
        .as_ref()
        .is_some_and(|caller| owned_by(existing, caller));
    if !same_owner || existing.request_hash != request.request_hash {
        Replay::Conflict
    } else if existing.status == ImportStatus::Queued && !existing.job_sent {
        Replay::SendAgain
    } else {
        Replay::Answer
    }
}

/// Sends the import's job and records that it was sent. Only a failed send is an error: if the
/// mark fails, a retry sends the job once more, which the idempotent consumer absorbs.
async fn send_job<S: ImportStore, Q: JobQueue<ImportJob>>(
    api: &Api<S, Q>,
    record: &ImportRecord,
    trace: Option<&str>,
) -> Result<(), Problem> {
    let job = ImportJob::new(record.import_id, &record.object_key, record.format);
    if let Err(e) = api.queue.send(&job, trace).await {
        tracing::error!(error = %error_chain(e.as_ref()), "could not queue the job");
        return Err(Problem::dependency_unavailable(
            "the import could not be queued; retry the request with the same Idempotency-Key",
        ));
    }
    if let Err(e) = api
        .store
        .mark_job_sent(record.import_id, SystemTime::now())
        .await
    {
        tracing::warn!(error = %error_chain(&e), "job sent, but not marked as sent");
    }
    Ok(())
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
    let import_id = ImportId::parse(&id).map_err(|e| Problem::invalid_import_id(e.to_string()))?;
    match api.store.get(import_id).await {
        Ok(Some(record)) if owned_by(&record, &caller) => {
            Ok((StatusCode::OK, axum::Json(view(&record))).into_response())
        }
        Ok(_) => Err(Problem::import_not_found(&id)),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not read the import");
            Err(Problem::dependency_unavailable(
                "the import could not be read; retry",
            ))
        }
    }
}

fn owned_by(record: &ImportRecord, caller: &Principal) -> bool {
    record.owner.as_ref() == Some(caller)
}

fn accepted(status: StatusCode, record: &ImportRecord, replayed: bool) -> Response {
    let mut response = (status, axum::Json(view(record))).into_response();
    let location = format!("/imports/{}", record.import_id);
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("an import path is a valid header"),
    );
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
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

/// The request's parts and its body, which must be JSON of at most `limit` bytes.
async fn json_body(
    request: Request,
    limit: usize,
) -> Result<(axum::http::request::Parts, axum::body::Bytes), Problem> {
    let (parts, body) = request.into_parts();
    require_json(&parts.headers)?;
    let body = read_body(body, limit).await?;
    Ok((parts, body))
}

fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(Problem::unsupported_media_type(content_type)),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, Problem> {
    to_bytes(body, limit)
        .await
        .map_err(|_| Problem::payload_too_large(limit))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Problem::invalid_idempotency_key("Idempotency-Key must be visible ASCII"))?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| Problem::invalid_idempotency_key(e.to_string()))
}

#[cfg(test)]
mod tests;
