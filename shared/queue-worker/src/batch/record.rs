//! What a record handler returns, and what became of each record.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;

use crate::BoxError;

/// A record the handler is done with: it will be acknowledged (deleted from the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The work was done now.
    Processed,
    /// The work had been done before (the idempotency guard said so): nothing was repeated.
    Duplicate,
}

/// Why a record could not be processed, classified by what should happen to it.
///
/// `reason` travels to logs and, for permanent failures, to the dead-letter queue's message
/// attributes: keep it short, and never put message contents or secrets in it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Trying again later can succeed (throttling, a timeout, a dependency that is down, a job
    /// in progress elsewhere). The record is reported failed and comes back after its visibility
    /// timeout (or the backoff delay).
    #[error("{reason}")]
    Retryable {
        /// What went wrong.
        reason: String,
        /// The earliest a retry can succeed (a lease held elsewhere, an open circuit): the
        /// message stays invisible at least this long, even beyond the backoff delay, so it does
        /// not burn its receives before then.
        retry_after: Option<Duration>,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Trying again cannot succeed (a malformed job, a missing or invalid file). The record is
    /// parked in the dead-letter queue with `code` and `reason`, then acknowledged.
    #[error("{reason}")]
    Permanent {
        /// A short machine-readable class, e.g. `malformed_job`; operators filter redrives by it.
        code: &'static str,
        /// What went wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl RecordError {
    /// A retryable failure.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable {
            reason: reason.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A retryable failure that cannot succeed before `delay` has passed.
    pub fn retryable_after(reason: impl Into<String>, delay: Duration) -> Self {
        Self::Retryable {
            reason: reason.into(),
            retry_after: Some(delay),
            source: None,
        }
    }

    /// A permanent failure of class `code`.
    pub fn permanent(code: &'static str, reason: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            reason: reason.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, error: impl Into<BoxError>) -> Self {
        match &mut self {
            Self::Retryable { source, .. } | Self::Permanent { source, .. } => {
                *source = Some(error.into());
            }
        }
        self
    }
}

/// What a record handler returns.
pub type RecordResult = Result<Ack, RecordError>;

/// What a record handler knows of the invocation it runs in.
///
/// Time has one setting, the batch's deadline margin: no record starts after
/// [`stop_at`](Self::stop_at), and a record that is running stops *starting new work* there,
/// so that what it has done can be recorded (a checkpoint, a continuation, a release) in the
/// margin before the deadline. Running out of this invocation's time is never a reason to fail
/// a job permanently: stop, keep what is durably done, and come back.
///
/// The margin is split in three, on the deadline's side of `stop_at`:
///
/// | from | until | what runs |
/// |---|---|---|
/// | `stop_at` | [`drain_instant`](Self::drain_instant) (3/8 of the margin later) | requests sent before `stop_at` are awaited and counted, none is started |
/// | the drain | [`finish_instant`](Self::finish_instant) (3/4 of the margin after `stop_at`) | the commit, the continuation, completing or releasing the claim |
/// | the finish | [`report_instant`](Self::report_instant) (halfway to the deadline) | the batch processor parks records |
/// | the report | the deadline | the batch response goes back to Lambda |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation {
    /// When Lambda ends the invocation (`Context::deadline()`): bound leases by it.
    pub deadline: SystemTime,
    /// When work stops: the deadline minus the batch's deadline margin.
    pub stop_at: SystemTime,
}

impl Invocation {
    /// An invocation ending at `deadline`, whose work stops `margin` before it.
    pub fn new(deadline: SystemTime, margin: Duration) -> Self {
        Self {
            deadline,
            stop_at: deadline
                .checked_sub(margin)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// Time left for work before [`stop_at`](Self::stop_at); zero once it has passed.
    pub fn work_left(&self) -> Duration {
        self.stop_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    /// [`stop_at`](Self::stop_at) on the async runtime's clock, for `tokio::time::timeout_at`.
    pub fn stop_instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.work_left()
    }

    /// Until when a running record may await the requests it sent before
    /// [`stop_at`](Self::stop_at), on the async runtime's clock: halfway from the stop time to
    /// the [finishing time](Self::finish_instant). A request awaited to its answer is counted
    /// and never sent again; one dropped unanswered is redone by the next chunk, so the effects
    /// of a clean stop happen once.
    pub fn drain_instant(&self) -> tokio::time::Instant {
        let stop = self.stop_instant();
        stop + (self.finish_instant().saturating_duration_since(stop)) / 2
    }

    /// Until when the batch processor waits on a request of its own (parking a record in the
    /// dead-letter queue), on the async runtime's clock: halfway from the
    /// [finishing time](Self::finish_instant) to the deadline, so the response still goes back
    /// before Lambda ends the invocation.
    pub fn report_instant(&self) -> tokio::time::Instant {
        let finish = self.finish_instant();
        let deadline = tokio::time::Instant::now()
            + self
                .deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default();
        finish + deadline.saturating_duration_since(finish) / 2
    }

    /// When the steps that record a record's outcome (a commit, a continuation, completing or
    /// releasing a claim) give up, on the async runtime's clock: a quarter of the margin before
    /// the deadline, which leaves the batch processor time to report and delay the record. An
    /// invocation must never time out as a whole: that would send its whole batch back.
    pub fn finish_instant(&self) -> tokio::time::Instant {
        let margin = self
            .deadline
            .duration_since(self.stop_at)
            .unwrap_or_default();
        let finish_at = self
            .deadline
            .checked_sub(margin / 4)
            .unwrap_or(self.stop_at);
        tokio::time::Instant::now()
            + finish_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
    }
}

/// Handles one SQS record. Implement this for the work a queue's messages carry.
///
/// The handler runs inside the record's span (`process <queue>`, linked to the trace context the
/// message carries: [`crate::trace`]), with `message_id`, `trace_id`, `span_id` and an empty
/// `job_id`; record the job's id
/// into it once parsed (`tracing::Span::current().record("job_id", id)`) so every log line
/// carries both. [`Idempotent`](crate::worker::Idempotent) does that for a [`Worker`](crate::worker::Worker).
pub trait RecordHandler: Send + Sync {
    /// Handles `message`. Parse the body here: a malformed body is this record's failure, not
    /// the batch's.
    fn handle(
        &self,
        message: &SqsMessage,
        invocation: &Invocation,
    ) -> impl Future<Output = RecordResult> + Send;
}

/// What became of one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordStatus {
    /// Processed now: acknowledged.
    Processed,
    /// Processed before: acknowledged.
    Duplicate,
    /// Failed permanently and parked in the dead-letter queue: acknowledged.
    Parked,
    /// Failed retryably: reported failed, comes back later.
    Retried,
    /// The handler panicked: reported failed, comes back later.
    Panicked,
    /// Failed permanently, but parking it failed: reported failed so it is not lost.
    ParkFailed,
    /// Not started because the invocation was close to its deadline: reported failed.
    NotStarted,
    /// FIFO only: not run because an earlier record of its message group failed: reported failed.
    Skipped,
}

impl RecordStatus {
    /// Every status, for exhaustive reports.
    pub const ALL: [Self; 8] = [
        Self::Processed,
        Self::Duplicate,
        Self::Parked,
        Self::Retried,
        Self::Panicked,
        Self::ParkFailed,
        Self::NotStarted,
        Self::Skipped,
    ];

    /// Whether the record is reported in `batchItemFailures` (and so comes back).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Processed | Self::Duplicate | Self::Parked)
    }

    /// A stable snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Duplicate => "duplicate",
            Self::Parked => "parked",
            Self::Retried => "retried",
            Self::Panicked => "panicked",
            Self::ParkFailed => "park_failed",
            Self::NotStarted => "not_started",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SQS message id, guaranteed non-empty: Lambda fails the whole batch when a response names
/// an empty or unknown `itemIdentifier`, so an empty id must never reach the response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// Validates `id`.
    pub fn parse(id: Option<&str>) -> Option<Self> {
        id.filter(|id| !id.trim().is_empty())
            .map(|id| Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_margin_runs_stop_then_drain_then_finish_then_deadline() {
        let start = tokio::time::Instant::now();
        let invocation = Invocation::new(
            SystemTime::now() + Duration::from_secs(10),
            Duration::from_millis(3200),
        );
        let after = |instant: tokio::time::Instant| (instant - start).as_millis();
        // 6.8 s of work; the 3.2 s margin: 1.2 s of drain, 1.2 s to finish, 0.4 s to park and
        // 0.4 s to report.
        let (stop, drain, finish) = (
            after(invocation.stop_instant()),
            after(invocation.drain_instant()),
            after(invocation.finish_instant()),
        );
        assert!((6_790..=6_800).contains(&stop), "{stop}");
        assert!((7_990..=8_000).contains(&drain), "{drain}");
        assert!((9_190..=9_200).contains(&finish), "{finish}");
        let report = after(invocation.report_instant());
        assert!((9_590..=9_600).contains(&report), "{report}");
    }
}
