//! The local runner's event source mapping emulation, against real SQS semantics, with a stub
//! function whose responses are crafted per test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use harness::{TestQueue, sdk_config};
use local_runner::esm::{
    Disposition, EventSourceMapping, Function, InvocationReport, MappingSettings,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// A function that answers each batch with what `respond` returns, after `delay`. With
/// `hold_for_peak`, each invocation also waits (at most 10 s) until that many invocations have
/// run at once, so concurrency is observed however slow the emulator is.
struct Stub<R> {
    respond: R,
    delay: Duration,
    hold_for_peak: usize,
    running: AtomicUsize,
    peak: Arc<AtomicUsize>,
}

impl<R> Function for Stub<R>
where
    R: Fn(&SqsEvent) -> Result<Value, String> + Send + Sync + 'static,
{
    async fn invoke(&self, event: SqsEvent, _deadline: SystemTime) -> Result<Value, String> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let held = tokio::time::Instant::now();
        while self.peak.load(Ordering::SeqCst) < self.hold_for_peak
            && held.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        (self.respond)(&event)
    }
}

const SETTINGS: MappingSettings = MappingSettings {
    batch_size: 10,
    batching_window: Duration::ZERO,
    maximum_concurrency: 2,
    function_timeout: Duration::from_secs(5),
    report_batch_item_failures: true,
};

struct Run {
    reports: Vec<InvocationReport>,
    queue: TestQueue,
    sqs: aws_sdk_sqs::Client,
    peak: usize,
}

/// Sends `bodies`, runs the mapping until `done` says the reports are enough, and stops it.
async fn run<R>(
    bodies: &[&str],
    settings: MappingSettings,
    (delay, hold_for_peak): (Duration, usize),
    respond: R,
    done: impl Fn(&[InvocationReport]) -> bool,
) -> Run
where
    R: Fn(&SqsEvent) -> Result<Value, String> + Send + Sync + 'static,
{
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    // A long visibility timeout: a failed message stays in flight for the rest of the test.
    let queue = TestQueue::create(
        &sqs,
        "esm",
        &[(QueueAttributeName::VisibilityTimeout, "60")],
    )
    .await;
    for body in bodies {
        sqs.send_message()
            .queue_url(&queue.url)
            .message_body(*body)
            .send()
            .await
            .unwrap();
    }
    let peak = Arc::new(AtomicUsize::new(0));
    let stub = Stub {
        respond,
        delay,
        hold_for_peak,
        running: AtomicUsize::new(0),
        peak: Arc::clone(&peak),
    };
    let mapping = Arc::new(EventSourceMapping::new(
        sqs.clone(),
        &queue.url,
        &queue.arn,
        settings,
        stub,
    ));
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(mapping.run(
        async {
            let _ = stop_rx.await;
        },
        report_tx,
    ));
    let mut reports = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&reports) {
        let report = tokio::time::timeout_at(deadline, report_rx.recv())
            .await
            .expect("the mapping reports in time")
            .expect("the mapping is running");
        reports.push(report);
    }
    let _ = stop_tx.send(());
    running.await.unwrap();
    Run {
        reports,
        peak: peak.load(Ordering::SeqCst),
        queue,
        sqs,
    }
}

fn handled(count: usize) -> impl Fn(&[InvocationReport]) -> bool {
    move |reports| reports.iter().map(|r| r.batch_size).sum::<usize>() >= count
}

fn ok(_: &SqsEvent) -> Result<Value, String> {
    Ok(json!({ "batchItemFailures": [] }))
}

/// Fails the records whose body is `fail`.
fn fail_marked(event: &SqsEvent) -> Result<Value, String> {
    let failures: Vec<Value> = event
        .records
        .iter()
        .filter(|r| r.body.as_deref() == Some("fail"))
        .map(|r| json!({ "itemIdentifier": r.message_id }))
        .collect();
    Ok(json!({ "batchItemFailures": failures }))
}

#[tokio::test]
async fn acknowledged_messages_are_deleted() {
    let run = run(
        &["a", "b", "c"],
        SETTINGS,
        (Duration::ZERO, 0),
        ok,
        handled(3),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 0);
    assert!(
        run.reports
            .iter()
            .all(|r| r.disposition == Disposition::AcknowledgeAll)
    );
}

#[tokio::test]
async fn reported_failures_stay_on_the_queue_and_the_rest_are_deleted() {
    let run = run(
        &["a", "fail", "b", "fail"],
        SETTINGS,
        (Duration::ZERO, 0),
        fail_marked,
        handled(4),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
    assert_eq!(run.reports.iter().map(|r| r.acknowledged).sum::<usize>(), 2);
}

#[tokio::test]
async fn an_empty_item_identifier_fails_the_whole_batch() {
    let respond = |_: &SqsEvent| Ok(json!({ "batchItemFailures": [{ "itemIdentifier": "" }] }));
    let run = run(
        &["a", "b"],
        SETTINGS,
        (Duration::ZERO, 0),
        respond,
        handled(2),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
    assert!(matches!(
        run.reports[0].disposition,
        Disposition::FailBatch(_)
    ));
}

#[tokio::test]
async fn an_unknown_item_identifier_fails_the_whole_batch() {
    let respond =
        |_: &SqsEvent| Ok(json!({ "batchItemFailures": [{ "itemIdentifier": "not-in-batch" }] }));
    let run = run(
        &["a", "b"],
        SETTINGS,
        (Duration::ZERO, 0),
        respond,
        handled(2),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
}

#[tokio::test]
async fn an_unparseable_response_fails_the_whole_batch() {
    let respond = |_: &SqsEvent| Ok(json!({ "batchItemFailures": "everything" }));
    let run = run(
        &["a", "b"],
        SETTINGS,
        (Duration::ZERO, 0),
        respond,
        handled(2),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
}

#[tokio::test]
async fn a_function_error_fails_the_whole_batch() {
    let respond = |_: &SqsEvent| Err("handler crashed".to_owned());
    let run = run(
        &["a", "b"],
        SETTINGS,
        (Duration::ZERO, 0),
        respond,
        handled(2),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
}

#[tokio::test]
async fn an_invocation_past_the_function_timeout_fails_the_whole_batch() {
    let settings = MappingSettings {
        function_timeout: Duration::from_millis(300),
        ..SETTINGS
    };
    let run = run(
        &["a", "b"],
        settings,
        (Duration::from_secs(2), 0),
        ok,
        handled(2),
    )
    .await;
    assert_eq!(run.queue.depth(&run.sqs).await, 2);
    assert!(
        matches!(&run.reports[0].disposition, Disposition::FailBatch(reason) if reason.contains("timed out"))
    );
}

#[tokio::test]
async fn without_report_batch_item_failures_a_partial_response_acknowledges_everything() {
    let settings = MappingSettings {
        report_batch_item_failures: false,
        ..SETTINGS
    };
    let run = run(
        &["a", "fail"],
        settings,
        (Duration::ZERO, 0),
        fail_marked,
        handled(2),
    )
    .await;
    assert_eq!(
        run.queue.depth(&run.sqs).await,
        0,
        "the failed record is lost: why the template needs ReportBatchItemFailures"
    );
}

#[tokio::test]
async fn batches_are_gathered_up_to_the_batch_size_within_the_window() {
    let settings = MappingSettings {
        batch_size: 10,
        batching_window: Duration::from_secs(1),
        maximum_concurrency: 2,
        ..SETTINGS
    };
    let bodies = vec!["m"; 25];
    let run = run(&bodies, settings, (Duration::ZERO, 0), ok, handled(25)).await;
    let sizes: Vec<usize> = run.reports.iter().map(|r| r.batch_size).collect();
    assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 25);
    assert!(
        sizes.len() <= 4,
        "the window gathers several receives per batch: {sizes:?}"
    );
    assert_eq!(run.queue.depth(&run.sqs).await, 0);
}

#[tokio::test]
async fn invocations_scale_with_the_backlog_up_to_the_maximum_concurrency() {
    let settings = MappingSettings {
        batch_size: 1,
        maximum_concurrency: 3,
        ..SETTINGS
    };
    let bodies = vec!["m"; 12];
    let run = run(&bodies, settings, (Duration::ZERO, 3), ok, handled(12)).await;
    assert_eq!(run.peak, 3);
    assert_eq!(run.queue.depth(&run.sqs).await, 0);
}
