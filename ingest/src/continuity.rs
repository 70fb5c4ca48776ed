//! What a stream's push targets and RTMP players keep while its publisher reconnects: an
//! interrupted publish (network loss, a crashed encoder, a takeover) parks its pushes and its
//! broadcast for the reconnect window instead of ending them, so YouTube does not end the
//! broadcast and players keep waiting, as HLS viewers do; the publish that continues the
//! stream within the window takes them over (the pushes to targets it still has), and
//! their clocks go on ([`crate::rebase`]). Past the window they end as a clean stop would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::listener::Ingest;
use crate::play::Broadcast;
use crate::push::Push;

/// An interrupted publish's pushes and broadcast.
pub(crate) struct Parked {
    pub(crate) push: Push,
    pub(crate) broadcast: Arc<Broadcast>,
}

/// Numbers each parking, so a window's timer ends only its own (a stream parked, taken
/// over and parked again within one window has the same broadcast).
static PARKINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Parked pushes and broadcasts, by stream.
#[derive(Default)]
pub(crate) struct ParkedRelays {
    streams: Mutex<HashMap<String, (u64, Parked)>>,
}

impl ParkedRelays {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Parked)>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What an interrupted publish of `stream` left, for the publish continuing it.
    pub(crate) fn take(&self, stream: &str) -> Option<Parked> {
        self.lock().remove(stream).map(|(_, parked)| parked)
    }

    /// Everything parked (at shutdown: each is ended as a clean stop would).
    pub(crate) fn drain(&self) -> Vec<(String, Parked)> {
        self.lock().drain().map(|(stream, (_, parked))| (stream, parked)).collect()
    }
}

/// Parks `parked` for `stream` for `window`; then, if no publish took it over, ends it.
pub(crate) fn park(ingest: &Arc<Ingest>, stream: &str, parked: Parked, window: Duration) {
    let id = PARKINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some((_, older)) = ingest.parked.lock().insert(stream.to_owned(), (id, parked)) {
        end(ingest, stream, older);
    }
    let ingest = Arc::clone(ingest);
    let stream = stream.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        let mut streams = ingest.parked.lock();
        let ours = streams.get(&stream).is_some_and(|(parked, _)| *parked == id);
        if let Some((_, parked)) = ours.then(|| streams.remove(&stream)).flatten() {
            drop(streams);
            end(&ingest, &stream, parked);
        }
    });
}

/// Ends parked pushes (each target gets the unpublish) and the broadcast's players.
pub(crate) fn end(ingest: &Ingest, stream: &str, parked: Parked) {
    ingest.broadcasts.close(stream, &parked.broadcast);
    drop(parked.push);
}
