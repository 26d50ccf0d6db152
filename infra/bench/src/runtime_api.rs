//! A fake Lambda Runtime API on 127.0.0.1 that hands a function the events it was given, one
//! per `GET /invocation/next`, and reports when each poll and each answer arrived. A poll
//! after the last event is left waiting, as Lambda leaves a function between invocations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

/// What the function did, and when.
#[derive(Debug)]
pub enum Report {
    /// It asked for its next event.
    Next(Instant),
    /// It answered an event.
    Response(Instant, Value),
    /// It reported an invocation error or an init error.
    Error(String),
}

struct Shared {
    events: Mutex<mpsc::UnboundedReceiver<Value>>,
    reports: mpsc::UnboundedSender<Report>,
    invocations: AtomicUsize,
}

/// The fake Runtime API; stops when dropped.
pub struct RuntimeApi {
    /// `127.0.0.1:PORT`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    reports: mpsc::UnboundedReceiver<Report>,
    /// Kept so that a poll after the last event waits rather than finds the queue closed.
    _queue: mpsc::UnboundedSender<Value>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts serving `events`, in order.
    pub async fn start(events: Vec<Value>) -> anyhow::Result<Self> {
        let (queue, receiver) = mpsc::unbounded_channel();
        for event in events {
            queue.send(event).expect("the receiver is alive");
        }
        let (reports, reported) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(receiver),
            reports,
            invocations: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self {
            address,
            reports: reported,
            _queue: queue,
            task,
        })
    }

    /// Waits up to `timeout` for the function's next poll.
    pub async fn next_poll(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        match self.report(timeout).await? {
            Report::Next(at) => Ok(at),
            other => bail!("expected a poll for the next event, got {other:?}"),
        }
    }

    /// Waits up to `timeout` for the function's answer to the event it was handed.
    pub async fn response(&mut self, timeout: Duration) -> anyhow::Result<(Instant, Value)> {
        match self.report(timeout).await? {
            Report::Response(at, body) => Ok((at, body)),
            other => bail!("expected a response, got {other:?}"),
        }
    }

    async fn report(&mut self, timeout: Duration) -> anyhow::Result<Report> {
        let report = tokio::time::timeout(timeout, self.reports.recv())
            .await
            .with_context(|| format!("the function did nothing for {timeout:?}"))?
            .context("the Runtime API stopped")?;
        if let Report::Error(text) = report {
            bail!("{text}");
        }
        Ok(report)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> (HeaderMap, String) {
    shared.reports.send(Report::Next(Instant::now())).ok();
    let event = shared.events.lock().await.recv().await;
    let Some(event) = event else {
        // The API is shutting down.
        return std::future::pending().await;
    };
    let n = shared.invocations.fetch_add(1, Ordering::Relaxed);
    let deadline = SystemTime::now() + Duration::from_secs(900);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("a plain ASCII header value"),
        );
    };
    set("lambda-runtime-aws-request-id", format!("bench-{n}"));
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    (headers, event.to_string())
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    shared.reports.send(Report::Response(at, body)).ok();
    StatusCode::ACCEPTED
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let text = format!("invocation {id} failed: {}", String::from_utf8_lossy(&body));
    shared.reports.send(Report::Error(text)).ok();
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let text = format!("init failed: {}", String::from_utf8_lossy(&body));
    shared.reports.send(Report::Error(text)).ok();
    StatusCode::ACCEPTED
}
