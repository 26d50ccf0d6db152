//! Sending jobs to the job queue.

use std::sync::LazyLock;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};

use super::{ImportJob, JOB_SCHEMA_VERSION, job_attributes};
use queue_worker::idempotency::BoxError;

/// Where jobs are put: by the producer, and by the processor for an import's next chunk.
pub trait JobQueue: Send + Sync {
    /// Sends `job`; `trace_context` is the X-Ray trace header of the request, if any.
    fn send(
        &self,
        job: &ImportJob,
        trace_context: Option<&str>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A [`JobQueue`] on SQS. Needs `sqs:SendMessage` on the queue (and `kms:GenerateDataKey` when
/// the queue uses a customer-managed key).
#[derive(Debug)]
pub struct SqsJobQueue {
    client: LazyLock<aws_sdk_sqs::Client, Box<dyn FnOnce() -> aws_sdk_sqs::Client + Send>>,
    queue_url: String,
}

impl SqsJobQueue {
    /// Sends to the queue at `queue_url`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client: LazyLock::new(Box::new(move || client)),
            queue_url: queue_url.into(),
        }
    }

    /// Like [`new`](Self::new), with a client built from `sdk` at the first send: the
    /// processor sends only when an import needs another invocation, so most execution
    /// environments never pay for building the client.
    pub fn on_first_send(sdk: &SdkConfig, queue_url: impl Into<String>) -> Self {
        let sdk = sdk.clone();
        Self {
            client: LazyLock::new(Box::new(move || aws_sdk_sqs::Client::new(&sdk))),
            queue_url: queue_url.into(),
        }
    }
}

fn attribute(data_type: &str, value: String) -> Result<MessageAttributeValue, BoxError> {
    Ok(MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()?)
}

impl JobQueue for SqsJobQueue {
    async fn send(&self, job: &ImportJob, trace_context: Option<&str>) -> Result<(), BoxError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.to_body())
            .message_attributes(
                job_attributes::IMPORT_ID,
                attribute("String", job.import_id.to_string())?,
            )
            .message_attributes(
                job_attributes::SCHEMA_VERSION,
                attribute("Number", JOB_SCHEMA_VERSION.to_string())?,
            );
        if let Some(trace) = trace_context {
            send = send
                .message_attributes(
                    job_attributes::TRACE_CONTEXT,
                    attribute("String", trace.to_owned())?,
                )
                .message_system_attributes(
                    MessageSystemAttributeNameForSends::AwsTraceHeader,
                    MessageSystemAttributeValue::builder()
                        .data_type("String")
                        .string_value(trace)
                        .build()?,
                );
        }
        if self.queue_url.ends_with(".fifo") {
            // One group per import keeps imports independent; the id (with the chunk of a
            // continuation) dedupes resends within SQS's five-minute window.
            send = send
                .message_group_id(job.import_id.to_string())
                .message_deduplication_id(job.idempotency_key().as_str());
        }
        send.send().await?;
        Ok(())
    }
}
