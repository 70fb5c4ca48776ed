//! What the operator's API shows and does ([`rtmp_hls_http::api::Control`]): stream stats from the
//! stream store and ingest's publish statuses, admin access by static token or JWT with the
//! admin role, kicks through ingest, keys through the configured key store, and the
//! Prometheus registry with the gauges read at scrape time.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use auth::jwt::{JwtVerifier, looks_like_jwt};
use auth::key_store::{hash_key, validate_stream_name};
use ingest::events::StopReason;
use ingest::push::{MAX_STREAM_TARGETS as MAX_PUSH_TARGETS, PushTarget};
use ingest::{Ingest, PublishStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rtmp_hls_http::api::model::{Audio, KeyInfo, Publisher, Stream, Video};
use rtmp_hls_http::api::{Access, Control, ControlError};
use stream_store::{StreamStore, StreamSummary};

use crate::kafka_events::KafkaEvents;
use crate::key_admin::KeyAdmin;

/// How admin requests prove themselves.
pub(crate) struct AdminAuth {
    /// A static token from the configuration.
    pub(crate) token: Option<String>,
    /// JWTs with the admin role, verified with the publish-token key.
    pub(crate) jwt: Option<Arc<JwtVerifier>>,
}

impl AdminAuth {
    fn check(&self, bearer: Option<&str>) -> Access {
        if self.token.is_none() && self.jwt.is_none() {
            // No credentials could help: forbidden, not unauthenticated.
            return Access::Forbidden(
                "the admin API is disabled: configure --admin-token or a JWT key".into(),
            );
        }
        let Some(bearer) = bearer else {
            return Access::Unauthenticated("send Authorization: Bearer <admin token>".into());
        };
        // Digests of equal length are compared, so the time taken tells neither where the
        // token differs nor how long it is.
        if let Some(token) = &self.token
            && constant_time_eq(hash_key(token).as_bytes(), hash_key(bearer).as_bytes())
        {
            return Access::Granted;
        }
        match &self.jwt {
            Some(jwt) if looks_like_jwt(bearer) => match jwt.verify_admin(bearer) {
                Ok(claims) if claims.is_admin() => Access::Granted,
                Ok(_) => Access::Forbidden("the token does not have the admin role".into()),
                Err(rejected) => Access::Unauthenticated(rejected.0),
            },
            _ => Access::Unauthenticated("invalid admin token".into()),
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The binary's [`Control`].
pub(crate) struct ServerControl {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) store: Arc<StreamStore>,
    pub(crate) keys: KeyAdmin,
    pub(crate) auth: AdminAuth,
    pub(crate) registry: Registry,
}

impl ServerControl {
    /// A stream of this node's store; in a cluster, with this node's id.
    fn local(&self, summary: &StreamSummary, detailed: bool) -> Stream {
        let status = self.ingest.statuses().get(&summary.name);
        let mut shown = stream(summary, status, detailed);
        shown.node = self.ingest.cluster().map(|member| member.member().node.clone());
        shown
    }
}

#[async_trait::async_trait]
impl Control for ServerControl {
    /// Private streams are listed with admin credentials only.
    fn streams(&self, detailed: bool) -> Vec<Stream> {
        let now = Instant::now();
        let mut streams: std::collections::BTreeMap<String, Stream> = self
            .store
            .summaries(now)
            .iter()
            .filter(|summary| detailed || !summary.private)
            .map(|summary| (summary.name.clone(), self.local(summary, detailed)))
            .collect();
        if let Some(member) = self.ingest.cluster() {
            // Streams of other nodes replace what this node keeps of them (an ended copy).
            for lease in member.leases() {
                if lease.holder == member.member().holder || (lease.private && !detailed) {
                    continue;
                }
                if !streams.get(&lease.stream).is_some_and(|s| s.live) {
                    streams.insert(lease.stream.clone(), remote(&lease));
                }
            }
        }
        streams.into_values().collect()
    }

    fn stream(&self, name: &str, detailed: bool) -> Option<Stream> {
        let summary = self.store.summary(name, Instant::now());
        if let Some(summary) = summary.as_ref().filter(|s| s.live) {
            return (!summary.private || detailed).then(|| self.local(summary, detailed));
        }
        let elsewhere = self.ingest.cluster().and_then(|member| {
            let lease = member.lease(name)?;
            (lease.holder != member.member().holder).then_some(lease)
        });
        if let Some(lease) = elsewhere {
            return (!lease.private || detailed).then(|| remote(&lease));
        }
        let summary = summary?;
        (!summary.private || detailed).then(|| self.local(&summary, detailed))
    }

    fn check_admin(&self, bearer: Option<&str>) -> Access {
        self.auth.check(bearer)
    }

    async fn kick(&self, name: &str) -> bool {
        if self.ingest.end_publish(name, StopReason::Kicked) {
            return true;
        }
        match self.ingest.cluster() {
            Some(member) => member.kick(name).await,
            None => false,
        }
    }

    async fn keys(&self) -> Result<Vec<KeyInfo>, ControlError> {
        let keys = self.keys.list().await.map_err(unavailable)?;
        Ok(keys
            .into_iter()
            .map(|k| KeyInfo {
                stream: k.stream,
                owner: k.owner,
                created_at: k.created_at,
                revoked: k.revoked,
                private: k.private,
                push: k.push.iter().map(|url| push_label(url)).collect(),
                record: k.record,
            })
            .collect())
    }

    async fn create_key(
        &self,
        name: &str,
        owner: Option<&str>,
        private: bool,
    ) -> Result<String, ControlError> {
        validate_stream_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if matches!(self.keys, KeyAdmin::File(_)) && owner.is_some() {
            return Err(ControlError::Invalid(
                "owner is recorded in the MongoDB key store only".into(),
            ));
        }
        let conflict = || {
            ControlError::Conflict(format!("stream {name:?} already has a key; revoke it first"))
        };
        let existing = self.keys.list().await.map_err(unavailable)?;
        if existing.iter().any(|k| k.stream == name && !k.revoked) {
            return Err(conflict());
        }
        // Another request may have created it since the check: the store says so.
        self.keys.add(name, owner, private).await.map_err(|e| {
            let exists = matches!(
                e.downcast_ref::<auth::file_key_store::FileKeyStoreError>(),
                Some(auth::file_key_store::FileKeyStoreError::Exists(_))
            ) || e.to_string().contains("already has a key")
                || e.to_string().contains("E11000");
            if exists { conflict() } else { unavailable(e) }
        })
    }

    async fn set_private(&self, name: &str, private: bool) -> Result<bool, ControlError> {
        let has_key = self.keys.set_private(name, private).await.map_err(unavailable)?;
        // The live stream at once, whatever granted it (a key, or a token).
        let known = self.store.set_private(name, private);
        Ok(has_key || known)
    }

    async fn set_push(&self, name: &str, push: &[String]) -> Result<bool, ControlError> {
        if push.len() > MAX_PUSH_TARGETS {
            return Err(ControlError::Invalid(format!(
                "at most {MAX_PUSH_TARGETS} push targets per stream"
            )));
        }
        for (index, url) in push.iter().enumerate() {
            PushTarget::parse(url)
                .map_err(|e| ControlError::Invalid(format!("push[{index}]: {e}")))?;
        }
        self.keys.set_push(name, push).await.map_err(unavailable)
    }

    async fn set_record(&self, name: &str, record: bool) -> Result<bool, ControlError> {
        self.keys.set_record(name, Some(record)).await.map_err(unavailable)
    }

    async fn revoke_token(&self, jti: &str) -> Result<bool, ControlError> {
        if !auth::key_store::is_valid_token_id(jti) {
            let max = auth::key_store::MAX_TOKEN_ID_LEN;
            return Err(ControlError::Invalid(format!("a token id is 1 to {max} bytes")));
        }
        self.keys.revoke_token(jti).await.map_err(unavailable)
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, ControlError> {
        self.keys.revoke(name).await.map_err(unavailable)
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How a stored push URL is shown: its target, the key hashed.
fn push_label(url: &str) -> String {
    PushTarget::parse(url).map_or_else(|e| e.to_string(), |target| target.label())
}

fn unavailable(e: anyhow::Error) -> ControlError {
    ControlError::Unavailable(format!("key store: {e:#}"))
}

/// A stream as the API shows it; who publishes (address, owner) only when `detailed`.
/// A stream another node of the cluster publishes, as its lease says.
fn remote(lease: &ingest::cluster::Lease) -> Stream {
    use ingest::cluster::LeaseState;
    Stream {
        name: lease.stream.clone(),
        live: lease.state == LeaseState::Live,
        reconnecting: lease.state == LeaseState::Open,
        playlist: format!("/hls/{}/{}", lease.stream, rtmp_hls_http::PLAYLIST_FILE),
        viewers: 0,
        segments_listed: 0,
        media_sequence: lease.numbering.next_sequence,
        target_duration: 0,
        private: lease.private,
        publisher: None,
        video: None,
        audio: None,
        node: Some(lease.node.clone()),
    }
}

fn stream(summary: &StreamSummary, status: Option<PublishStatus>, detailed: bool) -> Stream {
    let publisher = status.as_ref().map(|s| {
        let end = s.ended.map_or_else(SystemTime::now, |(at, _)| at);
        Publisher {
            remote_addr: detailed.then(|| s.remote.to_string()),
            app: s.app.clone(),
            owner: if detailed { s.owner.clone() } else { None },
            since: rfc3339(s.since),
            duration_seconds: end.duration_since(s.since).map_or(0.0, |d| round3(d.as_secs_f64())),
            ended_at: s.ended.map(|(at, _)| rfc3339(at)),
            stop_reason: s.ended.map(|(_, reason)| reason.as_str().to_owned()),
            bitrate_bps: s.bitrate_bps,
            fps: s.fps,
            keyframe_interval_ms: s.keyframe_interval_ms,
            bytes: s.bytes,
            frames: s.frames,
            segments: s.segments,
        }
    });
    let media = status.map(|s| s.media).unwrap_or_default();
    let video = media.video_codec.map(|codec| Video {
        codec,
        width: media.width,
        height: media.height,
        fps: media.fps,
    });
    let audio = media.audio_codec.map(|codec| Audio {
        codec,
        sample_rate: media.audio_sample_rate,
        channels: media.audio_channels,
    });
    Stream {
        name: summary.name.clone(),
        live: summary.live,
        reconnecting: summary.reconnecting,
        playlist: format!("/hls/{}/{}", summary.name, rtmp_hls_http::PLAYLIST_FILE),
        viewers: summary.viewers,
        segments_listed: summary.segments_listed as u64,
        media_sequence: summary.media_sequence,
        target_duration: summary.target_duration,
        private: summary.private,
        publisher,
        video,
        audio,
        node: None,
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The gauges that are views of current state, read at each scrape.
pub(crate) struct CurrentState {
    pub(crate) ingest: Arc<Ingest>,
    pub(crate) store: Arc<StreamStore>,
    pub(crate) kafka: Option<Arc<KafkaEvents>>,
}

impl std::fmt::Debug for CurrentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentState").finish_non_exhaustive()
    }
}

impl Collector for CurrentState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let gauge = |value: usize| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        let (open, unauthenticated) = self.ingest.open_connections();
        let connections = gauge(open);
        connections.encode(encoder.encode_descriptor(
            "rtmp_connections",
            "Open RTMP connections",
            None,
            connections.metric_type(),
        )?)?;
        let waiting = gauge(unauthenticated);
        waiting.encode(encoder.encode_descriptor(
            "rtmp_connections_unauthenticated",
            "Open RTMP connections not granted a publish yet",
            None,
            waiting.metric_type(),
        )?)?;
        let live = gauge(self.store.live_count());
        live.encode(encoder.encode_descriptor(
            "live_streams",
            "Streams being published",
            None,
            live.metric_type(),
        )?)?;
        let held = self.store.segment_bytes();
        let mut segment_bytes = encoder.encode_descriptor(
            "segment_bytes",
            "Bytes of HLS segments held, by where: memory files (RAM outside the process's RSS) or the heap",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (storage, value) in [("memory_file", held.files), ("heap", held.heap)] {
            gauge(value).encode(segment_bytes.encode_family(&[("storage", storage)])?)?;
        }
        let writing = gauge(held.writing);
        writing.encode(encoder.encode_descriptor(
            "segment_bytes_being_written",
            "Of the segment bytes, those of MPEG-TS segments still being written",
            None,
            writing.metric_type(),
        )?)?;
        let (_, pooled) = self.ingest.pooled_segment_buffers();
        let pooled = gauge(pooled);
        pooled.encode(encoder.encode_descriptor(
            "segment_buffer_pool_bytes",
            "Capacity of recycled buffers waiting for a segment, fMP4 fragment or low-latency part (at most 64 MiB)",
            None,
            pooled.metric_type(),
        )?)?;
        let summaries = self.store.summaries(Instant::now());
        let mut viewers = encoder.encode_descriptor(
            "viewers",
            "Distinct recent viewers per stream: sessions (a viewer token's subject, else address and user agent) that fetched the playlist within three target durations",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for summary in &summaries {
            let labels = [("stream", summary.name.as_str())];
            ConstGauge::new(i64::try_from(summary.viewers).unwrap_or(i64::MAX))
                .encode(viewers.encode_family(&labels)?)?;
        }
        if let Some(kafka) = &self.kafka {
            let (waiting, dropped_stats, dropped_lifecycle, undelivered) = kafka.queue_figures();
            let depth = ConstGauge::new(i64::try_from(waiting).unwrap_or(i64::MAX));
            depth.encode(encoder.encode_descriptor(
                "event_queue_depth",
                "Events waiting for Kafka (queued and unacknowledged)",
                None,
                depth.metric_type(),
            )?)?;
            let mut dropped = encoder.encode_descriptor(
                "events_dropped",
                "Events dropped, by kind: the queue was full (stream_stats, lifecycle), or Kafka \
                 did not take them within the delivery timeout (undelivered)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            let kinds = [
                ("stream_stats", dropped_stats),
                ("lifecycle", dropped_lifecycle),
                ("undelivered", undelivered),
            ];
            for (kind, count) in kinds {
                ConstCounter::new(count).encode(dropped.encode_family(&[("kind", kind)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_compare_whole() {
        let auth = AdminAuth { token: Some("s3cret-token".into()), jwt: None };
        assert_eq!(auth.check(Some("s3cret-token")), Access::Granted);
        for wrong in ["s3cret-toke", "s3cret-tokenX", "", "S3cret-token"] {
            assert!(matches!(auth.check(Some(wrong)), Access::Unauthenticated(_)), "{wrong}");
        }
        assert!(matches!(auth.check(None), Access::Unauthenticated(_)));
        let disabled = AdminAuth { token: None, jwt: None };
        assert!(matches!(disabled.check(Some("s3cret-token")), Access::Forbidden(_)));
    }
}
