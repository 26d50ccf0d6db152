//! `SqsJobQueue` against real SQS semantics (the emulator): a job sent for now is received with
//! its attributes, a held-back one is delayed by SQS and not received before its time.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use harness::{TestQueue, sdk_config};
use queue_worker::idempotency::IdempotencyKey;
use queue_worker::job::{Job, JobQueue, MAX_DELAY, SqsJobQueue, attributes};
use queue_worker::trace::TraceContext;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    id: String,
}

impl Job for Note {
    const SCHEMA_VERSION: u32 = 3;

    fn id(&self) -> String {
        self.id.clone()
    }

    fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(self.id.clone()).unwrap()
    }
}

/// The queue's (visible, delayed) counts.
async fn counts(sqs: &aws_sdk_sqs::Client, queue: &TestQueue) -> (u64, u64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name| attributes.get(&name).map_or(0, |v| v.parse().unwrap());
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    )
}

#[tokio::test]
async fn a_held_back_job_is_delayed_by_sqs_and_one_for_now_is_received_with_its_attributes() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue = TestQueue::create(&sqs, "job-queue", &[]).await;
    let jobs = SqsJobQueue::new(sqs.clone(), &queue.url);
    let later = Note { id: "later".into() };
    // Longer than SQS allows: held back the longest it can, not refused.
    jobs.send_after(&later, MAX_DELAY * 4, None).await.unwrap();
    assert_eq!(counts(&sqs, &queue).await, (0, 1));
    let event = queue.receive_event(&sqs, 10, Duration::ZERO).await;
    assert!(event.records.is_empty(), "a delayed job was received");

    let now = Note { id: "now".into() };
    let trace = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("vendor=opaque"),
    )
    .unwrap();
    jobs.send(&now, Some(&trace)).await.unwrap();
    assert_eq!(counts(&sqs, &queue).await.0, 1);
    let event = queue.receive_event(&sqs, 10, Duration::ZERO).await;
    assert_eq!(event.records.len(), 1);
    let record = &event.records[0];
    let body: Note = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
    assert_eq!(body, now);
    let attribute = |name: &str| {
        record.message_attributes[name]
            .string_value
            .clone()
            .unwrap_or_default()
    };
    assert_eq!(attribute(attributes::JOB_ID), "now");
    assert_eq!(attribute(attributes::SCHEMA_VERSION), "3");
    assert_eq!(attribute(attributes::TRACEPARENT), trace.traceparent());
    assert_eq!(attribute(attributes::TRACESTATE), "vendor=opaque");
    // What the worker reads back is the context that was sent.
    assert_eq!(TraceContext::from_message(record), Some(trace));
}

#[tokio::test]
async fn on_a_fifo_queue_a_held_back_job_is_sent_at_once_in_its_own_group() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let name = harness::unique_name("job-queue");
    let url = sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let jobs = SqsJobQueue::new(sqs.clone(), &url);
    // SQS refuses a per-message delay on a FIFO queue: the job goes at once.
    let job = Note { id: "fifo".into() };
    jobs.send_after(&job, Duration::from_secs(60), None)
        .await
        .unwrap();
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let message = &received.messages()[0];
    let group = message
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
        .cloned();
    assert_eq!(group.as_deref(), Some("fifo"));
    assert_eq!(
        serde_json::from_str::<Note>(message.body().unwrap()).unwrap(),
        job
    );
}
