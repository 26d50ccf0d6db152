//! Unit tests of the batch rules, driven by JSON event fixtures and a scripted handler whose
//! behaviour each record's body names: `ok`, `duplicate`, `retry`, `permanent`, `panic`, or
//! `leased` (retry in 600 s), `leased_for_a_day`, or `sleep:<ms>` (then ok).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::BoxError;

fn fixture(name: &str) -> SqsEvent {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs each record as its body says, and records what it saw.
#[derive(Default)]
struct Scripted {
    handled: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl Scripted {
    fn handled(&self) -> Vec<String> {
        self.handled.lock().unwrap().clone()
    }
}

impl RecordHandler for Scripted {
    async fn handle(&self, message: &SqsMessage, _: &Invocation) -> RecordResult {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let id = message.message_id.clone().unwrap_or_default();
        self.handled.lock().unwrap().push(id);
        let body = message.body.as_deref().unwrap_or_default();
        let result = match body {
            "ok" => Ok(Ack::Processed),
            "duplicate" => Ok(Ack::Duplicate),
            "retry" => Err(RecordError::retryable("downstream throttled")),
            "permanent" => Err(RecordError::permanent("malformed_job", "body is not a job")),
            "panic" => panic!("handler bug"),
            "leased" => Err(RecordError::retryable_after(
                "in progress elsewhere",
                Duration::from_secs(600),
            )),
            "leased_for_a_day" => Err(RecordError::retryable_after(
                "in progress elsewhere",
                Duration::from_secs(86_400),
            )),
            sleep => {
                let ms = sleep
                    .strip_prefix("sleep:")
                    .expect("known script")
                    .parse()
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Ack::Processed)
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Records the queue side effects instead of making them.
#[derive(Default)]
struct FakeQueue {
    delayed: Mutex<Vec<(String, Duration)>>,
    parked: Mutex<Vec<(String, String, String)>>,
    park_fails: bool,
    /// Parking never answers (a dead-letter queue that hangs).
    park_hangs: bool,
    /// Parking panics (a bug in the queue adapter, outside the record handler).
    park_panics: bool,
    /// Changing a message's visibility panics.
    visibility_panics: bool,
}

impl QueueActions for FakeQueue {
    async fn change_visibility(
        &self,
        message: &SqsMessage,
        delay: Duration,
    ) -> Result<(), BoxError> {
        if self.visibility_panics {
            panic!("queue adapter bug");
        }
        let id = message.message_id.clone().unwrap_or_default();
        self.delayed.lock().unwrap().push((id, delay));
        Ok(())
    }

    async fn park(&self, message: &SqsMessage, why: ParkReason<'_>) -> Result<(), BoxError> {
        if self.park_panics {
            panic!("queue adapter bug");
        }
        if self.park_fails {
            return Err("dead-letter queue unavailable".into());
        }
        if self.park_hangs {
            std::future::pending::<()>().await;
        }
        let id = message.message_id.clone().unwrap_or_default();
        self.parked
            .lock()
            .unwrap()
            .push((id, why.code.to_owned(), why.reason.to_owned()));
        Ok(())
    }
}

const BACKOFF: BackoffPolicy = BackoffPolicy {
    base: Duration::from_secs(10),
    max: Duration::from_secs(600),
};

fn settings(concurrency: usize) -> BatchSettings {
    BatchSettings {
        concurrency: NonZeroUsize::new(concurrency).unwrap(),
        deadline_margin: Duration::from_millis(500),
        backoff: Some(BACKOFF),
    }
}

fn processor(concurrency: usize) -> BatchProcessor<Scripted, FakeQueue> {
    BatchProcessor::new(
        Scripted::default(),
        FakeQueue::default(),
        settings(concurrency),
    )
}

fn far_deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(900)
}

fn failed_ids(outcome: &BatchOutcome) -> Vec<String> {
    let response = outcome.result.as_ref().expect("a partial batch response");
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn only_retryable_and_panicked_records_are_reported_failed() {
    let processor = processor(4);
    let outcome = processor
        .process(&fixture("standard_mixed.json"), far_deadline())
        .await;

    assert_eq!(sorted(failed_ids(&outcome)), ["msg-2", "msg-5"]);
    assert_eq!(outcome.summary.count(RecordStatus::Processed), 2);
    assert_eq!(outcome.summary.count(RecordStatus::Duplicate), 1);
    assert_eq!(outcome.summary.count(RecordStatus::Parked), 1);
    assert_eq!(outcome.summary.count(RecordStatus::Retried), 1);
    assert_eq!(outcome.summary.count(RecordStatus::Panicked), 1);
    assert_eq!(processor.handler().handled().len(), 6, "every record ran");
}

#[tokio::test]
async fn a_panicking_record_fails_only_itself() {
    let processor = processor(1);
    let outcome = processor
        .process(&fixture("standard_mixed.json"), far_deadline())
        .await;
    assert!(failed_ids(&outcome).contains(&"msg-5".to_owned()));
    assert!(!failed_ids(&outcome).contains(&"msg-6".to_owned()));
    assert_eq!(processor.handler().handled().last().unwrap(), "msg-6");
}

#[tokio::test]
async fn permanent_failure_is_parked_with_its_reason_and_acknowledged() {
    let processor = processor(4);
    let (outcome, events) = crate::metrics::counting(
        processor.process(&fixture("standard_mixed.json"), far_deadline()),
    )
    .await;
    assert!(!failed_ids(&outcome).contains(&"msg-3".to_owned()));
    assert_eq!(
        *processor.queue.parked.lock().unwrap(),
        [(
            "msg-3".to_owned(),
            "malformed_job".to_owned(),
            "body is not a job".to_owned()
        )]
    );
    assert_eq!(
        events.parked,
        [("malformed_job", 1)].into(),
        "counted by its class"
    );
}

#[tokio::test]
async fn permanent_failure_that_cannot_be_parked_is_reported_failed() {
    let queue = FakeQueue {
        park_fails: true,
        ..FakeQueue::default()
    };
    let processor = BatchProcessor::new(Scripted::default(), queue, settings(4));
    let (outcome, events) = crate::metrics::counting(
        processor.process(&fixture("standard_mixed.json"), far_deadline()),
    )
    .await;
    assert_eq!(sorted(failed_ids(&outcome)), ["msg-2", "msg-3", "msg-5"]);
    assert_eq!(outcome.summary.count(RecordStatus::ParkFailed), 1);
    assert!(
        events.parked.is_empty(),
        "not parked, not counted as parked"
    );
}

/// One FIFO message group whose records' bodies are `bodies`, in order (`msg-1`, `msg-2`, ...).
fn fifo_group(bodies: &[&str]) -> SqsEvent {
    let mut event = fixture("fifo_groups.json");
    let template = event.records[0].clone();
    event.records = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut record = template.clone();
            record.message_id = Some(format!("msg-{}", i + 1));
            record.body = Some((*body).to_owned());
            record
        })
        .collect();
    event
}

#[tokio::test]
async fn a_panic_outside_the_handler_fails_its_records_closed_and_only_them() {
    // Group A: msg-1 is processed, parking msg-2 panics, msg-3 never ran: neither may be
    // acknowledged.
    let queue = FakeQueue {
        park_panics: true,
        ..FakeQueue::default()
    };
    let processor = BatchProcessor::new(Scripted::default(), queue, settings(4));
    let outcome = processor
        .process(&fifo_group(&["ok", "permanent", "ok"]), far_deadline())
        .await;
    assert_eq!(sorted(failed_ids(&outcome)), ["msg-2", "msg-3"]);
    assert_eq!(outcome.summary.count(RecordStatus::Processed), 1);
    assert_eq!(outcome.summary.failed(), 2);
    assert_eq!(processor.handler().handled(), ["msg-1", "msg-2"]);

    // A standard queue: delaying the retried record panics; the others are unaffected.
    let queue = FakeQueue {
        visibility_panics: true,
        ..FakeQueue::default()
    };
    let processor = BatchProcessor::new(Scripted::default(), queue, settings(4));
    let outcome = processor
        .process(&fixture("standard_mixed.json"), far_deadline())
        .await;
    assert_eq!(sorted(failed_ids(&outcome)), ["msg-2", "msg-5"]);
    assert_eq!(outcome.summary.count(RecordStatus::Processed), 2);
    assert_eq!(outcome.summary.count(RecordStatus::Parked), 1);
}

#[test]
fn a_record_without_a_status_is_reported_failed() {
    let ids: Vec<MessageId> = ["a", "b", "c"]
        .iter()
        .map(|id| MessageId::parse(Some(id)).unwrap())
        .collect();
    let statuses = Statuses::new(ids.len());
    statuses.set(0, RecordStatus::Processed);
    statuses.set(2, RecordStatus::Duplicate);
    let reported = statuses.reported(ids);
    let failed: Vec<&str> = reported
        .iter()
        .filter(|(_, status)| status.is_failure())
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(reported.len(), 3, "every record is reported");
    assert_eq!(failed, ["b"]);
}

#[tokio::test]
async fn retryable_failures_are_delayed_by_backoff_from_their_receive_count() {
    let processor = processor(4);
    processor
        .process(&fixture("standard_mixed.json"), far_deadline())
        .await;
    let delayed: HashMap<String, Duration> = processor
        .queue
        .delayed
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(delayed.len(), 2, "the retried and the panicked record");
    // msg-2 was received 3 times: ceiling 40 s, jittered into [20, 40].
    assert!(
        (20..=40).contains(&delayed["msg-2"].as_secs()),
        "{delayed:?}"
    );
    // msg-5 was received twice: ceiling 20 s, jittered into [10, 20].
    assert!(
        (10..=20).contains(&delayed["msg-5"].as_secs()),
        "{delayed:?}"
    );
}

fn single(body: &str) -> SqsEvent {
    let mut event = fixture("standard_mixed.json");
    event.records.truncate(1);
    event.records[0].body = Some(body.to_owned());
    event
}

#[tokio::test]
async fn a_known_retry_time_keeps_the_message_invisible_beyond_the_backoff() {
    let processor = processor(1);
    processor.process(&single("leased"), far_deadline()).await;
    let delayed = processor.queue.delayed.lock().unwrap().clone();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].0, "msg-1");
    // At least the known 600 s, plus up to a quarter of it as jitter.
    assert!((600..=750).contains(&delayed[0].1.as_secs()), "{delayed:?}");

    let mut settings = settings(1);
    settings.backoff = None;
    let processor = BatchProcessor::new(Scripted::default(), FakeQueue::default(), settings);
    processor.process(&single("leased"), far_deadline()).await;
    let delay = processor.queue.delayed.lock().unwrap()[0].1;
    assert!(
        (600..=750).contains(&delay.as_secs()),
        "applies without backoff too: {delay:?}"
    );
}

#[tokio::test]
async fn a_delay_ends_within_twelve_hours_of_the_receive() {
    // SQS rejects a visibility beyond 12 h from the receive: five minutes after it, a day's
    // wait is cut to what is left (less a minute for clock skew), not to 12 h from now.
    let mut event = single("leased_for_a_day");
    let received = SystemTime::now() - Duration::from_secs(300);
    let ms = received
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let attributes = &mut event.records[0].attributes;
    attributes.insert("ApproximateFirstReceiveTimestamp".into(), ms.to_string());
    attributes.insert("ApproximateReceiveCount".into(), "1".into());
    let processor = processor(1);
    processor.process(&event, far_deadline()).await;
    let delay = processor.queue.delayed.lock().unwrap()[0].1.as_secs();
    let left = 12 * 3600 - 300 - 60;
    assert!((left - 2..=left).contains(&delay), "{delay} s");
}

#[tokio::test]
async fn waiters_on_one_known_retry_time_come_back_spread_out() {
    let processor = processor(1);
    let mut delays = std::collections::BTreeSet::new();
    for _ in 0..20 {
        processor.process(&single("leased"), far_deadline()).await;
    }
    for (_, delay) in processor.queue.delayed.lock().unwrap().iter() {
        delays.insert(delay.as_secs());
    }
    assert!(
        delays.len() >= 5,
        "20 waiters on one 600 s lease should not come back at one instant: {delays:?}"
    );
}

#[tokio::test]
async fn without_backoff_no_visibility_is_changed() {
    let mut settings = settings(4);
    settings.backoff = None;
    let processor = BatchProcessor::new(Scripted::default(), FakeQueue::default(), settings);
    let outcome = processor
        .process(&fixture("standard_mixed.json"), far_deadline())
        .await;
    assert_eq!(failed_ids(&outcome).len(), 2);
    assert!(processor.queue.delayed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_record_without_message_id_fails_the_invocation_before_anything_runs() {
    for name in ["missing_message_id.json", "empty_message_id.json"] {
        let processor = processor(4);
        let outcome = processor.process(&fixture(name), far_deadline()).await;
        assert_eq!(
            outcome.result,
            Err(BatchError::MissingMessageId { index: 1 }),
            "{name}"
        );
        assert!(processor.handler().handled().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn when_every_record_fails_the_invocation_fails() {
    let processor = processor(4);
    let outcome = processor
        .process(&fixture("all_retryable.json"), far_deadline())
        .await;
    assert_eq!(outcome.result, Err(BatchError::AllFailed { count: 3 }));
    assert_eq!(outcome.summary.failed(), 3);
}

#[tokio::test]
async fn an_empty_batch_succeeds_with_no_failures() {
    let processor = processor(4);
    let outcome = processor
        .process(&SqsEvent::default(), far_deadline())
        .await;
    assert!(failed_ids(&outcome).is_empty());
}

fn sleeping_batch(records: usize, sleep_ms: u64) -> SqsEvent {
    let mut event = fixture("standard_mixed.json");
    let template = event.records[0].clone();
    event.records = (0..records)
        .map(|i| {
            let mut record = template.clone();
            record.message_id = Some(format!("msg-{i}"));
            record.body = Some(format!("sleep:{sleep_ms}"));
            record
        })
        .collect();
    event
}

#[tokio::test(start_paused = true)]
async fn records_run_concurrently_up_to_the_bound() {
    let processor = processor(4);
    let outcome = processor
        .process(&sleeping_batch(20, 50), far_deadline())
        .await;
    assert!(failed_ids(&outcome).is_empty());
    assert_eq!(processor.handler().handled().len(), 20);
    assert_eq!(processor.handler().peak.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn no_record_starts_within_the_deadline_margin_and_unstarted_ones_are_reported() {
    // Margin 500 ms, deadline in 1.5 s, one record at a time, 400 ms each: records start at
    // 0, 0.4 and 0.8 s; from 1.0 s on, nothing starts.
    let processor = processor(1);
    let deadline = SystemTime::now() + Duration::from_millis(1500);
    let outcome = processor.process(&sleeping_batch(5, 400), deadline).await;
    assert_eq!(processor.handler().handled(), ["msg-0", "msg-1", "msg-2"]);
    assert_eq!(sorted(failed_ids(&outcome)), ["msg-3", "msg-4"]);
    assert_eq!(outcome.summary.count(RecordStatus::NotStarted), 2);
}

#[tokio::test(start_paused = true)]
async fn records_not_started_are_held_back_briefly_whatever_their_receive_count() {
    // As in the test above, msg-3 and msg-4 do not start. Received six times, a failure would
    // back off for 160 to 320 s; never having run, they are held back for the first delay
    // only (10 s base: 5 to 10 s), and the records that ran are not delayed.
    let processor = processor(1);
    let mut event = sleeping_batch(5, 400);
    for record in &mut event.records {
        record
            .attributes
            .insert("ApproximateReceiveCount".into(), "6".into());
    }
    let deadline = SystemTime::now() + Duration::from_millis(1500);
    let outcome = processor.process(&event, deadline).await;
    assert_eq!(outcome.summary.count(RecordStatus::NotStarted), 2);
    let delayed: HashMap<String, Duration> = processor
        .queue
        .delayed
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        sorted(delayed.keys().cloned().collect()),
        ["msg-3", "msg-4"]
    );
    for (id, delay) in &delayed {
        assert!((5..=10).contains(&delay.as_secs()), "{id}: {delay:?}");
    }
}

#[tokio::test]
async fn past_the_margin_nothing_starts_and_the_invocation_fails() {
    let processor = processor(4);
    let deadline = SystemTime::now() + Duration::from_millis(100);
    let outcome = processor
        .process(&fixture("standard_mixed.json"), deadline)
        .await;
    assert_eq!(outcome.result, Err(BatchError::AllFailed { count: 6 }));
    assert!(processor.handler().handled().is_empty());
}

#[tokio::test]
async fn fifo_groups_run_in_order_and_stop_at_their_first_failure() {
    let processor = processor(4);
    let outcome = processor
        .process(&fixture("fifo_groups.json"), far_deadline())
        .await;

    // Group A: msg-1 ok, msg-3 fails, msg-5 is skipped. Groups B and C go on.
    assert_eq!(sorted(failed_ids(&outcome)), ["msg-3", "msg-5"]);
    assert_eq!(outcome.summary.count(RecordStatus::Skipped), 1);
    let handled = processor.handler().handled();
    assert!(
        !handled.contains(&"msg-5".to_owned()),
        "skipped records never run"
    );
    let position = |id: &str| handled.iter().position(|h| h == id).unwrap();
    assert!(position("msg-1") < position("msg-3"));
    assert!(position("msg-2") < position("msg-4"));
    assert!(handled.contains(&"msg-6".to_owned()));
}

#[tokio::test]
async fn a_standard_queue_with_message_groups_is_not_fifo() {
    let processor = processor(1);
    let outcome = processor
        .process(&fixture("fair_queue_groups.json"), far_deadline())
        .await;
    assert_eq!(failed_ids(&outcome), ["msg-1"]);
    assert_eq!(processor.handler().handled().len(), 3);
}

#[test]
fn settings_come_from_the_environment() {
    let env = Env::from_pairs([
        ("BATCH_CONCURRENCY", "8"),
        ("BATCH_DEADLINE_MARGIN_MS", "2500"),
        ("RETRY_BACKOFF_BASE_SECONDS", "0"),
    ]);
    let settings = BatchSettings::from_env(&env).unwrap();
    assert_eq!(settings.concurrency.get(), 8);
    assert_eq!(settings.deadline_margin, Duration::from_millis(2500));
    assert_eq!(settings.backoff, None);

    let bad = Env::from_pairs([("BATCH_CONCURRENCY", "0")]);
    assert!(matches!(
        BatchSettings::from_env(&bad),
        Err(ConfigError::Invalid { name, .. }) if name == "BATCH_CONCURRENCY"
    ));
}

const SCRIPTS: [&str; 5] = ["ok", "duplicate", "retry", "permanent", "panic"];

fn arbitrary_batch() -> impl Strategy<Value = (bool, usize, Vec<(usize, u8)>)> {
    (
        any::<bool>(),
        1usize..8,
        prop::collection::vec((0usize..SCRIPTS.len(), 0u8..3), 0..25),
    )
}

#[test]
fn the_summary_counts_each_status_apart() {
    // The summary indexes its counts by the status's discriminant: ALL must list them in order.
    for (position, status) in RecordStatus::ALL.iter().enumerate() {
        assert_eq!(*status as usize, position, "{status:?}");
    }
    let summary: BatchSummary = RecordStatus::ALL
        .iter()
        .enumerate()
        .flat_map(|(position, status)| std::iter::repeat_n(*status, position + 1))
        .collect();
    for (position, status) in RecordStatus::ALL.iter().enumerate() {
        assert_eq!(summary.count(*status), position + 1, "{status:?}");
    }
    assert_eq!(summary.failed(), 4 + 5 + 6 + 7 + 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For arbitrary batches and outcomes: the response lists exactly the failed ids, never an
    /// empty one, and on FIFO no record of a group succeeds after one of its records failed.
    #[test]
    fn response_lists_exactly_the_failed_records((fifo, concurrency, records) in arbitrary_batch()) {
        let arn = if fifo {
            "arn:aws:sqs:us-east-1:123456789012:jobs.fifo"
        } else {
            "arn:aws:sqs:us-east-1:123456789012:jobs"
        };
        let template = fixture("standard_mixed.json").records[0].clone();
        let mut event = SqsEvent::default();
        for (i, (script, group)) in records.iter().enumerate() {
            let mut record = template.clone();
            record.message_id = Some(format!("m{i}"));
            record.body = Some(SCRIPTS[*script].to_owned());
            record.event_source_arn = Some(arn.to_owned());
            record.attributes.insert("MessageGroupId".into(), format!("g{group}"));
            event.records.push(record);
        }

        // The model: which records must come back.
        let mut expected = HashSet::new();
        let mut failed_groups = HashSet::new();
        for (i, (script, group)) in records.iter().enumerate() {
            let fails = matches!(SCRIPTS[*script], "retry" | "panic");
            if (fifo && failed_groups.contains(group)) || fails {
                expected.insert(format!("m{i}"));
                failed_groups.insert(*group);
            }
        }

        let processor = processor(concurrency);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let outcome = runtime.block_on(processor.process(&event, far_deadline()));

        let reported: HashSet<String> = match &outcome.result {
            Ok(response) => response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect(),
            Err(BatchError::AllFailed { count }) => {
                prop_assert_eq!(*count, records.len());
                event.records.iter().filter_map(|r| r.message_id.clone()).collect()
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other}"))),
        };
        prop_assert!(reported.iter().all(|id| !id.is_empty()));
        prop_assert_eq!(&reported, &expected);
        prop_assert_eq!(outcome.summary.failed(), expected.len());

        if fifo {
            let handled = processor.handler().handled();
            let mut seen_failure = HashSet::new();
            for id in handled {
                let i: usize = id[1..].parse().unwrap();
                let (script, group) = records[i];
                prop_assert!(!seen_failure.contains(&group), "{} ran after a failure in g{}", id, group);
                if matches!(SCRIPTS[script], "retry" | "panic") {
                    seen_failure.insert(group);
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_queue_that_hangs_is_given_up_before_the_deadline_and_the_record_retried() {
    let processor = BatchProcessor::new(
        Scripted::default(),
        FakeQueue {
            park_hangs: true,
            ..FakeQueue::default()
        },
        settings(2),
    );
    let deadline = SystemTime::now() + Duration::from_secs(5);
    let mut event = sleeping_batch(2, 0);
    event.records[1].body = Some("permanent".into());
    let outcome = tokio::time::timeout(Duration::from_secs(5), processor.process(&event, deadline))
        .await
        .expect("the response goes back before the deadline");
    assert_eq!(failed_ids(&outcome), ["msg-1"]);
    assert_eq!(outcome.summary.count(RecordStatus::ParkFailed), 1);
}
