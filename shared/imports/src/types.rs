use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use uuid::Uuid;

use queue_worker::accept::id_for_key;
use queue_worker::idempotency::IdempotencyKey;

/// The id of an import: a UUID. Server-generated ids are UUIDv7, so they sort by creation time;
/// ids derived from a client's `Idempotency-Key` are stable for that client and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImportId(Uuid);

/// A string that is not an import id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("import id must be a UUID such as 0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d")]
pub struct InvalidImportId;

impl ImportId {
    /// A new, time-sortable id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id for `key` sent by `caller`: the same principal and key always give the same id,
    /// whichever session sends it, and different principals cannot collide by picking the same
    /// key.
    pub fn for_idempotency_key(caller: &Principal, key: &IdempotencyKey) -> Self {
        Self(id_for_key(caller.as_str(), key))
    }

    /// Parses the canonical hyphenated form.
    pub fn parse(text: &str) -> Result<Self, InvalidImportId> {
        if text.len() != 36 {
            return Err(InvalidImportId);
        }
        Uuid::try_parse(text).map(Self).map_err(|_| InvalidImportId)
    }

    /// The id as an idempotency key for the processor's guard.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::parse(self.to_string()).expect("a UUID is a valid idempotency key")
    }
}

impl FromStr for ImportId {
    type Err = InvalidImportId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for ImportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl Serialize for ImportId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImportId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Who calls the API, reduced to what stays the same across its credentials: the scope of its
/// idempotency keys and the owner of the imports it creates.
///
/// A caller retries with fresh credentials (a refreshed session, another replica or task), so
/// a session is not an identity. The canonical forms, one per kind of caller:
///
/// | caller | principal |
/// |---|---|
/// | an assumed role, `arn:P:sts::A:assumed-role/ROLE/SESSION` | the role: `arn:P:iam::A:role/ROLE` |
/// | any other ARN (an IAM user, a federated user, an account's root) | the ARN as given |
/// | a JWT | `jwt:["ISSUER","SUBJECT"]` |
/// | no authenticated caller at all | `anonymous` |
///
/// An assumed-role ARN carries the role's name but not its path, so a role is its account and
/// name. A federated user (`sts:GetFederationToken`) is its ARN: its name is the identity, and
/// there is no role to fall back on. The forms start with `arn:`, `jwt:` and `anonymous`, so a
/// caller of one kind can never take the principal of another.
///
/// Collapsing sessions means everyone who assumes one role is one caller: a role shared by
/// people who must not see each other's imports (an IAM Identity Center permission set, a
/// Cognito identity pool's role) needs its own mapping here. `[To customize]`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

/// Why an authorizer's identity is not a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPrincipal {
    /// The caller's ARN is not an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`).
    #[error("the caller {0:?} is not an ARN")]
    NotAnArn(String),
    /// An assumed-role ARN without an account, a role or a session.
    #[error("the assumed-role ARN {0:?} does not name an account, a role and a session")]
    MalformedAssumedRole(String),
    /// A JWT without an issuer or a subject.
    #[error("a JWT caller needs both an iss and a sub claim")]
    IncompleteJwt,
}

impl Principal {
    const ANONYMOUS: &str = "anonymous";

    /// The principal of an IAM caller's ARN (API Gateway's `userArn`): an assumed role's role,
    /// any other ARN as it is.
    pub fn from_arn(arn: &str) -> Result<Self, InvalidPrincipal> {
        let not_an_arn = || InvalidPrincipal::NotAnArn(arn.to_owned());
        let mut fields = arn.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(_region),
            Some(account),
            Some(resource),
        ) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        )
        else {
            return Err(not_an_arn());
        };
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(not_an_arn());
        }
        let Some(role_and_session) = resource
            .strip_prefix("assumed-role/")
            .filter(|_| service == "sts")
        else {
            return Ok(Self(arn.to_owned()));
        };
        match role_and_session.split_once('/') {
            Some((role, session))
                if !account.is_empty()
                    && !role.is_empty()
                    && !session.is_empty()
                    && !session.contains('/') =>
            {
                Ok(Self(format!("arn:{partition}:iam::{account}:role/{role}")))
            }
            _ => Err(InvalidPrincipal::MalformedAssumedRole(arn.to_owned())),
        }
    }

    /// The principal of a JWT: its issuer and subject (a subject is unique only per issuer).
    pub fn from_jwt(issuer: &str, subject: &str) -> Result<Self, InvalidPrincipal> {
        if issuer.is_empty() || subject.is_empty() {
            return Err(InvalidPrincipal::IncompleteJwt);
        }
        // A JSON array keeps the pair unambiguous whatever characters either holds.
        Ok(Self(format!(
            "jwt:{}",
            serde_json::json!([issuer, subject])
        )))
    }

    /// The one principal of every unauthenticated caller (a local run, an API without an
    /// authorizer): they share their keys and imports, and never those of an authenticated
    /// caller.
    pub fn anonymous() -> Self {
        Self(Self::ANONYMOUS.to_owned())
    }

    /// Wraps a principal read back from storage written by this code (canonical then).
    pub fn from_stored(principal: impl Into<String>) -> Self {
        Self(principal.into())
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The folder under the upload prefix that holds this principal's uploads: 32 hex digits
    /// derived from the principal, the same for every session of it, opaque to everyone else.
    /// The API issues upload URLs only inside it and accepts only object keys inside it.
    pub fn upload_folder(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"upload-folder\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The S3 key of an uploaded file, checked to be safe: inside the upload prefix, no `..`
/// segment, no control characters and no invisible format characters, at most 1024 bytes (S3's
/// limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

/// Why a string is not a safe object key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidObjectKey {
    /// The key is empty.
    #[error("must not be empty")]
    Empty,
    /// The key is longer than S3 allows.
    #[error("must be at most {max} bytes long, not {len}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key contains a control character.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// The key contains an invisible format character (general category Cf): a zero-width
    /// space or joiner, a byte order mark, a soft hyphen, a bidirectional control, a tag...
    /// Such a key shows the same as another key, or reordered, wherever people read it.
    #[error(
        "must not contain invisible format characters such as zero-width spaces or \
         bidirectional controls (found U+{:04X})",
        u32::from(*.found)
    )]
    FormatCharacter {
        /// The first such character in the key.
        found: char,
    },
    /// The key has a `.` or `..` segment, or an empty one.
    #[error("must not contain '.', '..' or empty path segments")]
    Traversal,
    /// The key is outside the upload prefix.
    #[error("must start with {prefix:?}")]
    OutsidePrefix {
        /// The required prefix.
        prefix: String,
    },
}

impl ObjectKey {
    /// S3's limit on key length, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates `key` as an object under `prefix`.
    pub fn parse(key: &str, prefix: &str) -> Result<Self, InvalidObjectKey> {
        if key.is_empty() {
            return Err(InvalidObjectKey::Empty);
        }
        if key.len() > Self::MAX_LEN {
            return Err(InvalidObjectKey::TooLong {
                len: key.len(),
                max: Self::MAX_LEN,
            });
        }
        if key.chars().any(char::is_control) {
            return Err(InvalidObjectKey::ControlCharacter);
        }
        if let Some(found) = key
            .chars()
            .find(|c| c.general_category() == GeneralCategory::Format)
        {
            return Err(InvalidObjectKey::FormatCharacter { found });
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(InvalidObjectKey::Traversal);
        }
        if !key.starts_with(prefix) || key.len() == prefix.len() {
            return Err(InvalidObjectKey::OutsidePrefix {
                prefix: prefix.to_owned(),
            });
        }
        Ok(Self(key.to_owned()))
    }

    /// Wraps a key read back from storage written by this code (already validated then).
    pub fn from_stored(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file formats an import accepts. `[To customize]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
}

impl ImportFormat {
    /// Every format, for error messages.
    pub const ALL: [Self; 2] = [Self::Csv, Self::Ndjson];

    /// The format's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The format an object key's extension implies, if any.
    pub fn from_key(key: &ObjectKey) -> Option<Self> {
        let extension = key.as_str().rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_sort_by_creation() {
        let first = ImportId::generate();
        let second = ImportId::generate();
        assert!(first < second);
        assert_eq!(ImportId::parse(&first.to_string()), Ok(first));
    }

    #[test]
    fn key_derived_ids_are_stable_per_caller() {
        let key = IdempotencyKey::parse("order-42").unwrap();
        let caller = |arn: &str| Principal::from_arn(arn).unwrap();
        let a = ImportId::for_idempotency_key(&caller("arn:aws:iam::1:user/a"), &key);
        assert_eq!(
            a,
            ImportId::for_idempotency_key(&caller("arn:aws:iam::1:user/a"), &key)
        );
        assert_ne!(
            a,
            ImportId::for_idempotency_key(&caller("arn:aws:iam::1:user/b"), &key)
        );
    }

    #[test]
    fn a_key_derived_id_is_the_one_issued_before() {
        // Ids already issued must never change: this value was computed by the derivation as
        // first released (SHA-256 of principal, NUL, key; its first 16 bytes as a UUIDv8).
        let key = IdempotencyKey::parse("order-42").unwrap();
        let caller = Principal::from_arn("arn:aws:iam::123456789012:role/importer").unwrap();
        assert_eq!(
            ImportId::for_idempotency_key(&caller, &key).to_string(),
            "670d5668-73af-8a2f-8235-a074cba0c953"
        );
    }

    #[test]
    fn key_derived_ids_are_the_same_for_two_sessions_of_a_role() {
        let key = IdempotencyKey::parse("order-42").unwrap();
        let session = |name: &str| {
            let arn = format!("arn:aws:sts::123456789012:assumed-role/importer/{name}");
            ImportId::for_idempotency_key(&Principal::from_arn(&arn).unwrap(), &key)
        };
        assert_eq!(session("replica-1"), session("replica-2"));
    }

    fn principal(arn: &str) -> String {
        Principal::from_arn(arn).unwrap().as_str().to_owned()
    }

    #[test]
    fn a_principal_has_one_upload_folder_for_all_its_sessions_and_its_own() {
        let role = |session: &str| {
            Principal::from_arn(&format!(
                "arn:aws:sts::123456789012:assumed-role/importer/{session}"
            ))
            .unwrap()
        };
        let folder = role("a").upload_folder();
        assert_eq!(folder.len(), 32);
        assert!(folder.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(role("b").upload_folder(), folder);
        let other = Principal::from_arn("arn:aws:iam::123456789012:role/other").unwrap();
        assert_ne!(other.upload_folder(), folder);
        assert_ne!(Principal::anonymous().upload_folder(), folder);
    }

    #[test]
    fn an_assumed_role_is_its_role_whatever_the_session() {
        let first = principal("arn:aws:sts::123456789012:assumed-role/importer/i-0abc");
        let refreshed = principal("arn:aws:sts::123456789012:assumed-role/importer/i-0def");
        assert_eq!(first, "arn:aws:iam::123456789012:role/importer");
        assert_eq!(refreshed, first);
    }

    #[test]
    fn two_roles_of_one_account_are_two_principals() {
        assert_ne!(
            principal("arn:aws:sts::123456789012:assumed-role/importer/s"),
            principal("arn:aws:sts::123456789012:assumed-role/reporter/s")
        );
    }

    #[test]
    fn one_role_name_in_two_accounts_is_two_principals() {
        assert_ne!(
            principal("arn:aws:sts::111111111111:assumed-role/importer/s"),
            principal("arn:aws:sts::222222222222:assumed-role/importer/s")
        );
    }

    #[test]
    fn an_assumed_role_keeps_its_partition() {
        assert_eq!(
            principal("arn:aws-us-gov:sts::123456789012:assumed-role/importer/s"),
            "arn:aws-us-gov:iam::123456789012:role/importer"
        );
    }

    #[test]
    fn an_iam_user_is_its_arn() {
        for arn in [
            "arn:aws:iam::123456789012:user/importer",
            "arn:aws:iam::123456789012:user/division/importer",
        ] {
            assert_eq!(principal(arn), arn);
        }
    }

    #[test]
    fn a_federated_user_and_an_accounts_root_are_their_arns() {
        let federated = "arn:aws:sts::123456789012:federated-user/alice";
        assert_eq!(principal(federated), federated);
        assert_ne!(
            principal(federated),
            principal("arn:aws:sts::123456789012:federated-user/bob")
        );
        let root = "arn:aws:iam::123456789012:root";
        assert_eq!(principal(root), root);
        assert_ne!(
            principal(root),
            principal("arn:aws:iam::123456789012:user/root")
        );
    }

    #[test]
    fn a_malformed_arn_is_not_a_principal() {
        for text in [
            "",
            "anonymous",
            "jwt:[\"a\",\"b\"]",
            "arn:aws",
            "arn::iam::1:user/a",
        ] {
            assert_eq!(
                Principal::from_arn(text),
                Err(InvalidPrincipal::NotAnArn(text.to_owned())),
                "{text:?}"
            );
        }
        for text in [
            "arn:aws:sts::123456789012:assumed-role/importer",
            "arn:aws:sts::123456789012:assumed-role//session",
            "arn:aws:sts::123456789012:assumed-role/importer/",
            "arn:aws:sts:::assumed-role/importer/session",
        ] {
            assert_eq!(
                Principal::from_arn(text),
                Err(InvalidPrincipal::MalformedAssumedRole(text.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_jwt_is_its_issuer_and_subject() {
        let jwt = |iss: &str, sub: &str| Principal::from_jwt(iss, sub).unwrap();
        let alice = jwt("https://issuer.example", "alice");
        assert_eq!(alice.as_str(), r#"jwt:["https://issuer.example","alice"]"#);
        assert_eq!(alice, jwt("https://issuer.example", "alice"));
        assert_ne!(alice, jwt("https://other.example", "alice"));
        assert_ne!(alice, jwt("https://issuer.example", "bob"));
        assert_ne!(jwt("a\",\"b", "c"), jwt("a", "b\",\"c"));
        assert_eq!(
            Principal::from_jwt("", "alice"),
            Err(InvalidPrincipal::IncompleteJwt)
        );
        assert_eq!(
            Principal::from_jwt("https://issuer.example", ""),
            Err(InvalidPrincipal::IncompleteJwt)
        );
    }

    #[test]
    fn no_authenticated_caller_takes_the_anonymous_principal() {
        let anonymous = Principal::anonymous();
        assert_ne!(
            Principal::from_jwt("anonymous", "anonymous").unwrap(),
            anonymous
        );
        assert!(Principal::from_arn("anonymous").is_err());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for text in [
            "",
            "42",
            "0192f0c47d2e7c3a9b1e2f4d5a6b7c8d",
            "{0192f0c4-7d2e-7c3a-9b1e-2f4d5a6b7c8d}",
        ] {
            assert_eq!(ImportId::parse(text), Err(InvalidImportId), "{text}");
        }
    }

    #[test]
    fn object_keys_must_be_safe_and_inside_the_prefix() {
        let parse = |key: &str| ObjectKey::parse(key, "uploads/");
        assert!(parse("uploads/2026/orders.csv").is_ok());
        assert_eq!(parse(""), Err(InvalidObjectKey::Empty));
        assert_eq!(
            parse("uploads/../secrets.csv"),
            Err(InvalidObjectKey::Traversal)
        );
        assert_eq!(parse("uploads//a.csv"), Err(InvalidObjectKey::Traversal));
        assert_eq!(
            parse("uploads/a\u{0}.csv"),
            Err(InvalidObjectKey::ControlCharacter)
        );
        assert!(matches!(
            parse("other/a.csv"),
            Err(InvalidObjectKey::OutsidePrefix { .. })
        ));
        assert_eq!(parse("uploads/"), Err(InvalidObjectKey::Traversal));
        let long = format!("uploads/{}", "a".repeat(1100));
        assert!(matches!(
            parse(&long),
            Err(InvalidObjectKey::TooLong { max: 1024, .. })
        ));
    }

    #[test]
    fn object_keys_with_an_invisible_format_character_are_rejected() {
        let format_characters = [
            ('\u{00AD}', "SOFT HYPHEN"),
            ('\u{0600}', "ARABIC NUMBER SIGN"),
            ('\u{061C}', "ARABIC LETTER MARK"),
            ('\u{06DD}', "ARABIC END OF AYAH"),
            ('\u{070F}', "SYRIAC ABBREVIATION MARK"),
            ('\u{180E}', "MONGOLIAN VOWEL SEPARATOR"),
            ('\u{200B}', "ZERO WIDTH SPACE"),
            ('\u{200C}', "ZERO WIDTH NON-JOINER"),
            ('\u{200D}', "ZERO WIDTH JOINER"),
            ('\u{200E}', "LEFT-TO-RIGHT MARK"),
            ('\u{200F}', "RIGHT-TO-LEFT MARK"),
            ('\u{202A}', "LEFT-TO-RIGHT EMBEDDING"),
            ('\u{202B}', "RIGHT-TO-LEFT EMBEDDING"),
            ('\u{202C}', "POP DIRECTIONAL FORMATTING"),
            ('\u{202D}', "LEFT-TO-RIGHT OVERRIDE"),
            ('\u{202E}', "RIGHT-TO-LEFT OVERRIDE"),
            ('\u{2060}', "WORD JOINER"),
            ('\u{2061}', "FUNCTION APPLICATION"),
            ('\u{2064}', "INVISIBLE PLUS"),
            ('\u{2066}', "LEFT-TO-RIGHT ISOLATE"),
            ('\u{2067}', "RIGHT-TO-LEFT ISOLATE"),
            ('\u{2068}', "FIRST STRONG ISOLATE"),
            ('\u{2069}', "POP DIRECTIONAL ISOLATE"),
            ('\u{206A}', "INHIBIT SYMMETRIC SWAPPING"),
            ('\u{206F}', "NOMINAL DIGIT SHAPES"),
            ('\u{FEFF}', "ZERO WIDTH NO-BREAK SPACE (byte order mark)"),
            ('\u{FFF9}', "INTERLINEAR ANNOTATION ANCHOR"),
            ('\u{FFFA}', "INTERLINEAR ANNOTATION SEPARATOR"),
            ('\u{FFFB}', "INTERLINEAR ANNOTATION TERMINATOR"),
            ('\u{110BD}', "KAITHI NUMBER SIGN"),
            ('\u{1BCA0}', "SHORTHAND FORMAT LETTER OVERLAP"),
            ('\u{1D173}', "MUSICAL SYMBOL BEGIN BEAM"),
            ('\u{E0001}', "LANGUAGE TAG"),
            ('\u{E0020}', "TAG SPACE"),
            ('\u{E007F}', "CANCEL TAG"),
        ];
        for (found, name) in format_characters {
            for key in [
                format!("uploads/{found}orders.csv"),
                format!("uploads/orders{found}.csv"),
                format!("uploads/2026{found}/orders.csv"),
            ] {
                assert_eq!(
                    ObjectKey::parse(&key, "uploads/"),
                    Err(InvalidObjectKey::FormatCharacter { found }),
                    "U+{:04X} {name} in {key:?}",
                    u32::from(found)
                );
            }
        }
        let error = ObjectKey::parse("uploads/a\u{200B}.csv", "uploads/").unwrap_err();
        assert_eq!(
            error.to_string(),
            "must not contain invisible format characters such as zero-width spaces or \
             bidirectional controls (found U+200B)"
        );
    }

    #[test]
    fn object_keys_in_any_script_are_accepted() {
        for key in [
            "uploads/café.csv",
            "uploads/日本/注文.csv",
            "uploads/заказы.csv",
            "uploads/طلبات.csv",
            "uploads/📦-orders.csv",
            "uploads/🇫🇷-commandes.csv",
            "uploads/naïve résumé – 2026.csv",
            "uploads/a b+c=d,e;f@g.csv",
        ] {
            assert_eq!(
                ObjectKey::parse(key, "uploads/").map(|k| k.as_str().to_owned()),
                Ok(key.to_owned()),
                "{key}"
            );
        }
    }

    #[test]
    fn format_follows_the_extension() {
        let key = |k: &str| ObjectKey::parse(k, "uploads/").unwrap();
        assert_eq!(
            ImportFormat::from_key(&key("uploads/a.CSV")),
            Some(ImportFormat::Csv)
        );
        assert_eq!(
            ImportFormat::from_key(&key("uploads/a.jsonl")),
            Some(ImportFormat::Ndjson)
        );
        assert_eq!(ImportFormat::from_key(&key("uploads/a.xlsx")), None);
    }
}
