//! Why an import job is parked: the failure classes of the import worker.
//!
//! A class is the `dlq.error_class` attribute of a parked job (with `dlq.reason` saying what exactly
//! went wrong), so operators filter redrives by it (`queue-ops`). The
//! library adds its own ([`queue_worker::worker::JobFailure`]); SQS's redrive after too
//! many receives is `max_receive_count_exceeded`. `[To customize]`: a fork lists its own.

use queue_worker::batch::RecordError;

/// A class of permanent failure: the job cannot succeed by retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFailure {
    /// The job's `schemaVersion` is not one this worker reads.
    UnsupportedSchema,
    /// The job's `objectKey` is outside the upload prefix or not a safe key.
    UnsafeObjectKey,
    /// No object under the key.
    ObjectMissing,
    /// The object is larger than `MAX_OBJECT_BYTES`.
    ObjectTooLarge,
    /// The object was replaced after the import started reading it.
    ObjectChanged,
    /// The file is not a valid import (bad header, no valid rows, a record over the size or field
    /// limit).
    InvalidFile,
    /// The items table refused the rows as invalid.
    RowsRejectedByTable,
    /// A continuation arrived that its import record cannot have sent.
    UnexpectedChunk,
    /// No import record has the job's id.
    UnknownImport,
    /// The job names another object or format than its import record (a forged or stale job).
    JobMismatch,
}

impl ImportFailure {
    /// Every class, for tools and docs that list them.
    pub const ALL: [Self; 10] = [
        Self::UnsupportedSchema,
        Self::UnsafeObjectKey,
        Self::ObjectMissing,
        Self::ObjectTooLarge,
        Self::ObjectChanged,
        Self::InvalidFile,
        Self::RowsRejectedByTable,
        Self::UnexpectedChunk,
        Self::UnknownImport,
        Self::JobMismatch,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedSchema => "unsupported_schema",
            Self::UnsafeObjectKey => "unsafe_object_key",
            Self::ObjectMissing => "object_missing",
            Self::ObjectTooLarge => "object_too_large",
            Self::ObjectChanged => "object_changed",
            Self::InvalidFile => "invalid_file",
            Self::RowsRejectedByTable => "rows_rejected_by_table",
            Self::UnexpectedChunk => "unexpected_chunk",
            Self::UnknownImport => "unknown_import",
            Self::JobMismatch => "job_mismatch",
        }
    }

    /// A permanent failure of this class.
    pub fn error(self, reason: impl Into<String>) -> RecordError {
        RecordError::permanent(self.as_str(), reason)
    }
}
