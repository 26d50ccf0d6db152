use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use crate::unique_name;

/// A uniquely named queue on the emulator.
#[derive(Debug, Clone)]
pub struct TestQueue {
    /// The queue's URL.
    pub url: String,
    /// The queue's ARN, as Lambda puts it in `eventSourceARN`.
    pub arn: String,
}

impl TestQueue {
    /// Creates a queue named `prefix-<random>` with the given attributes.
    pub async fn create(
        sqs: &aws_sdk_sqs::Client,
        prefix: &str,
        attributes: &[(QueueAttributeName, &str)],
    ) -> Self {
        let name = unique_name(prefix);
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .set_attributes(Some(
                attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), (*v).to_owned()))
                    .collect(),
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
            .queue_url
            .expect("queue url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("queue arn");
        Self { url, arn }
    }

    /// Receives up to `max` messages, waiting at most `wait` for the first, as the Lambda event
    /// the event source mapping would build from them (real ids and receipt handles).
    pub async fn receive_event(
        &self,
        sqs: &aws_sdk_sqs::Client,
        max: i32,
        wait: Duration,
    ) -> SqsEvent {
        let received = sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(i32::try_from(wait.as_secs()).expect("short wait"))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        local_runner::esm::lambda_event(received.messages(), &self.arn)
    }

    /// Every message on the queue: visible, held back (a delayed send) and in flight.
    pub async fn depth(&self, sqs: &aws_sdk_sqs::Client) -> usize {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| {
            attributes
                .get(name)
                .map_or(0, |v| v.parse().expect("a count"))
        })
        .sum()
    }
}

/// Does what the event source mapping does with a partial batch response: deletes every record
/// of `event` that `response` does not list as failed.
pub async fn acknowledge(
    sqs: &aws_sdk_sqs::Client,
    queue: &TestQueue,
    event: &SqsEvent,
    response: &SqsBatchResponse,
) {
    for record in &event.records {
        let id = record.message_id.as_deref().expect("message id");
        if response
            .batch_item_failures
            .iter()
            .any(|f| f.item_identifier == id)
        {
            continue;
        }
        sqs.delete_message()
            .queue_url(&queue.url)
            .receipt_handle(record.receipt_handle.as_deref().expect("receipt handle"))
            .send()
            .await
            .expect("delete acknowledged message");
    }
}
