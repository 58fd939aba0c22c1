//! The ack window: events in, acknowledged transaction ends out, in order.
//!
//! At most `ack_window` publishes await their ack at once; acks are consumed in publish order,
//! and a transaction end is reported only after every event before it was acknowledged. Any
//! failure ends the run with the error; the supervisor resumes from the last acknowledged
//! transaction end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::acks::AckInbox;
use super::order::OrderChain;
use super::unacked::Unacked;
use super::{OutgoingMessage, Publisher, StoredThrough};
use crate::checkpoint::Checkpoint;
use crate::config::BadRowPolicy;
use crate::error::PublishError;
use crate::ha::LeaseClock;
use crate::observe::Observer;
use crate::outbox::OutboxEvent;
use crate::source::SourceMessage;

/// One run of the publisher stage.
pub struct AckWindow<'a> {
    pub(super) publisher: &'a Publisher,
    /// Events the streams already hold (not published again).
    pub(super) stored: StoredThrough,
    /// The source server's identity, stamped on every message.
    pub(super) source: Option<String>,
    pub(super) observer: Option<Arc<Observer>>,
    /// The leader's deadline under `[ha]`: nothing is published after it.
    pub(super) lease: Option<Arc<LeaseClock>>,
}

impl<'a> AckWindow<'a> {
    pub(super) fn new(
        publisher: &'a Publisher,
        stored: StoredThrough,
        source: Option<String>,
    ) -> Self {
        Self {
            publisher,
            stored,
            source,
            observer: None,
            lease: None,
        }
    }

    /// Publishes only while `lease` is valid.
    pub fn leading_until(mut self, lease: Option<Arc<LeaseClock>>) -> Self {
        self.lease = lease;
        self
    }

    /// Reports publishes and acks to `observer`.
    pub fn observed_by(mut self, observer: Arc<Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Publishes events from `rx` in order, reporting each transaction end to `acked` once all
    /// events before it are acknowledged. `source` is the identity of the server the events
    /// are read from, stamped on every message. Returns when the input closes or `cancel`
    /// fires, after waiting for the acks in flight.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<SourceMessage>,
        acked: &watch::Sender<Option<Checkpoint>>,
        cancel: CancellationToken,
    ) -> Result<(), PublishError> {
        if self.publisher.uses_atomic_batches() {
            return self.run_batched(rx, acked, cancel).await;
        }
        let publisher = self.publisher;
        let window = publisher.config.ack_window;
        let timeout = Duration::from_millis(publisher.config.ack_timeout_ms);
        let mut inbox = AckInbox::open(&publisher.client)
            .await
            .map_err(|source| PublishError::AckSubscribe { source })?;
        // Sent and not yet acknowledged, in publish order: `unacked[i]` is message number
        // `first_unacked + i` of the inbox.
        let mut unacked: VecDeque<Unacked> = VecDeque::new();
        let mut first_unacked = 0u64;
        // Fires when the oldest message may have waited `timeout` for its ack (re-armed
        // from the oldest one's send time while it has not).
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let observer = self.observer.clone();
        let mut chain = OrderChain::new(publisher.config.exclusive_streams);
        let mut reading = true;
        loop {
            // Priority: shutdown, then acks (they free window slots and bound memory), then
            // new input while the window has room.
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if reading => {
                    debug!(in_flight = unacked.len(), "publisher stops reading");
                    reading = false;
                }
                reply = inbox.next(), if !unacked.is_empty() => {
                    let Some((number, ack)) = reply else {
                        return Err(unacked.pop_front().expect("not empty").closed());
                    };
                    if let Some(message) = number
                        .checked_sub(first_unacked)
                        .and_then(|i| unacked.get_mut(i as usize))
                    {
                        message.ack.get_or_insert(ack);
                    }
                    while unacked.front().is_some_and(|m| m.ack.is_some()) {
                        let mut message = unacked.pop_front().expect("not empty");
                        first_unacked += 1;
                        let next_committed_us = unacked.front().map(|m| m.committed_us);
                        let end = message.end.take();
                        let (id, stream, duplicate, committed_us) = message.settle()?;
                        if let Some(o) = &observer {
                            o.acked(&stream, duplicate, committed_us, next_committed_us);
                        }
                        publisher.note_duplicate(id, duplicate);
                        if let Some(end) = end {
                            acked.send_replace(Some(*end));
                        }
                    }
                }
                () = &mut deadline, if !unacked.is_empty() => {
                    let oldest = unacked.front().expect("not empty");
                    let due = oldest.sent_at + timeout;
                    if due <= Instant::now() {
                        return Err(unacked.pop_front().expect("not empty").timed_out(timeout));
                    }
                    deadline.as_mut().reset(due);
                }
                msg = rx.recv(), if reading && unacked.len() < window => match msg {
                    None => reading = false,
                    Some(SourceMessage::Event(event)) => {
                        if self.is_stored(&event) {
                            continue;
                        }
                        let message = OutgoingMessage::new(*event, self.source.as_deref());
                        let expected_len = chain.expected_len(&message.stream);
                        let message = self.dead_letter_if_oversized(message, expected_len);
                        let duplicate = publisher.is_known_duplicate(&message.id);
                        let expected_last = chain.next(&message.stream, &message.id, duplicate);
                        self.ensure_leading(&message.id)?;
                        let sent = publisher.send(&mut inbox, message, expected_last).await?;
                        if unacked.is_empty() {
                            deadline.as_mut().reset(sent.sent_at + timeout);
                        }
                        let committed_us = sent.committed_us;
                        unacked.push_back(sent);
                        if let Some(o) = &observer {
                            o.published(unacked.front().map_or(committed_us, |m| m.committed_us));
                        }
                    }
                    Some(SourceMessage::TransactionEnd(checkpoint)) => match unacked.back_mut() {
                        // Acknowledged with the last message before it.
                        Some(last) => last.end = Some(checkpoint),
                        None => {
                            acked.send_replace(Some(*checkpoint));
                        }
                    },
                },
                else => return Ok(()),
            }
        }
    }

    /// Under `[ha]`: nothing is published once the lease ran out (`id`: the event that would
    /// have been).
    pub(super) fn ensure_leading(&self, id: &str) -> Result<(), PublishError> {
        match self.lease.as_ref().is_some_and(|lease| !lease.is_valid()) {
            true => Err(PublishError::LeaseExpired { id: id.to_owned() }),
            false => Ok(()),
        }
    }

    /// Whether the streams already hold `event` (stored before a crash, maybe outside the
    /// dedup window by now): it is not published again.
    pub(super) fn is_stored(&self, event: &OutboxEvent) -> bool {
        let stored = self
            .stored
            .get(&*event.stream)
            .is_some_and(|p| event.position <= *p);
        if stored {
            debug!(id = %event.id, position = %event.position, "already stored, not republished");
        }
        stored
    }

    /// A message above the server's max_payload (headers included, with `extra_headers`
    /// bytes of headers still to be added) becomes a dead letter (reason in a header, no
    /// body) when its table's policy says so; otherwise it is returned unchanged, and
    /// refused when it is sent.
    pub(super) fn dead_letter_if_oversized(
        &self,
        message: OutgoingMessage,
        extra_headers: usize,
    ) -> OutgoingMessage {
        let max = self.publisher.max_payload();
        let size = message.wire_size(extra_headers);
        if size <= max {
            return message;
        }
        let policy = match message.dead_letter {
            Some(_) => BadRowPolicy::DeadLetter,
            None => BadRowPolicy::Fail,
        };
        if let Some(o) = &self.observer {
            o.bad_row(&message.table, policy.label());
        }
        let Some(dead_letter) = message.dead_letter.clone() else {
            return message;
        };
        let reason = format!(
            "message of {size} bytes (headers and body) exceeds the NATS server's max_payload of {max} bytes"
        );
        warn!(id = %message.id, position = %message.position, reason = %reason, dead_letter = %dead_letter, "bad row sent to the dead-letter subject");
        message.into_dead_letter(&dead_letter, &reason)
    }
}
