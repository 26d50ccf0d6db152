//! The batch processor: one SQS event in, a partial batch response out.
//!
//! Lambda hands an SQS-triggered function a batch of up to 10,000 records. Failing the
//! invocation retries every one of them, so the processor handles records one by one and
//! reports only the failures in `batchItemFailures`.
//!
//! **The event source mapping must enable `ReportBatchItemFailures`**: without it Lambda ignores
//! the response, deletes the whole batch on success, and every failed record is lost.
//!
//! Rules (each has a test):
//! - Bodies are parsed by the record handler, per record: a malformed body fails one record.
//! - A record without a `messageId` fails the whole invocation loudly: an empty or unknown
//!   `itemIdentifier` would make Lambda fail the batch anyway, and silently.
//! - Records run concurrently up to [`BatchSettings::concurrency`]; a panic fails only its record.
//! - Every record with a `messageId` is reported, and a record is acknowledged only on a status
//!   that says so: a record left without one (a panic outside the handler, while parking or
//!   delaying, stops its unit) is reported failed. The processor fails closed.
//! - FIFO queues (source ARN ending in `.fifo`): records of one message group run in order; from
//!   the first failure on, the rest of that group is reported failed without running. Other
//!   groups go on. A permanent failure parked in the DLQ counts as handled: its group goes on.
//! - No record starts once the remaining time is under [`BatchSettings::deadline_margin`];
//!   records not started are reported failed, so an invocation never times out as a whole,
//!   and held back for the backoff policy's first delay (not one keyed on their receive count:
//!   they never ran). Each miss still costs a receive, so a deployment sizes its batches so that
//!   every record starts (`shared/README.md`, "Records not started").
//!   Running records see the same cut-off as [`Invocation::stop_at`]: they stop starting new
//!   work there and use the margin to record what they did.
//! - Retryable failures are reported failed and, with a [`BackoffPolicy`], made invisible for a
//!   growing, jittered delay (cut to end within SQS's 12 hours from the receive; not attempted
//!   past [`Invocation::finish_instant`]); permanent failures are parked in the dead-letter queue
//!   with their reason and then acknowledged, or reported failed when parking fails: nothing is
//!   lost.
//! - When every record failed, the invocation itself fails ([`BatchError::AllFailed`]), so the
//!   event source mapping backs off instead of hammering a dependency that is down.
//!
//! Layout: [`RecordHandler`] and the outcome types are in `record`, the pure response step in
//! `response`, the delay formula in `backoff`, and the SQS side effects behind [`QueueActions`]
//! in `queue`.

mod backoff;
mod queue;
mod record;
mod response;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::{FutureExt, StreamExt, stream};
use tokio::time::Instant;
use tracing::{Instrument, field};

pub use backoff::BackoffPolicy;
pub use queue::{ParkReason, QueueActions, SqsQueueActions, dlq_attributes};
pub use record::{
    Ack, Invocation, MessageId, RecordError, RecordHandler, RecordResult, RecordStatus,
};
pub use response::batch_response;

use crate::config::{ConfigError, Env};
use crate::telemetry::error_chain;

/// How a batch is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Records (FIFO: message groups) handled at once within one invocation. Multiplied by the
    /// event source mapping's maximum concurrency, this is the most load the workers can put on
    /// a dependency.
    pub concurrency: NonZeroUsize,
    /// No record starts when less than this is left before the invocation's deadline, and a
    /// running record stops starting new work then: the margin is the time a record needs to
    /// stop cleanly (finish a write in flight, checkpoint, send its continuation).
    pub deadline_margin: Duration,
    /// Delay retryable failures with `ChangeMessageVisibility`; `None` leaves them to the
    /// queue's visibility timeout.
    pub backoff: Option<BackoffPolicy>,
}

impl BatchSettings {
    /// Reads the settings: `BATCH_CONCURRENCY` (default 10), `BATCH_DEADLINE_MARGIN_MS` (default
    /// 3000), `RETRY_BACKOFF_BASE_SECONDS` (default 10; `0` disables backoff) and
    /// `RETRY_BACKOFF_MAX_SECONDS` (default 900).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let concurrency =
            env.parsed_or("BATCH_CONCURRENCY", NonZeroUsize::new(10).expect("10 > 0"))?;
        let margin_ms: u64 = env.parsed_or("BATCH_DEADLINE_MARGIN_MS", 3000)?;
        let base: u64 = env.parsed_or("RETRY_BACKOFF_BASE_SECONDS", 10)?;
        let max = env.seconds_or("RETRY_BACKOFF_MAX_SECONDS", Duration::from_secs(900))?;
        Ok(Self {
            concurrency,
            deadline_margin: Duration::from_millis(margin_ms),
            backoff: (base > 0).then(|| BackoffPolicy {
                base: Duration::from_secs(base),
                max,
            }),
        })
    }
}

/// Why a whole invocation fails. Lambda then returns every record of the batch to the queue.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// A record has no `messageId`, so no partial response can name it. Nothing was run.
    #[error(
        "record {index} of the batch has no messageId; failing the whole batch so no record is lost"
    )]
    MissingMessageId {
        /// Position of the record in the batch.
        index: usize,
    },
    /// Every record failed; failing the invocation makes the event source mapping back off.
    #[error(
        "all {count} records of the batch failed; failing the invocation so the event source mapping backs off"
    )]
    AllFailed {
        /// Number of records in the batch.
        count: usize,
    },
}

/// Counts of what became of a batch's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Indexed by the status's position in [`RecordStatus::ALL`].
    counts: [usize; RecordStatus::ALL.len()],
}

impl BatchSummary {
    /// How many records ended with `status`.
    pub fn count(&self, status: RecordStatus) -> usize {
        self.counts[status as usize]
    }

    /// How many records were reported failed.
    pub fn failed(&self) -> usize {
        RecordStatus::ALL
            .iter()
            .filter(|s| s.is_failure())
            .map(|s| self.count(*s))
            .sum()
    }

    fn add(&mut self, status: RecordStatus) {
        self.counts[status as usize] += 1;
    }
}

impl FromIterator<RecordStatus> for BatchSummary {
    fn from_iter<I: IntoIterator<Item = RecordStatus>>(statuses: I) -> Self {
        let mut summary = Self::default();
        for status in statuses {
            summary.add(status);
        }
        summary
    }
}

/// The result of processing a batch: the response for Lambda (or the error that fails the
/// invocation) and the counts behind it, for metrics.
#[derive(Debug)]
pub struct BatchOutcome {
    /// What to return to Lambda.
    pub result: Result<SqsBatchResponse, BatchError>,
    /// What became of the records.
    pub summary: BatchSummary,
}

/// Runs a [`RecordHandler`] over SQS batches. Build it once per execution environment.
#[derive(Debug)]
pub struct BatchProcessor<H, Q> {
    handler: H,
    queue: Q,
    settings: BatchSettings,
}

/// A record of the batch: its position and validated id. It holds no borrow of the event, so
/// the futures built from it are `Send` without higher-ranked lifetime trouble.
struct Entry {
    index: usize,
    id: MessageId,
}

impl<H: RecordHandler, Q: QueueActions> BatchProcessor<H, Q> {
    /// A processor running `handler`, with `queue` for backoff and parking.
    pub fn new(handler: H, queue: Q, settings: BatchSettings) -> Self {
        Self {
            handler,
            queue,
            settings,
        }
    }

    /// The record handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Processes `event`; `deadline` is the invocation's deadline (`Context::deadline()`).
    pub async fn process(&self, event: &SqsEvent, deadline: SystemTime) -> BatchOutcome {
        let mut entries = Vec::with_capacity(event.records.len());
        for (index, message) in event.records.iter().enumerate() {
            let Some(id) = MessageId::parse(message.message_id.as_deref()) else {
                tracing::error!(index, "record without messageId; failing the batch");
                return BatchOutcome {
                    result: Err(BatchError::MissingMessageId { index }),
                    summary: BatchSummary::default(),
                };
            };
            entries.push(Entry { index, id });
        }

        let invocation = Invocation::new(deadline, self.settings.deadline_margin);
        let stop_starting_at = invocation.stop_instant();

        // Every record starts without a status, and a record whose status is never set (its
        // unit panicked outside the record handler: while parking or delaying, or in the group
        // logic) is reported failed below: a record is acknowledged only when a status says so.
        let ids: Vec<MessageId> = entries.iter().map(|entry| entry.id.clone()).collect();
        let statuses = Statuses::new(ids.len());
        let mut runs = stream::iter(units(event, entries, is_fifo(event)))
            .map(|unit| {
                AssertUnwindSafe(self.run_unit(
                    event,
                    unit,
                    invocation,
                    stop_starting_at,
                    &statuses,
                ))
                .catch_unwind()
            })
            .buffer_unordered(self.settings.concurrency.get());
        while let Some(run) = runs.next().await {
            if let Err(panic) = run {
                tracing::error!(
                    panic = panic_message(panic.as_ref()),
                    "batch step panicked outside the record handler; its records without a status are reported failed"
                );
            }
        }
        drop(runs);

        let finished = statuses.reported(ids);
        let summary: BatchSummary = finished.iter().map(|(_, status)| *status).collect();
        let response = batch_response(finished.iter().map(|(id, status)| (id, *status)));
        tracing::info!(
            records = finished.len(),
            failed = summary.failed(),
            processed = summary.count(RecordStatus::Processed),
            duplicate = summary.count(RecordStatus::Duplicate),
            parked = summary.count(RecordStatus::Parked),
            "batch done"
        );

        let count = finished.len();
        let result = if count > 0 && summary.failed() == count {
            Err(BatchError::AllFailed { count })
        } else {
            Ok(response)
        };
        BatchOutcome { result, summary }
    }

    /// Runs one unit: a record, or a FIFO message group in order. Each record's status is set
    /// in `statuses` as soon as it is known.
    async fn run_unit(
        &self,
        event: &SqsEvent,
        unit: Unit,
        invocation: Invocation,
        stop_starting_at: Instant,
        statuses: &Statuses,
    ) {
        match unit {
            Unit::Record(entry) => {
                let status = self
                    .run_entry(event, &entry, &invocation, stop_starting_at)
                    .await;
                statuses.set(entry.index, status);
            }
            Unit::Group(entries) => {
                let mut group_failed = false;
                for entry in entries {
                    let status = if group_failed {
                        RecordStatus::Skipped
                    } else {
                        self.run_entry(event, &entry, &invocation, stop_starting_at)
                            .await
                    };
                    group_failed |= status.is_failure();
                    statuses.set(entry.index, status);
                }
            }
        }
    }

    /// Runs one record, unless the deadline is too close to start it.
    async fn run_entry(
        &self,
        event: &SqsEvent,
        entry: &Entry,
        invocation: &Invocation,
        stop_starting_at: Instant,
    ) -> RecordStatus {
        if Instant::now() >= stop_starting_at {
            self.hold_back(&event.records[entry.index], invocation)
                .await;
            return RecordStatus::NotStarted;
        }
        self.run_record(entry, &event.records[entry.index], invocation)
            .await
    }

    async fn run_record(
        &self,
        entry: &Entry,
        message: &SqsMessage,
        invocation: &Invocation,
    ) -> RecordStatus {
        let receive_count = receive_count(message);
        // One span per record, linked to the context its message carries (`crate::trace`).
        let span = tracing::info_span!(
            "record",
            otel.name = crate::trace::process_span_name(message),
            otel.kind = "consumer",
            message_id = %entry.id,
            receive_count,
            job_id = field::Empty,
            outcome = field::Empty,
            trace_id = field::Empty,
            span_id = field::Empty,
        );
        crate::trace::start_record(&span, message, entry.id.as_str());
        let status = async {
            let outcome = AssertUnwindSafe(self.handler.handle(message, invocation))
                .catch_unwind()
                .await;
            match outcome {
                Ok(Ok(Ack::Processed)) => RecordStatus::Processed,
                Ok(Ok(Ack::Duplicate)) => {
                    tracing::info!("duplicate delivery; acknowledged");
                    RecordStatus::Duplicate
                }
                Ok(Err(error)) => match &error {
                    RecordError::Retryable { retry_after, .. } => {
                        tracing::warn!(error = %error_chain(&error), "retryable failure");
                        self.back_off(message, receive_count, *retry_after, invocation)
                            .await;
                        RecordStatus::Retried
                    }
                    RecordError::Permanent { code, reason, .. } => {
                        tracing::warn!(error = %error_chain(&error), code, "permanent failure; parking");
                        let park = self.queue.park(message, ParkReason { code, reason });
                        match tokio::time::timeout_at(invocation.report_instant(), park).await {
                            Ok(Ok(())) => {
                                crate::metrics::note(|events| {
                                    *events.parked.entry(code).or_default() += 1;
                                });
                                RecordStatus::Parked
                            }
                            Ok(Err(e)) => {
                                tracing::error!(
                                    error = %error_chain(e.as_ref()),
                                    "parking failed; the record will be retried"
                                );
                                RecordStatus::ParkFailed
                            }
                            // Reported failed, the record comes back and is parked then (a
                            // park that did land leaves a second copy: see the README).
                            Err(_) => {
                                tracing::error!(
                                    "parking did not finish before the invocation's end; the record will be retried"
                                );
                                RecordStatus::ParkFailed
                            }
                        }
                    }
                },
                Err(panic) => {
                    tracing::error!(panic = panic_message(panic.as_ref()), "record handler panicked");
                    self.back_off(message, receive_count, None, invocation)
                        .await;
                    RecordStatus::Panicked
                }
            }
        }
        .instrument(span.clone())
        .await;
        span.record("outcome", status.as_str());
        status
    }

    /// Delays the next delivery of a failed message: by the backoff delay if backoff is on,
    /// and at least until `retry_after` plus up to a quarter of it again, jittered, so that
    /// records waiting on one lease or one circuit do not all come back at the same instant.
    /// A failure here only means the message comes back after the queue's visibility timeout
    /// instead.
    async fn back_off(
        &self,
        message: &SqsMessage,
        receive_count: u32,
        retry_after: Option<Duration>,
        invocation: &Invocation,
    ) {
        let backoff = self
            .settings
            .backoff
            .map(|policy| policy.delay(receive_count, fastrand::f64()));
        let delay = match (backoff, retry_after) {
            (None, None) => return,
            (backoff, retry_after) => backoff.unwrap_or_default().max(
                retry_after
                    .map(|after| {
                        backoff::whole_seconds(after + after.mul_f64(fastrand::f64() / 4.0))
                    })
                    .unwrap_or_default(),
            ),
        };
        self.delay_next_delivery(message, delay, invocation).await;
    }

    /// Holds a record that was not started back for a short, jittered while: the backoff
    /// policy's first delay (`base`, jittered into its upper half), whatever its receive count,
    /// since it never ran. It comes back to a later invocation soon, spread out from the other
    /// records not started with it, instead of after the queue's whole visibility timeout.
    /// Without backoff it is left to the visibility timeout.
    async fn hold_back(&self, message: &SqsMessage, invocation: &Invocation) {
        if let Some(policy) = self.settings.backoff {
            let delay = policy.delay(1, fastrand::f64());
            self.delay_next_delivery(message, delay, invocation).await;
        }
    }

    /// Makes `message` invisible for `delay`, cut to what SQS accepts for it (12 hours from
    /// its receive, [`backoff::visibility_limit`]). The call gives up at the invocation's
    /// [`finish_instant`](Invocation::finish_instant), and is not made past it: an invocation
    /// must never time out as a whole.
    async fn delay_next_delivery(
        &self,
        message: &SqsMessage,
        delay: Duration,
        invocation: &Invocation,
    ) {
        let delay = delay.min(backoff::visibility_limit(
            &message.attributes,
            SystemTime::now(),
        ));
        let give_up_at = invocation.finish_instant();
        if Instant::now() >= give_up_at {
            tracing::warn!("no time left to delay the next delivery");
            return;
        }
        let change = self.queue.change_visibility(message, delay);
        match tokio::time::timeout_at(give_up_at, change).await {
            Ok(Ok(())) => {
                tracing::info!(delay_seconds = delay.as_secs(), "next delivery delayed")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(e.as_ref()), "could not delay the next delivery")
            }
            Err(_) => tracing::warn!("delaying the next delivery ran out of time"),
        }
    }
}

/// Whether the batch comes from a FIFO queue. Only the source ARN says so: a standard (fair)
/// queue can carry `MessageGroupId` too, and must not be serialised by it.
fn is_fifo(event: &SqsEvent) -> bool {
    event
        .records
        .first()
        .and_then(|r| r.event_source_arn.as_deref())
        .is_some_and(|arn| arn.ends_with(".fifo"))
}

/// A unit of sequential work.
enum Unit {
    /// A record of a standard queue.
    Record(Entry),
    /// A FIFO message group's records, in batch order.
    Group(Vec<Entry>),
}

/// What became of each record of the batch, by position; `None` until its unit sets it.
struct Statuses(Mutex<Vec<Option<RecordStatus>>>);

impl Statuses {
    fn new(records: usize) -> Self {
        Self(Mutex::new(vec![None; records]))
    }

    fn set(&self, index: usize, status: RecordStatus) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(status);
    }

    /// Every record with its status, in batch order. A record nothing reported on fails
    /// closed: it is reported as [`RecordStatus::Panicked`] (what stopped its unit), so it
    /// comes back instead of being deleted unprocessed.
    fn reported(self, ids: Vec<MessageId>) -> Vec<(MessageId, RecordStatus)> {
        let statuses = self.0.into_inner().unwrap_or_else(PoisonError::into_inner);
        ids.into_iter()
            .zip(statuses)
            .map(|(id, status)| {
                let status = status.unwrap_or_else(|| {
                    tracing::error!(message_id = %id, "record has no status; reporting it failed");
                    RecordStatus::Panicked
                });
                (id, status)
            })
            .collect()
    }
}

/// Splits the batch into units of sequential work: one per record, or on FIFO one per message
/// group, each in batch order.
fn units(event: &SqsEvent, entries: Vec<Entry>, fifo: bool) -> Vec<Unit> {
    if !fifo {
        return entries.into_iter().map(Unit::Record).collect();
    }
    let mut order: Vec<Vec<Entry>> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let group = event.records[entry.index]
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        let slot = *position.entry(group).or_insert_with(|| {
            order.push(Vec::new());
            order.len() - 1
        });
        order[slot].push(entry);
    }
    order.into_iter().map(Unit::Group).collect()
}

/// How many times SQS has delivered `message` (`ApproximateReceiveCount`; 1 when absent).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload")
}

#[cfg(test)]
mod tests;
