//! The notifier against the emulator and a fake partner that, like a payment or webhook API,
//! acts once per `Idempotency-Key` and counts every call. Real messages on a real queue, the
//! real DynamoDB stores, the processor `main` runs (wired from `NotifierFunction`'s environment
//! in `template.yaml`). Every notification must take effect once, with its own payload, under
//! client retries (each requested two or three times), redelivery of a batch, and workers killed
//! between the partner's call and the mark.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use harness::{
    TestQueue, acknowledge, create_idempotency_table, sdk_config, serve, settings, template,
    unique_name,
};
use local_runner::template::reference;
use notifier::partner::{HttpPartner, IDEMPOTENCY_KEY};
use notifier::store::{
    Created, DynamoDbNotifications, Marked, Notification, NotificationStatus, NotificationStore,
    StoreError,
};
use notifier::{NotificationId, NotificationJob, Notifier, NotifierConfig, Requested, request};
use queue_worker::Env;
use queue_worker::batch::SqsQueueActions;
use queue_worker::idempotency::DynamoDbStore;
use queue_worker::job::{JobQueue, SqsJobQueue};
use queue_worker::lambda::WorkerSettings;

/// What the partner did with one key: how often it was called, and the payload of its one effect.
#[derive(Debug, Clone)]
struct Effect {
    calls: u32,
    payload: String,
}

type Ledger = Arc<Mutex<BTreeMap<String, Effect>>>;

/// The partner: the first call with a key acts (201), a repeat is answered without acting (200).
async fn partner(State(ledger): State<Ledger>, headers: HeaderMap, payload: String) -> StatusCode {
    let Some(key) = headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut ledger = ledger.lock().unwrap();
    match ledger.get_mut(key) {
        Some(effect) => {
            effect.calls += 1;
            StatusCode::OK
        }
        None => {
            ledger.insert(key.to_owned(), Effect { calls: 1, payload });
            StatusCode::CREATED
        }
    }
}

/// The real store, but the first mark of each victim fails: the worker "dies" after the partner
/// acted and before the notification is marked delivered.
struct KilledBeforeMark {
    inner: DynamoDbNotifications,
    victims: Mutex<HashSet<NotificationId>>,
}

impl NotificationStore for KilledBeforeMark {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError> {
        self.inner.create(notification).await
    }

    async fn get(&self, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        self.inner.get(id).await
    }

    async fn mark_delivered(
        &self,
        id: NotificationId,
        status: u16,
        at: SystemTime,
    ) -> Result<Marked, StoreError> {
        if self.victims.lock().unwrap().remove(&id) {
            return Err(StoreError::Unavailable("killed before the mark".into()));
        }
        self.inner.mark_delivered(id, status, at).await
    }
}

async fn create_notifications_table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = unique_name("notifications");
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// `NotifierFunction`'s environment with the test's resources and the fake partner; no backoff
/// and a short lease margin so that retries come back within the test.
fn notifier_env(table: &str, guard: &str, dlq: &str, partner_url: &str) -> Env {
    let mut env =
        settings::function_env(
            &template::load(),
            "NotifierFunction",
            |value| match reference(value) {
                Some("NotificationsTable") => Ok(table.to_owned()),
                Some("IdempotencyTable") => Ok(guard.to_owned()),
                Some("NotifierDeadLetterQueue") => Ok(dlq.to_owned()),
                other => Err(format!("the test does not supply {other:?}")),
            },
        );
    env.extend(
        [
            ("PARTNER_URL", partner_url),
            ("RETRY_BACKOFF_BASE_SECONDS", "0"),
            ("IDEMPOTENCY_LEASE_MARGIN_SECONDS", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Env::from_pairs(env)
}

/// A payload only this notification has: a mix-up shows as a wrong payload under its key.
fn payload(n: usize, id: NotificationId) -> String {
    format!(
        r#"{{"notification":"{id}","summary":"import {n} completed: {} rows"}}"#,
        n * 37
    )
}

#[tokio::test]
async fn every_notification_takes_effect_once_under_redelivery_kills_and_client_retries() {
    const NOTIFICATIONS: usize = 24;
    let config = sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let table = create_notifications_table(&dynamodb).await;
    let guard = create_idempotency_table(&dynamodb, "notifier-guard").await;
    let visibility = [(QueueAttributeName::VisibilityTimeout, "2")];
    let queue = TestQueue::create(&sqs, "notifier", &visibility).await;
    let dlq = TestQueue::create(&sqs, "notifier-dlq", &[]).await;
    let ledger = Ledger::default();
    let url = serve(axum::Router::new().route(
        "/notifications",
        axum::routing::post(partner).with_state(ledger.clone()),
    ))
    .await;

    let env = notifier_env(&table, &guard, &dlq.url, &format!("{url}/notifications"));
    let worker =
        WorkerSettings::for_worker::<Notifier<KilledBeforeMark, HttpPartner>>(&env).unwrap();
    let notifier_config = NotifierConfig::from_env(&env).unwrap();
    let store = DynamoDbNotifications::new(dynamodb.clone(), &notifier_config.notifications_table);
    let jobs = SqsJobQueue::new(sqs.clone(), &queue.url);

    // Client retries: each notification is requested twice, every third three times.
    let ids: Vec<NotificationId> = (0..NOTIFICATIONS)
        .map(|_| NotificationId::generate())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        for _ in 0..(2 + usize::from(n % 3 == 0)) {
            let requested = request(&store, &jobs, *id, &payload(n, *id)).await.unwrap();
            assert_eq!(requested, Requested::Queued);
        }
    }
    // Every fourth worker dies between the partner's answer and the mark.
    let victims: HashSet<NotificationId> = ids.iter().step_by(4).copied().collect();
    let processor = worker.processor_with(
        Notifier::new(
            KilledBeforeMark {
                inner: store.clone(),
                victims: Mutex::new(victims.clone()),
            },
            HttpPartner::new(notifier_config.partner_url.clone()).unwrap(),
            notifier::partner_protection(&notifier_config, &worker),
        ),
        DynamoDbStore::new(dynamodb.clone(), &worker.guard.table_name),
        None::<SqsJobQueue>,
        SqsQueueActions::new(sqs.clone(), &worker.dead_letter_queue_url),
    );

    let started = tokio::time::Instant::now();
    let mut redelivered = false;
    while queue.depth(&sqs).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the queue does not drain"
        );
        let event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
        if event.records.is_empty() {
            continue;
        }
        let deadline = SystemTime::now() + Duration::from_secs(8);
        // Redelivery: the first batch is delivered twice before it is acknowledged.
        if !redelivered {
            redelivered = true;
            let _lost_acknowledgement = processor.process(&event, deadline).await;
        }
        if let Ok(response) = processor.process(&event, deadline).await.result {
            acknowledge(&sqs, &queue, &event, &response).await;
        }
    }

    let effects = ledger.lock().unwrap().clone();
    for (n, id) in ids.iter().enumerate() {
        let own: Vec<&String> = effects
            .iter()
            .filter(|(_, effect)| effect.payload.contains(&id.to_string()))
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            own,
            [&id.partner_key()],
            "notification {n}: one effect, under its key"
        );
        assert_eq!(
            effects[&id.partner_key()].payload,
            payload(n, *id),
            "notification {n}"
        );
        let record = store.get(*id).await.unwrap().unwrap();
        assert_eq!(
            record.status,
            NotificationStatus::Delivered,
            "notification {n}"
        );
        // A killed worker's retry is marked from the partner's answer to the repeat.
        let answer = if victims.contains(id) { 200 } else { 201 };
        assert_eq!(record.partner_status, Some(answer), "notification {n}");
        if victims.contains(id) {
            assert!(
                effects[&id.partner_key()].calls >= 2,
                "notification {n}: retried"
            );
        }
    }
    let calls: u32 = effects.values().map(|e| e.calls).sum();
    let duplicates = effects.len() - NOTIFICATIONS;
    assert_eq!(duplicates, 0);
    assert_eq!(dlq.depth(&sqs).await, 0, "nothing parked");
    let most = effects.values().map(|e| e.calls).max().unwrap_or_default();
    eprintln!(
        "notifier: {NOTIFICATIONS} notifications, {} keys, {calls} calls (at most {most} on one \
         key), 1 effect per key, {duplicates} duplicates, {} killed before the mark",
        effects.len(),
        victims.len()
    );

    // Long after: the guard's records are gone (a fresh guard table), the jobs come again, and
    // the worker's own read finds every notification delivered: the partner is not called.
    let fresh_guard = create_idempotency_table(&dynamodb, "notifier-guard").await;
    let late =
        WorkerSettings::for_worker::<Notifier<DynamoDbNotifications, HttpPartner>>(&notifier_env(
            &table,
            &fresh_guard,
            &dlq.url,
            &format!("{url}/notifications"),
        ))
        .unwrap();
    let processor = late.processor_with(
        Notifier::new(
            store.clone(),
            HttpPartner::new(notifier_config.partner_url.clone()).unwrap(),
            notifier::partner_protection(&notifier_config, &late),
        ),
        DynamoDbStore::new(dynamodb.clone(), &fresh_guard),
        None::<SqsJobQueue>,
        SqsQueueActions::new(sqs.clone(), &late.dead_letter_queue_url),
    );
    for id in &ids {
        jobs.send(
            &NotificationJob {
                notification_id: *id,
            },
            None,
        )
        .await
        .unwrap();
    }
    let mut duplicates = 0;
    while duplicates < NOTIFICATIONS {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the resends do not drain"
        );
        let event = queue.receive_event(&sqs, 10, Duration::from_secs(1)).await;
        if event.records.is_empty() {
            continue;
        }
        let outcome = processor
            .process(&event, SystemTime::now() + Duration::from_secs(8))
            .await;
        duplicates += outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Duplicate);
        acknowledge(&sqs, &queue, &event, &outcome.result.unwrap()).await;
    }
    let after: u32 = ledger.lock().unwrap().values().map(|e| e.calls).sum();
    assert_eq!(
        after, calls,
        "a delivered notification is never posted again"
    );
}
