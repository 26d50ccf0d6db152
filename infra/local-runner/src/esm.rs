//! An emulation of Lambda's SQS event source mapping.
//!
//! What it reproduces, with the settings of the template's SQS event:
//! - **Batching**: up to `batch_size` messages per invocation, gathered for at most
//!   `batching_window` (with no window, one receive's worth is sent at once).
//! - **Scaling**: as long as messages are waiting, more invocations run concurrently, up to
//!   `maximum_concurrency`.
//! - **Timeout**: an invocation still running at the function timeout fails its whole batch.
//! - **Responses**: with `ReportBatchItemFailures`, an empty or absent `batchItemFailures`
//!   acknowledges everything; listed ids stay on the queue; an empty, unknown or malformed
//!   `itemIdentifier`, an unparseable response or a function error fails the whole batch.
//!   Without it, any successful response acknowledges the whole batch.
//! - **Acknowledging**: acknowledged messages are deleted in batches of 10; failed ones are left
//!   to reappear after their visibility timeout (or the delay the function set).
//! - **Backing off after function errors**: Lambda scales an SQS mapping down while the function
//!   fails. Here the slot of an invocation that failed as a whole (an error, a crash, a time-out)
//!   stays taken for a delay that doubles with each consecutive failed invocation, from
//!   [`ERROR_BACKOFF_BASE`] up to [`ERROR_BACKOFF_MAX`], and a successful invocation resets it.
//!   AWS does not publish its exact schedule; this one is a model of it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The first delay before a slot polls again after a failed invocation.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest delay before a slot polls again after failed invocations.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long the slot of a failed invocation waits, after `consecutive` failed invocations in a
/// row (from 1).
pub fn error_backoff(consecutive: u32) -> Duration {
    ERROR_BACKOFF_BASE
        .saturating_mul(1 << consecutive.saturating_sub(1).min(16))
        .min(ERROR_BACKOFF_MAX)
}

/// The event source mapping's settings (the template's SQS event and function timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingSettings {
    /// Most messages per invocation.
    pub batch_size: usize,
    /// How long to gather a batch.
    pub batching_window: Duration,
    /// Most concurrent invocations.
    pub maximum_concurrency: usize,
    /// The function's timeout.
    pub function_timeout: Duration,
    /// Whether `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
}

/// A function the mapping invokes. Its response is raw JSON, as Lambda sees it.
pub trait Function: Send + Sync + 'static {
    /// Handles `event` before `deadline`; `Err` is a function error.
    fn invoke(
        &self,
        event: SqsEvent,
        deadline: SystemTime,
    ) -> impl Future<Output = Result<Value, String>> + Send;
}

/// What Lambda does with a batch after an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Delete every message.
    AcknowledgeAll,
    /// Delete every message except these ids.
    Retry(HashSet<String>),
    /// Delete nothing: the whole batch comes back.
    FailBatch(String),
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// The function returned this response.
    Returned(Value),
    /// The function returned an error.
    Failed(String),
    /// The function ran past its timeout.
    TimedOut,
}

/// Lambda's rules for a batch's outcome: the pure core of the emulation.
pub fn disposition(
    invocation: &Invocation,
    batch_ids: &[String],
    report_failures: bool,
) -> Disposition {
    let response = match invocation {
        Invocation::Failed(error) => {
            return Disposition::FailBatch(format!("function error: {error}"));
        }
        Invocation::TimedOut => return Disposition::FailBatch("function timed out".into()),
        Invocation::Returned(response) => response,
    };
    if !report_failures {
        return Disposition::AcknowledgeAll;
    }
    let failures = match response {
        Value::Null => return Disposition::AcknowledgeAll,
        Value::Object(fields) => match fields.get("batchItemFailures") {
            None | Some(Value::Null) => return Disposition::AcknowledgeAll,
            Some(Value::Array(failures)) => failures,
            Some(other) => {
                return Disposition::FailBatch(format!("batchItemFailures is not a list: {other}"));
            }
        },
        other => return Disposition::FailBatch(format!("unparseable response: {other}")),
    };
    let known: HashSet<&str> = batch_ids.iter().map(String::as_str).collect();
    let mut retry = HashSet::new();
    for failure in failures {
        match failure.get("itemIdentifier") {
            Some(Value::String(id)) if known.contains(id.as_str()) => {
                retry.insert(id.clone());
            }
            Some(Value::String(id)) if id.is_empty() => {
                return Disposition::FailBatch("an itemIdentifier is empty".into());
            }
            Some(Value::String(id)) => {
                return Disposition::FailBatch(format!("itemIdentifier {id} is not in the batch"));
            }
            _ => return Disposition::FailBatch(format!("malformed batch item failure: {failure}")),
        }
    }
    if retry.is_empty() {
        Disposition::AcknowledgeAll
    } else {
        Disposition::Retry(retry)
    }
}

/// What one invocation of the mapping did, for observers (progress displays, tests).
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationReport {
    /// Messages in the batch.
    pub batch_size: usize,
    /// Messages deleted.
    pub acknowledged: usize,
    /// Whether the function ran past its timeout (its batch failed as a whole).
    pub timed_out: bool,
    /// What Lambda decided.
    pub disposition: Disposition,
}

/// Chaos settings of the mapping (`make chaos`); the default changes nothing.
#[derive(Debug, Clone, Default)]
pub struct MappingChaos {
    /// Share of received messages also handed to a second, concurrent invocation (with the
    /// same message id and receipt handle), as SQS's at-least-once delivery allows.
    pub duplicate_rate: f64,
    /// Visibility timeout of each receive, overriding the queue's.
    pub visibility_timeout: Option<Duration>,
    /// Counts the messages handed to a second invocation.
    pub duplicated: Arc<AtomicU64>,
}

/// The emulated event source mapping of one queue and one function.
pub struct EventSourceMapping<F> {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    settings: MappingSettings,
    function: Arc<F>,
    chaos: MappingChaos,
    /// Invocations failed as a whole in a row.
    failing: AtomicU32,
}

impl<F: Function> EventSourceMapping<F> {
    /// A mapping from the queue at `queue_url` (ARN `queue_arn`) to `function`.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        queue_arn: impl Into<String>,
        settings: MappingSettings,
        function: F,
    ) -> Self {
        Self {
            sqs,
            queue_url: queue_url.into(),
            queue_arn: queue_arn.into(),
            settings,
            function: Arc::new(function),
            chaos: MappingChaos::default(),
            failing: AtomicU32::new(0),
        }
    }

    /// The same mapping with `chaos`.
    pub fn with_chaos(mut self, chaos: MappingChaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Polls and invokes until `stop` resolves, then waits for invocations in flight. Each
    /// finished invocation is reported on `reports`.
    pub async fn run(
        self: Arc<Self>,
        stop: impl Future<Output = ()>,
        reports: tokio::sync::mpsc::UnboundedSender<InvocationReport>,
    ) {
        let slots = Arc::new(Semaphore::new(self.settings.maximum_concurrency.max(1)));
        let poll = async {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let batch = self.gather().await;
                if batch.is_empty() {
                    continue;
                }
                let rate = self.chaos.duplicate_rate;
                let copies: Vec<Message> = if rate > 0.0 {
                    batch
                        .iter()
                        .filter(|_| fastrand::f64() < rate)
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                self.spawn_invocation(batch, slot, &reports);
                if !copies.is_empty() {
                    // The copies go to a concurrent invocation of their own, in a slot of its own.
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        return;
                    };
                    self.chaos
                        .duplicated
                        .fetch_add(copies.len() as u64, Ordering::Relaxed);
                    self.spawn_invocation(copies, slot, &reports);
                }
            }
        };
        tokio::select! {
            () = poll => {}
            () = stop => {}
        }
        // Wait for every invocation in flight to finish.
        let all = u32::try_from(self.settings.maximum_concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = slots.acquire_many(all).await;
    }

    fn spawn_invocation(
        self: &Arc<Self>,
        batch: Vec<Message>,
        slot: tokio::sync::OwnedSemaphorePermit,
        reports: &tokio::sync::mpsc::UnboundedSender<InvocationReport>,
    ) {
        let mapping = Arc::clone(self);
        let reports = reports.clone();
        tokio::spawn(async move {
            let report = mapping.invoke(batch).await;
            let failed = matches!(&report.disposition, Disposition::FailBatch(_))
                && report.acknowledged == 0;
            let _ = reports.send(report);
            if failed {
                let consecutive = mapping.failing.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::time::sleep(error_backoff(consecutive)).await;
            } else {
                mapping.failing.store(0, Ordering::Relaxed);
            }
            drop(slot);
        });
    }

    /// Receives up to `batch_size` messages: waits for a first message, then gathers more
    /// until the batch is full or the batching window (which opens at the first message) ends.
    async fn gather(&self) -> Vec<Message> {
        let mut batch: Vec<Message> = Vec::new();
        let mut window_ends: Option<Instant> = None;
        loop {
            let wanted = (self.settings.batch_size - batch.len()).min(10);
            let wait = match window_ends {
                None => Duration::from_secs(1),
                Some(ends) => ends.saturating_duration_since(Instant::now()),
            };
            let received = self.receive(wanted, wait).await;
            if received.is_empty() && window_ends.is_some() && wait < Duration::from_secs(1) {
                // A short poll found nothing: wait out the rest of the window without spinning.
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            }
            batch.extend(received);
            if batch.is_empty() {
                continue;
            }
            let ends =
                *window_ends.get_or_insert_with(|| Instant::now() + self.settings.batching_window);
            if batch.len() >= self.settings.batch_size || Instant::now() >= ends {
                return batch;
            }
        }
    }

    /// One `ReceiveMessage` of up to `wanted` messages, long-polling up to `wait` (whole seconds).
    async fn receive(&self, wanted: usize, wait: Duration) -> Vec<Message> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(i32::try_from(wanted).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(0))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .set_visibility_timeout(
                self.chaos
                    .visibility_timeout
                    .map(|t| i32::try_from(t.as_secs()).unwrap_or(i32::MAX)),
            )
            .send()
            .await;
        match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    async fn invoke(&self, batch: Vec<Message>) -> InvocationReport {
        let ids: Vec<String> = batch.iter().filter_map(|m| m.message_id.clone()).collect();
        let event = lambda_event(&batch, &self.queue_arn);
        let deadline = SystemTime::now() + self.settings.function_timeout;
        let invocation = match tokio::time::timeout(
            self.settings.function_timeout,
            self.function.invoke(event, deadline),
        )
        .await
        {
            Ok(Ok(response)) => Invocation::Returned(response),
            Ok(Err(error)) => Invocation::Failed(error),
            Err(_) => Invocation::TimedOut,
        };
        let disposition = disposition(&invocation, &ids, self.settings.report_batch_item_failures);
        let acknowledged: Vec<&Message> = match &disposition {
            Disposition::AcknowledgeAll => batch.iter().collect(),
            Disposition::Retry(failed) => batch
                .iter()
                .filter(|m| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
                .collect(),
            Disposition::FailBatch(reason) => {
                tracing::warn!(reason, records = batch.len(), "the whole batch failed");
                Vec::new()
            }
        };
        self.delete(&acknowledged).await;
        InvocationReport {
            batch_size: batch.len(),
            acknowledged: acknowledged.len(),
            timed_out: invocation == Invocation::TimedOut,
            disposition,
        }
    }

    async fn delete(&self, messages: &[&Message]) {
        for chunk in messages.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle.clone())
                        .build()
                        .ok()
                })
                .collect();
            let deleted = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed; the messages will be redelivered");
            }
        }
    }
}

/// The event Lambda builds from messages received from the queue `queue_arn`: real ids,
/// receipt handles, system and message attributes.
pub fn lambda_event(messages: &[Message], queue_arn: &str) -> SqsEvent {
    let region = queue_arn.split(':').nth(3).unwrap_or("us-east-1");
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            let attributes: serde_json::Map<String, Value> = message
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            let message_attributes: serde_json::Map<String, Value> = message
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(name, value)| {
                            (
                                name.clone(),
                                json!({
                                    "stringValue": value.string_value(),
                                    "dataType": value.data_type(),
                                    "stringListValues": [],
                                    "binaryListValues": [],
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": message.message_id(),
                "receiptHandle": message.receipt_handle(),
                "body": message.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("the event is well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn returned(value: Value) -> Disposition {
        disposition(&Invocation::Returned(value), &ids(), true)
    }

    #[test]
    fn an_empty_or_absent_failure_list_acknowledges_everything() {
        assert_eq!(
            returned(json!({ "batchItemFailures": [] })),
            Disposition::AcknowledgeAll
        );
        assert_eq!(returned(json!({})), Disposition::AcknowledgeAll);
        assert_eq!(returned(Value::Null), Disposition::AcknowledgeAll);
        assert_eq!(
            returned(json!({ "batchItemFailures": null })),
            Disposition::AcknowledgeAll
        );
    }

    #[test]
    fn listed_ids_are_retried_and_the_rest_acknowledged() {
        let response = json!({ "batchItemFailures": [{ "itemIdentifier": "b" }] });
        assert_eq!(
            returned(response),
            Disposition::Retry(HashSet::from(["b".to_owned()]))
        );
    }

    #[test]
    fn an_empty_unknown_or_malformed_identifier_fails_the_whole_batch() {
        for response in [
            json!({ "batchItemFailures": [{ "itemIdentifier": "" }] }),
            json!({ "batchItemFailures": [{ "itemIdentifier": "z" }] }),
            json!({ "batchItemFailures": [{ "itemIdentifier": 7 }] }),
            json!({ "batchItemFailures": [{ "id": "a" }] }),
            json!({ "batchItemFailures": "a" }),
            json!("ok"),
            json!([1, 2]),
        ] {
            assert!(
                matches!(returned(response.clone()), Disposition::FailBatch(_)),
                "{response}"
            );
        }
    }

    #[test]
    fn a_function_error_or_timeout_fails_the_whole_batch() {
        assert!(matches!(
            disposition(&Invocation::Failed("boom".into()), &ids(), true),
            Disposition::FailBatch(_)
        ));
        assert!(matches!(
            disposition(&Invocation::TimedOut, &ids(), false),
            Disposition::FailBatch(_)
        ));
    }

    #[test]
    fn after_failed_invocations_a_slot_waits_longer_up_to_a_cap() {
        let delays: Vec<u64> = (1..=7).map(|n| error_backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(error_backoff(u32::MAX), ERROR_BACKOFF_MAX);
    }

    #[test]
    fn without_report_batch_item_failures_a_response_acknowledges_everything() {
        let response = json!({ "batchItemFailures": [{ "itemIdentifier": "b" }] });
        assert_eq!(
            disposition(&Invocation::Returned(response), &ids(), false),
            Disposition::AcknowledgeAll
        );
    }
}
