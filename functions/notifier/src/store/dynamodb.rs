//! The store on DynamoDB: one table keyed by `id` (a string). Needs `dynamodb:GetItem` and
//! `dynamodb:UpdateItem` for the worker, `dynamodb:PutItem` for a sender.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use queue_worker::dynamo::{
    Item, Put, PutError, from_millis, get_consistent, millis, n, put_if_absent, s,
};

use super::{Created, Marked, Notification, NotificationStatus, NotificationStore, StoreError};
use crate::NotificationId;

/// Attribute names of a stored notification.
mod attr {
    pub const ID: &str = "id";
    pub const PAYLOAD: &str = "payload";
    pub const STATUS: &str = "status";
    pub const CREATED_AT: &str = "created_at";
    pub const DELIVERED_AT: &str = "delivered_at";
    pub const PARTNER_STATUS: &str = "partner_status";
}

/// A [`NotificationStore`] on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoDbNotifications {
    client: Client,
    table_name: String,
}

impl DynamoDbNotifications {
    /// The store on `table_name`.
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }

    fn key(id: NotificationId) -> HashMap<String, AttributeValue> {
        HashMap::from([(attr::ID.to_owned(), s(&id.to_string()))])
    }
}

fn encode(notification: &Notification) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (attr::ID.to_owned(), s(&notification.id.to_string())),
        (attr::PAYLOAD.to_owned(), s(&notification.payload)),
        (attr::STATUS.to_owned(), s(notification.status.as_str())),
        (
            attr::CREATED_AT.to_owned(),
            n(millis(notification.created_at)),
        ),
    ]);
    if let Some(at) = notification.delivered_at {
        item.insert(attr::DELIVERED_AT.to_owned(), n(millis(at)));
    }
    if let Some(status) = notification.partner_status {
        item.insert(attr::PARTNER_STATUS.to_owned(), n(u64::from(status)));
    }
    item
}

fn decode(
    id: NotificationId,
    item: &HashMap<String, AttributeValue>,
) -> Result<Notification, StoreError> {
    let malformed = |reason: String| StoreError::Malformed { id, reason };
    let item = Item(item);
    let status = item.string(attr::STATUS).map_err(malformed)?;
    Ok(Notification {
        id,
        payload: item.string(attr::PAYLOAD).map_err(malformed)?.to_owned(),
        status: NotificationStatus::parse(status)
            .ok_or_else(|| malformed(format!("unknown status {status:?}")))?,
        created_at: from_millis(item.number(attr::CREATED_AT).map_err(malformed)?),
        delivered_at: item
            .optional_number(attr::DELIVERED_AT)
            .map_err(malformed)?
            .map(from_millis),
        partner_status: item
            .optional_number(attr::PARTNER_STATUS)
            .map_err(malformed)?
            .map(|status| u16::try_from(status).unwrap_or(u16::MAX)),
    })
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

impl NotificationStore for DynamoDbNotifications {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError> {
        // A repeat learns what exists from the failed write itself: no second request.
        let item = encode(notification);
        match put_if_absent(&self.client, &self.table_name, attr::ID, item).await {
            Ok(Put::Created) => Ok(Created::New),
            Ok(Put::Exists(existing)) => decode(notification.id, &existing).map(Created::Exists),
            Err(error @ (PutError::NoItemReturned | PutError::Rejected(_))) => {
                Err(StoreError::Malformed {
                    id: notification.id,
                    reason: error.to_string(),
                })
            }
            Err(PutError::Unavailable(error)) => Err(StoreError::Unavailable(error)),
        }
    }

    async fn get(&self, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        get_consistent(&self.client, &self.table_name, attr::ID, &id.to_string())
            .await
            .map_err(StoreError::Unavailable)?
            .as_ref()
            .map(|item| decode(id, item))
            .transpose()
    }

    async fn mark_delivered(
        &self,
        id: NotificationId,
        status: u16,
        at: SystemTime,
    ) -> Result<Marked, StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(Self::key(id)))
            .update_expression("SET #status = :delivered, #at = :at, #partner = :partner")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#at", attr::DELIVERED_AT)
            .expression_attribute_names("#partner", attr::PARTNER_STATUS)
            .expression_attribute_values(":delivered", s(NotificationStatus::Delivered.as_str()))
            .expression_attribute_values(":pending", s(NotificationStatus::Pending.as_str()))
            .expression_attribute_values(":at", n(millis(at)))
            .expression_attribute_values(":partner", n(u64::from(status)))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(Marked::Delivered),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(Marked::NotPending)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}
