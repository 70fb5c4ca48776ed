//! The publish decision: whether a publish request may go ahead, and as which stream.
//!
//! In order, the first step that says no giving the [`Refusal`] the encoder is told: the
//! application; the key or token ([`auth::Authorizer`]; in `--hook-mode only`, the publishing
//! name itself, rate-limited); the `on_publish` callback (allow, rename, refuse); the stream
//! name's rules; the claim on the stream, taking it over from its current publisher as
//! [`TakeoverPolicy`] says.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::key_store::{Grant, validate_stream_name};
use auth::{Denial, key_store::redact};
use rtmp::session::ClientInfo;
use stream_store::{BeginError, Numbering};
use tokio::time::{Instant, timeout};
use tracing::info;

use crate::cluster::LeaseRefusal;
use crate::events::{RejectReason, StopReason};
use crate::hooks::{self, HookMode, HookUrl};
use crate::listener::{Ingest, TakeoverPolicy};
use crate::registry::LivePublish;

/// onStatus code of a refusal the encoder should not retry as it is (wrong key or name).
pub(crate) const CODE_BAD_NAME: &str = "NetStream.Publish.BadName";
/// onStatus code of a refusal that may pass later (limits, an unavailable key store).
pub(crate) const CODE_FAILED: &str = "NetStream.Publish.Failed";
/// How long a takeover waits for the old publisher to let go of the stream.
pub(crate) const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// A publish request, with what the decision needs to know of its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The application from `connect`.
    pub(crate) app: &'a str,
    /// The publishing name: the key, or `<stream>?token=<jwt>`. Secret.
    pub(crate) key: &'a str,
    /// The publisher's address.
    pub(crate) peer: SocketAddr,
    /// The connection's id.
    pub(crate) id: u64,
    /// The client's `connect` properties, for the callbacks.
    pub(crate) client: &'a ClientInfo,
}

impl Request<'_> {
    /// The `on_publish` / `on_publish_done` fields of this request.
    pub(crate) fn call(&self, call: &'static str) -> hooks::Call<'_> {
        hooks::Call {
            call,
            app: self.app,
            name: self.key,
            addr: self.peer.ip(),
            client_id: self.id,
            client: self.client,
        }
    }
}

/// A publish that may go ahead.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The stream and who publishes it.
    pub(crate) grant: Grant,
    /// The claim on the stream.
    pub(crate) live: LivePublish,
}

/// Why a publish is refused, as the encoder and the events are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// For events and metrics.
    pub(crate) reason: RejectReason,
    /// The onStatus code.
    pub(crate) code: &'static str,
    /// The onStatus description, for a person. Never the key.
    pub(crate) description: String,
    /// An `on_publish` callback allowed the publish before it was refused: Nginx-RTMP then
    /// sends `on_publish_done` too, and backends that marked the stream live rely on it.
    pub(crate) owes_done: bool,
}

impl Refusal {
    fn new(reason: RejectReason, code: &'static str, description: impl Into<String>) -> Self {
        Self { reason, code, description: description.into(), owes_done: false }
    }
}

/// Decides `request`: a claim on its stream, or why not.
pub(crate) async fn decide(ingest: &Ingest, request: &Request<'_>) -> Result<Accepted, Refusal> {
    if request.app != ingest.config.app {
        return Err(Refusal::new(RejectReason::UnknownApp, CODE_BAD_NAME, "unknown application"));
    }
    let mut grant = authorize(ingest, request).await?;
    let hooks = &ingest.config.hooks;
    if let Some(url) = &hooks.on_publish {
        ask_on_publish(ingest, request, url, &mut grant).await?;
    }
    let owes_done = hooks.on_publish.is_some();
    if validate_stream_name(&grant.stream).is_err() {
        // The name may be the key itself (hook-only mode): not in the description.
        let description = "the stream name is not usable (1 to 64 of A-Z a-z 0-9 _ - .)";
        let refusal = Refusal::new(RejectReason::InvalidKey, CODE_BAD_NAME, description);
        return Err(Refusal { owes_done, ..refusal });
    }
    // In a cluster, the stream's lease first: one node at a time publishes it.
    let lease = match &ingest.cluster {
        Some(member) => {
            match member.acquire(&grant.stream, ingest.config.takeover, grant.private).await {
                Ok(lease) => Some(lease),
                Err(LeaseRefusal::HeldElsewhere(node)) => {
                    info!(stream = %grant.stream, %node, "publish refused: live on another node");
                    return Err(Refusal {
                        owes_done,
                        ..Refusal::new(
                            RejectReason::AlreadyLive,
                            CODE_BAD_NAME,
                            "this stream is already being published",
                        )
                    });
                }
                Err(LeaseRefusal::Unavailable(cause)) => {
                    ingest.warn_limited(format_args!("stream registry unavailable: {cause}"));
                    return Err(Refusal {
                        owes_done,
                        ..Refusal::new(
                            RejectReason::RegistryUnavailable,
                            CODE_FAILED,
                            "the stream registry is unavailable",
                        )
                    });
                }
            }
        }
        None => None,
    };
    let from = lease.as_ref().and_then(|lease| lease.from);
    match claim(ingest, &grant.stream, grant.private, request.id, from).await {
        Ok(live) => {
            if lease.is_some_and(|lease| !lease.confirm()) {
                // Fenced while deciding: the stream waits for its publisher here or elsewhere.
                live.publication().interrupted();
                return Err(Refusal {
                    owes_done,
                    ..Refusal::new(
                        RejectReason::RegistryUnavailable,
                        CODE_FAILED,
                        "the stream registry is unavailable",
                    )
                });
            }
            Ok(Accepted { grant, live })
        }
        Err(BeginError::AlreadyLive(_)) => Err(Refusal {
            owes_done,
            ..Refusal::new(
                RejectReason::AlreadyLive,
                CODE_BAD_NAME,
                "this stream is already being published",
            )
        }),
        Err(BeginError::TooManyStreams(_)) => Err(Refusal {
            owes_done,
            ..Refusal::new(
                RejectReason::TooManyStreams,
                CODE_FAILED,
                "the server is at its limit of live streams",
            )
        }),
    }
}

/// The stream the key or token of `request` may publish.
async fn authorize(ingest: &Ingest, request: &Request<'_>) -> Result<Grant, Refusal> {
    let hooks = &ingest.config.hooks;
    // Failed attempts are counted per address group (IPv6 per prefix).
    let address = auth::address::group(request.peer.ip(), ingest.config.limits.ipv6_prefix);
    if hooks.mode == HookMode::Only && hooks.on_publish.is_some() {
        // Nginx-RTMP's model: the publishing name is the stream, unless the hook renames.
        if !ingest.authorizer.admits(address) {
            return Err(denied(ingest, &Denial::RateLimited));
        }
        let name = request.key.split('?').next().unwrap_or_default().to_owned();
        let push = Vec::new();
        let grant = Grant {
            stream: name,
            owner: None,
            private: false,
            push,
            record: None,
            revocation: None,
        };
        return Ok(grant);
    }
    let asked = Instant::now();
    let decision = ingest.authorizer.authorize(address, request.key).await;
    ingest.metrics.key_lookup.observe(asked.elapsed().as_secs_f64());
    decision.map_err(|denial| denied(ingest, &denial))
}

fn denied(ingest: &Ingest, denial: &Denial) -> Refusal {
    let (reason, code) = match denial {
        Denial::UnknownKey => (RejectReason::InvalidKey, CODE_BAD_NAME),
        Denial::Token(_) | Denial::WrongStream => (RejectReason::InvalidToken, CODE_BAD_NAME),
        Denial::RateLimited => (RejectReason::RateLimited, CODE_FAILED),
        Denial::Unavailable(cause) => {
            ingest.warn_limited(format_args!("key store unavailable: {cause}"));
            (RejectReason::KeyStoreUnavailable, CODE_FAILED)
        }
    };
    Refusal::new(reason, code, denial.to_string())
}

/// Asks the `on_publish` callback at `url`, which may rename the stream in `grant`.
async fn ask_on_publish(
    ingest: &Ingest,
    request: &Request<'_>,
    url: &HookUrl,
    grant: &mut Grant,
) -> Result<(), Refusal> {
    let hooks = &ingest.config.hooks;
    let form = request.call("publish").form();
    match hooks::send(url, hooks.method, form, hooks.timeout).await {
        Ok((status, location)) => match hooks::verdict(status, location.as_deref()) {
            hooks::Verdict::Allow(None) => Ok(()),
            hooks::Verdict::Allow(Some(name)) => {
                // The name before may be the key (hook-only mode): only the new one.
                info!(key = %redact(request.key), stream = %name, "on_publish renamed the stream");
                grant.stream = name;
                Ok(())
            }
            hooks::Verdict::Refuse(status) => {
                let group = ingest.config.limits.ipv6_prefix;
                ingest.authorizer.note_failure(auth::address::group(request.peer.ip(), group));
                Err(Refusal::new(
                    RejectReason::HookRefused,
                    CODE_BAD_NAME,
                    format!("refused by on_publish (HTTP {status})"),
                ))
            }
        },
        Err(e) => {
            let url = url.redacted();
            ingest.warn_limited(format_args!("on_publish callback to {url} failed: {e}"));
            Err(Refusal::new(
                RejectReason::HookUnavailable,
                CODE_FAILED,
                "the on_publish callback could not be asked",
            ))
        }
    }
}

/// Claims `stream` (private or not, from the grant) for connection `id`. A stream live
/// already is taken over (its publisher told to stop, and waited for until it lets go, at
/// most [`TAKEOVER_WAIT`]) or refused, as the takeover policy says.
async fn claim(
    ingest: &Ingest,
    stream: &str,
    private: bool,
    id: u64,
    from: Option<Numbering>,
) -> Result<LivePublish, BeginError> {
    // Segment names carry the generation, so a new stream never reuses a cached name.
    let generation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let generation = u64::try_from(generation).unwrap_or(u64::MAX);
    let max_streams = ingest.config.limits.max_streams;
    // Private from the claim on: no media of it is ever served openly.
    let begin = || ingest.store.begin_continuing(stream, generation, max_streams, private, from);
    let claimed = ingest.registry.claim(stream, id, begin);
    if !matches!(claimed, Err(BeginError::AlreadyLive(_)))
        || ingest.config.takeover != TakeoverPolicy::Replace
    {
        return claimed;
    }
    info!(%stream, "taking the stream over from its current publisher");
    if let Some(mut released) = ingest.registry.stop(stream, StopReason::TakenOver) {
        // Past the wait, the claim below is refused as live.
        let _ = timeout(TAKEOVER_WAIT, released.wait_for(|released| *released)).await;
    }
    ingest.registry.claim(stream, id, begin)
}
