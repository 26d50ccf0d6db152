//! A local Lambda Runtime API: what one execution environment's runtime client talks to.
//!
//! A function built on `lambda_runtime` (or any custom runtime) finds the API in
//! `AWS_LAMBDA_RUNTIME_API` and loops: `GET /2018-06-01/runtime/invocation/next` waits for an
//! event; the answer goes to `POST .../invocation/{id}/response`, a failure to
//! `POST .../invocation/{id}/error`, and a failure before the first poll to
//! `POST .../init/error`. This server hands out the invocations its owner queues with
//! [`RuntimeApi::invoke`], one per poll, with the headers Lambda sets (request id, deadline,
//! function ARN, trace id), and tells its owner everything the runtime did as [`Event`]s, with
//! when. A poll with nothing queued waits, as Lambda leaves an idle environment frozen.
//!
//! It serves one execution environment, on `127.0.0.1` only, and stops when dropped. The
//! process host ([`crate::host`]) and the cold-start bench both drive functions through it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The largest response or error body Lambda accepts from a function (6 MB); a larger one is
/// refused with `413`.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The header naming an error's type on `.../error` and `.../init/error`.
const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// One invocation to hand to the runtime.
#[derive(Debug, Clone)]
struct Invocation {
    request_id: String,
    event: Value,
    deadline: SystemTime,
}

/// What the runtime did, in the order it did it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// It asked for its next invocation: init is over (first poll) or the last one ended.
    Polled(Instant),
    /// It answered an invocation.
    Responded {
        /// The invocation.
        request_id: String,
        /// When the answer arrived.
        at: Instant,
        /// The answer: JSON, or the raw text as a JSON string when it is not JSON.
        body: Value,
    },
    /// It reported that an invocation failed. The environment lives on.
    Failed {
        /// The invocation.
        request_id: String,
        /// What it said.
        error: ErrorReport,
    },
    /// It reported that its initialisation failed; it exits next.
    InitFailed(ErrorReport),
}

/// An error a runtime reported: its type and message, as Lambda shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// `errorType` of the body, else the `Lambda-Runtime-Function-Error-Type` header, else
    /// `Unknown`.
    pub error_type: String,
    /// `errorMessage` of the body, else the whole body.
    pub message: String,
}

impl ErrorReport {
    /// Reads an error body (`{"errorType": .., "errorMessage": ..}`) and its type header.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|json| json.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let header = headers
            .get(ERROR_TYPE_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Self {
            error_type: field("errorType")
                .or(header)
                .unwrap_or_else(|| "Unknown".to_owned()),
            message: field("errorMessage")
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        }
    }
}

impl std::fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

struct Shared {
    function_arn: String,
    queued: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    /// Invocations handed out and not answered yet: an answer to any other id is refused.
    open: Mutex<HashSet<String>>,
    events: mpsc::UnboundedSender<Event>,
}

/// A running Runtime API for one execution environment; stops when dropped.
pub struct RuntimeApi {
    address: SocketAddr,
    queue: mpsc::UnboundedSender<Invocation>,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves on a free port of 127.0.0.1 for the function `function_arn` (sent to the runtime
    /// with each invocation).
    pub async fn start(function_arn: impl Into<String>) -> std::io::Result<Self> {
        let (queue, queued) = mpsc::unbounded_channel();
        let (events, received) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: function_arn.into(),
            queued: tokio::sync::Mutex::new(queued),
            open: Mutex::new(HashSet::new()),
            events,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
            .with_state(shared);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the Runtime API stopped");
            }
        });
        Ok(Self {
            address,
            queue,
            events: received,
            task,
        })
    }

    /// `127.0.0.1:PORT`: the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Queues `event`, to be handed to the runtime's next poll with `deadline`. Returns the
    /// invocation's request id.
    pub fn invoke(&self, event: Value, deadline: SystemTime) -> String {
        let request_id = uuid::Uuid::now_v7().to_string();
        // The receiver lives in the server's state, as long as `self`.
        let _ = self.queue.send(Invocation {
            request_id: request_id.clone(),
            event,
            deadline,
        });
        request_id
    }

    /// The runtime's next event; `None` once the server has stopped.
    pub async fn event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `Lambda-Runtime-Trace-Id` of an invocation: an X-Ray root id (time and random part),
/// not sampled.
fn trace_id(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let random = fastrand::u128(..) >> 32;
    format!("Root=1-{seconds:08x}-{random:024x};Sampled=0")
}

/// The headers Lambda sends with an invocation.
fn invocation_headers(invocation: &Invocation, function_arn: &str) -> HeaderMap {
    let deadline_ms = invocation
        .deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            "lambda-runtime-aws-request-id",
            invocation.request_id.clone(),
        ),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            function_arn.to_owned(),
        ),
        ("lambda-runtime-trace-id", trace_id(SystemTime::now())),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

async fn next(State(shared): State<Arc<Shared>>) -> (HeaderMap, String) {
    let _ = shared.events.send(Event::Polled(Instant::now()));
    let invocation = shared.queued.lock().await.recv().await;
    let Some(invocation) = invocation else {
        // The API is shutting down: leave the runtime waiting, as a frozen environment.
        return std::future::pending().await;
    };
    if let Ok(mut open) = shared.open.lock() {
        open.insert(invocation.request_id.clone());
    }
    (
        invocation_headers(&invocation, &shared.function_arn),
        invocation.event.to_string(),
    )
}

/// Whether `id` was handed out and not answered yet; it is not open any more afterwards.
fn close(shared: &Shared, id: &str) -> bool {
    shared.open.lock().is_ok_and(|mut open| open.remove(id))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    if !close(&shared, &id) {
        return StatusCode::BAD_REQUEST;
    }
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let _ = shared.events.send(Event::Responded {
        request_id: id,
        at,
        body,
    });
    StatusCode::ACCEPTED
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !close(&shared, &id) {
        return StatusCode::BAD_REQUEST;
    }
    let error = ErrorReport::parse(&headers, &body);
    let _ = shared.events.send(Event::Failed {
        request_id: id,
        error,
    });
    StatusCode::ACCEPTED
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let error = ErrorReport::parse(&headers, &body);
    let _ = shared.events.send(Event::InitFailed(error));
    StatusCode::ACCEPTED
}

#[cfg(test)]
mod tests;
