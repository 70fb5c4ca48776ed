//! Publish authorisation: which secret stream key publishes which public stream name.
//!
//! Keys are random tokens of [`KEY_BYTES`] bytes, so a plain SHA-256 is a sufficient hash
//! (no password-style slow hash is needed for 192 random bits); stores keep and look up only
//! that hash. A key never appears in a log: [`redact`] gives a short hash prefix to log
//! instead.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Random bytes in a generated key: 192 bits, 32 URL-safe characters.
pub const KEY_BYTES: usize = 24;
/// Longest public stream name; names appear in URLs and logs.
pub const MAX_STREAM_NAME_LEN: usize = 64;

/// A successful key lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The public stream name the key publishes.
    pub stream: String,
    /// The owner (the platform's user id), when the store knows it.
    pub owner: Option<String>,
    /// Only viewers with a credential may watch (see [`crate::viewer`]).
    pub private: bool,
    /// Where the stream is pushed on to besides the server's own targets: `rtmp://` or
    /// `rtmps://` URLs, each holding the target's key (secret).
    pub push: Vec<String>,
    /// Whether its publishes are recorded; `None`: as the server is configured.
    pub record: Option<bool>,
    /// How a live publish with this grant is re-checked, so a revocation ends it: `None`
    /// when nothing can revoke it (hook-only mode; tokens without an id).
    pub revocation: Option<Revocation>,
}

/// What a live publish's re-check asks the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Whether the stored key still grants the stream.
    Key,
    /// Whether the publish token with this id (`jti`) was revoked.
    Token(String),
}

/// A key store that could not answer.
#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {0}")]
pub struct KeyStoreError(pub String);

/// Where stream keys live (an embedded file by default; a database in production).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The grant of `key`, or `None` when the key is unknown or revoked.
    async fn lookup(&self, key: &str) -> Result<Option<Grant>, KeyStoreError>;

    /// Whether the publish token with id `jti` was revoked.
    async fn token_revoked(&self, jti: &str) -> Result<bool, KeyStoreError>;

    /// [`KeyStore::lookup`] for a live publish's re-check, which may be answered from what
    /// the store read at most `max_age` ago (a new publish always sees the store as it is).
    /// By default, a lookup.
    async fn recheck_lookup(
        &self,
        key: &str,
        max_age: Duration,
    ) -> Result<Option<Grant>, KeyStoreError> {
        let _ = max_age;
        self.lookup(key).await
    }

    /// [`KeyStore::token_revoked`] for a live publish's re-check, likewise.
    async fn recheck_token_revoked(
        &self,
        jti: &str,
        max_age: Duration,
    ) -> Result<bool, KeyStoreError> {
        let _ = max_age;
        self.token_revoked(jti).await
    }
}

/// Longest token id (`jti`) kept in the deny list; ids are UUIDs (AuthX) or similar.
pub const MAX_TOKEN_ID_LEN: usize = 128;

/// Whether `jti` can be revoked (and so taken as a publish token's id): 1 to
/// [`MAX_TOKEN_ID_LEN`] bytes.
pub fn is_valid_token_id(jti: &str) -> bool {
    (1..=MAX_TOKEN_ID_LEN).contains(&jti.len())
}
/// How long a revoked token id is kept: longer than any publish token should live (the docs
/// ask for minutes). Older entries are dropped.
pub const REVOKED_TOKEN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl std::fmt::Debug for dyn KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore")
    }
}

/// The hex SHA-256 of a key: what stores keep and index.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    hex
}

/// What may be logged about a key: the first 8 hex digits of its hash.
pub fn redact(key: &str) -> String {
    let mut hash = hash_key(key);
    hash.truncate(8);
    format!("sha256:{hash}…")
}

/// A fresh random key (URL-safe base64, no padding).
pub fn generate_key() -> Result<String, KeyStoreError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| KeyStoreError(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A stream name that cannot be used in URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid stream name {0:?}: use 1 to {MAX_STREAM_NAME_LEN} of the characters A-Z a-z 0-9 _ - ."
)]
pub struct InvalidStreamName(pub String);

/// Checks that `name` is usable as a path segment as is.
pub fn validate_stream_name(name: &str) -> Result<(), InvalidStreamName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(InvalidStreamName(name.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(redact("abc"), "sha256:ba7816bf…");
    }

    #[test]
    fn generated_keys_are_long_url_safe_and_distinct() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn stream_names() {
        for good in ["demo", "a", "cam-1.main_2", &"x".repeat(MAX_STREAM_NAME_LEN)] {
            assert!(validate_stream_name(good).is_ok(), "{good}");
        }
        for bad in
            ["", ".hidden", "..", "a/b", "a b", "é", "a?b", &"x".repeat(MAX_STREAM_NAME_LEN + 1)]
        {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
    }
}
