//! One RTMP connection's task: moves bytes between the socket and its sans-IO
//! [`Session`], answers publish requests through [`decision`](crate::decision), hands media
//! to its [`Publish`], and enforces the connection's deadlines.
//!
//! A connection is in one phase at a time, each with its deadline: handshake, then waiting
//! for a publish request, then publishing (media must keep coming). Reads are merged while no
//! segment can close ([`merged_read`]). Shutdown and a stop request (takeover, kick,
//! revocation) end it between reads.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auth::key_store::redact;
use rtmp::session::{Action, Session, SessionError};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tracing::{debug, info};

use crate::admission::{ConnectionSlot, Progress};
use crate::decision::{self, Accepted, Refusal, Request};
use crate::events::{Event, StopReason};
use crate::listener::Ingest;
use crate::merged_read;
use crate::metrics::PlayRefusalLabel;
use crate::publish::Publish;
use crate::push::{Item, Outbox};
use crate::socket::{READ_BUFFER, Socket};

/// Messages a player is sent per socket write, at most.
const PLAY_BATCH: usize = 64;
/// `onMetaData` properties in the stream's debug line, and the characters of each shown:
/// enough for what describes a stream (encoder, size, rates), while a publisher's message
/// may hold 8 MiB of them.
const LOGGED_METADATA_PROPERTIES: usize = 16;
const LOGGED_METADATA_PROPERTY: usize = 128;
/// Characters of a stream name shown in a play refusal's log line (names are short; the
/// player chose this one).
const SHOWN_NAME: usize = 64;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] SessionError),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no publish or play request within {0:?}")]
    PublishTimeout(Duration),
    #[error("no audio or video for {0:?}")]
    NoMedia(Duration),
    #[error("client did not read for {0:?}")]
    WriteTimeout(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("not authenticated, and its place was needed for a new connection")]
    Evicted,
    #[error("publish ended: {}", .0.as_str())]
    Ended(StopReason),
}

impl ConnectionError {
    /// Why a publish that was live on the connection ended.
    fn stop_reason(result: &Result<(), Self>) -> StopReason {
        match result {
            Ok(()) => StopReason::ClientClosed,
            Err(Self::NoMedia(_)) => StopReason::Timeout,
            Err(Self::Shutdown) => StopReason::ServerShutdown,
            Err(Self::Ended(reason)) => *reason,
            Err(_) => StopReason::Error,
        }
    }
}

/// An accepted play.
struct Player {
    outbox: Arc<Outbox>,
    /// The stream, and the query the player gave (its viewer token, for private streams).
    stream: String,
    query: String,
}

/// A publish's stop channel, and the wait on it.
type StopWait = (
    watch::Receiver<Option<StopReason>>,
    std::pin::Pin<Box<dyn Future<Output = StopReason> + Send>>,
);

pub(crate) struct Connection {
    id: u64,
    ingest: Arc<Ingest>,
    socket: Socket,
    peer: SocketAddr,
    session: Session,
    publish: Option<Publish>,
    /// Set once a publish was refused: the connection closes after the reply is sent.
    refused: bool,
    /// A play accepted: the connection serves it until the player or the stream ends.
    player: Option<Player>,
    accepted: Instant,
    stop: watch::Receiver<bool>,
    /// Its place among the open connections, and how far it got before authentication.
    slot: ConnectionSlot,
    progress: Progress,
}

impl Connection {
    pub(crate) fn new(
        ingest: Arc<Ingest>,
        socket: Socket,
        peer: SocketAddr,
        id: u64,
        stop: watch::Receiver<bool>,
        slot: ConnectionSlot,
    ) -> Self {
        Self {
            id,
            ingest,
            socket,
            peer,
            session: Session::new(id as u32 ^ u32::from(peer.port())),
            publish: None,
            refused: false,
            player: None,
            accepted: Instant::now(),
            stop,
            slot,
            progress: Progress::Accepted,
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), ConnectionError> {
        let result = self.read_loop().await;
        if let Some(publish) = self.publish.take() {
            publish.end(ConnectionError::stop_reason(&result), false);
        }
        let _ = self.socket.shutdown().await;
        result
    }

    /// The instant the current phase must have progressed by, and the error if it has not.
    fn deadline(&self) -> (Instant, ConnectionError) {
        let limits = &self.ingest.config.limits;
        if let Some(publish) = &self.publish {
            (
                publish.last_media() + limits.no_media_timeout,
                ConnectionError::NoMedia(limits.no_media_timeout),
            )
        } else if !self.session.handshake_done() {
            (
                self.accepted + limits.handshake_timeout,
                ConnectionError::HandshakeTimeout(limits.handshake_timeout),
            )
        } else {
            (
                self.accepted + limits.publish_timeout,
                ConnectionError::PublishTimeout(limits.publish_timeout),
            )
        }
    }

    async fn read_loop(&mut self) -> Result<(), ConnectionError> {
        /// The instant merged reads' ticks count from: the same for every connection, so a
        /// thread's publishers are read at one wake-up.
        static TICKS: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        // One timer each for the phase deadline and the stats tick, moved as they change: a
        // timer pushed later only updates its instant, where a fresh timeout per read took
        // the timer wheel's lock twice for each of the ~80 messages a second of a stream.
        let (deadline, _) = self.deadline();
        let late_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(late_timer);
        let stats_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(stats_timer);
        // Armed while bytes gather in the socket below its low-water mark (merged reads):
        // when it fires, whatever is queued is read.
        let pause_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(pause_timer);
        // Made with the room for marks, at the first mark (`set_low_water`).
        let mut guard = None;
        let mut pacer = merged_read::ReadPacer::new(
            self.ingest.config.max_read_pause,
            self.ingest.config.limits.no_media_timeout,
            *TICKS.get_or_init(std::time::Instant::now),
        );
        if !self.socket.is_plain() {
            // The kernel sees TLS records, not RTMP bytes, and rustls keeps what it has
            // decrypted: over RTMPS every message is read as it arrives.
            pacer.disable();
        }
        // Shutdown and stop requests are waited for by futures made once per connection (or
        // publish), not once per read: each new wait joins, and on leaving quits, the
        // channel's waiter list, under a lock the shutdown channel shares with every
        // connection.
        let mut stop = self.stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        tokio::pin!(shutdown);
        // Completes if the connection must give its place up while unauthenticated.
        let evicted = self.slot.evicted();
        tokio::pin!(evicted);
        let mut stop_wait: Option<StopWait> = None;
        loop {
            match (&self.publish, &stop_wait) {
                (Some(publish), Some((channel, _)))
                    if publish.stop_requested().same_channel(channel) => {}
                (Some(publish), _) => {
                    let channel = publish.stop_requested().clone();
                    stop_wait = Some((channel.clone(), Box::pin(stop_requested(channel))));
                }
                (None, Some(_)) => stop_wait = None,
                (None, None) => {}
            }
            let (deadline, late) = self.deadline();
            if late_timer.deadline() != deadline {
                late_timer.as_mut().reset(deadline);
            }
            let stats_at = self.publish.as_ref().map(Publish::next_stats);
            if let Some(at) = stats_at
                && stats_timer.deadline() != at
            {
                stats_timer.as_mut().reset(at);
            }
            // Whether the read was the timer's, and when its last bytes arrived.
            let (mut timed, mut arrived) = (false, None);
            let read = tokio::select! {
                // Shutdown and stop first, so a peer that never pauses cannot starve them;
                // then data before the deadline, as a timeout around the read would.
                biased;
                () = &mut shutdown => return Err(ConnectionError::Shutdown),
                () = &mut evicted => {
                    self.ingest.metrics.connections_evicted.inc();
                    return Err(ConnectionError::Evicted);
                }
                reason = async {
                    match stop_wait.as_mut() {
                        Some((_, requested)) => requested.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => return Err(ConnectionError::Ended(reason)),
                read = self.socket.read_with(|bytes| {
                    (bytes.len(), Instant::now(), self.session.handle_bytes(bytes))
                }) => Some(read?),
                // The tick or the cut's frame is due: what gathered below the mark, which
                // the runtime was never told of, is read at once. Nothing queued is a read
                // of no bytes: the pacer plans again (a cut's frame due and not there turns
                // reads immediate).
                () = &mut pause_timer, if pacer.low_water() > 1 => {
                    timed = true;
                    match self.socket.read_queued(|bytes, stamp| {
                        arrived = stamp.and_then(arrival_instant);
                        (bytes.len(), Instant::now(), self.session.handle_bytes(bytes))
                    }) {
                        Ok(read) => Some(read),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            Some(Some((0, Instant::now(), Ok(Vec::new()))))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                () = &mut late_timer => return Err(late),
                () = &mut stats_timer, if stats_at.is_some() => None,
            };
            let Some(read) = read else {
                if let Some(publish) = &mut self.publish {
                    publish.emit_stats();
                }
                continue;
            };
            // `read_at` is when the bytes were read, not when they were handled: the merged
            // reads' clock of the publisher's arrivals counts from it for reads the socket
            // woke (timed reads count from the kernel's stamp, `arrived`).
            let Some((n, read_at, actions)) = read else {
                return Ok(());
            };
            if let Some(publish) = &mut self.publish {
                publish.received(n);
            }
            let actions = actions?;
            self.note_progress();
            self.perform(actions).await?;
            if let Some(error) = self.session.error() {
                // The good messages before the fault were handled above.
                return Err(error.clone().into());
            }
            if self.refused {
                return Ok(());
            }
            if let Some(player) = self.player.take() {
                if pacer.low_water() > 1 {
                    // A publisher turned player: its messages are read as they come.
                    pacer.disable();
                    crate::low_water::set(self.socket.tcp(), 1)?;
                }
                self.ingest.metrics.players.inc();
                let played = self.play(&player, shutdown.as_mut()).await;
                self.ingest.metrics.players.dec();
                return played;
            }
            let next_cut = self.publish.as_ref().and_then(Publish::next_cut);
            // A read the socket woke came as its bytes did.
            let arrived = if timed { arrived } else { Some(read_at.into_std()) };
            let (next, mark) =
                pacer.after_read_arrived(n, READ_BUFFER, read_at.into_std(), arrived, next_cut);
            if let Some(mark) = mark {
                self.set_low_water(mark, &mut pacer, &mut guard)?;
            }
            if let merged_read::NextRead::Gather { fallback, .. } = next {
                pause_timer.as_mut().reset(read_at + fallback);
            }
        }
    }

    /// Tells the admission how far an unauthenticated connection got, when that changed.
    fn note_progress(&mut self) {
        if self.publish.is_some() {
            return;
        }
        let progress = if self.session.is_connected() {
            Progress::Connected
        } else if self.session.handshake_done() {
            Progress::HandshakeDone
        } else {
            Progress::Handshaking
        };
        if progress > self.progress {
            self.progress = progress;
            self.slot.progressed(progress, std::time::Instant::now());
        }
    }

    /// Sets the socket's receive low-water mark, and leaves the TCP window as it was
    /// (`low_water::WindowGuard`). If the system refuses a mark above 1, or the guard fails,
    /// reads turn immediate (the mark back to 1); if it refuses 1, bytes below the mark it
    /// kept could wait unseen, so the connection ends.
    fn set_low_water(
        &self,
        bytes: usize,
        pacer: &mut merged_read::ReadPacer,
        guard: &mut Option<crate::low_water::WindowGuard>,
    ) -> Result<(), ConnectionError> {
        let socket = self.socket.tcp();
        let mut bytes = bytes;
        let mut set = || {
            if bytes > 1 && guard.is_none() {
                // The first mark: the room for two, and marks within what the kernel made
                // (older kernels, a small `tcp_rmem` maximum or a locked buffer make less).
                let (made, room) =
                    crate::low_water::WindowGuard::make_room(socket, merged_read::ROOM)?;
                *guard = Some(made);
                bytes = pacer.set_room(room);
                if let Err(error) = crate::low_water::stamp_arrivals(socket) {
                    debug!(%error, "no arrival stamps: reads on the timer do not set the clock");
                }
            }
            crate::low_water::set(socket, bytes)?;
            match guard.as_mut() {
                Some(guard) if bytes > 1 => guard.after_mark(socket, bytes),
                _ => Ok(false),
            }
        };
        let set = set();
        match set {
            Ok(false) => Ok(()),
            Ok(true) => {
                debug!(bytes, "the kernel clamped the TCP window to the low-water mark; undone");
                Ok(())
            }
            Err(error) if bytes == 1 => Err(error.into()),
            Err(error) => {
                debug!(%error, "receive low-water mark not set; reading every message");
                pacer.disable();
                // The socket may keep an earlier mark above 1 (marks follow the rate).
                Ok(crate::low_water::set(self.socket.tcp(), 1)?)
            }
        }
    }

    /// Performs actions in order; decisions add the actions of their answers.
    async fn perform(&mut self, actions: Vec<Action>) -> Result<(), ConnectionError> {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(bytes) => {
                    let limit = self.ingest.config.limits.write_timeout;
                    // Flushed: over TLS, rustls may hold what the socket did not take.
                    let write = async {
                        self.socket.write_all(&bytes).await?;
                        self.socket.flush().await
                    };
                    timeout(limit, write)
                        .await
                        .map_err(|_| ConnectionError::WriteTimeout(limit))??;
                }
                Action::PublishRequested { request_id, app, key } => {
                    let answer = self.answer_publish(request_id, &app, &key).await?;
                    queue.extend(answer);
                }
                Action::Media { kind, timestamp, payload } => {
                    if let Some(publish) = &mut self.publish {
                        publish.media(kind, timestamp, &payload);
                    }
                }
                Action::Metadata(properties) => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let summary: Vec<String> = properties
                            .iter()
                            .take(LOGGED_METADATA_PROPERTIES)
                            .map(|(k, v)| {
                                capped(LOGGED_METADATA_PROPERTY, |out| write!(out, "{k}={v}"))
                            })
                            .collect();
                        debug!(metadata = %summary.join(" "), "stream metadata");
                    }
                    if let Some(publish) = &mut self.publish {
                        publish.metadata(&properties);
                    }
                }
                Action::PublishEnded => {
                    if let Some(publish) = self.publish.take() {
                        publish.end(StopReason::ClientClosed, true);
                    }
                }
                Action::PlayRequested { request_id, app, name } => {
                    let answer = self.answer_play(request_id, &app, &name)?;
                    queue.extend(answer);
                }
                // Ended before the play loop ran: nothing to stop.
                Action::PlayEnded => self.refused = true,
            }
        }
        Ok(())
    }

    /// Decides a play request (the stream must be live; a private one needs a viewer token
    /// in the name's query) and answers it: the session's actions for the answer.
    fn answer_play(
        &mut self,
        request_id: u32,
        app: &str,
        name: &str,
    ) -> Result<Vec<Action>, ConnectionError> {
        let (stream, query) = name.split_once('?').unwrap_or((name, ""));
        let limits = self.ingest.config.play;
        let shown: String = stream.chars().take(SHOWN_NAME).collect();
        let refuse = |this: &mut Self, reason: &'static str, code: &str, description: &str| {
            this.refused = true;
            this.ingest.metrics.plays_refused.get_or_create(&PlayRefusalLabel { reason }).inc();
            this.ingest.warn_limited(format_args!("play of {shown:?} refused: {description}"));
            this.session.reject_play(request_id, code, description)
        };
        if !limits.enabled {
            let description = "RTMP play is turned off here; use the HLS URL.";
            return Ok(refuse(self, "off", "NetStream.Play.Failed", description)?);
        }
        let broadcast =
            (app == self.ingest.config.app).then(|| self.ingest.broadcasts.get(stream)).flatten();
        let Some(broadcast) = broadcast else {
            let description = "No live stream by that name.";
            return Ok(refuse(self, "not_found", "NetStream.Play.StreamNotFound", description)?);
        };
        let players = usize::try_from(self.ingest.metrics.players.get()).unwrap_or(0);
        let stream_full =
            limits.max_per_stream > 0 && broadcast.player_count() >= limits.max_per_stream;
        let room = crate::play::player_room(&limits, &self.ingest.config.limits);
        if players >= room || stream_full {
            let description = "Too many players; try again later.";
            return Ok(refuse(self, "full", "NetStream.Play.Failed", description)?);
        }
        if self.ingest.store.is_private(stream) {
            let token = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .filter(|t| !t.is_empty());
            let refused = match &self.ingest.config.viewers {
                Some(viewers) => viewers.admit(stream, token).err(),
                None => Some(auth::viewer::ViewerRefused::Forbidden(
                    "the server verifies no viewer tokens".into(),
                )),
            };
            if let Some(refused) = refused {
                let description =
                    format!("private stream: {refused} (play <name>?token=<viewer token>)");
                return Ok(refuse(self, "private", "NetStream.Play.Failed", &description)?);
            }
        }
        let limit = match self.ingest.config.push.queue_bytes {
            0 => crate::push::MAX_QUEUE_BYTES,
            bytes => bytes,
        };
        let Some(outbox) = broadcast.join(limit) else {
            let description = "The stream just ended.";
            return Ok(refuse(self, "not_found", "NetStream.Play.StreamNotFound", description)?);
        };
        self.player = Some(Player { outbox, stream: stream.to_owned(), query: query.to_owned() });
        self.slot.authenticated();
        info!(stream = %shown, "player started");
        Ok(self.session.accept_play(request_id)?)
    }

    /// Serves a player: the stream's messages from `outbox` as they come, what the player
    /// sends (acknowledgements, `deleteStream`) read meanwhile, until either ends, a write
    /// stalls past the write timeout, or the server shuts down.
    async fn play(
        &mut self,
        player: &Player,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), ConnectionError> {
        let outbox = &player.outbox;
        let limit = self.ingest.config.limits.write_timeout;
        let mut out = Vec::new();
        let mut recheck = tokio::time::interval(crate::play::PLAYER_RECHECK);
        recheck.tick().await;
        // The stream's timestamp of the first message this player got.
        let mut epoch: Option<u32> = None;
        loop {
            let (batch, ended) = {
                let mut queue = outbox.lock();
                let batch: Vec<Item> =
                    std::iter::from_fn(|| queue.pop()).take(PLAY_BATCH).collect();
                (batch, queue.ended)
            };
            let drained = batch.len() < PLAY_BATCH;
            for item in batch {
                match item {
                    Item::Metadata(values) => self.session.play_metadata(&values, &mut out),
                    Item::Media { kind, timestamp, payload, .. } => {
                        // Each player's clock starts at 0, as Nginx-RTMP's does (`atc off`);
                        // audio interleaved a few milliseconds before the first keyframe is
                        // held at 0 rather than wrapped.
                        let base = *epoch.get_or_insert(timestamp);
                        let timestamp = timestamp.saturating_sub(base);
                        self.session.play_media(kind, timestamp, &payload, &mut out);
                    }
                }
            }
            if ended && drained {
                self.session.play_ended(&mut out);
            }
            if !out.is_empty() {
                let write = async {
                    self.socket.write_all(&out).await?;
                    self.socket.flush().await
                };
                timeout(limit, write).await.map_err(|_| ConnectionError::WriteTimeout(limit))??;
                out.clear();
            }
            if ended && drained {
                info!("player ended: the stream ended");
                return Ok(());
            }
            // A player whose queue stays full (it reads slower than the stream) goes through
            // the checks below each batch too, without waiting.
            tokio::select! {
                biased;
                () = &mut shutdown => return Err(ConnectionError::Shutdown),
                _ = recheck.tick() => {
                    if !self.may_still_play(player) {
                        info!("player ended: the stream is private and its token does not admit it (any more)");
                        self.session.play_ended(&mut out);
                        let _ = timeout(limit, self.socket.write_all(&out)).await;
                        return Ok(());
                    }
                }
                read = self.socket.read_with(|bytes| self.session.handle_bytes(bytes)) => {
                    let Some(actions) = read? else {
                        info!("player ended: it closed the connection");
                        return Ok(());
                    };
                    let actions = actions?;
                    if let Some(error) = self.session.error() {
                        return Err(error.clone().into());
                    }
                    for action in actions {
                        match action {
                            Action::Send(bytes) => out.extend_from_slice(&bytes),
                            Action::PlayEnded => {
                                info!("player ended: it stopped");
                                return Ok(());
                            }
                            _ => {}
                        }
                    }
                }
                () = std::future::ready(()), if !drained => {}
                () = outbox.wake.notified() => {}
            }
        }
    }

    /// Whether `player` may go on: a stream that is (or became) private needs the token the
    /// player gave to admit it now (a token that expired no longer does).
    fn may_still_play(&self, player: &Player) -> bool {
        if !self.ingest.store.is_private(&player.stream) {
            return true;
        }
        let token = player.query.split('&').find_map(|pair| pair.strip_prefix("token="));
        self.ingest
            .config
            .viewers
            .as_ref()
            .is_some_and(|viewers| viewers.admit(&player.stream, token).is_ok())
    }

    /// Decides a publish request and answers it: the session's actions for the answer.
    async fn answer_publish(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
    ) -> Result<Vec<Action>, ConnectionError> {
        let ingest = Arc::clone(&self.ingest);
        self.progress = Progress::Deciding;
        self.slot.progressed(Progress::Deciding, std::time::Instant::now());
        let client = self.session.client_info().clone();
        let request = Request { app, key, peer: self.peer, id: self.id, client: &client };
        match decision::decide(&ingest, &request).await {
            Ok(Accepted { grant, live }) => {
                let actions = self.session.accept_publish(request_id)?;
                self.slot.authenticated();
                ingest.metrics.publishes_accepted.inc();
                let owner = grant.owner.as_deref().unwrap_or("-");
                info!(stream = %grant.stream, %app, key = %redact(key), %owner, "publish accepted");
                tracing::Span::current().record("stream", grant.stream.as_str());
                self.publish = Some(Publish::start(
                    &ingest,
                    &request,
                    grant,
                    live,
                    Arc::clone(&ingest.segment_buffers),
                    ingest.config.remuxer,
                ));
                Ok(actions)
            }
            Err(refusal) => {
                if refusal.owes_done {
                    ingest.publish_done(&request);
                }
                self.refuse(request_id, app, key, &refusal)
            }
        }
    }

    /// Tells the client why its publish is refused, and reports it.
    fn refuse(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
        refusal: &Refusal,
    ) -> Result<Vec<Action>, ConnectionError> {
        let (reason, description) = (refusal.reason.as_str(), &refusal.description);
        self.ingest.metrics.rejected(refusal.reason);
        let address = auth::address::group(self.peer.ip(), self.ingest.config.limits.ipv6_prefix);
        if self.ingest.rejection_reports.allow(address, Instant::now().into_std()) {
            let app = shown_app(app);
            self.ingest.warn_limited(format_args!(
                "publish refused: {description} (app={app} key={} reason={reason})",
                redact(key)
            ));
            if matches!(self.ingest.rejection_events.allow(), crate::limits::Verdict::Log { .. }) {
                self.ingest.events.emit(Event::PublishRejected {
                    reason: refusal.reason,
                    app,
                    remote: self.peer,
                });
            }
        }
        self.refused = true;
        Ok(self.session.reject_publish(request_id, refusal.code, description)?)
    }
}

/// Completes with the reason when the publish is told to stop; never without one.
async fn stop_requested(mut channel: watch::Receiver<Option<StopReason>>) -> StopReason {
    let reason = channel.wait_for(Option::is_some).await.ok().and_then(|reason| *reason);
    match reason {
        Some(reason) => reason,
        // The sender is gone (cannot happen while the publish holds its registration).
        None => std::future::pending().await,
    }
}

/// A refused publish's application as logged and reported: its first path segment, with
/// control characters replaced. A client with its whole URL in the server field sends its
/// stream key inside the application (`live/KEY`), and a line break would forge log lines.
fn shown_app(app: &str) -> String {
    let (first, rest) =
        app.split_once('/').map_or((app, None), |(first, rest)| (first, Some(rest)));
    let mut shown: String = first
        .chars()
        .map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c })
        .collect();
    if rest.is_some() {
        shown.push_str("/…");
    }
    shown
}

/// What `write` formats, cut to `max` characters; the formatting stops there, so a huge
/// value costs no more than the cut.
fn capped(max: usize, write: impl FnOnce(&mut Capped) -> std::fmt::Result) -> String {
    let mut capped = Capped { text: String::new(), left: max };
    // An error is the cut: what was written up to it is the answer.
    let _ = write(&mut capped);
    capped.text
}

/// A `fmt::Write` that takes `left` more characters, then fails.
struct Capped {
    text: String,
    left: usize,
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.left == 0 {
                return Err(std::fmt::Error);
            }
            self.text.push(c);
            self.left -= 1;
        }
        Ok(())
    }
}

/// The instant of a kernel arrival stamp (realtime clock), if within the last
/// [`MAX_STAMP_AGE`] (a stamp older, or in the future, is a clock step, not an arrival).
fn arrival_instant(stamp: std::time::SystemTime) -> Option<std::time::Instant> {
    let age = std::time::SystemTime::now().duration_since(stamp).ok()?;
    (age <= MAX_STAMP_AGE).then(|| std::time::Instant::now().checked_sub(age)).flatten()
}

/// Oldest arrival stamp taken for one: bytes wait in the socket at most one and a half
/// of the longest pause (`MAX_READ_PAUSE_MS`, a second).
const MAX_STAMP_AGE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_application_is_shown_without_what_follows_its_first_slash() {
        assert_eq!(shown_app("live"), "live");
        assert_eq!(shown_app("live/the-stream-key"), "live/…");
        assert_eq!(shown_app("li\nve\r"), "li\u{fffd}ve\u{fffd}");
    }

    #[test]
    fn capped_formatting_stops_at_its_limit() {
        let long = "x".repeat(1 << 20);
        assert_eq!(capped(5, |out| write!(out, "k={long}")), "k=xxx");
        assert_eq!(capped(5, |out| write!(out, "k=é")), "k=é");
    }
}
