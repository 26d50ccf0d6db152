//! Per-record overhead of the batch processor, alone and with the idempotency guard (in-memory
//! store), around a handler that does no work. Run with `cargo bench -p queue-worker`.

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use queue_worker::BoxError;
use queue_worker::batch::{
    Ack, BatchProcessor, BatchSettings, Invocation, ParkReason, QueueActions, RecordError,
    RecordHandler, RecordResult,
};
use queue_worker::idempotency::{
    Decision, GuardSettings, IdempotencyGuard, IdempotencyKey, InMemoryStore,
};

struct Noop;

impl RecordHandler for Noop {
    async fn handle(&self, _message: &SqsMessage, _: &Invocation) -> RecordResult {
        Ok(Ack::Processed)
    }
}

/// Claims the message's key, does nothing, completes the claim.
struct Guarded(IdempotencyGuard<InMemoryStore>);

impl RecordHandler for Guarded {
    async fn handle(&self, message: &SqsMessage, _: &Invocation) -> RecordResult {
        let id = message.message_id.as_deref().unwrap_or_default();
        let key = IdempotencyKey::parse(id)
            .map_err(|e| RecordError::permanent("bad_key", e.to_string()))?;
        let body = message.body.as_deref().unwrap_or_default().as_bytes();
        match self.0.claim(&key, body, None).await {
            Ok(Decision::Proceed(claim)) => {
                self.0
                    .complete(&claim, "")
                    .await
                    .map_err(|e| RecordError::retryable(e.to_string()))?;
                Ok(Ack::Processed)
            }
            Ok(Decision::AlreadyCompleted { .. }) => Ok(Ack::Duplicate),
            Ok(_) => Err(RecordError::retryable("in progress")),
            Err(e) => Err(RecordError::retryable(e.to_string())),
        }
    }
}

struct NoQueue;

impl QueueActions for NoQueue {
    async fn change_visibility(&self, _: &SqsMessage, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }

    async fn park(&self, _: &SqsMessage, _: ParkReason<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

const SETTINGS: BatchSettings = BatchSettings {
    concurrency: NonZeroUsize::new(10).unwrap(),
    deadline_margin: Duration::from_secs(1),
    backoff: None,
};

fn event(records: usize) -> SqsEvent {
    let mut event = SqsEvent::default();
    for i in 0..records {
        let mut message = SqsMessage::default();
        message.message_id = Some(format!("4c2b1d3e-0000-4000-8000-{i:012}"));
        message.receipt_handle = Some(format!("receipt-{i}"));
        message.body = Some(format!(r#"{{"id":"job-{i}","input":"inputs/{i}"}}"#));
        message.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:work-jobs".into());
        message
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        event.records.push(message);
    }
    event
}

fn guard() -> IdempotencyGuard<InMemoryStore> {
    IdempotencyGuard::new(
        InMemoryStore::default(),
        GuardSettings {
            retention: Duration::from_secs(3600),
            lease_margin: Duration::from_secs(10),
            max_lease: Duration::from_secs(910),
        },
    )
}

fn batch_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let deadline = SystemTime::now() + Duration::from_secs(24 * 3600);
    let mut group = c.benchmark_group("batch_overhead");
    for size in [10, 100] {
        let batch = event(size);
        group.throughput(Throughput::Elements(size as u64));

        let noop = BatchProcessor::new(Noop, NoQueue, SETTINGS);
        group.bench_with_input(BenchmarkId::new("noop", size), &batch, |b, batch| {
            b.to_async(&runtime)
                .iter(|| async { noop.process(batch, deadline).await });
        });

        group.bench_with_input(BenchmarkId::new("guarded", size), &batch, |b, batch| {
            b.to_async(&runtime).iter_batched(
                || BatchProcessor::new(Guarded(guard()), NoQueue, SETTINGS),
                |processor| async move { processor.process(batch, deadline).await },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, batch_overhead);
criterion_main!(benches);
