//! The cluster's stream registry in MongoDB (`streaming.live_streams` by default; schema in
//! docs/cluster.md): one document per stream name, `_id` the name, so the unique `_id` index
//! makes creating a lease a race with one winner. Every other change is a conditional update,
//! on the holder for the holder's own updates and on the revision read for a taker's.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_trait::async_trait;
use ingest::cluster::{Lease, LeaseState, Member, RegistryError, StreamRegistry};
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use stream_store::Numbering;

/// MongoDB's duplicate key error: the lease exists.
const DUPLICATE_KEY: i32 = 11000;
/// The states a holder renews (and other nodes forward requests for).
const HELD_STATES: [&str; 3] = ["live", "open", "done"];

/// Leases in a MongoDB collection.
#[derive(Debug, Clone)]
pub(crate) struct MongoRegistry {
    leases: Collection<Document>,
    /// Written into every lease, for people reading the collection.
    lease_time: Duration,
}

impl MongoRegistry {
    /// The registry in `database`.`collection` on `uri`; every operation gives up after
    /// `timeout`. Nothing is sent yet.
    pub(crate) async fn connect(
        uri: &str,
        database: &str,
        collection: &str,
        timeout: Duration,
        lease_time: Duration,
    ) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(uri).await.context("parsing --mongo-uri")?;
        options.app_name = Some("rtmp-hls-cluster".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = Client::with_options(options).context("configuring the MongoDB client")?;
        Ok(Self { leases: client.database(database).collection(collection), lease_time })
    }

    /// Creates the index renewals use (the holder's leases).
    pub(crate) async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let by_holder = IndexModel::builder()
            .keys(doc! { "holder": 1, "state": 1 })
            .options(IndexOptions::builder().name("holder_state".to_owned()).build())
            .build();
        self.leases.create_index(by_holder).await?;
        Ok(())
    }

    async fn find(&self, filter: Document) -> Result<Vec<Document>, RegistryError> {
        let mut cursor = self.leases.find(filter).await.map_err(unavailable)?;
        let mut documents = Vec::new();
        while cursor.advance().await.map_err(unavailable)? {
            documents.push(cursor.deserialize_current().map_err(unavailable)?);
        }
        Ok(documents)
    }

    fn held_by(me: &Member) -> Document {
        doc! { "holder": &me.holder, "state": { "$in": HELD_STATES.as_slice() } }
    }
}

fn unavailable(e: mongodb::error::Error) -> RegistryError {
    RegistryError(e.to_string())
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn number(document: &Document, field: &str) -> u64 {
    match document.get(field) {
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
        _ => 0,
    }
}

fn text(document: &Document, field: &str) -> String {
    document.get_str(field).unwrap_or_default().to_owned()
}

/// A lease from its document; `None` if it is not one (no name or unknown state).
fn lease(document: &Document) -> Option<Lease> {
    let stream = document.get_str("_id").ok()?.to_owned();
    let state = LeaseState::parse(document.get_str("state").ok()?)?;
    let since =
        document.get_datetime("since").map_or(SystemTime::UNIX_EPOCH, |d| d.to_system_time());
    Some(Lease {
        stream,
        node: text(document, "node"),
        holder: text(document, "holder"),
        url: text(document, "url"),
        since,
        revision: number(document, "revision"),
        state,
        previous_holder: document.get_str("previous_holder").ok().map(str::to_owned),
        numbering: Numbering {
            next_sequence: number(document, "next_sequence"),
            discontinuity_sequence: number(document, "discontinuity_sequence"),
        },
        private: document.get_bool("private").unwrap_or(false),
        kick_requested: document.get_bool("kick").unwrap_or(false),
    })
}

#[async_trait]
impl StreamRegistry for MongoRegistry {
    async fn get(&self, stream: &str) -> Result<Option<Lease>, RegistryError> {
        let found = self.leases.find_one(doc! { "_id": stream }).await.map_err(unavailable)?;
        Ok(found.as_ref().and_then(lease))
    }

    async fn create(
        &self,
        stream: &str,
        me: &Member,
        private: bool,
    ) -> Result<bool, RegistryError> {
        let document = doc! {
            "_id": stream,
            "node": &me.node,
            "holder": &me.holder,
            "url": &me.url,
            "since": DateTime::now(),
            "lease_ms": as_i64(u64::try_from(self.lease_time.as_millis()).unwrap_or(u64::MAX)),
            "revision": 0_i64,
            "state": LeaseState::Live.as_str(),
            "private": private,
            "previous_holder": Bson::Null,
            "next_sequence": 0_i64,
            "discontinuity_sequence": 0_i64,
        };
        match self.leases.insert_one(document).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn take(
        &self,
        stream: &str,
        me: &Member,
        revision: u64,
        from: Option<&str>,
        private: bool,
    ) -> Result<bool, RegistryError> {
        let taken = self
            .leases
            .update_one(
                doc! { "_id": stream, "revision": as_i64(revision) },
                doc! {
                    "$set": {
                        "node": &me.node,
                        "holder": &me.holder,
                        "url": &me.url,
                        "since": DateTime::now(),
                        "state": LeaseState::Live.as_str(),
                        "private": private,
                        "kick": false,
                        "previous_holder": from,
                    },
                    "$inc": { "revision": 1_i64 },
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(taken.modified_count == 1)
    }

    async fn renew(&self, me: &Member) -> Result<u64, RegistryError> {
        let renewed = self
            .leases
            .update_many(Self::held_by(me), doc! { "$inc": { "revision": 1_i64 } })
            .await
            .map_err(unavailable)?;
        Ok(renewed.modified_count)
    }

    async fn held(&self, me: &Member) -> Result<Vec<String>, RegistryError> {
        let documents = self.find(Self::held_by(me)).await?;
        Ok(documents.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_owned)).collect())
    }

    async fn update(
        &self,
        stream: &str,
        me: &Member,
        state: LeaseState,
        numbering: Option<Numbering>,
    ) -> Result<(), RegistryError> {
        let mut set = doc! { "state": state.as_str(), "previous_holder": Bson::Null };
        if state != LeaseState::Live {
            set.insert("kick", false);
        }
        if let Some(numbering) = numbering {
            set.insert("next_sequence", as_i64(numbering.next_sequence));
            set.insert("discontinuity_sequence", as_i64(numbering.discontinuity_sequence));
        }
        self.leases
            .update_one(
                doc! { "_id": stream, "holder": &me.holder },
                doc! { "$set": set, "$inc": { "revision": 1_i64 } },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_private(
        &self,
        stream: &str,
        me: &Member,
        private: bool,
    ) -> Result<(), RegistryError> {
        self.leases
            .update_one(
                doc! { "_id": stream, "holder": &me.holder },
                doc! { "$set": { "private": private }, "$inc": { "revision": 1_i64 } },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn hand_over(
        &self,
        stream: &str,
        me: &Member,
        numbering: Option<Numbering>,
    ) -> Result<(), RegistryError> {
        let mut set = doc! { "previous_holder": Bson::Null };
        if let Some(numbering) = numbering {
            set.insert("next_sequence", as_i64(numbering.next_sequence));
            set.insert("discontinuity_sequence", as_i64(numbering.discontinuity_sequence));
        }
        self.leases
            .update_one(
                doc! { "_id": stream, "previous_holder": &me.holder },
                doc! { "$set": set, "$inc": { "revision": 1_i64 } },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn expire(&self, stream: &str, revision: u64, margin: u64) -> Result<(), RegistryError> {
        self.leases
            .update_one(
                doc! {
                    "_id": stream,
                    "revision": as_i64(revision),
                    "state": { "$in": HELD_STATES.as_slice() },
                },
                doc! {
                    "$set": { "state": LeaseState::Ended.as_str(), "previous_holder": Bson::Null },
                    "$inc": { "revision": 1_i64, "next_sequence": as_i64(margin) },
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn request_kick(&self, stream: &str) -> Result<bool, RegistryError> {
        let asked = self
            .leases
            .update_one(
                doc! { "_id": stream, "state": LeaseState::Live.as_str() },
                doc! { "$set": { "kick": true } },
            )
            .await
            .map_err(unavailable)?;
        Ok(asked.matched_count == 1)
    }

    async fn list(&self) -> Result<Vec<Lease>, RegistryError> {
        let filter = doc! { "state": { "$in": HELD_STATES.as_slice() } };
        Ok(self.find(filter).await?.iter().filter_map(lease).collect())
    }
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    matches!(
        &*e.kind,
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == DUPLICATE_KEY
    ) || e.to_string().contains("E11000")
}
