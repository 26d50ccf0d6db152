//! The two queue operations the batch processor makes itself: delaying a retry and parking a
//! poison message. Everything else (deleting acknowledged messages) Lambda does from the
//! partial batch response.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::BoxError;

/// Message attributes a parked message carries in the dead-letter queue, besides the original
/// message's own attributes.
pub mod dlq_attributes {
    /// The failure's class (the handler's `code`, e.g. `malformed_job`).
    pub const ERROR_CLASS: &str = "dlq.error_class";
    /// The failure's reason, for people.
    pub const REASON: &str = "dlq.reason";
    /// The SQS message id of the message that failed.
    pub const ORIGINAL_MESSAGE_ID: &str = "dlq.original_message_id";
    /// How many times the message had been received when it was parked.
    pub const RECEIVE_COUNT: &str = "dlq.receive_count";
    /// ARN of the queue the message came from: where a redrive sends it back.
    pub const SOURCE_QUEUE: &str = "dlq.source_queue";
    /// Every attribute above; a redrive removes these before sending a message back.
    pub const ALL: [&str; 5] = [
        ERROR_CLASS,
        REASON,
        ORIGINAL_MESSAGE_ID,
        RECEIVE_COUNT,
        SOURCE_QUEUE,
    ];
}

/// SQS allows at most this many message attributes per message.
const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// SQS's largest message, counting the body and each attribute's name, data type and value:
/// 1 MiB since August 2025 (a queue's `MaximumMessageSize` can lower it, not raise it).
const MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Reasons are cut to at most this many bytes in the DLQ attributes, and shorter when the
/// message would not fit otherwise: the reason is for people, and never what makes parking fail.
const MAX_REASON_BYTES: usize = 4096;

/// A parked copy would not fit in an SQS message, whatever its reason says.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the body and dead-letter attributes come to {bytes} bytes, over SQS's {max}-byte message \
     limit; the message stays on its queue, whose redrive policy moves it to the dead-letter \
     queue after maxReceiveCount receives"
)]
struct TooLargeToPark {
    bytes: usize,
    max: usize,
}

/// Why a message is being parked.
#[derive(Debug, Clone, Copy)]
pub struct ParkReason<'a> {
    /// The failure's class.
    pub code: &'a str,
    /// The failure's reason.
    pub reason: &'a str,
}

/// Queue operations the batch processor needs, as a seam: the SQS adapter in production, a fake
/// in unit tests.
pub trait QueueActions: Send + Sync {
    /// Makes `message` invisible for `delay` from now (the backoff before its next delivery).
    fn change_visibility(
        &self,
        message: &SqsMessage,
        delay: Duration,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Sends a copy of `message` to the dead-letter queue with `why` in its attributes. Only
    /// after this succeeds may the original be acknowledged.
    fn park(
        &self,
        message: &SqsMessage,
        why: ParkReason<'_>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// An SQS client, or what builds one when it is first used.
type SqsClient = LazyLock<aws_sdk_sqs::Client, Box<dyn FnOnce() -> aws_sdk_sqs::Client + Send>>;

/// [`QueueActions`] on SQS.
///
/// Needs `sqs:ChangeMessageVisibility` and `sqs:GetQueueUrl` on the source queue and
/// `sqs:SendMessage` on the dead-letter queue.
///
/// A parked copy carries the `dlq.*` attributes besides the body, and SQS counts both against
/// its 1 MiB limit: the reason is cut to the room left, and a body too large for even the other
/// attributes fails to park, so the record is reported failed and, after `maxReceiveCount`
/// receives, the queue's redrive policy moves the original (without a reason) to the DLQ.
#[derive(Debug)]
pub struct SqsQueueActions {
    client: SqsClient,
    dead_letter_queue_url: String,
    /// Queue URLs by ARN, resolved once per execution environment.
    urls: Mutex<HashMap<String, String>>,
}

impl SqsQueueActions {
    /// Parks messages in the queue at `dead_letter_queue_url`, with `client`.
    pub fn new(client: aws_sdk_sqs::Client, dead_letter_queue_url: impl Into<String>) -> Self {
        Self::with_client(
            LazyLock::new(Box::new(move || client)),
            dead_letter_queue_url,
        )
    }

    /// Like [`new`](Self::new), with a client built from `sdk` when a record first fails.
    ///
    /// Only a failing record needs the queue (to delay its retry or to park it), so an
    /// execution environment that sees none never builds the client; building one is a good
    /// part of a cold start (the SDK parses its endpoint rules and compiles their patterns).
    pub fn on_first_failure(sdk: &SdkConfig, dead_letter_queue_url: impl Into<String>) -> Self {
        let sdk = sdk.clone();
        Self::with_client(
            LazyLock::new(Box::new(move || aws_sdk_sqs::Client::new(&sdk))),
            dead_letter_queue_url,
        )
    }

    fn with_client(client: SqsClient, dead_letter_queue_url: impl Into<String>) -> Self {
        Self {
            client,
            dead_letter_queue_url: dead_letter_queue_url.into(),
            urls: Mutex::default(),
        }
    }

    /// The URL of the queue with this ARN (`arn:aws:sqs:region:account:name`), looked up once.
    async fn queue_url(&self, arn: &str) -> Result<String, BoxError> {
        if let Some(url) = self.cached_url(arn) {
            return Ok(url);
        }
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_), Some("sqs"), Some(_region), Some(account), Some(name)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!("not an SQS queue ARN: {arn:?}").into());
        };
        let url = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await?
            .queue_url
            .ok_or("GetQueueUrl returned no URL")?;
        self.urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(arn.to_owned(), url.clone());
        Ok(url)
    }

    fn cached_url(&self, arn: &str) -> Option<String> {
        self.urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(arn)
            .cloned()
    }
}

/// What an attribute adds to a message's size, as SQS counts it: name, data type and value.
fn attribute_bytes(name: &str, value: &MessageAttributeValue) -> usize {
    name.len() + value.data_type().len() + value.string_value().map_or(0, str::len)
}

/// The longest start of `reason` (cut at a character boundary, at most [`MAX_REASON_BYTES`])
/// that still fits, as the `dlq.reason` attribute, beside a body and attributes of `used` bytes;
/// an error when not even those fit.
fn fitting_reason(reason: &str, used: usize) -> Result<&str, TooLargeToPark> {
    let Some(room) = MAX_MESSAGE_BYTES.checked_sub(used) else {
        return Err(TooLargeToPark {
            bytes: used,
            max: MAX_MESSAGE_BYTES,
        });
    };
    let overhead = dlq_attributes::REASON.len() + "String".len();
    let mut end = room
        .saturating_sub(overhead)
        .min(MAX_REASON_BYTES)
        .min(reason.len());
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Ok(&reason[..end])
}

fn string_attribute(value: impl Into<String>) -> Result<MessageAttributeValue, BoxError> {
    Ok(MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()?)
}

/// The original message's attributes, in the SDK's form (binary values are not carried over:
/// the producer of this pipeline sends none).
fn original_attributes(message: &SqsMessage) -> Vec<(String, MessageAttributeValue)> {
    let mut attributes: Vec<_> = message
        .message_attributes
        .iter()
        .filter(|(name, _)| !dlq_attributes::ALL.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type(value.data_type.as_deref().unwrap_or("String"))
                .set_string_value(value.string_value.clone())
                .build()
                .ok()?;
            value
                .string_value
                .as_deref()
                .is_some_and(|v| !v.is_empty())
                .then(|| (name.clone(), value))
        })
        .collect();
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    attributes
}

impl QueueActions for SqsQueueActions {
    async fn change_visibility(
        &self,
        message: &SqsMessage,
        delay: Duration,
    ) -> Result<(), BoxError> {
        let arn = message
            .event_source_arn
            .as_deref()
            .ok_or("record has no eventSourceARN")?;
        let receipt_handle = message
            .receipt_handle
            .as_deref()
            .ok_or("record has no receiptHandle")?;
        let url = self.queue_url(arn).await?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await?;
        Ok(())
    }

    async fn park(&self, message: &SqsMessage, why: ParkReason<'_>) -> Result<(), BoxError> {
        let body = message.body.as_deref().ok_or("record has no body")?;
        let message_id = message.message_id.as_deref().unwrap_or_default();
        let receive_count = message
            .attributes
            .get("ApproximateReceiveCount")
            .map_or("0", String::as_str);

        let mut attributes = vec![
            (
                dlq_attributes::ERROR_CLASS.to_owned(),
                string_attribute(why.code)?,
            ),
            (
                dlq_attributes::ORIGINAL_MESSAGE_ID.to_owned(),
                string_attribute(message_id)?,
            ),
            (
                dlq_attributes::RECEIVE_COUNT.to_owned(),
                MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(receive_count)
                    .build()?,
            ),
            (
                dlq_attributes::SOURCE_QUEUE.to_owned(),
                string_attribute(message.event_source_arn.as_deref().unwrap_or_default())?,
            ),
        ];
        // SQS rejects empty attribute values: leave out what the record does not carry.
        attributes.retain(|(_, value)| value.string_value().is_some_and(|v| !v.is_empty()));
        let originals = original_attributes(message);
        // One place is kept for the reason.
        let room = MAX_MESSAGE_ATTRIBUTES - attributes.len() - 1;
        if originals.len() > room {
            tracing::warn!(
                dropped = originals.len() - room,
                "message has more attributes than fit beside the DLQ reason; dropping the rest"
            );
        }
        attributes.extend(originals.into_iter().take(room));
        // Checked here, not left to SendMessage: the reason is cut to what fits, and a body too
        // large to park says so instead of failing as an invalid parameter.
        let used = body.len()
            + attributes
                .iter()
                .map(|(name, value)| attribute_bytes(name, value))
                .sum::<usize>();
        let reason = fitting_reason(why.reason, used)?;
        if !reason.is_empty() {
            attributes.push((dlq_attributes::REASON.to_owned(), string_attribute(reason)?));
        }

        let mut send = self
            .client
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(body)
            .set_message_attributes(Some(attributes.into_iter().collect()));
        if let Some((group, deduplication)) = fifo_ids(&self.dead_letter_queue_url, message) {
            send = send
                .message_group_id(group)
                .message_deduplication_id(deduplication);
        }
        send.send().await?;
        Ok(())
    }
}

/// The message group and deduplication ids of a parked copy of `message`, when the dead-letter
/// queue at `dead_letter_queue_url` is FIFO (as a FIFO queue's must be); `None` for a standard
/// one, which takes neither.
///
/// The copy keeps its group, and is deduplicated on the original's message id: a retried park,
/// or two deliveries of one message failing at once (SQS delivers at least once), send the same
/// id, and SQS keeps one copy (within its 5-minute deduplication window). A standard dead-letter
/// queue cannot collapse them, and may hold two copies: `shared/README.md` says why that is safe.
fn fifo_ids<'a>(
    dead_letter_queue_url: &str,
    message: &'a SqsMessage,
) -> Option<(&'a str, &'a str)> {
    if !dead_letter_queue_url.ends_with(".fifo") {
        return None;
    }
    let group = message
        .attributes
        .get("MessageGroupId")
        .map_or("dead-letter", String::as_str);
    Some((group, message.message_id.as_deref().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(receipt_handle: &str) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some("msg-1".to_owned());
        message.receipt_handle = Some(receipt_handle.to_owned());
        message
            .attributes
            .insert("MessageGroupId".to_owned(), "group-7".to_owned());
        message
    }

    #[test]
    fn two_deliveries_of_one_message_park_with_one_deduplication_id_in_a_fifo_dlq() {
        let dlq = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-dlq.fifo";
        let (first, second) = (delivery("receipt-1"), delivery("receipt-2"));
        assert_eq!(fifo_ids(dlq, &first), Some(("group-7", "msg-1")));
        assert_eq!(
            fifo_ids(dlq, &first),
            fifo_ids(dlq, &second),
            "SQS collapses the second copy"
        );
    }

    #[test]
    fn a_standard_dlq_gets_no_group_or_deduplication_id() {
        let dlq = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-dlq";
        assert_eq!(fifo_ids(dlq, &delivery("receipt-1")), None);
    }

    /// The size of a message with a body of `body` bytes and `reason` as its `dlq.reason`.
    fn size_with(body: usize, reason: &str) -> usize {
        body + dlq_attributes::REASON.len() + "String".len() + reason.len()
    }

    #[test]
    fn a_reason_is_kept_whole_when_it_fits() {
        assert_eq!(
            fitting_reason("row 3: bad field", 100),
            Ok("row 3: bad field")
        );
    }

    #[test]
    fn a_long_reason_is_cut_to_its_bound() {
        let reason = "x".repeat(10_000);
        assert_eq!(
            fitting_reason(&reason, 100).map(str::len),
            Ok(MAX_REASON_BYTES)
        );
    }

    #[test]
    fn a_reason_is_cut_to_the_room_left_beside_a_large_body_at_a_character_boundary() {
        let reason = "é".repeat(100);
        let used = MAX_MESSAGE_BYTES - size_with(0, "") - 51;
        let fitted = fitting_reason(&reason, used).unwrap();
        assert_eq!(fitted, "é".repeat(25));
        assert!(size_with(used, fitted) <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn without_room_for_any_reason_it_is_left_out() {
        assert_eq!(fitting_reason("why", MAX_MESSAGE_BYTES), Ok(""));
        assert_eq!(fitting_reason("why", MAX_MESSAGE_BYTES - 3), Ok(""));
    }

    #[test]
    fn a_message_over_the_limit_without_any_reason_cannot_be_parked() {
        let error = fitting_reason("why", MAX_MESSAGE_BYTES + 1).unwrap_err();
        assert_eq!(error.bytes, MAX_MESSAGE_BYTES + 1);
        assert!(error.to_string().contains("1048576-byte message limit"));
    }
}
