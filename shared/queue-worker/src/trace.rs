//! Trace context across the queue: one job can be followed from the request that created it to
//! every record that ran it.
//!
//! The context is W3C Trace Context (`traceparent`, `tracestate`), read and written by
//! OpenTelemetry's [`TraceContextPropagator`] over SQS message attributes and HTTP headers. The
//! spans are `tracing` spans; the [`layer`] gives each an OpenTelemetry span context (trace and
//! span id), so the same spans that carry the log fields also carry the trace.
//!
//! | where | span | its trace |
//! |---|---|---|
//! | the producer, per request (`http::trace_requests`) | `request`, kind server | child of the caller's `traceparent`, else of API Gateway's `X-Amzn-Trace-Id` (when it names a parent), else a new trace |
//! | the job message | attributes [`TRACEPARENT`] and [`TRACESTATE`] | the span that sent it ([`TraceContext::current`]) |
//! | the worker, per record ([`crate::batch`]) | `process <queue>`, kind consumer | a **link** to the message's context: a batch mixes jobs of many traces, so no one of them is the record's parent |
//! | a continuation or a next-step job | its `traceparent` | the record's span |
//!
//! Inside a request's or a record's span every log line carries `trace_id` and `span_id` (fields
//! of that span), so the logs of one job can be found by its trace id, and the record's span
//! names the sender's trace in its link.
//!
//! Spans are exported only when [`TraceSettings`] say so (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER=otlp`): then over OTLP/HTTP with
//! JSON bodies, batched on a thread of the exporter's own and flushed at the end of each
//! invocation ([`flush`]), since Lambda freezes the environment between invocations. Off (the
//! default), the [`layer`]'s tracer provider has no exporter and no processor: nothing is built
//! for export, no thread is started, and the cost is the ids and the span data kept while a span
//! is open.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::OnceLock;

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The message attribute (and HTTP header) carrying the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The message attribute (and HTTP header) carrying the W3C `tracestate`, sent when not empty.
pub const TRACESTATE: &str = "tracestate";

/// The name the library's spans are reported under (the instrumentation scope).
const SCOPE: &str = "queue-worker";

/// A valid W3C trace context, as it travels: the `traceparent` and `tracestate` values. Built
/// only by parsing ([`parse`](Self::parse)) or from a span, so an invalid one never reaches a
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current span, to send with a job: inside a record's span, the record's.
    /// `None` outside any span, or without the [`layer`] installed.
    pub fn current() -> Option<Self> {
        Self::of_span(&tracing::Span::current())
    }

    /// The context of `span` (`None` without the [`layer`]).
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let mut fields = Fields::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
        let traceparent = fields.0.remove(TRACEPARENT)?;
        Some(Self {
            traceparent,
            tracestate: fields.0.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }

    /// Parses a `traceparent` (and its `tracestate`); `None` when it is not a valid W3C trace
    /// context (a bad version, an all-zero id, a wrong length).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        // The propagator takes ids of fewer digits; the format has exactly these.
        let widths = traceparent.split('-').map(str::len).take(4);
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if !widths.eq([2, 32, 16, 2]) || !traceparent.chars().all(|c| c == '-' || hex(c)) {
            return None;
        }
        let get = |name: &str| match name {
            TRACEPARENT => Some(traceparent),
            TRACESTATE => tracestate,
            _ => None,
        };
        Self::extract(&Lookup::new(get))
    }

    /// The context an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;
    /// Parent=53995c3f42cd8ad8;Sampled=1`, as API Gateway and load balancers send it) names as
    /// the parent: its root is the trace id (the 8 hex digits of time and the 24 random ones),
    /// its `Parent` the span id. `None` without a `Parent`: a root alone names no span to be a
    /// child of.
    pub fn from_xray(header: &str) -> Option<Self> {
        let (mut root, mut parent, mut sampled) = (None, None, "0");
        for part in header.split(';') {
            match part.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value),
                Some(("Sampled", "1")) => sampled = "1",
                _ => {}
            }
        }
        let mut root = root?.split('-');
        let (Some("1"), Some(time), Some(random), None) =
            (root.next(), root.next(), root.next(), root.next())
        else {
            return None;
        };
        let traceparent = format!("00-{time}{random}-{}-0{sampled}", parent?);
        Self::parse(&traceparent.to_ascii_lowercase(), None)
    }

    /// The context a queue message carries in its [`TRACEPARENT`] and [`TRACESTATE`]
    /// attributes, if it carries a valid one.
    pub fn from_message(message: &SqsMessage) -> Option<Self> {
        let attribute = |name: &str| {
            message
                .message_attributes
                .get(name)
                .and_then(|attribute: &SqsMessageAttribute| attribute.string_value.as_deref())
        };
        Self::parse(attribute(TRACEPARENT)?, attribute(TRACESTATE))
    }

    /// Reads a context from `carrier` with the propagator, and writes it back in its canonical
    /// form.
    fn extract(carrier: &dyn Extractor) -> Option<Self> {
        let context = TraceContextPropagator::new().extract(carrier);
        let span = context.span();
        let span = span.span_context();
        if !span.is_valid() {
            return None;
        }
        let mut fields = Fields::default();
        TraceContextPropagator::new().inject_context(&context, &mut fields);
        Some(Self {
            traceparent: fields.0.remove(TRACEPARENT)?,
            tracestate: fields.0.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` value, if not empty.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The remote span this context names.
    pub fn span_context(&self) -> SpanContext {
        self.context().span().span_context().clone()
    }

    /// The trace this context belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.span_context().trace_id()
    }

    /// This context as the parent of a new span (`span.set_parent(context.context())`).
    pub fn context(&self) -> opentelemetry::Context {
        let get = |name: &str| match name {
            TRACEPARENT => Some(self.traceparent.as_str()),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        };
        TraceContextPropagator::new().extract(&Lookup::new(get))
    }
}

/// Where spans go, read from the environment: nowhere (the default), or to an OTLP/HTTP
/// endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSettings {
    /// The URL spans are posted to (`.../v1/traces`), `None` to export nothing:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `/v1/traces`, else with `OTEL_TRACES_EXPORTER=otlp` the collector's default
    /// (`http://localhost:4318/v1/traces`, the port of the ADOT Lambda layer's collector).
    /// `OTEL_TRACES_EXPORTER=none` (or any other exporter) turns export off. Plain `http`
    /// only: the exporter links no TLS of its own, so send to a collector beside the function.
    pub otlp_endpoint: Option<String>,
}

impl TraceSettings {
    /// Reads the settings.
    pub fn from_env(env: &crate::Env) -> Self {
        let exporter = env.get("OTEL_TRACES_EXPORTER");
        let traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT");
        let configured = traces
            .map(str::to_owned)
            .or_else(|| base.map(|base| format!("{}/v1/traces", base.trim_end_matches('/'))));
        let otlp_endpoint = match exporter {
            Some("otlp") => {
                Some(configured.unwrap_or_else(|| "http://localhost:4318/v1/traces".to_owned()))
            }
            Some(_) => None,
            None => configured,
        };
        Self { otlp_endpoint }
    }
}

/// The tracer provider that exports, when one does: [`flush`] flushes it.
static EXPORTING: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The layer that gives `tracing` spans their OpenTelemetry context. [`crate::telemetry::init`]
/// installs it; install it in your own subscriber if you build one (once: it is the process's
/// exporter). Without an endpoint in `settings` its tracer provider has no exporter and no
/// processor: it makes ids and keeps nothing. With one, it needs a Tokio runtime (call it
/// inside `main`); an exporter that cannot be built is reported on stderr and export is off.
pub fn layer<S>(settings: &TraceSettings) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let exporting =
        settings
            .otlp_endpoint
            .as_deref()
            .and_then(|endpoint| match exporting_provider(endpoint) {
                Ok(provider) => Some(EXPORTING.get_or_init(|| provider).clone()),
                Err(error) => {
                    eprintln!("trace export is off: {error}");
                    None
                }
            });
    layer_with(exporting.unwrap_or_else(|| SdkTracerProvider::builder().build()))
}

/// Sends the spans that ended so far, when spans are exported; returns at once otherwise. Call
/// it at the end of each invocation, before Lambda may freeze the environment
/// ([`crate::lambda::handle_batch`] and `http::trace_requests` do).
pub async fn flush() {
    let Some(provider) = EXPORTING.get().cloned() else {
        return;
    };
    // The flush waits for the exporter's thread, whose requests run on this runtime: wait off
    // the runtime's workers.
    match tokio::task::spawn_blocking(move || provider.force_flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not export the invocation's spans"),
        Err(error) => tracing::warn!(%error, "could not export the invocation's spans"),
    }
}

/// A provider that batches spans to `endpoint` as OTLP/HTTP JSON.
fn exporting_provider(endpoint: &str) -> Result<SdkTracerProvider, crate::BoxError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
    let runtime = tokio::runtime::Handle::try_current()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .with_http_client(OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                std::time::Duration::from_secs(2),
                None,
            ),
            runtime,
        })
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder().build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// The HTTP client of the exporter: hyper (the SDK's own HTTP stack), its requests run on the
/// function's Tokio runtime, since the exporter's batching thread has none.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// The layer on `provider`'s tracer.
pub(crate) fn layer_with<S>(provider: SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
}

/// Starts a record's span: links it to the context the message carries, sets the messaging
/// attributes of OpenTelemetry's conventions, and records the span's own `trace_id` and
/// `span_id` fields (declared empty on `span`) for the log lines inside it.
pub(crate) fn start_record(span: &tracing::Span, message: &SqsMessage, message_id: &str) {
    if let Some(producer) = TraceContext::from_message(message) {
        span.add_link(producer.span_context());
    }
    span.set_attribute("messaging.system", "aws_sqs");
    span.set_attribute("messaging.operation", "process");
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.message.id", message_id.to_owned());
    if let Some(queue) = queue_name(message) {
        span.set_attribute("messaging.destination.name", queue.to_owned());
    }
    record_ids(span);
}

/// The span name of a record's processing: `process <queue>` (OpenTelemetry's messaging
/// conventions), or `process` when the message names no queue.
pub(crate) fn process_span_name(message: &SqsMessage) -> String {
    match queue_name(message) {
        Some(queue) => format!("process {queue}"),
        None => "process".to_owned(),
    }
}

/// The queue a message comes from: the last part of its source ARN.
fn queue_name(message: &SqsMessage) -> Option<&str> {
    message
        .event_source_arn
        .as_deref()
        .and_then(|arn| arn.rsplit(':').next())
        .filter(|name| !name.is_empty())
}

/// Records `span`'s trace and span ids in its `trace_id` and `span_id` fields (declared empty),
/// so that every log line inside it carries them. Starts the OpenTelemetry span: set its parent
/// and links first.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// A carrier to read from: a lookup by field name, of values that live for `'a`.
struct Lookup<'a, F>(F, PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Lookup<'a, F> {
    fn new(get: F) -> Self {
        Self(get, PhantomData)
    }
}

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// A carrier to write to.
#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
pub(crate) mod tests;
