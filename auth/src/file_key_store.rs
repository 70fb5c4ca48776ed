//! The embedded key store: one JSON file in the data directory, shared by the running server
//! and the `keys` CLI.
//!
//! The server checks the file on every publish and every revocation check, so keys added or
//! revoked by the CLI apply at once; it parses it again only when the file was replaced (its
//! inode, modification time or length changed), so a check costs one `stat`, not a parse of
//! every key, however many streams are live. Writers take an exclusive lock on a side file
//! and replace the JSON atomically (write, fsync, rename, fsync the directory): a kill at any
//! moment leaves either the old or the new file, never a torn one. Only key hashes are
//! stored.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::key_store::{
    Grant, InvalidStreamName, KeyStore, KeyStoreError, MAX_TOKEN_ID_LEN, REVOKED_TOKEN_RETENTION,
    Revocation, generate_key, hash_key, is_valid_token_id, validate_stream_name,
};

const FILE_NAME: &str = "keys.json";
const LOCK_NAME: &str = "keys.lock";
/// Format version written into the file.
const FORMAT_VERSION: u32 = 1;

/// One stream's entry in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Public stream name.
    pub stream: String,
    /// Hex SHA-256 of the key.
    pub key_hash: String,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// Only viewers with a credential may watch (see [`crate::viewer`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// Where the stream is pushed on to (`rtmp://` and `rtmps://` URLs with their keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push: Vec<String>,
    /// Whether its publishes are recorded; absent: as the server is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

/// A revoked publish token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token's `jti`.
    pub jti: String,
    /// RFC 3339 UTC revocation time; the entry goes after [`REVOKED_TOKEN_RETENTION`].
    pub revoked_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    streams: Vec<StoredKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revoked_tokens: Vec<RevokedToken>,
}

impl KeyFile {
    /// Adds `stream` with a fresh key; returns the key.
    fn issue(&mut self, stream: &str, private: bool) -> Result<String, FileKeyStoreError> {
        let key = generate_key()?;
        self.streams.push(StoredKey {
            stream: stream.to_owned(),
            key_hash: hash_key(&key),
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            private,
            push: Vec::new(),
            record: None,
        });
        Ok(key)
    }
}

/// Why a key-file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileKeyStoreError {
    /// Reading, writing or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a key file of a known version.
    #[error("{path}: not a readable key file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The stream name is not usable.
    #[error(transparent)]
    InvalidName(#[from] InvalidStreamName),
    /// The stream already has a key.
    #[error("stream {0:?} already has a key; revoke it first to issue a new one")]
    Exists(String),
    /// A token id that is empty or longer than [`MAX_TOKEN_ID_LEN`].
    #[error("a token id is 1 to {MAX_TOKEN_ID_LEN} bytes")]
    InvalidTokenId,
    /// No randomness for a new key.
    #[error(transparent)]
    Random(#[from] KeyStoreError),
}

/// The embedded key store.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    dir: Arc<Path>,
    /// The file as last parsed for lookups, shared by every clone of this handle.
    parsed: Arc<Mutex<Option<Parsed>>>,
}

/// Identifies one version of the key file. Writers replace the file by renaming a new one
/// over it, so every write gives a new inode as well as a new modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

/// The key file's hashes and revoked token ids, for lookups.
#[derive(Debug)]
struct Parsed {
    /// `None` when there was no file.
    stamp: Option<FileStamp>,
    lookups: Arc<Lookups>,
    /// When the file was last found to have this stamp.
    checked: Instant,
}

#[derive(Debug, Default)]
struct Lookups {
    /// Key hash to the stream's entry.
    streams: HashMap<String, StoredKey>,
    /// Revoked token ids.
    revoked_tokens: HashSet<String>,
}

impl FileKeyStore {
    /// Opens (creating the directory if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, FileKeyStoreError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        Ok(Self { dir: dir.into(), parsed: Arc::default() })
    }

    /// The key file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Creates a key for `stream`, private or not; returns the key, which is not stored and
    /// cannot be shown again.
    pub fn add(&self, stream: &str, private: bool) -> Result<String, FileKeyStoreError> {
        validate_stream_name(stream)?;
        self.update(|file| {
            if file.streams.iter().any(|s| s.stream == stream) {
                return Err(FileKeyStoreError::Exists(stream.to_owned()));
            }
            file.issue(stream, private)
        })
    }

    /// Sets whether `stream`'s publishes are recorded (`None`: as the server is configured);
    /// returns whether it has a key.
    pub fn set_record(
        &self,
        stream: &str,
        record: Option<bool>,
    ) -> Result<bool, FileKeyStoreError> {
        self.update(|file| {
            let entry = file.streams.iter_mut().find(|s| s.stream == stream);
            Ok(entry.map(|entry| entry.record = record).is_some())
        })
    }

    /// Sets where `stream` is pushed on to; returns whether it has a key.
    pub fn set_push(&self, stream: &str, push: &[String]) -> Result<bool, FileKeyStoreError> {
        self.update(|file| {
            let entry = file.streams.iter_mut().find(|s| s.stream == stream);
            Ok(entry.map(|entry| entry.push = push.to_vec()).is_some())
        })
    }

    /// Makes `stream` private or public; returns whether it has a key.
    pub fn set_private(&self, stream: &str, private: bool) -> Result<bool, FileKeyStoreError> {
        self.update(|file| {
            let entry = file.streams.iter_mut().find(|s| s.stream == stream);
            Ok(entry.map(|entry| entry.private = private).is_some())
        })
    }

    /// Removes the key of `stream`; returns whether there was one.
    pub fn revoke(&self, stream: &str) -> Result<bool, FileKeyStoreError> {
        self.update(|file| {
            let before = file.streams.len();
            file.streams.retain(|s| s.stream != stream);
            Ok(file.streams.len() != before)
        })
    }

    /// Revokes the publish token with id `jti`; returns whether it was not revoked before.
    /// Entries older than [`REVOKED_TOKEN_RETENTION`] are dropped on the way.
    pub fn revoke_token(&self, jti: &str) -> Result<bool, FileKeyStoreError> {
        if !is_valid_token_id(jti) {
            return Err(FileKeyStoreError::InvalidTokenId);
        }
        let now = SystemTime::now();
        self.update(|file| {
            file.revoked_tokens.retain(|token| {
                humantime::parse_rfc3339(&token.revoked_at).is_ok_and(|at| {
                    now.duration_since(at).unwrap_or_default() < REVOKED_TOKEN_RETENTION
                })
            });
            if file.revoked_tokens.iter().any(|token| token.jti == jti) {
                return Ok(false);
            }
            let revoked_at = humantime::format_rfc3339_seconds(now).to_string();
            file.revoked_tokens.push(RevokedToken { jti: jti.to_owned(), revoked_at });
            Ok(true)
        })
    }

    /// Every stream with a key.
    pub fn list(&self) -> Result<Vec<StoredKey>, FileKeyStoreError> {
        Ok(self.load()?.streams)
    }

    /// Creates `stream` with a fresh key if the store is empty; returns that key.
    pub fn seed_if_empty(&self, stream: &str) -> Result<Option<String>, FileKeyStoreError> {
        validate_stream_name(stream)?;
        self.update(|file| {
            if !file.streams.is_empty() {
                return Ok(None);
            }
            file.issue(stream, false).map(Some)
        })
    }

    /// Key hashes and revoked token ids, parsed again only if the file changed since the
    /// last call.
    fn current(&self) -> Result<Arc<Lookups>, FileKeyStoreError> {
        let path = self.path();
        let stamp = match fs::metadata(&path) {
            Ok(meta) => Some(FileStamp {
                inode: meta.ino(),
                modified: meta.modified().ok(),
                len: meta.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(io_error(&path, source)),
        };
        let checked = Instant::now();
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = parsed.as_mut()
            && parsed.stamp == stamp
        {
            parsed.checked = parsed.checked.max(checked);
            return Ok(Arc::clone(&parsed.lookups));
        }
        // Parsed under the lock: concurrent lookups after a change wait for one parse.
        let file = self.load()?;
        let lookups = Arc::new(Lookups {
            streams: file.streams.into_iter().map(|s| (s.key_hash.clone(), s)).collect(),
            revoked_tokens: file.revoked_tokens.into_iter().map(|t| t.jti).collect(),
        });
        *parsed = Some(Parsed { stamp, lookups: Arc::clone(&lookups), checked });
        Ok(lookups)
    }

    fn load(&self) -> Result<KeyFile, FileKeyStoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyFile::default()),
            Err(source) => return Err(io_error(&path, source)),
        };
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| {
            FileKeyStoreError::Corrupt { path: path.clone(), reason: e.to_string() }
        })?;
        if file.version != FORMAT_VERSION {
            return Err(FileKeyStoreError::Corrupt {
                path,
                reason: format!("format version {} (expected {FORMAT_VERSION})", file.version),
            });
        }
        Ok(file)
    }

    /// Runs `change` on the file under the writers' lock and saves it if `change` succeeds.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut KeyFile) -> Result<T, FileKeyStoreError>,
    ) -> Result<T, FileKeyStoreError> {
        let lock_path = self.dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| io_error(&lock_path, source))?;
        lock.lock().map_err(|source| io_error(&lock_path, source))?;
        let mut file = self.load()?;
        file.version = FORMAT_VERSION;
        let value = change(&mut file)?;
        self.save(&file)?;
        // A re-check after this handle's own change (the admin API's) reads the file again:
        // one answered from before it could undo it.
        *self.parsed.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // The lock is released when `lock` is dropped.
        Ok(value)
    }

    fn save(&self, file: &KeyFile) -> Result<(), FileKeyStoreError> {
        let path = self.path();
        let mut json = serde_json::to_vec_pretty(file).map_err(|e| FileKeyStoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        atomic_file::remove_leftovers(&self.dir, FILE_NAME);
        atomic_file::write(&path, &json).map_err(|source| io_error(&path, source))
    }
}

fn io_error(path: &Path, source: io::Error) -> FileKeyStoreError {
    FileKeyStoreError::Io { path: path.to_owned(), source }
}

#[async_trait]
impl KeyStore for FileKeyStore {
    async fn lookup(&self, key: &str) -> Result<Option<Grant>, KeyStoreError> {
        let hash = hash_key(key);
        Ok(grant(&*self.lookups().await?, &hash))
    }

    async fn token_revoked(&self, jti: &str) -> Result<bool, KeyStoreError> {
        Ok(self.lookups().await?.revoked_tokens.contains(jti))
    }

    async fn recheck_lookup(
        &self,
        key: &str,
        max_age: Duration,
    ) -> Result<Option<Grant>, KeyStoreError> {
        Ok(grant(&*self.lookups_within(max_age).await?, &hash_key(key)))
    }

    async fn recheck_token_revoked(
        &self,
        jti: &str,
        max_age: Duration,
    ) -> Result<bool, KeyStoreError> {
        Ok(self.lookups_within(max_age).await?.revoked_tokens.contains(jti))
    }
}

/// The grant of the key whose hash is `hash`.
fn grant(lookups: &Lookups, hash: &str) -> Option<Grant> {
    lookups.streams.get(hash).map(|entry| Grant {
        stream: entry.stream.clone(),
        owner: None,
        private: entry.private,
        push: entry.push.clone(),
        record: entry.record,
        revocation: Some(Revocation::Key),
    })
}

impl FileKeyStore {
    /// The lookups as parsed, if the file was last checked at most `max_age` ago: re-checks
    /// of live publishes share one look at the file (a system call on a blocking thread)
    /// instead of each taking one.
    /// Runs on the caller's thread: it never waits for the lock, which a parse on a blocking
    /// thread holds while it reads the file.
    fn checked_within(&self, max_age: Duration) -> Option<Arc<Lookups>> {
        let parsed = match self.parsed.try_lock() {
            Ok(parsed) => parsed,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let parsed = parsed.as_ref()?;
        (parsed.checked.elapsed() <= max_age).then(|| Arc::clone(&parsed.lookups))
    }

    /// The lookups as parsed if the file was checked at most `max_age` ago, else as
    /// [`Self::lookups`] finds them.
    async fn lookups_within(&self, max_age: Duration) -> Result<Arc<Lookups>, KeyStoreError> {
        match self.checked_within(max_age) {
            Some(lookups) => Ok(lookups),
            None => self.lookups().await,
        }
    }

    /// The current lookups, off the async runtime (a changed file is read and parsed).
    async fn lookups(&self) -> Result<Arc<Lookups>, KeyStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.current())
            .await
            .map_err(|e| KeyStoreError(e.to_string()))?
            .map_err(|e| KeyStoreError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn revoked_token_ids_are_kept_for_the_retention_then_dropped() {
        let dir = temp_dir("tokens");
        let store = FileKeyStore::open(&dir).unwrap();
        assert!(!store.token_revoked("t-1").await.unwrap());
        assert!(store.revoke_token("t-1").unwrap());
        assert!(!store.revoke_token("t-1").unwrap(), "revoked twice");
        // Another handle (the server) sees it at once.
        let server = FileKeyStore::open(&dir).unwrap();
        assert!(server.token_revoked("t-1").await.unwrap());
        assert!(matches!(store.revoke_token(""), Err(FileKeyStoreError::InvalidTokenId)));
        let long = "x".repeat(MAX_TOKEN_ID_LEN + 1);
        assert!(matches!(store.revoke_token(&long), Err(FileKeyStoreError::InvalidTokenId)));
        // An entry past the retention goes at the next write.
        store
            .update(|file| {
                file.revoked_tokens[0].revoked_at = "2020-01-01T00:00:00Z".into();
                Ok(())
            })
            .unwrap();
        assert!(store.revoke_token("t-2").unwrap());
        assert!(!server.token_revoked("t-1").await.unwrap());
        assert!(server.token_revoked("t-2").await.unwrap());
    }

    #[tokio::test]
    async fn add_lookup_list_revoke() {
        let dir = temp_dir("cycle");
        let store = FileKeyStore::open(&dir).unwrap();
        let key = store.add("cam", false).unwrap();
        let grant = |private| Grant {
            stream: "cam".into(),
            owner: None,
            private,
            push: Vec::new(),
            record: None,
            revocation: Some(Revocation::Key),
        };
        assert_eq!(store.lookup(&key).await.unwrap(), Some(grant(false)));
        // Made private, the same key grants a private stream; the field is on disk only then.
        assert!(!fs::read_to_string(store.path()).unwrap().contains("private"));
        assert!(store.set_private("cam", true).unwrap());
        assert_eq!(store.lookup(&key).await.unwrap(), Some(grant(true)));
        assert!(fs::read_to_string(store.path()).unwrap().contains("\"private\": true"));
        assert!(!store.set_private("nope", true).unwrap());
        assert!(store.set_private("cam", false).unwrap());
        let targets = vec!["rtmp://a.example/live2/k".to_owned()];
        assert!(store.set_push("cam", &targets).unwrap());
        assert_eq!(store.lookup(&key).await.unwrap().unwrap().push, targets);
        assert!(store.set_push("cam", &[]).unwrap());
        assert!(store.set_record("cam", Some(false)).unwrap());
        assert_eq!(store.lookup(&key).await.unwrap().unwrap().record, Some(false));
        assert!(store.set_record("cam", None).unwrap());
        assert!(!fs::read_to_string(store.path()).unwrap().contains("record"));
        assert_eq!(store.lookup("nope").await.unwrap(), None);
        assert!(matches!(store.add("cam", false), Err(FileKeyStoreError::Exists(_))));
        assert!(matches!(store.add("a/b", false), Err(FileKeyStoreError::InvalidName(_))));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key_hash, hash_key(&key));
        // Only the hash is on disk.
        let on_disk = fs::read_to_string(store.path()).unwrap();
        assert!(!on_disk.contains(&key));
        // A second handle (the CLI) sees and changes the same file.
        let cli = FileKeyStore::open(&dir).unwrap();
        assert!(cli.revoke("cam").unwrap());
        assert!(!cli.revoke("cam").unwrap());
        assert_eq!(store.lookup(&key).await.unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A re-check may be answered from the file as last read within its age; a publish's
    /// lookup, and a re-check past that age, read the file as it is.
    #[tokio::test]
    async fn rechecks_share_a_recent_read_and_lookups_never_do() {
        let dir = temp_dir("recheck");
        let store = FileKeyStore::open(&dir).unwrap();
        let cam = store.add("cam", false).unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(store.recheck_lookup(&cam, hour).await.unwrap().unwrap().stream, "cam");
        // Another handle (the CLI) revokes the key and a token.
        let cli = FileKeyStore::open(&dir).unwrap();
        assert!(cli.revoke("cam").unwrap());
        assert!(cli.revoke_token("t-1").unwrap());
        assert!(store.recheck_lookup(&cam, hour).await.unwrap().is_some(), "read just now");
        assert!(!store.recheck_token_revoked("t-1", hour).await.unwrap());
        assert_eq!(store.recheck_lookup(&cam, Duration::ZERO).await.unwrap(), None);
        // Had the re-check not looked, a lookup would have: it always does.
        assert!(store.token_revoked("t-1").await.unwrap());
        assert!(store.recheck_token_revoked("t-1", hour).await.unwrap());
        let door = cli.add("door", false).unwrap();
        assert_eq!(store.lookup(&door).await.unwrap().map(|g| g.stream), Some("door".into()));
        // This handle's own change (the admin API's) is seen by the next re-check at once.
        assert!(!store.recheck_lookup(&door, hour).await.unwrap().unwrap().private);
        assert!(store.set_private("door", true).unwrap());
        assert!(store.recheck_lookup(&door, hour).await.unwrap().unwrap().private);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn lookups_follow_every_change_of_the_file() {
        let dir = temp_dir("follow");
        let store = FileKeyStore::open(&dir).unwrap();
        assert_eq!(store.lookup("anything").await.unwrap(), None);
        let cam = store.add("cam", false).unwrap();
        assert!(store.lookup(&cam).await.unwrap().is_some());
        // Parsed once, answered again from what was parsed.
        assert!(store.lookup(&cam).await.unwrap().is_some());
        let other = FileKeyStore::open(&dir).unwrap();
        let door = other.add("door", false).unwrap();
        assert_eq!(store.lookup(&door).await.unwrap().map(|g| g.stream), Some("door".into()));
        // An operator editing the file in place (same inode) is seen too.
        let edited = fs::read_to_string(store.path()).unwrap().replace("\"cam\"", "\"yard\"");
        fs::write(store.path(), edited).unwrap();
        assert_eq!(store.lookup(&cam).await.unwrap().map(|g| g.stream), Some("yard".into()));
        // A file gone is an empty store; a corrupt one is an error, never a stale answer.
        fs::remove_file(store.path()).unwrap();
        assert_eq!(store.lookup(&cam).await.unwrap(), None);
        fs::write(store.path(), "{").unwrap();
        assert!(store.lookup(&cam).await.is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seeds_only_an_empty_store() {
        let dir = temp_dir("seed");
        let store = FileKeyStore::open(&dir).unwrap();
        assert!(store.seed_if_empty("demo").unwrap().is_some());
        assert!(store.seed_if_empty("demo").unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = temp_dir("concurrent");
        let store = FileKeyStore::open(&dir).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        store.add(&format!("s{t}-{i}"), false).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.list().unwrap().len(), 80);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = temp_dir("corrupt");
        let store = FileKeyStore::open(&dir).unwrap();
        fs::write(store.path(), b"{\"version\":1,\"streams\":[").unwrap();
        assert!(matches!(store.list(), Err(FileKeyStoreError::Corrupt { .. })));
        assert!(matches!(store.seed_if_empty("demo"), Err(FileKeyStoreError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
