//! Writing imported rows: the database this worker protects.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use imports::ImportId;
use queue_worker::BoxError;
use queue_worker::protection::{Classify, ErrorClass};

use crate::rows::Row;

/// Items per `BatchWriteItem` request: DynamoDB's limit.
pub const BATCH_SIZE: usize = 25;
/// Rounds of retrying unprocessed items before giving up (retryably).
const UNPROCESSED_ROUNDS: u32 = 5;

/// Why rows could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The table is at capacity: it throttled the request, or left items unprocessed round
    /// after round. Retryable; a capacity signal, not a failure (the circuit ignores it, the
    /// concurrency limit learns from it).
    #[error("the items table is throttling")]
    Throttled(#[source] BoxError),
    /// The table is down or unreachable. Retryable; counts against the circuit.
    #[error("the items table is unavailable")]
    Unavailable(#[source] BoxError),
    /// The table refused the items themselves (e.g. an item over the size limit). Permanent.
    #[error("the items table rejected the rows")]
    Rejected(#[source] BoxError),
}

impl Classify for WriteError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Throttled(_) => ErrorClass::Throttled,
            Self::Unavailable(_) => ErrorClass::Transient,
            Self::Rejected(_) => ErrorClass::Permanent,
        }
    }
}

/// A failed `BatchWriteItem` request as a [`WriteError`].
fn classify(error: SdkError<BatchWriteItemError>) -> WriteError {
    // No answer of the table (a time-out, a dropped connection, a bad response): transient.
    let class = error
        .as_service_error()
        .map_or(ErrorClass::Transient, answer_class);
    match class {
        ErrorClass::Throttled => WriteError::Throttled(Box::new(error)),
        ErrorClass::Transient => WriteError::Unavailable(Box::new(error)),
        ErrorClass::Permanent => WriteError::Rejected(Box::new(error)),
    }
}

/// What an error answer of the table means, by its typed variant (or, for errors the SDK has no
/// variant for, its code).
fn answer_class(error: &BatchWriteItemError) -> ErrorClass {
    match error {
        BatchWriteItemError::ProvisionedThroughputExceededException(_)
        | BatchWriteItemError::ThrottlingException(_)
        | BatchWriteItemError::RequestLimitExceeded(_) => ErrorClass::Throttled,
        // Invalid items (too large, a bad key): sending them again cannot help.
        error if error.meta().code() == Some("ValidationException") => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// Where rows are written. Writes must be idempotent (a redelivered job writes its rows again):
/// the DynamoDB writer puts whole items keyed by `sku`.
pub trait ItemWriter: Send + Sync {
    /// Writes up to [`BATCH_SIZE`] rows of `import_id`.
    fn write(
        &self,
        import_id: ImportId,
        rows: &[Row],
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// An [`ItemWriter`] on a DynamoDB table keyed by `sku`. Needs `dynamodb:BatchWriteItem`.
///
/// Give it a client with SDK retries disabled: the processor retries writes itself, inside its
/// circuit breaker, and retrying in both places multiplies the load on a struggling table.
#[derive(Debug, Clone)]
pub struct DynamoDbItems {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoDbItems {
    /// A writer to `table_name`.
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }
}

/// The item a row becomes; `imported_at` is epoch milliseconds.
fn item(import_id: &str, imported_at: &str, row: &Row) -> WriteRequest {
    let item = HashMap::from([
        ("sku".to_owned(), AttributeValue::S(row.sku.clone())),
        ("name".to_owned(), AttributeValue::S(row.name.clone())),
        (
            "quantity".to_owned(),
            AttributeValue::N(row.quantity.to_string()),
        ),
        ("price".to_owned(), AttributeValue::N(row.price())),
        (
            "import_id".to_owned(),
            AttributeValue::S(import_id.to_owned()),
        ),
        (
            "imported_at".to_owned(),
            AttributeValue::N(imported_at.to_owned()),
        ),
    ]);
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .expect("a put request with an item is complete");
    WriteRequest::builder().put_request(put).build()
}

impl ItemWriter for DynamoDbItems {
    async fn write(&self, import_id: ImportId, rows: &[Row]) -> Result<(), WriteError> {
        let id = import_id.to_string();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        let mut pending: Vec<WriteRequest> = rows.iter().map(|row| item(&id, &now, row)).collect();
        for round in 0..=UNPROCESSED_ROUNDS {
            if round > 0 {
                // Unprocessed items mean the table is at capacity: back off, jittered.
                let ceiling = Duration::from_millis(50 << round.min(5));
                tokio::time::sleep(ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)).await;
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table_name, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(classify)?;
            pending = output
                .unprocessed_items
                .and_then(|mut items| items.remove(&self.table_name))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                unprocessed = pending.len(),
                round,
                "retrying unprocessed items"
            );
        }
        // The table accepted the request but not these items, round after round: it is at
        // capacity (unprocessed items are DynamoDB's partial throttling).
        Err(WriteError::Throttled(
            format!(
                "{} items still unprocessed after {UNPROCESSED_ROUNDS} retries",
                pending.len()
            )
            .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::types::error::{
        InternalServerError, ProvisionedThroughputExceededException, RequestLimitExceeded,
        ResourceNotFoundException, ThrottlingException,
    };

    use super::*;

    #[test]
    fn the_tables_capacity_errors_are_throttling_not_failures() {
        let throttling = [
            BatchWriteItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            ),
            BatchWriteItemError::ThrottlingException(ThrottlingException::builder().build()),
            BatchWriteItemError::RequestLimitExceeded(RequestLimitExceeded::builder().build()),
        ];
        for error in &throttling {
            assert_eq!(answer_class(error), ErrorClass::Throttled, "{error:?}");
        }
    }

    #[test]
    fn a_table_that_is_down_fails_transiently_and_invalid_items_permanently() {
        let down = [
            BatchWriteItemError::InternalServerError(InternalServerError::builder().build()),
            BatchWriteItemError::ResourceNotFoundException(
                ResourceNotFoundException::builder().build(),
            ),
            BatchWriteItemError::generic(
                ErrorMetadata::builder().code("ServiceUnavailable").build(),
            ),
        ];
        for error in &down {
            assert_eq!(answer_class(error), ErrorClass::Transient, "{error:?}");
        }
        let invalid = BatchWriteItemError::generic(
            ErrorMetadata::builder().code("ValidationException").build(),
        );
        assert_eq!(answer_class(&invalid), ErrorClass::Permanent);
    }

    #[test]
    fn each_write_error_says_its_class() {
        assert_eq!(
            WriteError::Throttled("t".into()).class(),
            ErrorClass::Throttled
        );
        assert_eq!(
            WriteError::Unavailable("u".into()).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            WriteError::Rejected("r".into()).class(),
            ErrorClass::Permanent
        );
    }
}
