//! The guard's behaviour suite against the DynamoDB store on the emulator, plus what only a
//! real DynamoDB API can show: the request budget, the TTL attribute, and error classification.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use harness::guard_suite::SETTINGS;
use harness::{ManualClock, RequestCounter, create_idempotency_table, sdk_config};
use queue_worker::idempotency::{
    Clock, Decision, DynamoDbStore, GuardError, IdempotencyGuard, IdempotencyKey, attributes,
};

/// A store on a fresh, uniquely named table.
async fn store() -> DynamoDbStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = create_idempotency_table(&client, "guard").await;
    DynamoDbStore::new(client, table)
}

harness::guard_behaviour_suite!(store);

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| ((*op).to_owned(), *n)).collect()
}

#[tokio::test]
async fn new_key_costs_two_writes_and_a_duplicate_one_write_with_no_reads() {
    let config = sdk_config().await;
    let counter = RequestCounter::default();
    let client = counter.dynamodb_client(&config);
    let table = create_idempotency_table(&client, "budget").await;
    let guard = IdempotencyGuard::new(DynamoDbStore::new(client, table), SETTINGS);
    let key = IdempotencyKey::parse("import-budget").unwrap();
    counter.reset();

    let Decision::Proceed(claim) = guard.claim(&key, b"job", None).await.unwrap() else {
        panic!("expected to proceed");
    };
    guard.complete(&claim, "done").await.unwrap();
    assert_eq!(
        counter.snapshot(),
        counts(&[("PutItem", 1), ("UpdateItem", 1)])
    );

    counter.reset();
    let duplicate = guard.claim(&key, b"job", None).await.unwrap();
    assert_eq!(
        duplicate,
        Decision::AlreadyCompleted {
            result: "done".into()
        }
    );
    assert_eq!(counter.snapshot(), counts(&[("PutItem", 1)]));
}

#[tokio::test]
async fn completed_item_carries_the_retention_expiry_as_its_ttl_attribute() {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = create_idempotency_table(&client, "ttl").await;
    let clock = ManualClock::starting_now();
    let guard = IdempotencyGuard::with_clock(
        DynamoDbStore::new(client.clone(), &table),
        SETTINGS,
        clock.clone(),
    );
    let key = IdempotencyKey::parse("import-ttl").unwrap();
    let Decision::Proceed(claim) = guard.claim(&key, b"job", None).await.unwrap() else {
        panic!("expected to proceed");
    };
    clock.advance(Duration::from_secs(5));
    guard.complete(&claim, "done").await.unwrap();

    let item = client
        .get_item()
        .table_name(&table)
        .key(attributes::KEY, AttributeValue::S(key.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .expect("item exists");
    let expected = (clock.now() + SETTINGS.retention)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .ceil() as u64;
    assert_eq!(
        item.get(attributes::EXPIRES_AT),
        Some(&AttributeValue::N(expected.to_string()))
    );
    assert_eq!(
        item.get(attributes::STATUS),
        Some(&AttributeValue::S("COMPLETED".into()))
    );
    assert_eq!(item.get(attributes::LEASE_EXPIRES_AT), None);
}

#[tokio::test]
async fn missing_table_is_a_retryable_error_never_a_duplicate() {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let guard = IdempotencyGuard::new(
        DynamoDbStore::new(client, harness::unique_name("missing")),
        SETTINGS,
    );
    let key = IdempotencyKey::parse("import-missing-table").unwrap();
    let err = guard.claim(&key, b"job", None).await.unwrap_err();
    assert!(matches!(err, GuardError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn malformed_stored_record_is_a_permanent_error() {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = create_idempotency_table(&client, "malformed").await;
    let far_future = SystemTime::now() + Duration::from_secs(86_400);
    let expires = far_future.duration_since(UNIX_EPOCH).unwrap().as_secs();
    client
        .put_item()
        .table_name(&table)
        .item(attributes::KEY, AttributeValue::S("import-corrupt".into()))
        .item(attributes::STATUS, AttributeValue::S("EXPLODED".into()))
        .item(
            attributes::EXPIRES_AT,
            AttributeValue::N(expires.to_string()),
        )
        .send()
        .await
        .unwrap();

    let guard = IdempotencyGuard::new(DynamoDbStore::new(client, table), SETTINGS);
    let key = IdempotencyKey::parse("import-corrupt").unwrap();
    let err = guard.claim(&key, b"job", None).await.unwrap_err();
    assert!(matches!(err, GuardError::MalformedRecord { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_retried_claim_write_recognises_its_own_claim() {
    use queue_worker::idempotency::{ClaimRequest, FencingToken, IdempotencyStore, PayloadHash};
    let store = store().await;
    let now = SystemTime::now();
    let request = ClaimRequest {
        key: IdempotencyKey::parse("import-retried-write").unwrap(),
        payload_hash: PayloadHash::of(b"job"),
        token: FencingToken::generate(),
        now,
        lease_expires_at: now + Duration::from_secs(60),
        expires_at: now + Duration::from_secs(3600),
    };
    assert!(matches!(
        store.try_claim(&request).await.unwrap(),
        Decision::Proceed(_)
    ));
    // As when the SDK resends a PutItem whose first attempt was written: whether that attempt
    // replaced an earlier record is unknown, so the claim counts as a takeover.
    assert_eq!(
        store.try_claim(&request).await.unwrap(),
        Decision::Proceed(request.granted_over_earlier())
    );
}
