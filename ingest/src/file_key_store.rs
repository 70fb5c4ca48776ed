//! The embedded key store: one JSON file in the data directory, shared by the running server
//! and the `keys` CLI.
//!
//! The server reads the file on every publish, so keys added or revoked by the CLI apply at
//! once. Writers take an exclusive lock on a side file and replace the JSON atomically
//! (write, fsync, rename, fsync the directory): a kill at any moment leaves either the old
//! or the new file, never a torn one. Only key hashes are stored.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::key_store::{
    Grant, InvalidStreamName, KeyStore, KeyStoreError, generate_key, hash_key, validate_stream_name,
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
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    streams: Vec<StoredKey>,
}

impl KeyFile {
    /// Adds `stream` with a fresh key; returns the key.
    fn issue(&mut self, stream: &str) -> Result<String, FileKeyStoreError> {
        let key = generate_key()?;
        self.streams.push(StoredKey {
            stream: stream.to_owned(),
            key_hash: hash_key(&key),
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
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
    /// No randomness for a new key.
    #[error(transparent)]
    Random(#[from] KeyStoreError),
}

/// The embedded key store.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    dir: Arc<Path>,
}

impl FileKeyStore {
    /// Opens (creating the directory if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, FileKeyStoreError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        Ok(Self { dir: dir.into() })
    }

    /// The key file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Creates a key for `stream`; returns the key, which is not stored and cannot be shown
    /// again.
    pub fn add(&self, stream: &str) -> Result<String, FileKeyStoreError> {
        validate_stream_name(stream)?;
        self.update(|file| {
            if file.streams.iter().any(|s| s.stream == stream) {
                return Err(FileKeyStoreError::Exists(stream.to_owned()));
            }
            file.issue(stream)
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
            file.issue(stream).map(Some)
        })
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
        let store = self.clone();
        let file = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| KeyStoreError(e.to_string()))?
            .map_err(|e| KeyStoreError(e.to_string()))?;
        Ok(file.streams.into_iter().find(|s| s.key_hash == hash).map(|s| Grant {
            stream: s.stream,
            owner: None,
            revocable: true,
        }))
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
    async fn add_lookup_list_revoke() {
        let dir = temp_dir("cycle");
        let store = FileKeyStore::open(&dir).unwrap();
        let key = store.add("cam").unwrap();
        assert_eq!(
            store.lookup(&key).await.unwrap(),
            Some(Grant { stream: "cam".into(), owner: None, revocable: true })
        );
        assert_eq!(store.lookup("nope").await.unwrap(), None);
        assert!(matches!(store.add("cam"), Err(FileKeyStoreError::Exists(_))));
        assert!(matches!(store.add("a/b"), Err(FileKeyStoreError::InvalidName(_))));
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
                        store.add(&format!("s{t}-{i}")).unwrap();
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
