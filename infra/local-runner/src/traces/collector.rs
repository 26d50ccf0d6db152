//! The receiver: OTLP/HTTP with JSON bodies (`ExportTraceServiceRequest`) on `POST /v1/traces`,
//! each span appended to a file as one line.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Span, SpanEvent, SpanRef};

/// The largest request accepted: an exporter's batch of 512 spans, each with its events, fits
/// well within it.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A running collector on a free port of `127.0.0.1`; stops when dropped.
pub struct Collector {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Collector {
    /// Serves, appending to `file` (created with its directory if missing).
    pub async fn start(file: impl Into<PathBuf>) -> std::io::Result<Self> {
        let file = file.into();
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let out = OpenOptions::new().create(true).append(true).open(&file)?;
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::new(Mutex::new(out)));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the trace collector stopped");
            }
        });
        Ok(Self { address, task })
    }

    /// The OTLP endpoint to export to (`OTEL_EXPORTER_OTLP_ENDPOINT`): `http://127.0.0.1:PORT`,
    /// which the exporter completes with `/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The variables that make a function export its spans here, for a hosted function's
    /// environment.
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), self.endpoint())]
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One export request: its spans appended to the file in one write, so that the lines of
/// concurrent requests never interleave.
async fn receive(
    State(out): State<Arc<Mutex<File>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let text = |status, message: String| (status, [(header::CONTENT_TYPE, "text/plain")], message);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only OTLP/HTTP JSON bodies (application/json) are accepted".to_owned(),
        );
    }
    let spans = match serde_json::from_slice(&body)
        .map_err(|e| e.to_string())
        .and_then(|body| spans_of_request(&body))
    {
        Ok(spans) => spans,
        Err(error) => return text(StatusCode::BAD_REQUEST, error),
    };
    let mut lines = String::new();
    for span in &spans {
        // A `Span` is strings, numbers and JSON values: it always serialises.
        if let Ok(line) = serde_json::to_string(span) {
            lines.push_str(&line);
            lines.push('\n');
        }
    }
    let written = match out.lock() {
        Ok(mut file) => file.write_all(lines.as_bytes()),
        Err(_) => Err(std::io::Error::other("an earlier write panicked")),
    };
    match written {
        // An empty `ExportTraceServiceResponse`: everything was accepted.
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}".to_owned(),
        ),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// The spans of an OTLP JSON `ExportTraceServiceRequest` (`resourceSpans[].scopeSpans[].spans[]`,
/// ids in hex, times and integers as decimal strings); an error names what is missing.
pub fn spans_of_request(body: &Value) -> Result<Vec<Span>, String> {
    let resources = body["resourceSpans"]
        .as_array()
        .ok_or("the body has no resourceSpans")?;
    let mut spans = Vec::new();
    for resource in resources {
        let service = attributes(&resource["resource"]["attributes"])
            .get("service.name")
            .and_then(Value::as_str)
            // The SDK's name for a process that set none.
            .filter(|name| !name.starts_with("unknown_service"))
            .map(str::to_owned);
        for scope in array(&resource["scopeSpans"]) {
            for span in array(&scope["spans"]) {
                spans.push(read_span(span, service.clone())?);
            }
        }
    }
    Ok(spans)
}

fn read_span(span: &Value, service: Option<String>) -> Result<Span, String> {
    let text = |field: &str| {
        span[field]
            .as_str()
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let required = |field: &str| text(field).ok_or_else(|| format!("a span has no {field}"));
    let status = &span["status"];
    let failed = status["code"].as_u64() == Some(2) || status["code"] == "STATUS_CODE_ERROR";
    Ok(Span {
        trace_id: required("traceId")?,
        span_id: required("spanId")?,
        parent_span_id: text("parentSpanId"),
        name: required("name")?,
        kind: kind(&span["kind"]).to_owned(),
        start_unix_nano: nanos(&span["startTimeUnixNano"]),
        end_unix_nano: nanos(&span["endTimeUnixNano"]),
        service,
        attributes: attributes(&span["attributes"]),
        links: array(&span["links"])
            .iter()
            .filter_map(|link| {
                Some(SpanRef {
                    trace_id: link["traceId"].as_str()?.to_owned(),
                    span_id: link["spanId"].as_str()?.to_owned(),
                })
            })
            .collect(),
        events: array(&span["events"])
            .iter()
            .map(|event| SpanEvent {
                name: event["name"].as_str().unwrap_or_default().to_owned(),
                time_unix_nano: nanos(&event["timeUnixNano"]),
                attributes: attributes(&event["attributes"]),
            })
            .collect(),
        error: failed.then(|| status["message"].as_str().unwrap_or_default().to_owned()),
    })
}

/// A span kind, a number in OTLP JSON (`SPAN_KIND_*` names accepted too).
fn kind(value: &Value) -> &'static str {
    let name = value
        .as_str()
        .and_then(|name| name.strip_prefix("SPAN_KIND_"));
    match (value.as_u64(), name) {
        (Some(2), _) | (_, Some("SERVER")) => "server",
        (Some(3), _) | (_, Some("CLIENT")) => "client",
        (Some(4), _) | (_, Some("PRODUCER")) => "producer",
        (Some(5), _) | (_, Some("CONSUMER")) => "consumer",
        (Some(1), _) | (_, Some("INTERNAL")) => "internal",
        _ => "unspecified",
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A time in nanoseconds: a decimal string in OTLP JSON, a number from some exporters.
fn nanos(value: &Value) -> u64 {
    match value {
        Value::String(text) => text.parse().unwrap_or_default(),
        other => other.as_u64().unwrap_or_default(),
    }
}

/// `[{"key": .., "value": AnyValue}]` as a JSON object of plain values.
fn attributes(list: &Value) -> Map<String, Value> {
    array(list)
        .iter()
        .filter_map(|attribute| {
            let key = attribute["key"].as_str()?;
            Some((key.to_owned(), any_value(&attribute["value"])))
        })
        .collect()
}

/// An OTLP `AnyValue` (`{"stringValue": ..}`, `{"intValue": "3"}`, ...) as a plain JSON value.
fn any_value(value: &Value) -> Value {
    let Some((kind, inner)) = value.as_object().and_then(|object| object.iter().next()) else {
        return Value::Null;
    };
    match kind.as_str() {
        "intValue" => match inner {
            Value::String(text) => text.parse::<i64>().map_or(inner.clone(), Value::from),
            other => other.clone(),
        },
        "arrayValue" => Value::Array(array(&inner["values"]).iter().map(any_value).collect()),
        "kvlistValue" => Value::Object(attributes(&inner["values"])),
        _ => inner.clone(),
    }
}
