//! The job: which notification to deliver. The notification itself (its payload) is a record
//! in the notifier's table, written before the job is sent (`crate::request`).

use std::fmt;

use queue_worker::idempotency::IdempotencyKey;
use queue_worker::job::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a notification: a UUID, chosen by whoever requests it, so that a retried request
/// names the same notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(Uuid);

impl NotificationId {
    /// A new, time-sortable id (UUIDv7).
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a UUID.
    pub fn parse(text: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(text).map(Self)
    }

    /// The `Idempotency-Key` the partner receives for this notification: the same on every
    /// attempt and every delivery of it, so a call repeated after a crash is collapsed there.
    pub fn partner_key(&self) -> String {
        format!("notification-{}", self.0)
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Deliver notification [`notification_id`](Self::notification_id): `{"notificationId": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationJob {
    /// The notification to deliver.
    pub notification_id: NotificationId,
}

impl Job for NotificationJob {
    const SCHEMA_VERSION: u32 = 1;

    fn id(&self) -> String {
        self.notification_id.to_string()
    }

    fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(format!("notification:{}", self.notification_id))
            .expect("a UUID with a prefix is a valid idempotency key")
    }
}
