//! The notifier's cold-start workload (`notifier-driver cold-start`, run by `make bench`): an
//! SQS batch of one job whose notification is read from DynamoDB, POSTed to a fake partner over
//! HTTPS (the benchmark's private CA, added to the platform's roots the client reads) and marked
//! delivered. A run passes when every notification it queued is `DELIVERED` and the partner acted
//! once on its key.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::ensure;
use notifier::store::{DynamoDbNotifications, Notification, NotificationStatus, NotificationStore};
use notifier::{NotificationId, NotificationJob};
use queue_bench::cold_start::{Setup, Workload, batch_processed, create_table, sqs_event};
use queue_bench::tls_proxy::TlsProxy;
use queue_worker::idempotency::attributes;
use queue_worker::job::Job as _;
use serde_json::Value;

use crate::partner::{FakePartner, PATH, PartnerBehaviour};

const NOTIFIER: &str = "notifier";
/// The functions it makes events for, by their binaries' names.
pub const FUNCTIONS: &[&str] = &[NOTIFIER];

/// The notifier's table, guard table and dead-letter queue on the emulator, its partner behind
/// an HTTPS listener, and the notifications the events of the current run name.
pub struct NotifierWorkload {
    notifications: DynamoDbNotifications,
    partner: FakePartner,
    front: TlsProxy,
    settings: Vec<(String, String)>,
    queue_arn: String,
    pending: Mutex<Vec<NotificationId>>,
}

impl NotifierWorkload {
    /// Creates uniquely named tables and a dead-letter queue, and starts the partner (it
    /// answers at once: the time measured is the worker's).
    pub async fn create(setup: Setup) -> anyhow::Result<Self> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&setup.sdk);
        let sqs = aws_sdk_sqs::Client::new(&setup.sdk);
        let table = create_table(&dynamodb, &setup.name("notifications"), "id").await?;
        let guard = create_table(&dynamodb, &setup.name("idempotency"), attributes::KEY).await?;
        let dead_letters = sqs
            .create_queue()
            .queue_name(setup.name("dlq"))
            .send()
            .await?
            .queue_url
            .ok_or_else(|| anyhow::anyhow!("a created queue has a URL"))?;
        let partner = FakePartner::start(PartnerBehaviour {
            latency: Duration::ZERO,
            ..PartnerBehaviour::default()
        })
        .await?;
        let plain = partner.url();
        let upstream = plain.trim_end_matches(PATH);
        let front = setup.https_front(upstream).await?;
        let settings = [
            ("NOTIFICATIONS_TABLE", table.clone()),
            ("IDEMPOTENCY_TABLE", guard),
            ("DEAD_LETTER_QUEUE_URL", dead_letters),
            ("PARTNER_URL", format!("{}{PATH}", front.endpoint)),
            (
                "SSL_CERT_FILE",
                setup.platform_roots_and_ca()?.display().to_string(),
            ),
        ];
        Ok(Self {
            notifications: DynamoDbNotifications::new(dynamodb, table),
            partner,
            front,
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            queue_arn: format!(
                "arn:aws:sqs:us-east-1:123456789012:{}",
                setup.name("notifications")
            ),
            pending: Mutex::default(),
        })
    }
}

impl Workload for NotifierWorkload {
    fn functions(&self) -> &[&'static str] {
        FUNCTIONS
    }

    fn targeted(&self) -> &[&'static str] {
        FUNCTIONS
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.settings.clone()
    }

    fn downstreams(&self) -> Vec<&TlsProxy> {
        vec![&self.front]
    }

    async fn events(&self, function: &str) -> anyhow::Result<Vec<Value>> {
        ensure!(function == NOTIFIER, "no events for {function}");
        let mut events = Vec::new();
        for _ in 0..2 {
            let id = NotificationId::generate();
            let payload = format!("{{\"coldStart\":\"{id}\"}}");
            self.notifications
                .create(&Notification::pending(id, payload, SystemTime::now()))
                .await?;
            self.pending.lock().expect("not poisoned").push(id);
            let job = NotificationJob {
                notification_id: id,
            };
            events.push(sqs_event(&job.to_body(), &self.queue_arn));
        }
        Ok(events)
    }

    async fn check(&self, _function: &str, responses: &[Value]) -> anyhow::Result<()> {
        for response in responses {
            ensure!(batch_processed(response), "unexpected answer: {response}");
        }
        let ledger = self.partner.ledger();
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        for id in pending {
            let status = self.notifications.get(id).await?.map(|n| n.status);
            ensure!(
                status == Some(NotificationStatus::Delivered),
                "notification {id} ended {status:?}, not DELIVERED"
            );
            let effects = ledger.get(&id.partner_key()).map_or(0, |k| k.effects.len());
            ensure!(
                effects == 1,
                "the partner acted {effects} times on notification {id}"
            );
        }
        Ok(())
    }
}
