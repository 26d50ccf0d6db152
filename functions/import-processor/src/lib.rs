//! `import-processor`: the SQS-triggered worker of the import pipeline.
//!
//! It receives batches of import jobs from the job queue's event source mapping. The record
//! handler (read the object from S3, validate rows, write them to DynamoDB, record the outcome)
//! arrives with the processor issue; until then every batch fails as a whole, so no job is ever
//! acknowledged without being processed: the messages return to the queue after their visibility
//! timeout and, past `maxReceiveCount`, are parked in the dead-letter queue.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};

/// Handles one batch from the job queue.
pub async fn handle_batch(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    tracing::warn!(
        records = event.payload.records.len(),
        request_id = %event.context.request_id,
        "import job handling is not implemented yet; failing the batch so no job is lost"
    );
    Err("import job handling is not implemented yet; the batch stays on the queue".into())
}
