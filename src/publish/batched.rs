//! The publisher stage in `atomic_batch` mode: whole transactions as JetStream atomic
//! batches (protocol in [`super::batch`], grouping in [`super::grouping`]).
//!
//! Group commit: while batches commit, the next fills. A batch is sent when it is full, or
//! as soon as no more input is waiting and fewer than [`BATCHES_IN_FLIGHT`] batches await
//! their commit; so a quiet stream commits each transaction at once and a backlog fills
//! batches to the server's limit of [`MAX_BATCH_MESSAGES`].
//!
//! A group in which every message is its transaction's only event for the stream (the
//! usual outbox transaction writes one event) needs no batch: each message is atomic on its
//! own. Such a group is sent as single publishes (`batch::send_singles`), each expecting the
//! stream's last sequence before it, which spares the server staging a batch (on a stream
//! with one replica on file storage nats-server stages each batch in a file store of its
//! own). A group holding a transaction with several events for the stream is a batch.
//!
//! Order: each batch's first message expects the stream's last sequence before it
//! (`Nats-Expected-Last-Sequence`: read from the stream before this run's first batch, then
//! advanced by each batch's size, since a batch is stored whole or not at all). A batch that
//! is lost therefore makes every later one fail rather than be stored ahead of it; the run
//! ends with the error and the supervisor resumes from the last acknowledged transaction end
//! (the start-up skip leaves out what the stream already holds).
//!
//! A batch refused because the stream already holds one of its ids (error 10201: an outbox id
//! repeated within the duplicate window) cannot be told apart message by message, and would
//! be refused on every retry. A group of singles with such an id stops at it the same way
//! (the messages after it expect a sequence the duplicate did not take). The publisher remembers the first and last position of such a
//! batch; the next run sends the events of batches overlapping that range one at a time
//! (dedup drops the duplicate, as in per-message mode, and each expects the stream's last
//! sequence), then batches again. Those transactions are then not atomic.
//!
//! A batch abandoned as incomplete (10176) had a message refused on its own, which the
//! server answers only when the message asks for an answer, or lost part of it with a broken
//! connection. The next run sends batches overlapping it with every message asking for an
//! answer, so that a refusal (a message above the stream's `max_msg_size`, say) is reported
//! with its reason; then batches as usual again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::batch::{self, BatchMessage, MAX_BATCH_ID_LEN, MAX_BATCH_MESSAGES};
use super::grouping::{Grouper, Output};
use super::message::header_line_len;
use super::{AckWindow, OutgoingMessage, PositionRange, Publisher, Refusal, RefusedBatch};
use crate::checkpoint::Checkpoint;
use crate::config::PublishMode;
use crate::error::PublishError;
use crate::source::SourceMessage;

/// Batches awaiting their commit at once (the server allows 50 per stream): enough to keep
/// the server busy while the next batch fills, few enough that a quiet stream's transaction
/// waits for at most this many commits.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// Header bytes a message gains in a batch (id, sequence, commit, expected last sequence),
/// at most: counted before the max_payload check.
fn batch_header_bytes() -> usize {
    header_line_len(batch::BATCH_ID.as_ref(), MAX_BATCH_ID_LEN)
        + header_line_len(batch::BATCH_SEQUENCE.as_ref(), 4)
        + header_line_len(batch::BATCH_COMMIT.as_ref(), 1)
        + header_line_len(batch::EXPECTED_LAST_SEQUENCE.as_ref(), 20)
}

/// What an entry of the commit queue resolves to.
enum Done {
    Batch {
        stream: Arc<str>,
        committed_us: Vec<u64>,
    },
    End(Box<Checkpoint>),
}

type Commit = BoxFuture<'static, Result<Done, PublishError>>;

/// State of one batched run.
struct Batcher<'w, 'a> {
    window: &'w AckWindow<'a>,
    /// Per stream, the last sequence the next batch expects (read with the stream tips, or
    /// before the stream's first batch).
    last_sequence: HashMap<Arc<str>, u64>,
    commits: FuturesOrdered<Commit>,
    batches_in_flight: usize,
    /// Commit times of the messages sent and not yet committed, oldest first (for the lag).
    waiting: VecDeque<u64>,
    /// Batch ids: a prefix unique to this run, and a counter.
    run_id: String,
    batches_sent: u64,
    /// Per stream, the refused batch whose range is sent differently (see the module docs).
    refused: HashMap<String, RefusedBatch>,
}

impl AckWindow<'_> {
    /// [`AckWindow::run`] with atomic batches.
    pub(super) async fn run_batched(
        self,
        mut rx: mpsc::Receiver<SourceMessage>,
        acked: &watch::Sender<Option<Checkpoint>>,
        cancel: CancellationToken,
    ) -> Result<(), PublishError> {
        let mut grouper: Grouper<OutgoingMessage, Box<Checkpoint>> =
            Grouper::new(MAX_BATCH_MESSAGES);
        let mut out = Vec::new();
        let mut batcher = Batcher {
            window: &self,
            last_sequence: self
                .publisher
                .take_tip_sequences()
                .into_iter()
                .map(|(stream, seq)| (Arc::from(stream), seq))
                .collect(),
            commits: FuturesOrdered::new(),
            batches_in_flight: 0,
            waiting: VecDeque::new(),
            run_id: nuid::next().to_string(),
            batches_sent: 0,
            refused: self.publisher.refused_batches(),
        };
        let extra_headers = batch_header_bytes();
        let mut reading = true;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if reading => {
                    debug!(in_flight = batcher.batches_in_flight, "publisher stops reading");
                    reading = false;
                }
                Some(done) = batcher.commits.next(), if !batcher.commits.is_empty() => {
                    batcher.settle(done?, acked);
                    if reading
                        && rx.is_empty()
                        && grouper.has_group()
                        && batcher.batches_in_flight < BATCHES_IN_FLIGHT
                    {
                        grouper.flush(&mut out);
                        batcher.send_all(&mut out, acked).await?;
                    }
                }
                msg = rx.recv(), if reading => {
                    match msg {
                        None => {
                            // The source ended: what it read in full still goes out.
                            reading = false;
                            grouper.flush(&mut out);
                        }
                        Some(SourceMessage::Event(event)) if self.is_stored(&event) => {}
                        Some(SourceMessage::Event(event)) => {
                            let message = OutgoingMessage::new(*event, self.source.as_deref());
                            let message = self.dead_letter_if_oversized(message, extra_headers);
                            self.refuse_oversized(&message, extra_headers)?;
                            let stream = Arc::clone(&message.stream);
                            grouper.push(&stream, message, &mut out);
                        }
                        Some(SourceMessage::TransactionEnd(checkpoint)) => {
                            grouper.end(checkpoint, &mut out);
                        }
                    }
                    if rx.is_empty() && batcher.batches_in_flight < BATCHES_IN_FLIGHT {
                        grouper.flush(&mut out);
                    }
                    batcher.send_all(&mut out, acked).await?;
                }
                else => return Ok(()),
            }
        }
    }

    /// A message still above max_payload after [`AckWindow::dead_letter_if_oversized`]
    /// (its table has no dead-letter subject) stops the run.
    fn refuse_oversized(
        &self,
        message: &OutgoingMessage,
        extra_headers: usize,
    ) -> Result<(), PublishError> {
        let max = self.publisher.max_payload();
        let size = message.wire_size(extra_headers);
        match size > max {
            true => Err(PublishError::TooLarge {
                id: message.id.clone(),
                subject: message.subject.clone(),
                size,
                max,
            }),
            false => Ok(()),
        }
    }
}

impl Batcher<'_, '_> {
    fn publisher(&self) -> &Publisher {
        self.window.publisher
    }

    /// Sends what the grouper handed out, in order, waiting for a commit slot when all are
    /// taken.
    async fn send_all(
        &mut self,
        out: &mut Vec<Output<OutgoingMessage, Box<Checkpoint>>>,
        acked: &watch::Sender<Option<Checkpoint>>,
    ) -> Result<(), PublishError> {
        for output in out.drain(..) {
            match output {
                Output::End(checkpoint) => self
                    .commits
                    .push_back(futures::future::ready(Ok(Done::End(checkpoint))).boxed()),
                Output::Batch {
                    stream,
                    messages,
                    singles,
                } => {
                    while self.batches_in_flight >= BATCHES_IN_FLIGHT {
                        let done = self.commits.next().await.expect("batches are in flight");
                        self.settle(done?, acked);
                    }
                    self.send_batch(stream, messages, singles, acked).await?;
                }
            }
        }
        Ok(())
    }

    /// A commit (or transaction end) that resolved.
    fn settle(&mut self, done: Done, acked: &watch::Sender<Option<Checkpoint>>) {
        match done {
            Done::Batch {
                stream,
                committed_us,
            } => {
                self.batches_in_flight -= 1;
                for committed in committed_us {
                    self.waiting.pop_front();
                    if let Some(o) = &self.window.observer {
                        o.acked(&stream, false, committed, self.waiting.front().copied());
                    }
                }
            }
            Done::End(checkpoint) => {
                acked.send_replace(Some(*checkpoint));
            }
        }
    }

    /// The stream's last sequence the next batch of `stream` expects.
    async fn expected_last_sequence(&mut self, stream: &Arc<str>) -> Result<u64, PublishError> {
        if let Some(seq) = self.last_sequence.get(stream) {
            return Ok(*seq);
        }
        // Nothing of this stream is in flight in this run yet.
        let seq = self
            .publisher()
            .stream_state(stream)
            .await?
            .map_or(0, |state| state.last_sequence);
        self.last_sequence.insert(Arc::clone(stream), seq);
        Ok(seq)
    }

    /// Sends a group as one atomic batch or, with `singles` (each message its transaction's
    /// only event for the stream), as single publishes that the server need not stage.
    async fn send_batch(
        &mut self,
        stream: Arc<str>,
        messages: Vec<OutgoingMessage>,
        singles: bool,
        acked: &watch::Sender<Option<Checkpoint>>,
    ) -> Result<(), PublishError> {
        let range: PositionRange = (
            messages[0].position.clone(),
            messages[messages.len() - 1].position.clone(),
        );
        let mut answer_each = false;
        if let Some(refused) = self.refused.get(&*stream) {
            let overlaps = range.0 <= refused.range.1 && range.1 >= refused.range.0;
            match refused.why {
                Refusal::Duplicate if overlaps => {
                    return self.send_one_by_one(stream, messages, acked).await;
                }
                Refusal::Incomplete if overlaps => answer_each = true,
                _ if range.0 > refused.range.1 => {
                    self.publisher().clear_refused_batch(&stream, refused);
                    self.refused.remove(&*stream);
                }
                _ => {}
            }
        }
        self.window.ensure_leading(&messages[0].id)?;
        let expected = self.expected_last_sequence(&stream).await?;
        self.batches_sent += 1;
        let batch_id = match singles {
            false => format!("{}-{}", self.run_id, self.batches_sent),
            true => format!(
                "{}-{} (sent as single messages)",
                self.run_id, self.batches_sent
            ),
        };
        let count = messages.len() as u64;
        let first_id = messages[0].id.clone();
        let last_id = messages[messages.len() - 1].id.clone();
        let mut committed_us = Vec::with_capacity(messages.len());
        let parts: Vec<BatchMessage> = messages
            .into_iter()
            .map(|message| {
                committed_us.push(message.committed_us);
                BatchMessage {
                    subject: message.subject.into(),
                    headers: message.headers,
                    payload: Bytes::from(message.payload),
                }
            })
            .collect();
        let timeout = Duration::from_millis(self.publisher().config.ack_timeout_ms);
        let context = BatchContext {
            batch: batch_id.clone(),
            stream: Arc::clone(&stream),
            first_id,
            last_id,
        };
        let client = &self.publisher().client;
        let commit = match singles {
            true => batch::send_singles(client, &batch_id, &stream, expected, parts, timeout).await,
            false => {
                batch::send(
                    client,
                    &batch_id,
                    Some(expected),
                    parts,
                    answer_each,
                    timeout,
                )
                .await
            }
        }
        .map_err(|e| context.error(e))?;
        self.last_sequence
            .insert(Arc::clone(&stream), expected + count);
        self.batches_in_flight += 1;
        for committed in &committed_us {
            self.waiting.push_back(*committed);
            if let Some(o) = &self.window.observer {
                o.published(self.waiting.front().copied().unwrap_or(*committed));
            }
        }
        let refused_batches = Arc::clone(&self.publisher().refused_batches);
        let auto = self.publisher().config.publish_mode == PublishMode::Auto;
        self.commits.push_back(
            async move {
                match commit
                    .await
                    .and_then(|ack| ack.placed(&context.batch, count, expected))
                {
                    Ok(_) => Ok(Done::Batch {
                        stream,
                        committed_us,
                    }),
                    Err(e) if auto && e.code() == Some(batch::ERR_BATCH_DISABLED) => {
                        // allow_atomic was turned off: the next attempt decides again (and
                        // publishes per message).
                        Err(PublishError::StreamUnavailable {
                            stream: stream.to_string(),
                            action: "publishing an atomic batch (auto mode decides again)",
                            source: Box::new(e),
                        })
                    }
                    Err(e) => {
                        let why = match e.code() {
                            _ if e.is_duplicate() => Some(Refusal::Duplicate),
                            Some(batch::ERR_BATCH_INCOMPLETE) => Some(Refusal::Incomplete),
                            _ => None,
                        };
                        if let Some(why) = why {
                            // Remembered for the next run (see the module docs).
                            refused_batches
                                .lock()
                                .expect("not poisoned")
                                .insert(stream.to_string(), RefusedBatch { range, why });
                        }
                        Err(context.error(e))
                    }
                }
            }
            .boxed(),
        );
        Ok(())
    }

    /// Sends `messages` one publish at a time, each awaited and expecting the stream's last
    /// sequence, after everything in flight has committed: the path past a batch that was
    /// refused for holding an id the stream already has.
    async fn send_one_by_one(
        &mut self,
        stream: Arc<str>,
        messages: Vec<OutgoingMessage>,
        acked: &watch::Sender<Option<Checkpoint>>,
    ) -> Result<(), PublishError> {
        while let Some(done) = self.commits.next().await {
            self.settle(done?, acked);
        }
        let mut expected = self.expected_last_sequence(&stream).await?;
        let js = &self.publisher().js;
        for message in messages {
            self.window.ensure_leading(&message.id)?;
            let OutgoingMessage {
                id,
                subject,
                mut headers,
                payload,
                committed_us,
                ..
            } = message;
            headers.insert(batch::EXPECTED_LAST_SEQUENCE, expected.to_string());
            let publish = PublishMessage::build()
                .payload(Bytes::from(payload))
                .headers(headers);
            let sent = js.send_publish(subject.clone(), publish).await;
            let ack = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    if ack.duplicate {
                        warn!(id = %id, stream = %stream, "event not stored: the stream already holds an event with this id (within its duplicate window)");
                    } else {
                        expected = ack.sequence;
                    }
                    if let Some(o) = &self.window.observer {
                        o.published(committed_us);
                        o.acked(&stream, ack.duplicate, committed_us, None);
                    }
                }
                Err(source) if source.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(PublishError::Refused {
                        id,
                        subject,
                        source: source.into(),
                    });
                }
                Err(source) => {
                    return Err(PublishError::Ack {
                        id,
                        subject,
                        source: source.into(),
                    });
                }
            }
        }
        self.last_sequence.insert(stream, expected);
        Ok(())
    }
}

/// What an error about a batch names.
struct BatchContext {
    batch: String,
    stream: Arc<str>,
    first_id: String,
    last_id: String,
}

impl BatchContext {
    fn error(&self, source: batch::BatchError) -> PublishError {
        PublishError::Batch {
            batch: self.batch.clone(),
            stream: self.stream.to_string(),
            first_id: self.first_id.clone(),
            last_id: self.last_id.clone(),
            source: Box::new(source),
        }
    }
}
