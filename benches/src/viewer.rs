//! One HLS viewer behaving like a player (RFC 8216 §6.3.4 reload rules, hls.js's start
//! position): it joins [`JOIN_SEGMENTS`] segments from the live edge, reloads the playlist
//! every half target duration, and fetches each new segment once, on one keep-alive
//! connection. It times every fetch and never decodes anything.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::http::Client;
use crate::monitor::REQUEST_LIMIT;
use crate::playlist;
use crate::shared::Shared;

/// Segments from the live edge a viewer starts with (hls.js's liveSyncDurationCount).
const JOIN_SEGMENTS: usize = 3;
/// Time one segment request may take: a segment must arrive well within its own duration
/// for playback not to stall, so anything slower is an error.
const SEGMENT_LIMIT: Duration = Duration::from_secs(10);
/// MPEG-TS sync byte (ISO/IEC 13818-1 §2.4.3.2): a segment that starts with neither it nor
/// [`FMP4_FIRST`] is not a segment.
const TS_SYNC: u8 = 0x47;
/// First byte of an fMP4 segment: the high byte of its first box's 32-bit size (ISO/IEC
/// 14496-12 §4.2), zero for any box under 16 MiB.
const FMP4_FIRST: u8 = 0x00;

pub(crate) struct Viewer {
    pub(crate) stream: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) start_at: Instant,
}

impl Viewer {
    pub(crate) async fn run(self) {
        sleep_until(self.start_at).await;
        let stream = &self.shared.streams[self.stream];
        let mut client = Client::new(&stream.host);
        let mut body = Vec::new();
        let mut last_seq: Option<u64> = None;
        let mut loaded = false;
        let mut reload = crate::monitor::DEFAULT_RELOAD;
        loop {
            let started = Instant::now();
            let response = client.get(&stream.playlist_path, Some(&mut body), REQUEST_LIMIT).await;
            let took = started.elapsed();
            match response {
                Ok(r) if r.status == 200 => {
                    let mut stats = self.shared.stats();
                    stats.playlist_fetch.record(took);
                    stats.playlists_fetched += 1;
                }
                // Before the stream's first segment both servers answer 404.
                Ok(r) if r.status == 404 && !loaded => {}
                Ok(r) => self.shared.error(status_kind(Fetched::Playlist, r.status)),
                Err(e) => self.shared.error(e.kind()),
            }
            let list = match response {
                Ok(r) if r.status == 200 => {
                    std::str::from_utf8(&body).ok().and_then(playlist::parse)
                }
                _ => None,
            };
            if let Some(list) = list {
                loaded = true;
                reload = Duration::from_secs_f64(list.target_duration / 2.0);
                let skip = match last_seq {
                    None => list.segments.len().saturating_sub(JOIN_SEGMENTS),
                    Some(last) => list.segments.iter().take_while(|s| s.seq <= last).count(),
                };
                for segment in &list.segments[skip..] {
                    last_seq = Some(segment.seq);
                    let Some(path) =
                        playlist::resolve(&stream.host, &stream.playlist_path, &segment.uri)
                    else {
                        self.shared.error("segment_elsewhere");
                        continue;
                    };
                    self.fetch_segment(&mut client, &path).await;
                }
            } else if matches!(response, Ok(r) if r.status == 200) {
                self.shared.error("playlist_malformed");
            }
            sleep_until(started + reload).await;
        }
    }

    async fn fetch_segment(&self, client: &mut Client, path: &str) {
        let started = Instant::now();
        match client.get(path, None, SEGMENT_LIMIT).await {
            Ok(r) if r.status == 200 && matches!(r.first_byte, Some(TS_SYNC | FMP4_FIRST)) => {
                let took = started.elapsed();
                let mut stats = self.shared.stats();
                stats.segment_fetch.record(took);
                stats.segments_fetched += 1;
                stats.bytes_fetched += r.length;
            }
            Ok(r) if r.status == 200 => self.shared.error("segment_not_hls"),
            Ok(r) => self.shared.error(status_kind(Fetched::Segment, r.status)),
            Err(e) => self.shared.error(e.kind()),
        }
    }
}

/// What a request was for, in its error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    Playlist,
    Segment,
    /// A low-latency part.
    Part,
    /// An fMP4 init segment (EXT-X-MAP).
    Init,
}

/// The error kind of an unexpected status.
pub(crate) fn status_kind(what: Fetched, status: u16) -> &'static str {
    match (what, status) {
        (Fetched::Playlist, 400) => "playlist_400",
        (Fetched::Playlist, 404) => "playlist_404",
        (Fetched::Playlist, 503) => "playlist_503",
        (Fetched::Playlist, _) => "playlist_status",
        (Fetched::Segment, 404) => "segment_404",
        (Fetched::Segment, 503) => "segment_503",
        (Fetched::Segment, _) => "segment_status",
        (Fetched::Part, 404) => "part_404",
        (Fetched::Part, 503) => "part_503",
        (Fetched::Part, _) => "part_status",
        (Fetched::Init, 404) => "init_404",
        (Fetched::Init, _) => "init_status",
    }
}
