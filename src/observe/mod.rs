//! What the connector tells about itself while it runs: Prometheus metrics, health and
//! readiness ([`http`]), lag and catch-up progress ([`progress`]).
//!
//! The stages report to one shared [`Observer`] through cheap calls (an atomic add or store:
//! see `benches/mapping.rs` for their cost per event). Gauges that are derived from several
//! facts (lag, checkpoint age, connection states) are computed when they are read: at a
//! scrape, a health probe or a progress line.
//!
//! Metric handles come from the `metrics` crate's global recorder, installed once per process
//! by [`install_recorder`] when `[http]` is configured; without it they cost nothing and
//! export nothing, and the observer still feeds the progress log.

pub mod http;
pub mod names;
pub mod progress;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::position::BinlogPosition;
use names::label;

/// A timestamp field that holds no time yet.
const NEVER: u64 = u64::MAX;

/// The process's Prometheus recorder, installed on first use.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::COMMIT_TO_ACK_SECONDS.into()),
                    &names::COMMIT_TO_ACK_BUCKETS,
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("the only recorder of this process");
            for (name, help) in names::ALL {
                if name.ends_with("_total") {
                    metrics::describe_counter!(name, help);
                } else if name == names::COMMIT_TO_ACK_SECONDS {
                    metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
                } else {
                    metrics::describe_gauge!(name, help);
                }
            }
            handle
        })
        .clone()
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Limits that decide health and readiness.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A stage that has work and makes no progress for this long is wedged (`/healthz` 503).
    pub stall_after: Duration,
    /// A binlog stream without any event or heartbeat for this long is not ready.
    pub source_silence: Duration,
}

/// Shared by the stages, the HTTP endpoint and the progress log.
pub struct Observer {
    clock: Instant,
    limits: Limits,
    source_connected: AtomicBool,
    nats_connected: AtomicBool,
    /// When the source last did something: an event, a heartbeat, a connection attempt.
    source_active_ms: AtomicU64,
    /// A heartbeat came after the last event: the server has nothing more to send.
    caught_up: AtomicBool,
    /// Header time (Unix seconds) of the last event read, of any table.
    last_event_unix_s: AtomicU64,
    in_flight: AtomicU64,
    /// Commit time of the oldest message waiting for its ack (NEVER: none).
    oldest_unacked_us: AtomicU64,
    /// When the publisher last published into an empty window or got an ack.
    ack_active_ms: AtomicU64,
    acked_events: AtomicU64,
    /// Since when the saved checkpoint lags what was acknowledged (NEVER: it does not).
    checkpoint_behind_ms: AtomicU64,
    saved: Mutex<Option<BinlogPosition>>,
    lag_bytes: AtomicU64,
    sessions: AtomicU64,
    nats_connections: AtomicU64,
    /// Under `[ha]`, while another instance holds the lease.
    standing_by: AtomicBool,
    events_read: HashMap<Arc<str>, Counter>,
    published: HashMap<Arc<str>, (Counter, Counter)>,
    commit_to_ack: Histogram,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer no endpoint reads (for `check`, `status` and tests).
    pub fn unobserved() -> Arc<Self> {
        let limits = Limits {
            stall_after: Duration::from_secs(60),
            source_silence: Duration::from_secs(10),
        };
        Arc::new(Self::new(limits, [], []))
    }

    /// An observer for these tables (`schema.table`) and streams.
    pub fn new<'a>(
        limits: Limits,
        tables: impl IntoIterator<Item = &'a Arc<str>>,
        streams: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let events_read = tables
            .into_iter()
            .map(|t| {
                let counter = metrics::counter!(names::EVENTS_READ, label::TABLE => t.to_string());
                (Arc::clone(t), counter)
            })
            .collect();
        let published = streams
            .into_iter()
            .map(|s| {
                let stored =
                    metrics::counter!(names::MESSAGES_PUBLISHED, label::STREAM => s.clone());
                let dup = metrics::counter!(names::PUBLISH_DUPLICATES, label::STREAM => s.clone());
                (Arc::from(s.as_str()), (stored, dup))
            })
            .collect();
        Self {
            clock: Instant::now(),
            limits,
            source_connected: AtomicBool::new(false),
            nats_connected: AtomicBool::new(false),
            source_active_ms: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            last_event_unix_s: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            oldest_unacked_us: AtomicU64::new(NEVER),
            ack_active_ms: AtomicU64::new(0),
            acked_events: AtomicU64::new(0),
            checkpoint_behind_ms: AtomicU64::new(NEVER),
            saved: Mutex::new(None),
            lag_bytes: AtomicU64::new(NEVER),
            sessions: AtomicU64::new(0),
            nats_connections: AtomicU64::new(0),
            standing_by: AtomicBool::new(false),
            events_read,
            published,
            commit_to_ack: metrics::histogram!(names::COMMIT_TO_ACK_SECONDS),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn since_ms(&self, stamp: &AtomicU64) -> Option<Duration> {
        match stamp.load(Relaxed) {
            NEVER => None,
            at => Some(Duration::from_millis(self.now_ms().saturating_sub(at))),
        }
    }

    /// Labels the process with its version and the source's flavor.
    pub fn info(&self, flavor: &str) {
        metrics::gauge!(names::INFO, label::VERSION => env!("CARGO_PKG_VERSION"), label::FLAVOR => flavor.to_owned()).set(1.0);
    }

    // --- the lease ---

    /// Under `[ha]`: this instance stands by (`true`) or leads (`false`).
    pub fn standing_by(&self, standing_by: bool) {
        self.standing_by.store(standing_by, Relaxed);
    }

    // --- the source ---

    /// A connection attempt or a wait before one: the supervisor is alive.
    pub fn source_attempt(&self) {
        self.source_active_ms.store(self.now_ms(), Relaxed);
    }

    /// A binlog session is open and streaming.
    pub fn source_connected(&self) {
        if self.sessions.fetch_add(1, Relaxed) > 0 {
            metrics::counter!(names::RECONNECTS, label::SIDE => "source").increment(1);
        }
        self.source_connected.store(true, Relaxed);
        self.source_attempt();
    }

    pub fn source_disconnected(&self) {
        self.source_connected.store(false, Relaxed);
        // Not reading: what the server writes meanwhile is lag, whatever the last heartbeat said.
        self.caught_up.store(false, Relaxed);
    }

    /// An event arrived; `header_time` is its header's Unix time (0 for heartbeats).
    pub fn binlog_event(&self, heartbeat: bool, header_time: u32) {
        self.source_active_ms.store(self.now_ms(), Relaxed);
        self.caught_up.store(heartbeat, Relaxed);
        if !heartbeat && header_time > 0 {
            self.last_event_unix_s
                .store(u64::from(header_time), Relaxed);
        }
    }

    /// `n` rows of the outbox table `table` were read.
    pub fn rows_read(&self, table: &str, n: usize) {
        if let Some(counter) = self.events_read.get(table) {
            counter.increment(n as u64);
        }
    }

    /// A row of `table` could not become a message; `policy` is what was done about it.
    pub fn bad_row(&self, table: &str, policy: &'static str) {
        metrics::counter!(names::BAD_ROWS, label::TABLE => table.to_owned(), label::POLICY => policy).increment(1);
    }

    // --- the publisher ---

    /// A message went out; `committed_us` is its event's commit time. `oldest` is the commit
    /// time of the oldest message now waiting for its ack.
    pub fn published(&self, oldest_us: u64) {
        if self.in_flight.fetch_add(1, Relaxed) == 0 {
            self.ack_active_ms.store(self.now_ms(), Relaxed);
        }
        self.oldest_unacked_us.store(oldest_us, Relaxed);
    }

    /// The ack of a message of `stream` committed at `committed_us`; `oldest_us` is the
    /// commit time of the oldest message still waiting (None: none is).
    pub fn acked(&self, stream: &str, duplicate: bool, committed_us: u64, oldest_us: Option<u64>) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.acked_events.fetch_add(1, Relaxed);
        self.ack_active_ms.store(self.now_ms(), Relaxed);
        self.oldest_unacked_us
            .store(oldest_us.unwrap_or(NEVER), Relaxed);
        if let Some((stored, dup)) = self.published.get(stream) {
            if duplicate { dup } else { stored }.increment(1);
        }
        let now = unix_micros();
        if committed_us > 0 && now >= committed_us {
            self.commit_to_ack
                .record((now - committed_us) as f64 / 1_000_000.0);
        }
    }

    /// The publisher stopped: nothing of this run waits for an ack any more.
    pub fn publisher_stopped(&self) {
        self.in_flight.store(0, Relaxed);
        self.oldest_unacked_us.store(NEVER, Relaxed);
        self.caught_up.store(false, Relaxed);
    }

    pub fn publish_failed(&self, kind: &'static str) {
        metrics::counter!(names::PUBLISH_ERRORS, label::KIND => kind).increment(1);
    }

    /// The NATS client's connection went up or down.
    /// (The client reports its first connection too: only a change from down to up counts.)
    pub fn nats_connection(&self, up: bool) {
        let was_up = self.nats_connected.swap(up, Relaxed);
        if up && !was_up && self.nats_connections.fetch_add(1, Relaxed) > 0 {
            metrics::counter!(names::RECONNECTS, label::SIDE => "nats").increment(1);
        }
    }

    /// Events acknowledged since the process started (dead letters and duplicates included).
    pub fn acked_events(&self) -> u64 {
        self.acked_events.load(Relaxed)
    }

    // --- the checkpoint ---

    /// JetStream acknowledged a transaction end the store does not hold yet.
    pub fn checkpoint_acked(&self) {
        let _ = self
            .checkpoint_behind_ms
            .compare_exchange(NEVER, self.now_ms(), Relaxed, Relaxed);
    }

    /// The store holds `position`; `current`: nothing newer was acknowledged meanwhile.
    pub fn checkpoint_saved(&self, position: &BinlogPosition, current: bool) {
        *self.saved.lock().expect("not poisoned") = Some(position.clone());
        if current {
            self.checkpoint_behind_ms.store(NEVER, Relaxed);
        } else {
            self.checkpoint_behind_ms.store(self.now_ms(), Relaxed);
        }
    }

    /// The position the store holds, once saved in this process.
    pub fn saved_position(&self) -> Option<BinlogPosition> {
        self.saved.lock().expect("not poisoned").clone()
    }

    /// The polled distance from the saved checkpoint to the server's binlog end.
    pub fn set_lag_bytes(&self, bytes: Option<u64>) {
        self.lag_bytes.store(bytes.unwrap_or(NEVER), Relaxed);
    }

    pub fn lag_bytes(&self) -> Option<u64> {
        match self.lag_bytes.load(Relaxed) {
            NEVER => None,
            bytes => Some(bytes),
        }
    }

    // --- derived values ---

    /// Now minus the commit time of the oldest event not yet acknowledged; while nothing
    /// waits, the age of the last event read (0 once a heartbeat says the server has nothing
    /// more to send).
    pub fn lag_seconds(&self) -> f64 {
        let now = unix_micros();
        let since = |us: u64| now.saturating_sub(us) as f64 / 1_000_000.0;
        match self.oldest_unacked_us.load(Relaxed) {
            NEVER if self.caught_up.load(Relaxed) => 0.0,
            NEVER => match self.last_event_unix_s.load(Relaxed) {
                0 => 0.0,
                s => since(s * 1_000_000),
            },
            oldest => since(oldest),
        }
    }

    /// How long the saved checkpoint has lagged what was acknowledged (0: it does not).
    pub fn checkpoint_age(&self) -> Duration {
        self.since_ms(&self.checkpoint_behind_ms)
            .unwrap_or_default()
    }

    /// Why the process is not healthy: a stage that has work and made no progress for
    /// `stall_after`. `None`: healthy.
    pub fn wedged(&self) -> Option<String> {
        let stall = self.limits.stall_after;
        let secs = |d: Duration| d.as_secs();
        let source = self.since_ms(&self.source_active_ms).unwrap_or_default();
        if source > stall {
            return Some(format!(
                "source: no binlog event, heartbeat or connection attempt for {} s",
                secs(source)
            ));
        }
        let acks = self.since_ms(&self.ack_active_ms).unwrap_or_default();
        if self.in_flight.load(Relaxed) > 0 && acks > stall {
            return Some(format!(
                "publisher: {} messages wait for acks, none came for {} s",
                self.in_flight.load(Relaxed),
                secs(acks)
            ));
        }
        let checkpoint = self.checkpoint_age();
        if checkpoint > stall {
            return Some(format!(
                "checkpoint: acknowledged positions not saved for {} s",
                secs(checkpoint)
            ));
        }
        None
    }

    /// Why the connector is not ready to do its work. `None`: ready.
    pub fn not_ready(&self) -> Option<String> {
        if self.standing_by.load(Relaxed) {
            return Some("standing by: another instance holds the leader lease".into());
        }
        if !self.source_connected.load(Relaxed) {
            return Some("binlog stream not connected".into());
        }
        let silent = self.since_ms(&self.source_active_ms).unwrap_or_default();
        if silent > self.limits.source_silence {
            return Some(format!(
                "binlog stream silent for {} ms (no event, no heartbeat)",
                silent.as_millis()
            ));
        }
        if !self.nats_connected.load(Relaxed) {
            return Some("NATS not connected".into());
        }
        None
    }

    /// Sets the gauges derived from the state, before a scrape renders them.
    pub fn refresh_gauges(&self) {
        let flag = |b: &AtomicBool| if b.load(Relaxed) { 1.0 } else { 0.0 };
        metrics::gauge!(names::ACKS_IN_FLIGHT).set(self.in_flight.load(Relaxed) as f64);
        metrics::gauge!(names::SOURCE_LAG_SECONDS).set(self.lag_seconds());
        // NaN while unknown (not polled yet, the server down, the checkpoint's file not among
        // its binlogs): no stale value, and no alert fires on it.
        metrics::gauge!(names::SOURCE_LAG_BYTES)
            .set(self.lag_bytes().map_or(f64::NAN, |b| b as f64));
        metrics::gauge!(names::CHECKPOINT_AGE_SECONDS).set(self.checkpoint_age().as_secs_f64());
        metrics::gauge!(names::SOURCE_CONNECTED).set(flag(&self.source_connected));
        metrics::gauge!(names::NATS_CONNECTED).set(flag(&self.nats_connected));
        metrics::gauge!(names::LEADER).set(1.0 - flag(&self.standing_by));
    }
}

#[cfg(test)]
mod tests;
