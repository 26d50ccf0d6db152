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
//! names its producer's trace in its link.
//!
//! Spans are not exported: the [`layer`]'s tracer provider has no exporter, so its cost is the
//! ids and the span data kept while a span is open: no thread, no buffer, no network.

use std::collections::HashMap;
use std::marker::PhantomData;

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

/// The layer that gives `tracing` spans their OpenTelemetry context. [`crate::telemetry::init`]
/// installs it; install it in your own subscriber if you build one. Its tracer provider has no
/// exporter and no processor: it makes ids and keeps nothing.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    layer_with(SdkTracerProvider::builder().build())
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
