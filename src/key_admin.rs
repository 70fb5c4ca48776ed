//! The key store the configuration picks (embedded file, or MongoDB), for the server and for
//! the `keys` commands alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use auth::FileKeyStore;
use auth::key_store::KeyStore;

use crate::mongo_keys::MongoKeyStore;

/// Where keys live, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    pub(crate) data_dir: PathBuf,
    pub(crate) mongo_uri: Option<String>,
    pub(crate) mongo_database: String,
    pub(crate) mongo_collection: String,
}

/// One stream as `keys list` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) stream: String,
    pub(crate) owner: Option<String>,
    pub(crate) created_at: String,
    pub(crate) revoked: bool,
    pub(crate) private: bool,
    /// Push targets (URLs with their keys: secret).
    pub(crate) push: Vec<String>,
    /// Recorded or not; `None`: as the server is configured.
    pub(crate) record: Option<bool>,
}

/// The configured key store.
#[derive(Debug, Clone)]
pub(crate) enum KeyAdmin {
    File(FileKeyStore),
    Mongo(MongoKeyStore),
}

impl KeyAdmin {
    /// Opens the store `settings` name; database operations give up after `timeout`.
    pub(crate) async fn open(settings: &StoreSettings, timeout: Duration) -> Result<Self> {
        Ok(match &settings.mongo_uri {
            Some(uri) => Self::Mongo(
                MongoKeyStore::connect(
                    uri,
                    &settings.mongo_database,
                    &settings.mongo_collection,
                    timeout,
                )
                .await?,
            ),
            None => Self::File(FileKeyStore::open(&settings.data_dir)?),
        })
    }

    /// The store as the server's authorisation uses it.
    pub(crate) fn key_store(&self) -> Arc<dyn KeyStore> {
        match self {
            Self::File(store) => Arc::new(store.clone()),
            Self::Mongo(store) => Arc::new(store.clone()),
        }
    }

    /// Issues a key for `stream`, private or not; returns it.
    pub(crate) async fn add(
        &self,
        stream: &str,
        owner: Option<&str>,
        private: bool,
    ) -> Result<String> {
        match self {
            Self::File(store) => {
                if owner.is_some() {
                    anyhow::bail!("--owner is recorded in the MongoDB store only");
                }
                let stream = stream.to_owned();
                off_runtime(store, move |store| Ok(store.add(&stream, private)?)).await
            }
            Self::Mongo(store) => {
                store.ensure_indexes().await?;
                store.add(stream, owner, private).await
            }
        }
    }

    /// Sets whether `stream`'s publishes are recorded; returns whether it has a key.
    pub(crate) async fn set_record(&self, stream: &str, record: Option<bool>) -> Result<bool> {
        match self {
            Self::File(store) => {
                let stream = stream.to_owned();
                off_runtime(store, move |store| Ok(store.set_record(&stream, record)?)).await
            }
            Self::Mongo(store) => store.set_record(stream, record).await,
        }
    }

    /// Sets where `stream` is pushed on to; returns whether it has a key.
    pub(crate) async fn set_push(&self, stream: &str, push: &[String]) -> Result<bool> {
        match self {
            Self::File(store) => {
                let (stream, push) = (stream.to_owned(), push.to_vec());
                off_runtime(store, move |store| Ok(store.set_push(&stream, &push)?)).await
            }
            Self::Mongo(store) => store.set_push(stream, push).await,
        }
    }

    /// Makes `stream` private or public; returns whether it has a key.
    pub(crate) async fn set_private(&self, stream: &str, private: bool) -> Result<bool> {
        match self {
            Self::File(store) => {
                let stream = stream.to_owned();
                off_runtime(store, move |store| Ok(store.set_private(&stream, private)?)).await
            }
            Self::Mongo(store) => store.set_private(stream, private).await,
        }
    }

    /// Every stream with a key.
    pub(crate) async fn list(&self) -> Result<Vec<Listing>> {
        Ok(match self {
            Self::File(store) => off_runtime(store, |store| Ok(store.list()?))
                .await?
                .into_iter()
                .map(|k| Listing {
                    stream: k.stream,
                    owner: None,
                    created_at: k.created_at,
                    revoked: false,
                    private: k.private,
                    push: k.push,
                    record: k.record,
                })
                .collect(),
            Self::Mongo(store) => store
                .list()
                .await?
                .into_iter()
                .map(|k| Listing {
                    stream: k.stream,
                    owner: k.owner,
                    created_at: k.created_at.try_to_rfc3339_string().unwrap_or_default(),
                    revoked: k.revoked_at.is_some(),
                    private: k.private,
                    push: k.push,
                    record: k.record,
                })
                .collect(),
        })
    }

    /// Revokes the publish token with id `jti` (its `jti` claim); returns whether it was not
    /// revoked before.
    pub(crate) async fn revoke_token(&self, jti: &str) -> Result<bool> {
        match self {
            Self::File(store) => {
                let jti = jti.to_owned();
                off_runtime(store, move |store| Ok(store.revoke_token(&jti)?)).await
            }
            Self::Mongo(store) => {
                store.ensure_indexes().await?;
                store.revoke_token(jti).await
            }
        }
    }

    /// Revokes the key of `stream`; returns whether there was a live one.
    pub(crate) async fn revoke(&self, stream: &str) -> Result<bool> {
        match self {
            Self::File(store) => {
                let stream = stream.to_owned();
                off_runtime(store, move |store| Ok(store.revoke(&stream)?)).await
            }
            Self::Mongo(store) => store.revoke(stream).await,
        }
    }
}

/// Runs `call` on the embedded store off the async runtime: it reads the file, and a change
/// takes its lock and syncs it to disk, which would stall every connection on the calling
/// thread.
async fn off_runtime<T: Send + 'static>(
    store: &FileKeyStore,
    call: impl FnOnce(&FileKeyStore) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store)).await?
}
