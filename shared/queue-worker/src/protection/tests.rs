use std::sync::atomic::{AtomicU32, Ordering};

use tokio::time::Instant;

use super::*;

#[derive(Debug, PartialEq)]
enum FakeError {
    Unavailable,
    Throttled,
    NotFound,
}

impl Classify for FakeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable => ErrorClass::Transient,
            Self::Throttled => ErrorClass::Throttled,
            Self::NotFound => ErrorClass::Permanent,
        }
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
    let downstream = Downstream::failing(2, || FakeError::Unavailable);
    let value = dependency.call(|| downstream.call()).await.unwrap();
    assert_eq!(value, "ok");
    assert_eq!(downstream.calls(), 3);
    assert!(!dependency.breaker.is_open());
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_the_last_error_is_retryable() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let downstream = Downstream::failing(u32::MAX, || FakeError::Unavailable);
    let err = dependency.call(|| downstream.call()).await.unwrap_err();
    assert!(matches!(
        err,
        DependencyError::Failed {
            source: FakeError::Unavailable,
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
    let downstream = Downstream::failing(u32::MAX, || FakeError::Unavailable);
    let ((), events) = crate::metrics::counting(async {
        for _ in 0..SETTINGS.failure_threshold {
            dependency.call(|| downstream.call()).await.unwrap_err();
        }
    })
    .await;
    assert_eq!(
        events.dependencies["partner-api"].circuit_openings, 1,
        "the opening is counted once, under the dependency's name"
    );
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
    let failing = Downstream::failing(u32::MAX, || FakeError::Unavailable);
    for _ in 0..SETTINGS.failure_threshold {
        dependency.call(|| failing.call()).await.unwrap_err();
    }
    tokio::time::advance(SETTINGS.open_for).await;

    let healthy = Downstream::failing(0, || FakeError::Unavailable);
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

// ------------------------------------------------------------------ throttling and the limit

const FAR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_halves_on_throttling_from_the_calls_in_flight_never_below_one() {
    let limit = ConcurrencyLimit::new(Concurrency::Adaptive { max: 16 });
    let places: Vec<_> = futures_util::future::join_all((0..6).map(|_| limit.acquire())).await;
    let mut places = places.into_iter();
    // 6 of 16 places in use: the decrease starts from what was used.
    places.next().unwrap().throttled();
    assert_eq!(limit.limit(), 3);
    drop(places);

    for expected in [1, 1] {
        limit.acquire().await.throttled();
        assert_eq!(limit.limit(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_throttle_of_a_call_started_before_the_last_decrease_does_not_cut_again() {
    let limit = ConcurrencyLimit::new(Concurrency::Adaptive { max: 8 });
    let (first, second) = (limit.acquire().await, limit.acquire().await);
    let (third, fourth) = (limit.acquire().await, limit.acquire().await);
    first.throttled();
    assert_eq!(limit.limit(), 2);
    second.throttled();
    third.throttled();
    assert_eq!(limit.limit(), 2, "one decrease per round of overload");
    drop(fourth);

    // A call started after the decrease belongs to a new round.
    limit.acquire().await.throttled();
    assert_eq!(limit.limit(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_limit_grows_by_one_per_window_of_binding_successes_up_to_its_ceiling() {
    let limit = ConcurrencyLimit::new(Concurrency::Adaptive { max: 3 });
    limit.acquire().await.throttled();
    assert_eq!(limit.limit(), 1);

    // At a limit of 1 every call fills it: one success per step.
    limit.acquire().await.succeeded();
    assert_eq!(limit.limit(), 2);
    // At 2, a window is two successes of calls that filled the limit.
    for _ in 0..2 {
        let (below, filling) = (limit.acquire().await, limit.acquire().await);
        below.succeeded();
        assert_eq!(
            limit.limit(),
            2,
            "a call below the limit says nothing about more"
        );
        filling.succeeded();
    }
    assert_eq!(limit.limit(), 3);
    for _ in 0..10 {
        let places: Vec<_> = futures_util::future::join_all((0..3).map(|_| limit.acquire())).await;
        places.into_iter().for_each(LimitPermit::succeeded);
    }
    assert_eq!(limit.limit(), 3, "never above the ceiling");
}

#[tokio::test(start_paused = true)]
async fn successes_while_the_limit_is_not_binding_do_not_grow_it() {
    let limit = ConcurrencyLimit::new(Concurrency::Adaptive { max: 10 });
    let (a, b, c, d) = (
        limit.acquire().await,
        limit.acquire().await,
        limit.acquire().await,
        limit.acquire().await,
    );
    a.throttled();
    assert_eq!(limit.limit(), 2);
    drop((b, c, d));
    // One call at a time under a limit of 2: the limit is never reached, so never raised.
    for _ in 0..50 {
        limit.acquire().await.succeeded();
    }
    assert_eq!(limit.limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_limit_never_changes() {
    let limit = ConcurrencyLimit::new(Concurrency::Fixed { max: 4 });
    limit.acquire().await.throttled();
    limit.acquire().await.succeeded();
    assert_eq!(limit.limit(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_place_and_gets_the_one_freed() {
    let limit = ConcurrencyLimit::new(Concurrency::Fixed { max: 1 });
    let held = limit.acquire().await;
    let waiting = limit.acquire();
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_secs(60), waiting.as_mut())
            .await
            .is_err(),
        "no place while one is held"
    );
    drop(held);
    let place = waiting.await;
    assert_eq!(limit.in_flight(), 1);
    drop(place);
    assert_eq!(limit.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_call_is_retried_in_place_and_never_opens_the_circuit() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    // Far more throttled attempts than the attempt limit or the circuit's threshold.
    let downstream = Downstream::failing(20, || FakeError::Throttled);
    let stop = Instant::now() + FAR;
    let (value, events) =
        crate::metrics::counting(dependency.call_until(stop, || downstream.call())).await;
    assert_eq!(value.unwrap(), "ok");
    assert_eq!(downstream.calls(), 21);
    assert!(!dependency.is_circuit_open());
    let counted = events.dependencies["partner-api"];
    assert_eq!(counted.throttled, 20, "every throttled attempt is counted");
    assert_eq!(counted.circuit_openings, 0);
    assert_eq!(
        counted.lowest_limit,
        Some(1),
        "the limit went down to 1 under throttling"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_until_the_stop_time_gives_up_just_after_it_with_the_circuit_closed() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    let downstream = Downstream::failing(u32::MAX, || FakeError::Throttled);
    for _ in 0..SETTINGS.failure_threshold * 3 {
        let stop = Instant::now() + Duration::from_secs(2);
        let err = dependency
            .call_until(stop, || downstream.call())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DependencyError::Throttled {
                    source: Some(FakeError::Throttled),
                    attempts,
                    ..
                } if attempts > 1
            ),
            "{err}"
        );
        assert!(err.is_retryable());
        assert!(Instant::now() > stop, "gives up only after the stop time");
        assert!(Instant::now() <= stop + Duration::from_millis(1));
    }
    assert!(!dependency.is_circuit_open(), "throttling is not an outage");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_place_ends_at_the_stop_time_without_a_call() {
    let dependency =
        Dependency::new("partner-api", SETTINGS).with_concurrency(Concurrency::Fixed { max: 1 });
    let held = dependency.concurrency_limit().acquire().await;
    let downstream = Downstream::failing(0, || FakeError::Throttled);
    let stop = Instant::now() + Duration::from_millis(500);
    let err = dependency
        .call_until(stop, || downstream.call())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        DependencyError::Throttled {
            attempts: 0,
            source: None,
            ..
        }
    ));
    assert_eq!(downstream.calls(), 0);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_between_throttled_ones_still_open_the_circuit() {
    let dependency = Dependency::new("partner-api", SETTINGS);
    // Throttled, failed, throttled, failed, ...: each call ends failed after its attempts.
    let calls = AtomicU32::new(0);
    let flapping = || async {
        if calls.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Err::<(), _>(FakeError::Throttled)
        } else {
            Err(FakeError::Unavailable)
        }
    };
    for _ in 0..SETTINGS.failure_threshold {
        let err = dependency
            .call_until(Instant::now() + FAR, flapping)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            DependencyError::Failed {
                source: FakeError::Unavailable,
                ..
            }
        ));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2 * 3 * SETTINGS.failure_threshold
    );
    assert!(dependency.is_circuit_open());
}

/// A downstream that takes 10 ms per call and throttles calls beyond `capacity` at once.
struct AtCapacity {
    capacity: u32,
    in_flight: AtomicU32,
    throttled: AtomicU32,
    served: AtomicU32,
}

impl AtCapacity {
    fn new(capacity: u32) -> Self {
        Self {
            capacity,
            in_flight: AtomicU32::new(0),
            throttled: AtomicU32::new(0),
            served: AtomicU32::new(0),
        }
    }

    async fn call(&self) -> Result<(), FakeError> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(FakeError::Throttled);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// 20 callers (a batch's records) make 25 calls each against a downstream that takes 4 at once;
/// returns the downstream's throttled attempts and the final limit.
async fn crowd(concurrency: Concurrency) -> (u32, usize) {
    let dependency = Dependency::new("partner-api", SETTINGS).with_concurrency(concurrency);
    let downstream = AtCapacity::new(4);
    let callers = (0..20).map(|_| async {
        for _ in 0..25 {
            dependency
                .call_until(Instant::now() + FAR, || downstream.call())
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(callers).await;
    assert_eq!(downstream.served.load(Ordering::SeqCst), 500);
    assert!(!dependency.is_circuit_open());
    (
        downstream.throttled.load(Ordering::SeqCst),
        dependency.concurrency_limit().limit(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_converges_on_what_the_downstream_takes_and_throttles_far_less() {
    // The backoff's jitter draws from this thread's generator (every task runs on the test's
    // thread): seeded, the counts are the same on every run.
    fastrand::seed(7);
    let (fixed_throttles, fixed_limit) = crowd(Concurrency::Fixed { max: 20 }).await;
    let (adaptive_throttles, adaptive_limit) = crowd(Concurrency::Adaptive { max: 20 }).await;
    assert_eq!(fixed_limit, 20);
    assert!(
        (1..=8).contains(&adaptive_limit),
        "the limit ends near the downstream's 4, not at 20: {adaptive_limit}"
    );
    // With the seed above: fixed 120, adaptive 29 throttled attempts. Unseeded they ranged over
    // 119 to 131 and 28 to 31 in 150 runs (a ratio of at least 3.9); a third leaves room for a
    // change of the code that moves the draws.
    assert!(
        adaptive_throttles * 3 < fixed_throttles,
        "adaptive {adaptive_throttles} throttled attempts, fixed {fixed_throttles}"
    );
    assert!(
        adaptive_throttles < 250,
        "fewer throttled attempts than half the calls: {adaptive_throttles}"
    );
}
