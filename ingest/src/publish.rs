//! One accepted publish: its claim on the stream, its remuxer, its accounting, the status the
//! stats API shows, and the events and callback that bracket it.
//!
//! Media is packaged inline: each frame is remuxed as the connection reads it and finished
//! segments go straight to the store, so a slow packager slows only its own publisher's
//! socket and no queue sits between ingest and packager. `publish_started` is emitted when
//! the first frame is packaged and paired with `publish_stopped` by [`PublishGuard`]'s
//! `Drop`; [`LivePublish`]'s `Drop` ends the stream in the store. Both run on every exit
//! path, a panic included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auth::Recheck;
use auth::key_store::{Grant, Revocation};
use bytes::Bytes;
use packager::{BufferPool, Container, Remuxer, RemuxerConfig};
use rtmp::amf0::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::accounting::Accounting;
use crate::continuity::Parked;
use crate::decision::Request;
use crate::events::{MediaInfo, PublishGuard, StopReason};
use crate::listener::Ingest;
use crate::metadata::EncoderMetadata;
use crate::play::Broadcast;
use crate::push::{MAX_STREAM_TARGETS, Push, PushTarget, Reporting};
use crate::record::Recorder;
use crate::registry::LivePublish;
use crate::status::PublishStatus;

/// How often a live publish re-checks its stored key, so a revocation ends it within this
/// plus the key store's answer time.
pub const REVOCATION_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Whether a publish that stopped for `reason` ends its stream at once (EXT-X-ENDLIST), or
/// leaves it open for the publisher to come back within the reconnect window: a publisher
/// that said it stopped, an operator, a revocation and a shutdown end it; a connection that
/// failed, timed out or closed without unpublishing (OBS losing its network, an encoder
/// killed), and a takeover (the new publisher continues it at once), do not.
pub(crate) fn ends_stream(reason: StopReason, unpublished: bool) -> bool {
    match reason {
        StopReason::ClientClosed => unpublished,
        StopReason::Timeout | StopReason::Error | StopReason::TakenOver | StopReason::LeaseLost => {
            false
        }
        StopReason::ServerShutdown | StopReason::Revoked | StopReason::Kicked => true,
    }
}

/// An accepted publish.
pub(crate) struct Publish {
    ingest: Arc<Ingest>,
    /// The connection's id and the publisher's address.
    id: u64,
    peer: SocketAddr,
    /// Who publishes what: the public stream name, the key's owner, the application.
    stream: String,
    owner: Option<String>,
    app: String,
    /// The publishing name as the client sent it (the key: secret), for `on_publish_done`.
    published_name: String,
    /// The claim on the stream; dropping it ends the stream.
    live: LivePublish,
    /// Re-checks a stored key until the publish ends.
    revocation_watch: Option<JoinHandle<()>>,
    remuxer: Remuxer,
    /// Pairs `publish_started` with `publish_stopped`; made when the first frame is packaged.
    guard: Option<PublishGuard>,
    /// This publish as the stats API shows it.
    status: PublishStatus,
    metadata: EncoderMetadata,
    accounting: Accounting,
    last_media: Instant,
    /// Kinds of packager errors already logged ([`packager::Error::kind`], a handful), so
    /// a broken track logs once, not per frame, whatever values its errors carry.
    logged: Vec<&'static str>,
    /// Whether the "frames dropped" notice was logged.
    logged_drops: bool,
    /// The targets the stream is pushed on to.
    push: Push,
    /// The stream's own push targets (from its key; they hold keys).
    own_push: Vec<String>,
    /// The visibility the push targets were chosen for (the server's go to public streams
    /// only) and the cluster's registry was given.
    private: bool,
    /// The stream as RTMP players get it.
    feed: Feed,
    /// What the store was last told the media is.
    facts: stream_store::MediaFacts,
    /// This publish's recording (`--record-dir`).
    recorder: Option<Recorder>,
    /// The client's `connect` properties, for the callbacks (`on_publish_done`, and
    /// `on_record_done` of a recording that splits or ends).
    client: rtmp::session::ClientInfo,
}

/// A publish's broadcast to RTMP players, closed (its players told) however the publish
/// ends, unless it was parked for the publish that continues the stream.
struct Feed {
    ingest: Arc<Ingest>,
    stream: String,
    broadcast: Arc<Broadcast>,
    parked: bool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.parked {
            self.ingest.broadcasts.close(&self.stream, &self.broadcast);
        }
    }
}

/// Where a publish's push tasks report.
fn reporting(ingest: &Arc<Ingest>) -> Reporting {
    Reporting { events: Arc::clone(&ingest.events), metrics: ingest.metrics.clone() }
}

impl Publish {
    /// The publish of `request`, which was granted `grant` and claimed its stream as `live`.
    pub(crate) fn start(
        ingest: &Arc<Ingest>,
        request: &Request<'_>,
        grant: Grant,
        live: LivePublish,
        segment_buffers: Arc<BufferPool>,
        remuxer: RemuxerConfig,
    ) -> Self {
        let now = Instant::now();
        let status = PublishStatus::accepted(
            request.peer,
            request.app,
            grant.owner.clone(),
            SystemTime::now(),
        );
        ingest.statuses.set(&grant.stream, request.id, status.clone(), true);
        let revocation_watch = grant.revocation.clone().map(|revocation| {
            let watch = watch_revocation(
                Arc::clone(ingest),
                grant.stream.clone(),
                request.key.to_owned(),
                revocation,
                request.id,
            );
            tokio::spawn(watch)
        });
        // A publish continuing an interrupted one takes over its pushes (those to targets it
        // still has) and its players.
        let targets =
            push_targets(&ingest.config.push.targets, &grant.stream, &grant.push, grant.private);
        let parked = ingest.parked.take(&grant.stream);
        let (push, continued) = match parked {
            Some(parked) if live.publication().resumed() => {
                let Parked { push, broadcast } = parked;
                broadcast.continue_after_break();
                let config = &ingest.config.push;
                let push = push.continue_with(&grant.stream, targets, config, &reporting(ingest));
                (push, Some(broadcast))
            }
            parked => {
                if let Some(parked) = parked {
                    crate::continuity::end(ingest, &grant.stream, parked);
                }
                let push =
                    Push::start(&grant.stream, targets, &ingest.config.push, &reporting(ingest));
                (push, None)
            }
        };
        let feed = Feed {
            ingest: Arc::clone(ingest),
            stream: grant.stream.clone(),
            broadcast: ingest.broadcasts.open(&grant.stream, continued),
            parked: false,
        };
        let accounting = Accounting::new(
            ingest.metrics.stream_counters(&grant.stream),
            ingest.metrics.segments.clone(),
            now,
            ingest.config.stats_interval,
        );
        let recorder = ingest.config.record.dir_for(grant.record).map(|dir| {
            let events = Arc::clone(&ingest.events);
            let failures = ingest.metrics.record_failures.clone();
            let stream = grant.stream.clone();
            let on_error = move |error: &std::io::Error| {
                failures.inc();
                warn!(%stream, %error, "recording failed; it resumes at the next segment it can write");
                events.emit(crate::Event::RecordFailed {
                    stream: stream.clone(),
                    error: error.to_string(),
                });
            };
            // As the stream is now: a publisher back within the reconnect window finds it
            // as it left it.
            Recorder::start(
                dir,
                &grant.stream,
                live.publication().is_private(),
                SystemTime::now(),
                remuxer,
                ingest.config.record.format,
                on_error,
            )
        });
        // MPEG-TS segments go to the store as they are written: into the stream's memory
        // file, or recycled heap buffers (fMP4 ones move to the file when popular, so their
        // stream's file opens then).
        let mut packager = Remuxer::with_pool(remuxer, segment_buffers);
        if remuxer.container == Container::Ts {
            packager.set_segment_sink(ingest.store.segment_sink(live.publication()));
        }
        Self {
            ingest: Arc::clone(ingest),
            id: request.id,
            peer: request.peer,
            stream: grant.stream,
            owner: grant.owner,
            app: request.app.to_owned(),
            published_name: request.key.to_owned(),
            live,
            revocation_watch,
            remuxer: packager,
            guard: None,
            status,
            metadata: EncoderMetadata::default(),
            accounting,
            last_media: now,
            logged: Vec::new(),
            logged_drops: false,
            push,
            own_push: grant.push,
            private: grant.private,
            feed,
            facts: stream_store::MediaFacts::default(),
            recorder,
            client: request.client.clone(),
        }
    }

    /// Changes to `Some(reason)` when the publish is told to stop (takeover, kick, revocation).
    pub(crate) fn stop_requested(&self) -> &watch::Receiver<Option<StopReason>> {
        self.live.stop_requested()
    }

    /// When the last media message arrived.
    pub(crate) fn last_media(&self) -> Instant {
        self.last_media
    }

    /// When the next `stream_stats` is due.
    pub(crate) fn next_stats(&self) -> Instant {
        self.accounting.next_stats()
    }

    /// The frame expected to close the open segment or part (see [`Remuxer::next_cut`]).
    pub(crate) fn next_cut(&self) -> Option<packager::NextCut> {
        self.remuxer.next_cut()
    }

    /// The stream was made private (or public) while live: the server's push targets end
    /// (or start, with the stream's metadata and configurations, never media from while it
    /// was private: they go on at the next keyframe), and the cluster's registry is told.
    fn visibility_changed(&mut self, private: bool) {
        self.private = private;
        if let Some(member) = self.ingest.cluster().cloned() {
            let (ingest, stream) = (Arc::clone(&self.ingest), self.stream.clone());
            // The visibility as it is when written, not when the change was seen: changes in
            // quick succession, a task each, may finish in any order.
            tokio::spawn(async move {
                let private = ingest.store.is_private(&stream);
                member.set_private(&stream, private).await;
            });
        }
        let server = &self.ingest.config.push.targets;
        let targets = push_targets(server, &self.stream, &self.own_push, private);
        info!(stream = %self.stream, private, "the stream's visibility changed: its push targets follow");
        let (config, reporting) = (&self.ingest.config.push, reporting(&self.ingest));
        let seed = self.feed.broadcast.seed();
        let push = std::mem::take(&mut self.push);
        self.push = push.retarget(&self.stream, targets, &seed, config, &reporting);
    }

    /// `n` bytes arrived on the connection.
    pub(crate) fn received(&mut self, n: usize) {
        self.accounting.received(n);
    }

    /// Remuxes one media message and publishes any finished segments; the first frame
    /// packaged makes the stream live (`publish_started`).
    pub(crate) fn media(&mut self, kind: rtmp::MediaKind, timestamp: u32, payload: &Bytes) {
        self.last_media = Instant::now();
        self.accounting.frame();
        let private = self.live.publication().is_private();
        if private != self.private {
            self.visibility_changed(private);
        }
        self.push.media(kind, timestamp, payload);
        self.feed.broadcast.media(kind, timestamp, payload);
        let kind = match kind {
            rtmp::MediaKind::Audio => packager::TagKind::Audio,
            rtmp::MediaKind::Video => {
                if let Some(colour) =
                    packager::flv::video_metadata(payload).and_then(crate::metadata::colour)
                {
                    self.remuxer.set_colour(colour);
                }
                packager::TagKind::Video
            }
        };
        if let Some(recorder) = &mut self.recorder {
            let ended =
                (recorder.private() != private).then(|| recorder.split(private, SystemTime::now()));
            recorder.media(kind, timestamp, payload);
            if let Some(ended) = ended {
                info!(stream = %self.stream, private, "the stream's visibility changed: its recording goes on in a new file");
                self.record_done(ended);
            }
        }
        if let Err(e) = self.remuxer.push(kind, timestamp, payload)
            && !self.logged.contains(&e.kind())
        {
            warn!(stream = %self.stream, error = %e, "media dropped (logged once per kind)");
            self.logged.push(e.kind());
        }
        if !self.logged_drops && self.remuxer.stats().frames_dropped > 0 {
            self.logged_drops = true;
            info!(
                stream = %self.stream,
                "dropping frames until a sequence header and a keyframe (logged once; see stats)"
            );
        }
        let mut changed = self.publish_segments();
        if self.guard.is_none() && self.remuxer.stats().frames > 0 {
            self.status.media = self.media_info();
            self.guard = Some(PublishGuard::start(
                Arc::clone(&self.ingest.events),
                &self.stream,
                self.owner.clone(),
                &self.app,
                self.peer,
                self.status.media.clone(),
                self.live.publication().resumed(),
            ));
            changed = true;
        }
        if changed {
            self.refresh_status();
        }
    }

    /// The encoder's `onMetaData`.
    pub(crate) fn metadata(&mut self, properties: &[(String, Value)]) {
        self.metadata = EncoderMetadata::from_properties(properties);
        let mut values = Vec::new();
        rtmp::amf0::encode(&Value::String("onMetaData".into()), &mut values);
        rtmp::amf0::encode(&Value::EcmaArray(properties.to_vec()), &mut values);
        let values = Bytes::from(values);
        if let Some(recorder) = &mut self.recorder {
            recorder.metadata(&values);
        }
        self.push.metadata(&values);
        self.feed.broadcast.metadata(&values);
    }

    /// Emits `stream_stats` (once live) and schedules the next.
    pub(crate) fn emit_stats(&mut self) {
        let now = Instant::now();
        let interval = self.ingest.config.stats_interval;
        let stats = self.remuxer.stats();
        let rates = self.accounting.stats_window(now, stats.video_frames, interval);
        if self.guard.is_none() {
            return;
        }
        self.ingest.events.emit(crate::Event::StreamStats {
            stream: self.stream.clone(),
            bitrate_bps: rates.bitrate_bps,
            fps: rates.fps,
            keyframe_interval_ms: stats.keyframe_interval_ms,
            segments: self.accounting.segments(),
            viewers: self.ingest.store.viewers(&self.stream, now.into_std()),
        });
    }

    /// Ends the publish for `reason`: the last segment, the final status, the stop event, the
    /// stream's end in the store (or, for an interrupted publish, its reconnect window, see
    /// [`ends_stream`]) and `on_publish_done` (with the client's `connect` fields).
    /// `unpublished`: the client said it stopped (`FCUnpublish`, `deleteStream`).
    pub(crate) fn end(mut self, reason: StopReason, unpublished: bool) {
        if let Some(watch) = self.revocation_watch.take() {
            watch.abort();
        }
        self.ingest.metrics.stream_ended(&self.stream);
        self.remuxer.finish();
        self.publish_segments();
        self.refresh_status();
        self.status.ended = Some((SystemTime::now(), reason));
        self.ingest.statuses.set(&self.stream, self.id, self.status.clone(), false);
        let window = self.ingest.store.reconnect_window();
        let interrupted = !ends_stream(reason, unpublished) && !window.is_zero();
        if interrupted {
            self.live.publication().interrupted();
            // Pushes and players wait for the publisher too.
            self.feed.parked = true;
            let parked = Parked {
                push: std::mem::take(&mut self.push),
                broadcast: Arc::clone(&self.feed.broadcast),
            };
            crate::continuity::park(&self.ingest, &self.stream, parked, window);
        }
        if let Some(guard) = &mut self.guard {
            guard.frames = self.remuxer.stats().frames;
            guard.bytes = self.accounting.bytes();
            guard.reason = reason;
            guard.reconnect_window = interrupted.then_some(window);
        }
        if interrupted {
            info!(stream = %self.stream, reason = reason.as_str(), "publish interrupted; the stream waits {window:?} for its publisher");
        } else {
            info!(stream = %self.stream, reason = reason.as_str(), "publish ended");
        }
        self.ingest.publish_done(&self.request());
        if let Some(recorder) = self.recorder.take() {
            self.record_done(recorder);
        }
        // Dropping `live` ends the playlist and releases the name; the guard emits the stop.
    }

    /// This publish's request, as the callbacks describe it, with the client's `connect`
    /// fields.
    fn request(&self) -> Request<'_> {
        let (app, key, client) = (&self.app, &self.published_name, &self.client);
        Request { app, key, peer: self.peer, id: self.id, client }
    }

    /// Finishes `recorder`'s file: `record_done` and `on_record_done` (with the client's
    /// `connect` fields) once it is written.
    fn record_done(&self, recorder: Recorder) {
        let request = self.request();
        // Named by the public stream name (the path holds it too), never the key.
        let call =
            crate::hooks::Call { call: "record_done", name: &self.stream, ..request.call("") };
        self.ingest.record_done(&self.stream, recorder, call.form());
    }

    /// Moves what the remuxer made to the store (MPEG-TS segments, or fMP4 init segments,
    /// fragments and the ends of parts and segments); whether a segment was completed.
    fn publish_segments(&mut self) -> bool {
        let mut any = false;
        while let Some(segment) = self.remuxer.pull() {
            if let Some(sequence) = self.live.publication().push(segment, SystemTime::now()) {
                self.accounting.segment();
                debug!(stream = %self.stream, sequence, "segment ready");
                any = true;
            }
        }
        // One change for all of it (see `push_fmp4_all`), and none, not even the stream's
        // lock, for the messages that made nothing.
        let Some(first) = self.remuxer.pull_fmp4() else { return any };
        let outputs = std::iter::once(first).chain(std::iter::from_fn(|| self.remuxer.pull_fmp4()));
        if let Some(done) = self.live.publication().push_fmp4_all(outputs, SystemTime::now()) {
            for sequence in done {
                self.accounting.segment();
                debug!(stream = %self.stream, sequence, "segment ready");
            }
            any = true;
        }
        any
    }

    /// Refreshes the status (counters, and rates once their window is long enough) and posts
    /// it on the board.
    fn refresh_status(&mut self) {
        let stats = self.remuxer.stats();
        if let Some(rates) = self.accounting.status_window(Instant::now(), stats.video_frames) {
            self.status.bitrate_bps = rates.bitrate_bps;
            self.status.fps = rates.fps;
        }
        let status = &mut self.status;
        status.bytes = self.accounting.bytes();
        status.frames = stats.frames;
        status.segments = self.accounting.segments();
        status.keyframe_interval_ms = stats.keyframe_interval_ms;
        self.ingest.statuses.set(&self.stream, self.id, status.clone(), false);
        // What the stream is, for multivariant playlists (checked as segments complete).
        let media = self.media_info();
        let facts = stream_store::MediaFacts {
            codecs: media.video_codec.into_iter().chain(media.audio_codec).collect(),
            resolution: media.width.zip(media.height),
            frame_rate: media.fps,
        };
        if facts != self.facts {
            self.live.publication().set_media(facts.clone());
            self.facts = facts;
        }
    }

    /// What is known of the media.
    fn media_info(&self) -> MediaInfo {
        let audio = self.remuxer.audio_config();
        MediaInfo {
            video_codec: self.remuxer.video_config().map(|c| c.codec_string()),
            width: self.metadata.width,
            height: self.metadata.height,
            fps: self.metadata.fps,
            audio_codec: audio.map(|a| a.codec_string()),
            audio_sample_rate: audio.map(|a| a.sample_rate()),
            audio_channels: audio.and_then(|a| a.channels()),
        }
    }
}

/// The server's push targets (not for a private stream: they are for every stream, often
/// public platforms), then the stream's `own` (from its key document); a URL that does not
/// parse is skipped with a log line that does not show it (it holds a key).
fn push_targets(
    server: &[PushTarget],
    stream: &str,
    own: &[String],
    private: bool,
) -> Vec<PushTarget> {
    let mut targets = if private { Vec::new() } else { server.to_vec() };
    if own.len() > MAX_STREAM_TARGETS {
        let skipped = own.len() - MAX_STREAM_TARGETS;
        warn!(%stream, skipped, "more push targets than {MAX_STREAM_TARGETS}: the rest skipped");
    }
    for (index, url) in own.iter().take(MAX_STREAM_TARGETS).enumerate() {
        match PushTarget::parse(url) {
            Ok(target) => targets.push(target),
            Err(e) => warn!(%stream, index, error = %e, "push target skipped"),
        }
    }
    targets
}

/// Re-checks the key or token of a live publish every [`REVOCATION_CHECK_INTERVAL`] and
/// ends the publish once it is revoked. A key store that cannot answer does not end it. A
/// stored key made private or public since (the CLI, the backend writing the document)
/// applies to the live stream within the interval and the store's
/// [`auth::RECHECK_MAX_AGE`]: the key is the truth for a stream it publishes (the admin API
/// changes both, and the embedded store reads its file again after its own change). A
/// re-check that read the key just before an admin change can undo it until the next one,
/// 2 s later.
async fn watch_revocation(
    ingest: Arc<Ingest>,
    stream: String,
    key: String,
    revocation: Revocation,
    id: u64,
) {
    let mut tick = tokio::time::interval(REVOCATION_CHECK_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match ingest.authorizer.recheck(&key, &revocation).await {
            Recheck::Revoked => {
                if ingest.registry.stop_if_held_by(&stream, id, StopReason::Revoked) {
                    info!(%stream, "key or token revoked: ending the publish");
                }
                return;
            }
            Recheck::Holds(Some(grant)) if grant.private != ingest.store.is_private(&stream) => {
                ingest.store.set_private(&stream, grant.private);
                let visibility = if grant.private { "private" } else { "public" };
                info!(%stream, visibility, "the stream's key changed its visibility");
            }
            Recheck::Holds(_) | Recheck::Unknown => {}
        }
    }
}
