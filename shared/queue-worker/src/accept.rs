//! The accepting side: taking a request once, however often a client sends it.
//!
//! An API that accepts work records the request, queues its job and answers at once. A client
//! that gets no answer (a timeout, a `503`) retries with the same idempotency key, and must get
//! the same request back, not a second one. Every accepting API needs the same steps in the same
//! order, so they live here once, in [`accept`]:
//!
//! | the store finds | and | then | decision |
//! |---|---|---|---|
//! | no record with the request's id | | create it, send its job, mark the job sent | [`Acceptance::Accepted`] |
//! | a record | another owner or another body | nothing | [`Acceptance::KeyReused`] |
//! | a record | still waiting, its job not known sent | send the job again, mark it sent | [`Acceptance::Resent`] |
//! | a record | otherwise | nothing | [`Acceptance::Replayed`] |
//!
//! Failures never leave a request a retry cannot finish:
//! - the store fails: nothing was sent ([`AcceptError::NotRecorded`]);
//! - the send fails: the record stays with its job unsent, and the retry with the same key sends
//!   it ([`AcceptError::NotQueued`]). Without a key no retry can reach the record, so it is
//!   abandoned ([`RequestStore::abandon_unsent`]) instead of waiting forever;
//! - the mark fails after a send: logged only. A retry sends the job once more, which the
//!   idempotent worker absorbs.
//!
//! The domain supplies the record ([`RequestRecord`]) and its store ([`RequestStore`], three
//! conditional primitives and no reads), and derives the request's id from the caller and the
//! key with [`id_for_key`], so a retry finds its record by id. The HTTP side (problem details,
//! the `202`/`200`/`409` answers) is in `crate::http`, behind the `http` feature.

use std::fmt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::BoxError;
use crate::idempotency::IdempotencyKey;
use crate::job::JobQueue;
use crate::telemetry::error_chain;
use crate::trace::TraceContext;

/// The id of the request `key` names for the caller `scope`: the same scope and key always give
/// the same id, and two scopes cannot collide by picking the same key.
///
/// `scope` is the caller as it stays across its credentials (a role, not its session), so a
/// retry from a refreshed session finds the same record. The id is the first 16 bytes of
/// SHA-256 over `scope`, a NUL byte and `key`, as a UUIDv8. Never change this: ids issued
/// already are stored, and a retry must derive the same one.
pub fn id_for_key(scope: &str, key: &IdempotencyKey) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(scope.as_bytes());
    hash.update([0]);
    hash.update(key.as_str().as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// What the accept flow needs of a domain's request record. `[To customize]`: implement it for
/// your record.
pub trait RequestRecord: Send + Sync {
    /// The record's id: derived with [`id_for_key`] when the client sent a key.
    type Id: fmt::Display + Send + Sync;
    /// The job the request queues.
    type Job: Send + Sync;

    /// Stored as the reason when a request without a key is abandoned because its job could not
    /// be sent: the client reads it, and submits its request again.
    const ABANDONED: &'static str;

    /// The record's id.
    fn id(&self) -> Self::Id;

    /// A fingerprint of what the request asked for (of its meaning, not its bytes: key order
    /// and spacing make no other request). The same key with another fingerprint is a reused
    /// key.
    fn fingerprint(&self) -> &str;

    /// Who made the request, as scoped for [`id_for_key`]; `None` when unknown (a record
    /// written before owners were stored belongs to nobody). A record found under another
    /// owner, or under none, is never shown or resent: it is a reused key.
    fn owner(&self) -> Option<&str>;

    /// Whether the job is known to have reached the queue.
    fn job_sent(&self) -> bool;

    /// Whether the request still waits for its job to start. Only then may its job be sent
    /// again: once the worker moved the request on, the job evidently arrived, and a second
    /// copy could start the work over.
    fn awaits_processing(&self) -> bool;

    /// The job to queue for this request.
    fn job(&self) -> Self::Job;
}

/// What a conditional create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome<R> {
    /// The record was written.
    Created,
    /// A record with this id exists already (a retry, or a reused key): here it is, returned by
    /// the failed write itself (boxed: a record may be large, and most creates find none).
    Exists(Box<R>),
}

/// Where a domain's request records live: the three writes the accept flow makes.
///
/// `[To customize]`: implement it on your table. With DynamoDB each primitive is one
/// conditional write; `create` asks for `ReturnValuesOnConditionCheckFailure=ALL_OLD`, so a
/// retry costs no read.
pub trait RequestStore: Send + Sync {
    /// The record stored.
    type Record: RequestRecord;
    /// Why the store failed; every error means "unavailable, retry".
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `record` unless a record with its id exists; if one does, returns it.
    fn create(
        &self,
        record: &Self::Record,
    ) -> impl Future<Output = Result<CreateOutcome<Self::Record>, Self::Error>> + Send;

    /// Records that the job of request `id` reached the queue.
    fn mark_job_sent(
        &self,
        id: <Self::Record as RequestRecord>::Id,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Closes request `id` (failed, with `reason`) when its job may not have been sent and its
    /// client cannot retry. Does nothing once the job is known sent: if the send reached the
    /// queue after all, the worker still does the work.
    fn abandon_unsent(
        &self,
        id: <Self::Record as RequestRecord>::Id,
        reason: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What became of a request: the decision an API turns into its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance<R> {
    /// A new request: recorded, and its job queued. Here is the record.
    Accepted(R),
    /// A retry of a request whose job may never have reached the queue: the job was sent again.
    /// Here is the stored record.
    Resent(R),
    /// A retry: nothing was sent. Here is the stored record, as it is now.
    Replayed(R),
    /// The key was used before by another request (another body, or another owner): nothing
    /// was done, and nothing of the stored record may be shown.
    KeyReused,
}

/// Why a request could not be accepted. Both mean "a dependency is unavailable": answer so the
/// client retries the same request (`503` with `Retry-After`).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError<E> {
    /// The store failed: the request may or may not be recorded, and no job was sent.
    #[error("the request could not be recorded")]
    NotRecorded(#[source] E),
    /// The queue failed: the request is recorded with its job unsent. A retry with the same key
    /// sends it; a request without a key was abandoned.
    #[error("the job could not be queued")]
    NotQueued(#[source] BoxError),
}

/// Accepts `request`: records it, or finds the record an earlier request with the same id
/// made, and queues its job when it may not have been sent (see the module's table).
///
/// `key` is the client's idempotency key, if it sent one (then `request`'s id was derived from
/// it). `trace` travels with the job ([`TraceContext::current`] in the request's span).
pub async fn accept<S, Q>(
    store: &S,
    queue: &Q,
    request: S::Record,
    key: Option<&IdempotencyKey>,
    trace: Option<&TraceContext>,
) -> Result<Acceptance<S::Record>, AcceptError<S::Error>>
where
    S: RequestStore,
    Q: JobQueue<<S::Record as RequestRecord>::Job>,
{
    let existing = match store.create(&request).await {
        Ok(CreateOutcome::Created) => None,
        Ok(CreateOutcome::Exists(existing)) => Some(*existing),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not record the request");
            return Err(AcceptError::NotRecorded(e));
        }
    };
    let Some(existing) = existing else {
        if let Err(e) = send_job(store, queue, &request, trace).await {
            if key.is_none() {
                abandon(store, &request).await;
            }
            return Err(e);
        }
        tracing::info!("request accepted");
        return Ok(Acceptance::Accepted(request));
    };
    match Retry::of(&existing, &request) {
        Retry::KeyReused => Ok(Acceptance::KeyReused),
        Retry::SendAgain => {
            tracing::info!("retried request whose job may not have been sent; sending it again");
            send_job(store, queue, &existing, trace).await?;
            Ok(Acceptance::Resent(existing))
        }
        Retry::Replay => Ok(Acceptance::Replayed(existing)),
    }
}

/// What a request does with the record its id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    KeyReused,
    SendAgain,
    Replay,
}

impl Retry {
    fn of<R: RequestRecord>(existing: &R, request: &R) -> Self {
        let same_owner = existing.owner().is_some() && existing.owner() == request.owner();
        if !same_owner || existing.fingerprint() != request.fingerprint() {
            Self::KeyReused
        } else if existing.awaits_processing() && !existing.job_sent() {
            Self::SendAgain
        } else {
            Self::Replay
        }
    }
}

/// Sends the record's job and marks it sent. Only a failed send is an error.
async fn send_job<S, Q>(
    store: &S,
    queue: &Q,
    record: &S::Record,
    trace: Option<&TraceContext>,
) -> Result<(), AcceptError<S::Error>>
where
    S: RequestStore,
    Q: JobQueue<<S::Record as RequestRecord>::Job>,
{
    if let Err(e) = queue.send(&record.job(), trace).await {
        tracing::error!(error = %error_chain(e.as_ref()), "could not queue the job");
        return Err(AcceptError::NotQueued(e));
    }
    if let Err(e) = store.mark_job_sent(record.id(), SystemTime::now()).await {
        tracing::warn!(error = %error_chain(&e), "job sent, but not marked as sent");
    }
    Ok(())
}

/// Closes a request without a key whose job could not be sent: its client cannot come back to
/// it. A failure is logged; the caller's answer is the send's failure either way.
async fn abandon<S: RequestStore>(store: &S, record: &S::Record) {
    let reason = <S::Record as RequestRecord>::ABANDONED;
    if let Err(e) = store
        .abandon_unsent(record.id(), reason, SystemTime::now())
        .await
    {
        tracing::error!(error = %error_chain(&e), "could not abandon the unsent request");
    }
}

#[cfg(test)]
mod tests;
