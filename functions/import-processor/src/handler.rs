//! The record handler: one chunk of an import job, end to end.
//!
//! An import runs in chunks. Chunk 0 is the producer's job; when a chunk runs out of its
//! invocation's time it checkpoints the import and queues the next chunk as a new job, which
//! carries the checkpoint. Continuing is a new message, not a failed receive, so an import of
//! any size never meets `maxReceiveCount`.
//!
//! Each chunk counts once, however often it is delivered and wherever a worker dies:
//! 1. the chunk is claimed with the idempotency guard under its own key (`{import id}#{chunk}`),
//!    and its fenced claim lasts the invocation;
//! 2. rows are written from the checkpoint's offset on (item writes are idempotent puts, so a
//!    row written twice is the same row);
//! 3. the chunk's end is recorded on the import record with a write conditional on the
//!    record's chunk count being this chunk: that write is the chunk's commit point. A
//!    redelivery or a continuation reads the record before writing (one `GetItem`) and skips a
//!    committed chunk; any other second delivery learns it from the failed write, which
//!    returns the stored checkpoint;
//! 4. the next chunk's job is sent from the committed checkpoint (the same job whichever
//!    delivery sends it, so its own guard collapses copies);
//! 5. the claim is completed, so a later copy of the chunk is a duplicate at the claim.
//!
//! A worker killed anywhere before 3 leaves nothing recorded: its chunk comes back and is
//! redone from the same offset. Killed between 3 and 5, the redelivered chunk finds the chunk
//! committed and sends the next chunk's job again. Steps 3 to 5 give up a quarter of the
//! deadline margin before the deadline, so an invocation never times out as a whole.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::SystemTime;

use aws_lambda_events::event::sqs::SqsMessage;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use imports::{
    Checkpoint, ChunkEnd, ImportId, ImportJob, ImportResults, ImportStatus, JOB_SCHEMA_VERSION,
    JobQueue, ObjectKey, Transition, job_attributes,
};
use queue_worker::batch::{
    Ack, Invocation, RecordError, RecordHandler, RecordResult, receive_count,
};
use queue_worker::idempotency::{Claim, Decision, GuardError, IdempotencyGuard, IdempotencyStore};
use queue_worker::protection::{Dependency, DependencyError};
use queue_worker::telemetry::error_chain;
use serde_json::json;
use tokio::time::timeout_at;

use crate::items::{BATCH_SIZE, ItemWriter, WriteError};
use crate::rows::{FileError, Position, Rejections, Row, RowReader};
use crate::source::{ObjectSource, ReadFrom, SourceError};

/// Item writes one job keeps in flight by default (`ITEM_WRITES_IN_FLIGHT`).
pub const DEFAULT_WRITES_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(2).expect("2 > 0");

/// What an import wrote, over all its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Valid rows written.
    pub written: u64,
    /// Rows rejected by validation.
    pub rejected: u64,
    /// The rejected rows' summary, if any.
    pub summary: Option<String>,
}

/// Handles import jobs: parse, claim, read, validate, write, record, continue.
///
/// - A malformed job, an unsafe key, a missing, oversize, invalid or replaced file: permanent
///   (the import is marked `FAILED` with the reason and the job is parked in the DLQ). The
///   claim is released, so a redrive after the file is fixed imports it.
/// - Throttling, timeouts, a table or bucket that is down, an open circuit: retryable (the
///   claim is released; the chunk comes back after its backoff and is redone).
/// - Out of this invocation's time: the rows written so far are checkpointed and the next chunk
///   is queued; a chunk that could not write anything is retried.
/// - A chunk completed before: acknowledged as a duplicate, nothing written.
/// - A chunk in progress elsewhere: retried no earlier than the holder's lease ends.
pub struct ImportHandler<G, O, W, R, Q> {
    guard: IdempotencyGuard<G>,
    source: O,
    writer: W,
    results: R,
    jobs: Q,
    items_table: Dependency,
    upload_prefix: String,
    writes_in_flight: NonZeroUsize,
}

/// How one chunk's work ended.
enum ChunkOutcome {
    /// The object is done.
    Done(Counts),
    /// Time ran out after some progress: continue from here.
    Stopped(Checkpoint),
    /// Time ran out before anything could be written or counted.
    NoProgress,
}

/// Rows and rejections up to `end`, written as one request.
struct Unit {
    rows: Vec<Row>,
    rejections: Rejections,
    end: Position,
}

/// What a chunk has durably done: everything before `position`.
struct Done {
    position: Position,
    written: u64,
    rejections: Rejections,
}

impl<G, O, W, R, Q> ImportHandler<G, O, W, R, Q>
where
    G: IdempotencyStore,
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
    Q: JobQueue,
{
    /// A handler reading objects under `upload_prefix` from `source`, writing rows through
    /// `writer` (protected by `items_table`), recording imports in `results` and queueing
    /// continuations on `jobs`.
    pub fn new(
        guard: IdempotencyGuard<G>,
        source: O,
        writer: W,
        results: R,
        jobs: Q,
        items_table: Dependency,
        upload_prefix: impl Into<String>,
    ) -> Self {
        Self {
            guard,
            source,
            writer,
            results,
            jobs,
            items_table,
            upload_prefix: upload_prefix.into(),
            writes_in_flight: DEFAULT_WRITES_IN_FLIGHT,
        }
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

    async fn claimed(
        &self,
        message: &SqsMessage,
        job: &ImportJob,
        key: &ObjectKey,
        claim: Claim,
        invocation: &Invocation,
    ) -> RecordResult {
        // A redelivery, or a continuation (which may be a second copy), may find its chunk
        // committed by an earlier delivery that died before completing its claim: one read
        // tells, so the chunk's writes are not redone (a redo could also overwrite a later
        // chunk's newer value of a repeated SKU).
        if job.chunk() > 0 || receive_count(message) > 1 {
            let stored = match self.results.progress(job.import_id).await {
                Ok(Some(stored)) => stored,
                Ok(None) => Transition::UnknownImport,
                Err(e) => {
                    self.release(&claim).await;
                    return Err(
                        RecordError::retryable("could not read the import's progress")
                            .with_source(e),
                    );
                }
            };
            let committed = match &stored {
                Transition::Superseded { chunks, .. } => *chunks > job.chunk(),
                _ => true,
            };
            if committed {
                return self
                    .settle(message, job, claim, None, Ok(stored), invocation)
                    .await;
            }
        }
        match self.run_chunk(job, key, invocation).await {
            Ok(ChunkOutcome::Done(counts)) => {
                let end = ChunkEnd::Completed {
                    rows_written: counts.written,
                    rows_rejected: counts.rejected,
                    summary: counts.summary.as_deref(),
                };
                self.commit(message, job, claim, end, invocation).await
            }
            Ok(ChunkOutcome::Stopped(next)) => {
                let end = ChunkEnd::Continued { next: &next };
                self.commit(message, job, claim, end, invocation).await
            }
            Ok(ChunkOutcome::NoProgress) => {
                self.release(&claim).await;
                Err(RecordError::retryable(
                    "the invocation ran out of time before the import could make progress",
                ))
            }
            Err(error) => {
                self.release(&claim).await;
                if let RecordError::Permanent { reason, .. } = &error {
                    self.fail(job.import_id, reason).await?;
                }
                Err(error)
            }
        }
    }

    /// Reads the object from the job's checkpoint on and writes its valid rows, up to
    /// [`writes_in_flight`](Self::with_writes_in_flight) requests of [`BATCH_SIZE`] at once,
    /// until the object ends or the invocation's work time does.
    async fn run_chunk(
        &self,
        job: &ImportJob,
        key: &ObjectKey,
        invocation: &Invocation,
    ) -> Result<ChunkOutcome, RecordError> {
        let stop = invocation.stop_instant();
        let resume = job.resume.as_ref();
        let from = resume.map(|r| ReadFrom {
            offset: r.offset,
            etag: &r.etag,
        });
        let Ok(opened) = timeout_at(stop, self.source.open(key, from)).await else {
            return Ok(ChunkOutcome::NoProgress);
        };
        let opened = opened.map_err(source_error)?;
        let mut rows = match resume {
            None => match timeout_at(stop, RowReader::open(opened.body, job.format)).await {
                Ok(reader) => reader.map_err(file_error)?,
                Err(_) => return Ok(ChunkOutcome::NoProgress),
            },
            Some(r) => RowReader::resume(
                opened.body,
                job.format,
                r.header.as_deref(),
                Position {
                    offset: r.offset,
                    line: r.line,
                },
            )
            .map_err(file_error)?,
        };
        let start = rows.position();
        let mut done = Done {
            position: start,
            written: resume.map_or(0, |r| r.rows_written),
            rejections: resume.map_or_else(Rejections::default, |r| {
                Rejections::carried(r.rows_rejected, &r.rejected_examples)
            }),
        };

        let mut in_flight = FuturesOrdered::new();
        let mut skus_in_flight: HashMap<String, usize> = HashMap::new();
        let mut pending = Unit::starting();
        let mut finished = false;
        'read: loop {
            let before = rows.position();
            let next = match timeout_at(stop, rows.next()).await {
                Ok(next) => next.map_err(file_error)?,
                Err(_) => break 'read,
            };
            let row = match next {
                None => {
                    pending.end = rows.position();
                    finished = true;
                    None
                }
                Some(Err(rejection)) => {
                    pending.rejections.add(rejection);
                    continue;
                }
                Some(Ok(row)) => Some(row),
            };
            // One request may not name a key twice, and two requests in flight must not
            // either: a repeated SKU goes in a later request, after the earlier one is done, so
            // the later row wins, as it would row by row.
            let full = pending.rows.len() == BATCH_SIZE
                || row
                    .as_ref()
                    .is_some_and(|row| pending.rows.iter().any(|p| p.sku == row.sku));
            if finished || full {
                if !finished {
                    pending.end = before;
                }
                let unit = std::mem::replace(&mut pending, Unit::starting());
                while in_flight.len() >= self.writes_in_flight.get()
                    || unit
                        .rows
                        .iter()
                        .any(|r| skus_in_flight.contains_key(&r.sku))
                {
                    match timeout_at(stop, in_flight.next()).await {
                        Ok(Some(written)) => done.commit(written?, &mut skus_in_flight),
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                for row in &unit.rows {
                    *skus_in_flight.entry(row.sku.clone()).or_default() += 1;
                }
                in_flight.push_back(self.write_unit(job.import_id, unit));
            }
            match row {
                Some(row) => pending.rows.push(row),
                None => break 'read,
            }
        }
        while finished {
            match timeout_at(stop, in_flight.next()).await {
                Ok(Some(written)) => done.commit(written?, &mut skus_in_flight),
                Ok(None) => break,
                Err(_) => finished = false,
            }
        }
        // Writes still in flight are dropped: what they wrote is not counted, and the next
        // chunk writes those rows again.
        drop(in_flight);

        if finished {
            let rejected = done.rejections.count();
            if done.written == 0 && rejected > 0 {
                let summary = done.rejections.summary().unwrap_or_default();
                return Err(RecordError::permanent(
                    "invalid_file",
                    format!("no valid rows: {summary}"),
                ));
            }
            return Ok(ChunkOutcome::Done(Counts {
                written: done.written,
                rejected,
                summary: done.rejections.summary(),
            }));
        }
        if done.position == start {
            return Ok(ChunkOutcome::NoProgress);
        }
        Ok(ChunkOutcome::Stopped(Checkpoint {
            chunk: job.chunk() + 1,
            offset: done.position.offset,
            line: done.position.line,
            etag: resume.map_or(opened.etag, |r| r.etag.clone()),
            header: rows.header().map(<[String]>::to_vec),
            rows_written: done.written,
            rows_rejected: done.rejections.count(),
            rejected_examples: done.rejections.examples().to_vec(),
        }))
    }

    /// Writes a unit's rows (if any); gives the unit back to be counted.
    async fn write_unit(&self, import_id: ImportId, unit: Unit) -> Result<Unit, RecordError> {
        if !unit.rows.is_empty() {
            self.write(import_id, &unit.rows).await?;
        }
        Ok(unit)
    }

    async fn write(&self, import_id: ImportId, batch: &[Row]) -> Result<(), RecordError> {
        self.items_table
            .call(|| self.writer.write(import_id, batch))
            .await
            .map_err(|e| match &e {
                DependencyError::Failed {
                    source: WriteError::Rejected(_),
                    ..
                } => RecordError::permanent("rows_rejected_by_table", e.to_string()).with_source(e),
                DependencyError::CircuitOpen { retry_after, .. } => {
                    RecordError::retryable_after(e.to_string(), *retry_after)
                }
                _ => RecordError::retryable(e.to_string()).with_source(e),
            })
    }

    /// Records how the chunk ended (the commit point), queues the next chunk if there is one,
    /// and completes the claim.
    async fn commit(
        &self,
        message: &SqsMessage,
        job: &ImportJob,
        claim: Claim,
        end: ChunkEnd<'_>,
        invocation: &Invocation,
    ) -> RecordResult {
        let started = std::time::Instant::now();
        let finish_by = finish_by(invocation);
        let recorded =
            self.results
                .record_chunk(job.import_id, job.chunk(), end, SystemTime::now());
        let Ok(transition) = timeout_at(finish_by, recorded).await else {
            return Err(out_of_time());
        };
        let settled = self
            .settle(message, job, claim, Some(end), transition, invocation)
            .await;
        // What stopping costs: the part of the deadline margin this chunk used.
        tracing::debug!(
            finish_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "chunk settled"
        );
        settled
    }

    /// Acts on what the import record says after this chunk's commit (`end`), or, without
    /// `end`, on what it said before the chunk ran: queue the next chunk if the record holds a
    /// checkpoint nobody has queued for certain, then complete the claim.
    async fn settle(
        &self,
        message: &SqsMessage,
        job: &ImportJob,
        claim: Claim,
        end: Option<ChunkEnd<'_>>,
        transition: Result<Transition, imports::StoreError>,
        invocation: &Invocation,
    ) -> RecordResult {
        let chunk = job.chunk();
        let (ack, next) = match transition {
            Ok(Transition::Applied) => match end {
                Some(ChunkEnd::Completed {
                    rows_written,
                    rows_rejected,
                    ..
                }) => {
                    tracing::info!(rows_written, rows_rejected, chunk, "import completed");
                    (Ack::Processed, None)
                }
                Some(ChunkEnd::Continued { next }) => {
                    tracing::info!(
                        rows_written = next.rows_written,
                        rows_rejected = next.rows_rejected,
                        chunk,
                        "out of time: import checkpointed, continuing in the next chunk"
                    );
                    (Ack::Processed, Some(next.clone()))
                }
                // Only a commit applies a change; a read never does.
                None => (Ack::Duplicate, None),
            },
            // Another delivery completed this import first (its idempotency record was lost or
            // could not be completed): this one only redid idempotent writes.
            Ok(Transition::AlreadyCompleted) => (Ack::Duplicate, None),
            // An earlier delivery of this chunk committed it and may have died before queueing
            // the next chunk: queue it from what that delivery recorded.
            Ok(Transition::Superseded {
                status: ImportStatus::Processing,
                chunks,
                checkpoint: Some(checkpoint),
            }) if chunks == chunk + 1 => (Ack::Duplicate, Some(*checkpoint)),
            Ok(Transition::Superseded { status, chunks, .. })
                if chunks > chunk || status == ImportStatus::Failed =>
            {
                (Ack::Duplicate, None)
            }
            Ok(Transition::Superseded { chunks, .. }) => {
                self.release(&claim).await;
                return Err(RecordError::permanent(
                    "unexpected_chunk",
                    format!(
                        "chunk {chunk} of import {} arrived, but its record has {chunks} chunks done",
                        job.import_id
                    ),
                ));
            }
            Ok(Transition::UnknownImport) => {
                self.release(&claim).await;
                return Err(RecordError::permanent(
                    "unknown_import",
                    format!("no import record has id {}", job.import_id),
                ));
            }
            Err(e) => {
                self.release(&claim).await;
                return Err(
                    RecordError::retryable("could not record the import's progress").with_source(e),
                );
            }
        };
        let finish_by = finish_by(invocation);
        let mut result = json!({ "chunk": chunk });
        if let Some(next) = next {
            result["continuedAt"] = json!(next.offset);
            let trace = message
                .message_attributes
                .get(job_attributes::TRACE_CONTEXT)
                .and_then(|a| a.string_value.as_deref());
            let continued = job.continued(next);
            match timeout_at(finish_by, self.jobs.send(&continued, trace)).await {
                Ok(Ok(())) => {}
                // The chunk is committed; its redelivery finds that and sends the next job.
                Ok(Err(e)) => {
                    self.release(&claim).await;
                    return Err(
                        RecordError::retryable("could not queue the import's next chunk")
                            .with_source(e),
                    );
                }
                Err(_) => return Err(out_of_time()),
            }
        }
        // The work is done and recorded: a failure here only means a later duplicate delivery
        // finds the chunk committed, so the message is acknowledged either way.
        match timeout_at(finish_by, self.guard.complete(&claim, &result.to_string())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "chunk done, but its idempotency record was not completed");
            }
            Err(_) => tracing::warn!("chunk done, but no time was left to complete its claim"),
        }
        Ok(ack)
    }

    /// Records a permanent failure on the import. If that fails, the job is retried instead of
    /// parked, so the failure is not lost.
    async fn fail(&self, import_id: ImportId, reason: &str) -> Result<(), RecordError> {
        match self
            .results
            .mark_failed(import_id, reason, SystemTime::now())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(RecordError::retryable("could not record the import as failed").with_source(e))
            }
        }
    }

    async fn release(&self, claim: &Claim) {
        if let Err(e) = self.guard.release(claim).await {
            tracing::warn!(error = %error_chain(&e), "could not release the claim; it expires with its lease");
        }
    }
}

impl Unit {
    fn starting() -> Self {
        Self {
            rows: Vec::with_capacity(BATCH_SIZE),
            rejections: Rejections::default(),
            end: Position::default(),
        }
    }
}

impl Done {
    /// Counts a written unit. Units finish in the order they were read, so everything before
    /// its end is now written.
    fn commit(&mut self, unit: Unit, skus_in_flight: &mut HashMap<String, usize>) {
        for row in &unit.rows {
            if let Some(count) = skus_in_flight.get_mut(&row.sku) {
                *count -= 1;
                if *count == 0 {
                    skus_in_flight.remove(&row.sku);
                }
            }
        }
        self.written += unit.rows.len() as u64;
        self.rejections.extend(unit.rejections);
        self.position = unit.end;
    }
}

/// When the finishing steps of a chunk (commit, next job, claim) give up: a quarter of the
/// deadline margin before the deadline, which leaves the batch processor time to report and
/// delay the record. An invocation must never time out as a whole: that would send every
/// record of its batch back.
fn finish_by(invocation: &Invocation) -> tokio::time::Instant {
    let margin = invocation
        .deadline
        .duration_since(invocation.stop_at)
        .unwrap_or_default();
    invocation.stop_instant() + margin.mul_f64(0.75)
}

/// A chunk whose finishing steps ran out of time: whatever they did is safe (the commit is
/// conditional, the next job is collapsed by its own claim), and the redelivery settles it.
fn out_of_time() -> RecordError {
    RecordError::retryable("the invocation ended before the chunk's progress was settled")
}

fn source_error(error: SourceError) -> RecordError {
    match error {
        SourceError::NotFound { .. } => RecordError::permanent("object_missing", error.to_string()),
        SourceError::TooLarge { .. } => {
            RecordError::permanent("object_too_large", error.to_string())
        }
        SourceError::Changed { .. } => RecordError::permanent("object_changed", error.to_string()),
        SourceError::Unavailable(_) => {
            RecordError::retryable("the upload bucket is unavailable").with_source(error)
        }
    }
}

fn file_error(error: FileError) -> RecordError {
    match error {
        FileError::Invalid(reason) => RecordError::permanent("invalid_file", reason),
        FileError::Read(_) => {
            RecordError::retryable("reading the object failed").with_source(error)
        }
    }
}

fn guard_error(error: GuardError) -> RecordError {
    if error.is_retryable() {
        RecordError::retryable("the idempotency store is unavailable").with_source(error)
    } else {
        RecordError::permanent("idempotency_record_malformed", error.to_string()).with_source(error)
    }
}

impl<G, O, W, R, Q> RecordHandler for ImportHandler<G, O, W, R, Q>
where
    G: IdempotencyStore,
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
    Q: JobQueue,
{
    async fn handle(&self, message: &SqsMessage, invocation: &Invocation) -> RecordResult {
        let body = message
            .body
            .as_deref()
            .ok_or_else(|| RecordError::permanent("malformed_job", "the message has no body"))?;
        let job: ImportJob = serde_json::from_str(body).map_err(|e| {
            RecordError::permanent(
                "malformed_job",
                format!("the body is not an import job: {e}"),
            )
        })?;
        tracing::Span::current().record("import_id", tracing::field::display(job.import_id));
        if job.schema_version != JOB_SCHEMA_VERSION {
            let reason = format!(
                "job schema version {} is not {JOB_SCHEMA_VERSION}",
                job.schema_version
            );
            self.fail(job.import_id, &reason).await?;
            return Err(RecordError::permanent("unsupported_schema", reason));
        }
        let key = match ObjectKey::parse(&job.object_key, &self.upload_prefix) {
            Ok(key) => key,
            Err(e) => {
                let reason = format!("objectKey {e}");
                self.fail(job.import_id, &reason).await?;
                return Err(RecordError::permanent("unsafe_object_key", reason));
            }
        };

        // The fingerprint is over the parsed job, so the same job re-serialised (other key
        // order or spacing, as a redrive tool may write it) is still the same job.
        let canonical = job.to_body();
        let decision = self
            .guard
            .claim(
                &job.idempotency_key(),
                canonical.as_bytes(),
                Some(invocation.deadline),
            )
            .await
            .map_err(guard_error)?;
        match decision {
            Decision::Proceed(claim) => self.claimed(message, &job, &key, claim, invocation).await,
            Decision::AlreadyCompleted { .. } => Ok(Ack::Duplicate),
            // The holder either finishes (then the retry is a duplicate) or dies (then its
            // lease runs out): either way nothing can happen before the lease ends, so the
            // message stays invisible at least that long instead of burning its receives.
            Decision::InProgress { lease_expires_at } => Err(RecordError::retryable_after(
                "the import is being processed by another worker",
                lease_expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
            )),
            Decision::PayloadMismatch => Err(RecordError::permanent(
                "payload_mismatch",
                "a different job was already processed under this import id",
            )),
        }
    }
}
