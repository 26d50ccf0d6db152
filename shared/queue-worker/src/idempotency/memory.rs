//! An in-memory [`IdempotencyStore`] with the same semantics as the DynamoDB one.
//!
//! For unit tests, benchmarks and local experiments. It is per process: it cannot guard
//! anything across Lambda execution environments.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::record::{self, Record, Status};
use super::{Claim, ClaimRequest, Decision, GuardError, IdempotencyKey, IdempotencyStore};

/// The map's hasher: foldhash, randomly seeded per process, hashes a key in a fraction of the
/// default SipHash's time; the guard's per-record cost is a few lookups of short keys.
type Records = HashMap<IdempotencyKey, Record, foldhash::fast::RandomState>;

/// Idempotency records in a process-local map.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    records: Mutex<Records>,
}

impl InMemoryStore {
    fn records(&self) -> MutexGuard<'_, Records> {
        // Every critical section leaves the map consistent, so a panic elsewhere while the lock
        // was held cannot have left a half-written record behind.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `claim` is still the current claim of its key.
    fn owned_by<'a>(records: &'a mut Records, claim: &Claim) -> Option<&'a mut Record> {
        records
            .get_mut(claim.key().as_str())
            .filter(|r| r.status == Status::InProgress && &r.token == claim.token())
    }
}

impl IdempotencyStore for InMemoryStore {
    async fn try_claim(&self, request: &ClaimRequest) -> Result<Decision, GuardError> {
        let now_ms = record::millis(request.now);
        let now_s = record::seconds_floor(request.now);
        let mut records = self.records();
        let replaced = records.get(request.key.as_str());
        if let Some(existing) = replaced {
            if existing.blocks_claim(now_ms, now_s) {
                return Ok(existing.clone().conflict(request));
            }
        }
        let claim = match replaced {
            Some(_) => request.granted_over_earlier(),
            None => request.granted(),
        };
        records.insert(request.key.clone(), Record::in_progress(request));
        Ok(Decision::Proceed(claim))
    }

    async fn complete(
        &self,
        claim: &Claim,
        result: &str,
        expires_at: SystemTime,
    ) -> Result<(), GuardError> {
        let mut records = self.records();
        let record = Self::owned_by(&mut records, claim).ok_or_else(|| GuardError::ClaimLost {
            key: claim.key().clone(),
        })?;
        record.status = Status::Completed;
        record.result = Some(result.to_owned());
        record.expires_at_s = record::seconds_ceil(expires_at);
        Ok(())
    }

    async fn release(&self, claim: &Claim) -> Result<(), GuardError> {
        let mut records = self.records();
        if Self::owned_by(&mut records, claim).is_none() {
            return Err(GuardError::ClaimLost {
                key: claim.key().clone(),
            });
        }
        records.remove(claim.key().as_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::idempotency::{FencingToken, IdempotencyKey, PayloadHash};

    #[tokio::test]
    async fn a_retried_claim_write_recognises_its_own_claim() {
        let store = InMemoryStore::default();
        let now = SystemTime::now();
        let request = ClaimRequest {
            key: IdempotencyKey::parse("job-1").unwrap(),
            payload_hash: PayloadHash::of(b"job"),
            token: FencingToken::generate(),
            now,
            lease_expires_at: now + Duration::from_secs(60),
            expires_at: now + Duration::from_secs(3600),
        };
        assert!(matches!(
            store.try_claim(&request).await,
            Ok(Decision::Proceed(_))
        ));
        assert_eq!(
            store.try_claim(&request).await.unwrap(),
            Decision::Proceed(request.granted_over_earlier())
        );
    }

    #[tokio::test]
    async fn a_claim_over_an_expired_lease_is_a_takeover_and_a_first_claim_is_not() {
        let store = InMemoryStore::default();
        let now = SystemTime::now();
        let request = |token: &str, now: SystemTime| ClaimRequest {
            key: IdempotencyKey::parse("job-1").unwrap(),
            payload_hash: PayloadHash::of(b"job"),
            token: FencingToken::from_stored(token),
            now,
            lease_expires_at: now + Duration::from_secs(60),
            expires_at: now + Duration::from_secs(3600),
        };
        let Decision::Proceed(first) = store.try_claim(&request("a", now)).await.unwrap() else {
            panic!("the first claim proceeds");
        };
        assert!(!first.took_over());
        let later = now + Duration::from_secs(61);
        let Decision::Proceed(second) = store.try_claim(&request("b", later)).await.unwrap() else {
            panic!("a claim after the lease proceeds");
        };
        assert!(second.took_over());
    }
}
