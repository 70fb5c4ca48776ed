//! The RTMP side's Prometheus metrics: publishes accepted and refused (by reason), bytes and
//! frames received per live stream, segments produced, and how long the key store takes to
//! answer. Gauges that are a view of current state (connections, live streams) are read at
//! scrape time by the binary instead.
//!
//! The metrics are atomics shared by reference count: cloning is cheap, and the connection
//! tasks hold their stream's counters so a frame costs one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::events::RejectReason;

/// Key store answers are timed in buckets from 0.5 ms doubling to about 4 s (past the
/// default 3 s authorisation timeout).
const LOOKUP_BUCKET_START: f64 = 0.0005;
const LOOKUP_BUCKETS: u16 = 14;

/// A stream's label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// The public stream name.
    pub stream: String,
}

/// A push target's label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabel {
    /// The public stream name.
    pub stream: String,
    /// The target, its key hashed ([`crate::push::PushTarget::label`]).
    pub target: String,
}

/// A refusal's label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`RejectReason::as_str`].
    pub reason: &'static str,
}

/// One live stream's series, held by its publisher.
#[derive(Debug, Clone, Default)]
pub struct StreamCounters {
    /// Bytes received.
    pub bytes: Counter,
    /// Media messages received.
    pub frames: Counter,
}

/// The RTMP side's metrics.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Publishes accepted.
    pub publishes_accepted: Counter,
    /// Publishes refused, by reason.
    pub publishes_rejected: Family<ReasonLabel, Counter>,
    /// Bytes received from each live publisher.
    pub ingest_bytes: Family<StreamLabel, Counter>,
    /// Audio and video frames received from each live publisher.
    pub ingest_frames: Family<StreamLabel, Counter>,
    /// Segments produced, all streams.
    pub segments: Counter,
    /// Seconds the key store (or token check) took to decide a publish.
    pub key_lookup: Histogram,
    /// Connections refused at accept by a connection limit.
    pub connections_refused: Counter,
    /// Unauthenticated connections closed to make room for new ones.
    pub connections_evicted: Counter,
    /// Bytes sent to each push target of each live stream.
    pub push_bytes: Family<PushLabel, Counter>,
    /// Media bytes each push target was spared (it was slow, stalled or down).
    pub push_dropped_bytes: Family<PushLabel, Counter>,
    /// Failed connections and sessions of each push target.
    pub push_failures: Family<PushLabel, Counter>,
    /// Whether each push target is publishing now (1) or not (0).
    pub push_connected: Family<PushLabel, Gauge>,
    /// RTMP players playing now.
    pub players: Gauge,
    /// Recording writes that failed.
    pub record_failures: Counter,
    /// RTMP plays refused, by reason.
    pub plays_refused: Family<PlayRefusalLabel, Counter>,
}

/// Why an RTMP play was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlayRefusalLabel {
    /// `not_found` or `private`.
    pub reason: &'static str,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            publishes_accepted: Counter::default(),
            publishes_rejected: Family::default(),
            ingest_bytes: Family::default(),
            ingest_frames: Family::default(),
            segments: Counter::default(),
            key_lookup: Histogram::new(exponential_buckets(
                LOOKUP_BUCKET_START,
                2.0,
                LOOKUP_BUCKETS,
            )),
            connections_refused: Counter::default(),
            connections_evicted: Counter::default(),
            push_bytes: Family::default(),
            push_dropped_bytes: Family::default(),
            push_failures: Family::default(),
            push_connected: Family::default(),
            players: Gauge::default(),
            record_failures: Counter::default(),
            plays_refused: Family::default(),
        }
    }
}

impl IngestMetrics {
    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "publish_accepted",
            "Publishes accepted",
            self.publishes_accepted.clone(),
        );
        registry.register(
            "publish_rejected",
            "Publishes refused, by reason",
            self.publishes_rejected.clone(),
        );
        registry.register_with_unit(
            "ingest",
            "Bytes received from each live publisher",
            Unit::Bytes,
            self.ingest_bytes.clone(),
        );
        registry.register(
            "ingest_frames",
            "Audio and video frames received from each live publisher",
            self.ingest_frames.clone(),
        );
        registry.register("segments", "Segments produced", self.segments.clone());
        registry.register(
            "rtmp_connections_refused",
            "RTMP connections refused at accept by a connection limit",
            self.connections_refused.clone(),
        );
        registry.register(
            "rtmp_connections_evicted",
            "Unauthenticated RTMP connections closed to make room for new ones",
            self.connections_evicted.clone(),
        );
        registry.register_with_unit(
            "push",
            "Bytes sent to each push target",
            Unit::Bytes,
            self.push_bytes.clone(),
        );
        registry.register_with_unit(
            "push_dropped",
            "Media bytes each push target was spared because it was slow, stalled or down",
            Unit::Bytes,
            self.push_dropped_bytes.clone(),
        );
        registry.register(
            "push_failures",
            "Failed connections and sessions of each push target",
            self.push_failures.clone(),
        );
        registry.register(
            "push_connected",
            "Whether each push target is publishing now",
            self.push_connected.clone(),
        );
        registry.register("rtmp_players", "RTMP players playing now", self.players.clone());
        registry.register(
            "record_failures",
            "Recording writes that failed (disk full, permissions)",
            self.record_failures.clone(),
        );
        registry.register(
            "rtmp_plays_refused",
            "RTMP plays refused, by reason (not_found, private)",
            self.plays_refused.clone(),
        );
        registry.register_with_unit(
            "key_lookup",
            "Time the key store or token check took to decide a publish",
            Unit::Seconds,
            self.key_lookup.clone(),
        );
    }

    /// Counts a refusal.
    pub fn rejected(&self, reason: RejectReason) {
        self.publishes_rejected.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }

    /// The byte and frame counters of `stream`, for its publisher to hold.
    pub fn stream_counters(&self, stream: &str) -> StreamCounters {
        let label = StreamLabel { stream: stream.to_owned() };
        StreamCounters {
            bytes: self.ingest_bytes.get_or_create(&label).clone(),
            frames: self.ingest_frames.get_or_create(&label).clone(),
        }
    }

    /// Drops the series of `stream` once its publish ended (a republish starts them again).
    pub fn stream_ended(&self, stream: &str) {
        let label = StreamLabel { stream: stream.to_owned() };
        self.ingest_bytes.remove(&label);
        self.ingest_frames.remove(&label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &IngestMetrics) -> String {
        let mut registry = Registry::with_prefix("rtmp_hls");
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn series_names_and_stream_lifetimes() {
        let metrics = IngestMetrics::default();
        metrics.publishes_accepted.inc();
        metrics.rejected(RejectReason::InvalidKey);
        let StreamCounters { bytes, frames } = metrics.stream_counters("cam");
        bytes.inc_by(1000);
        frames.inc();
        metrics.key_lookup.observe(0.002);
        let out = text(&metrics);
        for line in [
            "rtmp_hls_publish_accepted_total 1",
            "rtmp_hls_publish_rejected_total{reason=\"invalid_key\"} 1",
            "rtmp_hls_ingest_bytes_total{stream=\"cam\"} 1000",
            "rtmp_hls_ingest_frames_total{stream=\"cam\"} 1",
            "rtmp_hls_key_lookup_seconds_count 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        metrics.stream_ended("cam");
        assert!(!text(&metrics).contains("stream=\"cam\""));
    }
}
