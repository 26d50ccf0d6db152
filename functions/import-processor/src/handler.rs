//! The import worker: one chunk of an import job, its domain steps only.
//!
//! The library's [`Idempotent`](queue_worker::worker::Idempotent) parses the job, claims it
//! under the chunk's key (`{import id}#{chunk}`), releases the claim on failure, sends the
//! continuation and completes the claim. What is left here is the import:
//!
//! 1. the job is checked (schema version, object key): a bad one fails the import;
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
//! A worker killed before 4 leaves nothing recorded: the chunk comes back and is redone from the
//! same offset. Killed after 4, the redelivered chunk finds it committed (step 2).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::SystemTime;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use imports::{
    Checkpoint, ChunkEnd, ImportId, ImportJob, ImportResults, ImportStatus, JOB_SCHEMA_VERSION,
    ObjectKey, StoreError, Transition,
};
use queue_worker::batch::{Invocation, RecordError};
use queue_worker::protection::{Dependency, DependencyError};
use queue_worker::worker::{Done, Run, Worker};
use tokio::time::timeout_at;

use crate::failure::ImportFailure;
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

/// Imports uploaded files: check, read, validate, write, record, continue.
///
/// - A bad schema version, an unsafe key, a missing, oversize, invalid or replaced file:
///   permanent (the import is marked `FAILED` with the reason and the job is parked).
/// - Throttling, timeouts, a table or bucket that is down, an open circuit: retryable (the
///   chunk comes back after its backoff and is redone).
/// - Out of this invocation's time: the rows written so far are checkpointed and the next chunk
///   is the continuation; a chunk that could not write anything is retried.
/// - A chunk an earlier delivery committed: a duplicate, nothing written.
pub struct ImportWorker<O, W, R> {
    source: O,
    writer: W,
    imports: R,
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
struct Written {
    position: Position,
    written: u64,
    rejections: Rejections,
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

    /// Checks what the queue is not trusted with: the body's schema version and the object
    /// key. A bad job fails its import.
    async fn admit(&self, job: &ImportJob) -> Result<ObjectKey, RecordError> {
        if job.schema_version != JOB_SCHEMA_VERSION {
            let reason = format!(
                "job schema version {} is not {JOB_SCHEMA_VERSION}",
                job.schema_version
            );
            self.fail(job.import_id, &reason).await?;
            return Err(ImportFailure::UnsupportedSchema.error(reason));
        }
        match ObjectKey::parse(&job.object_key, &self.upload_prefix) {
            Ok(key) => Ok(key),
            Err(e) => {
                let reason = format!("objectKey {e}");
                self.fail(job.import_id, &reason).await?;
                Err(ImportFailure::UnsafeObjectKey.error(reason))
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
        let mut done = Written {
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
                return Err(ImportFailure::InvalidFile.error(format!("no valid rows: {summary}")));
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
                } => ImportFailure::RowsRejectedByTable
                    .error(e.to_string())
                    .with_source(e),
                DependencyError::CircuitOpen { retry_after, .. } => {
                    RecordError::retryable_after(e.to_string(), *retry_after)
                }
                _ => RecordError::retryable(e.to_string()).with_source(e),
            })
    }

    /// Records a permanent failure on the import. If that fails, the job is retried instead of
    /// parked, so the failure is not lost.
    async fn fail(&self, import_id: ImportId, reason: &str) -> Result<(), RecordError> {
        match self
            .imports
            .mark_failed(import_id, reason, SystemTime::now())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(RecordError::retryable("could not record the import as failed").with_source(e))
            }
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

    async fn run(&self, job: &ImportJob, run: &Run<'_>) -> Result<Done<ImportJob>, RecordError> {
        let key = self.admit(job).await?;
        // A redelivery, or a continuation (which may be a second copy), may find its chunk
        // committed by an earlier delivery that died before completing its claim: one read
        // tells, so the chunk's writes are not redone (a redo could also overwrite a later
        // chunk's newer value of a repeated SKU).
        if job.chunk() > 0 || run.receive_count > 1 {
            let stored = self
                .imports
                .progress(job.import_id)
                .await
                .map_err(|e| {
                    RecordError::retryable("could not read the import's progress").with_source(e)
                })?
                .unwrap_or(Transition::UnknownImport);
            let committed = match &stored {
                Transition::Superseded { chunks, .. } => *chunks > job.chunk(),
                _ => true,
            };
            if committed {
                return settle(job, None, Ok(stored));
            }
        }
        let outcome = match self.run_chunk(job, &key, run.invocation).await {
            Ok(outcome) => outcome,
            Err(error) => {
                if let RecordError::Permanent { reason, .. } = &error {
                    self.fail(job.import_id, reason).await?;
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
            ChunkOutcome::Stopped(next) => ChunkEnd::Continued { next },
            ChunkOutcome::NoProgress => {
                return Err(RecordError::retryable(
                    "the invocation ran out of time before the import could make progress",
                ));
            }
        };
        let recorded =
            self.imports
                .record_chunk(job.import_id, job.chunk(), end, SystemTime::now());
        let Ok(transition) = timeout_at(run.invocation.finish_instant(), recorded).await else {
            return Err(RecordError::retryable(
                "the invocation ended before the chunk's progress was recorded",
            ));
        };
        settle(job, Some(end), transition)
    }
}

/// The outcome of a chunk from what the import record says: after this chunk's commit
/// (`end`), or, without `end`, before the chunk ran. A checkpoint nobody has queued for certain
/// becomes the continuation.
pub fn settle(
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
                tracing::info!(
                    rows_written = next.rows_written,
                    rows_rejected = next.rows_rejected,
                    chunk,
                    "out of time: import checkpointed, continuing in the next chunk"
                );
                Ok(Done::processed().then(job.continued(next.clone())))
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
        }) if chunks == chunk + 1 => Ok(Done::duplicate().then(job.continued(*checkpoint))),
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

impl Unit {
    fn starting() -> Self {
        Self {
            rows: Vec::with_capacity(BATCH_SIZE),
            rejections: Rejections::default(),
            end: Position::default(),
        }
    }
}

impl Written {
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

fn source_error(error: SourceError) -> RecordError {
    let class = match error {
        SourceError::NotFound { .. } => ImportFailure::ObjectMissing,
        SourceError::TooLarge { .. } => ImportFailure::ObjectTooLarge,
        SourceError::Changed { .. } => ImportFailure::ObjectChanged,
        SourceError::Unavailable(_) => {
            return RecordError::retryable("the upload bucket is unavailable").with_source(error);
        }
    };
    class.error(error.to_string())
}

fn file_error(error: FileError) -> RecordError {
    match error {
        FileError::Invalid(reason) => ImportFailure::InvalidFile.error(reason),
        FileError::Read(_) => {
            RecordError::retryable("reading the object failed").with_source(error)
        }
    }
}

#[cfg(test)]
mod tests;
