//! JetStream publisher: events in, acknowledged transaction ends out.
//!
//! Every event is published with `Nats-Msg-Id` = the outbox row's id, so JetStream drops
//! republished duplicates within the stream's duplicate window. At most `ack_window` publishes
//! await their ack at once (well below async-nats' 5000 ack permits). Acks are consumed in
//! publish order; a transaction end is reported as acknowledged only after every event before
//! it was acked. Any publish or ack failure stops this stage with an error: the supervisor
//! resumes from the last acknowledged transaction end and republishes in order, relying on
//! dedup.
//!
//! At start, [`Publisher::ensure_stream`] creates the stream (when configured to) or verifies
//! that an existing one covers every subject the templates can produce.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::Checkpoint;
use crate::config::NatsConfig;
use crate::error::PublishError;
use std::collections::HashMap;

use crate::outbox::{OutboxEvent, RowPosition};
use crate::route::subject_covers;
use crate::source::SourceMessage;
use crate::source::preflight::{Check, error_chain};

/// Message headers set on every event.
pub mod headers {
    /// JetStream's dedup header; the outbox row's id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const AGGREGATE_TYPE: &str = "Outbox-Aggregate-Type";
    pub const AGGREGATE_ID: &str = "Outbox-Aggregate-Id";
    pub const EVENT_TYPE: &str = "Outbox-Event-Type";
    /// `schema.table` the row was inserted into.
    pub const TABLE: &str = "Outbox-Table";
    /// Binlog position of the row: `file:pos#row` (rows event start, row index).
    pub const SOURCE_POSITION: &str = "Outbox-Source-Position";
    /// Identity of the source server the row was read from (`@@server_uid` on MariaDB,
    /// `@@server_uuid` on MySQL).
    pub const SOURCE_SERVER: &str = "Outbox-Source-Server";
    /// On dead-letter messages: why the row could not be published normally.
    pub const DEAD_LETTER_REASON: &str = "Outbox-Dead-Letter-Reason";
    /// The mapped timestamp column, when configured.
    pub const TIMESTAMP: &str = "Outbox-Timestamp";
}

/// Connected JetStream publisher.
pub struct Publisher {
    client: async_nats::Client,
    js: Context,
    config: NatsConfig,
    /// Identity of the source server (`@@server_uid` / `@@server_uuid`), stamped on every
    /// message so that a restart can tell its own stored positions from another server's.
    source_identity: Option<String>,
}

/// Per stream, the source position of the last stored message of this source server: events
/// at or before it are already in the stream (even if the dedup window has passed).
pub type StoredThrough = HashMap<String, RowPosition>;

enum Completion {
    Acked,
    TransactionEnd(Checkpoint),
}

impl Publisher {
    pub async fn connect(config: &NatsConfig) -> Result<Self, PublishError> {
        let connect_err = |source| PublishError::Connect {
            url: config.url.redacted(),
            source,
        };
        let options = async_nats::ConnectOptions::new()
            .name("binlog-outbox")
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms));
        let client = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            options.connect(config.url.expose()),
        )
        .await
        .map_err(|_| {
            connect_err(async_nats::ConnectError::new(
                async_nats::ConnectErrorKind::TimedOut,
            ))
        })?
        .map_err(connect_err)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .max_ack_inflight(crate::config::MAX_ACK_WINDOW + 500)
            .build(client.clone());
        info!(url = %config.url, "connected to NATS");
        Ok(Self {
            client,
            js,
            config: config.clone(),
            source_identity: None,
        })
    }

    /// Sets the source server's identity stamped on every message.
    pub fn set_source_identity(&mut self, identity: &str) {
        self.source_identity = Some(identity.to_owned());
    }

    /// Reads the last message of each stream: where this source's events are stored through.
    /// Streams whose last message came from another server (or has no position) are left out,
    /// so nothing is skipped for them.
    pub async fn stored_through<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a String>,
    ) -> Result<StoredThrough, PublishError> {
        let mut through = StoredThrough::new();
        let Some(identity) = &self.source_identity else {
            return Ok(through);
        };
        for name in streams {
            let stream_err = |reason: String| PublishError::Unavailable {
                stream: name.clone(),
                reason,
            };
            let mut stream = self
                .js
                .get_stream(name)
                .await
                .map_err(|e| stream_err(format!("cannot look it up: {e}")))?;
            let last = stream
                .info()
                .await
                .map_err(|e| stream_err(format!("cannot read stream info: {e}")))?
                .state
                .last_sequence;
            if last == 0 {
                continue;
            }
            let Ok(message) = stream.get_raw_message(last).await else {
                continue;
            };
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
            if header(headers::SOURCE_SERVER).as_deref() != Some(identity.as_str()) {
                continue;
            }
            if let Some(position) = header(headers::SOURCE_POSITION).and_then(|p| p.parse().ok()) {
                info!(stream = %name, stored_through = %position, "stream already holds events up to here; older ones are not republished");
                through.insert(name.clone(), position);
            }
        }
        Ok(through)
    }

    /// The NATS server's max_payload in bytes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Creates stream `name` if missing (when `create_stream`), or verifies that it covers
    /// every subject filter in `filters`.
    pub async fn ensure_stream(&self, name: &str, filters: &[String]) -> Result<(), PublishError> {
        let name = &name.to_owned();
        let stream_err = |reason: String| PublishError::Stream {
            stream: name.clone(),
            reason,
        };
        match self.js.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| stream_err(format!("cannot read stream info: {e}")))?;
                let uncovered = uncovered_filters(&info.config.subjects, filters);
                if !uncovered.is_empty() {
                    return Err(stream_err(format!(
                        "its subjects [{}] do not cover [{}]; add them to the stream",
                        info.config.subjects.join(", "),
                        uncovered.join(", ")
                    )));
                }
                if info.config.duplicate_window.is_zero() {
                    return Err(stream_err(
                        "duplicate_window is 0, so republished events would be stored twice".into(),
                    ));
                }
                info!(stream = %name, subjects = ?info.config.subjects, "stream verified");
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                if !self.config.create_stream {
                    return Err(stream_err(format!(
                        "does not exist ({e}); create it or set nats.create_stream = true"
                    )));
                }
                let config = StreamConfig {
                    name: name.clone(),
                    subjects: filters.to_vec(),
                    storage: StorageType::File,
                    duplicate_window: Duration::from_millis(self.config.duplicate_window_ms),
                    ..Default::default()
                };
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| stream_err(format!("cannot create it: {e}")))?;
                info!(stream = %name, subjects = ?filters, "stream created");
                Ok(())
            }
            Err(e) => Err(stream_err(format!(
                "cannot look it up: {}",
                error_chain(&e)
            ))),
        }
    }

    /// Preflight view of [`Publisher::ensure_stream`] that changes nothing.
    pub async fn check_stream(&self, stream: &str, filters: &[String]) -> Check {
        let name = format!("stream {stream}");
        match self.js.get_stream(stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => {
                    let uncovered = uncovered_filters(&info.config.subjects, filters);
                    if uncovered.is_empty() {
                        Check::pass(
                            name,
                            format!("subjects [{}]", info.config.subjects.join(", ")),
                        )
                    } else {
                        Check::fail(
                            name,
                            format!("does not cover [{}]", uncovered.join(", ")),
                            "add the subjects to the stream",
                        )
                    }
                }
                Err(e) => Check::fail(name, e.to_string(), "check JetStream permissions"),
            },
            Err(_) if self.config.create_stream => Check::pass(
                name,
                format!(
                    "missing; will be created with subjects [{}]",
                    filters.join(", ")
                ),
            ),
            Err(e) => Check::fail(
                name,
                format!("not found: {e}"),
                "create the stream or set nats.create_stream = true",
            ),
        }
    }

    /// Publishes events from `rx` in order, reporting each transaction end to `acked` once all
    /// events before it are acknowledged. Returns when the input closes or `cancel` fires, after
    /// waiting for the acks in flight.
    pub async fn run(
        &self,
        mut rx: mpsc::Receiver<SourceMessage>,
        acked: &watch::Sender<Option<Checkpoint>>,
        stored: &StoredThrough,
        cancel: CancellationToken,
    ) -> Result<(), PublishError> {
        let window = self.config.ack_window;
        let mut in_flight: FuturesOrdered<BoxFuture<'static, Result<Completion, PublishError>>> =
            FuturesOrdered::new();
        let mut events_in_flight = 0usize;
        let mut reading = true;
        loop {
            // Priority: shutdown, then ack completions (they free window slots and bound
            // memory), then new input while the window has room.
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if reading => {
                    debug!(in_flight = events_in_flight, "publisher stops reading");
                    reading = false;
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => match done? {
                    Completion::Acked => events_in_flight -= 1,
                    Completion::TransactionEnd(checkpoint) => {
                        acked.send_replace(Some(checkpoint));
                    }
                },
                msg = rx.recv(), if reading && events_in_flight < window => match msg {
                    None => reading = false,
                    Some(SourceMessage::Event(event)) => {
                        if stored.get(&*event.stream).is_some_and(|p| event.position <= *p) {
                            // Stored before a crash; maybe outside the dedup window by now.
                            debug!(id = %event.id, position = %event.position, "already stored, not republished");
                            continue;
                        }
                        in_flight.push_back(self.publish(*event).await?);
                        events_in_flight += 1;
                    }
                    Some(SourceMessage::TransactionEnd(checkpoint)) => {
                        in_flight.push_back(
                            futures::future::ready(Ok(Completion::TransactionEnd(checkpoint))).boxed(),
                        );
                    }
                },
                else => return Ok(()),
            }
        }
    }

    async fn publish(
        &self,
        event: OutboxEvent,
    ) -> Result<BoxFuture<'static, Result<Completion, PublishError>>, PublishError> {
        let max = self.max_payload();
        if event.payload.len() >= max
            && let Some(dead_letter) = event.dead_letter.clone()
        {
            let reason = format!(
                "message of {} bytes exceeds the NATS server's max_payload of {max} bytes",
                event.payload.len()
            );
            warn!(id = %event.id, position = %event.position, reason = %reason, dead_letter = %dead_letter, "bad row sent to the dead-letter subject");
            let dead = OutboxEvent {
                id: format!("{}:dead-letter", event.id),
                payload: Vec::new(),
                subject: dead_letter.to_string(),
                dead_letter: None,
                dead_letter_reason: Some(reason),
                ..event
            };
            return Box::pin(self.publish(dead)).await;
        }
        let mut headers = event_headers(&event);
        if let Some(identity) = &self.source_identity {
            headers.insert(headers::SOURCE_SERVER, identity.as_str());
        }
        let OutboxEvent {
            id,
            subject,
            payload,
            ..
        } = event;
        let size = payload.len();
        let message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .headers(headers);
        // A Subject clones without copying; the String form is only made for errors.
        let subject = Subject::from(subject);
        let ack = match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(PublishError::TooLarge {
                    id,
                    subject: subject.to_string(),
                    size,
                    max: self.max_payload(),
                });
            }
            Err(source) => {
                return Err(PublishError::Send {
                    id,
                    subject: subject.to_string(),
                    source,
                });
            }
        };
        Ok(async move {
            match ack.await {
                Ok(_) => Ok(Completion::Acked),
                Err(source) => Err(PublishError::Ack {
                    id,
                    subject: subject.to_string(),
                    source,
                }),
            }
        }
        .boxed())
    }

    /// Flushes and closes the connection, delivering what is buffered.
    pub async fn drain(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.drain()).await;
    }
}

/// Headers of one event: dedup id, routing fields, source position and configured extras.
pub fn event_headers(event: &OutboxEvent) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::MSG_ID, event.id.as_str());
    h.insert(headers::AGGREGATE_TYPE, event.aggregate_type.as_str());
    h.insert(headers::AGGREGATE_ID, event.aggregate_id.as_str());
    h.insert(headers::EVENT_TYPE, event.event_type.as_str());
    h.insert(
        headers::TABLE,
        format!("{}.{}", event.schema, event.table).as_str(),
    );
    h.insert(
        headers::SOURCE_POSITION,
        event.position.to_string().as_str(),
    );
    if let Some(ts) = &event.timestamp {
        h.insert(headers::TIMESTAMP, ts.as_str());
    }
    if let Some(reason) = &event.dead_letter_reason {
        h.insert(headers::DEAD_LETTER_REASON, reason.as_str());
    }
    for (name, value) in &event.headers {
        h.insert(&**name, value.as_str());
    }
    h
}

fn uncovered_filters(stream_subjects: &[String], filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .filter(|f| !stream_subjects.iter().any(|s| subject_covers(s, f)))
        .cloned()
        .collect()
}
