//! The notification record and its store: the seam between the worker and DynamoDB.
//!
//! Three primitives, each one request, each with the condition that makes it safe to repeat:
//!
//! | primitive | DynamoDB | condition | when it fails |
//! |---|---|---|---|
//! | [`create`](NotificationStore::create) | `PutItem` | `attribute_not_exists(id)` | the existing record is returned: a repeat of the request |
//! | [`get`](NotificationStore::get) | `GetItem`, consistent read | | |
//! | [`mark_delivered`](NotificationStore::mark_delivered) | `UpdateItem` | `status = PENDING` | another delivery marked it first: fine |
//!
//! States: (none) → `PENDING` (create) → `DELIVERED` (mark). Nothing else moves a record.

mod dynamodb;
mod memory;

use std::time::SystemTime;

use queue_worker::BoxError;

pub use dynamodb::DynamoDbNotifications;
pub use memory::InMemoryNotifications;

use crate::NotificationId;

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationStatus {
    /// Requested, not yet delivered (or delivered and not yet marked: the partner's idempotency
    /// key collapses the next call).
    Pending,
    /// The partner accepted it.
    Delivered,
}

impl NotificationStatus {
    /// The status's name in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivered => "DELIVERED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "DELIVERED" => Some(Self::Delivered),
            _ => None,
        }
    }
}

/// A notification request. `[To customize]`: what your downstream needs to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its id, the table's key.
    pub id: NotificationId,
    /// The JSON document the partner receives, as text.
    pub payload: String,
    /// Where it is.
    pub status: NotificationStatus,
    /// When it was requested.
    pub created_at: SystemTime,
    /// When it was marked delivered.
    pub delivered_at: Option<SystemTime>,
    /// The partner's HTTP status on the delivery that was marked.
    pub partner_status: Option<u16>,
}

impl Notification {
    /// A new request for `payload`, pending.
    pub fn pending(id: NotificationId, payload: impl Into<String>, now: SystemTime) -> Self {
        Self {
            id,
            payload: payload.into(),
            status: NotificationStatus::Pending,
            created_at: now,
            delivered_at: None,
            partner_status: None,
        }
    }
}

/// What [`NotificationStore::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The record was written.
    New,
    /// A record with this id already existed (a repeated request): nothing was written.
    Exists(Notification),
}

/// What [`NotificationStore::mark_delivered`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// The record moved from `PENDING` to `DELIVERED`.
    Delivered,
    /// It was not `PENDING` (another delivery marked it, or it does not exist): nothing changed.
    NotPending,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table could not be reached or refused the request: retry later.
    #[error("the notifications table is unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored record cannot be read: retrying will not help.
    #[error("notification {id} is malformed: {reason}")]
    Malformed {
        /// The record's id.
        id: NotificationId,
        /// What is wrong with it.
        reason: String,
    },
}

/// The notifications table. `DynamoDbNotifications` in production, `InMemoryNotifications`
/// in unit tests.
pub trait NotificationStore: Send + Sync {
    /// Writes `notification` unless a record with its id exists, which is returned instead.
    fn create(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// The record of `id`, read consistently (a record created just before is seen).
    fn get(
        &self,
        id: NotificationId,
    ) -> impl Future<Output = Result<Option<Notification>, StoreError>> + Send;

    /// Marks `id` delivered with the partner's `status`, if it is still `PENDING`.
    fn mark_delivered(
        &self,
        id: NotificationId,
        status: u16,
        at: SystemTime,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send;
}
