//! The import worker: one chunk of an import job, its domain steps only.
//!
//! The library's [`Idempotent`](queue_worker::worker::Idempotent) parses the job, claims it
//! under the chunk's key (`{import id}#{chunk}`), releases the claim on failure, sends the
//! continuation and completes the claim. What is left here is the import:
//!
//! 1. the job is checked (schema version, object key): a bad one fails the import. This runs
//!    under the claim, so a copy of a job already done is a duplicate, and a different job
//!    under a used key is a `payload_mismatch`, before anything is checked or marked;
//! 2. a redelivery or a continuation reads the import record first (one `GetItem`): a chunk an
//!    earlier delivery committed is not redone, only its continuation re-sent;
//! 3. rows are read from the checkpoint's offset on and written, a few requests in flight
//!    (item writes are idempotent puts, so a row written twice is the same row), until the
//!    object or the invocation's work time ends;
//! 4. the chunk's end is recorded on the import record with a write conditional on the record's
//!    chunk count being this chunk: **that write is the chunk's commit point**. A second
//!    delivery that gets this far learns from the failed write, which returns the stored
//!    checkpoint;
//! 5. [`settle`] turns what the record says into the outcome: done, a duplicate, or a
//!    continuation from the committed checkpoint (the same job whichever delivery sends it, so
//!    its own claim collapses copies).
//!
//! A chunk whose whole work time passes without a row written (a dependency so slow or throttled
//! that nothing completes) is not a failure of the job: it records an empty chunk (a checkpoint
//! at the same place, counting the stall) and continues after the delay a retry would wait
//! after as many failed receives (the batch's backoff policy), without using up a receive.
//! After [`MAX_STALLS`] in a row, it is retried as a failure instead, so an import that can
//! never progress ends in the dead-letter queue rather than looping.
//!
//! A worker killed before 4 leaves nothing recorded: the chunk comes back and is redone from the
//! same offset. Killed after 4, the redelivered chunk finds it committed (step 2). Every request
//! here is bounded by the invocation's time: the read by its stop time, the commit and marking
//! an import failed by its finishing time; a commit that runs out of time keeps the claim.

use std::num::NonZeroUsize;
use std::time::SystemTime;

use imports::{
    ChunkEnd, ImportId, ImportJob, ImportResults, ImportStatus, JOB_SCHEMA_VERSION, ObjectKey,
    Start, StoreError, Transition,
};
use queue_worker::batch::{BackoffPolicy, Invocation, RecordError};
use queue_worker::protection::Dependency;
use queue_worker::worker::{Done, Run, Worker};
use tokio::time::timeout_at;

use crate::failure::ImportFailure;
use crate::items::ItemWriter;
use crate::source::ObjectSource;
use chunk::{ChunkOutcome, MAX_STALLS};

mod chunk;

/// Item writes one job keeps in flight by default (`ITEM_WRITES_IN_FLIGHT`).
pub const DEFAULT_WRITES_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(2).expect("2 > 0");

/// What an import wrote, over all its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Valid rows written.
    pub written: u64,
    /// Rows rejected by validation.
    pub rejected: u64,
    /// The rejected rows' summary, if any.
    pub summary: Option<String>,
}

/// Imports uploaded files: check, read, validate, write, record, continue.
///
/// - A bad schema version, an unsafe key, a missing, oversize, invalid or replaced file:
///   permanent (the import is marked `FAILED` with the reason and the job is parked).
/// - Timeouts, a table or bucket that is down, an open circuit, before any row was written:
///   retryable (the chunk comes back after its backoff, an open circuit's no sooner than its
///   cool-down, and is redone).
/// - Out of this invocation's time, or a retryable failure after some rows were written (a cut
///   stream, a write that used up its attempts, a circuit that opened): the rows written so far
///   are checkpointed and the next chunk is the continuation, queued at once (a circuit still
///   open fails it fast, and then it waits out the cool-down). Throttling slows the writes down
///   and ends the chunk at its stop time the same way.
/// - Out of time with nothing written (a stall): the same place is checkpointed and the
///   continuation held back as a retry would be, using no receive; the ninth stall in a row is
///   retried instead.
/// - A chunk an earlier delivery committed: a duplicate, nothing written.
pub struct ImportWorker<O, W, R> {
    source: O,
    writer: W,
    imports: R,
    items_table: Dependency,
    upload_prefix: String,
    writes_in_flight: NonZeroUsize,
    stall_backoff: Option<BackoffPolicy>,
}

impl<O, W, R> ImportWorker<O, W, R>
where
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
{
    /// A worker reading objects under `upload_prefix` from `source`, writing rows through
    /// `writer` (protected by `items_table`) and recording imports in `imports`.
    pub fn new(
        source: O,
        writer: W,
        imports: R,
        items_table: Dependency,
        upload_prefix: impl Into<String>,
    ) -> Self {
        Self {
            source,
            writer,
            imports,
            items_table,
            upload_prefix: upload_prefix.into(),
            writes_in_flight: DEFAULT_WRITES_IN_FLIGHT,
            stall_backoff: None,
        }
    }

    /// Holds a stalled chunk's continuation back by `policy` after as many stalls in a row as
    /// it counts (`Parts` passes the batch's retry backoff); without one, it is sent at once.
    pub fn with_stall_backoff(mut self, policy: Option<BackoffPolicy>) -> Self {
        self.stall_backoff = policy;
        self
    }

    /// Keeps up to `writes` item writes of one job in flight at once. The most concurrent
    /// requests the workers can make on the items table is the event source mapping's maximum
    /// concurrency x the batch concurrency x this.
    pub fn with_writes_in_flight(mut self, writes: NonZeroUsize) -> Self {
        self.writes_in_flight = writes;
        self
    }

    /// The protected items table (for inspecting its circuit).
    pub fn items_table(&self) -> &Dependency {
        &self.items_table
    }

    /// Checks what the queue is not trusted with: the body's schema version and the object
    /// key. A bad job fails its import.
    async fn admit(
        &self,
        job: &ImportJob,
        invocation: &Invocation,
    ) -> Result<ObjectKey, RecordError> {
        if job.schema_version != JOB_SCHEMA_VERSION {
            let reason = format!(
                "job schema version {} is not {JOB_SCHEMA_VERSION}",
                job.schema_version
            );
            self.fail(job.import_id, &reason, invocation).await?;
            return Err(ImportFailure::UnsupportedSchema.error(reason));
        }
        match ObjectKey::parse(&job.object_key, &self.upload_prefix) {
            Ok(key) => Ok(key),
            Err(e) => {
                let reason = format!("objectKey {e}");
                self.fail(job.import_id, &reason, invocation).await?;
                Err(ImportFailure::UnsafeObjectKey.error(reason))
            }
        }
    }

    /// Records a permanent failure on the import. If that fails, the job is retried instead of
    /// parked, so the failure is not lost.
    async fn fail(
        &self,
        import_id: ImportId,
        reason: &str,
        invocation: &Invocation,
    ) -> Result<(), RecordError> {
        let marked = self
            .imports
            .mark_failed(import_id, reason, SystemTime::now());
        match timeout_at(invocation.finish_instant(), marked).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                Err(RecordError::retryable("could not record the import as failed").with_source(e))
            }
            Err(_) => Err(RecordError::retryable(
                "the invocation ended before the import was recorded as failed",
            )),
        }
    }
}

impl<O, W, R> Worker for ImportWorker<O, W, R>
where
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
{
    type Job = ImportJob;
    const CONTINUES: bool = true;

    async fn run(&self, job: &ImportJob, run: &Run<'_>) -> Result<Done<ImportJob>, RecordError> {
        let key = self.admit(job, run.invocation).await?;
        if run.took_over {
            tracing::info!(
                "took over an expired claim: an earlier delivery may have done this chunk"
            );
        }
        // A continuation (which may be a second copy, or a delivery after its claim's record
        // was forgotten) may find its chunk committed by an earlier delivery that died before
        // completing its claim: one read tells, so the chunk's writes are not redone (a redo
        // could also overwrite a later chunk's newer value of a repeated SKU). Chunk 0 learns
        // the same from the write that starts it (`begin`), whatever the receive count says.
        if job.chunk() > 0 {
            let read = self.imports.progress(job.import_id);
            let progress = timeout_at(run.invocation.stop_instant(), read)
                .await
                .map_err(|_| {
                    RecordError::retryable(
                        "the invocation ended before the import's progress was read",
                    )
                })?
                .map_err(|e| {
                    RecordError::retryable("could not read the import's progress").with_source(e)
                })?;
            let Some(progress) = progress else {
                return self.settle(job, None, Ok(Transition::UnknownImport));
            };
            // Before the first effect, as chunk 0's start does: the job must be this import's,
            // and start where its record says the next chunk starts.
            if progress.object_key != key || progress.format != job.format {
                return Err(not_the_imports_job(job));
            }
            match &progress.state {
                Transition::Superseded {
                    chunks, checkpoint, ..
                } if *chunks == job.chunk() => {
                    if checkpoint.as_deref() != job.resume.as_ref() {
                        return Err(not_the_imports_job(job));
                    }
                }
                _ => return self.settle(job, None, Ok(progress.state)),
            }
        }
        let outcome = match self.run_chunk(job, &key, run.invocation).await {
            Ok(outcome) => outcome,
            Err(error) => {
                if let RecordError::Permanent { reason, .. } = &error {
                    self.fail(job.import_id, reason, run.invocation).await?;
                }
                return Err(error);
            }
        };
        let end = match &outcome {
            ChunkOutcome::Done(counts) => ChunkEnd::Completed {
                rows_written: counts.written,
                rows_rejected: counts.rejected,
                summary: counts.summary.as_deref(),
            },
            ChunkOutcome::Stopped(next) if next.stalls > MAX_STALLS => {
                return Err(RecordError::retryable(
                    "the import made no progress in too many invocations in a row",
                ));
            }
            ChunkOutcome::Stopped(next) => ChunkEnd::Continued { next },
            ChunkOutcome::NoProgress => {
                return Err(RecordError::retryable(
                    "the invocation ran out of time before the import could make progress",
                ));
            }
            ChunkOutcome::NotStarted(Start::Stored(stored)) => {
                return self.settle(job, None, Ok(stored.clone()));
            }
            // A job whose object or format is not its import's: a forged or stale job. The
            // import is not touched.
            ChunkOutcome::NotStarted(_) => return Err(not_the_imports_job(job)),
        };
        let recorded =
            self.imports
                .record_chunk(job.import_id, job.chunk(), end, SystemTime::now());
        let Ok(transition) = timeout_at(run.invocation.finish_instant(), recorded).await else {
            return Err(RecordError::retryable(
                "the invocation ended before the chunk's progress was recorded",
            ));
        };
        self.settle(job, Some(end), transition)
    }
}

impl<O, W, R> ImportWorker<O, W, R> {
    /// The outcome of a chunk from what the import record says: after this chunk's commit
    /// (`end`), or, without `end`, before the chunk ran. A checkpoint nobody has queued for
    /// certain becomes the continuation.
    pub(crate) fn settle(
        &self,
        job: &ImportJob,
        end: Option<ChunkEnd<'_>>,
        transition: Result<Transition, StoreError>,
    ) -> Result<Done<ImportJob>, RecordError> {
        let chunk = job.chunk();
        match transition {
            Ok(Transition::Applied) => match end {
                Some(ChunkEnd::Completed {
                    rows_written,
                    rows_rejected,
                    ..
                }) => {
                    tracing::info!(rows_written, rows_rejected, chunk, "import completed");
                    Ok(Done::processed())
                }
                Some(ChunkEnd::Continued { next }) => {
                    if next.stalls > 0 {
                        tracing::warn!(
                            stalls = next.stalls,
                            chunk,
                            "import made no progress in its work time, continuing later"
                        );
                    } else {
                        tracing::info!(
                            rows_written = next.rows_written,
                            rows_rejected = next.rows_rejected,
                            chunk,
                            "import checkpointed, continuing in the next chunk"
                        );
                    }
                    Ok(self.continuation(Done::processed(), job, next.clone()))
                }
                // Only a commit applies a change; a read never does.
                None => Ok(Done::duplicate()),
            },
            // Another delivery completed this import first (its idempotency record was lost or
            // could not be completed): this one only redid idempotent writes.
            Ok(Transition::AlreadyCompleted) => Ok(Done::duplicate()),
            // An earlier delivery of this chunk committed it and may have died before queueing the
            // next chunk: queue it from what that delivery recorded.
            Ok(Transition::Superseded {
                status: ImportStatus::Processing,
                chunks,
                checkpoint: Some(checkpoint),
            }) if chunks == chunk + 1 => Ok(self.continuation(Done::duplicate(), job, *checkpoint)),
            Ok(Transition::Superseded { status, chunks, .. })
                if chunks > chunk || status == ImportStatus::Failed =>
            {
                Ok(Done::duplicate())
            }
            Ok(Transition::Superseded { chunks, .. }) => {
                Err(ImportFailure::UnexpectedChunk.error(format!(
                    "chunk {chunk} of import {} arrived, but its record has {chunks} chunks done",
                    job.import_id
                )))
            }
            Ok(Transition::UnknownImport) => Err(ImportFailure::UnknownImport
                .error(format!("no import record has id {}", job.import_id))),
            Err(e) => {
                Err(RecordError::retryable("could not record the import's progress").with_source(e))
            }
        }
    }
}

/// A job that names another object, format or starting point than its import record: forged,
/// or stale. Parked; the import is not touched.
fn not_the_imports_job(job: &ImportJob) -> RecordError {
    ImportFailure::JobMismatch.error(format!(
        "chunk {} names another object, format or starting point than import {}",
        job.chunk(),
        job.import_id
    ))
}

#[cfg(test)]
mod tests;
