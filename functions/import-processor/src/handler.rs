//! The record handler: one import job, end to end.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::json;
use shared::batch::{Ack, Invocation, RecordError, RecordHandler, RecordResult};
use shared::idempotency::{Claim, Decision, GuardError, IdempotencyGuard, IdempotencyStore};
use shared::imports::{
    ImportId, ImportJob, ImportResults, JOB_SCHEMA_VERSION, ObjectKey, Transition,
};
use shared::protection::{Dependency, DependencyError};
use shared::telemetry::error_chain;

use crate::items::{BATCH_SIZE, ItemWriter, WriteError};
use crate::rows::{FileError, Rejections, Row, RowReader};

/// Time kept back at the end of an invocation to record a failure and park the job.
const FINISH_RESERVE: Duration = Duration::from_secs(5);
use crate::source::{ObjectSource, SourceError};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Valid rows written.
    pub written: u64,
    /// Rows rejected by validation.
    pub rejected: u64,
    /// The rejected rows' summary, if any.
    pub summary: Option<String>,
}

/// Handles import jobs: parse, claim, read, validate, write, record.
///
/// - A malformed job, an unsafe key, a missing, oversize or invalid file: permanent (the import
///   is marked `FAILED` with the reason and the job is parked in the DLQ). The claim is released,
///   so a redrive after the file is fixed imports it.
/// - Throttling, timeouts, a table or bucket that is down, an open circuit: retryable (the claim
///   is released; the job comes back after its backoff).
/// - A job completed before: acknowledged as a duplicate, nothing written.
/// - A job in progress elsewhere: retryable.
pub struct ImportHandler<G, O, W, R> {
    guard: IdempotencyGuard<G>,
    source: O,
    writer: W,
    results: R,
    items_table: Dependency,
    upload_prefix: String,
}

impl<G, O, W, R> ImportHandler<G, O, W, R>
where
    G: IdempotencyStore,
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
{
    /// A handler reading objects under `upload_prefix` from `source` and writing rows through
    /// `writer`, protected by `items_table`.
    pub fn new(
        guard: IdempotencyGuard<G>,
        source: O,
        writer: W,
        results: R,
        items_table: Dependency,
        upload_prefix: impl Into<String>,
    ) -> Self {
        Self {
            guard,
            source,
            writer,
            results,
            items_table,
            upload_prefix: upload_prefix.into(),
        }
    }

    /// The protected items table (for inspecting its circuit).
    pub fn items_table(&self) -> &Dependency {
        &self.items_table
    }

    async fn claimed(
        &self,
        job: &ImportJob,
        key: &ObjectKey,
        claim: Claim,
        deadline: SystemTime,
    ) -> RecordResult {
        match self.import(job, key, deadline).await {
            Ok(counts) => self.complete(job, claim, counts).await,
            Err(error) => {
                self.release(&claim).await;
                if let RecordError::Permanent { reason, .. } = &error {
                    self.fail(job.import_id, reason).await?;
                }
                Err(error)
            }
        }
    }

    /// Reads the object and writes its valid rows, [`BATCH_SIZE`] at a time.
    async fn import(
        &self,
        job: &ImportJob,
        key: &ObjectKey,
        deadline: SystemTime,
    ) -> Result<Counts, RecordError> {
        let body = self.source.open(key).await.map_err(|e| match e {
            SourceError::NotFound { .. } => RecordError::permanent("object_missing", e.to_string()),
            SourceError::TooLarge { .. } => {
                RecordError::permanent("object_too_large", e.to_string())
            }
            SourceError::Unavailable(_) => {
                RecordError::retryable("the upload bucket is unavailable").with_source(e)
            }
        })?;
        let mut rows = RowReader::open(body, job.format)
            .await
            .map_err(file_error)?;
        let mut batch: Vec<Row> = Vec::with_capacity(BATCH_SIZE);
        let mut rejections = Rejections::default();
        let mut written = 0;
        while let Some(row) = rows.next().await.map_err(file_error)? {
            let row = match row {
                Ok(row) => row,
                Err(rejection) => {
                    rejections.add(rejection);
                    continue;
                }
            };
            // One request may not name a key twice: a repeated SKU goes in the next request,
            // so the later row wins, as it would row by row.
            if batch.len() == BATCH_SIZE || batch.iter().any(|b| b.sku == row.sku) {
                self.check_time(deadline)?;
                self.write(job.import_id, &batch).await?;
                written += batch.len() as u64;
                batch.clear();
            }
            batch.push(row);
        }
        if !batch.is_empty() {
            self.check_time(deadline)?;
            self.write(job.import_id, &batch).await?;
            written += batch.len() as u64;
        }
        if written == 0 && rejections.count() > 0 {
            let summary = rejections.summary().unwrap_or_default();
            return Err(RecordError::permanent(
                "invalid_file",
                format!("no valid rows: {summary}"),
            ));
        }
        Ok(Counts {
            written,
            rejected: rejections.count(),
            summary: rejections.summary(),
        })
    }

    /// Stops an import that would run into the invocation's timeout, while there is still time
    /// to record why. A file this large fails the same way every time, so it is permanent.
    fn check_time(&self, deadline: SystemTime) -> Result<(), RecordError> {
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left < FINISH_RESERVE {
            return Err(RecordError::permanent(
                "timeout_exceeded",
                "the file could not be imported within the function timeout; split it or raise ProcessorTimeoutSeconds",
            ));
        }
        Ok(())
    }

    async fn write(
        &self,
        import_id: ImportId,
        batch: &[crate::rows::Row],
    ) -> Result<(), RecordError> {
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

    async fn complete(&self, job: &ImportJob, claim: Claim, counts: Counts) -> RecordResult {
        let transition = self
            .results
            .mark_completed(
                job.import_id,
                counts.written,
                counts.rejected,
                counts.summary.as_deref(),
                SystemTime::now(),
            )
            .await;
        let ack = match transition {
            Ok(Transition::Applied) => Ack::Processed,
            // Another delivery completed this import first (its idempotency record was lost or
            // could not be completed): this one only redid idempotent writes.
            Ok(Transition::AlreadyCompleted) => Ack::Duplicate,
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
                    RecordError::retryable("could not record the import as completed")
                        .with_source(e),
                );
            }
        };
        let result = json!({ "rowsWritten": counts.written, "rowsRejected": counts.rejected });
        // The work is done and recorded: a failure here only means a later duplicate delivery
        // redoes idempotent work, so the message is acknowledged either way.
        if let Err(e) = self.guard.complete(&claim, &result.to_string()).await {
            tracing::warn!(error = %error_chain(&e), "import done, but its idempotency record was not completed");
        }
        tracing::info!(
            rows_written = counts.written,
            rows_rejected = counts.rejected,
            already_completed = matches!(ack, Ack::Duplicate),
            "import completed"
        );
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

impl<G, O, W, R> RecordHandler for ImportHandler<G, O, W, R>
where
    G: IdempotencyStore,
    O: ObjectSource,
    W: ItemWriter,
    R: ImportResults,
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
            return Err(RecordError::permanent(
                "unsupported_schema",
                format!(
                    "job schema version {} is not {JOB_SCHEMA_VERSION}",
                    job.schema_version
                ),
            ));
        }
        let key = match ObjectKey::parse(&job.object_key, &self.upload_prefix) {
            Ok(key) => key,
            Err(e) => {
                let reason = format!("objectKey {e}");
                self.fail(job.import_id, &reason).await?;
                return Err(RecordError::permanent("unsafe_object_key", reason));
            }
        };

        let idempotency_key = job.import_id.idempotency_key();
        let decision = self
            .guard
            .claim(&idempotency_key, body.as_bytes(), Some(invocation.deadline))
            .await
            .map_err(guard_error)?;
        match decision {
            Decision::Proceed(claim) => self.claimed(&job, &key, claim, invocation.deadline).await,
            Decision::AlreadyCompleted { .. } => Ok(Ack::Duplicate),
            // Usually the other worker finishes within seconds, so the normal backoff retries
            // soon and then finds the job completed. Should that worker have died, its lease
            // (at most IDEMPOTENCY_MAX_LEASE_SECONDS) runs out well within the backoff schedule
            // of the default maxReceiveCount: 10 deliveries back off for over 25 minutes.
            Decision::InProgress { .. } => Err(RecordError::retryable(
                "the import is being processed by another worker",
            )),
            Decision::PayloadMismatch => Err(RecordError::permanent(
                "payload_mismatch",
                "a different job was already processed under this import id",
            )),
        }
    }
}
