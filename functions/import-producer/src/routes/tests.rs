//! The routes driven by API Gateway HTTP API (payload v2) events, decoded by
//! `lambda_http` exactly as in Lambda, against in-memory fakes of the store and the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, to_bytes};
use axum::http::{Response, StatusCode};
use imports::{
    CreateOutcome, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore,
    Principal, StoreError,
};
use queue_worker::BoxError;
use queue_worker::job::JobQueue;
use queue_worker::trace::TraceContext;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::{Api, PROBLEM_TYPE_PREFIX, Uploads, router};

#[derive(Default)]
struct MemoryImports {
    records: Mutex<HashMap<ImportId, ImportRecord>>,
    down: AtomicBool,
}

impl MemoryImports {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("table down".into()));
        }
        Ok(())
    }

    fn all(&self) -> Vec<ImportRecord> {
        self.records.lock().unwrap().values().cloned().collect()
    }
}

impl ImportStore for MemoryImports {
    async fn create(&self, record: &ImportRecord) -> Result<CreateOutcome, StoreError> {
        self.check()?;
        let mut records = self.records.lock().unwrap();
        if let Some(existing) = records.get(&record.import_id) {
            return Ok(CreateOutcome::Exists(Box::new(existing.clone())));
        }
        records.insert(record.import_id, record.clone());
        Ok(CreateOutcome::Created)
    }

    async fn mark_job_sent(&self, import_id: ImportId, at: SystemTime) -> Result<(), StoreError> {
        self.check()?;
        if let Some(record) = self.records.lock().unwrap().get_mut(&import_id) {
            record.job_sent = true;
            record.updated_at = at;
        }
        Ok(())
    }

    async fn abandon_unsent(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.check()?;
        if let Some(record) = self.records.lock().unwrap().get_mut(&import_id) {
            if !record.job_sent {
                record.status = ImportStatus::Failed;
                record.error = Some(reason.to_owned());
                record.updated_at = at;
            }
        }
        Ok(())
    }

    async fn get(&self, import_id: ImportId) -> Result<Option<ImportRecord>, StoreError> {
        self.check()?;
        Ok(self.records.lock().unwrap().get(&import_id).cloned())
    }
}

#[derive(Default)]
struct MemoryQueue {
    jobs: Mutex<Vec<(ImportJob, Option<TraceContext>)>>,
    down: AtomicBool,
}

impl MemoryQueue {
    fn jobs(&self) -> Vec<(ImportJob, Option<TraceContext>)> {
        self.jobs.lock().unwrap().clone()
    }
}

impl JobQueue<ImportJob> for MemoryQueue {
    async fn send_after(
        &self,
        job: &ImportJob,
        delay: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<(), BoxError> {
        assert_eq!(delay, Duration::ZERO, "the producer sends jobs for now");
        if self.down.load(Ordering::SeqCst) {
            return Err("queue down".into());
        }
        self.jobs
            .lock()
            .unwrap()
            .push((job.clone(), trace.cloned()));
        Ok(())
    }
}

type TestApi = Arc<Api<MemoryImports, MemoryQueue>>;

/// Signs with fixed credentials: presigning makes no request.
fn uploads() -> Uploads {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        ))
        .build();
    Uploads::new(aws_sdk_s3::Client::from_conf(config), "upload-bucket")
}

fn api() -> TestApi {
    Arc::new(Api {
        store: MemoryImports::default(),
        queue: MemoryQueue::default(),
        uploads: uploads(),
        upload_prefix: "uploads/".into(),
        max_body_bytes: 1024,
    })
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The principal `event` is sent by: its IAM caller, its JWT, or nobody (`None` when the
/// API cannot identify it).
fn principal_of(event: &Value) -> Option<Principal> {
    let authorizer = &event["requestContext"]["authorizer"];
    if let Some(arn) = authorizer["iam"]["userArn"].as_str() {
        return Principal::from_arn(arn).ok();
    }
    let claims = &authorizer["jwt"]["claims"];
    match (claims["iss"].as_str(), claims["sub"].as_str()) {
        (Some(iss), Some(sub)) => Principal::from_jwt(iss, sub).ok(),
        _ => Some(Principal::anonymous()),
    }
}

/// `uploads/{folder}/name`: an object in the upload folder of `event`'s caller.
fn own_key(event: &Value, name: &str) -> String {
    let caller = principal_of(event).expect("an identified caller");
    format!("uploads/{}/{name}", caller.upload_folder())
}

/// Sends an API Gateway event through `lambda_http`'s decoding and the router. A `{folder}` in
/// the body is the caller's own upload folder (where its `POST /uploads` puts files).
async fn call(api: &TestApi, mut event: Value) -> (StatusCode, Response<Body>, Value) {
    // The trace layer `telemetry::init` installs in Lambda, global to the test binary (a
    // per-thread default misses spans while other tests run the same call sites: tracing caches
    // whether a call site is enabled across threads). It writes nothing.
    static TRACE_LAYER: std::sync::Once = std::sync::Once::new();
    TRACE_LAYER.call_once(|| {
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(queue_worker::trace::layer(&Default::default())),
        )
        .expect("no other global subscriber in these tests");
    });
    if let Some(body) = event["body"].as_str()
        && body.contains("{folder}")
        && let Some(caller) = principal_of(&event)
    {
        event["body"] = json!(body.replace("{folder}", &caller.upload_folder()));
    }
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
    let request = request.map(|body| Body::from(body.to_vec()));
    let response = router(Arc::clone(api)).oneshot(request).await.unwrap();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, Response::from_parts(parts, Body::empty()), json)
}

fn post(body: &str) -> Value {
    let mut event = fixture("post_imports.json");
    event["body"] = json!(body);
    event
}

/// Two sessions of one role (a credential refresh, another replica), and another role.
const ROLE_SESSION_1: &str = "arn:aws:sts::123456789012:assumed-role/importer/replica-1";
const ROLE_SESSION_2: &str = "arn:aws:sts::123456789012:assumed-role/importer/replica-2";
const OTHER_ROLE: &str = "arn:aws:sts::123456789012:assumed-role/reporter/replica-1";

/// `event` as sent by the IAM caller `arn`.
fn as_caller(mut event: Value, arn: &str) -> Value {
    event["requestContext"]["authorizer"]["iam"]["userArn"] = json!(arn);
    event
}

/// `event` as sent with a JWT carrying `claims`, and no IAM caller.
fn with_jwt(mut event: Value, claims: Value) -> Value {
    event["requestContext"]["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
    event
}

/// `GET /imports/{id}`.
fn get(id: &str) -> Value {
    let mut event = fixture("get_import.json");
    event["rawPath"] = json!(format!("/imports/{id}"));
    event["requestContext"]["http"]["path"] = json!(format!("/imports/{id}"));
    event
}

/// Sets the stored import's status, as the processor would.
fn set_status(api: &TestApi, id: &str, status: ImportStatus) {
    let id = ImportId::parse(id).unwrap();
    let mut records = api.store.records.lock().unwrap();
    records.get_mut(&id).unwrap().status = status;
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn an_accepted_import_is_recorded_and_exactly_one_job_is_queued() {
    let api = api();
    let (status, response, body) = call(&api, fixture("post_imports.json")).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["importId"].as_str().unwrap();
    assert_eq!(
        header(&response, "location"),
        Some(format!("/imports/{id}").as_str())
    );
    assert_eq!(body["status"], "QUEUED");
    let key = own_key(&fixture("post_imports.json"), "orders.csv");
    assert_eq!(body["objectKey"], key.as_str());
    assert_eq!(body["format"], "csv");

    let records = api.store.all();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].import_id.to_string(), id);
    assert_eq!(records[0].status, ImportStatus::Queued);
    assert!(records[0].job_sent);

    let jobs = api.queue.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0.import_id.to_string(), id);
    assert_eq!(jobs[0].0.object_key, key);
    assert_eq!(jobs[0].0.format, ImportFormat::Csv);
}

/// The trace id of the job `api` sent last.
fn sent_trace(api: &TestApi) -> TraceContext {
    let jobs = api.queue.jobs();
    let (_, trace) = jobs.last().expect("a job was sent");
    trace.clone().expect("the job carries a trace context")
}

#[tokio::test]
async fn a_job_continues_the_callers_w3c_trace() {
    let api = api();
    let mut event = fixture("post_imports.json");
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    event["headers"]["traceparent"] = json!(caller);
    event["headers"]["tracestate"] = json!("vendor=opaque");
    let (status, _, _) = call(&api, event).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    let sent = sent_trace(&api);
    assert_eq!(
        sent.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // The job's parent is the request's own span, a child of the caller's.
    let sent_span = sent.span_context().span_id().to_string();
    assert_ne!(sent_span, "00f067aa0ba902b7");
    assert_eq!(
        sent.traceparent(),
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{sent_span}-01")
    );
    assert_eq!(sent.tracestate(), Some("vendor=opaque"));
}

#[tokio::test]
async fn without_a_traceparent_the_api_gateway_trace_header_is_the_parent_if_it_names_one() {
    let api = api();
    let mut event = fixture("post_imports.json");
    event["headers"]["x-amzn-trace-id"] =
        json!("Root=1-6748b3c0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1");
    call(&api, event).await;
    assert_eq!(
        sent_trace(&api).trace_id().to_string(),
        "6748b3c00123456789abcdef01234567"
    );
}

#[tokio::test]
async fn a_request_without_a_parent_starts_a_new_trace() {
    let api = api();
    // The fixture's `x-amzn-trace-id` has a root and no parent, as an HTTP API sends it.
    for _ in 0..2 {
        let mut event = fixture("post_imports.json");
        event["headers"]
            .as_object_mut()
            .unwrap()
            .remove("idempotency-key");
        let (status, _, _) = call(&api, event).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    let jobs = api.queue.jobs();
    let traces: Vec<TraceContext> = jobs.iter().map(|(_, t)| t.clone().unwrap()).collect();
    assert_eq!(traces.len(), 2);
    for trace in &traces {
        assert!(trace.span_context().is_valid(), "{trace:?}");
        assert_ne!(
            trace.trace_id().to_string(),
            "6748b3c00123456789abcdef01234567",
            "a root without a parent names no span to join"
        );
    }
    assert_ne!(
        traces[0].trace_id(),
        traces[1].trace_id(),
        "each request starts its own"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_import_and_queues_nothing_more() {
    let api = api();
    let (_, _, first) = call(&api, fixture("post_imports.json")).await;
    let (status, response, again) = call(&api, fixture("post_imports.json")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&response, "idempotent-replayed"), Some("true"));
    assert_eq!(again["importId"], first["importId"]);
    assert_eq!(api.store.all().len(), 1);
    assert_eq!(api.queue.jobs().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_conflict() {
    let api = api();
    call(&api, fixture("post_imports.json")).await;
    let (status, _, problem) =
        call(&api, post(r#"{"objectKey":"uploads/{folder}/other.csv"}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}idempotency-key-reused")
    );
    assert_eq!(api.queue.jobs().len(), 1);
}

#[tokio::test]
async fn equivalent_bodies_are_the_same_request() {
    let api = api();
    call(&api, fixture("post_imports.json")).await;
    let (status, _, _) = call(
        &api,
        post(r#"{ "format": "csv", "objectKey": "uploads/{folder}/orders.csv" }"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller() {
    let api = api();
    let (_, _, mine) = call(&api, fixture("post_imports.json")).await;
    let mut theirs = fixture("post_imports.json");
    theirs["requestContext"]["authorizer"]["iam"]["userArn"] =
        json!("arn:aws:iam::123456789012:user/someone-else");
    let (status, _, other) = call(&api, theirs).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(mine["importId"], other["importId"]);
}

#[tokio::test]
async fn two_sessions_of_one_role_with_one_key_make_one_import() {
    let api = api();
    let (status, _, first) = call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_1),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (status, response, again) = call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_2),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(header(&response, "idempotent-replayed"), Some("true"));
    assert_eq!(again["importId"], first["importId"]);
    assert_eq!(api.store.all().len(), 1);
    assert_eq!(api.queue.jobs().len(), 1, "nothing new is queued");
}

#[tokio::test]
async fn two_roles_with_one_key_make_two_imports() {
    let api = api();
    let (_, _, mine) = call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_1),
    )
    .await;
    let (status, _, theirs) = call(&api, as_caller(fixture("post_imports.json"), OTHER_ROLE)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(mine["importId"], theirs["importId"]);
    assert_eq!(api.queue.jobs().len(), 2);
}

#[tokio::test]
async fn the_import_records_its_creator_as_its_role_not_its_session() {
    let api = api();
    call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_1),
    )
    .await;
    assert_eq!(
        api.store.all()[0].owner,
        Some(Principal::from_stored(
            "arn:aws:iam::123456789012:role/importer"
        ))
    );
}

#[tokio::test]
async fn a_jwt_callers_keys_are_scoped_to_its_issuer_and_subject() {
    let api = api();
    let alice = json!({ "iss": "https://issuer.example", "sub": "alice" });
    let (_, _, first) = call(&api, with_jwt(fixture("post_imports.json"), alice.clone())).await;
    let (status, _, again) = call(&api, with_jwt(fixture("post_imports.json"), alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["importId"], first["importId"]);

    let other_issuer = json!({ "iss": "https://other.example", "sub": "alice" });
    let (status, _, other) = call(&api, with_jwt(fixture("post_imports.json"), other_issuer)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(other["importId"], first["importId"]);
}

#[tokio::test]
async fn a_caller_the_authorizer_does_not_identify_is_refused_and_nothing_is_recorded() {
    for authorizer in [
        json!({ "lambda": { "tenant": "acme" } }),
        json!({ "jwt": { "claims": { "iss": "https://issuer.example" }, "scopes": null } }),
        json!({ "iam": { "userArn": "importer" } }),
        json!({ "iam": { "userArn": "arn:aws:sts::123456789012:assumed-role/importer" } }),
    ] {
        let api = api();
        let mut event = fixture("post_imports.json");
        event["requestContext"]["authorizer"] = authorizer.clone();
        let (status, _, problem) = call(&api, event).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{authorizer}");
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_TYPE_PREFIX}unidentified-caller"),
            "{authorizer}"
        );
        assert!(api.store.all().is_empty(), "{authorizer}");
        assert!(api.queue.jobs().is_empty(), "{authorizer}");
    }
}

#[tokio::test]
async fn without_an_authorizer_the_caller_is_anonymous_and_never_an_authenticated_one() {
    let api = api();
    let mut anonymous = fixture("post_imports.json");
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (status, _, theirs) = call(&api, anonymous).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(api.store.all()[0].owner, Some(Principal::anonymous()));

    let (status, _, mine) = call(&api, fixture("post_imports.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(mine["importId"], theirs["importId"]);
    let (status, _, _) = call(&api, get(theirs["importId"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_key_each_request_is_a_new_import_with_a_sortable_id() {
    let api = api();
    let mut event = fixture("post_imports.json");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    let (_, _, first) = call(&api, event.clone()).await;
    let (_, _, second) = call(&api, event).await;
    let (first, second) = (
        first["importId"].as_str().unwrap().to_owned(),
        second["importId"].as_str().unwrap().to_owned(),
    );
    assert!(
        first < second,
        "UUIDv7 ids sort by creation: {first} {second}"
    );
    assert_eq!(api.queue.jobs().len(), 2);
}

#[tokio::test]
async fn a_queue_failure_answers_503_and_the_retry_with_the_key_sends_the_job() {
    let api = api();
    api.queue.down.store(true, Ordering::SeqCst);
    let (status, response, problem) = call(&api, fixture("post_imports.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("5"));
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}dependency-unavailable")
    );
    assert!(
        !api.store.all()[0].job_sent,
        "the record says the job may be unsent"
    );

    api.queue.down.store(false, Ordering::SeqCst);
    let (status, response, body) = call(&api, fixture("post_imports.json")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(header(&response, "idempotent-replayed"), Some("true"));
    assert_eq!(api.queue.jobs().len(), 1);
    assert_eq!(
        api.queue.jobs()[0].0.import_id.to_string(),
        body["importId"].as_str().unwrap()
    );
    assert!(api.store.all()[0].job_sent);
}

#[tokio::test]
async fn a_retry_after_the_import_moved_on_replays_it_without_sending_the_job_again() {
    for moved_on in [
        ImportStatus::Processing,
        ImportStatus::Completed,
        ImportStatus::Failed,
    ] {
        let api = api();
        api.queue.down.store(true, Ordering::SeqCst);
        let (status, _, _) = call(&api, fixture("post_imports.json")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        api.queue.down.store(false, Ordering::SeqCst);
        // The send reached the queue after all (or its mark failed): the processor moved on.
        let id = api.store.all()[0].import_id.to_string();
        set_status(&api, &id, moved_on);

        let (status, response, body) = call(&api, fixture("post_imports.json")).await;
        assert_eq!(status, StatusCode::OK, "{moved_on:?}: {body}");
        assert_eq!(
            header(&response, "idempotent-replayed"),
            Some("true"),
            "{moved_on:?}"
        );
        assert_eq!(body["importId"], id.as_str(), "{moved_on:?}");
        assert_eq!(body["status"], moved_on.as_str(), "{moved_on:?}");
        assert!(api.queue.jobs().is_empty(), "{moved_on:?}: no job re-sent");
    }
}

#[tokio::test]
async fn a_key_whose_import_belongs_to_no_one_or_someone_else_is_a_conflict_showing_nothing() {
    let api = api();
    api.queue.down.store(true, Ordering::SeqCst);
    call(&api, fixture("post_imports.json")).await;
    api.queue.down.store(false, Ordering::SeqCst);
    let id = api.store.all()[0].import_id;
    for owner in [
        None,
        Some(Principal::from_stored(
            "arn:aws:iam::123456789012:user/someone-else",
        )),
    ] {
        api.store
            .records
            .lock()
            .unwrap()
            .get_mut(&id)
            .unwrap()
            .owner = owner.clone();
        let (status, _, problem) = call(&api, fixture("post_imports.json")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{owner:?}");
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_TYPE_PREFIX}idempotency-key-reused"),
            "{owner:?}"
        );
        assert!(problem.get("importId").is_none(), "{owner:?}: {problem}");
        assert!(api.queue.jobs().is_empty(), "{owner:?}");
    }
}

#[tokio::test]
async fn a_queue_failure_without_a_key_leaves_the_import_failed_not_queued() {
    let api = api();
    api.queue.down.store(true, Ordering::SeqCst);
    let mut event = fixture("post_imports.json");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    let (status, _, _) = call(&api, event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let records = api.store.all();
    assert_eq!(records[0].status, ImportStatus::Failed);
    assert_eq!(
        records[0].error.as_deref(),
        Some("the job could not be queued; submit the import again")
    );
}

#[tokio::test]
async fn a_table_failure_answers_503_and_queues_nothing() {
    let api = api();
    api.store.down.store(true, Ordering::SeqCst);
    let (status, _, _) = call(&api, fixture("post_imports.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.queue.jobs().is_empty());
}

#[tokio::test]
async fn get_returns_the_import_with_its_status_and_timestamps() {
    let api = api();
    let (_, _, created) = call(&api, fixture("post_imports.json")).await;
    let id = created["importId"].as_str().unwrap();
    let mut event = fixture("get_import.json");
    event["rawPath"] = json!(format!("/imports/{id}"));
    event["requestContext"]["http"]["path"] = json!(format!("/imports/{id}"));

    let (status, _, body) = call(&api, event).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["importId"], id);
    assert_eq!(body["status"], "QUEUED");
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        body.get("rowsWritten").is_none(),
        "no counts before processing"
    );
}

#[tokio::test]
async fn get_by_another_session_of_the_creating_role_answers_the_import() {
    let api = api();
    let (_, _, created) = call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_1),
    )
    .await;
    let id = created["importId"].as_str().unwrap();
    let (status, _, body) = call(&api, as_caller(get(id), ROLE_SESSION_2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["importId"], id);
}

#[tokio::test]
async fn get_by_another_role_is_the_same_404_as_an_unknown_id() {
    let nothing_created = api();
    let api = api();
    let (_, _, created) = call(
        &api,
        as_caller(fixture("post_imports.json"), ROLE_SESSION_1),
    )
    .await;
    let id = created["importId"].as_str().unwrap();

    let (status, response, theirs) = call(&api, as_caller(get(id), OTHER_ROLE)).await;
    let (unknown_status, unknown_response, unknown) =
        call(&nothing_created, as_caller(get(id), OTHER_ROLE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_status, StatusCode::NOT_FOUND);
    assert_eq!(theirs, unknown, "the same body as for an id nobody created");
    assert_eq!(response.headers(), unknown_response.headers());
}

#[tokio::test]
async fn get_of_a_record_without_an_owner_is_404_to_everyone() {
    let api = api();
    let (_, _, created) = call(&api, fixture("post_imports.json")).await;
    let id = created["importId"].as_str().unwrap();
    api.store
        .records
        .lock()
        .unwrap()
        .values_mut()
        .for_each(|record| record.owner = None);
    let (status, _, _) = call(&api, get(id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_of_an_unknown_import_is_404_and_of_a_malformed_id_400() {
    let api = api();
    let (status, _, problem) = call(&api, fixture("get_import.json")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}import-not-found")
    );

    let mut event = fixture("get_import.json");
    event["rawPath"] = json!("/imports/not-a-uuid");
    event["requestContext"]["http"]["path"] = json!("/imports/not-a-uuid");
    let (status, _, problem) = call(&api, event).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["field"], "id");
}

#[tokio::test]
async fn a_malformed_body_is_a_problem_naming_the_field_and_queues_nothing() {
    let api = api();
    let (status, response, problem) = call(&api, post(r#"{"objectKey": 42}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}invalid-field-type")
    );
    assert_eq!(problem["field"], "objectKey");
    assert_eq!(problem["status"], 422);
    assert!(api.queue.jobs().is_empty());
    assert!(api.store.all().is_empty());
}

#[tokio::test]
async fn an_object_key_with_an_invisible_format_character_is_an_unsafe_object_key() {
    for key in [
        "uploads/orders\u{200B}.csv",
        "uploads/\u{202E}vsc.exe",
        "uploads/\u{FEFF}orders.csv",
        "uploads/orders\u{E0001}.csv",
    ] {
        let api = api();
        let body = json!({ "objectKey": key }).to_string();
        let (status, _, problem) = call(&api, post(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key:?}");
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_TYPE_PREFIX}unsafe-object-key"),
            "{key:?}"
        );
        assert_eq!(problem["field"], "objectKey", "{key:?}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("invisible format characters")),
            "{key:?}: {problem}"
        );
        assert!(api.queue.jobs().is_empty(), "{key:?}");
        assert!(api.store.all().is_empty(), "{key:?}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let api = api();
    let mut event = fixture("post_imports.json");
    event["requestContext"]["http"]["method"] = json!("DELETE");
    let (status, response, problem) = call(&api, event).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), Some("POST"));
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}method-not-allowed")
    );
}

/// `POST /uploads` with `body`.
fn post_upload(body: &str) -> Value {
    let mut event = post(body);
    event["rawPath"] = json!("/uploads");
    event["requestContext"]["http"]["path"] = json!("/uploads");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    event
}

#[tokio::test]
async fn an_upload_url_is_issued_for_a_fresh_key_in_the_callers_own_folder() {
    let api = api();
    let event = as_caller(post_upload(r#"{"format":"ndjson"}"#), ROLE_SESSION_1);
    let (status, response, body) = call(&api, event.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let key = body["objectKey"].as_str().unwrap();
    let folder = own_key(&event, "");
    assert!(
        key.starts_with(&folder) && key.ends_with(".ndjson"),
        "{key}"
    );
    assert_eq!(body["method"], "PUT");
    let url = body["uploadUrl"].as_str().unwrap();
    assert!(url.contains(&format!("/{key}?")), "{url}");
    assert!(url.contains("X-Amz-Expires=900") && url.contains("X-Amz-Signature="));

    // Another session of the role uploads into the same folder, under another name.
    let (_, _, again) = call(
        &api,
        as_caller(post_upload(r#"{"format":"ndjson"}"#), ROLE_SESSION_2),
    )
    .await;
    let second = again["objectKey"].as_str().unwrap();
    assert!(second.starts_with(&folder) && second != key);
    // Another role gets another folder.
    let (_, _, theirs) = call(
        &api,
        as_caller(post_upload(r#"{"format":"csv"}"#), OTHER_ROLE),
    )
    .await;
    assert!(!theirs["objectKey"].as_str().unwrap().starts_with(&folder));
    assert!(api.store.all().is_empty() && api.queue.jobs().is_empty());
}

#[tokio::test]
async fn an_upload_request_names_its_format() {
    let api = api();
    for (body, status, field) in [
        ("{}", StatusCode::UNPROCESSABLE_ENTITY, "format"),
        (
            r#"{"format":"xlsx"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "format",
        ),
        (
            r#"{"format":"csv","name":"a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
    ] {
        let (got, _, problem) = call(&api, post_upload(body)).await;
        assert_eq!(
            (got, problem["field"].as_str()),
            (status, Some(field)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_import_of_a_key_outside_the_callers_folder_is_refused_and_nothing_recorded() {
    let api = api();
    // The reporter names the importer's upload.
    let importers = own_key(&as_caller(post("{}"), ROLE_SESSION_1), "orders.csv");
    let body = json!({ "objectKey": importers }).to_string();
    let (status, _, problem) = call(&api, as_caller(post(&body), OTHER_ROLE)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}foreign-object-key")
    );
    assert_eq!(problem["field"], "objectKey");
    // Directly under the prefix, or in a folder that only starts like the caller's.
    for key in [
        "uploads/orders.csv".to_owned(),
        own_key(&as_caller(post("{}"), OTHER_ROLE), "")
            .trim_end_matches('/')
            .to_owned()
            + "x/a.csv",
    ] {
        let body = json!({ "objectKey": key }).to_string();
        let (status, _, _) = call(&api, as_caller(post(&body), OTHER_ROLE)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key}");
    }
    assert!(api.store.all().is_empty() && api.queue.jobs().is_empty());
}
