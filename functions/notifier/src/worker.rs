//! One job: deliver one notification to the partner, exactly once in effect.
//!
//! The order is the lesson, for any downstream that is not idempotent:
//!
//! 1. **Read before the effect.** The record is read (consistently) before the partner is
//!    called: an unknown notification is parked as `unknown_notification` and a delivered one
//!    acknowledged as a duplicate, and neither reaches the partner. Never learn that a request
//!    does not exist from a failed write after the effect.
//! 2. **One call, one key.** The payload is POSTed with `Idempotency-Key` derived from the
//!    notification's id, through the partner's [`Dependency`] (timeout, retries, circuit
//!    breaker, adaptive concurrency limit): every attempt and every delivery sends the same key,
//!    so the partner collapses a repeat after a crash, a timeout or a redelivery. A call cut
//!    short by the invocation's end is retried the same way, never parked.
//! 3. **Mark after the effect.** The record moves to `DELIVERED` on condition that it is
//!    `PENDING`; a failed condition means another delivery marked it first. If the mark fails,
//!    the job is retried, calls again with the same key, and the partner acts once.

use std::time::SystemTime;

use queue_worker::batch::RecordError;
use queue_worker::protection::{Dependency, DependencyError};
use queue_worker::worker::{Done, Run, Worker};
use tokio::time::timeout_at;

use crate::NotificationJob;
use crate::partner::{Partner, PartnerError};
use crate::store::{Marked, NotificationStatus, NotificationStore, StoreError};

/// A class of permanent failure: the job is parked in the dead-letter queue with it as its
/// `dlq.error_class` (the library adds its own, `queue_worker::worker::JobFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierFailure {
    /// No notification has the job's id (never requested, or its record was deleted).
    UnknownNotification,
    /// The partner refused the notification (a 3xx, or a 4xx other than 408, 409 and 429).
    PartnerRejected,
    /// The notification's record cannot be read.
    NotificationMalformed,
}

impl NotifierFailure {
    /// Every class, for tools and docs that list them.
    pub const ALL: [Self; 3] = [
        Self::UnknownNotification,
        Self::PartnerRejected,
        Self::NotificationMalformed,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownNotification => "unknown_notification",
            Self::PartnerRejected => "partner_rejected",
            Self::NotificationMalformed => "notification_malformed",
        }
    }

    fn error(self, reason: impl Into<String>) -> RecordError {
        RecordError::permanent(self.as_str(), reason)
    }
}

/// The notifier: a [`Worker`] of [`NotificationJob`]s.
#[derive(Debug)]
pub struct Notifier<S, P> {
    notifications: S,
    partner: P,
    protection: Dependency,
}

impl<S: NotificationStore, P: Partner> Notifier<S, P> {
    /// Delivers the notifications of `notifications` to `partner`, called under `protection`.
    pub fn new(notifications: S, partner: P, protection: Dependency) -> Self {
        Self {
            notifications,
            partner,
            protection,
        }
    }

    /// The notifications table.
    pub fn notifications(&self) -> &S {
        &self.notifications
    }
}

impl<S: NotificationStore, P: Partner> Worker for Notifier<S, P> {
    type Job = NotificationJob;

    async fn run(
        &self,
        job: &NotificationJob,
        run: &Run<'_>,
    ) -> Result<Done<NotificationJob>, RecordError> {
        let id = job.notification_id;
        // Bounded like every step: a slow read near the stop time must not time the whole
        // invocation out.
        let read = timeout_at(run.invocation.stop_instant(), self.notifications.get(id));
        let found = read
            .await
            .map_err(|_| out_of_time("reading the notification"))?
            .map_err(store_error)?;
        let notification = match found {
            None => {
                return Err(NotifierFailure::UnknownNotification
                    .error(format!("no notification {id} was requested")));
            }
            Some(n) if n.status == NotificationStatus::Delivered => return Ok(Done::duplicate()),
            Some(n) => n,
        };

        // No attempt starts after the stop time; one under way is awaited until the drain
        // time. A call cut off there may have acted: its retry sends the same key.
        let key = id.partner_key();
        let call = self
            .protection
            .call_until(run.invocation.stop_instant(), || {
                self.partner.deliver(&key, &notification.payload)
            });
        let status = timeout_at(run.invocation.drain_instant(), call)
            .await
            .map_err(|_| out_of_time("the partner's call"))?
            .map_err(partner_error)?;

        let mark = self
            .notifications
            .mark_delivered(id, status, SystemTime::now());
        let marked = timeout_at(run.invocation.finish_instant(), mark)
            .await
            .map_err(|_| out_of_time("marking the notification delivered"))?
            .map_err(store_error)?;
        if marked == Marked::NotPending {
            tracing::debug!("another delivery marked the notification first");
        }
        Ok(Done::processed())
    }
}

/// Running out of the invocation's time is never a verdict on the job: it comes back.
fn out_of_time(step: &str) -> RecordError {
    RecordError::retryable(format!("the invocation ended during {step}"))
}

fn store_error(error: StoreError) -> RecordError {
    match error {
        StoreError::Unavailable(_) => RecordError::retryable(error.to_string()).with_source(error),
        StoreError::Malformed { .. } => {
            NotifierFailure::NotificationMalformed.error(error.to_string())
        }
    }
}

/// The status, never the payload, goes into the reason: reasons travel to logs and to the
/// dead-letter queue's attributes.
fn partner_error(error: DependencyError<PartnerError>) -> RecordError {
    match &error {
        DependencyError::CircuitOpen { retry_after, .. } => {
            RecordError::retryable_after(error.to_string(), *retry_after)
        }
        DependencyError::Failed {
            source: PartnerError::Status { status },
            ..
        } if !error.is_retryable() => NotifierFailure::PartnerRejected.error(format!(
            "the partner rejected the notification with status {status}"
        )),
        _ => RecordError::retryable(error.to_string()).with_source(error),
    }
}

#[cfg(test)]
mod tests;
