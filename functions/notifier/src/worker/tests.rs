//! The notifier's rules, with an in-memory store and a fake partner.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use queue_worker::BoxError;
use queue_worker::batch::{Ack, Invocation, RecordError};
use queue_worker::job::JobQueue;
use queue_worker::protection::{Dependency, DependencySettings};
use queue_worker::trace::{TraceContext, TraceSettings};
use queue_worker::worker::{Done, Run, Worker};

use super::*;
use crate::store::{Created, InMemoryNotifications, Notification};
use crate::{NotificationId, RequestError, Requested, request};

/// A partner that records every call (key, payload) and answers from a script (200 when the
/// script is empty).
#[derive(Default)]
struct FakePartner {
    calls: Mutex<Vec<(String, String)>>,
    answers: Mutex<VecDeque<u16>>,
}

impl FakePartner {
    fn answering(statuses: &[u16]) -> Self {
        Self {
            answers: Mutex::new(statuses.iter().copied().collect()),
            ..Self::default()
        }
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Partner for FakePartner {
    async fn deliver(&self, key: &str, payload: &str) -> Result<u16, PartnerError> {
        self.calls
            .lock()
            .unwrap()
            .push((key.to_owned(), payload.to_owned()));
        match self.answers.lock().unwrap().pop_front().unwrap_or(200) {
            status @ 200..=299 => Ok(status),
            status => Err(PartnerError::Status { status }),
        }
    }
}

/// A store whose first `mark_delivered` fails, as a worker killed between the call and the mark.
struct CrashBeforeMark {
    inner: InMemoryNotifications,
    crashed: Mutex<bool>,
}

impl NotificationStore for CrashBeforeMark {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError> {
        self.inner.create(notification).await
    }

    async fn get(&self, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        self.inner.get(id).await
    }

    async fn mark_delivered(
        &self,
        id: NotificationId,
        status: u16,
        at: SystemTime,
    ) -> Result<Marked, StoreError> {
        if !std::mem::replace(&mut *self.crashed.lock().unwrap(), true) {
            return Err(StoreError::Unavailable("killed before the mark".into()));
        }
        self.inner.mark_delivered(id, status, at).await
    }
}

/// The jobs sent, and the `traceparent` each was sent with.
#[derive(Default)]
struct SentJobs(Mutex<Vec<NotificationJob>>, Mutex<Vec<Option<String>>>);

impl JobQueue<NotificationJob> for SentJobs {
    async fn send_after(
        &self,
        job: &NotificationJob,
        _: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(job.clone());
        self.1
            .lock()
            .unwrap()
            .push(trace.map(|t| t.traceparent().to_owned()));
        Ok(())
    }
}

fn protection() -> Dependency {
    Dependency::new(
        "partner",
        DependencySettings {
            timeout: Duration::from_secs(1),
            max_attempts: 1,
            retry_base: Duration::from_millis(10),
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        },
    )
}

fn notifier<S: NotificationStore>(store: S, partner: FakePartner) -> Notifier<S, FakePartner> {
    Notifier::new(store, partner, protection())
}

async fn pending(store: &impl NotificationStore, payload: &str) -> NotificationJob {
    let id = NotificationId::generate();
    let created = store
        .create(&Notification::pending(id, payload, SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(created, Created::New);
    NotificationJob {
        notification_id: id,
    }
}

async fn run<S: NotificationStore>(
    notifier: &Notifier<S, FakePartner>,
    job: &NotificationJob,
) -> Result<Done<NotificationJob>, RecordError> {
    let invocation = Invocation::new(
        SystemTime::now() + Duration::from_secs(10),
        Duration::from_secs(3),
    );
    let run = Run {
        invocation: &invocation,
        receive_count: 1,
        took_over: false,
    };
    notifier.run(job, &run).await
}

fn permanent(result: &Result<Done<NotificationJob>, RecordError>) -> Option<(&str, &str)> {
    match result {
        Err(RecordError::Permanent { code, reason, .. }) => Some((code, reason)),
        _ => None,
    }
}

async fn status(store: &impl NotificationStore, job: &NotificationJob) -> NotificationStatus {
    store
        .get(job.notification_id)
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test]
async fn a_pending_notification_is_posted_once_with_its_payload_and_key_then_marked_delivered() {
    let notifier = notifier(
        InMemoryNotifications::default(),
        FakePartner::answering(&[202]),
    );
    let job = pending(notifier.notifications(), r#"{"rows":42}"#).await;

    let done = run(&notifier, &job).await.unwrap();

    assert_eq!(done.ack(), Ack::Processed);
    assert_eq!(
        notifier.partner.calls(),
        [(
            job.notification_id.partner_key(),
            r#"{"rows":42}"#.to_owned()
        )]
    );
    let record = notifier
        .notifications()
        .get(job.notification_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, NotificationStatus::Delivered);
    assert_eq!(record.partner_status, Some(202));
}

#[tokio::test]
async fn an_unknown_notification_is_parked_before_any_call() {
    let notifier = notifier(InMemoryNotifications::default(), FakePartner::default());
    let job = NotificationJob {
        notification_id: NotificationId::generate(),
    };

    let result = run(&notifier, &job).await;

    assert_eq!(
        permanent(&result).map(|(code, _)| code),
        Some("unknown_notification")
    );
    assert!(notifier.partner.calls().is_empty());
}

#[tokio::test]
async fn a_delivered_notification_is_a_duplicate_and_not_posted_again() {
    let notifier = notifier(InMemoryNotifications::default(), FakePartner::default());
    let job = pending(notifier.notifications(), "{}").await;
    assert_eq!(run(&notifier, &job).await.unwrap().ack(), Ack::Processed);

    let again = run(&notifier, &job).await.unwrap();

    assert_eq!(again.ack(), Ack::Duplicate);
    assert_eq!(notifier.partner.calls().len(), 1);
}

#[tokio::test]
async fn a_4xx_is_permanent_with_the_status_and_not_the_payload_in_the_reason() {
    let notifier = notifier(
        InMemoryNotifications::default(),
        FakePartner::answering(&[422]),
    );
    let job = pending(notifier.notifications(), r#"{"secret":"s3cr3t"}"#).await;

    let result = run(&notifier, &job).await;

    let (code, reason) = permanent(&result).expect("a permanent failure");
    assert_eq!(code, "partner_rejected");
    assert!(reason.contains("422"), "{reason}");
    assert!(!reason.contains("s3cr3t"), "{reason}");
    assert_eq!(
        status(notifier.notifications(), &job).await,
        NotificationStatus::Pending
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_and_server_errors_are_retryable_and_leave_the_notification_pending() {
    // 429 and 503 are retried in place until the stop time; 500 after the attempts run out.
    for answer in [429, 503, 500] {
        let partner = FakePartner::answering(&[answer; 1000]);
        let notifier = notifier(InMemoryNotifications::default(), partner);
        let job = pending(notifier.notifications(), "{}").await;

        let result = run(&notifier, &job).await;

        assert!(
            matches!(result, Err(RecordError::Retryable { .. })),
            "{answer}: {result:?}"
        );
        assert_eq!(
            status(notifier.notifications(), &job).await,
            NotificationStatus::Pending
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_tries_again_with_the_same_key_and_is_delivered() {
    let notifier = notifier(
        InMemoryNotifications::default(),
        FakePartner::answering(&[429, 429]),
    );
    let job = pending(notifier.notifications(), "{}").await;

    let done = run(&notifier, &job).await.unwrap();

    assert_eq!(done.ack(), Ack::Processed);
    let keys: Vec<String> = notifier
        .partner
        .calls()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![job.notification_id.partner_key(); 3]);
}

#[test]
fn the_partners_key_is_derived_from_the_notification_alone() {
    let id = NotificationId::parse("0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d").unwrap();
    let body = r#"{"notificationId":"0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d"}"#;
    let parsed: NotificationJob = serde_json::from_str(body).unwrap();
    assert_eq!(parsed.notification_id.partner_key(), id.partner_key());
    assert_eq!(
        id.partner_key(),
        "notification-0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d"
    );
    assert_ne!(NotificationId::generate().partner_key(), id.partner_key());
}

#[tokio::test]
async fn a_retry_after_a_crash_between_the_call_and_the_mark_sends_the_same_key() {
    let store = CrashBeforeMark {
        inner: InMemoryNotifications::default(),
        crashed: Mutex::new(false),
    };
    let notifier = notifier(store, FakePartner::default());
    let job = pending(notifier.notifications(), r#"{"n":1}"#).await;

    let first = run(&notifier, &job).await;
    assert!(
        matches!(first, Err(RecordError::Retryable { .. })),
        "{first:?}"
    );
    let retry = run(&notifier, &job).await.unwrap();

    assert_eq!(retry.ack(), Ack::Processed);
    let calls = notifier.partner.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0], calls[1],
        "the same key and payload: the partner collapses them"
    );
    assert_eq!(
        status(notifier.notifications(), &job).await,
        NotificationStatus::Delivered
    );
}

#[tokio::test]
async fn a_request_records_then_queues_and_a_repeat_queues_again_until_delivered() {
    let store = InMemoryNotifications::default();
    let jobs = SentJobs::default();
    let id = NotificationId::generate();

    assert_eq!(
        request(&store, &jobs, id, r#"{"a":1}"#).await.unwrap(),
        Requested::Queued
    );
    assert_eq!(
        request(&store, &jobs, id, r#"{"a":1}"#).await.unwrap(),
        Requested::Queued
    );
    let job = NotificationJob {
        notification_id: id,
    };
    assert_eq!(*jobs.0.lock().unwrap(), [job.clone(), job.clone()]);
    assert_eq!(status(&store, &job).await, NotificationStatus::Pending);

    store
        .mark_delivered(id, 200, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        request(&store, &jobs, id, r#"{"a":1}"#).await.unwrap(),
        Requested::AlreadyDelivered
    );
    assert_eq!(jobs.0.lock().unwrap().len(), 2);
    assert!(matches!(
        request(&store, &jobs, id, r#"{"a":2}"#).await,
        Err(RequestError::Conflict(conflict)) if conflict == id
    ));
}

#[tokio::test]
async fn a_request_inside_a_span_queues_its_job_with_that_spans_trace_context() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    // The library's layer, without export: spans get OpenTelemetry contexts. This test's
    // thread only (the runtime of a #[tokio::test] runs on it).
    let subscriber =
        tracing_subscriber::registry().with(queue_worker::trace::layer(&TraceSettings::default()));
    let _installed = tracing::subscriber::set_default(subscriber);
    let store = InMemoryNotifications::default();
    let jobs = SentJobs::default();

    // A worker's record (or a sender's request) span: the next-step job continues its trace.
    let sender = tracing::info_span!("record");
    let context = TraceContext::of_span(&sender).expect("the span has a context");
    let id = NotificationId::generate();
    request(&store, &jobs, id, "{}")
        .instrument(sender)
        .await
        .unwrap();
    // Outside any span there is no context to carry.
    request(&store, &jobs, NotificationId::generate(), "{}")
        .await
        .unwrap();

    assert_eq!(
        *jobs.1.lock().unwrap(),
        [Some(context.traceparent().to_owned()), None]
    );
}

#[test]
fn failure_classes_are_distinct_snake_case_codes() {
    let codes: Vec<&str> = NotifierFailure::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(
        codes,
        [
            "unknown_notification",
            "partner_rejected",
            "notification_malformed"
        ]
    );
}
