//! The job message the producer sends and the processor receives.

use serde::{Deserialize, Serialize};

use super::{ImportFormat, ImportId, ObjectKey};

/// Version of the job body's schema. Bump it when the body changes incompatibly; the processor
/// parks jobs of a version it does not know instead of guessing.
pub const JOB_SCHEMA_VERSION: u32 = 1;

/// Message attributes the producer sets on every job, so consumers and operators can route and
/// inspect a job without parsing its body.
pub mod job_attributes {
    /// The import id.
    pub const IMPORT_ID: &str = "import_id";
    /// The body's schema version.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The trace context of the request that created the job (X-Ray header format), if any.
    pub const TRACE_CONTEXT: &str = "trace_context";
}

/// A queued import: which object to import, in which format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportJob {
    /// Always [`JOB_SCHEMA_VERSION`] when sent by this code.
    pub schema_version: u32,
    /// The import this job belongs to; also the idempotency key of its processing.
    pub import_id: ImportId,
    /// The uploaded object. The processor validates it against its own upload prefix with
    /// [`ObjectKey::parse`] before touching S3: a queue is not a trust boundary.
    pub object_key: String,
    /// The object's format.
    pub format: ImportFormat,
}

impl ImportJob {
    /// The job for an import.
    pub fn new(import_id: ImportId, object_key: &ObjectKey, format: ImportFormat) -> Self {
        Self {
            schema_version: JOB_SCHEMA_VERSION,
            import_id,
            object_key: object_key.as_str().to_owned(),
            format,
        }
    }

    /// The JSON body of the job's message.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
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
}
