//! The job message the producer sends and the processor receives.

use serde::{Deserialize, Serialize};

use super::{ImportFormat, ImportId, ObjectKey};
use queue_worker::idempotency::IdempotencyKey;
use queue_worker::job::Job;

/// Version of the job body's schema. Bump it when the body changes incompatibly; the processor
/// parks jobs of a version it does not know instead of guessing.
pub const JOB_SCHEMA_VERSION: u32 = 1;

/// A queued import: which object to import, in which format, and from where.
///
/// The producer sends chunk 0 (no [`resume`](Self::resume)). When a chunk runs out of its
/// invocation's time, the processor checkpoints the import and sends the next chunk as a new
/// job carrying the same checkpoint, so continuing never counts as a failed receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportJob {
    /// Always [`JOB_SCHEMA_VERSION`] when sent by this code.
    pub schema_version: u32,
    /// The import this job belongs to; with the chunk, the idempotency key of its processing.
    pub import_id: ImportId,
    /// The uploaded object. The processor validates it against its own upload prefix with
    /// [`ObjectKey::parse`] before touching S3: a queue is not a trust boundary.
    pub object_key: String,
    /// The object's format.
    pub format: ImportFormat,
    /// Where a continuation starts; absent on the producer's job (chunk 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Checkpoint>,
}

/// How far an import got: everything before [`offset`](Self::offset) in the object is written
/// and counted. Stored on the import record and carried by the next chunk's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// The chunk that starts here (1 for the first continuation).
    pub chunk: u32,
    /// Byte offset in the object of the first row not yet imported.
    pub offset: u64,
    /// Lines of the object before `offset` (so rejections name absolute lines).
    pub line: u64,
    /// The object's ETag when chunk 0 opened it: a continuation reads only that version.
    pub etag: String,
    /// CSV only: the header's column names, in file order (a continuation starts mid-file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Vec<String>>,
    /// Rows written before `offset`.
    pub rows_written: u64,
    /// Rows rejected before `offset`.
    pub rows_rejected: u64,
    /// A few rejected rows before `offset` (`line N: reason`), at most
    /// [`Checkpoint::MAX_EXAMPLES`], for the import's summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_examples: Vec<String>,
    /// How many chunks in a row, up to the one that ended here, made no progress (0 once one
    /// does): a stalled import waits longer before each try, and is retried as a failure after
    /// too many. Code from before this field rejects a checkpoint that carries it (the job's
    /// and the import record's): once a stall was recorded, roll forward, not back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stalls: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Checkpoint {
    /// The most rejected-row examples kept across chunks: the summary stays bounded however
    /// many chunks an import takes.
    pub const MAX_EXAMPLES: usize = 5;

    /// The checkpoint of the chunk after this one when that chunk made no progress: the same
    /// place, one more stall.
    pub fn stalled(&self) -> Self {
        Self {
            chunk: self.chunk + 1,
            stalls: self.stalls.saturating_add(1),
            ..self.clone()
        }
    }
}

impl ImportJob {
    /// The job for an import.
    pub fn new(import_id: ImportId, object_key: &ObjectKey, format: ImportFormat) -> Self {
        Self {
            schema_version: JOB_SCHEMA_VERSION,
            import_id,
            object_key: object_key.as_str().to_owned(),
            format,
            resume: None,
        }
    }

    /// The job that continues this one's import from `checkpoint`.
    pub fn continued(&self, checkpoint: Checkpoint) -> Self {
        Self {
            resume: Some(checkpoint),
            ..self.clone()
        }
    }

    /// Which chunk of its import this job is: 0 for the producer's job.
    pub fn chunk(&self) -> u32 {
        self.resume.as_ref().map_or(0, |r| r.chunk)
    }
}

impl Job for ImportJob {
    const SCHEMA_VERSION: u32 = JOB_SCHEMA_VERSION;

    /// The import id.
    fn id(&self) -> String {
        self.import_id.to_string()
    }

    /// The key that makes processing this chunk happen once: the import id for chunk 0,
    /// `{import id}#{chunk}` for a continuation.
    fn idempotency_key(&self) -> IdempotencyKey {
        match self.chunk() {
            0 => self.import_id.idempotency_key(),
            chunk => IdempotencyKey::parse(format!("{}#{chunk}", self.import_id))
                .expect("a UUID and a number make a valid idempotency key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_camel_case_json_with_a_schema_version() {
        let id = ImportId::parse("0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d").unwrap();
        let key = ObjectKey::parse("uploads/a.csv", "uploads/").unwrap();
        let body = ImportJob::new(id, &key, ImportFormat::Csv).to_body();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({
                "schemaVersion": 1,
                "importId": "0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d",
                "objectKey": "uploads/a.csv",
                "format": "csv"
            })
        );
        assert_eq!(
            serde_json::from_str::<ImportJob>(&body).unwrap().import_id,
            id
        );
    }

    #[test]
    fn a_continuation_carries_its_checkpoint_and_has_its_own_key() {
        let id = ImportId::parse("0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d").unwrap();
        let key = ObjectKey::parse("uploads/a.csv", "uploads/").unwrap();
        let first = ImportJob::new(id, &key, ImportFormat::Csv);
        let next = first.continued(Checkpoint {
            chunk: 2,
            offset: 1024,
            line: 40,
            etag: "\"abc\"".into(),
            header: Some(vec!["sku".into(), "name".into()]),
            rows_written: 38,
            rows_rejected: 1,
            rejected_examples: vec!["line 7: bad".into()],
            stalls: 0,
        });
        assert_eq!(first.chunk(), 0);
        assert_eq!(next.chunk(), 2);
        assert_eq!(first.idempotency_key().as_str(), id.to_string());
        assert_eq!(next.idempotency_key().as_str(), format!("{id}#2"));
        let parsed: ImportJob = serde_json::from_str(&next.to_body()).unwrap();
        assert_eq!(parsed, next);
        // A checkpoint without stalls says nothing of them, so bodies stay as they were.
        assert!(!next.to_body().contains("stalls"));
        let stalled = next.resume.as_ref().unwrap().stalled();
        assert_eq!(
            (stalled.chunk, stalled.stalls, stalled.offset),
            (3, 1, 1024)
        );
        let parsed: ImportJob = serde_json::from_str(&next.continued(stalled).to_body()).unwrap();
        assert_eq!(parsed.resume.unwrap().stalls, 1);
    }

    #[test]
    fn the_canonical_body_ignores_spacing_and_key_order() {
        let spaced = r#"{ "format" : "csv", "objectKey": "uploads/a.csv",
            "importId": "0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d", "schemaVersion": 1 }"#;
        let compact = r#"{"schemaVersion":1,"importId":"0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d","objectKey":"uploads/a.csv","format":"csv"}"#;
        let canonical = |body: &str| serde_json::from_str::<ImportJob>(body).unwrap().to_body();
        assert_eq!(canonical(spaced), canonical(compact));
    }
}
