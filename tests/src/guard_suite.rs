//! The behaviour suite of the idempotency guard: one specification, run against every store.
//!
//! Each public function is one behaviour. A test file instantiates the whole suite for a store
//! with [`guard_behaviour_suite!`](crate::guard_behaviour_suite), passing an async factory that
//! returns a fresh, empty store, so every behaviour is checked against every backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use queue_worker::idempotency::{
    Claim, Decision, GuardError, GuardSettings, IdempotencyGuard, IdempotencyKey, IdempotencyStore,
};

use crate::ManualClock;

/// The timing policy every behaviour runs under.
pub const SETTINGS: GuardSettings = GuardSettings {
    retention: Duration::from_secs(3600),
    lease_margin: Duration::from_secs(10),
    max_lease: Duration::from_secs(60),
};

type Guard<S> = IdempotencyGuard<S, ManualClock>;

async fn guard<S, F>(make_store: impl FnOnce() -> F) -> (Arc<Guard<S>>, ManualClock)
where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let clock = ManualClock::starting_now();
    let guard = IdempotencyGuard::with_clock(make_store().await, SETTINGS, clock.clone());
    (Arc::new(guard), clock)
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::parse(format!("{name}-{}", uuid::Uuid::new_v4())).expect("valid key")
}

async fn proceed<S: IdempotencyStore>(
    guard: &Guard<S>,
    key: &IdempotencyKey,
    payload: &[u8],
) -> Claim {
    match guard.claim(key, payload, None).await.expect("claim") {
        Decision::Proceed(claim) => claim,
        other => panic!("expected to proceed on {key}, got {other:?}"),
    }
}

/// The first claim of a key proceeds; after completion, a claim returns the stored result.
pub async fn first_claim_proceeds_and_completion_stores_the_result<S, F>(
    make_store: impl FnOnce() -> F,
) where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, _) = guard(make_store).await;
    let key = key("first");
    let claim = proceed(&guard, &key, b"job").await;
    assert_eq!(claim.key(), &key);
    assert!(!claim.took_over(), "a first claim replaces nothing");

    guard
        .complete(&claim, r#"{"rows":3}"#)
        .await
        .expect("complete");

    let again = guard.claim(&key, b"job", None).await.expect("claim");
    assert_eq!(
        again,
        Decision::AlreadyCompleted {
            result: r#"{"rows":3}"#.into()
        }
    );
}

/// A completed key stays completed until its retention expiry, then can be claimed again even
/// though no clean-up has removed the record.
pub async fn completed_record_is_reclaimable_after_its_retention_expiry<S, F>(
    make_store: impl FnOnce() -> F,
) where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, clock) = guard(make_store).await;
    let key = key("retained");
    let claim = proceed(&guard, &key, b"job").await;
    guard.complete(&claim, "done").await.expect("complete");

    clock.advance(SETTINGS.retention - Duration::from_secs(2));
    assert!(matches!(
        guard.claim(&key, b"job", None).await.expect("claim"),
        Decision::AlreadyCompleted { .. }
    ));

    clock.advance(Duration::from_secs(3));
    let reclaimed = proceed(&guard, &key, b"job").await;
    assert!(
        reclaimed.took_over(),
        "a claim over a record past retention is a takeover"
    );
}

/// While a live lease is held, other claims are told the key is in progress, and until when.
pub async fn claim_during_a_live_lease_is_in_progress<S, F>(make_store: impl FnOnce() -> F)
where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, clock) = guard(make_store).await;
    let key = key("busy");
    let claim = proceed(&guard, &key, b"job").await;

    clock.advance(SETTINGS.max_lease - Duration::from_secs(1));
    let decision = guard.claim(&key, b"job", None).await.expect("claim");
    assert_eq!(
        decision,
        Decision::InProgress {
            lease_expires_at: claim.lease_expires_at()
        }
    );
}

/// 50 concurrent claims of one key: exactly one proceeds, the other 49 see "in progress".
pub async fn fifty_concurrent_claims_of_one_key_let_exactly_one_proceed<S, F>(
    make_store: impl FnOnce() -> F,
) where
    S: IdempotencyStore + 'static,
    F: Future<Output = S>,
{
    let (guard, _) = guard(make_store).await;
    let key = key("race");
    let (proceeded, in_progress) = race(&guard, &key, 50).await;
    assert_eq!((proceeded, in_progress), (1, 49));
}

/// 20 keys raced at once, 50 claims each: exactly one claim per key proceeds.
pub async fn twenty_keys_raced_at_once_each_let_exactly_one_proceed<S, F>(
    make_store: impl FnOnce() -> F,
) where
    S: IdempotencyStore + 'static,
    F: Future<Output = S>,
{
    let (guard, _) = guard(make_store).await;
    let races = (0..20).map(|i| {
        let guard = Arc::clone(&guard);
        tokio::spawn(async move { race(&guard, &key(&format!("race{i}")), 50).await })
    });
    for outcome in join_all(races).await {
        assert_eq!(outcome, (1, 49));
    }
}

/// Runs `claims` concurrent claims of `key`; returns (proceeded, in progress).
async fn race<S: IdempotencyStore + 'static>(
    guard: &Arc<Guard<S>>,
    key: &IdempotencyKey,
    claims: usize,
) -> (usize, usize) {
    let start = Arc::new(tokio::sync::Barrier::new(claims));
    let attempts = (0..claims).map(|_| {
        let (guard, key, start) = (Arc::clone(guard), key.clone(), Arc::clone(&start));
        tokio::spawn(async move {
            start.wait().await;
            guard.claim(&key, b"job", None).await
        })
    });
    let mut proceeded = 0;
    let mut in_progress = 0;
    for decision in join_all(attempts).await {
        match decision.expect("claim") {
            Decision::Proceed(_) => proceeded += 1,
            Decision::InProgress { .. } => in_progress += 1,
            other => panic!("unexpected decision in a race: {other:?}"),
        }
    }
    (proceeded, in_progress)
}

async fn join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        results.push(handle.await.expect("task panicked"));
    }
    results
}

/// After a lease expires a new claimant proceeds, and the old owner can neither complete nor
/// release: it gets the distinct `ClaimLost` error, and the new owner's claim is untouched.
pub async fn expired_lease_is_reclaimed_and_the_old_owner_is_fenced_off<S, F>(
    make_store: impl FnOnce() -> F,
) where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, clock) = guard(make_store).await;
    let key = key("fenced");
    let stale = proceed(&guard, &key, b"job").await;

    clock.advance(SETTINGS.max_lease + Duration::from_secs(1));
    let current = proceed(&guard, &key, b"job").await;
    assert_ne!(stale.token(), current.token());
    assert!(
        current.took_over(),
        "the write that replaced the expired claim says so"
    );

    assert!(matches!(
        guard.complete(&stale, "stale").await,
        Err(GuardError::ClaimLost { key: lost }) if lost == key
    ));
    assert!(matches!(
        guard.release(&stale).await,
        Err(GuardError::ClaimLost { .. })
    ));

    guard.complete(&current, "current").await.expect("complete");
    assert_eq!(
        guard.claim(&key, b"job", None).await.expect("claim"),
        Decision::AlreadyCompleted {
            result: "current".into()
        }
    );
}

/// Releasing after a failed attempt lets the next claim proceed at once, without waiting for
/// the lease; the released claim cannot be released or completed again.
pub async fn release_lets_the_next_claim_proceed_at_once<S, F>(make_store: impl FnOnce() -> F)
where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, _) = guard(make_store).await;
    let key = key("released");
    let failed = proceed(&guard, &key, b"job").await;
    guard.release(&failed).await.expect("release");

    let retry = proceed(&guard, &key, b"job").await;
    assert!(
        !retry.took_over(),
        "a released claim leaves nothing to take over"
    );
    assert!(matches!(
        guard.complete(&failed, "late").await,
        Err(GuardError::ClaimLost { .. })
    ));
    guard.complete(&retry, "ok").await.expect("complete");
}

/// The same key with a different payload is a distinct, permanent outcome, whether the first
/// attempt is in progress or completed.
pub async fn same_key_with_a_different_payload_is_a_mismatch<S, F>(make_store: impl FnOnce() -> F)
where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, _) = guard(make_store).await;
    let key = key("mismatch");
    let claim = proceed(&guard, &key, b"job v1").await;
    assert_eq!(
        guard.claim(&key, b"job v2", None).await.expect("claim"),
        Decision::PayloadMismatch
    );

    guard.complete(&claim, "done").await.expect("complete");
    assert_eq!(
        guard.claim(&key, b"job v2", None).await.expect("claim"),
        Decision::PayloadMismatch
    );
}

/// The lease follows the invocation deadline plus the margin.
pub async fn lease_follows_the_invocation_deadline<S, F>(make_store: impl FnOnce() -> F)
where
    S: IdempotencyStore,
    F: Future<Output = S>,
{
    let (guard, clock) = guard(make_store).await;
    let key = key("deadline");
    let deadline = queue_worker::idempotency::Clock::now(&clock) + Duration::from_secs(20);
    let Decision::Proceed(claim) = guard
        .claim(&key, b"job", Some(deadline))
        .await
        .expect("claim")
    else {
        panic!("expected to proceed");
    };
    assert_eq!(claim.lease_expires_at(), deadline + SETTINGS.lease_margin);

    clock.advance(Duration::from_secs(31));
    proceed(&guard, &key, b"job").await;
}

/// Instantiates every behaviour of the suite as a test, for the store that `$make_store` (an
/// async function returning a fresh store) builds.
#[macro_export]
macro_rules! guard_behaviour_suite {
    ($make_store:path) => {
        $crate::guard_behaviour_suite!(@tests $make_store;
            first_claim_proceeds_and_completion_stores_the_result,
            completed_record_is_reclaimable_after_its_retention_expiry,
            claim_during_a_live_lease_is_in_progress,
            fifty_concurrent_claims_of_one_key_let_exactly_one_proceed,
            twenty_keys_raced_at_once_each_let_exactly_one_proceed,
            expired_lease_is_reclaimed_and_the_old_owner_is_fenced_off,
            release_lets_the_next_claim_proceed_at_once,
            same_key_with_a_different_payload_is_a_mismatch,
            lease_follows_the_invocation_deadline,
        );
    };
    (@tests $make_store:path; $($behaviour:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                $crate::guard_suite::$behaviour($make_store).await;
            }
        )+
    };
}
