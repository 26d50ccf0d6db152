use std::time::Duration;

use serde_json::json;

use super::*;

const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:test";
/// Generous: only a broken server takes this long.
const PATIENCE: Duration = Duration::from_secs(30);

fn url(api: &RuntimeApi, path: &str) -> String {
    format!("http://{}/2018-06-01/runtime/{path}", api.address())
}

async fn next_event(api: &mut RuntimeApi) -> Event {
    tokio::time::timeout(PATIENCE, api.event())
        .await
        .expect("an event in time")
        .expect("the server is running")
}

/// Polls for the next invocation as a runtime client does: its request id and event.
async fn poll(api: &RuntimeApi) -> (reqwest::Response, String) {
    let response = reqwest::get(url(api, "invocation/next")).await.unwrap();
    let id = response.headers()["lambda-runtime-aws-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (response, id)
}

#[tokio::test]
async fn a_poll_gets_the_queued_event_with_the_headers_lambda_sets() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    let deadline = UNIX_EPOCH + Duration::from_millis(1_900_000_000_123);
    let queued = api.invoke(json!({ "Records": [] }), deadline);

    let (response, id) = poll(&api).await;

    assert_eq!(id, queued);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("lambda-runtime-deadline-ms"), "1900000000123");
    assert_eq!(header("lambda-runtime-invoked-function-arn"), ARN);
    assert!(header("lambda-runtime-trace-id").starts_with("Root=1-"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "Records": [] })
    );
    assert!(matches!(next_event(&mut api).await, Event::Polled(_)));
}

#[tokio::test]
async fn a_poll_with_nothing_queued_waits_for_the_next_invocation() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    let client = reqwest::Client::new();
    let waiting = tokio::spawn(client.get(url(&api, "invocation/next")).send());
    assert!(matches!(next_event(&mut api).await, Event::Polled(_)));
    assert!(!waiting.is_finished());

    let queued = api.invoke(json!(1), SystemTime::now());
    let response = waiting.await.unwrap().unwrap();

    assert_eq!(response.headers()["lambda-runtime-aws-request-id"], &queued);
}

#[tokio::test]
async fn an_answer_is_reported_once_and_an_unknown_or_repeated_id_is_refused() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    api.invoke(json!({}), SystemTime::now());
    let (_, id) = poll(&api).await;
    let client = reqwest::Client::new();
    let answer = |id: &str| {
        client
            .post(url(&api, &format!("invocation/{id}/response")))
            .body(r#"{"batchItemFailures":[]}"#)
            .send()
    };

    assert_eq!(answer(&id).await.unwrap().status(), 202);
    assert_eq!(answer(&id).await.unwrap().status(), 400);
    assert_eq!(answer("not-handed-out").await.unwrap().status(), 400);

    assert!(matches!(next_event(&mut api).await, Event::Polled(_)));
    match next_event(&mut api).await {
        Event::Responded {
            request_id, body, ..
        } => {
            assert_eq!(request_id, id);
            assert_eq!(body, json!({ "batchItemFailures": [] }));
        }
        other => panic!("expected the answer, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_reported_as_text() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    api.invoke(json!({}), SystemTime::now());
    let (_, id) = poll(&api).await;
    reqwest::Client::new()
        .post(url(&api, &format!("invocation/{id}/response")))
        .body("ok")
        .send()
        .await
        .unwrap();

    let _poll = next_event(&mut api).await;

    assert!(matches!(
        next_event(&mut api).await,
        Event::Responded { body, .. } if body == json!("ok")
    ));
}

#[tokio::test]
async fn an_invocation_error_is_reported_with_its_type_and_message() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    api.invoke(json!({}), SystemTime::now());
    let (_, id) = poll(&api).await;
    let status = reqwest::Client::new()
        .post(url(&api, &format!("invocation/{id}/error")))
        .header(ERROR_TYPE_HEADER, "Unhandled")
        .body(r#"{"errorType":"&alloc::boxed::Box<dyn Error>","errorMessage":"boom"}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);

    let _poll = next_event(&mut api).await;

    assert_eq!(
        next_event(&mut api).await,
        Event::Failed {
            request_id: id,
            error: ErrorReport {
                error_type: "&alloc::boxed::Box<dyn Error>".into(),
                message: "boom".into(),
            },
        }
    );
}

#[tokio::test]
async fn an_init_error_is_reported() {
    let mut api = RuntimeApi::start(ARN).await.unwrap();
    let status = reqwest::Client::new()
        .post(url(&api, "init/error"))
        .header(ERROR_TYPE_HEADER, "Runtime.ConfigError")
        .body("QUEUE_URL is not set")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);

    assert_eq!(
        next_event(&mut api).await,
        Event::InitFailed(ErrorReport {
            error_type: "Runtime.ConfigError".into(),
            message: "QUEUE_URL is not set".into(),
        })
    );
}

#[tokio::test]
async fn a_response_over_six_megabytes_is_refused() {
    let api = RuntimeApi::start(ARN).await.unwrap();
    api.invoke(json!({}), SystemTime::now());
    let (_, id) = poll(&api).await;

    let status = reqwest::Client::new()
        .post(url(&api, &format!("invocation/{id}/response")))
        .body(vec![b' '; MAX_PAYLOAD_BYTES + 1])
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(status, 413);
}

#[test]
fn an_error_body_without_fields_falls_back_on_the_header_then_unknown() {
    let mut headers = HeaderMap::new();
    assert_eq!(
        ErrorReport::parse(&headers, b"plain text").to_string(),
        "Unknown: plain text"
    );
    headers.insert(ERROR_TYPE_HEADER, HeaderValue::from_static("Runtime.Panic"));
    assert_eq!(
        ErrorReport::parse(&headers, b"plain text").to_string(),
        "Runtime.Panic: plain text"
    );
}
