//! Fault injection at the library's seams, for chaos soaks and tests (feature `testing`).
//!
//! A worker's correctness under failure is a property of the library's protocol as much as of
//! its domain: the guard's store, the continuation send, the visibility change and the parking
//! are every worker's, so their injectors live here, once, and a soak of any worker wraps them
//! the same way. What only a domain knows (its own tables, its object reads, its downstream's
//! answers) is wrapped by the domain's driver with the same [`Faults`].
//!
//! - [`Faults`]: the fault rate, the counts of what was injected, and **kill points**: an
//!   invocation run inside [`Faults::killable`] may be chosen to die at a named point; the
//!   seams (and a domain's code) call [`Faults::kill_point`] where a crash matters, and the
//!   invocation's future then ends as if the process had crashed there.
//! - [`FaultyStore`], [`FaultyJobs`], [`FaultyQueue`]: the guard's store, the job queue and the
//!   batch's queue actions with faults (half of the store's faults are "response lost": the
//!   call is made, then reported failed) and the library's kill points ([`BEFORE_THE_CLAIM`],
//!   [`BEFORE_COMPLETE`]).
//! - In a worker's binary built with this feature and started with [`FAULT_RATE_VARIABLE`],
//!   [`crate::lambda::run_worker`] wraps its seams with these, and every attempt on a
//!   [`crate::protection::Dependency`] fails at the same rate as a transient error without an
//!   answer (half of them after the call was made: the dependency may have acted).
//!
//! Never enable this feature in a function's production build.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;

use crate::BoxError;
use crate::batch::{ParkReason, QueueActions};
use crate::config::{ConfigError, Env};
use crate::idempotency::{Claim, ClaimRequest, Decision, GuardError, IdempotencyStore};
use crate::job::JobQueue;

/// The library's kill point before a job is claimed.
pub const BEFORE_THE_CLAIM: &str = "before the claim";
/// The library's kill point after the work, before the claim is completed.
pub const BEFORE_COMPLETE: &str = "after the work, before complete";

tokio::task_local! {
    static KILL: Arc<KillSwitch>;
}

#[derive(Debug, Default)]
struct KillSwitch {
    /// The point this invocation dies at, if any.
    target: Option<&'static str>,
    notify: tokio::sync::Notify,
    fired: AtomicBool,
    point: Mutex<Option<&'static str>>,
}

pub use crate::lambda::FAULT_RATE_VARIABLE;

/// The faults of this process's worker, when [`crate::lambda::run_worker`] runs with
/// [`FAULT_RATE_VARIABLE`]: the seams it does not build itself (a [`crate::protection::Dependency`]
/// the worker made) read them from here.
static PROCESS_FAULTS: std::sync::OnceLock<Arc<Faults>> = std::sync::OnceLock::new();

/// Makes `faults` this process's (the first call wins).
pub(crate) fn install_process_faults(faults: &Arc<Faults>) {
    let _ = PROCESS_FAULTS.set(Arc::clone(faults));
}

/// What an attempt on a protected dependency does under this process's faults: `None` when
/// none is injected (there are none, or this attempt is spared), else whether the call is
/// still made (its answer is lost: the dependency may have acted) or not made at all (a reset
/// connection). Either way the attempt fails as a transient error without an answer.
pub(crate) fn dependency_fault() -> Option<DependencyFault> {
    let faults = PROCESS_FAULTS.get()?;
    faults.fault("dependency.call").then(|| {
        if fastrand::bool() {
            DependencyFault::AnswerLost
        } else {
            DependencyFault::NotMade
        }
    })
}

/// How an injected fault fails an attempt on a protected dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DependencyFault {
    /// The call is made and its answer dropped.
    AnswerLost,
    /// The call is not made.
    NotMade,
}

/// Faults to inject and what was injected (see the module docs).
#[derive(Debug)]
pub struct Faults {
    rate: f64,
    /// Whether each fault is also logged (out of process, the log is how a soak counts them).
    logged: bool,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    kills: Mutex<BTreeMap<&'static str, u64>>,
    parked: Mutex<BTreeMap<String, u64>>,
}

/// How an invocation run by [`Faults::killable`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// It ran to its end.
    Finished(T),
    /// It was killed at this point.
    Killed(&'static str),
}

impl Faults {
    /// Each call on a faulty seam fails with probability `rate` (0 to 1).
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            logged: false,
            injected: Mutex::default(),
            kills: Mutex::default(),
            parked: Mutex::default(),
        }
    }

    /// The faults a worker's binary injects when [`FAULT_RATE_VARIABLE`] is set to a rate above
    /// 0 (`None` when it is unset or 0): each one is also logged, as a warning with the field
    /// `injected_fault` (the path), which a soak hosting the binary counts in its log.
    pub fn from_env(env: &Env) -> Result<Option<Arc<Self>>, ConfigError> {
        let rate: f64 = env.parsed_or(FAULT_RATE_VARIABLE, 0.0)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::Invalid {
                name: FAULT_RATE_VARIABLE.into(),
                value: rate.to_string(),
                reason: "a rate from 0 to 1".into(),
            });
        }
        Ok((rate > 0.0).then(|| {
            Arc::new(Self {
                logged: true,
                ..Self::new(rate)
            })
        }))
    }

    /// Whether this call on `path` fails; a fault is counted under `path`.
    pub fn fault(&self, path: &'static str) -> bool {
        let hit = self.rate > 0.0 && fastrand::f64() < self.rate;
        if hit {
            self.count_fault(path);
            if self.logged {
                tracing::warn!(
                    injected_fault = path,
                    "fault injected at the library's seam"
                );
            }
        }
        hit
    }

    /// Counts a fault injected under `path` by the caller's own rule (e.g. a cut stream).
    pub fn count_fault(&self, path: &'static str) {
        bump(&self.injected, path);
    }

    /// Counts a kill the caller made itself (e.g. at a random time, from outside).
    pub fn count_kill(&self, point: &'static str) {
        bump(&self.kills, point);
    }

    /// Runs `invocation`, to be killed at `target` if it reaches that kill point: the future is
    /// dropped there, as a crash would end it, and the kill is counted.
    pub async fn killable<T>(
        &self,
        target: Option<&'static str>,
        invocation: impl Future<Output = T>,
    ) -> Ended<T> {
        let switch = Arc::new(KillSwitch {
            target,
            ..KillSwitch::default()
        });
        tokio::select! {
            ended = KILL.scope(Arc::clone(&switch), invocation) => Ended::Finished(ended),
            () = switch.notify.notified() => {
                let point = *switch.point.lock().unwrap_or_else(PoisonError::into_inner);
                let point = point.unwrap_or("unknown");
                self.count_kill(point);
                Ended::Killed(point)
            }
        }
    }

    /// A kill point: the invocation (run by [`killable`](Self::killable)) dies here if it was
    /// chosen to, and this never returns then. `chance` is the probability of dying at each
    /// pass (1.0 for a point passed once per job; less for one passed per unit of work, so
    /// that large jobs are not singled out).
    pub async fn kill_point(&self, point: &'static str, chance: f64) {
        let Ok(switch) = KILL.try_with(Arc::clone) else {
            return;
        };
        if switch.target != Some(point) || fastrand::f64() >= chance {
            return;
        }
        if !switch.fired.swap(true, Ordering::SeqCst) {
            *switch.point.lock().unwrap_or_else(PoisonError::into_inner) = Some(point);
            switch.notify.notify_one();
        }
        std::future::pending::<()>().await;
    }

    /// Faults injected, by path.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        snapshot(&self.injected)
    }

    /// Kills, by point.
    pub fn kills(&self) -> BTreeMap<String, u64> {
        snapshot(&self.kills)
    }

    /// Messages parked through a [`FaultyQueue`], by failure class.
    pub fn parked(&self) -> BTreeMap<String, u64> {
        self.parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    *map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

fn snapshot(map: &Mutex<BTreeMap<&'static str, u64>>) -> BTreeMap<String, u64> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect()
}

/// The error of an injected fault.
pub fn injected(what: &str) -> BoxError {
    format!("injected fault: {what}").into()
}

/// The guard's store with faults and the kill points [`BEFORE_THE_CLAIM`] and
/// [`BEFORE_COMPLETE`].
#[derive(Debug)]
pub struct FaultyStore<S> {
    /// The store wrapped.
    pub inner: S,
    /// The faults.
    pub faults: Arc<Faults>,
}

impl<S: IdempotencyStore> IdempotencyStore for FaultyStore<S> {
    async fn try_claim(&self, request: &ClaimRequest) -> Result<Decision, GuardError> {
        self.faults.kill_point(BEFORE_THE_CLAIM, 1.0).await;
        if self.faults.fault("guard.try_claim") {
            if fastrand::bool() {
                // Response lost: the claim may be written, the worker does not know.
                let _ = self.inner.try_claim(request).await;
            }
            return Err(GuardError::Unavailable(injected("guard table")));
        }
        self.inner.try_claim(request).await
    }

    async fn complete(
        &self,
        claim: &Claim,
        result: &str,
        expires_at: SystemTime,
    ) -> Result<(), GuardError> {
        self.faults.kill_point(BEFORE_COMPLETE, 1.0).await;
        if self.faults.fault("guard.complete") {
            if fastrand::bool() {
                let _ = self.inner.complete(claim, result, expires_at).await;
            }
            return Err(GuardError::Unavailable(injected("guard table")));
        }
        self.inner.complete(claim, result, expires_at).await
    }

    async fn release(&self, claim: &Claim) -> Result<(), GuardError> {
        if self.faults.fault("guard.release") {
            return Err(GuardError::Unavailable(injected("guard table")));
        }
        self.inner.release(claim).await
    }
}

/// A job queue (the continuation send) with faults.
#[derive(Debug)]
pub struct FaultyJobs<Q> {
    /// The queue wrapped.
    pub inner: Q,
    /// The faults.
    pub faults: Arc<Faults>,
}

impl<J: Sync, Q: JobQueue<J>> JobQueue<J> for FaultyJobs<Q> {
    async fn send_after(
        &self,
        job: &J,
        delay: Duration,
        trace: Option<&crate::trace::TraceContext>,
    ) -> Result<(), BoxError> {
        if self.faults.fault("sqs.send_continuation") {
            return Err(injected("SQS SendMessage (continuation)"));
        }
        self.inner.send_after(job, delay, trace).await
    }
}

/// The batch's queue actions (`ChangeMessageVisibility`, the DLQ send) with faults; counts the
/// messages parked, by class ([`Faults::parked`]).
#[derive(Debug)]
pub struct FaultyQueue<A> {
    /// The actions wrapped.
    pub inner: A,
    /// The faults.
    pub faults: Arc<Faults>,
}

impl<A: QueueActions> QueueActions for FaultyQueue<A> {
    async fn change_visibility(
        &self,
        message: &SqsMessage,
        delay: Duration,
    ) -> Result<(), BoxError> {
        if self.faults.fault("sqs.change_visibility") {
            return Err(injected("SQS ChangeMessageVisibility"));
        }
        self.inner.change_visibility(message, delay).await
    }

    async fn park(&self, message: &SqsMessage, why: ParkReason<'_>) -> Result<(), BoxError> {
        if self.faults.fault("sqs.park") {
            return Err(injected("SQS SendMessage (DLQ)"));
        }
        self.inner.park(message, why).await?;
        *self
            .faults
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(why.code.to_owned())
            .or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{GuardSettings, IdempotencyGuard, IdempotencyKey, InMemoryStore};

    #[tokio::test]
    async fn an_invocation_chosen_to_die_at_a_point_ends_there_and_is_counted() {
        let faults = Faults::new(0.0);
        let reached_after = Arc::new(AtomicBool::new(false));
        let after = Arc::clone(&reached_after);
        let ended = faults
            .killable(Some("middle"), async {
                faults.kill_point("start", 1.0).await;
                faults.kill_point("middle", 1.0).await;
                after.store(true, Ordering::SeqCst);
            })
            .await;
        assert_eq!(ended, Ended::Killed("middle"));
        assert!(!reached_after.load(Ordering::SeqCst));
        assert_eq!(faults.kills().get("middle"), Some(&1));
    }

    #[test]
    fn a_binary_injects_faults_only_at_a_rate_set_above_zero() {
        let read = |value: &str| Faults::from_env(&Env::from_pairs([(FAULT_RATE_VARIABLE, value)]));
        assert!(
            Faults::from_env(&Env::from_pairs::<&str, &str>([]))
                .unwrap()
                .is_none()
        );
        assert!(read("0").unwrap().is_none());
        let faults = read("1").unwrap().expect("a rate of 1 injects");
        assert!(faults.fault("guard.try_claim"));
        assert_eq!(faults.injected().get("guard.try_claim"), Some(&1));
        for bad in ["1.5", "-0.1", "NaN", "often"] {
            assert!(
                matches!(read(bad), Err(ConfigError::Invalid { ref name, .. }) if name == FAULT_RATE_VARIABLE),
                "{bad} is refused"
            );
        }
    }

    #[tokio::test]
    async fn outside_a_killable_invocation_a_kill_point_does_nothing() {
        let faults = Faults::new(0.0);
        faults.kill_point(BEFORE_THE_CLAIM, 1.0).await;
        let ended = faults.killable(None, async { 7 }).await;
        assert_eq!(ended, Ended::Finished(7));
        assert!(faults.kills().is_empty());
    }

    fn guard(store: FaultyStore<InMemoryStore>) -> IdempotencyGuard<FaultyStore<InMemoryStore>> {
        IdempotencyGuard::new(
            store,
            GuardSettings {
                retention: Duration::from_secs(3600),
                lease_margin: Duration::from_secs(10),
                max_lease: Duration::from_secs(900),
            },
        )
    }

    #[tokio::test]
    async fn a_faulty_store_fails_every_call_at_rate_one_and_counts_each() {
        let faults = Arc::new(Faults::new(1.0));
        let guard = guard(FaultyStore {
            inner: InMemoryStore::default(),
            faults: Arc::clone(&faults),
        });
        let key = IdempotencyKey::parse("job-1").unwrap();
        for _ in 0..3 {
            assert!(guard.claim(&key, b"job", None).await.is_err());
        }
        assert_eq!(faults.injected().get("guard.try_claim"), Some(&3));
    }

    #[tokio::test]
    async fn a_faulty_store_at_rate_zero_is_the_store() {
        let faults = Arc::new(Faults::new(0.0));
        let guard = guard(FaultyStore {
            inner: InMemoryStore::default(),
            faults: Arc::clone(&faults),
        });
        let key = IdempotencyKey::parse("job-1").unwrap();
        let Decision::Proceed(claim) = guard.claim(&key, b"job", None).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        guard.complete(&claim, "{}").await.unwrap();
        assert!(matches!(
            guard.claim(&key, b"job", None).await.unwrap(),
            Decision::AlreadyCompleted { .. }
        ));
        assert!(faults.injected().is_empty());
    }
}
