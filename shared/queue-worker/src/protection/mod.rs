//! Dependency protection: keep a backlog spike from becoming an outage of whatever the worker
//! calls (a database, a partner API).
//!
//! Three layers, outermost first:
//! 1. The event source mapping's maximum concurrency caps concurrent invocations, and the batch
//!    processor's concurrency caps calls per invocation. Their product is the worst-case number
//!    of concurrent calls on a dependency.
//! 2. A [`CircuitBreaker`] per dependency and execution environment: after a run of failures it
//!    opens, and calls fail fast (as retryable, so the batch processor backs the records off)
//!    until a cool-down has passed; then one trial call decides whether it closes again.
//! 3. Each call has a timeout and a bounded number of attempts with jittered exponential backoff
//!    ([`Dependency::call`]).
//!
//! Do not wrap AWS SDK calls in retries here: the SDK retries them itself (configure it through
//! `SdkConfig`'s retry settings instead). A circuit breaker around an SDK call is fine.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::config::{ConfigError, Env};

/// Whether an error of a dependency is worth another attempt.
pub trait Transient {
    /// `true` for failures that may pass (timeouts, throttling, 5xx); `false` for answers that
    /// will not change (not found, invalid request).
    fn is_transient(&self) -> bool;
}

/// Settings of a protected dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencySettings {
    /// Limit of one attempt.
    pub timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles per attempt, jittered.
    pub retry_base: Duration,
    /// Consecutive failed calls that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial call.
    pub open_for: Duration,
}

impl DependencySettings {
    /// The environment variables these settings are read from.
    pub const VARIABLES: &'static [&'static str] = &[
        "DOWNSTREAM_TIMEOUT_MS",
        "DOWNSTREAM_MAX_ATTEMPTS",
        "DOWNSTREAM_RETRY_BASE_MS",
        "CIRCUIT_FAILURE_THRESHOLD",
        "CIRCUIT_OPEN_SECONDS",
    ];

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
}

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

impl<E: Transient> DependencyError<E> {
    /// Whether the call may succeed later: an open circuit, timeouts and transient errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::CircuitOpen { .. } | Self::TimedOut { .. } => true,
            Self::Failed { source, .. } => source.is_transient(),
        }
    }
}

/// A downstream dependency with a timeout, bounded jittered retries and a circuit breaker.
///
/// Create one per dependency at start-up (in `main`, outside the handler) and share it: the
/// breaker's memory is what protects the dependency across invocations of an execution
/// environment.
#[derive(Debug)]
pub struct Dependency {
    name: &'static str,
    settings: DependencySettings,
    breaker: CircuitBreaker,
}

enum Attempt<E> {
    TimedOut,
    Failed(E),
}

impl<E: Transient> Attempt<E> {
    fn is_transient(&self) -> bool {
        match self {
            Self::TimedOut => true,
            Self::Failed(e) => e.is_transient(),
        }
    }
}

impl Dependency {
    /// A protected dependency called `name` (used in errors and logs).
    pub fn new(name: &'static str, settings: DependencySettings) -> Self {
        Self {
            name,
            settings,
            breaker: CircuitBreaker::new(settings.failure_threshold, settings.open_for),
        }
    }

    /// The dependency's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether calls currently fail fast.
    pub fn is_circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Calls `operation` (building a new future per attempt) under the dependency's protection.
    ///
    /// Transient failures and timeouts are retried up to the attempt limit; a permanent error
    /// returns at once and does not count against the circuit (the dependency answered).
    pub async fn call<T, E, F, Fut>(&self, mut operation: F) -> Result<T, DependencyError<E>>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit =
            self.breaker
                .try_acquire()
                .map_err(|retry_after| DependencyError::CircuitOpen {
                    dependency: self.name,
                    retry_after,
                })?;
        let timeout = self.settings.timeout;
        let attempt = || {
            let future = operation();
            async move {
                match tokio::time::timeout(timeout, future).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(error)) => Err(Attempt::Failed(error)),
                    Err(_) => Err(Attempt::TimedOut),
                }
            }
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_base.saturating_mul(32))
            .with_max_times(self.settings.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let outcome = attempt
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(Attempt::is_transient)
            .await;

        match outcome {
            Ok(value) => {
                permit.succeeded();
                Ok(value)
            }
            Err(Attempt::Failed(source)) if !source.is_transient() => {
                permit.succeeded();
                Err(DependencyError::Failed {
                    dependency: self.name,
                    source,
                })
            }
            Err(Attempt::Failed(source)) => {
                permit.failed();
                Err(DependencyError::Failed {
                    dependency: self.name,
                    source,
                })
            }
            Err(Attempt::TimedOut) => {
                permit.failed();
                Err(DependencyError::TimedOut {
                    dependency: self.name,
                    timeout,
                    attempts: self.settings.max_attempts,
                })
            }
        }
    }
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

    fn record(&self, success: bool) {
        let mut state = self.state();
        *state = match (*state, success) {
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

    /// The call failed in a way that says the dependency is unhealthy.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.record(false);
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
