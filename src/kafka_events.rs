//! Lifecycle events to Kafka (rdkafka), never stalling ingest.
//!
//! The media path hands each event to a bounded in-memory queue and returns. A forwarder
//! thread moves events from the queue to librdkafka's producer, which retries them through a
//! broker outage for `message.timeout.ms` (5 minutes by default). Queue policy when full:
//! `stream_stats` are dropped first (the oldest queued one, or the new one); start, stop and
//! rejection events are kept up to a hard bound that only an hours-long outage under heavy
//! churn could reach, beyond which they are dropped too. Every drop is counted and reported in
//! the log at most every [`DROP_REPORT_INTERVAL`]. Record keys are stream names, so one
//! stream's events stay in order in one partition.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ingest::events::{Envelope, Event, EventSink};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use tracing::{error, info, warn};

/// Queued events beyond which `stream_stats` are dropped.
pub(crate) const QUEUE_CAPACITY: usize = 10_000;
/// Queued events beyond which even lifecycle events are dropped (bounds memory).
pub(crate) const HARD_CAPACITY: usize = 200_000;
/// Queued bytes beyond which `stream_stats` are dropped: events are a few hundred bytes, so
/// this holds the count limit's worth of ordinary ones; larger events fill it sooner.
pub(crate) const QUEUE_CAPACITY_BYTES: usize = 8 << 20;
/// Queued bytes beyond which even lifecycle events are dropped.
pub(crate) const HARD_CAPACITY_BYTES: usize = 64 << 20;
/// What librdkafka itself may hold, in KiB (its default is 1 GiB).
const PRODUCER_QUEUE_KBYTES: usize = 64 << 10;
/// How often drops and losses are reported in the log, at most.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How long librdkafka keeps retrying an event before it is lost: longer than any outage
/// the platform should ride out without losing a start or stop.
pub(crate) const MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// One event ready for Kafka.
#[derive(Debug, Clone)]
struct Record {
    key: Option<String>,
    payload: Vec<u8>,
    droppable: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    records: VecDeque<Record>,
    /// How many queued records are droppable, so a queue full of lifecycle events is not
    /// scanned on every push.
    droppable: usize,
    /// Payload bytes queued.
    bytes: usize,
    closed: bool,
}

impl QueueState {
    fn over(&self, records: usize, bytes: usize) -> bool {
        self.records.len() >= records || self.bytes >= bytes
    }

    fn push_back(&mut self, record: Record) {
        self.droppable += usize::from(record.droppable);
        self.bytes += record.payload.len();
        self.records.push_back(record);
    }

    fn remove(&mut self, index: usize) -> Option<Record> {
        let record = self.records.remove(index)?;
        self.droppable -= usize::from(record.droppable);
        self.bytes -= record.payload.len();
        Some(record)
    }
}

/// The bounded hand-off between the media path and the forwarder.
#[derive(Debug, Default)]
struct EventQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    dropped_stats: AtomicU64,
    dropped_lifecycle: AtomicU64,
}

impl EventQueue {
    fn push(&self, record: Record) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Over the soft bound, stats make room (the oldest first), or the new stats go.
        while state.over(QUEUE_CAPACITY, QUEUE_CAPACITY_BYTES) {
            let oldest_stats = if state.droppable > 0 {
                state.records.iter().position(|r| r.droppable)
            } else {
                None
            };
            if let Some(oldest_stats) = oldest_stats {
                state.remove(oldest_stats);
                self.dropped_stats.fetch_add(1, Ordering::Relaxed);
            } else if record.droppable {
                self.dropped_stats.fetch_add(1, Ordering::Relaxed);
                return;
            } else {
                break;
            }
        }
        if state.over(HARD_CAPACITY, HARD_CAPACITY_BYTES) {
            let counter =
                if record.droppable { &self.dropped_stats } else { &self.dropped_lifecycle };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.push_back(record);
        self.ready.notify_one();
    }

    /// The next record, waiting up to `wait`; `None` on timeout or once closed and empty.
    fn pop(&self, wait: Duration) -> Option<Record> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.records.is_empty() && !state.closed {
            state = self.ready.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        state.remove(0)
    }

    fn push_front(&self, record: Record) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.droppable += usize::from(record.droppable);
        state.bytes += record.payload.len();
        state.records.push_front(record);
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.ready.notify_all();
    }

    fn is_closed_and_empty(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed && state.records.is_empty()
    }

    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).records.len()
    }
}

/// Counts what librdkafka could not deliver within `message.timeout.ms`, and keeps its
/// connection errors (one per second per broker while it is down) to a line per interval.
#[derive(Debug)]
struct Delivery {
    lost: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
    /// Losses have their own line per interval: the broker's errors (every second while
    /// it is down) would take every slot of a shared one.
    loss_logged: Mutex<Option<Instant>>,
    losses_suppressed: AtomicU64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            lost: AtomicU64::new(0),
            last_logged: Mutex::new(None),
            suppressed: AtomicU64::new(0),
            loss_logged: Mutex::new(None),
            losses_suppressed: AtomicU64::new(0),
        }
    }
}

impl Delivery {
    /// Counts an event lost (shown in `events_dropped{kind="undelivered"}`), with a line
    /// per [`DROP_REPORT_INTERVAL`] at most: an outage past the delivery timeout loses
    /// every event queued, each reported here.
    fn lose(&self, error: &KafkaError, key: Option<&[u8]>) {
        let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
        if may_log(&self.loss_logged, &self.losses_suppressed) {
            let suppressed = self.losses_suppressed.swap(0, Ordering::Relaxed);
            let key = key.map(String::from_utf8_lossy).unwrap_or_default();
            error!(%error, key = %key, lost, suppressed, "an event could not be delivered to Kafka and is lost");
        }
    }

    /// Whether a broker problem may be logged now.
    fn may_log(&self) -> bool {
        may_log(&self.last_logged, &self.suppressed)
    }
}

/// Whether a line last logged at `last` may be logged again now (else one more is counted
/// as `suppressed`).
fn may_log(last: &Mutex<Option<Instant>>, suppressed: &AtomicU64) -> bool {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_some_and(|at| at.elapsed() < DROP_REPORT_INTERVAL) {
        suppressed.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    *last = Some(Instant::now());
    true
}

impl ClientContext for Delivery {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel;
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        );
        if serious && self.may_log() {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            warn!(%facility, suppressed, "Kafka: {message}");
        } else {
            // Everything, unthrottled, for RUST_LOG=librdkafka=debug (with --kafka-property debug=...).
            tracing::debug!(target: "librdkafka", %facility, "{message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.may_log() {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            warn!(%error, suppressed, "Kafka unavailable, events are kept and retried: {reason}");
        }
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            self.lose(error, message.key());
        }
    }
}

/// Settings of the Kafka sink.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, ...), applied last.
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) server_id: String,
}

/// Sends events to Kafka.
pub(crate) struct KafkaEvents {
    queue: Arc<EventQueue>,
    envelope: Envelope,
    producer: ThreadedProducer<Delivery>,
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

impl KafkaEvents {
    /// A producer for `settings`; nothing is sent yet (a broker that is down does not stop
    /// the server from starting).
    pub(crate) fn start(settings: &KafkaSettings) -> anyhow::Result<Arc<Self>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", format!("rtmp-hls-{}", settings.server_id))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", PRODUCER_QUEUE_KBYTES.to_string());
        for (name, value) in &settings.properties {
            config.set(name, value);
        }
        let producer: ThreadedProducer<Delivery> = config
            .create_with_context(Delivery::default())
            .context("configuring the Kafka producer")?;
        let queue = Arc::new(EventQueue::default());
        let events = Arc::new(Self {
            queue: Arc::clone(&queue),
            envelope: Envelope::new(settings.server_id.clone()),
            producer,
            forwarder: Mutex::new(None),
        });
        let forwarder = {
            let events = Arc::clone(&events);
            let topic = settings.topic.clone();
            std::thread::Builder::new()
                .name("kafka-events".into())
                .spawn(move || events.forward(&topic))
                .context("starting the Kafka forwarder")?
        };
        *events.forwarder.lock().unwrap_or_else(PoisonError::into_inner) = Some(forwarder);
        info!(brokers = %settings.brokers, topic = %settings.topic, "events go to Kafka");
        Ok(events)
    }

    /// Moves queued events into the producer until the queue is closed and empty.
    fn forward(&self, topic: &str) {
        let mut last_report = Instant::now();
        let mut reported = (0, 0);
        while !self.queue.is_closed_and_empty() {
            if let Some(record) = self.queue.pop(Duration::from_millis(200)) {
                let mut kafka = BaseRecord::to(topic).payload(&record.payload);
                if let Some(key) = &record.key {
                    kafka = kafka.key(key);
                }
                if let Err((error, _)) = self.producer.send(kafka) {
                    if matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) {
                        // librdkafka's own queue is full (a long outage): keep our order, wait.
                        self.queue.push_front(record);
                        std::thread::sleep(Duration::from_millis(100));
                    } else {
                        self.producer
                            .context()
                            .lose(&error, record.key.as_deref().map(str::as_bytes));
                    }
                }
            }
            if last_report.elapsed() >= DROP_REPORT_INTERVAL {
                last_report = Instant::now();
                let now = (
                    self.queue.dropped_stats.load(Ordering::Relaxed),
                    self.queue.dropped_lifecycle.load(Ordering::Relaxed),
                );
                if now != reported {
                    warn!(
                        stream_stats_dropped = now.0,
                        lifecycle_dropped = now.1,
                        queued = self.queue.len(),
                        "the event queue was full: events dropped (totals)"
                    );
                    reported = now;
                }
            }
        }
    }

    /// Events waiting (in our queue and in librdkafka's, unacknowledged), and those dropped
    /// since start: (`stream_stats`, lifecycle, undelivered).
    pub(crate) fn queue_figures(&self) -> (u64, u64, u64, u64) {
        let waiting =
            self.queue.len() as u64 + u64::try_from(self.producer.in_flight_count()).unwrap_or(0);
        (
            waiting,
            self.queue.dropped_stats.load(Ordering::Relaxed),
            self.queue.dropped_lifecycle.load(Ordering::Relaxed),
            self.producer.context().lost.load(Ordering::Relaxed),
        )
    }

    /// Sends what is queued and waits for the broker to acknowledge it, up to `limit`.
    pub(crate) fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.queue.close();
        if let Some(forwarder) =
            self.forwarder.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            while !forwarder.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(error) = self.producer.flush(left) {
            warn!(%error, in_flight = self.producer.in_flight_count(), "events not acknowledged by Kafka before exit");
        }
    }
}

impl EventSink for KafkaEvents {
    fn emit(&self, event: Event) {
        let document = self.envelope.wrap(&event, SystemTime::now());
        self.queue.push(Record {
            key: event.stream().map(str::to_owned),
            payload: document.to_string().into_bytes(),
            droppable: event.is_droppable(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outage that loses every queued event is counted whole and logged once an
    /// interval, not once an event.
    #[test]
    fn lost_events_are_counted_and_logged_once_an_interval() {
        let delivery = Delivery::default();
        // The broker's errors just took their slot: losses are logged all the same.
        assert!(delivery.may_log());
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        for _ in 0..1000 {
            delivery.lose(&error, Some(b"cam"));
        }
        assert_eq!(delivery.lost.load(Ordering::Relaxed), 1000);
        assert_eq!(delivery.losses_suppressed.load(Ordering::Relaxed), 999);
        assert_eq!(delivery.suppressed.load(Ordering::Relaxed), 0);
    }

    fn record(droppable: bool, n: u32) -> Record {
        Record { key: None, payload: n.to_be_bytes().to_vec(), droppable }
    }

    #[test]
    fn a_full_queue_drops_stats_first_and_keeps_lifecycle_events() {
        let queue = EventQueue::default();
        for n in 0..QUEUE_CAPACITY as u32 {
            queue.push(record(n % 2 == 0, n));
        }
        // A lifecycle event pushes out the oldest stats event.
        queue.push(record(false, 1_000_000));
        assert_eq!(queue.len(), QUEUE_CAPACITY);
        assert_eq!(queue.dropped_stats.load(Ordering::Relaxed), 1);
        assert_eq!(
            queue.pop(Duration::ZERO).unwrap().payload,
            1u32.to_be_bytes(),
            "event 0 was the oldest stats"
        );
        // Once only lifecycle events remain, new stats are refused and lifecycle events queue on.
        let queue = EventQueue::default();
        for n in 0..QUEUE_CAPACITY as u32 {
            queue.push(record(false, n));
        }
        queue.push(record(true, 7));
        queue.push(record(false, 8));
        assert_eq!(queue.len(), QUEUE_CAPACITY + 1);
        assert_eq!(queue.dropped_stats.load(Ordering::Relaxed), 1);
        assert_eq!(queue.dropped_lifecycle.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lifecycle_events_are_bounded_too() {
        let queue = EventQueue::default();
        for n in 0..(HARD_CAPACITY + 10) as u32 {
            queue.push(record(false, n));
        }
        assert_eq!(queue.len(), HARD_CAPACITY);
        assert_eq!(queue.dropped_lifecycle.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let queue = EventQueue::default();
        let big = |droppable| Record { key: None, payload: vec![0; 1 << 20], droppable };
        for _ in 0..10 {
            queue.push(big(true));
        }
        assert!(queue.state.lock().unwrap().bytes <= QUEUE_CAPACITY_BYTES);
        assert_eq!(queue.dropped_stats.load(Ordering::Relaxed), 2);
        for _ in 0..100 {
            queue.push(big(false));
        }
        let state = queue.state.lock().unwrap();
        assert_eq!(state.bytes, HARD_CAPACITY_BYTES, "stats gave way, then lifecycle stopped");
        assert_eq!(state.droppable, 0);
        assert_eq!(queue.dropped_lifecycle.load(Ordering::Relaxed), 100 - 64);
    }

    #[test]
    fn closing_wakes_the_forwarder_and_drains() {
        let queue = EventQueue::default();
        queue.push(record(false, 1));
        queue.close();
        assert!(queue.pop(Duration::from_secs(5)).is_some());
        assert!(queue.pop(Duration::from_secs(5)).is_none());
        assert!(queue.is_closed_and_empty());
    }
}
