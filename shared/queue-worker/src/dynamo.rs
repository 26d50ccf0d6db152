//! Small helpers for reading and writing DynamoDB items by hand, used by the guard's store and
//! by a domain's own stores.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::BoxError;

/// A string attribute value.
pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A number attribute value.
pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Epoch milliseconds of `time` (0 before the epoch), the unit times are stored in.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` epoch milliseconds stand for.
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What [`put_if_absent`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Put {
    /// The item was written: none had its key.
    Created,
    /// An item with its key was there, and was left as it is; here it is.
    Exists(HashMap<String, AttributeValue>),
}

/// A [`put_if_absent`] that did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The table could not be reached or refused the request: retry.
    #[error("the table is unavailable")]
    Unavailable(#[source] BoxError),
    /// The condition failed but the existing item did not come back with it.
    #[error("the conditional put failed without returning the existing item")]
    NoItemReturned,
    /// The table refused the item itself (`ValidationException`: too large, a key of the wrong
    /// type): the same item is refused every time, so do not retry it.
    #[error("the table refused the item: {0}")]
    Rejected(String),
}

/// Writes `item` to `table` unless an item whose `key_attribute` (the partition key) has the
/// same value exists: the conditional create every record of a request starts with. A repeat
/// learns what exists from the failed write itself (`ReturnValuesOnConditionCheckFailure`), so
/// a retried request costs one write and no read.
pub async fn put_if_absent(
    client: &Client,
    table: &str,
    key_attribute: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<Put, PutError> {
    let outcome = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#key)")
        .expression_attribute_names("#key", key_attribute)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match outcome {
        Ok(_) => Ok(Put::Created),
        Err(error) => match error.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(conflict)) => conflict
                .item()
                .cloned()
                .map(Put::Exists)
                .ok_or(PutError::NoItemReturned),
            Some(refused) if refused.code() == Some("ValidationException") => Err(
                PutError::Rejected(refused.message().unwrap_or("no reason given").to_owned()),
            ),
            _ => Err(PutError::Unavailable(Box::new(error))),
        },
    }
}

/// The item of `table` whose `key_attribute` (a string partition key) is `key`, read
/// consistently, so an item written just before is seen (a worker reading the record its
/// sender wrote before queueing the job must not miss it); `None` when there is none.
pub async fn get_consistent(
    client: &Client,
    table: &str,
    key_attribute: &str,
    key: &str,
) -> Result<Option<HashMap<String, AttributeValue>>, BoxError> {
    let output = client
        .get_item()
        .table_name(table)
        .key(key_attribute, s(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(Box::new)?;
    Ok(output.item)
}

/// Typed, checked access to a stored item's attributes. Errors say which attribute is wrong.
pub struct Item<'a>(pub &'a HashMap<String, AttributeValue>);

impl Item<'_> {
    /// A required string attribute.
    pub fn string(&self, name: &str) -> Result<&str, String> {
        self.optional_string(name)?
            .ok_or_else(|| format!("attribute {name} is missing"))
    }

    /// A string attribute that may be absent.
    pub fn optional_string(&self, name: &str) -> Result<Option<&str>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value)),
            Some(_) => Err(format!("attribute {name} is not a string")),
        }
    }

    /// A required whole-number attribute.
    pub fn number(&self, name: &str) -> Result<u64, String> {
        self.optional_number(name)?
            .ok_or_else(|| format!("attribute {name} is missing"))
    }

    /// A whole-number attribute that may be absent.
    pub fn optional_number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(value)) => value
                .parse()
                .map(Some)
                .map_err(|_| format!("attribute {name} is not a whole number")),
            Some(_) => Err(format!("attribute {name} is not a number")),
        }
    }

    /// A required boolean attribute.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.0.get(name) {
            Some(AttributeValue::Bool(value)) => Ok(*value),
            None => Err(format!("attribute {name} is missing")),
            Some(_) => Err(format!("attribute {name} is not a boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    async fn put_failing_with(error: fn() -> PutItemError) -> PutError {
        let failing = mock!(Client::put_item).then_error(error);
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&failing]);
        put_if_absent(&client, "t", "id", HashMap::from([("id".into(), s("a"))]))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn an_item_the_table_refuses_is_rejected_not_unavailable() {
        let error = put_failing_with(|| {
            PutItemError::generic(
                ErrorMetadata::builder()
                    .code("ValidationException")
                    .message("Item size has exceeded the maximum allowed size")
                    .build(),
            )
        })
        .await;
        assert!(
            matches!(&error, PutError::Rejected(reason) if reason.contains("maximum allowed size")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn throttling_and_unknown_errors_are_unavailable() {
        let throttled = put_failing_with(|| {
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            )
        })
        .await;
        assert!(
            matches!(throttled, PutError::Unavailable(_)),
            "{throttled:?}"
        );
        let unknown = put_failing_with(|| {
            PutItemError::generic(ErrorMetadata::builder().code("InternalFailure").build())
        })
        .await;
        assert!(matches!(unknown, PutError::Unavailable(_)), "{unknown:?}");
    }
}
