//! Reading and purging the dead-letter queue.
//!
//! Reading a queue means receiving its messages. [`list`] holds each message invisible only
//! while it collects the batch, then makes every one visible again, so listing consumes
//! nothing. The dead-letter queue has no redrive policy of its own, so the receives it counts
//! do not move anything.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use queue_worker::batch::dlq_attributes;
use queue_worker::job;
use serde::Serialize;

use crate::OpsError;
use crate::text::printable;

/// The class of a message that SQS moved after too many receives, rather than the processor
/// parking it with a reason.
pub const EXHAUSTED_RETRIES: &str = "max_receive_count_exceeded";

/// Largest batch SQS accepts per receive, send or delete.
pub(crate) const SQS_BATCH: i32 = 10;

/// One message in the dead-letter queue, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedMessage {
    /// The message id in the dead-letter queue.
    pub message_id: String,
    /// The job's id (its `job_id` attribute, set by the library's job queue).
    pub job_id: Option<String>,
    /// The failure's class: the processor's code, or [`EXHAUSTED_RETRIES`].
    pub error_class: String,
    /// The failure's reason, for people.
    pub reason: String,
    /// Receives on the source queue before it was parked.
    pub receive_count: u64,
    /// Seconds since the message entered the dead-letter queue.
    pub age_seconds: u64,
}

impl ParkedMessage {
    /// Reads the operator's view of a received message.
    pub fn from_message(message: &Message) -> Self {
        let attribute = |name: &str| {
            message
                .message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.string_value())
                .map(str::to_owned)
        };
        let system = |name: MessageSystemAttributeName| {
            message
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let job_id = attribute(job::attributes::JOB_ID);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let sent_ms = system(MessageSystemAttributeName::SentTimestamp).unwrap_or(now_ms);
        let parked_with_reason = attribute(dlq_attributes::ERROR_CLASS).is_some();
        Self {
            message_id: message.message_id().unwrap_or_default().to_owned(),
            job_id,
            error_class: attribute(dlq_attributes::ERROR_CLASS)
                .unwrap_or_else(|| EXHAUSTED_RETRIES.to_owned()),
            reason: attribute(dlq_attributes::REASON).unwrap_or_else(|| {
                "moved by the queue's redrive policy after maxReceiveCount receives".to_owned()
            }),
            receive_count: if parked_with_reason {
                attribute(dlq_attributes::RECEIVE_COUNT).and_then(|v| v.parse().ok())
            } else {
                system(MessageSystemAttributeName::ApproximateReceiveCount)
            }
            .unwrap_or(0),
            age_seconds: now_ms.saturating_sub(sent_ms) / 1000,
        }
    }
}

impl ParkedMessage {
    /// The columns of [`cells`](Self::cells).
    pub const COLUMNS: [&str; 6] = [
        "message id",
        "job id",
        "class",
        "reason",
        "receives",
        "parked for",
    ];

    /// The message as a table row, every text made [`printable`](crate::text::printable):
    /// the attributes are whatever was sent to the queue, and may hold terminal escapes.
    pub fn cells(&self) -> [String; 6] {
        [
            printable(&self.message_id),
            printable(self.job_id.as_deref().unwrap_or("-")),
            printable(&self.error_class),
            printable(&self.reason),
            self.receive_count.to_string(),
            humantime::format_duration(Duration::from_secs(self.age_seconds)).to_string(),
        ]
    }
}

/// Receives up to [`SQS_BATCH`] messages with every attribute, invisible for `visibility`. The
/// system attributes include `MessageGroupId`, which a redrive into a FIFO queue needs.
pub(crate) async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    visibility: Duration,
    wait: Duration,
) -> Result<Vec<Message>, OpsError> {
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(SQS_BATCH)
        .visibility_timeout(seconds(visibility))
        .wait_time_seconds(seconds(wait))
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(
                "receiving from the dead-letter queue",
                "sqs:ReceiveMessage",
                e,
            )
        })?;
    Ok(received.messages.unwrap_or_default())
}

/// Makes the messages with these receipt handles visible again at once.
pub(crate) async fn release(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    receipt_handles: &[String],
) -> Result<(), OpsError> {
    for chunk in receipt_handles.chunks(SQS_BATCH as usize) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        sqs.change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                OpsError::from_sdk(
                    "restoring visibility in the dead-letter queue",
                    "sqs:ChangeMessageVisibility",
                    e,
                )
            })?;
    }
    Ok(())
}

/// Deletes the messages with these receipt handles; returns how many SQS confirmed.
pub(crate) async fn delete(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    receipt_handles: &[String],
) -> Result<usize, OpsError> {
    let mut deleted = 0;
    for chunk in receipt_handles.chunks(SQS_BATCH as usize) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let output = sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                OpsError::from_sdk(
                    "deleting from the dead-letter queue",
                    "sqs:DeleteMessage",
                    e,
                )
            })?;
        deleted += output.successful().len();
    }
    Ok(deleted)
}

/// Lists up to `max` messages of the dead-letter queue at `url` without consuming them: each is
/// held invisible for `hold` while the list is collected, then made visible again.
pub async fn list(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: usize,
    hold: Duration,
) -> Result<Vec<ParkedMessage>, OpsError> {
    let mut seen: HashMap<String, ParkedMessage> = HashMap::new();
    let mut handles = Vec::new();
    let outcome = async {
        while seen.len() < max {
            let batch = receive(sqs, url, hold, Duration::from_secs(1)).await?;
            if batch.is_empty() {
                break;
            }
            for message in &batch {
                handles.extend(message.receipt_handle().map(str::to_owned));
                let parked = ParkedMessage::from_message(message);
                seen.entry(parked.message_id.clone()).or_insert(parked);
            }
        }
        Ok::<_, OpsError>(())
    }
    .await;
    // Restore visibility even when collecting failed half-way.
    release(sqs, url, &handles).await?;
    outcome?;
    let mut messages: Vec<_> = seen.into_values().take(max).collect();
    messages.sort_by_key(|m| std::cmp::Reverse(m.age_seconds));
    Ok(messages)
}

/// Deletes every message of the dead-letter queue at `url` whose class is `class` (every
/// message when `None`), and returns how many were deleted. Messages of other classes are held
/// invisible during the pass and made visible again after it; the pass ends when the queue is
/// empty or only kept messages come back.
pub async fn purge(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    class: Option<&str>,
    hold: Duration,
) -> Result<usize, OpsError> {
    let mut deleted = 0;
    let mut kept = Vec::new();
    let mut kept_ids = HashSet::new();
    let outcome = async {
        loop {
            let batch = receive(sqs, url, hold, Duration::from_secs(1)).await?;
            let mut doomed = Vec::new();
            let mut new = false;
            for message in batch {
                let handle = message.receipt_handle().unwrap_or_default().to_owned();
                if matches_class(&message, class) {
                    doomed.push(handle);
                    new = true;
                } else {
                    new |= kept_ids.insert(message.message_id().unwrap_or_default().to_owned());
                    kept.push(handle);
                }
            }
            deleted += delete(sqs, url, &doomed).await?;
            if !new {
                return Ok::<_, OpsError>(());
            }
        }
    }
    .await;
    release(sqs, url, &kept).await?;
    outcome?;
    Ok(deleted)
}

/// Whether `message` is of `class` (any class when `None`).
pub(crate) fn matches_class(message: &Message, class: Option<&str>) -> bool {
    class.is_none_or(|class| ParkedMessage::from_message(message).error_class == class)
}

pub(crate) fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;

    fn text(value: &str) -> MessageAttributeValue {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .unwrap()
    }

    #[test]
    fn a_parked_message_shows_its_attributes_escaped_and_bounded() {
        let message = Message::builder()
            .message_id("m-1")
            .message_attributes(job::attributes::JOB_ID, text("job\u{1b}]0;pwned\u{7}"))
            .message_attributes(dlq_attributes::ERROR_CLASS, text("invalid_file\u{9b}2J"))
            .message_attributes(
                dlq_attributes::REASON,
                text(&format!(
                    "line 1:\u{1b}[31m{}\r\nfake row",
                    "x".repeat(10_000)
                )),
            )
            .build();
        let cells = ParkedMessage::from_message(&message).cells();
        assert_eq!(cells[1], "job\\u{1b}]0;pwned\\u{7}");
        assert_eq!(cells[2], "invalid_file\\u{9b}2J");
        assert!(
            cells[3].starts_with("line 1:\\u{1b}[31mxxx"),
            "{}",
            cells[3]
        );
        assert!(cells[3].chars().count() <= crate::text::MAX_CELL_CHARS);
        for cell in cells {
            assert!(!cell.chars().any(char::is_control), "{cell:?}");
        }
    }
}
