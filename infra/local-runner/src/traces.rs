//! One job's trace on a laptop: a collector for the spans the functions export, and the tree of
//! one job's spans read back from it.
//!
//! The functions export their spans as OTLP/HTTP JSON when `OTEL_EXPORTER_OTLP_ENDPOINT` names
//! a collector (`queue_worker::trace`). [`Collector`] is that collector, on `127.0.0.1`: it
//! accepts `POST /v1/traces` and appends each span to a file as one JSON line (a [`Span`]),
//! [`SPANS_FILE`] by default. [`JobTree`] reads the spans back and finds the ones that carry a
//! job's id (any attribute equal to it: a record's `job_id`, a request's own field), climbs from
//! each to where its work began, and lays out what followed.
//!
//! A record's span is not a child of the span that sent its job: it **links** to it, since a
//! batch mixes jobs of many traces. So the tree follows links as well as parents: the children of
//! a span are the spans whose parent it is and the spans that link to it. Climbing, a span's link
//! comes before its parent, and a consumer's span (a record's) never climbs to its parent: that is
//! its invocation's span, shared with the batch's other jobs.
//!
//! Layout: `collector` is the receiver and the OTLP reading; `tree` builds and prints the tree.
//! `local-runner trace ID` (`make trace ID=...`) prints one.

mod collector;
mod tree;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::collector::{Collector, spans_of_request};
pub use self::tree::JobTree;

/// Where the local tools append the spans they collect, relative to the workspace.
pub const SPANS_FILE: &str = "target/traces/spans.jsonl";

/// The spans in `file`, and how many of its lines were not spans (a line cut short by a
/// collector that was stopped mid-write).
pub fn read(file: &Path) -> std::io::Result<(Vec<Span>, usize)> {
    let text = std::fs::read_to_string(file)?;
    let mut unreadable = 0;
    let spans = text
        .lines()
        .filter_map(|line| {
            let span = serde_json::from_str(line).ok();
            unreadable += usize::from(span.is_none());
            span
        })
        .collect();
    Ok((spans, unreadable))
}

/// Starts a collector appending to `file`, unless the environment already says where spans go
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_TRACES_EXPORTER`):
/// then `None`, and they go there (hosted functions inherit those variables).
pub async fn collect_unless_configured(file: &Path) -> std::io::Result<Option<Collector>> {
    let env = queue_worker::Env::from_process();
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    ]
    .into_iter()
    .any(|name| env.get(name).is_some());
    if configured {
        return Ok(None);
    }
    Collector::start(file).await.map(Some)
}

/// Installs the global tracing subscriber as `queue_worker::telemetry` does (`level` unless
/// `RUST_LOG` says otherwise), exporting this process's spans to `collector` when there is one.
pub fn init_telemetry(level: &str, collector: Option<&Collector>) {
    let mut settings =
        queue_worker::telemetry::LogSettings::from_env(&queue_worker::Env::from_process(), level);
    if let Some(collector) = collector {
        settings.trace.otlp_endpoint = Some(format!("{}/v1/traces", collector.endpoint()));
    }
    settings.install();
}

/// One span as the collector keeps it: one line of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The trace, 32 hex digits.
    pub trace_id: String,
    /// The span, 16 hex digits.
    pub span_id: String,
    /// The parent span (of the same trace), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The span's name (`POST /jobs`, `process <queue>`).
    pub name: String,
    /// OpenTelemetry's span kind: `server` (a request), `consumer` (a record), `internal`, ...
    #[serde(default)]
    pub kind: String,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// When it ended.
    pub end_unix_nano: u64,
    /// The `service.name` of the process that exported it, unless it named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its attributes: the fields of the `tracing` span.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// The spans it links to: for a record, the span that sent its message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SpanRef>,
    /// What happened inside it: the log lines of the span, as span events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    /// Whether it ended in error (OpenTelemetry's status), with the status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Span {
    /// How long it took, in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) as f64 / 1e6
    }

    /// This span as a link target names it.
    pub fn reference(&self) -> SpanRef {
        SpanRef {
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
        }
    }
}

/// A span named by its trace and span ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpanRef {
    /// The trace.
    pub trace_id: String,
    /// The span.
    pub span_id: String,
}

/// An event of a span: a log line written inside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// The event's name: the log line's message.
    pub name: String,
    /// When, in nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Its fields (with `level`).
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

#[cfg(test)]
mod tests;
