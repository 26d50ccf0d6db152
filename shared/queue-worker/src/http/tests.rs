//! Problem documents, the request helpers and the answers to accept decisions, as a client sees
//! them.

use axum::body::Body;
use serde_json::{Value, json};

use super::*;

const PROBLEMS: ProblemTypes = ProblemTypes::new("tag:example-api,2026:problem:");

async fn read(response: Response) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

fn request(content_type: Option<&str>, body: &str) -> Request {
    let mut builder = Request::builder().method("POST").uri("/things");
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn a_problem_is_a_problem_json_document_naming_its_field() {
    let (status, headers, body) = read(PROBLEMS.missing_field("name").into_response()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(
        body,
        json!({
            "type": "tag:example-api,2026:problem:missing-field",
            "title": "Required field is missing",
            "status": 422,
            "detail": "field name is required",
            "field": "name",
        })
    );
}

#[tokio::test]
async fn an_unavailable_dependency_asks_for_a_retry_and_a_wrong_method_names_the_right_one() {
    let (status, headers, body) =
        read(PROBLEMS.dependency_unavailable("retry").into_response()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert!(body.get("field").is_none());

    let (status, headers, _) = read(
        PROBLEMS
            .method_not_allowed("DELETE", "POST")
            .into_response(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");
}

#[tokio::test]
async fn a_json_body_within_the_limit_is_read_and_anything_else_is_refused() {
    let (_, body) = json_body(
        PROBLEMS,
        request(Some("application/json; charset=utf-8"), "{}"),
        2,
    )
    .await
    .unwrap();
    assert_eq!(&body[..], b"{}");

    for (content_type, body, status) in [
        (None, "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Some("text/plain"), "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            Some("application/json"),
            "{ }",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let refused = json_body(PROBLEMS, request(content_type, body), 2)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), status, "{content_type:?} {body:?}");
    }
}

#[test]
fn an_idempotency_key_is_optional_but_must_be_valid() {
    let mut headers = HeaderMap::new();
    assert_eq!(idempotency_key(PROBLEMS, &headers), Ok(None));
    headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("order-42"));
    assert_eq!(
        idempotency_key(PROBLEMS, &headers),
        Ok(Some(IdempotencyKey::parse("order-42").unwrap()))
    );
    headers.insert(
        IDEMPOTENCY_KEY,
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    );
    let refused = idempotency_key(PROBLEMS, &headers).unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_sent_job_answers_202_a_replay_200_and_a_retry_says_it_replays() {
    for (decision, status, replayed) in [
        (Acceptance::Accepted(1), StatusCode::ACCEPTED, None),
        (Acceptance::Resent(1), StatusCode::ACCEPTED, Some("true")),
        (Acceptance::Replayed(1), StatusCode::OK, Some("true")),
    ] {
        let case = format!("{decision:?}");
        let (record, answer) = decision.into_answer().unwrap();
        let response = answer.respond(
            HeaderValue::from_static("/things/1"),
            json!({ "id": record }),
        );
        let (got, headers, body) = read(response).await;
        assert_eq!(got, status, "{case}");
        assert_eq!(headers[header::LOCATION], "/things/1", "{case}");
        assert_eq!(
            headers
                .get(IDEMPOTENT_REPLAYED)
                .map(|v| v.to_str().unwrap()),
            replayed,
            "{case}"
        );
        assert_eq!(body, json!({ "id": 1 }), "{case}");
    }
    assert_eq!(Acceptance::<u8>::KeyReused.into_answer(), None);
}
