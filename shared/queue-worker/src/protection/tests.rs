use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

#[derive(Debug, PartialEq)]
enum FakeError {
    Throttled,
    NotFound,
}

impl Transient for FakeError {
    fn is_transient(&self) -> bool {
        *self == Self::Throttled
    }
}

const SETTINGS: DependencySettings = DependencySettings {
    timeout: Duration::from_millis(200),
    max_attempts: 3,
    retry_base: Duration::from_millis(10),
    failure_threshold: 2,
    open_for: Duration::from_secs(30),
};

/// A downstream that fails its first `failures` calls with `error`, then answers `ok`.
struct Downstream {
    calls: AtomicU32,
    failures: u32,
    error: fn() -> FakeError,
}

impl Downstream {
    fn failing(failures: u32, error: fn() -> FakeError) -> Self {
        Self {
            calls: AtomicU32::new(0),
            failures,
            error,
        }
    }

    async fn call(&self) -> Result<&'static str, FakeError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            Err((self.error)())
        } else {
            Ok("ok")
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_one_succeeds() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let downstream = Downstream::failing(2, || FakeError::Throttled);
    let value = dependency.call(|| downstream.call()).await.unwrap();
    assert_eq!(value, "ok");
    assert_eq!(downstream.calls(), 3);
    assert!(!dependency.breaker.is_open());
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_the_last_error_is_retryable() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let downstream = Downstream::failing(u32::MAX, || FakeError::Throttled);
    let err = dependency.call(|| downstream.call()).await.unwrap_err();
    assert!(matches!(
        err,
        DependencyError::Failed {
            source: FakeError::Throttled,
            ..
        }
    ));
    assert!(err.is_retryable());
    assert_eq!(downstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried_and_does_not_open_the_circuit() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    for _ in 0..5 {
        let downstream = Downstream::failing(1, || FakeError::NotFound);
        let err = dependency.call(|| downstream.call()).await.unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(downstream.calls(), 1);
    }
    assert!(!dependency.breaker.is_open());
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_bounded_by_the_timeout() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let calls = AtomicU32::new(0);
    let err = dependency
        .call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, FakeError>("late")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DependencyError::TimedOut { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn the_circuit_opens_after_consecutive_failures_and_then_fails_fast() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let downstream = Downstream::failing(u32::MAX, || FakeError::Throttled);
    for _ in 0..SETTINGS.failure_threshold {
        dependency.call(|| downstream.call()).await.unwrap_err();
    }
    let calls_before = downstream.calls();

    let err = dependency.call(|| downstream.call()).await.unwrap_err();
    assert!(
        matches!(err, DependencyError::CircuitOpen { retry_after, .. } if retry_after <= SETTINGS.open_for)
    );
    assert!(err.is_retryable());
    assert_eq!(
        downstream.calls(),
        calls_before,
        "an open circuit makes no call"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_cool_down_one_successful_trial_closes_the_circuit() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let failing = Downstream::failing(u32::MAX, || FakeError::Throttled);
    for _ in 0..SETTINGS.failure_threshold {
        dependency.call(|| failing.call()).await.unwrap_err();
    }
    tokio::time::advance(SETTINGS.open_for).await;

    let healthy = Downstream::failing(0, || FakeError::Throttled);
    assert_eq!(dependency.call(|| healthy.call()).await.unwrap(), "ok");
    assert!(!dependency.breaker.is_open());
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_the_circuit() {
    let breaker = CircuitBreaker::new(1, Duration::from_secs(30));
    breaker.try_acquire().unwrap().failed();
    assert!(breaker.try_acquire().is_err());

    tokio::time::advance(Duration::from_secs(30)).await;
    let trial = breaker
        .try_acquire()
        .expect("trial allowed after the cool-down");
    assert!(breaker.try_acquire().is_err(), "only one trial at a time");
    trial.failed();
    assert_eq!(breaker.try_acquire().unwrap_err(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_lets_the_next_call_be_the_trial() {
    let breaker = CircuitBreaker::new(1, Duration::from_secs(30));
    breaker.try_acquire().unwrap().failed();
    tokio::time::advance(Duration::from_secs(30)).await;

    drop(breaker.try_acquire().expect("trial"));
    breaker.try_acquire().expect("a new trial").succeeded();
    assert!(!breaker.is_open());
}

#[test]
fn settings_come_from_the_environment() {
    let env = Env::from_pairs([
        ("DOWNSTREAM_TIMEOUT_MS", "750"),
        ("CIRCUIT_OPEN_SECONDS", "5"),
    ]);
    let settings = DependencySettings::from_env(&env).unwrap();
    assert_eq!(settings.timeout, Duration::from_millis(750));
    assert_eq!(settings.open_for, Duration::from_secs(5));
    assert_eq!(settings.max_attempts, 3);

    let bad = Env::from_pairs([("DOWNSTREAM_MAX_ATTEMPTS", "0")]);
    assert!(matches!(
        DependencySettings::from_env(&bad),
        Err(ConfigError::Invalid { name, .. }) if name == "DOWNSTREAM_MAX_ATTEMPTS"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_late_success_from_before_the_circuit_opened_does_not_close_it() {
    let breaker = CircuitBreaker::new(1, Duration::from_secs(30));
    let slow_call = breaker.try_acquire().unwrap();
    breaker.try_acquire().unwrap().failed();
    assert!(breaker.is_open());
    slow_call.succeeded();
    assert!(
        breaker.is_open(),
        "only a trial after the cool-down closes the circuit"
    );
}
