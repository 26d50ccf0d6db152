//! Parsing `POST /imports` and `POST /uploads` bodies into validated requests, field by field,
//! so each error names the field at fault.

use imports::{ImportFormat, ObjectKey};
use queue_worker::idempotency::PayloadHash;
use serde_json::{Map, Value};

use crate::problem::{self, PROBLEMS, Problem};

const OBJECT_KEY: &str = "objectKey";
const FORMAT: &str = "format";
const KNOWN_FIELDS: [&str; 2] = [OBJECT_KEY, FORMAT];

/// A valid request to import an uploaded object. `[To customize]`: the body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImport {
    /// The uploaded object, inside the upload prefix.
    pub object_key: ObjectKey,
    /// Its format: given, or implied by the key's extension.
    pub format: ImportFormat,
}

impl NewImport {
    /// Parses a body. The object key must lie under `upload_prefix`.
    pub fn parse(body: &[u8], upload_prefix: &str) -> Result<Self, Problem> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PROBLEMS.invalid_json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(problem::body_not_an_object());
        };
        if let Some(unknown) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(PROBLEMS.unknown_field(unknown, &KNOWN_FIELDS));
        }

        let raw_key =
            string_field(&fields, OBJECT_KEY)?.ok_or_else(|| PROBLEMS.missing_field(OBJECT_KEY))?;
        let object_key = ObjectKey::parse(raw_key, upload_prefix)
            .map_err(|e| problem::unsafe_object_key(OBJECT_KEY, format!("{OBJECT_KEY} {e}")))?;

        let format = match string_field(&fields, FORMAT)? {
            Some(name) => parse_format(name)?,
            None => ImportFormat::from_key(&object_key).ok_or_else(|| {
                PROBLEMS.missing_field(FORMAT).with_detail(format!(
                    "field {FORMAT} is required when {OBJECT_KEY} has no .csv, .ndjson or .jsonl extension"
                ))
            })?,
        };
        Ok(Self { object_key, format })
    }

    /// A hash of what the request asks for (not of its bytes: key order and white space do not
    /// make a different request).
    pub fn fingerprint(&self) -> PayloadHash {
        PayloadHash::of(format!("{}\n{}", self.format.as_str(), self.object_key).as_bytes())
    }
}

/// A valid request for an upload URL: the format of the file to upload (the key's extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewUpload {
    /// The file's format.
    pub format: ImportFormat,
}

impl NewUpload {
    /// Parses a `POST /uploads` body: `{"format": "csv"}` or `{"format": "ndjson"}`.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PROBLEMS.invalid_json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(problem::body_not_an_object());
        };
        if let Some(unknown) = fields.keys().find(|k| k.as_str() != FORMAT) {
            return Err(PROBLEMS.unknown_field(unknown, &[FORMAT]));
        }
        let name = string_field(&fields, FORMAT)?.ok_or_else(|| PROBLEMS.missing_field(FORMAT))?;
        Ok(Self {
            format: parse_format(name)?,
        })
    }
}

fn parse_format(name: &str) -> Result<ImportFormat, Problem> {
    ImportFormat::parse(name).ok_or_else(|| {
        let known: Vec<&str> = ImportFormat::ALL.iter().map(|f| f.as_str()).collect();
        PROBLEMS.invalid_value(
            FORMAT,
            format!("{FORMAT} must be one of {}", known.join(", ")),
        )
    })
}

/// The string value of `name`, `None` when absent; a non-string is a type error.
fn string_field<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Problem> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(PROBLEMS.wrong_type(name, "a string")),
    }
}
