//! One chunk's rows: read from the checkpoint on, validated, and written a few requests in
//! flight, until the object or the invocation's work time ends.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::time::SystemTime;

use imports::{Checkpoint, ImportId, ImportJob, ImportResults, ObjectKey, Start};
use queue_worker::batch::{Invocation, RecordError};
use queue_worker::protection::DependencyError;
use queue_worker::worker::Done;
use tokio::time::{Instant, timeout_at};

use super::{Counts, ImportWorker};
use crate::failure::ImportFailure;
use crate::items::{BATCH_SIZE, ItemWriter, WriteError};
use crate::rows::{FileError, Position, Rejections, Row, RowReader, bounded};
use crate::source::{ObjectSource, ReadFrom, SourceError};

/// Chunks in a row that may end without progress and still continue; the next stall is retried
/// as a failure (and uses up a receive).
pub(crate) const MAX_STALLS: u32 = 8;

/// How one chunk's work ended.
pub(super) enum ChunkOutcome {
    /// The object is done.
    Done(Counts),
    /// Time ran out, or a retryable failure struck, after some progress: continue from here.
    /// Also when time ran out with no progress (the checkpoint counts the stall).
    Stopped(Checkpoint),
    /// Time ran out on chunk 0 before the object was opened, the import started and its
    /// header read: there is no checkpoint yet.
    NoProgress,
    /// Chunk 0 did not start: its record holds something else (what [`Start`] says), and
    /// nothing was written.
    NotStarted(Start),
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

impl<O, W, R> ImportWorker<O, W, R> {
    /// `done`, continued from `checkpoint`: held back if the chunk stalled.
    pub(super) fn continuation(
        &self,
        done: Done<ImportJob>,
        job: &ImportJob,
        checkpoint: Checkpoint,
    ) -> Done<ImportJob> {
        let delay = match (checkpoint.stalls, self.stall_backoff) {
            (0, _) | (_, None) => Duration::ZERO,
            (stalls, Some(policy)) => policy.delay(stalls, fastrand::f64()),
        };
        done.then_after(job.continued(checkpoint), delay)
    }
}

impl<O, W, R> ImportWorker<O, W, R>
where
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
{
    /// Reads the object from the job's checkpoint on and writes its valid rows, up to
    /// [`writes_in_flight`](Self::with_writes_in_flight) requests of [`BATCH_SIZE`] at once,
    /// until the object ends or the invocation's work time does.
    pub(super) async fn run_chunk(
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
            return Ok(resume.map_or(ChunkOutcome::NoProgress, |r| {
                ChunkOutcome::Stopped(r.stalled())
            }));
        };
        let opened = opened.map_err(source_error)?;
        if resume.is_none() {
            // Before the first effect: the import must exist and be this job's, and its rows
            // come from the version just opened, whoever reads it later.
            let begin = self.imports.begin(
                job.import_id,
                key,
                job.format,
                &opened.etag,
                SystemTime::now(),
            );
            match timeout_at(stop, begin).await {
                Ok(Ok(Start::Started)) => {}
                Ok(Ok(Start::ObjectChanged { pinned })) => {
                    return Err(ImportFailure::ObjectChanged.error(format!(
                        "object {} was replaced after the import started reading it \
                         (ETag {pinned}, now {})",
                        key.as_str(),
                        opened.etag
                    )));
                }
                Ok(Ok(other)) => return Ok(ChunkOutcome::NotStarted(other)),
                Ok(Err(e)) => {
                    return Err(RecordError::retryable("could not start the import").with_source(e));
                }
                Err(_) => return Ok(ChunkOutcome::NoProgress),
            }
        }
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
        // The whole object was read and its last unit is in flight.
        let mut finished = false;
        // A unit failed: the units behind it must not count, so they are not awaited.
        let mut unit_failed = false;
        // A retryable failure that ended the chunk early (a cut stream, a write that used up
        // its attempts): like the stop time, it ends the chunk with what was written kept.
        let mut failure = None;
        'read: loop {
            let before = rows.position();
            let next = match timeout_at(stop, rows.next()).await {
                Ok(Ok(next)) => next,
                Ok(Err(e)) => {
                    failure = Some(unless_permanent(file_error(e))?);
                    break 'read;
                }
                Err(_) => break 'read,
            };
            let row = match next {
                None => {
                    pending.end = rows.position();
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
            if row.is_none() || full {
                if row.is_some() {
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
                        Ok(Some(Ok(unit))) => done.commit(unit, &mut skus_in_flight),
                        // The units behind a failed one must not count: the chunk ends here.
                        Ok(Some(Err(e))) => {
                            failure = Some(unless_permanent(e)?);
                            unit_failed = true;
                            break 'read;
                        }
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                for row in &unit.rows {
                    *skus_in_flight.entry(row.sku.clone()).or_default() += 1;
                }
                in_flight.push_back(self.write_unit(job.import_id, unit, stop));
            }
            match row {
                Some(row) => pending.rows.push(row),
                None => {
                    finished = true;
                    break 'read;
                }
            }
        }
        // The units in flight precede the point where the chunk ended. Those already sent are
        // awaited, past the stop time too (until the drain instant), and counted: a clean stop
        // writes no row twice. A write that failed after the stop time is not a failure of the
        // chunk, only its end.
        let mut all_written = false;
        let drain_by = invocation.drain_instant();
        while !unit_failed {
            match timeout_at(drain_by, in_flight.next()).await {
                Ok(Some(Ok(unit))) => done.commit(unit, &mut skus_in_flight),
                Ok(Some(Err(e))) => {
                    let e = unless_permanent(e)?;
                    if Instant::now() < stop {
                        failure = Some(e);
                    }
                    unit_failed = true;
                }
                Ok(None) => {
                    all_written = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // Only a write that did not answer by the drain instant is dropped here: it is not
        // counted, and the next chunk writes its rows again.
        drop(in_flight);

        if finished && all_written && failure.is_none() {
            let rejected = done.rejections.count();
            if done.written == 0 && rejected > 0 {
                // The count and the first rejection: the whole summary would not fit the bound.
                let first = done
                    .rejections
                    .examples()
                    .first()
                    .map_or("", String::as_str);
                return Err(ImportFailure::InvalidFile.error(bounded(format!(
                    "no valid rows: {rejected} rejected, the first at {first}"
                ))));
            }
            return Ok(ChunkOutcome::Done(Counts {
                written: done.written,
                rejected,
                summary: done.rejections.summary(),
            }));
        }
        // No progress: a failure is retried; running out of time continues, counted as a stall.
        let stalled = done.position == start;
        match failure {
            Some(error) if stalled => return Err(error),
            Some(error) => tracing::warn!(
                error = %error,
                "the chunk ended early on a retryable failure; what it wrote is checkpointed"
            ),
            None => {}
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
            stalls: if stalled {
                resume.map_or(0, |r| r.stalls).saturating_add(1)
            } else {
                0
            },
        }))
    }

    /// Writes a unit's rows (if any); gives the unit back to be counted. Rows first polled
    /// after `stop` are not sent.
    async fn write_unit(
        &self,
        import_id: ImportId,
        unit: Unit,
        stop: Instant,
    ) -> Result<Unit, RecordError> {
        if !unit.rows.is_empty() {
            if Instant::now() >= stop {
                return Err(RecordError::retryable(
                    "the chunk's stop time came before this write was sent",
                ));
            }
            self.write(import_id, &unit.rows, stop).await?;
        }
        Ok(unit)
    }

    /// Writes one batch; a throttled write waits and tries again until `stop` (the chunk's own
    /// time-out at `stop` comes first, so throttling ends the chunk with its progress kept).
    async fn write(
        &self,
        import_id: ImportId,
        batch: &[Row],
        stop: Instant,
    ) -> Result<(), RecordError> {
        self.items_table
            .call_until(stop, || self.writer.write(import_id, batch))
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

/// A permanent failure ends the chunk as it is (`Err`); a retryable one is kept (`Ok`) to end
/// the chunk with its progress checkpointed.
fn unless_permanent(error: RecordError) -> Result<RecordError, RecordError> {
    match error {
        RecordError::Permanent { .. } => Err(error),
        retryable => Ok(retryable),
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
        FileError::Invalid(reason) => ImportFailure::InvalidFile.error(bounded(reason)),
        FileError::Read(_) => {
            RecordError::retryable("reading the object failed").with_source(error)
        }
    }
}
