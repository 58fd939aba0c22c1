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
//! Pipelining alone cannot keep the stream in order: when one message is lost (a dropped
//! connection, a message the stream refuses) later ones may still be stored, and the lost one
//! would land after them on retry. With `nats.exclusive_streams` (the default) each message
//! but the first of a run carries `Nats-Expected-Last-Msg-Id` = the previous message of its
//! stream, so JetStream refuses everything after a lost message until it is republished.
//! JetStream checks dedup before that expectation, so republished duplicates pass; a message
//! acked as a duplicate was not stored, so the chain skips it (remembered across runs in
//! `known_duplicates`, for outbox ids that really repeat).
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::checkpoint::Checkpoint;
use crate::config::NatsConfig;
use crate::error::PublishError;

use crate::outbox::{OutboxEvent, RowPosition};
use crate::route::subject_covers;
use crate::source::SourceMessage;
use crate::source::preflight::{Check, error_chain};

/// Message headers set on every event (static names: inserting them allocates nothing).
pub mod headers {
    use async_nats::HeaderName;

    /// JetStream's dedup header; the outbox row's id.
    pub const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
    /// JetStream stores the message only if the stream's last message has this id.
    pub const EXPECTED_LAST_MSG_ID: HeaderName =
        HeaderName::from_static("Nats-Expected-Last-Msg-Id");
    pub const AGGREGATE_TYPE: HeaderName = HeaderName::from_static("Outbox-Aggregate-Type");
    pub const AGGREGATE_ID: HeaderName = HeaderName::from_static("Outbox-Aggregate-Id");
    pub const EVENT_TYPE: HeaderName = HeaderName::from_static("Outbox-Event-Type");
    /// `schema.table` the row was inserted into.
    pub const TABLE: HeaderName = HeaderName::from_static("Outbox-Table");
    /// Binlog position of the row: `file:pos#row` (rows event start, row index).
    pub const SOURCE_POSITION: HeaderName = HeaderName::from_static("Outbox-Source-Position");
    /// Identity of the source server the row was read from (`@@server_uid` on MariaDB,
    /// `@@server_uuid` on MySQL).
    pub const SOURCE_SERVER: HeaderName = HeaderName::from_static("Outbox-Source-Server");
    /// On dead-letter messages: why the row could not be published normally.
    pub const DEAD_LETTER_REASON: HeaderName = HeaderName::from_static("Outbox-Dead-Letter-Reason");
    /// The mapped timestamp column, when configured.
    pub const TIMESTAMP: HeaderName = HeaderName::from_static("Outbox-Timestamp");
}

/// Connected JetStream publisher.
pub struct Publisher {
    client: async_nats::Client,
    js: Context,
    config: NatsConfig,
    /// Identity of the source server (`@@server_uid` / `@@server_uuid`), stamped on every
    /// message so that a restart can tell its own stored positions from another server's.
    source_identity: Option<String>,
    /// Ids JetStream acknowledged as duplicates (not stored): the order chain must not expect
    /// them as a stream's last message, in this run or the next one.
    known_duplicates: Mutex<HashSet<String>>,
}

/// Bound on [`Publisher::known_duplicates`]; only outbox ids that really repeat stay in it.
const MAX_KNOWN_DUPLICATES: usize = 100_000;

/// Per stream, the source position of the last stored message of this source server: events
/// at or before it are already in the stream (even if the dedup window has passed).
pub type StoredThrough = HashMap<String, RowPosition>;

enum Completion {
    Acked { id: String, duplicate: bool },
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
            known_duplicates: Mutex::default(),
        })
    }

    /// Sets the source server's identity stamped on every message.
    pub fn set_source_identity(&mut self, identity: &str) {
        self.source_identity = Some(identity.to_owned());
    }

    /// Reads the last message of each stream: where this source's events are stored through.
    /// Streams whose last message came from another server (or has no position) are left out,
    /// so nothing is skipped for them.
    ///
    /// Only sound with the order guard (`exclusive_streams`): it keeps this source's messages
    /// in a stream a gapless prefix of its events, so everything before the last one is
    /// stored. Without it a lost message may sit before a stored one, and skipping would lose
    /// it for good; then nothing is skipped and only the dedup window prevents duplicates.
    pub async fn stored_through<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a String>,
    ) -> Result<StoredThrough, PublishError> {
        let mut through = StoredThrough::new();
        let Some(identity) = &self.source_identity else {
            return Ok(through);
        };
        if !self.config.exclusive_streams {
            return Ok(through);
        }
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
            let header = |name: async_nats::HeaderName| {
                message.headers.get(name).map(|v| v.as_str().to_owned())
            };
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

    /// The NATS server's max_payload in bytes (an atomic read: this runs for every event,
    /// and `server_info()` would clone the whole INFO record).
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
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
        let mut chain = OrderChain::new(self.config.exclusive_streams);
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
                    Completion::Acked { id, duplicate } => {
                        events_in_flight -= 1;
                        self.note_duplicate(id, duplicate);
                    }
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
                        let event = self.dead_letter_if_oversized(*event);
                        let duplicate = self.is_known_duplicate(&event.id);
                        let expected_last = chain.next(&event.stream, &event.id, duplicate);
                        in_flight.push_back(self.publish(event, expected_last).await?);
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

    /// A message above the server's max_payload becomes a dead letter (reason in a header, no
    /// payload) when its table's policy says so; otherwise it is returned unchanged (and
    /// refused by [`Publisher::publish`]).
    fn dead_letter_if_oversized(&self, event: OutboxEvent) -> OutboxEvent {
        let max = self.max_payload();
        if event.payload.len() < max {
            return event;
        }
        let Some(dead_letter) = event.dead_letter.clone() else {
            return event;
        };
        let reason = format!(
            "message of {} bytes exceeds the NATS server's max_payload of {max} bytes",
            event.payload.len()
        );
        warn!(id = %event.id, position = %event.position, reason = %reason, dead_letter = %dead_letter, "bad row sent to the dead-letter subject");
        OutboxEvent {
            id: format!("{}:dead-letter", event.id),
            payload: Vec::new(),
            subject: dead_letter.to_string(),
            dead_letter: None,
            dead_letter_reason: Some(reason),
            ..event
        }
    }

    fn is_known_duplicate(&self, id: &str) -> bool {
        let known = self.known_duplicates.lock().expect("not poisoned");
        !known.is_empty() && known.contains(id)
    }

    /// Records how JetStream answered a publish of `id`: stored, or dropped as a duplicate.
    fn note_duplicate(&self, id: String, duplicate: bool) {
        let mut known = self.known_duplicates.lock().expect("not poisoned");
        if duplicate {
            if known.len() >= MAX_KNOWN_DUPLICATES {
                known.clear();
            }
            known.insert(id);
        } else if !known.is_empty() {
            known.remove(&id);
        }
    }

    /// Sends one event; the returned future resolves with its ack. `expected_last`: the id the
    /// stream's last message must have for JetStream to store this one.
    async fn publish(
        &self,
        event: OutboxEvent,
        expected_last: Option<String>,
    ) -> Result<BoxFuture<'static, Result<Completion, PublishError>>, PublishError> {
        let OutgoingMessage {
            id,
            subject,
            mut headers,
            payload,
        } = event.into();
        if let Some(identity) = &self.source_identity {
            headers.insert(headers::SOURCE_SERVER, identity.as_str());
        }
        if let Some(previous) = &expected_last {
            headers.insert(headers::EXPECTED_LAST_MSG_ID, previous.as_str());
        }
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
                Ok(ack) => Ok(Completion::Acked {
                    id,
                    duplicate: ack.duplicate,
                }),
                Err(source) if source.kind() == PublishErrorKind::WrongLastMessageId => {
                    Err(PublishError::Overtaken {
                        id,
                        subject: subject.to_string(),
                        previous: expected_last.unwrap_or_default(),
                        source,
                    })
                }
                Err(source) if is_jetstream_refusal(&source) => Err(PublishError::Refused {
                    id,
                    subject: subject.to_string(),
                    source,
                }),
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

/// The order guard's bookkeeping: per stream, the id of the last message sent that JetStream
/// should store, which the next message expects as the stream's last. Empty at the start of a
/// run, so the first message of each stream is unconditional: everything before it is
/// acknowledged, or already in the stream.
struct OrderChain {
    enabled: bool,
    last: HashMap<Arc<str>, String>,
}

impl OrderChain {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: HashMap::new(),
        }
    }

    /// The id message `id` of `stream` must follow, if any. A message JetStream is known to
    /// drop as a duplicate is not stored, so the chain does not move past it.
    fn next(&mut self, stream: &Arc<str>, id: &str, known_duplicate: bool) -> Option<String> {
        if !self.enabled {
            return None;
        }
        if known_duplicate {
            return self.last.get(stream).cloned();
        }
        match self.last.get_mut(stream) {
            Some(last) => Some(std::mem::replace(last, id.to_owned())),
            None => {
                self.last.insert(Arc::clone(stream), id.to_owned());
                None
            }
        }
    }
}

/// An event as JetStream gets it: subject, headers and body, and its id for errors and acks.
pub struct OutgoingMessage {
    pub id: String,
    pub subject: String,
    /// Dedup id, routing fields, source position and configured extras.
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
}

impl From<OutboxEvent> for OutgoingMessage {
    /// Moves the event's strings into the headers rather than copying them (this runs for
    /// every event).
    fn from(event: OutboxEvent) -> Self {
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, event.id.as_str());
        h.insert(headers::AGGREGATE_TYPE, event.aggregate_type);
        h.insert(headers::AGGREGATE_ID, event.aggregate_id);
        h.insert(headers::EVENT_TYPE, event.event_type);
        h.insert(headers::TABLE, &*event.qualified_table);
        h.insert(headers::SOURCE_POSITION, event.position.to_string());
        if let Some(ts) = event.timestamp {
            h.insert(headers::TIMESTAMP, ts);
        }
        if let Some(reason) = event.dead_letter_reason {
            h.insert(headers::DEAD_LETTER_REASON, reason);
        }
        for (name, value) in event.headers {
            h.insert(&*name, value);
        }
        Self {
            id: event.id,
            subject: event.subject,
            headers: h,
            payload: event.payload,
        }
    }
}

/// Whether JetStream answered with an error (the message was definitely not stored), rather
/// than the ack being lost or late.
fn is_jetstream_refusal(err: &async_nats::jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .is_some_and(|source| source.downcast_ref::<jetstream::Error>().is_some())
}

fn uncovered_filters(stream_subjects: &[String], filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .filter(|f| !stream_subjects.iter().any(|s| subject_covers(s, f)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_of_a_stream_expects_the_previous_one_except_the_first() {
        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        let mut chain = OrderChain::new(true);
        assert_eq!(chain.next(&a, "1", false), None);
        assert_eq!(chain.next(&b, "x", false), None, "streams chain separately");
        assert_eq!(chain.next(&a, "2", false).as_deref(), Some("1"));
        assert_eq!(
            chain.next(&a, "1", true).as_deref(),
            Some("2"),
            "a known duplicate"
        );
        assert_eq!(chain.next(&a, "3", false).as_deref(), Some("2"), "skips it");
        assert_eq!(chain.next(&b, "y", false).as_deref(), Some("x"));
    }

    #[test]
    fn without_the_guard_nothing_is_expected() {
        let a: Arc<str> = "A".into();
        let mut chain = OrderChain::new(false);
        assert_eq!(chain.next(&a, "1", false), None);
        assert_eq!(chain.next(&a, "2", false), None);
    }
}
