//! The MongoDB key store: the documents the platform's backend writes (schema in
//! docs/keys.md), looked up by key hash. Fails closed: when the database cannot answer,
//! lookups return an error and the publish is refused; the driver reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use auth::key_store::{
    Grant, KeyStore, KeyStoreError, MAX_TOKEN_ID_LEN, REVOKED_TOKEN_RETENTION, Revocation,
    generate_key, hash_key, is_valid_token_id, validate_stream_name,
};
use mongodb::bson::{self, DateTime, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// One stream's key document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyDocument {
    pub(crate) stream: String,
    #[serde(default)]
    pub(crate) owner: Option<String>,
    pub(crate) key_hash: String,
    pub(crate) created_at: DateTime,
    #[serde(default)]
    pub(crate) revoked_at: Option<DateTime>,
    #[serde(default)]
    pub(crate) last_used_at: Option<DateTime>,
    /// Only viewers with a credential may watch the stream; absent is public.
    #[serde(default)]
    pub(crate) private: bool,
    /// Where the stream is pushed on to (`rtmp://` and `rtmps://` URLs with their keys).
    #[serde(default)]
    pub(crate) push: Vec<String>,
    /// Whether its publishes are recorded; absent or null: as the server is configured.
    #[serde(default)]
    pub(crate) record: Option<bool>,
}

/// A revoked publish token's document (collection [`REVOKED_TOKENS`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevokedTokenDocument {
    pub(crate) jti: String,
    pub(crate) revoked_at: DateTime,
}

/// The collection of revoked publish tokens, in the keys' database.
pub(crate) const REVOKED_TOKENS: &str = "revoked_tokens";

/// `last_used_at` writes in flight at most: bookkeeping no publish waits for, so a
/// database that does not answer them must not pile up tasks and pooled connections (past
/// it a write is skipped).
const MAX_BOOKKEEPING_WRITES: usize = 8;
/// A key's `last_used_at` is written at most this often: each live publish looks its key up
/// again every 2 s, and the date tells people when a key was last used, not to the second.
const LAST_USED_PRECISION: Duration = Duration::from_secs(60);

/// Keys in a MongoDB collection.
#[derive(Debug, Clone)]
pub(crate) struct MongoKeyStore {
    keys: Collection<KeyDocument>,
    revoked_tokens: Collection<RevokedTokenDocument>,
    /// Permits for `last_used_at` writes ([`MAX_BOOKKEEPING_WRITES`]).
    bookkeeping: Arc<Semaphore>,
    /// How long any operation may take.
    timeout: Duration,
}

impl MongoKeyStore {
    /// A store on `uri`, database `database`, collection `collection`. Nothing is sent yet:
    /// an unreachable database does not stop the server from starting. Every operation gives
    /// up after `timeout`.
    pub(crate) async fn connect(
        uri: &str,
        database: &str,
        collection: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(uri).await.context("parsing --mongo-uri")?;
        options.app_name = Some("rtmp-hls".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = Client::with_options(options).context("configuring the MongoDB client")?;
        let database = client.database(database);
        Ok(Self {
            keys: database.collection(collection),
            revoked_tokens: database.collection(REVOKED_TOKENS),
            bookkeeping: Arc::new(Semaphore::new(MAX_BOOKKEEPING_WRITES)),
            timeout,
        })
    }

    /// Creates the unique indexes on `key_hash` and `stream` when missing.
    pub(crate) async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique = |field: &str| {
            IndexModel::builder()
                .keys(doc! { field: 1 })
                .options(
                    IndexOptions::builder().unique(true).name(format!("{field}_unique")).build(),
                )
                .build()
        };
        self.keys.create_indexes([unique("key_hash"), unique("stream")]).await?;
        let retention = IndexModel::builder()
            .keys(doc! { "revoked_at": 1 })
            .options(
                IndexOptions::builder()
                    .expire_after(REVOKED_TOKEN_RETENTION)
                    .name("revoked_at_ttl".to_owned())
                    .build(),
            )
            .build();
        self.revoked_tokens.create_indexes([unique("jti"), retention]).await?;
        Ok(())
    }

    /// Issues a key for `stream` (replacing a revoked one); returns the key.
    pub(crate) async fn add(
        &self,
        stream: &str,
        owner: Option<&str>,
        private: bool,
    ) -> anyhow::Result<String> {
        validate_stream_name(stream)?;
        let key = generate_key()?;
        let now = DateTime::now();
        let existing = self.keys.find_one(doc! { "stream": stream }).await?;
        match existing {
            Some(doc) if doc.revoked_at.is_none() => {
                anyhow::bail!(
                    "stream {stream:?} already has a key; revoke it first to issue a new one"
                )
            }
            Some(_) => {
                self.keys
                    .update_one(
                        doc! { "stream": stream },
                        doc! { "$set": {
                            "key_hash": hash_key(&key),
                            "owner": owner,
                            "created_at": now,
                            "revoked_at": bson::Bson::Null,
                            "last_used_at": bson::Bson::Null,
                            "private": private,
                        } },
                    )
                    .await?;
            }
            None => {
                let document = KeyDocument {
                    stream: stream.to_owned(),
                    owner: owner.map(str::to_owned),
                    key_hash: hash_key(&key),
                    created_at: now,
                    revoked_at: None,
                    last_used_at: None,
                    private,
                    push: Vec::new(),
                    record: None,
                };
                self.keys.insert_one(document).await?;
            }
        }
        Ok(key)
    }

    /// Every key document, oldest first.
    pub(crate) async fn list(&self) -> anyhow::Result<Vec<KeyDocument>> {
        let mut cursor = self.keys.find(doc! {}).sort(doc! { "created_at": 1 }).await?;
        let mut all = Vec::new();
        while cursor.advance().await? {
            all.push(cursor.deserialize_current()?);
        }
        Ok(all)
    }

    /// Revokes the publish token with id `jti`; returns whether it was not revoked before.
    pub(crate) async fn revoke_token(&self, jti: &str) -> anyhow::Result<bool> {
        anyhow::ensure!(is_valid_token_id(jti), "a token id is 1 to {MAX_TOKEN_ID_LEN} bytes");
        let result = self
            .revoked_tokens
            .update_one(
                doc! { "jti": jti },
                doc! { "$setOnInsert": { "jti": jti, "revoked_at": DateTime::now() } },
            )
            .upsert(true)
            .await?;
        Ok(result.upserted_id.is_some())
    }

    /// Makes `stream` private or public; returns whether it has a key document.
    pub(crate) async fn set_private(&self, stream: &str, private: bool) -> anyhow::Result<bool> {
        let result = self
            .keys
            .update_one(doc! { "stream": stream }, doc! { "$set": { "private": private } })
            .await?;
        Ok(result.matched_count > 0)
    }

    /// Sets where `stream` is pushed on to; returns whether it has a key document.
    pub(crate) async fn set_push(&self, stream: &str, push: &[String]) -> anyhow::Result<bool> {
        let result = self
            .keys
            .update_one(doc! { "stream": stream }, doc! { "$set": { "push": push } })
            .await?;
        Ok(result.matched_count > 0)
    }

    /// Sets whether `stream`'s publishes are recorded; returns whether it has a key document.
    pub(crate) async fn set_record(
        &self,
        stream: &str,
        record: Option<bool>,
    ) -> anyhow::Result<bool> {
        let result = self
            .keys
            .update_one(doc! { "stream": stream }, doc! { "$set": { "record": record } })
            .await?;
        Ok(result.matched_count > 0)
    }

    /// Revokes the key of `stream`; returns whether a live key was revoked.
    pub(crate) async fn revoke(&self, stream: &str) -> anyhow::Result<bool> {
        let result = self
            .keys
            .update_one(
                doc! { "stream": stream, "revoked_at": bson::Bson::Null },
                doc! { "$set": { "revoked_at": DateTime::now() } },
            )
            .await?;
        Ok(result.modified_count > 0)
    }
}

#[async_trait]
impl KeyStore for MongoKeyStore {
    async fn lookup(&self, key: &str) -> Result<Option<Grant>, KeyStoreError> {
        let hash = hash_key(key);
        let found = self
            .keys
            .find_one(doc! { "key_hash": &hash, "revoked_at": bson::Bson::Null })
            .await
            .map_err(|e| KeyStoreError(format!("MongoDB: {}", e.kind)))?;
        let Some(document) = found else { return Ok(None) };
        // Bookkeeping only: the publish never waits for it, and a failure is not an error.
        // The document just read says whether it is due (the filter checks again).
        let due = document.last_used_at.is_none_or(|at| {
            let age = DateTime::now().timestamp_millis().saturating_sub(at.timestamp_millis());
            u128::try_from(age).is_ok_and(|age| age >= LAST_USED_PRECISION.as_millis())
        });
        if due && let Ok(permit) = Arc::clone(&self.bookkeeping).try_acquire_owned() {
            let (keys, timeout) = (self.keys.clone(), self.timeout);
            tokio::spawn(async move {
                let now = DateTime::now();
                let precision = i64::try_from(LAST_USED_PRECISION.as_millis()).unwrap_or(0);
                let stale = DateTime::from_millis(now.timestamp_millis() - precision);
                let filter = doc! {
                    "key_hash": hash,
                    "$or": [{ "last_used_at": null }, { "last_used_at": { "$lt": stale } }],
                };
                let update = keys.update_one(filter, doc! { "$set": { "last_used_at": now } });
                let _ = tokio::time::timeout(timeout, update).await;
                drop(permit);
            });
        }
        let revocation = Some(Revocation::Key);
        Ok(Some(Grant {
            stream: document.stream,
            owner: document.owner,
            private: document.private,
            push: document.push,
            record: document.record,
            revocation,
        }))
    }

    async fn token_revoked(&self, jti: &str) -> Result<bool, KeyStoreError> {
        let found = self
            .revoked_tokens
            .find_one(doc! { "jti": jti })
            .await
            .map_err(|e| KeyStoreError(format!("MongoDB: {}", e.kind)))?;
        Ok(found.is_some())
    }
}
