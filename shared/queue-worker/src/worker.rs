//! A worker is one typed function; [`Idempotent`] turns it into a [`RecordHandler`].
//!
//! What every queue worker must get right is here, once: the body is parsed into the worker's
//! [`Job`] type (a malformed body is a permanent failure, [`JobFailure::MalformedJob`], parked with its
//! reason), the job's id goes into the record's span as `job_id`, and the job is claimed with
//! the idempotency guard under its own key. Every [`Decision`] then maps to one outcome:
//!
//! | decision | outcome |
//! |---|---|
//! | `Proceed` | the worker runs ([`Run::took_over`] says whether an earlier delivery may have done some of the work); `Ok` completes the claim (after sending the continuation, if any), `Err` releases it |
//! | `AlreadyCompleted` | acknowledged as a duplicate; the worker does not run |
//! | `InProgress` | retried no earlier than the holder's lease ends |
//! | `PayloadMismatch` | parked as [`JobFailure::PayloadMismatch`] |
//!
//! A continuation ([`Done::then`], or [`Done::then_after`] to hold it back a while) is sent
//! before the claim is completed, so a worker that dies
//! in between leaves the claim to expire and the job to come back: its worker must be able to
//! tell that its work is already done (see the example's chunk commit). The finishing steps
//! (continuation, completion, release) give up at [`Invocation::finish_instant`], so an
//! invocation never times out as a whole; a worker that fails after that instant (it ran out of
//! time recording its work) keeps its claim until the lease ends, since its work may be
//! recorded. A claim is never released once the worker returned `Ok`: if the continuation cannot
//! be sent, the claim is kept and the job retried when the lease ends, by a delivery that takes
//! the claim over and finds the work recorded.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use tokio::time::timeout_at;

use crate::batch::{Ack, Invocation, RecordError, RecordHandler, RecordResult, receive_count};
use crate::idempotency::{Claim, Decision, GuardError, IdempotencyGuard, IdempotencyStore};
use crate::job::{Job, JobQueue};
use crate::telemetry::error_chain;
use crate::trace::TraceContext;

/// A class of permanent failure the library itself reports; a worker adds its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFailure {
    /// The message's body is not the worker's job (no body, bad JSON, an unknown field).
    MalformedJob,
    /// The job's idempotency key was already used for a different job.
    PayloadMismatch,
    /// The job's idempotency record cannot be read.
    IdempotencyRecordMalformed,
}

impl JobFailure {
    /// Every class, for tools and docs that list them.
    pub const ALL: [Self; 3] = [
        Self::MalformedJob,
        Self::PayloadMismatch,
        Self::IdempotencyRecordMalformed,
    ];

    /// The stable snake_case code, the parked message's `dlq.error_class`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJob => "malformed_job",
            Self::PayloadMismatch => "payload_mismatch",
            Self::IdempotencyRecordMalformed => "idempotency_record_malformed",
        }
    }

    /// A permanent failure of this class.
    pub fn error(self, reason: impl Into<String>) -> RecordError {
        RecordError::permanent(self.as_str(), reason)
    }
}

/// Does one job. `[To customize]`: implement it with your domain's steps only.
///
/// `run` is called once this delivery owns the job's claim. Its side effects may still happen
/// twice (a worker can die after them and before the claim is completed): make each one
/// idempotent (a put, a conditional write) or detectable (a commit point the next run reads).
pub trait Worker: Send + Sync {
    /// The job this worker handles.
    type Job: Job;

    /// Whether this worker ever continues a job ([`Done::then`]). A worker that does needs a job
    /// queue (`JOB_QUEUE_URL`), checked at init by [`crate::lambda::run_worker`]; one that does
    /// not needs none.
    const CONTINUES: bool = false;

    /// Does `job` within `run`'s invocation. A permanent error is parked with its class; a
    /// retryable one comes back later. Stop starting new work at
    /// [`Invocation::stop_instant`]: running out of time is never a permanent failure.
    fn run(
        &self,
        job: &Self::Job,
        run: &Run<'_>,
    ) -> impl Future<Output = Result<Done<Self::Job>, RecordError>> + Send;
}

/// What a worker knows of the delivery it runs in.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The invocation's deadline and stop time.
    pub invocation: &'a Invocation,
    /// How many times SQS has delivered this message (1 the first time). Approximate: never
    /// gate correctness on it, use [`took_over`](Self::took_over).
    pub receive_count: u32,
    /// Whether this delivery's claim took over an expired one ([`Claim::took_over`]): an
    /// earlier delivery may have done some or all of the work and died before completing its
    /// claim. Read the job's progress before redoing any effect.
    pub took_over: bool,
}

/// How a job ended: acknowledged, maybe with a continuation to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Done<J> {
    ack: Ack,
    next: Option<J>,
    delay: Duration,
}

impl<J> Done<J> {
    /// The work was done now.
    pub fn processed() -> Self {
        Self {
            ack: Ack::Processed,
            next: None,
            delay: Duration::ZERO,
        }
    }

    /// The work had been done before (the worker found its own commit point).
    pub fn duplicate() -> Self {
        Self {
            ack: Ack::Duplicate,
            next: None,
            delay: Duration::ZERO,
        }
    }

    /// Also queue `next`, the job that continues this one, before completing the claim.
    pub fn then(self, next: J) -> Self {
        self.then_after(next, Duration::ZERO)
    }

    /// Also queue `next`, to be delivered no sooner than `delay` from now (SQS holds a message
    /// back at most [`MAX_DELAY`](crate::job::MAX_DELAY), and a FIFO queue not at all): a
    /// continuation that waits out a struggling dependency without using up a receive.
    pub fn then_after(self, next: J, delay: Duration) -> Self {
        Self {
            next: Some(next),
            delay,
            ..self
        }
    }

    /// How the message is acknowledged.
    pub fn ack(&self) -> Ack {
        self.ack
    }

    /// The continuation, if any.
    pub fn next(&self) -> Option<&J> {
        self.next.as_ref()
    }

    /// How long the continuation is held back (zero without one).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// A [`Worker`] behind the idempotency guard, as a [`RecordHandler`] for the batch processor.
pub struct Idempotent<W, S, Q> {
    worker: W,
    guard: IdempotencyGuard<S>,
    continuations: Q,
}

impl<W, S, Q> Idempotent<W, S, Q>
where
    W: Worker,
    S: IdempotencyStore,
    Q: JobQueue<W::Job>,
{
    /// `worker`, claiming with `guard`, sending continuations to `continuations` (the queue the
    /// jobs come from).
    pub fn new(worker: W, guard: IdempotencyGuard<S>, continuations: Q) -> Self {
        Self {
            worker,
            guard,
            continuations,
        }
    }

    /// The worker.
    pub fn worker(&self) -> &W {
        &self.worker
    }

    async fn proceed(
        &self,
        message: &SqsMessage,
        job: &W::Job,
        claim: Claim,
        invocation: &Invocation,
    ) -> RecordResult {
        let run = Run {
            invocation,
            receive_count: receive_count(message),
            took_over: claim.took_over(),
        };
        let finish_by = invocation.finish_instant();
        let done = match self.worker.run(job, &run).await {
            Ok(done) => done,
            Err(error) => {
                self.release(&claim, finish_by).await;
                return Err(error);
            }
        };
        let settling = tokio::time::Instant::now();
        let mut result = serde_json::json!({ "ack": ack_name(done.ack) });
        if let Some(next) = &done.next {
            // The continuation links to this record's span, which links to the job's sender.
            let trace = TraceContext::current();
            // The work is recorded: the redelivery finds it done and sends the continuation.
            let send = self
                .continuations
                .send_after(next, done.delay, trace.as_ref());
            match timeout_at(finish_by, send).await {
                Ok(Ok(())) => crate::metrics::note(|events| {
                    events.continuations += 1;
                    events.stalls += u64::from(!done.delay.is_zero());
                }),
                // The work succeeded and is recorded: the claim is kept, never released, so no
                // other delivery redoes it before the lease ends; the one after takes the claim
                // over, finds the work recorded and sends the continuation.
                Ok(Err(e)) => {
                    return Err(RecordError::retryable_after(
                        "could not queue the job's continuation",
                        until(claim.lease_expires_at()),
                    )
                    .with_source(e));
                }
                Err(_) => return Err(out_of_time(&claim)),
            }
            result["next"] = next.idempotency_key().as_str().into();
        }
        // The work is done and recorded: a failure here only means a later duplicate delivery
        // runs the worker again, which finds its work done; the message is acknowledged.
        match timeout_at(finish_by, self.guard.complete(&claim, &result.to_string())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "work done, but its claim was not completed");
            }
            Err(_) => tracing::warn!("work done, but no time was left to complete its claim"),
        }
        // What settling costs (continuation and completion), against the margin it may use.
        tracing::debug!(
            settle_ms = u64::try_from(settling.elapsed().as_millis()).unwrap_or(u64::MAX),
            "job settled"
        );
        Ok(done.ack)
    }

    /// Releases `claim` so the next delivery can proceed at once; failing that, the claim
    /// expires with its lease. Past `finish_by` the claim is kept: a worker that ran out of time
    /// while recording its work may have recorded it, and the claim keeps a second copy of the
    /// job from redoing it before the lease ends.
    async fn release(&self, claim: &Claim, finish_by: tokio::time::Instant) {
        if tokio::time::Instant::now() >= finish_by {
            tracing::debug!("out of time: the claim is kept until its lease ends");
            return;
        }
        match timeout_at(finish_by, self.guard.release(claim)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %error_chain(&e),
                "could not release the claim; it expires with its lease"
            ),
            Err(_) => {
                tracing::warn!("no time left to release the claim; it expires with its lease")
            }
        }
    }
}

impl<W, S, Q> RecordHandler for Idempotent<W, S, Q>
where
    W: Worker,
    S: IdempotencyStore,
    Q: JobQueue<W::Job>,
{
    async fn handle(&self, message: &SqsMessage, invocation: &Invocation) -> RecordResult {
        let body = message
            .body
            .as_deref()
            .ok_or_else(|| JobFailure::MalformedJob.error("the message has no body"))?;
        let job: W::Job = serde_json::from_str(body).map_err(|e| {
            JobFailure::MalformedJob.error(format!("the body is not a valid job: {e}"))
        })?;
        tracing::Span::current().record("job_id", job.id());

        let decision = self
            .guard
            .claim(
                &job.idempotency_key(),
                job.to_body().as_bytes(),
                Some(invocation.deadline),
            )
            .await
            .map_err(guard_error)?;
        match decision {
            Decision::Proceed(claim) => self.proceed(message, &job, claim, invocation).await,
            Decision::AlreadyCompleted { .. } => Ok(Ack::Duplicate),
            // The holder either finishes (then the retry is a duplicate) or dies (then its
            // lease runs out): either way nothing can happen before the lease ends, so the
            // message stays invisible at least that long instead of burning its receives.
            Decision::InProgress { lease_expires_at } => {
                crate::metrics::note(|events| events.in_progress += 1);
                Err(RecordError::retryable_after(
                    "the job is being processed by another worker",
                    until(lease_expires_at),
                ))
            }
            Decision::PayloadMismatch => Err(JobFailure::PayloadMismatch
                .error("a different job was already processed under this idempotency key")),
        }
    }
}

fn ack_name(ack: Ack) -> &'static str {
    match ack {
        Ack::Processed => "processed",
        Ack::Duplicate => "duplicate",
    }
}

/// Finishing steps that ran out of time: whatever they did is safe (the worker's commit point
/// tells the redelivery, the continuation is collapsed by its own claim). The claim is kept, so
/// the job comes back when its lease ends.
fn out_of_time(claim: &Claim) -> RecordError {
    RecordError::retryable_after(
        "the invocation ended before the job's outcome was settled",
        until(claim.lease_expires_at()),
    )
}

/// The time from now until `at` (zero once past).
fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

fn guard_error(error: GuardError) -> RecordError {
    if error.is_retryable() {
        RecordError::retryable("the idempotency store is unavailable").with_source(error)
    } else {
        JobFailure::IdempotencyRecordMalformed
            .error(error.to_string())
            .with_source(error)
    }
}

#[cfg(test)]
mod tests;
