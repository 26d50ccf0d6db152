//! Moving parked messages back to the job queue.
//!
//! Two ways, same guarantee (every message reaches the job queue at least once):
//! - [`start_native`]: SQS's own message move task (`StartMessageMoveTask`), rate-limited and
//!   cancellable; [`native_progress`] follows it. Not every backend has it (moto does not).
//! - [`move_loop`]: receive from the dead-letter queue, send to the job queue, and only then
//!   delete from the dead-letter queue. Interrupted at any point, it loses nothing: a message
//!   sent but not yet deleted becomes visible again in the dead-letter queue and is moved a
//!   second time, a duplicate the idempotent consumer absorbs. It can also filter by class.
//!
//! Both remove the `dlq.*` attributes the processor added when it parked the message. Into a
//! FIFO queue the loop sends each message in its original message group, deduplicated on its
//! dead-letter message id ([`fifo_ids`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use queue_worker::batch::dlq_attributes;
use serde::Serialize;

use crate::dlq::{self, SQS_BATCH};
use crate::{OpsError, Queues};

/// The state of a native move task.
#[derive(Debug, Clone, Serialize)]
pub struct MoveTask {
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// Messages moved so far.
    pub moved: u64,
    /// Messages the task set out to move.
    pub to_move: Option<u64>,
    /// Why the task failed, when it did.
    pub failure_reason: Option<String>,
    /// Handle for cancelling the task.
    pub task_handle: Option<String>,
}

impl MoveTask {
    /// Whether the task has stopped.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "CANCELLED" | "FAILED")
    }
}

/// Starts SQS's move task from the dead-letter queue to the job queue at `rate` messages per
/// second (`None`: as fast as SQS goes). Returns the task handle.
pub async fn start_native(
    sqs: &aws_sdk_sqs::Client,
    queues: &Queues,
    rate: Option<u32>,
) -> Result<String, OpsError> {
    let started = sqs
        .start_message_move_task()
        .source_arn(&queues.dlq_arn)
        .destination_arn(&queues.queue_arn)
        .set_max_number_of_messages_per_second(rate.map(|r| r as i32))
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(
                "starting a message move task",
                "sqs:StartMessageMoveTask",
                e,
            )
        })?;
    Ok(started.task_handle.unwrap_or_default())
}

/// The most recent move task out of the dead-letter queue, if any.
pub async fn native_progress(
    sqs: &aws_sdk_sqs::Client,
    queues: &Queues,
) -> Result<Option<MoveTask>, OpsError> {
    let listed = sqs
        .list_message_move_tasks()
        .source_arn(&queues.dlq_arn)
        .max_results(1)
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(
                "reading the message move task",
                "sqs:ListMessageMoveTasks",
                e,
            )
        })?;
    Ok(listed.results().first().map(|task| MoveTask {
        status: task.status().unwrap_or_default().to_owned(),
        moved: task.approximate_number_of_messages_moved().max(0) as u64,
        to_move: task
            .approximate_number_of_messages_to_move()
            .map(|n| n.max(0) as u64),
        failure_reason: task.failure_reason().map(str::to_owned),
        task_handle: task.task_handle().map(str::to_owned),
    }))
}

/// Cancels the running move task out of the dead-letter queue. Messages already moved stay
/// moved.
pub async fn cancel_native(sqs: &aws_sdk_sqs::Client, queues: &Queues) -> Result<u64, OpsError> {
    let task = native_progress(sqs, queues)
        .await?
        .filter(|t| t.status == "RUNNING")
        .ok_or_else(|| {
            OpsError::Invalid("no move task is running on the dead-letter queue".into())
        })?;
    let cancelled = sqs
        .cancel_message_move_task()
        .task_handle(task.task_handle.unwrap_or_default())
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(
                "cancelling the message move task",
                "sqs:CancelMessageMoveTask",
                e,
            )
        })?;
    Ok(cancelled.approximate_number_of_messages_moved().max(0) as u64)
}

/// Settings of [`move_loop`].
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Move only messages of this class (see [`dlq::ParkedMessage::error_class`]).
    pub class: Option<String>,
    /// At most this many messages per second.
    pub rate: Option<u32>,
    /// How long a received message stays invisible in the dead-letter queue: if the loop dies
    /// holding it, it reappears after this and the next run moves it.
    pub hold: Duration,
}

/// What a [`move_loop`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoopReport {
    /// Messages sent to the job queue and deleted from the dead-letter queue.
    pub moved: u64,
    /// Messages left in the dead-letter queue (other classes).
    pub skipped: u64,
}

/// Moves messages from the dead-letter queue back to the job queue: send first, delete second.
/// Calls `progress` after every batch. Ends when the dead-letter queue has no message left to
/// move.
pub async fn move_loop(
    sqs: &aws_sdk_sqs::Client,
    queues: &Queues,
    options: &LoopOptions,
    mut progress: impl FnMut(&LoopReport),
) -> Result<LoopReport, OpsError> {
    let mut report = LoopReport::default();
    let mut kept = Vec::new();
    let mut kept_ids = HashSet::new();
    let started = Instant::now();
    let outcome = async {
        loop {
            let batch =
                dlq::receive(sqs, &queues.dlq_url, options.hold, Duration::from_secs(1)).await?;
            let mut movable = Vec::new();
            let mut new = false;
            for message in batch {
                if dlq::matches_class(&message, options.class.as_deref()) {
                    movable.push(message);
                    new = true;
                } else {
                    new |= kept_ids.insert(message.message_id().unwrap_or_default().to_owned());
                    kept.extend(message.receipt_handle().map(str::to_owned));
                }
            }
            let sent = send_back(sqs, &queues.queue_url, &movable).await?;
            report.moved += dlq::delete(sqs, &queues.dlq_url, &sent).await? as u64;
            report.skipped = kept_ids.len() as u64;
            progress(&report);
            if !new {
                return Ok::<_, OpsError>(());
            }
            if let Some(rate) = options.rate.filter(|r| *r > 0) {
                // Pace the moves: never ahead of `rate` messages per second on average.
                let due = Duration::from_secs_f64(report.moved as f64 / f64::from(rate));
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
        }
    }
    .await;
    dlq::release(sqs, &queues.dlq_url, &kept).await?;
    outcome?;
    Ok(report)
}

/// Sends `messages` to the queue at `url` without their `dlq.*` attributes (into a FIFO queue
/// with [`fifo_ids`]); returns the receipt handles (in the dead-letter queue) of those SQS
/// accepted, the only ones safe to delete.
async fn send_back(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[Message],
) -> Result<Vec<String>, OpsError> {
    let mut accepted = Vec::new();
    for chunk in messages.chunks(SQS_BATCH as usize) {
        if chunk.is_empty() {
            continue;
        }
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let attributes = message
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| !dlq_attributes::ALL.contains(&name.as_str()))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect::<std::collections::HashMap<String, MessageAttributeValue>>();
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.body().unwrap_or_default())
                    .set_message_attributes((!attributes.is_empty()).then_some(attributes));
                let entry = match fifo_ids(url, message) {
                    Some((group, deduplication)) => entry
                        .message_group_id(group)
                        .message_deduplication_id(deduplication),
                    None => entry,
                };
                entry.build().expect("id and body are set")
            })
            .collect();
        let output = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                OpsError::from_sdk("sending back to the job queue", "sqs:SendMessage", e)
            })?;
        for ok in output.successful() {
            if let Some(message) = ok.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                accepted.extend(message.receipt_handle().map(str::to_owned));
            }
        }
    }
    Ok(accepted)
}

/// The message group and deduplication ids of `message` sent to the queue at `url`, when that
/// is a FIFO queue (SQS rejects a send to one without a group id, and without a deduplication id
/// unless the queue dedupes on content); `None` for a standard queue.
///
/// The group is the one the message had (its `MessageGroupId` system attribute: a FIFO queue's
/// dead-letter queue is FIFO too, and the processor parks a message in its group), so order
/// within a group holds across the round trip; a message without one gets a group of its own.
/// The deduplication id is the message's id in the dead-letter queue: the same on every run, so
/// a message sent back by an interrupted run and again by the next one is collapsed by SQS
/// within its 5-minute window. Not the original's deduplication id: the job queue would take a
/// message sent back within 5 minutes of the original send as a duplicate, accept it and drop
/// it, and the loop would then delete the only copy from the dead-letter queue.
fn fifo_ids<'a>(url: &str, message: &'a Message) -> Option<(&'a str, &'a str)> {
    if !url.ends_with(".fifo") {
        return None;
    }
    let id = message.message_id().unwrap_or_default();
    let group = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .map_or(id, String::as_str);
    Some((group, id))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parked(id: &str, group: Option<&str>) -> Message {
        let attributes: HashMap<_, _> = group
            .map(|g| (MessageSystemAttributeName::MessageGroupId, g.to_owned()))
            .into_iter()
            .collect();
        Message::builder()
            .message_id(id)
            .body("{}")
            .set_attributes(Some(attributes))
            .build()
    }

    #[test]
    fn a_fifo_target_gets_the_messages_group_and_its_dead_letter_id_as_deduplication_id() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo";
        assert_eq!(
            fifo_ids(url, &parked("m-1", Some("import-7"))),
            Some(("import-7", "m-1"))
        );
        assert_eq!(fifo_ids(url, &parked("m-2", None)), Some(("m-2", "m-2")));
    }

    #[test]
    fn a_standard_target_gets_neither() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs";
        assert_eq!(fifo_ids(url, &parked("m-1", Some("import-7"))), None);
    }
}
