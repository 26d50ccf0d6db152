//! The concurrency limit of one dependency in one execution environment.
//!
//! A fixed limit is the bound the configuration allows (batch concurrency x calls per record).
//! An adaptive limit starts there and learns what the dependency accepts, AIMD-style, as TCP's
//! congestion window does:
//! - **additive increase**: after a window of successful calls (as many as the limit) made
//!   while the limit was binding, the limit grows by one, up to its ceiling. Successes while
//!   fewer calls are waiting than the limit allows say nothing about more, so they do not count;
//!   the limit cannot drift far above what is used;
//! - **multiplicative decrease**: a throttled call halves the limit, from the calls actually in
//!   flight (not from a limit that was never used), to no less than 1. Only one decrease per
//!   round: a throttle of a call that started before the last decrease is an echo of the same
//!   overload and does not cut again.
//!
//! Each execution environment learns on its own. Several environments writing to one
//! downstream converge on a share of it each (AIMD is fair between its users), and a
//! throttled call waits and tries again instead of failing its record.

use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// How a dependency's concurrent calls are limited in one execution environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most `max` calls at once, whatever the dependency says.
    Fixed {
        /// The limit.
        max: usize,
    },
    /// Between 1 and `max` calls at once: halved on throttling, grown by one after a window of
    /// successes (see the module docs).
    Adaptive {
        /// The ceiling, and the start: the bound the configuration allows.
        max: usize,
    },
}

impl Concurrency {
    /// The ceiling.
    pub fn max(self) -> usize {
        match self {
            Self::Fixed { max } | Self::Adaptive { max } => max.max(1),
        }
    }
}

/// The multiplicative decrease.
const DECREASE: f64 = 0.5;

#[derive(Debug)]
struct State {
    policy: Concurrency,
    limit: usize,
    in_flight: usize,
    /// Successful calls made while the limit was binding, since the last change.
    window: usize,
    /// Number of decreases so far: a permit remembers the round it started in.
    round: u64,
}

/// A concurrency limit calls wait on (see the module docs).
#[derive(Debug)]
pub struct ConcurrencyLimit {
    state: Mutex<State>,
    room: Notify,
}

/// Permission for one call under a [`ConcurrencyLimit`]. Report throttling with
/// [`throttled`](Self::throttled) and success with [`succeeded`](Self::succeeded); dropping it
/// otherwise (a failure, a cancelled call) only frees its place.
#[derive(Debug)]
pub struct LimitPermit<'a> {
    limit: &'a ConcurrencyLimit,
    round: u64,
    /// Whether the limit was binding when this call started: it filled the last place, or had
    /// to wait for one.
    binding: bool,
}

impl ConcurrencyLimit {
    /// A limit following `policy`, starting at its ceiling.
    pub fn new(policy: Concurrency) -> Self {
        Self {
            state: Mutex::new(State {
                policy,
                limit: policy.max(),
                in_flight: 0,
                window: 0,
                round: 0,
            }),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves a consistent state, so a poisoned lock still holds one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// Switches to `policy`, starting again from its ceiling (what it learnt is forgotten).
    pub fn set_policy(&self, policy: Concurrency) {
        let mut state = self.state();
        state.policy = policy;
        state.limit = policy.max();
        state.window = 0;
        state.round += 1;
        drop(state);
        self.room.notify_waiters();
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Waits for a place. Cancel-safe: bound the wait with `tokio::time::timeout_at`.
    pub async fn acquire(&self) -> LimitPermit<'_> {
        let mut waited = false;
        loop {
            // Registered before the check, so a place freed in between is not missed.
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            {
                let mut state = self.state();
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    return LimitPermit {
                        limit: self,
                        round: state.round,
                        binding: waited || state.in_flight == state.limit,
                    };
                }
            }
            waited = true;
            room.await;
        }
    }
}

impl LimitPermit<'_> {
    /// The call succeeded (or the dependency answered with a permanent error).
    pub fn succeeded(self) {
        let limit = self.limit;
        let mut state = limit.state();
        if let Concurrency::Adaptive { max } = state.policy
            && self.binding
        {
            state.window += 1;
            if state.window >= state.limit {
                state.window = 0;
                state.limit = (state.limit + 1).min(max.max(1));
                drop(state);
                limit.room.notify_waiters();
            }
        }
    }

    /// The dependency refused the call because it is at capacity.
    pub fn throttled(self) {
        let limit = self.limit;
        let mut state = limit.state();
        if let Concurrency::Adaptive { .. } = state.policy
            && self.round == state.round
        {
            let used = state.limit.min(state.in_flight);
            let decreased = ((used as f64 * DECREASE).floor() as usize).max(1);
            tracing::debug!(
                from = state.limit,
                to = decreased,
                "throttled: concurrency limit decreased"
            );
            state.limit = decreased;
            state.window = 0;
            state.round += 1;
        }
    }
}

impl Drop for LimitPermit<'_> {
    /// Frees the place, however the call ended.
    fn drop(&mut self) {
        let mut state = self.limit.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        drop(state);
        self.limit.room.notify_waiters();
    }
}
