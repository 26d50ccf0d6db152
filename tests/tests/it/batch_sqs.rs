//! The batch processor's queue side effects against real SQS semantics (the emulator):
//! backoff really delays redelivery, and parking really moves a poison message to the DLQ.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use harness::{TestQueue, acknowledge, sdk_config};
use queue_worker::batch::{
    BackoffPolicy, BatchProcessor, BatchSettings, Invocation, RecordError, RecordHandler,
    RecordResult, RecordStatus, SqsQueueActions, dlq_attributes,
};

/// Fails every record, retryably or permanently.
struct AlwaysFails {
    permanent: bool,
}

impl RecordHandler for AlwaysFails {
    async fn handle(&self, _message: &SqsMessage, _: &Invocation) -> RecordResult {
        if self.permanent {
            Err(RecordError::permanent(
                "malformed_job",
                "field objectKey is missing",
            ))
        } else {
            Err(RecordError::retryable("partner API throttled"))
        }
    }
}

fn settings(backoff_base: Duration) -> BatchSettings {
    BatchSettings {
        concurrency: NonZeroUsize::new(4).unwrap(),
        deadline_margin: Duration::from_secs(1),
        backoff: Some(BackoffPolicy {
            base: backoff_base,
            max: Duration::from_secs(60),
        }),
    }
}

fn deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn backoff_keeps_a_failed_message_invisible_until_its_delay_has_passed() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    // A 1 s visibility timeout: without backoff the message would be back after 1 s.
    let queue = TestQueue::create(
        &sqs,
        "backoff",
        &[(QueueAttributeName::VisibilityTimeout, "1")],
    )
    .await;
    let dlq = TestQueue::create(&sqs, "backoff-dlq", &[]).await;
    sqs.send_message()
        .queue_url(&queue.url)
        .message_body("job")
        .send()
        .await
        .unwrap();

    let event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
    assert_eq!(event.records.len(), 1);
    let failed_at = Instant::now();
    // First receive: the delay's ceiling is the 6 s base, jittered into [3 s, 6 s].
    let processor = BatchProcessor::new(
        AlwaysFails { permanent: false },
        SqsQueueActions::new(sqs.clone(), &dlq.url),
        settings(Duration::from_secs(6)),
    );
    let outcome = processor.process(&event, deadline()).await;
    assert!(
        outcome.result.is_err(),
        "a batch whose records all failed fails the invocation"
    );

    // Poll the whole minimum delay: the message must not come back early.
    while failed_at.elapsed() < Duration::from_millis(2500) {
        let early = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
        assert!(
            early.records.is_empty(),
            "redelivered after {:?}, before the backoff delay",
            failed_at.elapsed()
        );
    }
    // ...and it does come back once the delay has passed.
    let mut redelivered = None;
    while redelivered.is_none() && failed_at.elapsed() < Duration::from_secs(15) {
        let event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
        redelivered = event.records.into_iter().next();
    }
    let redelivered = redelivered.expect("the message comes back after its delay");
    assert!(failed_at.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        redelivered
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn a_permanent_failure_is_parked_in_the_dlq_with_its_reason_and_leaves_the_source_queue() {
    let sdk = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = TestQueue::create(&sqs, "park", &[]).await;
    let dlq = TestQueue::create(&sqs, "park-dlq", &[]).await;
    sqs.send_message()
        .queue_url(&queue.url)
        .message_body(r#"{"id":"job-7"}"#)
        .message_attributes(
            "job_id",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("job-7")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
    let original_id = event.records[0].message_id.clone().unwrap();
    let processor = BatchProcessor::new(
        AlwaysFails { permanent: true },
        // The processor's own way: the queue's client is built when the first record fails.
        SqsQueueActions::on_first_failure(&sdk, &dlq.url),
        settings(Duration::from_secs(2)),
    );
    let response = processor
        .process(&event, deadline())
        .await
        .result
        .expect("a response");
    assert!(
        response.batch_item_failures.is_empty(),
        "a parked record is acknowledged"
    );
    acknowledge(&sqs, &queue, &event, &response).await;
    assert_eq!(queue.depth(&sqs).await, 0);

    let parked = dlq.receive_event(&sqs, 10, Duration::from_secs(1)).await;
    assert_eq!(parked.records.len(), 1);
    let parked = &parked.records[0];
    assert_eq!(parked.body.as_deref(), Some(r#"{"id":"job-7"}"#));
    let attribute = |name: &str| {
        parked
            .message_attributes
            .get(name)
            .and_then(|a| a.string_value.clone())
    };
    assert_eq!(
        attribute(dlq_attributes::ERROR_CLASS).as_deref(),
        Some("malformed_job")
    );
    assert_eq!(
        attribute(dlq_attributes::REASON).as_deref(),
        Some("field objectKey is missing")
    );
    assert_eq!(
        attribute(dlq_attributes::ORIGINAL_MESSAGE_ID),
        Some(original_id)
    );
    assert_eq!(
        attribute(dlq_attributes::RECEIVE_COUNT).as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(dlq_attributes::SOURCE_QUEUE),
        Some(queue.arn.clone())
    );
    assert_eq!(
        attribute("job_id").as_deref(),
        Some("job-7"),
        "original attributes are kept"
    );
}

/// The largest message the queue accepts, as it reports it (its `MaximumMessageSize`).
async fn maximum_message_size(sqs: &aws_sdk_sqs::Client, queue: &TestQueue) -> usize {
    sqs.get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::MaximumMessageSize))
        .expect("MaximumMessageSize")
        .parse()
        .expect("a size in bytes")
}

#[tokio::test]
async fn a_permanent_failure_too_large_to_park_is_reported_failed_and_never_acknowledged() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = TestQueue::create(&sqs, "park-large", &[]).await;
    let dlq = TestQueue::create(&sqs, "park-large-dlq", &[]).await;
    // A body as large as the queue takes: a copy of it with the dlq.* attributes is over the
    // limit, so it cannot be parked. Beside it, a small poison message that can.
    let max = maximum_message_size(&sqs, &queue).await;
    let large = "x".repeat(max);
    for body in [large.as_str(), "small"] {
        sqs.send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let mut event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
    while event.records.len() < 2 {
        let more = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
        assert!(!more.records.is_empty(), "both messages arrive");
        event.records.extend(more.records);
    }
    let large_id = event
        .records
        .iter()
        .find(|r| r.body.as_deref().map(str::len) == Some(max))
        .and_then(|r| r.message_id.clone())
        .expect("the large message");

    let processor = BatchProcessor::new(
        AlwaysFails { permanent: true },
        SqsQueueActions::new(sqs.clone(), &dlq.url),
        settings(Duration::from_secs(2)),
    );
    let outcome = processor.process(&event, deadline()).await;
    assert_eq!(outcome.summary.count(RecordStatus::ParkFailed), 1);
    assert_eq!(outcome.summary.count(RecordStatus::Parked), 1);
    let response = outcome.result.expect("a partial batch response");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        [large_id.as_str()],
        "the record that could not be parked is reported failed, so it comes back"
    );
    acknowledge(&sqs, &queue, &event, &response).await;
    assert_eq!(
        queue.depth(&sqs).await,
        1,
        "the large message is still on its queue, for the redrive policy to move after \
         maxReceiveCount receives"
    );

    let parked = dlq.receive_event(&sqs, 10, Duration::from_secs(1)).await;
    let bodies: Vec<&str> = parked
        .records
        .iter()
        .filter_map(|r| r.body.as_deref())
        .collect();
    assert_eq!(bodies, ["small"], "only the small message is parked");
    assert_eq!(dlq.depth(&sqs).await, 1);
}
