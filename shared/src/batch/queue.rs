//! The two queue operations the batch processor makes itself: delaying a retry and parking a
//! poison message. Everything else (deleting acknowledged messages) Lambda does from the
//! partial batch response.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::idempotency::BoxError;

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
/// Reasons are cut to this many characters in the DLQ attributes.
const MAX_REASON_CHARS: usize = 1000;

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
        let reason: String = why.reason.chars().take(MAX_REASON_CHARS).collect();
        let receive_count = message
            .attributes
            .get("ApproximateReceiveCount")
            .map_or("0", String::as_str);

        let mut attributes = vec![
            (
                dlq_attributes::ERROR_CLASS.to_owned(),
                string_attribute(why.code)?,
            ),
            (dlq_attributes::REASON.to_owned(), string_attribute(reason)?),
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
        let room = MAX_MESSAGE_ATTRIBUTES - attributes.len();
        if originals.len() > room {
            tracing::warn!(
                dropped = originals.len() - room,
                "message has more attributes than fit beside the DLQ reason; dropping the rest"
            );
        }
        attributes.extend(originals.into_iter().take(room));

        let mut send = self
            .client
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(body)
            .set_message_attributes(Some(attributes.into_iter().collect()));
        if self.dead_letter_queue_url.ends_with(".fifo") {
            // A FIFO queue's DLQ is FIFO too: keep the group, and dedupe on the original id so a
            // retried park cannot park twice.
            let group = message
                .attributes
                .get("MessageGroupId")
                .map_or("dead-letter", String::as_str);
            send = send
                .message_group_id(group)
                .message_deduplication_id(message_id);
        }
        send.send().await?;
        Ok(())
    }
}
