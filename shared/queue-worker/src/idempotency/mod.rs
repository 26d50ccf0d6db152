//! The idempotency guard: a handler may run more than once, its side effects happen once.
//!
//! SQS delivers at least once, so the same job can reach two workers, or one worker twice. Before
//! doing a job's side effects, a worker *claims* the job's idempotency key; the [`Decision`] says
//! what to do next:
//!
//! - [`Decision::Proceed`]: this worker owns the key until its lease runs out. Do the work, then
//!   [`IdempotencyGuard::complete`] it, or [`IdempotencyGuard::release`] it on failure so the next
//!   delivery can proceed at once. A claim that [took over](Claim::took_over) an expired one
//!   may find the work partly or wholly done: read its progress before redoing any effect.
//! - [`Decision::AlreadyCompleted`]: the work was done before; acknowledge, using the stored result.
//! - [`Decision::InProgress`]: another worker holds a live lease; retry later.
//! - [`Decision::PayloadMismatch`]: the key was used for a different payload; a permanent error.
//!
//! The key is producer-set (the job's own id), never the SQS message id: a resend of the same job
//! gets a new message id but must still be recognised.
//!
//! Correctness rests on three rules that every [`IdempotencyStore`] follows:
//! 1. A claim is one atomic conditional write that succeeds only when the key is absent, its
//!    record is past retention, or it is in progress with an expired lease. Expiry is checked
//!    inside the condition: storage-level TTL deletion is only clean-up, and may come days late.
//! 2. Every claim carries a fresh [`FencingToken`]; completing and releasing are conditional on
//!    it, so a worker whose lease ran out cannot overwrite or delete a newer owner's claim. It gets
//!    [`GuardError::ClaimLost`] instead.
//! 3. A conflict is decided from the record returned by the failed write itself: a new key costs
//!    two writes (claim, complete), a duplicate one write, and neither costs a read.
//! 4. A successful claim returns the record it replaced, if any (DynamoDB's `ReturnValues`, at
//!    no extra cost), so the worker learns a takeover without a read.
//!
//! Layout: the key and the record model live here and in `record`; [`DynamoDbStore`] is the
//! production store, [`InMemoryStore`] the one for unit tests and benchmarks.

mod dynamodb;
mod key;
mod memory;
mod record;

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use dynamodb::{DynamoDbStore, attributes};
pub use key::{FencingToken, IdempotencyKey, InvalidKey, PayloadHash};
pub use memory::InMemoryStore;

use crate::BoxError;

/// What a worker should do with a job after claiming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a decision says whether to do the work; ignoring it defeats the guard"]
pub enum Decision {
    /// The key is now owned by this worker: do the work, then complete or release the claim.
    Proceed(Claim),
    /// The work was done before. Acknowledge the message; `result` is what completion stored.
    AlreadyCompleted {
        /// The result stored when the work completed.
        result: String,
    },
    /// Another worker holds a live lease on the key. Retryable: try again after the lease.
    InProgress {
        /// When the other worker's lease runs out.
        lease_expires_at: SystemTime,
    },
    /// The key was claimed for a different payload. Permanent: the producer reused a key.
    PayloadMismatch,
}

/// Proof of ownership of a key, returned by [`Decision::Proceed`] and required to complete or
/// release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    key: IdempotencyKey,
    token: FencingToken,
    lease_expires_at: SystemTime,
    took_over: bool,
}

impl Claim {
    /// The claimed key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The token that fences this claim against later owners of the same key.
    pub fn token(&self) -> &FencingToken {
        &self.token
    }

    /// When this claim stops protecting the key from other workers.
    pub fn lease_expires_at(&self) -> SystemTime {
        self.lease_expires_at
    }

    /// Whether this claim replaced an earlier record of the key: a claim whose lease ran out
    /// (its worker died, or ran out of time, after doing some or all of the work) or a record
    /// past retention. The work may already be partly or wholly done, whatever the message's
    /// receive count says: a worker must read its progress before redoing any effect.
    pub fn took_over(&self) -> bool {
        self.took_over
    }
}

/// Why a guard operation failed. Each variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// This worker's lease ran out and the claim no longer belongs to it (another worker
    /// reclaimed the key, or the record was removed). Nothing was changed. Retryable: the next
    /// delivery sees the current owner's outcome.
    #[error(
        "the claim on idempotency key {key} was lost: its lease expired and another worker may own the key"
    )]
    ClaimLost {
        /// The key whose claim was lost.
        key: IdempotencyKey,
    },
    /// The store could not be reached or refused the request (throttling, missing table,
    /// network, permissions). Retryable.
    #[error("the idempotency store is unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored record cannot be understood. Permanent: it needs a person.
    #[error("the idempotency record for key {key} is malformed: {reason}")]
    MalformedRecord {
        /// The key whose record is malformed.
        key: IdempotencyKey,
        /// What is wrong with it.
        reason: String,
    },
}

impl GuardError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::MalformedRecord { .. })
    }
}

/// A claim attempt, fully computed by the guard; stores only persist it.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The key to claim.
    pub key: IdempotencyKey,
    /// Hash of the payload the key is claimed for.
    pub payload_hash: PayloadHash,
    /// Token of the new claim.
    pub token: FencingToken,
    /// The time the claim is made at; expiry conditions compare against it.
    pub now: SystemTime,
    /// End of the new claim's lease.
    pub lease_expires_at: SystemTime,
    /// When the record may be forgotten (retention; the storage TTL).
    pub expires_at: SystemTime,
}

impl ClaimRequest {
    /// The claim a successful write of this request grants on a key that had no record.
    pub fn granted(&self) -> Claim {
        Claim {
            key: self.key.clone(),
            token: self.token.clone(),
            lease_expires_at: self.lease_expires_at,
            took_over: false,
        }
    }

    /// The claim a successful write of this request grants over an earlier record of the key
    /// (an expired lease, or a record past retention): see [`Claim::took_over`].
    pub fn granted_over_earlier(&self) -> Claim {
        Claim {
            took_over: true,
            ..self.granted()
        }
    }
}

/// Persistence for the guard: three atomic primitives.
///
/// Implementations must make [`try_claim`](Self::try_claim) a single atomic conditional write and
/// make [`complete`](Self::complete) and [`release`](Self::release) conditional on the claim's
/// fencing token (see the module documentation).
pub trait IdempotencyStore: Send + Sync {
    /// Claims `request.key` when it is absent, past retention, or in progress with an expired
    /// lease; otherwise decides from the existing record without another request.
    fn try_claim(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<Decision, GuardError>> + Send;

    /// Marks the claim's key completed with `result`, kept until `expires_at`.
    fn complete(
        &self,
        claim: &Claim,
        result: &str,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<(), GuardError>> + Send;

    /// Deletes the claim's record so the key can be claimed again at once.
    fn release(&self, claim: &Claim) -> impl Future<Output = Result<(), GuardError>> + Send;
}

/// A shared store: two guards (two workers in a test) on one store see each other's claims.
impl<S: IdempotencyStore> IdempotencyStore for std::sync::Arc<S> {
    fn try_claim(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<Decision, GuardError>> + Send {
        S::try_claim(self, request)
    }

    fn complete(
        &self,
        claim: &Claim,
        result: &str,
        expires_at: SystemTime,
    ) -> impl Future<Output = Result<(), GuardError>> + Send {
        S::complete(self, claim, result, expires_at)
    }

    fn release(&self, claim: &Claim) -> impl Future<Output = Result<(), GuardError>> + Send {
        S::release(self, claim)
    }
}

/// A source of the current time. The guard reads time through it so tests can move time forward
/// instead of sleeping through leases.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Timing policy of the guard. See [`crate::config::GuardConfig`] for the environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// How long a completed (or abandoned) record is kept.
    pub retention: Duration,
    /// Added to the invocation deadline to form the lease.
    pub lease_margin: Duration,
    /// Upper bound of any lease, and the lease when no deadline is known.
    pub max_lease: Duration,
}

impl From<&crate::config::GuardConfig> for GuardSettings {
    fn from(config: &crate::config::GuardConfig) -> Self {
        Self {
            retention: config.retention,
            lease_margin: config.lease_margin,
            max_lease: config.max_lease,
        }
    }
}

/// The idempotency guard: computes leases, hashes and tokens, and delegates persistence to an
/// [`IdempotencyStore`].
#[derive(Debug, Clone)]
pub struct IdempotencyGuard<S, C = SystemClock> {
    store: S,
    settings: GuardSettings,
    clock: C,
}

impl<S: IdempotencyStore> IdempotencyGuard<S> {
    /// A guard on the system clock.
    pub fn new(store: S, settings: GuardSettings) -> Self {
        Self::with_clock(store, settings, SystemClock)
    }
}

impl<S: IdempotencyStore, C: Clock> IdempotencyGuard<S, C> {
    /// A guard reading time from `clock`.
    pub fn with_clock(store: S, settings: GuardSettings, clock: C) -> Self {
        Self {
            store,
            settings,
            clock,
        }
    }

    /// Claims `key` for `payload`.
    ///
    /// `deadline` is the invocation's deadline (from the Lambda context): the lease lasts until
    /// then plus the margin, never longer than the maximum lease, never shorter than the margin.
    /// Without a deadline the lease is the maximum.
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        payload: &[u8],
        deadline: Option<SystemTime>,
    ) -> Result<Decision, GuardError> {
        let now = self.clock.now();
        let request = ClaimRequest {
            key: key.clone(),
            payload_hash: PayloadHash::of(payload),
            token: FencingToken::generate_at(now),
            now,
            lease_expires_at: self.lease_until(now, deadline),
            expires_at: now + self.settings.retention,
        };
        self.store.try_claim(&request).await
    }

    /// Records the work as done: later claims of the key return
    /// [`Decision::AlreadyCompleted`] with `result` until the retention ends.
    pub async fn complete(&self, claim: &Claim, result: &str) -> Result<(), GuardError> {
        let expires_at = self.clock.now() + self.settings.retention;
        self.store.complete(claim, result, expires_at).await
    }

    /// Gives the key up after a failed attempt, so the next delivery proceeds at once instead of
    /// waiting for the lease to run out.
    pub async fn release(&self, claim: &Claim) -> Result<(), GuardError> {
        self.store.release(claim).await
    }

    fn lease_until(&self, now: SystemTime, deadline: Option<SystemTime>) -> SystemTime {
        let GuardSettings {
            lease_margin,
            max_lease,
            ..
        } = self.settings;
        let longest = now + max_lease;
        let shortest = now + lease_margin.min(max_lease);
        deadline
            .map_or(longest, |deadline| deadline + lease_margin)
            .clamp(shortest, longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings {
            retention: Duration::from_secs(3600),
            lease_margin: Duration::from_secs(10),
            max_lease: Duration::from_secs(910),
        }
    }

    fn lease(deadline_in: Option<i64>) -> Duration {
        let guard = IdempotencyGuard::new(InMemoryStore::default(), settings());
        let now = SystemTime::now();
        let deadline = deadline_in.map(|secs| {
            if secs >= 0 {
                now + Duration::from_secs(secs.unsigned_abs())
            } else {
                now - Duration::from_secs(secs.unsigned_abs())
            }
        });
        guard
            .lease_until(now, deadline)
            .duration_since(now)
            .unwrap()
    }

    #[test]
    fn lease_follows_the_invocation_deadline_plus_margin() {
        assert_eq!(lease(Some(60)), Duration::from_secs(70));
    }

    #[test]
    fn lease_is_bounded_by_the_maximum() {
        assert_eq!(lease(Some(3600)), Duration::from_secs(910));
    }

    #[test]
    fn lease_without_deadline_is_the_maximum() {
        assert_eq!(lease(None), Duration::from_secs(910));
    }

    #[test]
    fn lease_for_a_past_deadline_still_covers_the_margin() {
        assert_eq!(lease(Some(-30)), Duration::from_secs(10));
    }
}
