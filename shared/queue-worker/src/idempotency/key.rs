//! Value types of the guard: the key, the payload hash and the fencing token.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The identity of a unit of work, set by the producer (never the SQS message id).
///
/// Valid keys are 1 to [`IdempotencyKey::MAX_LEN`] bytes of text without control characters,
/// which keeps them safe as a DynamoDB partition key and in logs.
///
/// The three value types share their text (`Arc<str>`): a claim copies them into the request,
/// the stored record and the returned claim, and cloning must not allocate on that path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<str>);

/// Why a string is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// The key is empty.
    #[error("idempotency key must not be empty")]
    Empty,
    /// The key is longer than the limit.
    #[error("idempotency key is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key contains a control character.
    #[error("idempotency key must not contain control characters")]
    ControlCharacter,
}

impl IdempotencyKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates `value` as a key.
    pub fn parse(value: impl AsRef<str>) -> Result<Self, InvalidKey> {
        let value = value.as_ref();
        if value.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if value.len() > Self::MAX_LEN {
            return Err(InvalidKey::TooLong {
                len: value.len(),
                max: Self::MAX_LEN,
            });
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidKey::ControlCharacter);
        }
        // One allocation, straight into the shared text.
        Ok(Self(Arc::from(value)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidKey;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = InvalidKey;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl FromStr for IdempotencyKey {
    type Err = InvalidKey;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

/// Lets maps keyed by [`IdempotencyKey`] be searched with a `&str` (hashing and equality are
/// those of the text).
impl std::borrow::Borrow<str> for IdempotencyKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a payload, hex-encoded. Detects a key reused for a different payload without
/// storing the payload itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PayloadHash(Arc<str>);

impl PayloadHash {
    /// Hashes `payload`.
    pub fn of(payload: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(payload);
        // On the hot path of every claim: a table lookup into a stack buffer, not a formatter
        // call per byte.
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        Self(Arc::from(
            std::str::from_utf8(&hex).expect("hex digits are ASCII"),
        ))
    }

    /// Wraps a hash read back from a store.
    pub fn from_stored(hex: impl Into<String>) -> Self {
        Self(hex.into().into())
    }

    /// The hash as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unique token minted for every claim. Completing or releasing requires the token of the
/// current claim, which fences off workers whose lease has run out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FencingToken(Arc<str>);

impl FencingToken {
    /// Mints a new token (a UUIDv7: unique, and sortable by creation time when debugging).
    pub fn generate() -> Self {
        Self::generate_at(std::time::SystemTime::now())
    }

    /// Mints a new token stamped with `now`, a time the caller already read (one clock read
    /// fewer per claim). Uniqueness comes from the token's 74 random bits.
    pub fn generate_at(now: std::time::SystemTime) -> Self {
        let since_epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let timestamp = uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
        );
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v7(timestamp)
            .hyphenated()
            .encode_lower(&mut text);
        Self(Arc::from(&*text))
    }

    /// Wraps a token read back from a store.
    pub fn from_stored(token: impl Into<String>) -> Self {
        Self(token.into().into())
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_is_rejected() {
        assert_eq!(IdempotencyKey::parse(""), Err(InvalidKey::Empty));
    }

    #[test]
    fn oversize_key_is_rejected_with_its_length() {
        let err = IdempotencyKey::parse("k".repeat(256)).unwrap_err();
        assert_eq!(err, InvalidKey::TooLong { len: 256, max: 255 });
        assert_eq!(
            err.to_string(),
            "idempotency key is 256 bytes long; the limit is 255"
        );
    }

    #[test]
    fn key_at_the_limit_is_accepted() {
        let key = IdempotencyKey::parse("k".repeat(255)).unwrap();
        assert_eq!(key.as_str().len(), 255);
    }

    #[test]
    fn key_with_control_character_is_rejected() {
        assert_eq!(
            "imp\n01".parse::<IdempotencyKey>(),
            Err(InvalidKey::ControlCharacter)
        );
    }

    #[test]
    fn payload_hash_is_sha256_hex() {
        assert_eq!(
            PayloadHash::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fencing_tokens_are_unique() {
        assert_ne!(FencingToken::generate(), FencingToken::generate());
    }
}
