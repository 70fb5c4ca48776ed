//! The live publishers, by stream name: which connection holds each stream, how to tell it
//! to stop (takeover, kick, revocation), and how to wait until it has let go.
//!
//! A claim takes the stream in the store and registers it in one step under the registry's
//! lock, so a takeover, a kick or a second claim never sees a stream live in the store but
//! missing here. A [`LivePublish`] owns the store's [`Publication`]; dropping it ends the
//! stream in the store first, then leaves the registry, then wakes whoever waits to take the
//! stream over: a takeover is woken by that notification, not by polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use stream_store::{BeginError, Publication};
use tokio::sync::watch;

use crate::events::StopReason;

/// The live publishers.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<String, Holder>>,
}

/// The connection holding a stream.
#[derive(Debug)]
struct Holder {
    /// The connection's id.
    id: u64,
    /// Tells it to stop, and why.
    stop: watch::Sender<Option<StopReason>>,
    /// Turns true once it has let go of the stream.
    released: watch::Receiver<bool>,
}

impl Registry {
    /// Claims `stream` for connection `id` with `begin` (the store's claim), as one step with
    /// respect to every other claim, stop and release.
    pub(crate) fn claim(
        self: &Arc<Self>,
        stream: &str,
        id: u64,
        begin: impl FnOnce() -> Result<Publication, BeginError>,
    ) -> Result<LivePublish, BeginError> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let publication = begin()?;
        let (stop, stop_requested) = watch::channel(None);
        let (released_tx, released) = watch::channel(false);
        live.insert(stream.to_owned(), Holder { id, stop, released });
        Ok(LivePublish {
            publication,
            registration: Registration {
                registry: Arc::clone(self),
                stream: stream.to_owned(),
                id,
                stop_requested,
                released: released_tx,
            },
        })
    }

    /// Tells the publisher of `stream` to stop for `reason`. Returns what turns true once it
    /// has let go, or `None` if the stream has no live publisher.
    pub(crate) fn stop(&self, stream: &str, reason: StopReason) -> Option<watch::Receiver<bool>> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let holder = live.get(stream)?;
        holder.stop.send(Some(reason)).ok()?;
        Some(holder.released.clone())
    }

    /// Tells the publisher of `stream` to stop for `reason` if it is still connection `id`
    /// (a check that began before a takeover must not end the new publisher).
    pub(crate) fn stop_if_held_by(&self, stream: &str, id: u64, reason: StopReason) -> bool {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(stream)
            .filter(|holder| holder.id == id)
            .is_some_and(|holder| holder.stop.send(Some(reason)).is_ok())
    }

    fn release(&self, stream: &str, id: u64) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.get(stream).is_some_and(|holder| holder.id == id) {
            live.remove(stream);
        }
    }
}

/// One connection's hold on a live stream: the store's publication and the registration.
/// Dropping it ends the stream (the playlist gets EXT-X-ENDLIST) and releases the name.
#[derive(Debug)]
pub(crate) struct LivePublish {
    /// Dropped first (fields drop in order): the store lets go of the stream before the
    /// registration wakes anyone waiting for it.
    publication: Publication,
    registration: Registration,
}

/// The registry's side of a [`LivePublish`].
#[derive(Debug)]
struct Registration {
    registry: Arc<Registry>,
    stream: String,
    id: u64,
    stop_requested: watch::Receiver<Option<StopReason>>,
    released: watch::Sender<bool>,
}

impl LivePublish {
    /// Where this publish writes its segments.
    pub(crate) fn publication(&self) -> &Publication {
        &self.publication
    }

    /// Changes to `Some(reason)` when the publish is told to stop.
    pub(crate) fn stop_requested(&self) -> &watch::Receiver<Option<StopReason>> {
        &self.registration.stop_requested
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.release(&self.stream, self.id);
        self.released.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use stream_store::{StoreConfig, StreamStore};

    #[tokio::test]
    async fn a_takeover_waits_for_the_release_then_claims() {
        let store = Arc::new(StreamStore::new(StoreConfig::default()));
        let registry = Arc::new(Registry::default());
        let first = registry.claim("cam", 1, || store.begin("cam", 1, 10)).unwrap();
        let already = registry.claim("cam", 2, || store.begin("cam", 2, 10)).unwrap_err();
        assert_eq!(already, BeginError::AlreadyLive("cam".into()));

        let mut released = registry.stop("cam", StopReason::TakenOver).unwrap();
        let mut told = first.stop_requested().clone();
        assert_eq!(*told.borrow_and_update(), Some(StopReason::TakenOver));
        assert!(!*released.borrow(), "released before the drop");
        let holder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
        });
        released.wait_for(|released| *released).await.unwrap();
        assert!(!store.is_live("cam"), "woken before the store let go");
        let second = registry.claim("cam", 2, || store.begin("cam", 2, 10)).unwrap();
        holder.await.unwrap();
        assert!(store.is_live("cam"));
        drop(second);
        assert!(registry.stop("cam", StopReason::Kicked).is_none(), "released twice");
    }

    #[test]
    fn a_stale_stop_does_not_end_the_new_holder() {
        let store = Arc::new(StreamStore::new(StoreConfig::default()));
        let registry = Arc::new(Registry::default());
        let first = registry.claim("cam", 1, || store.begin("cam", 1, 10)).unwrap();
        drop(first);
        let second = registry.claim("cam", 2, || store.begin("cam", 2, 10)).unwrap();
        assert!(!registry.stop_if_held_by("cam", 1, StopReason::Revoked));
        assert_eq!(*second.stop_requested().borrow(), None);
        assert!(registry.stop_if_held_by("cam", 2, StopReason::Revoked));
        assert_eq!(*second.stop_requested().borrow(), Some(StopReason::Revoked));
        assert!(registry.stop("nope", StopReason::Kicked).is_none());
    }
}
