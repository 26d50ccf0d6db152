use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const MS: u64 = 1_000_000;
const T1: &str = "11111111111111111111111111111111";
const T2: &str = "22222222222222222222222222222222";
const T3: &str = "33333333333333333333333333333333";

/// A span of `trace` named `name`, from `start` ms for `ms` ms, with `attributes`.
fn span(trace: &str, id: &str, name: &str, (start, ms): (u64, u64), attributes: Value) -> Span {
    Span {
        trace_id: trace.to_owned(),
        span_id: id.to_owned(),
        parent_span_id: None,
        name: name.to_owned(),
        kind: if name.starts_with("process") {
            "consumer"
        } else {
            "internal"
        }
        .to_owned(),
        start_unix_nano: 1_000_000 * MS + start * MS,
        end_unix_nano: 1_000_000 * MS + (start + ms) * MS,
        service: None,
        attributes: attributes.as_object().cloned().unwrap_or_default(),
        links: Vec::new(),
        events: Vec::new(),
        error: None,
    }
}

fn child_of(mut span: Span, parent: &str) -> Span {
    span.parent_span_id = Some(parent.to_owned());
    span
}

fn linked_to(mut span: Span, trace: &str, id: &str) -> Span {
    span.links.push(SpanRef {
        trace_id: trace.to_owned(),
        span_id: id.to_owned(),
    });
    span
}

/// A job `job-1` sent by a request, run in two chunks, the second delivered twice; and a job
/// `job-2` of another request, run in the same invocation as `job-1`'s first chunk.
fn two_jobs() -> Vec<Span> {
    let mut first_chunk = child_of(
        linked_to(
            span(
                T2,
                "c0",
                "process jobs",
                (40, 300),
                json!({"job_id": "job-1", "receive_count": 1, "outcome": "processed",
                       "messaging.system": "aws_sqs", "trace_id": T2, "span_id": "c0"}),
            ),
            T1,
            "a1",
        ),
        "i1",
    );
    first_chunk.events.push(SpanEvent {
        name: "checkpointed, continuing".to_owned(),
        time_unix_nano: first_chunk.end_unix_nano - MS,
        attributes: json!({"level": "INFO", "target": "worker", "rows": 5000})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    });
    vec![
        // Collected in no particular order.
        linked_to(
            span(
                T3,
                "c1b",
                "process jobs",
                (700, 20),
                json!({"job_id": "job-1", "receive_count": 2, "outcome": "duplicate"}),
            ),
            T2,
            "c0",
        ),
        first_chunk,
        span(
            T1,
            "a1",
            "POST /jobs",
            (0, 25),
            json!({"http.route": "/jobs"}),
        ),
        child_of(
            span(T1, "a2", "accept", (5, 15), json!({"request_id": "job-1"})),
            "a1",
        ),
        span(T2, "i1", "Lambda runtime invoke", (38, 400), json!({})),
        child_of(
            linked_to(
                span(
                    T2,
                    "d0",
                    "process jobs",
                    (41, 100),
                    json!({"job_id": "job-2", "outcome": "processed"}),
                ),
                "99999999999999999999999999999999",
                "b1",
            ),
            "i1",
        ),
        linked_to(
            span(
                T3,
                "c1",
                "process jobs",
                (400, 250),
                json!({"job_id": "job-1", "receive_count": 1, "outcome": "processed"}),
            ),
            T2,
            "c0",
        ),
    ]
}

fn printed(tree: &JobTree) -> Vec<(&str, &str)> {
    tree.spans()
        .into_iter()
        .map(|span| (span.span_id.as_str(), span.name.as_str()))
        .collect()
}

#[test]
fn a_jobs_tree_starts_at_its_request_and_follows_links_to_each_record_and_continuation() {
    let tree = JobTree::of(&two_jobs(), "job-1").expect("job-1 has spans");
    assert_eq!(
        printed(&tree),
        [
            ("a1", "POST /jobs"),
            ("a2", "accept"),
            ("c0", "process jobs"),
            ("c1", "process jobs"),
            ("c1b", "process jobs"),
        ]
    );
}

#[test]
fn the_tree_prints_offsets_durations_links_outcomes_and_events() {
    let tree = JobTree::of(&two_jobs(), "job-1").unwrap();
    assert_eq!(
        tree.to_string(),
        "job-1: 5 spans in 3 traces (offsets from the first span's start; ↳ linked: a span that links to the one above)
      +0 ms  POST /jobs  25 ms
      +5 ms    accept  15 ms  request_id=job-1
     +40 ms    ↳ linked: process jobs  300 ms  job_id=job-1  outcome=processed  receive_count=1
    +339 ms      · checkpointed, continuing  rows=5000
    +400 ms      ↳ linked: process jobs  250 ms  job_id=job-1  outcome=processed  receive_count=1
    +700 ms      ↳ linked: process jobs  20 ms  job_id=job-1  outcome=duplicate  receive_count=2
"
    );
}

#[test]
fn another_job_of_the_same_invocation_is_left_out() {
    let tree = JobTree::of(&two_jobs(), "job-1").unwrap();
    assert!(
        tree.spans()
            .iter()
            .all(|span| span.span_id != "d0" && span.span_id != "i1"),
        "{tree}"
    );
    let other = JobTree::of(&two_jobs(), "job-2").unwrap();
    assert_eq!(printed(&other), [("d0", "process jobs")]);
}

#[test]
fn a_root_whose_sender_or_parent_was_not_collected_says_so() {
    let other = JobTree::of(&two_jobs(), "job-2").unwrap();
    assert!(
        other.to_string().contains(
            "(links to span b1 of trace 99999999999999999999999999999999, not collected)"
        ),
        "{other}"
    );
    let orphan = vec![child_of(
        span(T1, "x1", "accept", (0, 1), json!({"request_id": "job-3"})),
        "gone",
    )];
    let tree = JobTree::of(&orphan, "job-3").unwrap();
    assert!(
        tree.to_string()
            .contains("accept  1.0 ms  request_id=job-3  (parent span gone not collected)"),
        "{tree}"
    );
}

#[test]
fn spans_of_two_traces_without_a_collected_link_between_them_are_two_roots_by_start_time() {
    let spans = vec![
        span(
            T2,
            "late",
            "process jobs",
            (90, 5),
            json!({"job_id": "job-4"}),
        ),
        span(
            T1,
            "early",
            "POST /jobs",
            (10, 5),
            json!({"job_id": "job-4"}),
        ),
    ];
    let tree = JobTree::of(&spans, "job-4").unwrap();
    assert_eq!(
        printed(&tree),
        [("early", "POST /jobs"), ("late", "process jobs")]
    );
    assert!(tree.to_string().starts_with("job-4: 2 spans in 2 traces"));
}

#[test]
fn a_record_whose_message_had_no_trace_context_is_a_root_not_its_invocation() {
    let mut spans = two_jobs();
    spans.push(child_of(
        span(
            T2,
            "e0",
            "process jobs",
            (42, 10),
            json!({"job_id": "job-5"}),
        ),
        "i1",
    ));
    let tree = JobTree::of(&spans, "job-5").unwrap();
    assert_eq!(printed(&tree), [("e0", "process jobs")]);
    assert!(!tree.to_string().contains("not collected"), "{tree}");
}

#[test]
fn an_id_no_span_carries_has_no_tree() {
    assert_eq!(JobTree::of(&two_jobs(), "job-9"), None);
}

#[test]
fn an_otlp_json_request_is_read_into_spans() {
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
        "scopeSpans": [{"scope": {"name": "queue-worker"}, "spans": [{
            "traceId": T1, "spanId": "00000000000000a1", "parentSpanId": "",
            "name": "process q", "kind": 5,
            "startTimeUnixNano": "1000", "endTimeUnixNano": "3000",
            "attributes": [
                {"key": "receive_count", "value": {"intValue": "2"}},
                {"key": "job_id", "value": {"stringValue": "job-1"}},
                {"key": "sampled", "value": {"boolValue": true}}
            ],
            "events": [{"timeUnixNano": "2000", "name": "retryable failure",
                        "attributes": [{"key": "level", "value": {"stringValue": "WARN"}}]}],
            "links": [{"traceId": T2, "spanId": "00000000000000b1", "attributes": []}],
            "status": {"code": 2, "message": "boom"}
        }]}]
    }]});
    let spans = spans_of_request(&body).unwrap();
    assert_eq!(
        serde_json::to_value(&spans).unwrap(),
        json!([{
            "trace_id": T1, "span_id": "00000000000000a1", "name": "process q", "kind": "consumer",
            "start_unix_nano": 1000, "end_unix_nano": 3000, "service": "worker",
            "attributes": {"receive_count": 2, "job_id": "job-1", "sampled": true},
            "links": [{"trace_id": T2, "span_id": "00000000000000b1"}],
            "events": [{"name": "retryable failure", "time_unix_nano": 2000,
                        "attributes": {"level": "WARN"}}],
            "error": "boom"
        }])
    );
    assert_eq!(
        spans_of_request(&json!({"spans": []})),
        Err("the body has no resourceSpans".to_owned())
    );
}

/// The library's own exporter, posting to a collector: the spans of a request and of a record
/// that links to it land in the file, and their tree is the job's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_appends_what_the_librarys_exporter_posts_and_the_tree_reads_it() {
    use queue_worker::trace::{TraceContext, TraceSettings};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let dir = std::env::temp_dir().join(format!("collector-{}", uuid::Uuid::now_v7()));
    let file = dir.join("spans.jsonl");
    let collector = Collector::start(&file).await.unwrap();
    let settings = TraceSettings {
        otlp_endpoint: Some(format!("{}/v1/traces", collector.endpoint())),
    };
    let subscriber = tracing_subscriber::registry().with(queue_worker::trace::layer(&settings));
    {
        let _default = tracing::subscriber::set_default(subscriber);
        let request = tracing::info_span!("request", otel.name = "POST /jobs");
        let sent = request.in_scope(|| {
            tracing::info_span!("accept", request_id = "job-7").in_scope(TraceContext::current)
        });
        drop(request);
        let record = tracing::info_span!("record", otel.name = "process jobs", job_id = "job-7");
        record.add_link(sent.unwrap().span_context());
        record.in_scope(|| tracing::info!(rows = 12, "chunk written"));
    }
    queue_worker::trace::flush().await;

    let mut spans = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        spans = text
            .lines()
            .map(|line| serde_json::from_str::<Span>(line).unwrap())
            .collect();
        if spans.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tree = JobTree::of(&spans, "job-7").expect("the spans arrived");
    assert_eq!(
        tree.spans()
            .iter()
            .map(|span| span.name.as_str())
            .collect::<Vec<_>>(),
        ["POST /jobs", "accept", "process jobs"]
    );
    let text = tree.to_string();
    assert!(text.contains("↳ linked: process jobs"), "{text}");
    assert!(text.contains("· chunk written  rows=12"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}
