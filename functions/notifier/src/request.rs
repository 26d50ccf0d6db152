//! The sender's side: record the notification, then queue its job.

use std::time::SystemTime;

use queue_worker::BoxError;
use queue_worker::job::JobQueue;
use queue_worker::trace::TraceContext;

use crate::store::{Created, Notification, NotificationStatus, NotificationStore, StoreError};
use crate::{NotificationId, NotificationJob};

/// What [`request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The job was sent: the notification is new, or was requested before and is still
    /// pending (its job may not have been sent; a second job is harmless).
    Queued,
    /// It was requested before and is delivered: nothing was sent.
    AlreadyDelivered,
}

/// Why [`request`] failed. Retry with the same id and payload: nothing is doubled.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The id was requested before with another payload.
    #[error("notification {0} was requested before with another payload")]
    Conflict(NotificationId),
    /// The notifications table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job could not be sent; the record is written and pending.
    #[error("the notification's job could not be sent")]
    Send(#[source] BoxError),
}

/// Requests notification `id` with `payload` (JSON text): writes the record if it is new, then
/// sends its job. A repeat with the same id and payload (a client retry) writes nothing and
/// sends the job again while the notification is pending.
///
/// The record is written before the job is sent, so the worker never sees a job for a
/// notification that does not exist yet. Needs `dynamodb:PutItem` on the notifications table
/// and `sqs:SendMessage` on the notifier's queue.
pub async fn request<S, Q>(
    notifications: &S,
    jobs: &Q,
    id: NotificationId,
    payload: &str,
) -> Result<Requested, RequestError>
where
    S: NotificationStore,
    Q: JobQueue<NotificationJob>,
{
    let notification = Notification::pending(id, payload, SystemTime::now());
    if let Created::Exists(existing) = notifications.create(&notification).await? {
        if existing.payload != payload {
            return Err(RequestError::Conflict(id));
        }
        if existing.status == NotificationStatus::Delivered {
            return Ok(Requested::AlreadyDelivered);
        }
    }
    // Sent from a record's span, the job carries that record's trace context on.
    jobs.send(
        &NotificationJob {
            notification_id: id,
        },
        TraceContext::current().as_ref(),
    )
    .await
    .map_err(RequestError::Send)?;
    Ok(Requested::Queued)
}
