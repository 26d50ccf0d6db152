//! The store in memory, for unit tests: the same conditions as the DynamoDB store.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use super::{Created, Marked, Notification, NotificationStatus, NotificationStore, StoreError};
use crate::NotificationId;

/// A [`NotificationStore`] in a map.
#[derive(Debug, Default)]
pub struct InMemoryNotifications {
    records: Mutex<HashMap<NotificationId, Notification>>,
}

impl InMemoryNotifications {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<NotificationId, Notification>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NotificationStore for InMemoryNotifications {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError> {
        let mut records = self.records();
        if let Some(existing) = records.get(&notification.id) {
            return Ok(Created::Exists(existing.clone()));
        }
        records.insert(notification.id, notification.clone());
        Ok(Created::New)
    }

    async fn get(&self, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        Ok(self.records().get(&id).cloned())
    }

    async fn mark_delivered(
        &self,
        id: NotificationId,
        status: u16,
        at: SystemTime,
    ) -> Result<Marked, StoreError> {
        match self.records().get_mut(&id) {
            Some(record) if record.status == NotificationStatus::Pending => {
                record.status = NotificationStatus::Delivered;
                record.delivered_at = Some(at);
                record.partner_status = Some(status);
                Ok(Marked::Delivered)
            }
            _ => Ok(Marked::NotPending),
        }
    }
}
