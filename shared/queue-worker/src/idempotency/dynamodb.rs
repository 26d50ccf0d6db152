//! The production [`IdempotencyStore`]: one DynamoDB table, one item per key.
//!
//! Requests per job: a new key costs two writes (the claim `PutItem` and the completing
//! `UpdateItem`); a duplicate costs one conditional `PutItem` whose failure returns the existing
//! item (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so no read is ever made. A claim that
//! replaces an expired record learns it from the same write (`ReturnValues=ALL_OLD`, free of
//! capacity).
//!
//! The table needs only a string partition key named [`attributes::KEY`]; enable TTL on
//! [`attributes::EXPIRES_AT`] so old records are cleaned up. TTL is never relied on for
//! correctness: expiry is part of every claim condition.
//!
//! The function needs `dynamodb:PutItem`, `dynamodb:UpdateItem` and `dynamodb:DeleteItem` on the
//! table, and nothing else.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::record::{self, Record, Status};
use super::{
    Claim, ClaimRequest, Decision, FencingToken, GuardError, IdempotencyKey, IdempotencyStore,
    PayloadHash,
};
use crate::dynamo::{Item, n, s};

/// Attribute names of an idempotency item.
pub mod attributes {
    /// Partition key (string): the idempotency key.
    pub const KEY: &str = "id";
    /// `IN_PROGRESS` or `COMPLETED`.
    pub const STATUS: &str = "status";
    /// SHA-256 of the payload the key was claimed for.
    pub const PAYLOAD_HASH: &str = "payload_hash";
    /// Token of the current claim.
    pub const FENCING_TOKEN: &str = "fencing_token";
    /// End of the current lease, epoch milliseconds (in-progress items only).
    pub const LEASE_EXPIRES_AT: &str = "lease_expires_at";
    /// End of retention, epoch seconds: the table's TTL attribute.
    pub const EXPIRES_AT: &str = "expires_at";
    /// The stored result (completed items only).
    pub const RESULT: &str = "result";
}

use attributes as attr;

/// Expression attribute names for the given placeholders. DynamoDB rejects unused names, so
/// each request passes exactly the ones its expressions use (`status` is a reserved word, hence
/// placeholders everywhere).
fn names(placeholders: &[&str]) -> HashMap<String, String> {
    placeholders
        .iter()
        .map(|placeholder| {
            let name = match *placeholder {
                "#key" => attr::KEY,
                "#status" => attr::STATUS,
                "#token" => attr::FENCING_TOKEN,
                "#lease" => attr::LEASE_EXPIRES_AT,
                "#expires" => attr::EXPIRES_AT,
                "#result" => attr::RESULT,
                other => unreachable!("no attribute for placeholder {other}"),
            };
            ((*placeholder).to_owned(), name.to_owned())
        })
        .collect()
}

const CLAIM_CONDITION: &str = "attribute_not_exists(#key) \
     OR #expires <= :now_s \
     OR (#status = :in_progress AND #lease <= :now_ms)";

const OWNED_CONDITION: &str = "#token = :token AND #status = :in_progress";

/// An [`IdempotencyStore`] on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table_name: String,
}

impl DynamoDbStore {
    /// A store on `table_name`, using `client` (build the client once and share it).
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }

    fn key(&self, key: &IdempotencyKey) -> HashMap<String, AttributeValue> {
        HashMap::from([(attr::KEY.to_owned(), s(key.as_str()))])
    }
}

impl IdempotencyStore for DynamoDbStore {
    async fn try_claim(&self, request: &ClaimRequest) -> Result<Decision, GuardError> {
        let record = Record::in_progress(request);
        let item = HashMap::from([
            (attr::KEY.to_owned(), s(request.key.as_str())),
            (attr::STATUS.to_owned(), s(record.status.as_str())),
            (
                attr::PAYLOAD_HASH.to_owned(),
                s(record.payload_hash.as_str()),
            ),
            (attr::FENCING_TOKEN.to_owned(), s(record.token.as_str())),
            (
                attr::LEASE_EXPIRES_AT.to_owned(),
                n(record.lease_expires_at_ms),
            ),
            (attr::EXPIRES_AT.to_owned(), n(record.expires_at_s)),
        ]);
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression(CLAIM_CONDITION)
            .set_expression_attribute_names(Some(names(&["#key", "#status", "#lease", "#expires"])))
            .expression_attribute_values(":now_s", n(record::seconds_floor(request.now)))
            .expression_attribute_values(":now_ms", n(record::millis(request.now)))
            .expression_attribute_values(":in_progress", s(Status::IN_PROGRESS))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;

        match outcome {
            // The replaced item, if any, comes back with the write: a takeover costs no read.
            Ok(output) if output.attributes().is_some_and(|old| !old.is_empty()) => {
                Ok(Decision::Proceed(request.granted_over_earlier()))
            }
            Ok(_) => Ok(Decision::Proceed(request.granted())),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(conflict)) => {
                    let existing = conflict.item().ok_or_else(|| GuardError::MalformedRecord {
                        key: request.key.clone(),
                        reason: "the conditional check failed but no existing item was returned"
                            .into(),
                    })?;
                    Ok(decode(&request.key, existing)?.conflict(request))
                }
                _ => Err(GuardError::Unavailable(Box::new(err))),
            },
        }
    }

    async fn complete(
        &self,
        claim: &Claim,
        result: &str,
        expires_at: SystemTime,
    ) -> Result<(), GuardError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(self.key(claim.key())))
            .update_expression(
                "SET #status = :completed, #result = :result, #expires = :expires REMOVE #lease",
            )
            .condition_expression(OWNED_CONDITION)
            .set_expression_attribute_names(Some(names(&[
                "#status", "#result", "#expires", "#lease", "#token",
            ])))
            .expression_attribute_values(":completed", s(Status::COMPLETED))
            .expression_attribute_values(":result", s(result))
            .expression_attribute_values(":expires", n(record::seconds_ceil(expires_at)))
            .expression_attribute_values(":token", s(claim.token().as_str()))
            .expression_attribute_values(":in_progress", s(Status::IN_PROGRESS))
            .send()
            .await;

        match outcome {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Err(claim_lost(claim))
            }
            Err(err) => Err(GuardError::Unavailable(Box::new(err))),
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), GuardError> {
        let outcome = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .set_key(Some(self.key(claim.key())))
            .condition_expression(OWNED_CONDITION)
            .set_expression_attribute_names(Some(names(&["#token", "#status"])))
            .expression_attribute_values(":token", s(claim.token().as_str()))
            .expression_attribute_values(":in_progress", s(Status::IN_PROGRESS))
            .send()
            .await;

        match outcome {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(DeleteItemError::is_conditional_check_failed_exception) =>
            {
                Err(claim_lost(claim))
            }
            Err(err) => Err(GuardError::Unavailable(Box::new(err))),
        }
    }
}

fn claim_lost(claim: &Claim) -> GuardError {
    GuardError::ClaimLost {
        key: claim.key().clone(),
    }
}

/// Reads a stored item back into a [`Record`].
fn decode(
    key: &IdempotencyKey,
    item: &HashMap<String, AttributeValue>,
) -> Result<Record, GuardError> {
    let malformed = |reason: String| GuardError::MalformedRecord {
        key: key.clone(),
        reason,
    };
    let item = Item(item);
    let status_text = item.string(attr::STATUS).map_err(malformed)?;
    let status = Status::parse(status_text)
        .ok_or_else(|| malformed(format!("unknown status {status_text:?}")))?;
    Ok(Record {
        status,
        payload_hash: PayloadHash::from_stored(item.string(attr::PAYLOAD_HASH).map_err(malformed)?),
        token: FencingToken::from_stored(item.string(attr::FENCING_TOKEN).map_err(malformed)?),
        lease_expires_at_ms: item
            .optional_number(attr::LEASE_EXPIRES_AT)
            .map_err(malformed)?
            .unwrap_or(0),
        expires_at_s: item.number(attr::EXPIRES_AT).map_err(malformed)?,
        result: item
            .optional_string(attr::RESULT)
            .map_err(malformed)?
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::idempotency::{GuardSettings, IdempotencyGuard};

    const SETTINGS: GuardSettings = GuardSettings {
        retention: Duration::from_secs(3600),
        lease_margin: Duration::from_secs(10),
        max_lease: Duration::from_secs(60),
    };

    fn key() -> IdempotencyKey {
        IdempotencyKey::parse("job-1").unwrap()
    }

    #[tokio::test]
    async fn throttling_is_a_retryable_error_never_a_duplicate() {
        let throttled = mock!(Client::put_item).then_error(|| {
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]);
        let guard = IdempotencyGuard::new(DynamoDbStore::new(client, "t"), SETTINGS);

        let err = guard.claim(&key(), b"job", None).await.unwrap_err();
        assert!(matches!(err, GuardError::Unavailable(_)), "{err:?}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn conflict_without_the_existing_item_is_malformed_not_a_duplicate() {
        let conflict = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&conflict]);
        let guard = IdempotencyGuard::new(DynamoDbStore::new(client, "t"), SETTINGS);

        let err = guard.claim(&key(), b"job", None).await.unwrap_err();
        assert!(matches!(err, GuardError::MalformedRecord { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn conflict_is_decided_from_the_returned_item() {
        let hash = PayloadHash::of(b"job");
        let conflict = mock!(Client::put_item).then_error(move || {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .item(attr::KEY, s("job-1"))
                    .item(attr::STATUS, s(Status::COMPLETED))
                    .item(attr::PAYLOAD_HASH, s(hash.as_str()))
                    .item(attr::FENCING_TOKEN, s("t-1"))
                    .item(attr::EXPIRES_AT, n(u64::MAX / 2))
                    .item(attr::RESULT, s("stored"))
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&conflict]);
        let guard = IdempotencyGuard::new(DynamoDbStore::new(client, "t"), SETTINGS);

        let decision = guard.claim(&key(), b"job", None).await.unwrap();
        assert_eq!(
            decision,
            Decision::AlreadyCompleted {
                result: "stored".into()
            }
        );
        assert_eq!(conflict.num_calls(), 1);
    }
}
