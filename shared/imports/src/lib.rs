//! The import domain shared by the producer and the processor: ids, object keys, the job message
//! and the import record, with the stores that persist them.
//!
//! `[To customize]`: this is the example domain. A fork renames `Import*` to its own unit of
//! work and changes [`ImportFormat`] and the job's fields; the guard, the batch processor and the
//! protection helpers do not change.
//!
//! Layout: value types in `types`, the job message in `job` (a [`queue_worker::job::Job`], sent
//! with the library's job queue), the import record and its DynamoDB store in `record`. An
//! import record is the producer's request record ([`queue_worker::accept::RequestRecord`]);
//! [`ImportRequests`] hands an [`ImportStore`] to the library's accept flow.

mod job;
mod record;
mod types;

pub use job::{Checkpoint, ImportJob, JOB_SCHEMA_VERSION};
pub use record::{
    ChunkEnd, CreateOutcome, DynamoDbImports, ImportRecord, ImportRequests, ImportResults,
    ImportStatus, ImportStore, Progress, Start, StoreError, Transition, import_attributes,
};
pub use types::{
    ImportFormat, ImportId, InvalidImportId, InvalidObjectKey, InvalidPrincipal, ObjectKey,
    Principal,
};
