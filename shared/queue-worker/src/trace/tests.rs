//! The trace context through a batch: parsing, the record's span and its link, the context a
//! handler sends on, and the log fields. Spans are captured by an exporter of the tests' own.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsEvent;
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;
use crate::BoxError;
use crate::batch::{
    Ack, BatchProcessor, BatchSettings, Invocation, ParkReason, QueueActions, RecordHandler,
    RecordResult,
};

const PRODUCER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Keeps every span that ends.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Captured {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Captured {
    fn named(&self, name: &str) -> Vec<SpanData> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

/// Log lines, as the JSON layer writes them.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn json(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// What the tests' subscriber captured: every span that ended, and every log line.
pub(crate) struct Traced {
    spans: Captured,
    lines: Lines,
}

/// Installs, once for the test binary, the trace layer on a provider that exports to a capture,
/// and JSON logs (as in Lambda) to captured lines. Global, not a per-thread default: tracing
/// caches whether a call site is enabled across threads, so a per-thread default misses spans
/// while other tests run the same call sites without one. Tests tell their spans apart by their
/// queue's name and their lines by message id.
pub(crate) fn traced() -> &'static Traced {
    static TRACED: OnceLock<Traced> = OnceLock::new();
    TRACED.get_or_init(|| {
        let spans = Captured::default();
        let lines = Lines::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(layer_with(provider))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the library's tests");
        Traced { spans, lines }
    })
}

/// Keeps the context it runs in, and logs a line.
#[derive(Default)]
struct Sees(Mutex<Vec<Option<TraceContext>>>);

impl RecordHandler for Sees {
    async fn handle(&self, _: &SqsMessage, _: &Invocation) -> RecordResult {
        tracing::info!("working");
        self.0.lock().unwrap().push(TraceContext::current());
        Ok(Ack::Processed)
    }
}

struct NoQueue;

impl QueueActions for NoQueue {
    async fn change_visibility(&self, _: &SqsMessage, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }
    async fn park(&self, _: &SqsMessage, _: ParkReason<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A message from the queue `queue` (each test its own, to find its spans).
fn message(queue: &str, id: &str, traceparent: Option<&str>) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.into());
    message.body = Some("{}".into());
    message.event_source_arn = Some(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"));
    if let Some(value) = traceparent {
        let mut attribute = SqsMessageAttribute::default();
        attribute.string_value = Some(value.into());
        attribute.data_type = Some("String".into());
        message
            .message_attributes
            .insert(TRACEPARENT.to_owned(), attribute);
    }
    message
}

async fn process(records: Vec<SqsMessage>) -> Vec<Option<TraceContext>> {
    let mut event = SqsEvent::default();
    event.records = records;
    let settings = BatchSettings {
        concurrency: 1.try_into().unwrap(),
        deadline_margin: Duration::from_millis(100),
        backoff: None,
    };
    let processor = BatchProcessor::new(Sees::default(), NoQueue, settings);
    let outcome = processor
        .process(&event, SystemTime::now() + Duration::from_secs(60))
        .await;
    assert!(outcome.result.is_ok());
    processor.handler().0.lock().unwrap().clone()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn a_valid_traceparent_parses_and_an_invalid_one_does_not() {
    let parsed = TraceContext::parse(PRODUCER, Some("vendor=opaque")).unwrap();
    assert_eq!(parsed.traceparent(), PRODUCER);
    assert_eq!(parsed.tracestate(), Some("vendor=opaque"));
    assert_eq!(
        parsed.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    for invalid in [
        "",
        "Root=1-6748b3c0-0123456789abcdef01234567",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert_eq!(TraceContext::parse(invalid, None), None, "{invalid:?}");
    }
}

#[test]
fn an_xray_header_with_a_parent_maps_to_the_same_trace_and_parent() {
    let mapped = TraceContext::from_xray(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    )
    .unwrap();
    assert_eq!(
        mapped.traceparent(),
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    );
    let unsampled =
        TraceContext::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8")
            .unwrap();
    assert!(unsampled.traceparent().ends_with("-00"));
    for unmapped in [
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "Parent=53995c3f42cd8ad8",
        "",
    ] {
        assert_eq!(TraceContext::from_xray(unmapped), None, "{unmapped:?}");
    }
}

#[tokio::test]
async fn a_records_span_is_a_messaging_process_span_linked_to_its_producer() {
    let traced = traced();
    let seen = process(vec![message("linked", "m-1", Some(PRODUCER))]).await;

    let spans = traced.spans.named("process linked");
    assert_eq!(spans.len(), 1, "one span per record");
    let span = &spans[0];
    assert_eq!(span.span_kind, SpanKind::Consumer);
    let links = &span.links.links;
    assert_eq!(links.len(), 1);
    let producer = TraceContext::parse(PRODUCER, None).unwrap();
    assert_eq!(links[0].span_context.trace_id(), producer.trace_id());
    assert_eq!(
        links[0].span_context.span_id(),
        producer.span_context().span_id()
    );
    // A link, not a parent: the batch's other records belong to other traces.
    assert_ne!(span.span_context.trace_id(), producer.trace_id());
    for (key, value) in [
        ("messaging.system", "aws_sqs"),
        ("messaging.operation", "process"),
        ("messaging.message.id", "m-1"),
        ("messaging.destination.name", "linked"),
        // What became of it, recorded as the span ends.
        ("outcome", "processed"),
    ] {
        assert_eq!(attribute(span, key).as_deref(), Some(value), "{key}");
    }

    // What a handler sends on (a continuation, a next-step job) is the record's own span.
    let sent_on = seen[0].clone().expect("a context inside the record");
    assert_eq!(sent_on.trace_id(), span.span_context.trace_id());
    assert_eq!(
        sent_on.span_context().span_id(),
        span.span_context.span_id()
    );
}

#[tokio::test]
async fn a_record_without_a_traceparent_has_a_span_and_no_link() {
    let traced = traced();
    process(vec![
        message("unlinked", "m-1", None),
        message("unlinked", "m-2", Some("not a traceparent")),
    ])
    .await;

    let spans = traced.spans.named("process unlinked");
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.links.links.is_empty()));
}

#[tokio::test]
async fn every_log_line_inside_a_record_carries_its_trace_and_span_id() {
    let traced = traced();
    process(vec![message("logged", "m-logged", Some(PRODUCER))]).await;

    let span = traced.spans.named("process logged").remove(0);
    let working: Vec<_> = traced
        .lines
        .json()
        .into_iter()
        .filter(|line| line["message"] == "working" && line["spans"][0]["message_id"] == "m-logged")
        .collect();
    assert_eq!(working.len(), 1);
    let record = &working[0]["spans"][0];
    assert_eq!(record["trace_id"], span.span_context.trace_id().to_string());
    assert_eq!(record["span_id"], span.span_context.span_id().to_string());
}

#[test]
fn export_is_off_unless_an_endpoint_or_the_otlp_exporter_is_named() {
    let settings = |pairs: &[(&str, &str)]| {
        TraceSettings::from_env(&crate::Env::from_pairs(pairs.iter().copied())).otlp_endpoint
    };
    assert_eq!(settings(&[]), None);
    assert_eq!(
        settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]).as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(
        settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:9000/spans"
            ),
        ])
        .as_deref(),
        Some("http://collector:9000/spans")
    );
    assert_eq!(
        settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).as_deref(),
        Some("http://localhost:4318/v1/traces")
    );
    assert_eq!(
        settings(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ]),
        None
    );
}

/// Answers one HTTP request with `200` and returns its path and body.
async fn receive_one(listener: tokio::net::TcpListener) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                let path = head.split(' ').nth(1).unwrap().to_owned();
                let body = body.to_owned();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
                return (path, body);
            }
        }
        assert!(
            read > 0,
            "the connection closed before the request was whole"
        );
    }
}

#[tokio::test]
async fn an_exporting_provider_posts_ended_spans_as_otlp_json_when_flushed() {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let received = tokio::spawn(receive_one(listener));

    let provider = exporting_provider(&endpoint).unwrap();
    let mut span = provider.tracer("test").start("process exported");
    let trace_id = span.span_context().trace_id();
    span.end();
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .unwrap();

    let (path, body) = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .expect("the span was posted")
        .unwrap();
    assert_eq!(path, "/v1/traces");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["name"], "process exported");
    assert_eq!(span["traceId"], trace_id.to_string());
}
