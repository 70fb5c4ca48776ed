//! One low-latency HLS viewer (draft-pantos-hls-rfc8216bis §6.2.5, §6.3), behaving like
//! hls.js in lowLatencyMode: it loads the playlist, fetches the init segment (EXT-X-MAP)
//! whenever it changes, then goes round: the part of the playlist's EXT-X-PRELOAD-HINT and
//! the blocking reload for it (`_HLS_msn` and `_HLS_part` of that part) are requested at
//! once, on two keep-alive connections (playlists on one, media on the other, as a browser
//! keeps them), and the reload's answer gives the next round's hint. A viewer that falls
//! behind skips to the hint, as it always fetches the part being written.
//!
//! Each part received is timed twice: its GET (request to last byte), and its latency: the
//! instant its last byte arrived minus the instant its last video frame was due by the
//! publisher's clock. The fMP4 decode times are the publisher's RTMP timestamps in the
//! track's timescale, so that frame was due at the publisher's `t0` plus its decode time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::fmp4::{self, Track};
use crate::http::{Client, HttpError, Response};
use crate::monitor::REQUEST_LIMIT;
use crate::playlist::{self, MediaPlaylist, Part};
use crate::shared::{InFlight, Shared};
use crate::viewer::{Fetched, status_kind};

/// A blocking reload is held by the server up to three target durations (§6.2.5.2, then
/// 503), and a hinted part as long; the client waits one more before it gives up.
const BLOCK_LIMIT_TARGETS: f64 = 4.0;
/// After a failed request, time before the next plain reload: hls.js's retry delay
/// (levelLoadingRetryDelay), so a server refusing everything is not hammered.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Shortest wait before asking again: a server's tiny PART-TARGET does not make a viewer
/// spin.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// Initial playlist buffer: a low-latency playlist lists parts, a few KiB.
const PLAYLIST_CAPACITY: usize = 16 << 10;
/// Initial part buffer: a quarter second of 720p video.
const PART_CAPACITY: usize = 256 << 10;

pub(crate) struct LlViewer {
    pub(crate) stream: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) start_at: Instant,
}

/// The init segment in use.
struct Init {
    uri: String,
    /// Its first video track: the one parts are timed by.
    video: Option<Track>,
}

impl LlViewer {
    pub(crate) async fn run(self) {
        tokio::time::sleep_until(self.start_at).await;
        let stream = &self.shared.streams[self.stream];
        let mut playlists = Client::new(&stream.host);
        let mut media = Client::new(&stream.host);
        let mut text = Vec::with_capacity(PLAYLIST_CAPACITY);
        let mut body = Vec::with_capacity(PART_CAPACITY);
        let mut init: Option<Init> = None;
        let mut live = false;
        let mut next: Option<MediaPlaylist> = None;
        loop {
            let list = match next.take() {
                Some(list) => list,
                None => match self.load(&mut playlists, &mut text, &mut live).await {
                    Some(list) => list,
                    None => {
                        sleep(RETRY_DELAY).await;
                        continue;
                    }
                },
            };
            if !list.can_block_reload {
                self.shared.error("playlist_not_low_latency");
                sleep(RETRY_DELAY).await;
                continue;
            }
            let Some(hint) = list.hint.as_ref() else {
                // Ended (the monitor reports it), or published again and not yet cut into
                // parts: nothing to fetch until a part is being written.
                sleep(if list.ended { RETRY_DELAY } else { part_interval(&list) }).await;
                continue;
            };
            let Some(map) = list.map.as_deref() else {
                self.shared.error("playlist_no_map");
                sleep(RETRY_DELAY).await;
                continue;
            };
            if init.as_ref().is_none_or(|i| i.uri != map) {
                init = self.load_init(&mut media, map, &mut body).await;
                if init.is_none() {
                    sleep(RETRY_DELAY).await;
                    continue;
                }
            }
            let Some(part_path) = playlist::resolve(&stream.host, &stream.playlist_path, &hint.uri)
            else {
                self.shared.error("part_elsewhere");
                sleep(RETRY_DELAY).await;
                continue;
            };
            let limit = Duration::try_from_secs_f64(list.target_duration * BLOCK_LIMIT_TARGETS)
                .map_or(REQUEST_LIMIT, |limit| limit.max(REQUEST_LIMIT));
            let video = init.as_ref().and_then(|i| i.video);
            let ((), reloaded) = tokio::join!(
                self.fetch_part(&mut media, &part_path, &mut body, video, limit),
                self.blocking_reload(&mut playlists, hint, &mut text, limit),
            );
            match reloaded {
                Some(reloaded) if reloaded.hint.as_ref().is_some_and(|h| h.uri == hint.uri) => {
                    // Answered before the part it waited for (counted as unsatisfied): wait a
                    // part before asking again rather than spin.
                    sleep(part_interval(&list)).await;
                    next = Some(reloaded);
                }
                Some(reloaded) => next = Some(reloaded),
                None => sleep(RETRY_DELAY).await,
            }
        }
    }

    /// A plain playlist GET; `None` after a failure (counted) or before the stream is live.
    async fn load(
        &self,
        client: &mut Client,
        text: &mut Vec<u8>,
        live: &mut bool,
    ) -> Option<MediaPlaylist> {
        let stream = &self.shared.streams[self.stream];
        let started = Instant::now();
        let response = client.get(&stream.playlist_path, Some(text), REQUEST_LIMIT).await;
        let took = started.elapsed();
        // Before the stream's first segment the server answers 404.
        if !*live && response.as_ref().is_ok_and(|r| r.status == 404) {
            return None;
        }
        let list = self.playlist_answer(response, text)?;
        *live = true;
        let mut stats = self.shared.stats();
        stats.playlist_fetch.record(took);
        stats.playlists_fetched += 1;
        Some(list)
    }

    /// The playlist a 200 answer in `text` holds; `None` for any other answer or one that
    /// does not parse (counted as an error by kind).
    fn playlist_answer(
        &self,
        response: Result<Response, HttpError>,
        text: &[u8],
    ) -> Option<MediaPlaylist> {
        match response {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                self.shared.error(status_kind(Fetched::Playlist, r.status));
                return None;
            }
            Err(e) => {
                self.shared.error(e.kind());
                return None;
            }
        }
        let list = std::str::from_utf8(text).ok().and_then(playlist::parse);
        if list.is_none() {
            self.shared.error("playlist_malformed");
        }
        list
    }

    /// The playlist once it holds part `hint`: `None` after a failure (counted).
    async fn blocking_reload(
        &self,
        client: &mut Client,
        hint: &Part,
        text: &mut Vec<u8>,
        limit: Duration,
    ) -> Option<MediaPlaylist> {
        let stream = &self.shared.streams[self.stream];
        let separator = if stream.playlist_path.contains('?') { '&' } else { '?' };
        let path = format!(
            "{}{separator}_HLS_msn={}&_HLS_part={}",
            stream.playlist_path, hint.msn, hint.index
        );
        let started = Instant::now();
        let response = {
            let _waiting = InFlight::new(&self.shared.blocked_reloads);
            client.get(&path, Some(text), limit).await
        };
        let held = started.elapsed();
        let list = self.playlist_answer(response, text)?;
        let mut stats = self.shared.stats();
        stats.blocked_reload.record(held);
        stats.playlists_fetched += 1;
        if !list.ended && !list.has_part(hint.msn, hint.index) {
            // §6.2.5.2: the server must not answer before the part exists.
            stats.error("reload_unsatisfied");
        }
        Some(list)
    }

    /// Fetches the init segment at `map`; `None` after a failure (counted).
    async fn load_init(&self, client: &mut Client, map: &str, body: &mut Vec<u8>) -> Option<Init> {
        let stream = &self.shared.streams[self.stream];
        let Some(path) = playlist::resolve(&stream.host, &stream.playlist_path, map) else {
            self.shared.error("init_elsewhere");
            return None;
        };
        match client.get(&path, Some(body), REQUEST_LIMIT).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                self.shared.error(status_kind(Fetched::Init, r.status));
                return None;
            }
            Err(e) => {
                self.shared.error(e.kind());
                return None;
            }
        }
        let Some(tracks) = fmp4::init_tracks(body) else {
            self.shared.error("init_malformed");
            return None;
        };
        Some(Init { uri: map.to_owned(), video: tracks.into_iter().find(|t| t.video) })
    }

    /// GETs the part at `path` and records its fetch time and latency.
    async fn fetch_part(
        &self,
        client: &mut Client,
        path: &str,
        body: &mut Vec<u8>,
        video: Option<Track>,
        limit: Duration,
    ) {
        let started = Instant::now();
        let response = client.get(path, Some(body), limit).await;
        let arrived = Instant::now();
        let length = match response {
            Ok(r) if r.status == 200 && fmp4::starts_with_moof(body) => r.length,
            Ok(r) if r.status == 200 => return self.shared.error("part_not_fmp4"),
            Ok(r) => return self.shared.error(status_kind(Fetched::Part, r.status)),
            Err(e) => return self.shared.error(e.kind()),
        };
        let last_frame = match video.map(|track| (track, fmp4::last_decode_time(body, &track))) {
            Some((track, Ok(ticks))) => {
                ticks.map(|ticks| fmp4::ticks_to_duration(ticks, track.timescale))
            }
            Some((_, Err(fmp4::Malformed))) => return self.shared.error("part_malformed"),
            None => None,
        };
        let t0 = self.shared.streams[self.stream].t0.get().copied();
        let due = t0.zip(last_frame).map(|(t0, decode_time)| t0 + decode_time);
        let mut stats = self.shared.stats();
        stats.part_fetch.record(arrived.saturating_duration_since(started));
        stats.parts_fetched += 1;
        stats.part_bytes_fetched += length;
        match due {
            Some(due) if due <= arrived => stats.part_latency.record(arrived - due),
            Some(_) => {
                stats.part_latency.record(Duration::ZERO);
                stats.parts_early += 1;
            }
            None => stats.parts_untimed += 1,
        }
    }
}

/// The wait before asking again for a playlist that had nothing new: a part target of
/// `list`, within [`MIN_WAIT`] and [`RETRY_DELAY`].
fn part_interval(list: &MediaPlaylist) -> Duration {
    list.part_target
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .unwrap_or(RETRY_DELAY)
        .clamp(MIN_WAIT, RETRY_DELAY)
}
