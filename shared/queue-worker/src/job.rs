//! Jobs: the typed messages a worker handles, and the queue they are sent to.
//!
//! A [`Job`] is the body of a queue message as a Rust type. The producer sends it with a
//! [`JobQueue`]; the worker receives it parsed (see [`crate::worker`]), and may send the job's
//! continuation on the same queue. [`SqsJobQueue`] sends any job to SQS, with the message
//! attributes in [`attributes`] that let operators inspect and route a job without parsing it.

use std::sync::LazyLock;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::MessageAttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BoxError;
use crate::idempotency::IdempotencyKey;
use crate::trace::TraceContext;

/// A unit of work carried by one queue message. `[To customize]`: implement it for your job.
pub trait Job: Serialize + DeserializeOwned + Send + Sync {
    /// Version of the body's schema, sent as the [`attributes::SCHEMA_VERSION`] attribute.
    /// Bump it when the body changes incompatibly.
    const SCHEMA_VERSION: u32;

    /// The job's id: logged as `job_id` on every line of its record, sent as the
    /// [`attributes::JOB_ID`] attribute, and its message group on a FIFO queue.
    fn id(&self) -> String;

    /// The key its processing is claimed under. Set by the producer (never the SQS message id,
    /// which a resend changes); a continuation needs a key of its own.
    fn idempotency_key(&self) -> IdempotencyKey;

    /// The message body. Serialising a parsed job gives the same text whatever the spacing and
    /// key order of the body it was parsed from, so this is also the job's canonical form: its
    /// payload fingerprint at the idempotency guard.
    fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job is plain data and always serialises")
    }
}

/// Message attributes [`SqsJobQueue`] sets on every job.
pub mod attributes {
    /// The job's id ([`Job::id`](super::Job::id)).
    pub const JOB_ID: &str = "job_id";
    /// The body's schema version ([`Job::SCHEMA_VERSION`](super::Job::SCHEMA_VERSION)).
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The W3C `traceparent` of the span that sent the job ([`crate::trace`]), if any.
    pub const TRACEPARENT: &str = crate::trace::TRACEPARENT;
    /// The W3C `tracestate` that goes with it, when not empty.
    pub const TRACESTATE: &str = crate::trace::TRACESTATE;
}

/// The longest delay SQS holds a message back: 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Where jobs are put: by the producer, and by a worker for a job's continuation.
pub trait JobQueue<J>: Send + Sync {
    /// Sends `job`, to be delivered no sooner than `delay` from now (at most [`MAX_DELAY`]);
    /// `trace` is the context of the span sending it ([`TraceContext::current`]: the request's
    /// in a producer, the record's in a worker), which the job's records link to.
    fn send_after(
        &self,
        job: &J,
        delay: Duration,
        trace: Option<&TraceContext>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Sends `job` for delivery now.
    fn send(
        &self,
        job: &J,
        trace: Option<&TraceContext>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.send_after(job, Duration::ZERO, trace)
    }
}

/// No job queue: a worker that never continues is built with `None`, and a continuation it
/// returns anyway fails to send (the claim is kept, the job retried and, in the end, parked with
/// the reason), never silently dropped.
impl<J: Sync, Q: JobQueue<J>> JobQueue<J> for Option<Q> {
    async fn send_after(
        &self,
        job: &J,
        delay: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<(), BoxError> {
        match self {
            Some(queue) => queue.send_after(job, delay, trace).await,
            None => Err("this worker has no job queue for continuations (JOB_QUEUE_URL)".into()),
        }
    }
}

/// A [`JobQueue`] on SQS, for any [`Job`]. Needs `sqs:SendMessage` on the queue (and
/// `kms:GenerateDataKey` when the queue uses a customer-managed key).
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

    /// Like [`new`](Self::new), with a client built from `sdk` at the first send: a worker sends
    /// only when a job needs a continuation, so most execution environments never pay for
    /// building the client.
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

impl<J: Job> JobQueue<J> for SqsJobQueue {
    /// A FIFO queue takes no per-message delay: there the job is sent at once.
    async fn send_after(
        &self,
        job: &J,
        delay: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<(), BoxError> {
        let id = job.id();
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.to_body())
            .message_attributes(attributes::JOB_ID, attribute("String", id.clone())?)
            .message_attributes(
                attributes::SCHEMA_VERSION,
                attribute("Number", J::SCHEMA_VERSION.to_string())?,
            );
        if let Some(trace) = trace {
            send = send.message_attributes(
                attributes::TRACEPARENT,
                attribute("String", trace.traceparent().to_owned())?,
            );
            if let Some(state) = trace.tracestate() {
                send = send.message_attributes(
                    attributes::TRACESTATE,
                    attribute("String", state.to_owned())?,
                );
            }
        }
        if self.queue_url.ends_with(".fifo") {
            // One group per job keeps jobs independent; the idempotency key (a continuation's
            // own) dedupes resends within SQS's five-minute window.
            send = send
                .message_group_id(id)
                .message_deduplication_id(job.idempotency_key().as_str());
        } else if !delay.is_zero() {
            // Whole seconds, rounded up so a short delay is not lost.
            let seconds = delay.min(MAX_DELAY).as_secs_f64().ceil() as i32;
            send = send.delay_seconds(seconds);
        }
        send.send().await?;
        Ok(())
    }
}
