//! The import record: what a client reads back with `GET /imports/{id}`.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Checkpoint, ImportFormat, ImportId, ImportJob, ObjectKey, Principal};
use queue_worker::BoxError;
use queue_worker::accept::{RequestRecord, RequestStore};
use queue_worker::dynamo::{
    Item, Put, PutError, from_millis, get_consistent, millis, n, put_if_absent, s,
};

/// Where an import is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportStatus {
    /// Accepted; the job is (or is about to be) on the queue.
    Queued,
    /// Partly imported: a chunk ran out of its invocation's time, checkpointed, and the next
    /// chunk is queued. `rows_written` and `chunks` show the progress.
    Processing,
    /// All valid rows were written.
    Completed,
    /// The file cannot be imported; `error` says why.
    Failed,
}

impl ImportStatus {
    /// The status's name in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Processing,
            Self::Completed,
            Self::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An import as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    /// The import's id.
    pub import_id: ImportId,
    /// Where it is in its life.
    pub status: ImportStatus,
    /// The uploaded object.
    pub object_key: ObjectKey,
    /// The object's format.
    pub format: ImportFormat,
    /// Hash of the request that created the import, to tell a retry from a reused key.
    pub request_hash: String,
    /// The principal that created the import: the only caller that may read it or replay its
    /// request. `None` for a record written before owners were stored; such a record belongs
    /// to no caller.
    pub owner: Option<Principal>,
    /// Whether the job is known to have reached the queue. While `false` and the import is
    /// `QUEUED`, a retry of the request sends the job again.
    pub job_sent: bool,
    /// When the import was accepted.
    pub created_at: SystemTime,
    /// When the record last changed.
    pub updated_at: SystemTime,
    /// Rows written so far (all of them once completed).
    pub rows_written: Option<u64>,
    /// Rows rejected by validation so far.
    pub rows_rejected: Option<u64>,
    /// Chunks done so far, once the import needed more than one invocation.
    pub chunks: Option<u32>,
    /// Where the next chunk starts, while `PROCESSING`.
    pub checkpoint: Option<Box<Checkpoint>>,
    /// The ETag of the object version the import reads, pinned when its first chunk starts.
    pub object_etag: Option<String>,
    /// Why the import failed, or a summary of rejected rows.
    pub error: Option<String>,
}

impl ImportRecord {
    /// A newly accepted import, created by `owner`, whose job has not been sent yet.
    pub fn queued(
        import_id: ImportId,
        object_key: ObjectKey,
        format: ImportFormat,
        request_hash: String,
        owner: Principal,
        now: SystemTime,
    ) -> Self {
        Self {
            import_id,
            status: ImportStatus::Queued,
            object_key,
            format,
            request_hash,
            owner: Some(owner),
            job_sent: false,
            created_at: now,
            updated_at: now,
            rows_written: None,
            rows_rejected: None,
            chunks: None,
            checkpoint: None,
            object_etag: None,
            error: None,
        }
    }
}

/// What creating an import found: created, or the existing record (a retry, or a reused key).
pub type CreateOutcome = queue_worker::accept::CreateOutcome<ImportRecord>;

/// An import is a request the producer accepts: the accept flow's view of it.
impl RequestRecord for ImportRecord {
    type Id = ImportId;
    type Job = ImportJob;
    const ABANDONED: &'static str = "the job could not be queued; submit the import again";

    fn id(&self) -> ImportId {
        self.import_id
    }

    fn fingerprint(&self) -> &str {
        &self.request_hash
    }

    fn owner(&self) -> Option<&str> {
        self.owner.as_ref().map(Principal::as_str)
    }

    fn job_sent(&self) -> bool {
        self.job_sent
    }

    /// The job is sent again only while the import is `QUEUED`: once the processor has moved
    /// it on, the job evidently arrived, and sending chunk 0 of a `PROCESSING`, `COMPLETED` or
    /// `FAILED` import again would start it over.
    fn awaits_processing(&self) -> bool {
        self.status == ImportStatus::Queued
    }

    fn job(&self) -> ImportJob {
        ImportJob::new(self.import_id, &self.object_key, self.format)
    }
}

/// Why an import store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table could not be reached or refused the request. Retryable.
    #[error("the imports table is unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored record cannot be understood.
    #[error("the import record {import_id} is malformed: {reason}")]
    Malformed {
        /// The import's id.
        import_id: ImportId,
        /// What is wrong.
        reason: String,
    },
}

/// Persistence of import records.
pub trait ImportStore: Send + Sync {
    /// Writes `record` unless its id exists; a conflict returns the existing record without a
    /// second request.
    fn create(
        &self,
        record: &ImportRecord,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// Records that the import's job reached the queue.
    fn mark_job_sent(
        &self,
        import_id: ImportId,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks an import whose job may not have been sent as `FAILED` with `reason`, when the
    /// client cannot retry it (no idempotency key). Does nothing once the job is known sent. If
    /// the send did reach the queue after all, the processor still completes the import.
    fn abandon_unsent(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads an import.
    fn get(
        &self,
        import_id: ImportId,
    ) -> impl Future<Output = Result<Option<ImportRecord>, StoreError>> + Send;
}

/// An [`ImportStore`] as the accept flow's [`RequestStore`]: what the producer hands to
/// [`queue_worker::accept::accept`].
#[derive(Debug)]
pub struct ImportRequests<'a, S>(pub &'a S);

impl<S: ImportStore> RequestStore for ImportRequests<'_, S> {
    type Record = ImportRecord;
    type Error = StoreError;

    fn create(
        &self,
        record: &ImportRecord,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.0.create(record)
    }

    fn mark_job_sent(
        &self,
        import_id: ImportId,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.mark_job_sent(import_id, at)
    }

    fn abandon_unsent(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.abandon_unsent(import_id, reason, at)
    }
}

/// What recording an import's outcome did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The record changed to the new status.
    Applied,
    /// The import was already completed; nothing changed (a completed import never goes back).
    AlreadyCompleted,
    /// No import has this id.
    UnknownImport,
    /// The chunk was recorded before (an earlier delivery of it checkpointed, or the import
    /// failed meanwhile): here is what the record holds instead. Nothing changed.
    Superseded {
        /// The stored status.
        status: ImportStatus,
        /// Chunks the record says are done.
        chunks: u32,
        /// The stored checkpoint, while `PROCESSING`.
        checkpoint: Option<Box<Checkpoint>>,
    },
}

/// What starting an import's first chunk found ([`ImportResults::begin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The import is `PROCESSING` and pinned to the object version that was opened: write its
    /// rows.
    Started,
    /// Nothing changed: the first chunk was committed before (a takeover, a redrive or a second
    /// copy of the job), the import completed, or no import has this id. What the record says.
    Stored(Transition),
    /// The job names another object or format than its import: it is not this import's job.
    /// Nothing changed.
    NotTheImportsJob,
    /// The import is pinned to another version of its object: the object was replaced after
    /// an earlier delivery started reading it.
    ObjectChanged {
        /// The ETag the import is pinned to.
        pinned: String,
    },
}

/// An import's progress, as a continuation reads it before its first effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The object the import reads: a job naming another is not this import's.
    pub object_key: ObjectKey,
    /// Its format.
    pub format: ImportFormat,
    /// [`Transition::AlreadyCompleted`] once completed, else [`Transition::Superseded`] with the
    /// status, chunks done and the checkpoint the next chunk must start from.
    pub state: Transition,
}

/// How a chunk of an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEnd<'a> {
    /// The object is done: the import is `COMPLETED` with these totals.
    Completed {
        /// Rows written, all chunks.
        rows_written: u64,
        /// Rows rejected, all chunks.
        rows_rejected: u64,
        /// The rejected rows' summary, if any.
        summary: Option<&'a str>,
    },
    /// Out of time: the import is `PROCESSING`, and continues from `next`.
    Continued {
        /// Where the next chunk starts, with the totals so far.
        next: &'a Checkpoint,
    },
}

/// The processor's side of the import record: recording outcomes.
pub trait ImportResults: Send + Sync {
    /// Starts an import's first chunk, before its first effect, with one conditional write:
    /// the import must exist, not be completed, have no chunk committed, and be the one the job
    /// names (`object_key`, `format`); the write marks it `PROCESSING` and pins the version of
    /// its object that was opened (`etag`), so every row of the import comes from that version.
    /// A failed condition returns the stored record at no extra cost, and says why.
    fn begin(
        &self,
        import_id: ImportId,
        object_key: &ObjectKey,
        format: ImportFormat,
        etag: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<Start, StoreError>> + Send;

    /// Records how chunk `chunk` (0 for the producer's job) of an import ended, if no delivery
    /// of that chunk recorded it before: the write is conditional on the record's chunk count
    /// being `chunk`, so each chunk counts once however often it is delivered.
    fn record_chunk(
        &self,
        import_id: ImportId,
        chunk: u32,
        end: ChunkEnd<'_>,
        at: SystemTime,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send;

    /// What the record says of the import's progress, read consistently (see [`Progress`]);
    /// `None` if no import has this id.
    fn progress(
        &self,
        import_id: ImportId,
    ) -> impl Future<Output = Result<Option<Progress>, StoreError>> + Send;

    /// Marks the import `FAILED` with `reason`, unless it completed already.
    fn mark_failed(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send;
}

/// Attribute names of an import item.
pub mod import_attributes {
    /// Partition key (string): the import id.
    pub const ID: &str = "id";
    /// `QUEUED`, `COMPLETED` or `FAILED`.
    pub const STATUS: &str = "status";
    /// The uploaded object's key.
    pub const OBJECT_KEY: &str = "object_key";
    /// The object's format.
    pub const FORMAT: &str = "format";
    /// Hash of the creating request.
    pub const REQUEST_HASH: &str = "request_hash";
    /// The creating principal (its canonical form); absent on records written before owners
    /// were stored.
    pub const OWNER: &str = "owner";
    /// Whether the job reached the queue (boolean).
    pub const JOB_SENT: &str = "job_sent";
    /// The pinned object version's ETag.
    pub const OBJECT_ETAG: &str = "object_etag";
    /// Epoch milliseconds.
    pub const CREATED_AT: &str = "created_at";
    /// Epoch milliseconds.
    pub const UPDATED_AT: &str = "updated_at";
    /// Rows written.
    pub const ROWS_WRITTEN: &str = "rows_written";
    /// Rows rejected.
    pub const ROWS_REJECTED: &str = "rows_rejected";
    /// Failure reason or rejection summary.
    pub const ERROR: &str = "error";
    /// Chunks done (number), once an import needed more than one invocation.
    pub const CHUNKS: &str = "chunks";
    /// Where the next chunk starts (JSON of a `Checkpoint`), while `PROCESSING`.
    pub const CHECKPOINT: &str = "checkpoint";
}

use import_attributes as attr;

/// An [`ImportStore`] on a DynamoDB table with a string partition key [`import_attributes::ID`].
///
/// The producer needs `dynamodb:PutItem`, `dynamodb:UpdateItem` and `dynamodb:GetItem` on the
/// table; the processor `dynamodb:UpdateItem` and `dynamodb:GetItem`.
#[derive(Debug, Clone)]
pub struct DynamoDbImports {
    client: Client,
    table_name: String,
}

impl DynamoDbImports {
    /// A store on `table_name`.
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    fn key(import_id: ImportId) -> HashMap<String, AttributeValue> {
        HashMap::from([(attr::ID.to_owned(), s(&import_id.to_string()))])
    }

    /// Applies `update` (which may use `#status`, `#updated`, `#chunks`, `:now` and its own
    /// `values`) unless the import is missing or completed, or, with `chunk`, its chunk count
    /// is not `chunk`; tells which.
    async fn transition(
        &self,
        import_id: ImportId,
        update: &str,
        chunk: Option<u32>,
        names: &[(&str, &str)],
        mut values: Vec<(&str, AttributeValue)>,
        at: SystemTime,
    ) -> Result<Transition, StoreError> {
        let mut names = names.to_vec();
        let condition = match chunk {
            None => "attribute_exists(#id) AND #status <> :completed",
            Some(0) => {
                names.push(("#chunks", attr::CHUNKS));
                "attribute_exists(#id) AND #status <> :completed AND attribute_not_exists(#chunks)"
            }
            Some(chunk) => {
                names.push(("#chunks", attr::CHUNKS));
                values.push((":chunk", n(u64::from(chunk))));
                "attribute_exists(#id) AND #status <> :completed AND #chunks = :chunk"
            }
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(Self::key(import_id)))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":completed", s(ImportStatus::Completed.as_str()))
            .expression_attribute_values(":now", n(millis(at)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(placeholder, name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(Transition::Applied),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(conflict)) => {
                    let Some(item) = conflict.item() else {
                        return Ok(Transition::UnknownImport);
                    };
                    let stored = decode(item)
                        .map_err(|reason| StoreError::Malformed { import_id, reason })?;
                    Ok(stored_transition(stored))
                }
                _ => Err(unavailable(err)),
            },
        }
    }
}

fn encode(record: &ImportRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (attr::ID.to_owned(), s(&record.import_id.to_string())),
        (attr::STATUS.to_owned(), s(record.status.as_str())),
        (attr::OBJECT_KEY.to_owned(), s(record.object_key.as_str())),
        (attr::FORMAT.to_owned(), s(record.format.as_str())),
        (attr::REQUEST_HASH.to_owned(), s(&record.request_hash)),
        (
            attr::JOB_SENT.to_owned(),
            AttributeValue::Bool(record.job_sent),
        ),
        (attr::CREATED_AT.to_owned(), n(millis(record.created_at))),
        (attr::UPDATED_AT.to_owned(), n(millis(record.updated_at))),
    ]);
    if let Some(owner) = &record.owner {
        item.insert(attr::OWNER.to_owned(), s(owner.as_str()));
    }
    if let Some(rows) = record.rows_written {
        item.insert(attr::ROWS_WRITTEN.to_owned(), n(rows));
    }
    if let Some(rows) = record.rows_rejected {
        item.insert(attr::ROWS_REJECTED.to_owned(), n(rows));
    }
    if let Some(error) = &record.error {
        item.insert(attr::ERROR.to_owned(), s(error));
    }
    if let Some(chunks) = record.chunks {
        item.insert(attr::CHUNKS.to_owned(), n(u64::from(chunks)));
    }
    if let Some(checkpoint) = &record.checkpoint {
        item.insert(attr::CHECKPOINT.to_owned(), s(&checkpoint_json(checkpoint)));
    }
    if let Some(etag) = &record.object_etag {
        item.insert(attr::OBJECT_ETAG.to_owned(), s(etag));
    }
    item
}

/// What a stored record says to a chunk that did not (or could not) change it.
fn stored_transition(stored: ImportRecord) -> Transition {
    match stored.status {
        ImportStatus::Completed => Transition::AlreadyCompleted,
        status => Transition::Superseded {
            status,
            chunks: stored.chunks.unwrap_or(0),
            checkpoint: stored.checkpoint,
        },
    }
}

fn checkpoint_json(checkpoint: &Checkpoint) -> String {
    serde_json::to_string(checkpoint).expect("a checkpoint always serialises")
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<ImportRecord, String> {
    let item = Item(item);
    let import_id = ImportId::parse(item.string(attr::ID)?).map_err(|e| e.to_string())?;
    let status = item.string(attr::STATUS)?;
    let format = item.string(attr::FORMAT)?;
    Ok(ImportRecord {
        import_id,
        status: ImportStatus::parse(status).ok_or_else(|| format!("unknown status {status:?}"))?,
        object_key: ObjectKey::from_stored(item.string(attr::OBJECT_KEY)?),
        format: ImportFormat::parse(format).ok_or_else(|| format!("unknown format {format:?}"))?,
        request_hash: item.string(attr::REQUEST_HASH)?.to_owned(),
        owner: item
            .optional_string(attr::OWNER)?
            .map(Principal::from_stored),
        job_sent: item.boolean(attr::JOB_SENT)?,
        created_at: from_millis(item.number(attr::CREATED_AT)?),
        updated_at: from_millis(item.number(attr::UPDATED_AT)?),
        rows_written: item.optional_number(attr::ROWS_WRITTEN)?,
        rows_rejected: item.optional_number(attr::ROWS_REJECTED)?,
        chunks: item
            .optional_number(attr::CHUNKS)?
            .map(|chunks| u32::try_from(chunks).map_err(|_| format!("{chunks} chunks")))
            .transpose()?,
        checkpoint: item
            .optional_string(attr::CHECKPOINT)?
            .map(|json| {
                serde_json::from_str(json)
                    .map(Box::new)
                    .map_err(|e| format!("checkpoint: {e}"))
            })
            .transpose()?,
        object_etag: item.optional_string(attr::OBJECT_ETAG)?.map(str::to_owned),
        error: item.optional_string(attr::ERROR)?.map(str::to_owned),
    })
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

impl ImportStore for DynamoDbImports {
    async fn create(&self, record: &ImportRecord) -> Result<CreateOutcome, StoreError> {
        let malformed = |reason: String| StoreError::Malformed {
            import_id: record.import_id,
            reason,
        };
        match put_if_absent(&self.client, &self.table_name, attr::ID, encode(record)).await {
            Ok(Put::Created) => Ok(CreateOutcome::Created),
            Ok(Put::Exists(existing)) => decode(&existing)
                .map(|existing| CreateOutcome::Exists(Box::new(existing)))
                .map_err(malformed),
            Err(error @ (PutError::NoItemReturned | PutError::Rejected(_))) => {
                Err(malformed(error.to_string()))
            }
            Err(PutError::Unavailable(error)) => Err(StoreError::Unavailable(error)),
        }
    }

    async fn mark_job_sent(&self, import_id: ImportId, at: SystemTime) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(Self::key(import_id)))
            .update_expression("SET #sent = :true, #updated = :now")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_names("#sent", attr::JOB_SENT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(millis(at)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn abandon_unsent(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(Self::key(import_id)))
            .update_expression("SET #status = :failed, #error = :reason, #updated = :now")
            .condition_expression("#sent = :false")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#error", attr::ERROR)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#sent", attr::JOB_SENT)
            .expression_attribute_values(":failed", s(ImportStatus::Failed.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":now", n(millis(at)))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                Ok(())
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn get(&self, import_id: ImportId) -> Result<Option<ImportRecord>, StoreError> {
        get_consistent(
            &self.client,
            &self.table_name,
            attr::ID,
            &import_id.to_string(),
        )
        .await
        .map_err(StoreError::Unavailable)?
        .as_ref()
        .map(decode)
        .transpose()
        .map_err(|reason| StoreError::Malformed { import_id, reason })
    }
}

/// Why a first chunk could not start, from the record its write found.
fn not_started(
    import_id: ImportId,
    stored: ImportRecord,
    object_key: &ObjectKey,
    format: ImportFormat,
    etag: &str,
) -> Result<Start, StoreError> {
    if stored.object_key.as_str() != object_key.as_str() || stored.format != format {
        return Ok(Start::NotTheImportsJob);
    }
    if stored.status == ImportStatus::Completed || stored.chunks.is_some() {
        return Ok(Start::Stored(stored_transition(stored)));
    }
    match stored.object_etag {
        Some(pinned) if pinned != etag => Ok(Start::ObjectChanged { pinned }),
        _ => Err(StoreError::Malformed {
            import_id,
            reason: "the record refused its first chunk for no reason it shows".into(),
        }),
    }
}

impl ImportResults for DynamoDbImports {
    async fn begin(
        &self,
        import_id: ImportId,
        object_key: &ObjectKey,
        format: ImportFormat,
        etag: &str,
        at: SystemTime,
    ) -> Result<Start, StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(Self::key(import_id)))
            // A redriven import that failed before any chunk committed starts again.
            .update_expression(
                "SET #status = :processing, #etag = :etag, #updated = :now REMOVE #error",
            )
            .condition_expression(
                "attribute_exists(#id) AND #key = :key AND #format = :format \
                 AND #status <> :completed AND attribute_not_exists(#chunks) \
                 AND (attribute_not_exists(#etag) OR #etag = :etag)",
            )
            .expression_attribute_names("#id", attr::ID)
            .expression_attribute_names("#key", attr::OBJECT_KEY)
            .expression_attribute_names("#format", attr::FORMAT)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#chunks", attr::CHUNKS)
            .expression_attribute_names("#etag", attr::OBJECT_ETAG)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#error", attr::ERROR)
            .expression_attribute_values(":key", s(object_key.as_str()))
            .expression_attribute_values(":format", s(format.as_str()))
            .expression_attribute_values(":completed", s(ImportStatus::Completed.as_str()))
            .expression_attribute_values(":processing", s(ImportStatus::Processing.as_str()))
            .expression_attribute_values(":etag", s(etag))
            .expression_attribute_values(":now", n(millis(at)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(Start::Started),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(conflict)) => {
                    let Some(item) = conflict.item() else {
                        return Ok(Start::Stored(Transition::UnknownImport));
                    };
                    let stored = decode(item)
                        .map_err(|reason| StoreError::Malformed { import_id, reason })?;
                    not_started(import_id, stored, object_key, format, etag)
                }
                _ => Err(unavailable(err)),
            },
        }
    }

    async fn record_chunk(
        &self,
        import_id: ImportId,
        chunk: u32,
        end: ChunkEnd<'_>,
        at: SystemTime,
    ) -> Result<Transition, StoreError> {
        let names = [
            ("#written", attr::ROWS_WRITTEN),
            ("#rejected", attr::ROWS_REJECTED),
            ("#error", attr::ERROR),
            ("#checkpoint", attr::CHECKPOINT),
        ];
        let mut values = vec![(":chunks", n(u64::from(chunk) + 1))];
        let update = match end {
            ChunkEnd::Completed {
                rows_written,
                rows_rejected,
                summary,
            } => {
                values.push((":status", s(ImportStatus::Completed.as_str())));
                values.push((":written", n(rows_written)));
                values.push((":rejected", n(rows_rejected)));
                match summary {
                    Some(summary) => {
                        values.push((":error", s(summary)));
                        "SET #status = :status, #written = :written, #rejected = :rejected, \
                         #chunks = :chunks, #error = :error, #updated = :now REMOVE #checkpoint"
                    }
                    None => {
                        "SET #status = :status, #written = :written, #rejected = :rejected, \
                         #chunks = :chunks, #updated = :now REMOVE #error, #checkpoint"
                    }
                }
            }
            ChunkEnd::Continued { next } => {
                values.push((":status", s(ImportStatus::Processing.as_str())));
                values.push((":written", n(next.rows_written)));
                values.push((":rejected", n(next.rows_rejected)));
                values.push((":checkpoint", s(&checkpoint_json(next))));
                "SET #status = :status, #written = :written, #rejected = :rejected, \
                 #chunks = :chunks, #checkpoint = :checkpoint, #updated = :now REMOVE #error"
            }
        };
        self.transition(import_id, update, Some(chunk), &names, values, at)
            .await
    }

    async fn progress(&self, import_id: ImportId) -> Result<Option<Progress>, StoreError> {
        Ok(self.get(import_id).await?.map(|record| Progress {
            object_key: record.object_key.clone(),
            format: record.format,
            state: stored_transition(record),
        }))
    }

    async fn mark_failed(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> Result<Transition, StoreError> {
        self.transition(
            import_id,
            "SET #status = :status, #error = :error, #updated = :now",
            None,
            &[("#error", attr::ERROR)],
            vec![
                (":status", s(ImportStatus::Failed.as_str())),
                (":error", s(reason)),
            ],
            at,
        )
        .await
    }
}
