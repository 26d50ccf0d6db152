//! The outcome table of [`Idempotent`], with an in-memory guard, a scripted worker and a
//! recording job queue: every decision of the guard and every result of the worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use serde::{Deserialize, Serialize};

use super::*;
use crate::BoxError;
use crate::idempotency::{GuardSettings, IdempotencyKey, InMemoryStore};

/// A job whose `script` says what the worker does: `ok`, `duplicate`, `continue`, `wait`
/// (continues in 30 s), `retry`, `permanent`, `late` (fails after the invocation's finishing
/// time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestJob {
    id: String,
    script: String,
    #[serde(default)]
    part: u32,
}

impl Job for TestJob {
    const SCHEMA_VERSION: u32 = 1;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(format!("{}#{}", self.id, self.part)).unwrap()
    }
}

/// Does what each job's script says, and counts its runs.
#[derive(Default)]
struct Scripted {
    runs: AtomicU32,
    took_over: Mutex<Vec<bool>>,
}

impl Worker for Scripted {
    type Job = TestJob;

    async fn run(&self, job: &TestJob, run: &Run<'_>) -> Result<Done<TestJob>, RecordError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.took_over.lock().unwrap().push(run.took_over);
        match job.script.as_str() {
            "ok" => Ok(Done::processed()),
            "duplicate" => Ok(Done::duplicate()),
            "continue" => Ok(Done::processed().then(TestJob {
                part: job.part + 1,
                script: "ok".into(),
                ..job.clone()
            })),
            "wait" => Ok(Done::processed().then_after(
                TestJob {
                    part: job.part + 1,
                    script: "ok".into(),
                    ..job.clone()
                },
                Duration::from_secs(30),
            )),
            "retry" => Err(RecordError::retryable("the downstream is throttling")),
            "permanent" => Err(RecordError::permanent("bad_input", "the input is bad")),
            "late" => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Err(RecordError::retryable("ran out of time recording the work"))
            }
            other => panic!("unknown script {other}"),
        }
    }
}

/// Records what is sent; fails every send while `down`.
#[derive(Default)]
struct Recorded {
    sent: Mutex<Vec<(TestJob, Duration, Option<String>)>>,
    down: bool,
}

impl JobQueue<TestJob> for Recorded {
    async fn send_after(
        &self,
        job: &TestJob,
        delay: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<(), BoxError> {
        if self.down {
            return Err("the queue is down".into());
        }
        self.sent.lock().unwrap().push((
            job.clone(),
            delay,
            trace.map(|t| t.traceparent().to_owned()),
        ));
        Ok(())
    }
}

const SETTINGS: GuardSettings = GuardSettings {
    retention: Duration::from_secs(3600),
    lease_margin: Duration::from_secs(10),
    max_lease: Duration::from_secs(900),
};

type Handler = Idempotent<Scripted, Arc<InMemoryStore>, Recorded>;

fn handler(store: &Arc<InMemoryStore>, queue: Recorded) -> Handler {
    handler_with(store, queue, SETTINGS)
}

fn handler_with(store: &Arc<InMemoryStore>, queue: Recorded, settings: GuardSettings) -> Handler {
    Idempotent::new(
        Scripted::default(),
        IdempotencyGuard::new(Arc::clone(store), settings),
        queue,
    )
}

fn message(body: Option<&str>) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some("m-1".into());
    message.body = body.map(str::to_owned);
    message
}

fn job(id: &str, script: &str) -> SqsMessage {
    message(Some(&format!(r#"{{"id":"{id}","script":"{script}"}}"#)))
}

fn invocation() -> Invocation {
    Invocation::new(
        SystemTime::now() + Duration::from_secs(60),
        Duration::from_secs(3),
    )
}

fn runs(handler: &Handler) -> u32 {
    handler.worker().runs.load(Ordering::SeqCst)
}

fn permanent_code(result: &RecordResult) -> Option<&'static str> {
    match result {
        Err(RecordError::Permanent { code, .. }) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn a_body_that_is_not_the_job_is_parked_as_malformed_without_running_the_worker() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    for body in [
        None,
        Some("not json"),
        Some(r#"{"id":"a"}"#),
        Some(r#"{"id":"a","script":"ok","extra":1}"#),
    ] {
        let result = handler.handle(&message(body), &invocation()).await;
        assert_eq!(
            permanent_code(&result),
            Some(JobFailure::MalformedJob.as_str()),
            "{body:?}"
        );
    }
    assert_eq!(runs(&handler), 0);
}

#[tokio::test]
async fn a_job_done_once_is_a_duplicate_on_every_later_delivery() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let first = handler.handle(&job("a", "ok"), &invocation()).await;
    let second = handler.handle(&job("a", "ok"), &invocation()).await;
    assert_eq!(first.unwrap(), Ack::Processed);
    assert_eq!(second.unwrap(), Ack::Duplicate);
    assert_eq!(runs(&handler), 1, "the worker ran once");
}

#[tokio::test]
async fn the_same_job_with_other_spacing_and_key_order_is_the_same_job() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    handler
        .handle(&job("a", "ok"), &invocation())
        .await
        .unwrap();
    let reordered = message(Some(r#"{ "script" : "ok", "id" : "a" }"#));
    let again = handler.handle(&reordered, &invocation()).await;
    assert_eq!(again.unwrap(), Ack::Duplicate);
}

#[tokio::test]
async fn a_worker_that_finds_its_work_done_acknowledges_a_duplicate_and_completes() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let first = handler.handle(&job("a", "duplicate"), &invocation()).await;
    assert_eq!(first.unwrap(), Ack::Duplicate);
    let second = handler.handle(&job("a", "duplicate"), &invocation()).await;
    assert_eq!(second.unwrap(), Ack::Duplicate);
    assert_eq!(runs(&handler), 1, "the claim was completed");
}

#[tokio::test]
async fn a_retryable_failure_releases_the_claim_so_the_next_delivery_runs_at_once() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    for _ in 0..2 {
        let result = handler.handle(&job("a", "retry"), &invocation()).await;
        assert!(matches!(
            result,
            Err(RecordError::Retryable {
                retry_after: None,
                ..
            })
        ));
    }
    assert_eq!(runs(&handler), 2, "released, so not in progress");
}

#[tokio::test]
async fn a_permanent_failure_is_parked_with_the_workers_class_and_releases_the_claim() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let result = handler.handle(&job("a", "permanent"), &invocation()).await;
    assert_eq!(permanent_code(&result), Some("bad_input"));
    // A redrive after the input is fixed runs the worker again.
    let fixed = handler.handle(&job("a", "permanent"), &invocation()).await;
    assert_eq!(permanent_code(&fixed), Some("bad_input"));
    assert_eq!(runs(&handler), 2);
}

#[tokio::test]
async fn a_job_in_progress_elsewhere_is_retried_after_the_holders_lease() {
    let store = Arc::new(InMemoryStore::default());
    let holder = IdempotencyGuard::new(Arc::clone(&store), SETTINGS);
    let lease_end = SystemTime::now() + Duration::from_secs(120);
    let held = TestJob {
        id: "a".into(),
        script: "ok".into(),
        part: 0,
    };
    let decision = holder
        .claim(
            &held.idempotency_key(),
            held.to_body().as_bytes(),
            Some(lease_end - SETTINGS.lease_margin),
        )
        .await
        .unwrap();
    assert!(matches!(decision, Decision::Proceed(_)));

    let handler = handler(&store, Recorded::default());
    let (result, events) =
        crate::metrics::counting(handler.handle(&job("a", "ok"), &invocation())).await;
    let Err(RecordError::Retryable {
        retry_after: Some(after),
        ..
    }) = result
    else {
        panic!("expected a retry after the lease, got {result:?}");
    };
    assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
    assert_eq!(runs(&handler), 0);
    assert_eq!(events.in_progress, 1, "counted as an in-progress retry");
}

#[tokio::test]
async fn another_job_under_a_used_key_is_parked_as_a_payload_mismatch() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    handler
        .handle(&job("a", "ok"), &invocation())
        .await
        .unwrap();
    let other = handler.handle(&job("a", "duplicate"), &invocation()).await;
    assert_eq!(
        permanent_code(&other),
        Some(JobFailure::PayloadMismatch.as_str())
    );
    assert_eq!(runs(&handler), 1);
}

#[tokio::test]
async fn a_continuation_is_sent_with_the_records_trace_context_before_the_claim_completes() {
    use tracing::Instrument as _;
    crate::trace::tests::traced();
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let mut message = job("a", "continue");
    let mut producer = SqsMessageAttribute::default();
    producer.string_value = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    producer.data_type = Some("String".into());
    message.message_attributes = HashMap::from([(crate::trace::TRACEPARENT.to_owned(), producer)]);
    // The batch processor runs each record in its own span.
    let record = tracing::info_span!("record");
    let record_context = TraceContext::of_span(&record).expect("the record span has a context");
    let (result, events) =
        crate::metrics::counting(handler.handle(&message, &invocation()).instrument(record)).await;
    assert_eq!(result.unwrap(), Ack::Processed);
    assert_eq!(
        (events.continuations, events.stalls),
        (1, 0),
        "a continuation at once is no stall"
    );
    let sent = handler.continuations.sent.lock().unwrap().clone();
    let (next, delay, trace) = sent.first().expect("the continuation was sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (next.part, *delay, trace.as_deref()),
        (1, Duration::ZERO, Some(record_context.traceparent())),
        "the record's span, not the message's producer, is the continuation's context"
    );
    // The first part is completed; the continuation has its own key.
    assert_eq!(
        handler.handle(&message, &invocation()).await.unwrap(),
        Ack::Duplicate
    );
    let continued = message_of(next);
    assert_eq!(
        handler.handle(&continued, &invocation()).await.unwrap(),
        Ack::Processed
    );
}

#[tokio::test]
async fn a_held_back_continuation_is_sent_with_its_delay_and_the_job_acknowledged() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let message = job("a", "wait");
    let (ack, events) = crate::metrics::counting(handler.handle(&message, &invocation())).await;
    assert_eq!(ack.unwrap(), Ack::Processed);
    let sent = handler.continuations.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let (next, delay, _) = &sent[0];
    assert_eq!((next.part, *delay), (1, Duration::from_secs(30)));
    assert_eq!(
        (events.continuations, events.stalls),
        (1, 1),
        "a held-back continuation is a stall"
    );
    assert_eq!(
        handler.handle(&message, &invocation()).await.unwrap(),
        Ack::Duplicate
    );
}

#[tokio::test]
async fn a_continuation_that_cannot_be_sent_keeps_the_claim_so_no_copy_redoes_the_work() {
    let store = Arc::new(InMemoryStore::default());
    let down = || Recorded {
        down: true,
        ..Recorded::default()
    };
    let handler = handler(&store, down());
    let result = handler.handle(&job("a", "continue"), &invocation()).await;
    assert!(
        matches!(
            result,
            Err(RecordError::Retryable {
                retry_after: Some(after),
                ..
            }) if after > Duration::from_secs(60)
        ),
        "retried when the lease ends: {result:?}"
    );
    let again = handler.handle(&job("a", "continue"), &invocation()).await;
    assert!(matches!(
        again,
        Err(RecordError::Retryable {
            retry_after: Some(_),
            ..
        })
    ));
    assert_eq!(
        runs(&handler),
        1,
        "the work succeeded: its claim is never released"
    );
}

#[tokio::test]
async fn the_delivery_after_a_kept_claims_lease_runs_as_a_takeover() {
    let store = Arc::new(InMemoryStore::default());
    // Leases end at once, as if the first delivery's lease had run out.
    let expiring = GuardSettings {
        lease_margin: Duration::ZERO,
        max_lease: Duration::ZERO,
        ..SETTINGS
    };
    let handler = handler_with(
        &store,
        Recorded {
            down: true,
            ..Recorded::default()
        },
        expiring,
    );
    let first = handler.handle(&job("a", "continue"), &invocation()).await;
    assert!(first.is_err());
    let _ = handler.handle(&job("a", "continue"), &invocation()).await;
    assert_eq!(*handler.worker().took_over.lock().unwrap(), [false, true]);
}

fn message_of(job: &TestJob) -> SqsMessage {
    message(Some(&job.to_body()))
}

#[tokio::test(start_paused = true)]
async fn a_worker_failing_after_the_finishing_time_keeps_its_claim_until_the_lease_ends() {
    let store = Arc::new(InMemoryStore::default());
    let handler = handler(&store, Recorded::default());
    let late = handler.handle(&job("a", "late"), &invocation()).await;
    assert!(matches!(late, Err(RecordError::Retryable { .. })));
    // Its work may be recorded: another copy waits for the lease instead of redoing it.
    let copy = handler.handle(&job("a", "late"), &invocation()).await;
    assert!(matches!(
        copy,
        Err(RecordError::Retryable {
            retry_after: Some(_),
            ..
        })
    ));
    assert_eq!(runs(&handler), 1);
}
