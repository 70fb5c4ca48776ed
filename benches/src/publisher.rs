//! One publisher: replays the clip in real time, forever, over one RTMP connection.
//! Timestamps move on by the clip's length on every loop, so the server sees one endless
//! stream; sequence headers go once, as an encoder sends them. Tags due within
//! [`BATCH_WINDOW`] leave in one write, and each keyframe's send instant goes to the stream's
//! monitor, which times the segment it closes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use crate::flv::Clip;
use crate::rtmp::{PublishTarget, Traffic, publish};
use crate::shared::Shared;

/// Tags due within this window go in one write, up to this much early: fewer wake-ups and
/// syscalls for the generator, and a few ms of jitter no server notices (encoders' output
/// jitters by more).
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Publishers wake on a grid of this step shared by all of them, so the runtime serves every
/// publisher due in a slot in one timer turn instead of one wake-up each: the generator's
/// cost per stream then falls as streams are added instead of staying at a wake-up per frame.
const WAKE_GRID: Duration = BATCH_WINDOW;
/// Time allowed for connect, handshake and the publish commands.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// Time one write may block on a server that stopped reading before the publisher gives up.
const WRITE_LIMIT: Duration = Duration::from_secs(20);
/// Initial capacity of the write buffer: a 720p keyframe and its neighbours.
const BATCH_CAPACITY: usize = 256 << 10;
/// A batch this large leaves at once, so catching up after a stall never builds one big
/// buffer.
const MAX_BATCH: usize = 1 << 20;
/// Read size of the drain of the server's messages (acknowledgements, pings).
const DRAIN_BUF: usize = 4096;

/// A keyframe left: the monitor matches it to the end of a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyframeSent {
    /// Its timestamp, ms, loops included.
    pub(crate) ts_ms: u64,
    pub(crate) at: Instant,
}

/// What one publisher needs.
pub(crate) struct Publisher {
    pub(crate) index: usize,
    pub(crate) target: Arc<PublishTarget>,
    pub(crate) clip: Arc<Clip>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) keyframes: mpsc::Sender<KeyframeSent>,
    pub(crate) start_at: Instant,
    /// Origin of the wake-up grid, the same for every publisher.
    pub(crate) epoch: Instant,
}

/// When each tag of `clip` leaves an ffmpeg publisher, in ms of the clip's clock: once the
/// other track's next tag has been read (`-re` reads each at its timestamp), as
/// libavformat's interleaving queue releases a packet only while every stream has one
/// queued; never before an earlier tag. The last tags of a loop wait for the next loop's
/// first ones.
pub(crate) fn interleaved_release(clip: &Clip) -> Vec<u64> {
    let tags = &clip.tags;
    let mut release = Vec::with_capacity(tags.len());
    let mut earliest = 0u64;
    for (i, tag) in tags.iter().enumerate() {
        let ts = u64::from(tag.timestamp);
        let other = |t: &&crate::flv::ClipTag| t.kind != tag.kind;
        // The other track's first tag at least as late, in this loop or the next.
        let waits_for = tags[i + 1..]
            .iter()
            .filter(other)
            .map(|t| u64::from(t.timestamp))
            .find(|&t| t >= ts)
            .or_else(|| {
                let first = tags.iter().filter(other).find(|t| !t.config)?;
                Some(u64::from(first.timestamp) + u64::from(clip.loop_ms))
            });
        earliest = earliest.max(waits_for.map_or(ts, |t| t.max(ts)));
        release.push(earliest);
    }
    release
}

/// The first grid point from which `due` is within the batch window: the publisher wakes
/// there and sends the tag at most [`BATCH_WINDOW`] early.
fn wake_at(epoch: Instant, due: Instant) -> Instant {
    let earliest = due.checked_sub(BATCH_WINDOW).unwrap_or(due);
    let since = earliest.saturating_duration_since(epoch).as_nanos();
    let slots = since.div_ceil(WAKE_GRID.as_nanos());
    epoch + WAKE_GRID * u32::try_from(slots).unwrap_or(u32::MAX)
}

impl Publisher {
    pub(crate) async fn run(self) {
        sleep_until(self.start_at).await;
        let stream = &self.shared.streams[self.index];
        let seed = (self.index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let publishing =
            publish(&self.target, &stream.key, self.clip.metadata.as_deref(), SETUP_LIMIT, seed)
                .await;
        let mut publishing = match publishing {
            Ok(p) => p,
            Err((failure, detail)) => {
                self.shared.error(failure.kind());
                stream.mark_behind(format!("publish failed: {detail}"));
                return;
            }
        };
        let mut reader = publishing.reader;
        // The server's acknowledgements and pings are read and dropped so its writes never
        // block; Nginx-RTMP counts any incoming data as a ping answer.
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; DRAIN_BUF];
            while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let failure = match self.target.traffic {
            Traffic::Batched => {
                self.replay(&mut publishing.writer, &mut publishing.publisher).await
            }
            shape => self.replay_as(shape, &mut publishing.writer, &mut publishing.publisher).await,
        };
        drain.abort();
        self.shared.error(failure);
        stream.mark_behind(format!("publisher stopped: {failure}"));
    }

    /// Sends the clip in a loop as an encoder of `shape` does, until a write fails; returns
    /// the error kind. Each message leaves when it is due, cut into the writes `shape` makes.
    async fn replay_as(
        &self,
        shape: Traffic,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
        publisher: &mut rtmp::client::Publisher,
    ) -> &'static str {
        let stream = &self.shared.streams[self.index];
        let clip = &*self.clip;
        let t0 = Instant::now();
        let _ = stream.t0.set(t0);
        let chunk = publisher.chunk_size() as usize;
        // ffmpeg's muxer interleaves: a packet leaves once the other track has a packet as
        // late (libavformat's interleaving queue), so audio and video go out in bursts.
        let release = match shape {
            Traffic::Ffmpeg => interleaved_release(clip),
            Traffic::Librtmp | Traffic::Batched => {
                clip.tags.iter().map(|t| u64::from(t.timestamp)).collect()
            }
        };
        let mut message = Vec::with_capacity(BATCH_CAPACITY);
        let mut loop_offset = 0u64;
        let mut index = 0;
        loop {
            let tag = &clip.tags[index];
            let ts = loop_offset + u64::from(tag.timestamp);
            let due = t0 + Duration::from_millis(loop_offset + release[index]);
            if due > Instant::now() {
                sleep_until(due).await;
                self.shared.stats().wake_late.record(Instant::now().saturating_duration_since(due));
            }
            if !(tag.config && loop_offset > 0) {
                message.clear();
                // RTMP timestamps are 32-bit milliseconds and wrap (§5.3.1.3).
                let ts32 = ts as u32;
                publisher.media(tag.kind, ts32, &tag.body, &mut message);
                let writing = Instant::now();
                for range in shape.writes(&message, tag.body.len(), chunk) {
                    match timeout(WRITE_LIMIT, writer.write_all(&message[range])).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return "publish_write",
                        Err(_) => return "publish_write_timeout",
                    }
                }
                if tag.keyframe
                    && self.keyframes.try_send(KeyframeSent { ts_ms: ts, at: writing }).is_err()
                {
                    self.shared.error("keyframe_event_dropped");
                }
                self.shared.stats().send_lag.record(Instant::now().saturating_duration_since(due));
                stream.media_ms.store(ts, Ordering::Relaxed);
            }
            index += 1;
            if index == clip.tags.len() {
                index = 0;
                loop_offset += u64::from(clip.loop_ms);
            }
        }
    }

    /// Sends the clip in a loop until a write fails; returns the error kind (`--traffic
    /// batched`).
    async fn replay(
        &self,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
        publisher: &mut rtmp::client::Publisher,
    ) -> &'static str {
        let stream = &self.shared.streams[self.index];
        let clip = &*self.clip;
        let t0 = Instant::now();
        // Once per stream: a publisher replays once.
        let _ = stream.t0.set(t0);
        let mut out = Vec::with_capacity(BATCH_CAPACITY);
        let mut keyframes: Vec<u64> = Vec::new();
        let mut loop_offset = 0u64;
        let mut index = 0;
        // Due time of the first tag in `out`.
        let mut batch_due: Option<Instant> = None;
        loop {
            let tag = &clip.tags[index];
            let ts = loop_offset + u64::from(tag.timestamp);
            let due = t0 + Duration::from_millis(ts);
            let ready = due <= Instant::now() + BATCH_WINDOW;
            if let Some(first_due) = batch_due
                && (!ready || out.len() >= MAX_BATCH)
            {
                // Keyframes count as sent when the write starts: a server slow to read them
                // pays for it in packaging delay.
                let writing = Instant::now();
                match timeout(WRITE_LIMIT, writer.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return "publish_write",
                    Err(_) => return "publish_write_timeout",
                }
                let sent = Instant::now();
                out.clear();
                batch_due = None;
                for ts_ms in keyframes.drain(..) {
                    if self.keyframes.try_send(KeyframeSent { ts_ms, at: writing }).is_err() {
                        self.shared.error("keyframe_event_dropped");
                    }
                }
                self.shared.stats().send_lag.record(sent.saturating_duration_since(first_due));
                continue;
            }
            if !ready {
                let wake = wake_at(self.epoch, due).max(Instant::now());
                sleep_until(wake).await;
                self.shared
                    .stats()
                    .wake_late
                    .record(Instant::now().saturating_duration_since(wake));
                continue;
            }
            if !(tag.config && loop_offset > 0) {
                batch_due.get_or_insert(due);
                // RTMP timestamps are 32-bit milliseconds and wrap (§5.3.1.3).
                publisher.media(tag.kind, ts as u32, &tag.body, &mut out);
                if tag.keyframe {
                    keyframes.push(ts);
                }
                stream.media_ms.store(ts, Ordering::Relaxed);
            }
            index += 1;
            if index == clip.tags.len() {
                index = 0;
                loop_offset += u64::from(clip.loop_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_releases_a_packet_once_the_other_track_caught_up() {
        let tag = |kind, timestamp| crate::flv::ClipTag {
            kind,
            timestamp,
            body: bytes::Bytes::new(),
            keyframe: false,
            config: false,
        };
        let (a, v) = (rtmp::MediaKind::Audio, rtmp::MediaKind::Video);
        let clip = Clip {
            tags: vec![tag(v, 0), tag(a, 0), tag(a, 23), tag(v, 33), tag(a, 46), tag(a, 69)],
            metadata: None,
            loop_ms: 100,
            media_bytes: 0,
        };
        // Each waits for the other track's next tag: audio 0 and 23 for video 33, video 33
        // for audio 46, audio 46 and 69 for the next loop's first video (100).
        assert_eq!(interleaved_release(&clip), [0, 33, 33, 46, 100, 100]);
        let audio_only = Clip { tags: vec![tag(a, 0), tag(a, 23)], ..clip };
        assert_eq!(interleaved_release(&audio_only), [0, 23]);
    }

    #[test]
    fn wake_ups_land_on_the_grid_within_the_batch_window() {
        let epoch = Instant::now();
        for ms in [0u64, 1, 9, 10, 11, 25, 33, 1000, 12_345] {
            let due = epoch + Duration::from_millis(ms);
            let wake = wake_at(epoch, due);
            assert_eq!(wake.duration_since(epoch).as_nanos() % WAKE_GRID.as_nanos(), 0, "{ms}");
            assert!(wake <= due, "{ms}: never late");
            assert!(wake + BATCH_WINDOW >= due, "{ms}: the tag is ready at the wake-up");
        }
    }
}
