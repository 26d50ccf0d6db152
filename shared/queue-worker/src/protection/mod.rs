//! Dependency protection: keep a backlog spike from becoming an outage of whatever the worker
//! calls (a database, a partner API), and use what the dependency can take.
//!
//! Four layers, outermost first:
//! 1. The event source mapping's maximum concurrency caps concurrent invocations, and the batch
//!    processor's concurrency caps calls per invocation. Their product is the worst-case number
//!    of concurrent calls on a dependency.
//! 2. A [`CircuitBreaker`] per dependency and execution environment, for a dependency that is
//!    **down**: after a run of failed calls (timeouts, 5xx, connection errors) it opens, and
//!    calls fail fast (as retryable, so the batch processor backs the records off) until a
//!    cool-down has passed; then one trial call decides whether it closes again.
//! 3. A [`ConcurrencyLimit`] per dependency and execution environment, for a dependency that
//!    is **at capacity**: throttling is a capacity signal, not a failure. It never counts
//!    against the circuit; it lowers the environment's limit (AIMD, see [`Concurrency`]), and
//!    the throttled call waits a jittered backoff and tries again in place while the caller has
//!    time ([`Dependency::call_until`]), instead of failing its record.
//! 4. Each attempt has a timeout, and failed attempts are retried a bounded number of times
//!    with jittered exponential backoff.
//!
//! Errors say which they are through [`Classify`]: [`ErrorClass::Throttled`],
//! [`ErrorClass::Transient`] or [`ErrorClass::Permanent`], decided from typed error variants.
//!
//! Do not wrap AWS SDK calls in retries here: the SDK retries them itself (configure it through
//! `SdkConfig`'s retry settings instead). A circuit breaker around an SDK call is fine; to use
//! the limit and the in-place throttling retries, disable the SDK's retries for that client (as
//! the example worker does for its items table).

mod limit;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

pub use limit::{Concurrency, ConcurrencyLimit, LimitPermit};

use crate::config::{ConfigError, Env};
use crate::metrics;

/// What an error of a dependency says about calling it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The dependency is at capacity and refused the call (throttling, rate limits, unprocessed
    /// items): call again, later and less often. Not a failure: the circuit ignores it.
    Throttled,
    /// The call failed in a way that may pass (a 5xx, a reset connection): a bounded number of
    /// attempts, counted by the circuit.
    Transient,
    /// An answer that will not change (not found, invalid request): no retry.
    Permanent,
}

/// Classifies a dependency's errors. Decide from typed variants (an SDK error's variant or
/// code), never from message text.
pub trait Classify {
    /// What this error says about calling again.
    fn class(&self) -> ErrorClass;
}

/// Settings of a protected dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencySettings {
    /// Limit of one attempt.
    pub timeout: Duration,
    /// Attempts per call, the first included, counting failed attempts (timeouts, transient
    /// errors); throttled attempts are bounded by time instead.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles per attempt, jittered. Also the first delay
    /// after a throttled attempt.
    pub retry_base: Duration,
    /// Consecutive failed calls that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial call.
    pub open_for: Duration,
}

impl DependencySettings {
    /// Reads the settings: `DOWNSTREAM_TIMEOUT_MS` (default 5000), `DOWNSTREAM_MAX_ATTEMPTS`
    /// (3), `DOWNSTREAM_RETRY_BASE_MS` (100), `CIRCUIT_FAILURE_THRESHOLD` (5) and
    /// `CIRCUIT_OPEN_SECONDS` (30).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let count = |name: &str, default: u64| -> Result<u32, ConfigError> {
            Ok(u32::try_from(env.positive_or(name, default)?).unwrap_or(u32::MAX))
        };
        Ok(Self {
            timeout: Duration::from_millis(env.positive_or("DOWNSTREAM_TIMEOUT_MS", 5000)?),
            max_attempts: count("DOWNSTREAM_MAX_ATTEMPTS", 3)?,
            retry_base: Duration::from_millis(env.parsed_or("DOWNSTREAM_RETRY_BASE_MS", 100)?),
            failure_threshold: count("CIRCUIT_FAILURE_THRESHOLD", 5)?,
            open_for: env.seconds_or("CIRCUIT_OPEN_SECONDS", Duration::from_secs(30))?,
        })
    }

    /// The delays between failed attempts: `retry_base` doubling, jittered, at most
    /// `max_attempts - 1` of them.
    fn failure_delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.retry_base.saturating_mul(32))
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }

    /// The delays after throttled attempts: `retry_base` doubling up to 8 times it, jittered,
    /// without a count (the caller's time bounds them).
    fn throttle_delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.retry_base.saturating_mul(8))
            .without_max_times()
            .with_jitter()
            .build()
    }
}

/// The longest the concurrency limit of a dependency built with [`Dependency::new`] lets
/// through at once: high enough never to be the binding bound of a configuration; set the
/// configuration's own bound with [`Dependency::with_concurrency`].
pub const UNBOUNDED: usize = 1024;

/// Why a protected call failed.
#[derive(Debug, thiserror::Error)]
pub enum DependencyError<E> {
    /// The circuit is open: the call was not made. Retryable after `retry_after`.
    #[error("{dependency} is failing; its circuit is open for another {retry_after:?}")]
    CircuitOpen {
        /// The dependency's name.
        dependency: &'static str,
        /// Time until the next trial call is allowed.
        retry_after: Duration,
    },
    /// The dependency was at capacity until the caller's stop time: every attempt was
    /// throttled, or no place under the concurrency limit came free. Retryable; says nothing
    /// about the dependency's health.
    #[error("{dependency} was at capacity until the stop time ({attempts} throttled attempts)")]
    Throttled {
        /// The dependency's name.
        dependency: &'static str,
        /// Attempts made, all throttled (0: none could start).
        attempts: u32,
        /// The last throttling error, if an attempt was made.
        #[source]
        source: Option<E>,
    },
    /// Every attempt timed out. Retryable.
    #[error("{dependency} did not answer within {timeout:?} ({attempts} attempts)")]
    TimedOut {
        /// The dependency's name.
        dependency: &'static str,
        /// Limit of each attempt.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The dependency answered with an error: transient ones after the last attempt.
    #[error("{dependency} failed")]
    Failed {
        /// The dependency's name.
        dependency: &'static str,
        /// The last error.
        #[source]
        source: E,
    },
}

impl<E: Classify> DependencyError<E> {
    /// Whether the call may succeed later: an open circuit, throttling, timeouts and transient
    /// errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::CircuitOpen { .. } | Self::Throttled { .. } | Self::TimedOut { .. } => true,
            Self::Failed { source, .. } => source.class() != ErrorClass::Permanent,
        }
    }
}

/// A downstream dependency with a timeout, bounded jittered retries, a circuit breaker and a
/// concurrency limit.
///
/// Create one per dependency at start-up (in `main`, outside the handler) and share it: the
/// breaker's and the limit's memory is what protects the dependency across invocations of an
/// execution environment.
#[derive(Debug)]
pub struct Dependency {
    name: &'static str,
    settings: DependencySettings,
    breaker: CircuitBreaker,
    limit: ConcurrencyLimit,
    pending: AtomicUsize,
}

/// Counts a call as pending while it lives.
struct Pending<'a>(&'a AtomicUsize);

impl<'a> Pending<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One timer tick: a call out of time returns this long after the stop time, so a caller that
/// bounds its work by the same instant sees its own time-out first.
const TICK: Duration = Duration::from_millis(1);

impl Dependency {
    /// A protected dependency called `name` (used in errors and logs), with an adaptive
    /// concurrency limit of at most [`UNBOUNDED`] calls.
    pub fn new(name: &'static str, settings: DependencySettings) -> Self {
        Self {
            name,
            settings,
            breaker: CircuitBreaker::new(settings.failure_threshold, settings.open_for),
            limit: ConcurrencyLimit::new(Concurrency::Adaptive { max: UNBOUNDED }),
            pending: AtomicUsize::new(0),
        }
    }

    /// The same dependency with its concurrent calls limited by `concurrency`: give the
    /// adaptive limit the bound the configuration allows in one execution environment (e.g.
    /// batch concurrency x calls in flight per record) as its ceiling.
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.limit = ConcurrencyLimit::new(concurrency);
        self
    }

    /// Whether calls currently fail fast.
    pub fn is_circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The concurrency limit (for inspecting it).
    pub fn concurrency_limit(&self) -> &ConcurrencyLimit {
        &self.limit
    }

    /// Calls under way now: in flight, waiting for a place, or waiting to try again. Above
    /// what the dependency takes at once, the dependency is the bottleneck.
    pub fn pending_calls(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// [`call_until`](Self::call_until) with a stop time of `timeout x max_attempts` from now:
    /// for callers without a deadline of their own.
    pub async fn call<T, E, F, Fut>(&self, operation: F) -> Result<T, DependencyError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let budget = self
            .settings
            .timeout
            .saturating_mul(self.settings.max_attempts);
        self.call_until(Instant::now() + budget, operation).await
    }

    /// Calls `operation` (building a new future per attempt) under the dependency's protection,
    /// spending no time waiting beyond `stop` (the invocation's stop time).
    ///
    /// - An open circuit fails at once ([`DependencyError::CircuitOpen`]).
    /// - The call waits for a place under the concurrency limit.
    /// - A throttled attempt lowers the limit, waits a jittered backoff and tries again, as long
    ///   as the next attempt can start before `stop`; then the call gives up with
    ///   [`DependencyError::Throttled`], just after `stop` (a caller bounding its work by `stop`
    ///   stops first). Throttling never counts against the circuit.
    /// - Transient failures and timeouts are retried up to the attempt limit and then count as
    ///   one failed call against the circuit; a permanent error returns at once and does not
    ///   count (the dependency answered).
    pub async fn call_until<T, E, F, Fut>(
        &self,
        stop: Instant,
        mut operation: F,
    ) -> Result<T, DependencyError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _pending = Pending::enter(&self.pending);
        let breaker =
            self.breaker
                .try_acquire()
                .map_err(|retry_after| DependencyError::CircuitOpen {
                    dependency: self.name,
                    retry_after,
                })?;
        let timeout = self.settings.timeout;
        let mut failure_delays = self.settings.failure_delays();
        let mut throttle_delays = self.settings.throttle_delays();
        let (mut attempts, mut throttled) = (0u32, 0u32);
        let mut last_throttle: Option<E> = None;
        loop {
            let Ok(place) = tokio::time::timeout_at(stop, self.limit.acquire()).await else {
                // Unreported: the breaker learns nothing from a call that was not made.
                drop(breaker);
                return Err(self.out_of_time(stop, throttled, last_throttle).await);
            };
            attempts += 1;
            let limit = self.limit.limit();
            metrics::note_dependency(self.name, |events| {
                events.lowest_limit = Some(events.lowest_limit.map_or(limit, |l| l.min(limit)));
            });
            let error = match attempt(timeout, &mut operation).await {
                Some(Ok(value)) => {
                    place.succeeded();
                    breaker.succeeded();
                    return Ok(value);
                }
                Some(Err(error)) => Some(error),
                None => None,
            };
            let class = error
                .as_ref()
                .map_or(ErrorClass::Transient, Classify::class);
            match (class, error) {
                (ErrorClass::Throttled, error) => {
                    place.throttled();
                    metrics::note_dependency(self.name, |events| events.throttled += 1);
                    throttled += 1;
                    last_throttle = error;
                    let delay = throttle_delays.next().unwrap_or(self.settings.retry_base);
                    if Instant::now() + delay >= stop {
                        drop(breaker);
                        return Err(self.out_of_time(stop, throttled, last_throttle).await);
                    }
                    tokio::time::sleep(delay).await;
                }
                (ErrorClass::Permanent, Some(source)) => {
                    drop(place);
                    breaker.succeeded();
                    return Err(DependencyError::Failed {
                        dependency: self.name,
                        source,
                    });
                }
                (_, error) => {
                    drop(place);
                    let Some(delay) = failure_delays.next() else {
                        if breaker.failed() {
                            metrics::note_dependency(self.name, |e| e.circuit_openings += 1);
                        }
                        return Err(match error {
                            Some(source) => DependencyError::Failed {
                                dependency: self.name,
                                source,
                            },
                            None => DependencyError::TimedOut {
                                dependency: self.name,
                                timeout,
                                attempts: attempts - throttled,
                            },
                        });
                    };
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Waits until just after `stop` and says the dependency was at capacity until then.
    async fn out_of_time<E>(
        &self,
        stop: Instant,
        attempts: u32,
        source: Option<E>,
    ) -> DependencyError<E> {
        tokio::time::sleep_until(stop + TICK).await;
        DependencyError::Throttled {
            dependency: self.name,
            attempts,
            source,
        }
    }
}

/// One attempt of `operation`: its answer, or `None` when it gave none within `timeout`. In a
/// binary with the library's fault injectors on (feature `testing`), an injected fault also
/// gives none, after the call was made or instead of it ([`crate::testing`]).
async fn attempt<T, E, F, Fut>(timeout: Duration, operation: &mut F) -> Option<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    #[cfg(feature = "testing")]
    if let Some(fault) = crate::testing::dependency_fault() {
        if fault == crate::testing::DependencyFault::AnswerLost {
            let _ = tokio::time::timeout(timeout, operation()).await;
        }
        return None;
    }
    tokio::time::timeout(timeout, operation()).await.ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down is over and one trial call is in flight; others still fail fast.
    HalfOpen,
}

/// A circuit breaker: closed (calls pass), open (calls fail fast), half-open (one trial call).
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

/// Permission for one call through a [`CircuitBreaker`]. Report how it went with
/// [`succeeded`](Self::succeeded) or [`failed`](Self::failed); dropping it unreported (the call
/// was cancelled) leaves the breaker as if the call had not been made.
#[derive(Debug)]
#[must_use = "report the call's result, or the breaker learns nothing"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    reported: bool,
}

impl CircuitBreaker {
    /// Opens after `failure_threshold` consecutive failures, for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section writes a whole state, so a poisoned lock still holds a valid one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go ahead now; `Err` holds the time until it may.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => {}
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::HalfOpen;
                tracing::info!("circuit half-open: letting one trial call through");
            }
            State::HalfOpen => return Err(self.open_for),
        }
        Ok(Permit {
            breaker: self,
            reported: false,
        })
    }

    /// Whether calls currently fail fast.
    pub fn is_open(&self) -> bool {
        match *self.state() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::HalfOpen => true,
        }
    }

    /// Records a call's result; returns whether it opened the circuit.
    fn record(&self, success: bool) -> bool {
        let mut state = self.state();
        let before = *state;
        *state = match (before, success) {
            // A success reported while open comes from a call that started before the circuit
            // opened: it proves nothing about now. Only the trial call closes the circuit.
            (State::Open { until }, true) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen, true) => State::Closed {
                consecutive_failures: 0,
            },
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) if consecutive_failures + 1 < self.failure_threshold => State::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen, false) => {
                tracing::warn!(open_for = ?self.open_for, "circuit opened: failing calls fast");
                State::Open {
                    until: Instant::now() + self.open_for,
                }
            }
        };
        !matches!(before, State::Open { .. }) && matches!(*state, State::Open { .. })
    }

    fn abandon(&self) {
        let mut state = self.state();
        if *state == State::HalfOpen {
            // The trial was cancelled: let the next call be the trial.
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }
}

impl Permit<'_> {
    /// The call succeeded (or the dependency answered with a permanent error).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.record(true);
    }

    /// The call failed in a way that says the dependency is unhealthy. Returns whether this
    /// failure opened the circuit.
    pub fn failed(mut self) -> bool {
        self.reported = true;
        self.breaker.record(false)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.abandon();
        }
    }
}

#[cfg(test)]
mod tests;
