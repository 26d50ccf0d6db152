//! The producer over real HTTP, backed by a real DynamoDB table and SQS queue on the emulator.
//!
//! In front of the router, [`iam_authorizer`] stands in for API Gateway's IAM authorizer: a
//! request names its caller's ARN in a test-only header, and the layer turns it into the
//! request's [`Principal`]. A request without the header is anonymous, as on a local run.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::BTreeMap;

use harness::{RequestCounter, TestQueue, create_bucket, s3_client, sdk_config, serve};
use import_producer::{Api, PROBLEM_TYPE_PREFIX, Uploads, router};
use import_tests::create_imports_table;
use imports::{DynamoDbImports, ImportId, ImportStatus, ImportStore, Principal};
use queue_worker::job::SqsJobQueue;
use queue_worker::trace::TraceContext;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MAX_BODY_BYTES: usize = 4096;

/// The test-only header that names the caller's ARN to [`iam_authorizer`].
const CALLER_ARN: &str = "x-test-caller-arn";
/// Two sessions of one role (a credential refresh, another replica), and another role.
const ROLE_SESSION_1: &str = "arn:aws:sts::123456789012:assumed-role/importer/replica-1";
const ROLE_SESSION_2: &str = "arn:aws:sts::123456789012:assumed-role/importer/replica-2";
const OTHER_ROLE: &str = "arn:aws:sts::123456789012:assumed-role/reporter/replica-1";

/// What API Gateway's IAM authorizer does for the deployed API: the signed caller becomes the
/// request's principal, which the router reads from the request's extensions.
async fn iam_authorizer(mut request: axum::extract::Request) -> axum::extract::Request {
    let arn = request
        .headers()
        .get(CALLER_ARN)
        .map(|arn| arn.to_str().expect("a caller ARN is text").to_owned());
    if let Some(arn) = arn {
        let principal = Principal::from_arn(&arn).expect("a test caller's ARN is an ARN");
        request.extensions_mut().insert(principal);
    }
    request
}

struct Fixture {
    base: String,
    http: reqwest::Client,
    s3: aws_sdk_s3::Client,
    bucket: String,
    sqs: aws_sdk_sqs::Client,
    queue: TestQueue,
    store: DynamoDbImports,
}

async fn fixture() -> Fixture {
    fixture_counting(&RequestCounter::default()).await
}

/// A fixture whose producer's DynamoDB requests are counted by `counter`.
async fn fixture_counting(counter: &RequestCounter) -> Fixture {
    let config = sdk_config().await;
    let dynamodb = counter.dynamodb_client(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let table = create_imports_table(&dynamodb, "imports").await;
    let queue = TestQueue::create(&sqs, "jobs", &[]).await;
    let store = DynamoDbImports::new(dynamodb.clone(), &table);
    let s3 = s3_client(&config);
    let bucket = create_bucket(&s3, "uploads").await;
    let api = Api {
        store: DynamoDbImports::new(dynamodb, &table),
        queue: SqsJobQueue::new(sqs.clone(), &queue.url),
        uploads: Uploads::new(s3.clone(), &bucket),
        upload_prefix: "uploads/".into(),
        max_body_bytes: MAX_BODY_BYTES,
    };
    Fixture {
        base: serve(router(Arc::new(api)).layer(axum::middleware::map_request(iam_authorizer)))
            .await,
        http: reqwest::Client::new(),
        s3,
        bucket,
        sqs,
        queue,
        store,
    }
}

/// The principal of the IAM caller `caller`, or of an anonymous one.
fn principal(caller: Option<&str>) -> Principal {
    caller.map_or_else(Principal::anonymous, |arn| {
        Principal::from_arn(arn).expect("a test caller's ARN is an ARN")
    })
}

/// `uploads/{folder}/name`: an object in the upload folder of `caller`.
fn own_key(caller: Option<&str>, name: &str) -> String {
    format!("uploads/{}/{name}", principal(caller).upload_folder())
}

impl Fixture {
    async fn post(
        &self,
        key: Option<&str>,
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.post_as(None, key, body).await
    }

    /// `POST /imports` by the IAM caller `caller`, or anonymously. A `{folder}` in the body is
    /// the caller's own upload folder.
    async fn post_as(
        &self,
        caller: Option<&str>,
        key: Option<&str>,
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}/imports", self.base))
            .header("content-type", "application/json")
            .header(
                "x-amzn-trace-id",
                "Root=1-6748b3c0-0123456789abcdef01234567",
            )
            .body(body.replace("{folder}", &principal(caller).upload_folder()));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(caller) = caller {
            request = request.header(CALLER_ARN, caller);
        }
        let response = request.send().await.expect("the server answers");
        let (status, headers) = (response.status(), response.headers().clone());
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// `GET /imports/{id}` by the IAM caller `caller`.
    async fn get_as(&self, caller: &str, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/imports/{id}", self.base))
            .header(CALLER_ARN, caller)
            .send()
            .await
            .expect("the server answers");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn an_accepted_import_is_in_the_table_and_exactly_one_job_is_on_the_queue() {
    let f = fixture().await;
    let (status, headers, body) = f
        .post(
            Some("orders-1"),
            r#"{"objectKey":"uploads/{folder}/orders.csv"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = ImportId::parse(body["importId"].as_str().unwrap()).unwrap();
    assert_eq!(headers["location"], format!("/imports/{id}").as_str());

    let record = f
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the import is recorded");
    assert_eq!(record.status, ImportStatus::Queued);
    assert_eq!(record.object_key.as_str(), own_key(None, "orders.csv"));
    assert!(record.job_sent);

    let event = f
        .queue
        .receive_event(&f.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(event.records.len(), 1, "exactly one job");
    let job = &event.records[0];
    assert_eq!(
        serde_json::from_str::<Value>(job.body.as_deref().unwrap()).unwrap(),
        json!({
            "schemaVersion": 1,
            "importId": id.to_string(),
            "objectKey": own_key(None, "orders.csv"),
            "format": "csv"
        })
    );
    let attribute = |name: &str| job.message_attributes[name].string_value.clone().unwrap();
    assert_eq!(attribute("job_id"), id.to_string());
    assert_eq!(attribute("schema_version"), "1");

    let status_url = format!("{}/imports/{id}", f.base);
    let view: Value = f
        .http
        .get(status_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "QUEUED");
}

#[tokio::test]
async fn the_job_message_carries_the_callers_trace_as_its_traceparent() {
    // The trace layer `telemetry::init` installs in Lambda, for the whole test binary.
    crate::trace::collected_spans();
    let f = fixture().await;
    let caller = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        None,
    )
    .unwrap();
    let response = f
        .http
        .post(format!("{}/imports", f.base))
        .header("content-type", "application/json")
        .header("traceparent", caller.traceparent())
        .body(format!(
            r#"{{"objectKey":"{}"}}"#,
            own_key(None, "traced.csv")
        ))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let event = f
        .queue
        .receive_event(&f.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(event.records.len(), 1);
    let sent = TraceContext::from_message(&event.records[0])
        .expect("the job message has a valid traceparent attribute");
    assert_eq!(sent.trace_id(), caller.trace_id(), "{sent:?}");
    assert_ne!(
        sent.span_context().span_id(),
        caller.span_context().span_id(),
        "the job's parent is the producer's request span, a child of the caller's"
    );
    assert!(
        !event.records[0]
            .message_attributes
            .contains_key("trace_context"),
        "the X-Ray header is no longer forwarded as is"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_key_adds_nothing() {
    let f = fixture().await;
    let body = r#"{"objectKey":"uploads/{folder}/orders.ndjson"}"#;
    let (first_status, _, first) = f.post(Some("orders-2"), body).await;
    let (status, headers, again) = f.post(Some("orders-2"), body).await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["importId"], first["importId"]);
    assert_eq!(f.queue.depth(&f.sqs).await, 1);
}

#[tokio::test]
async fn two_sessions_of_one_role_with_one_key_make_one_import_and_one_job() {
    let f = fixture().await;
    let body = r#"{"objectKey":"uploads/{folder}/orders.csv"}"#;
    let (first_status, _, first) = f
        .post_as(Some(ROLE_SESSION_1), Some("orders-role"), body)
        .await;
    let (status, headers, again) = f
        .post_as(Some(ROLE_SESSION_2), Some("orders-role"), body)
        .await;
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["importId"], first["importId"]);
    assert_eq!(f.queue.depth(&f.sqs).await, 1, "one job");

    let id = ImportId::parse(first["importId"].as_str().unwrap()).unwrap();
    let record = f
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the import is recorded");
    assert_eq!(
        record.owner,
        Some(Principal::from_stored(
            "arn:aws:iam::123456789012:role/importer"
        )),
        "the owner is stored as the role, not the session"
    );
}

#[tokio::test]
async fn another_roles_get_is_the_same_404_as_an_unknown_import() {
    let f = fixture().await;
    let (_, _, created) = f
        .post_as(
            Some(ROLE_SESSION_1),
            Some("orders-owner"),
            r#"{"objectKey":"uploads/{folder}/orders.csv"}"#,
        )
        .await;
    let id = created["importId"].as_str().unwrap();

    let (status, view) = f.get_as(ROLE_SESSION_2, id).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another session of the role: {view}"
    );
    assert_eq!(view["importId"], id);

    let (status, theirs) = f.get_as(OTHER_ROLE, id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let unknown_id = ImportId::generate().to_string();
    let (_, unknown) = f.get_as(OTHER_ROLE, &unknown_id).await;
    let mut expected = unknown.clone();
    expected["detail"] = json!(unknown["detail"].as_str().unwrap().replace(&unknown_id, id));
    assert_eq!(
        theirs, expected,
        "the same body as for an import nobody created"
    );
}

#[tokio::test]
async fn a_failing_queue_gives_503_and_the_retry_after_it_is_restored_succeeds() {
    let f = fixture().await;
    let name = f.queue.url.rsplit('/').next().unwrap().to_owned();
    f.sqs
        .delete_queue()
        .queue_url(&f.queue.url)
        .send()
        .await
        .unwrap();

    let body = r#"{"objectKey":"uploads/{folder}/orders.csv"}"#;
    let (status, headers, problem) = f.post(Some("orders-3"), body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}dependency-unavailable")
    );

    let restored = f
        .sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap();
    assert_eq!(restored.queue_url.as_deref(), Some(f.queue.url.as_str()));

    let (status, _, accepted) = f.post(Some("orders-3"), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let event = f
        .queue
        .receive_event(&f.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(event.records.len(), 1);
    let id = ImportId::parse(accepted["importId"].as_str().unwrap()).unwrap();
    assert!(f.store.get(id).await.unwrap().unwrap().job_sent);
}

#[tokio::test]
async fn an_import_costs_two_table_writes_and_a_replay_one_read_free_write() {
    let counter = RequestCounter::default();
    let f = fixture_counting(&counter).await;
    let body = r#"{"objectKey":"uploads/{folder}/budget.csv"}"#;
    counter.reset();
    f.post(Some("budget"), body).await;
    let writes = BTreeMap::from([("PutItem".to_owned(), 1), ("UpdateItem".to_owned(), 1)]);
    assert_eq!(counter.snapshot(), writes);

    counter.reset();
    f.post(Some("budget"), body).await;
    assert_eq!(
        counter.snapshot(),
        BTreeMap::from([("PutItem".to_owned(), 1)])
    );
}

/// One bad request: what is sent, and the exact status, problem type and field expected.
struct Bad {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    key: Option<String>,
    body: String,
    status: u16,
    problem: &'static str,
    field: Option<&'static str>,
}

fn post(
    name: &'static str,
    body: impl Into<String>,
    status: u16,
    problem: &'static str,
    field: Option<&'static str>,
) -> Bad {
    Bad {
        name,
        method: Method::POST,
        path: "/imports".into(),
        content_type: Some("application/json"),
        key: None,
        body: body.into(),
        status,
        problem,
        field,
    }
}

fn object_key(name: &'static str, key: &str) -> Bad {
    post(
        name,
        json!({ "objectKey": key }).to_string(),
        422,
        "unsafe-object-key",
        Some("objectKey"),
    )
}

fn bad_requests() -> Vec<Bad> {
    let known_id = "0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d";
    let mut cases = vec![
        post("unterminated JSON", "{", 400, "invalid-json", None),
        post(
            "not JSON at all",
            "objectKey=uploads/a.csv",
            400,
            "invalid-json",
            None,
        ),
        post("empty body", "", 400, "invalid-json", None),
        post(
            "trailing garbage",
            r#"{"objectKey":"uploads/a.csv"} x"#,
            400,
            "invalid-json",
            None,
        ),
        post("body is an array", "[]", 422, "invalid-body", None),
        post(
            "body is a string",
            r#""uploads/a.csv""#,
            422,
            "invalid-body",
            None,
        ),
        post("body is null", "null", 422, "invalid-body", None),
        post(
            "empty object",
            "{}",
            422,
            "missing-field",
            Some("objectKey"),
        ),
        post(
            "only a format",
            r#"{"format":"csv"}"#,
            422,
            "missing-field",
            Some("objectKey"),
        ),
        post(
            "objectKey is a number",
            r#"{"objectKey":42}"#,
            422,
            "invalid-field-type",
            Some("objectKey"),
        ),
        post(
            "objectKey is null",
            r#"{"objectKey":null}"#,
            422,
            "invalid-field-type",
            Some("objectKey"),
        ),
        post(
            "objectKey is an array",
            r#"{"objectKey":["uploads/a.csv"]}"#,
            422,
            "invalid-field-type",
            Some("objectKey"),
        ),
        post(
            "format is a number",
            r#"{"objectKey":"uploads/a.csv","format":1}"#,
            422,
            "invalid-field-type",
            Some("format"),
        ),
        post(
            "format is unknown",
            r#"{"objectKey":"uploads/a.csv","format":"xlsx"}"#,
            422,
            "invalid-field-value",
            Some("format"),
        ),
        post(
            "unknown field",
            r#"{"objectKey":"uploads/a.csv","priority":1}"#,
            422,
            "unknown-field",
            Some("priority"),
        ),
        post(
            "snake_case field name",
            r#"{"object_key":"uploads/a.csv"}"#,
            422,
            "unknown-field",
            Some("object_key"),
        ),
        post(
            "no format and no known extension",
            r#"{"objectKey":"uploads/a.txt"}"#,
            422,
            "missing-field",
            Some("format"),
        ),
        object_key("empty object key", ""),
        object_key(
            "parent segment inside the prefix",
            "uploads/../secrets/a.csv",
        ),
        object_key("parent segment first", "../uploads/a.csv"),
        object_key("current-directory segment", "uploads/./a.csv"),
        object_key("NUL character", "uploads/a\u{0}.csv"),
        object_key("newline", "uploads/a\n.csv"),
        object_key("zero-width space", "uploads/a\u{200B}.csv"),
        object_key("right-to-left override", "uploads/\u{202E}vsc.exe"),
        object_key("byte order mark", "uploads/\u{FEFF}a.csv"),
        object_key("language tag", "uploads/a\u{E0001}.csv"),
        object_key(
            "over 1024 bytes",
            &format!("uploads/{}.csv", "a".repeat(1100)),
        ),
        object_key("outside the prefix", "private/a.csv"),
        object_key("absolute path", "/uploads/a.csv"),
        object_key("empty segment", "uploads//a.csv"),
        object_key("the prefix alone", "uploads/"),
        post(
            "body over the limit",
            json!({ "objectKey": format!("uploads/{}.csv", "a".repeat(MAX_BODY_BYTES)) })
                .to_string(),
            413,
            "payload-too-large",
            None,
        ),
    ];
    for (name, content_type) in [
        ("text/plain body", Some("text/plain")),
        ("no content type", None),
        ("XML content type", Some("application/xml")),
        ("look-alike content type", Some("application/jsonx")),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
        ),
    ] {
        let mut case = post(
            name,
            r#"{"objectKey":"uploads/a.csv"}"#,
            415,
            "unsupported-media-type",
            Some("Content-Type"),
        );
        case.content_type = content_type;
        cases.push(case);
    }
    for (name, key) in [
        ("empty idempotency key", String::new()),
        ("oversize idempotency key", "k".repeat(300)),
    ] {
        let mut case = post(
            name,
            r#"{"objectKey":"uploads/a.csv"}"#,
            400,
            "invalid-idempotency-key",
            Some("Idempotency-Key"),
        );
        case.key = Some(key);
        cases.push(case);
    }
    for (name, method, path, status, problem, field) in [
        (
            "PUT on the collection",
            Method::PUT,
            "/imports".to_owned(),
            405,
            "method-not-allowed",
            None,
        ),
        (
            "GET on the collection",
            Method::GET,
            "/imports".to_owned(),
            405,
            "method-not-allowed",
            None,
        ),
        (
            "DELETE an import",
            Method::DELETE,
            format!("/imports/{known_id}"),
            405,
            "method-not-allowed",
            None,
        ),
        (
            "POST to an import",
            Method::POST,
            format!("/imports/{known_id}"),
            405,
            "method-not-allowed",
            None,
        ),
        (
            "malformed import id",
            Method::GET,
            "/imports/not-a-uuid".to_owned(),
            400,
            "invalid-import-id",
            Some("id"),
        ),
        (
            "unknown import",
            Method::GET,
            format!("/imports/{known_id}"),
            404,
            "import-not-found",
            None,
        ),
        (
            "unknown route",
            Method::GET,
            "/exports".to_owned(),
            404,
            "not-found",
            None,
        ),
    ] {
        let mut case = post(name, "", status, problem, field);
        case.method = method;
        case.path = path;
        cases.push(case);
    }
    cases
}

#[tokio::test]
async fn every_bad_request_gets_its_exact_status_and_problem_and_queues_nothing() {
    let f = fixture().await;
    let cases = bad_requests();
    assert!(
        cases.len() >= 30,
        "the suite covers at least 30 bad requests"
    );
    for case in &cases {
        let mut request = f
            .http
            .request(case.method.clone(), format!("{}{}", f.base, case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = &case.key {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .body(case.body.clone())
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").cloned();
        let problem: Value = response.json().await.unwrap_or(Value::Null);

        assert_eq!(status, case.status, "{}: {problem}", case.name);
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            case.name
        );
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_TYPE_PREFIX}{}", case.problem),
            "{}",
            case.name
        );
        assert_eq!(problem["status"], case.status, "{}", case.name);
        assert_eq!(problem["field"].as_str(), case.field, "{}", case.name);
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{}",
            case.name
        );
    }
    assert_eq!(
        f.queue.depth(&f.sqs).await,
        0,
        "no bad request queued a job"
    );
}

#[tokio::test]
async fn a_client_uploads_through_the_url_the_api_signs_and_imports_that_key() {
    let f = fixture().await;
    let upload = |caller: &'static str| {
        f.http
            .post(format!("{}/uploads", f.base))
            .header("content-type", "application/json")
            .header(CALLER_ARN, caller)
            .body(r#"{"format":"csv"}"#)
            .send()
    };
    let response = upload(ROLE_SESSION_1).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    let key = issued["objectKey"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&own_key(Some(ROLE_SESSION_1), "")), "{key}");

    // The signed URL is a real S3 PUT: the file lands under exactly that key.
    let put = f
        .http
        .put(issued["uploadUrl"].as_str().unwrap())
        .body("sku,name,quantity,price\nA-1,One,1,1.00\n")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let stored =
        f.s3.get_object()
            .bucket(&f.bucket)
            .key(&key)
            .send()
            .await
            .expect("the upload is in the bucket");
    let bytes = stored.body.collect().await.unwrap().into_bytes();
    assert!(bytes.starts_with(b"sku,name"));

    // Its uploader imports it (another session of the role too); another role may not.
    let body = json!({ "objectKey": key }).to_string();
    let (status, _, _) = f.post_as(Some(ROLE_SESSION_2), Some("up-1"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, problem) = f.post_as(Some(OTHER_ROLE), Some("up-1"), &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_TYPE_PREFIX}foreign-object-key")
    );
    assert_eq!(f.queue.depth(&f.sqs).await, 1, "one job, the uploader's");
}
