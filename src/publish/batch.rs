//! JetStream atomic batch publishing: the protocol as nats-server implements it, for
//! `nats.publish_mode = "atomic_batch"` (the publisher stage is `super::batched`).
//!
//! Every fact below was read in the nats-server source (github.com/nats-io/nats-server,
//! commit `1787eee0`, and the tags `v2.12.0` / `v2.12.1` where they differ), and those marked
//! (tested) are exercised against nats-server 2.14.6 by the integration test
//! `atomic_batch::the_server_speaks_the_atomic_batch_protocol_as_documented` (and the sender
//! below by `atomic_batch::pipelined_library_batches_commit_in_order_and_a_republished_one_is_refused_whole`).
//!
//! # Messages
//! - Headers `Nats-Batch-Id` (at most 64 bytes, else error 10179 "batch ID is invalid"),
//!   `Nats-Batch-Sequence` (1, 2, … with no gap; missing: 10175), and `Nats-Batch-Commit: 1`
//!   on the last message (`eob` commits without storing that message; any other value: 10200).
//!   `server/stream.go` 742–744 (names), 7663–7685 (checks).
//! - A batch message sent with a reply subject that is not the commit is answered with an
//!   **empty** message once it is staged (`stream.go` 7835–7842: `outq.sendMsg(reply, nil)`);
//!   without a reply subject it is not answered. Errors are answered with a JSON error
//!   (`respondError`). So the first message can be a request (it proves the stream accepts
//!   atomic batches before the rest is sent) and the others plain publishes. (tested)
//! - The commit is answered with a pub ack `{"stream", "seq": <last sequence of the batch>,
//!   "batch": <id>, "count": <messages>}` (`stream.go` 7543; `PubAck.BatchId`/`BatchSize`,
//!   JSON `batch`/`count`, `stream.go` 258–268; the commit's last message is stored by
//!   `processJetStreamMsg`, which answers at 7539–7543). (tested)
//! - A gap, an unknown batch id with sequence > 1, or a batch idle for longer than the timeout
//!   is abandoned: error 10176 "batch is incomplete" (`stream.go` 7699–7705; advisory
//!   `BatchIncomplete`/`BatchTimeout`). Nothing of an abandoned (or never committed) batch is
//!   stored, and its message ids are recorded only at commit (`jetstream_batching.go`
//!   436–444), so it is republished whole, under a new batch id. (tested:
//!   `atomic_batch::a_batch_cut_off_before_its_commit_stores_nothing_and_is_republished_whole`,
//!   including the 10 s idle abandon)
//!
//! # Limits (`stream.go` 516–533, overridable in the server's `jetstream.limits`)
//! - 1,000 messages per batch (`max_batch_size`; 10199 "batch is too large"), 50 batches in
//!   flight per stream and 1,000 per server (10210 "too many inflight", HTTP-like code 429),
//!   10 s idle timeout (`streamDefaultMaxBatchTimeout`, reset by each message,
//!   `jetstream_batching.go` 76–91, 403–409).
//! - A batch goes to **one stream**: a database transaction whose events are routed to several
//!   streams can only be atomic per stream.
//! - The stream needs `allow_atomic: true` (`stream.go` 116–117; async-nats 0.51
//!   `stream::Config::allow_atomic_publish`, serde-renamed `allow_atomic`), else 10174
//!   "atomic publish is disabled" on the first message. Mirrors cannot allow it (10198).
//!
//! # Headers inside a batch (checked at commit, for every staged message)
//! - `Nats-Msg-Id` is **rejected** in v2.12.0 (`errorOnUnsupported(JSMsgId)`, v2.12.0
//!   `stream.go` 6478) and **allowed from v2.12.1** (`jetstream_batching.go` 600–625 at HEAD):
//!   an id repeated inside the batch, or already in the stream's duplicate window, rejects the
//!   **whole batch** with 10201 "batch contains duplicate message id"; an id whose original is
//!   still being proposed gives 10158 instead. Nothing of the batch is stored. (tested)
//! - `Nats-Expected-Last-Msg-Id` is rejected in a batch: 10177 "unsupported header used"
//!   (`stream.go` 7939–7942), so the per-message order chain cannot be carried into batches.
//! - `Nats-Expected-Last-Sequence` is allowed on the **first** message only (on a later one:
//!   `NewJSStreamWrongLastSequenceConstantError`); it is checked when the batch commits,
//!   against the stream's last sequence including batches committed before it
//!   (`jetstream_batching.go` 747–756). With an exclusive stream the last sequence after a
//!   batch is known without waiting for its ack (the previous expectation plus the batch's
//!   count, since a batch is stored whole or not at all), so batches can be pipelined and a
//!   lost batch still can never be overtaken. (tested: a wrong expectation refuses the batch)
//!
//! # What this means for the connector (the design `atomic_batch` mode is to follow)
//! - A restart resumes from the checkpoint and skips what the stream already holds (the
//!   start-up [`super::StoredThrough`]), so a committed batch is not republished. A whole-batch
//!   duplicate (10201) can therefore not be taken as "stored": batch boundaries differ from one
//!   run to the next, and a batch that mixes stored and new events would lose the new ones.
//!   It ends the run (the supervisor then recomputes what is stored and resumes), and the
//!   next run sends that batch's range one event at a time (`super::batched`).
//! - nats-server 2.14 also has a non-atomic "fast ingest" batch (`allow_batched`,
//!   `stream.go` 126): each message is checked and proposed on its own, with the same header
//!   checks as a single publish, and a `Nats-Msg-Id` duplicate is skipped (not the whole
//!   batch; `stream.go` 8297–8312), the first message answered with flow-control settings
//!   (`BatchFlowAck`, 8276–8281). So it keeps per-message dedup but gives no atomicity. Read
//!   in the source only; its throughput was not measured.

use std::time::Duration;

use async_nats::{Client, HeaderMap, HeaderName, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::acks::{Ack, AckError, AckInbox};

/// Header naming the batch a message belongs to (at most [`MAX_BATCH_ID_LEN`] bytes).
pub const BATCH_ID: HeaderName = HeaderName::from_static("Nats-Batch-Id");
/// Header giving a message's place in its batch, from 1.
pub const BATCH_SEQUENCE: HeaderName = HeaderName::from_static("Nats-Batch-Sequence");
/// Header on the last message of a batch, with the value [`BATCH_COMMIT_STORE`].
pub const BATCH_COMMIT: HeaderName = HeaderName::from_static("Nats-Batch-Commit");
/// `Nats-Batch-Commit` value that commits the batch and stores its last message.
pub const BATCH_COMMIT_STORE: &str = "1";
/// Longest batch id the server accepts.
pub const MAX_BATCH_ID_LEN: usize = 64;
/// The server's default limit on messages per atomic batch.
pub const MAX_BATCH_MESSAGES: usize = 1000;
/// The server's default limit on atomic batches in flight per stream.
pub const MAX_BATCHES_IN_FLIGHT: usize = 50;
/// JetStream error: the batch holds a message id the stream already has (nothing stored).
pub const ERR_BATCH_DUPLICATE: u64 = 10201;
/// JetStream error: a message id of the batch is still being proposed (clustered): a
/// duplicate too.
pub const ERR_DUPLICATE_IN_PROPOSAL: u64 = 10158;
/// JetStream error: the batch was abandoned (gap, timeout) and nothing of it stored.
pub const ERR_BATCH_INCOMPLETE: u64 = 10176;
/// JetStream error: the batch holds more messages than the server's `max_batch_size`.
pub const ERR_BATCH_TOO_LARGE: u64 = 10199;
/// JetStream error: the stream does not allow atomic batches.
pub const ERR_BATCH_DISABLED: u64 = 10174;

/// Whether a nats-server of `version` (as its INFO reports it, e.g. `2.14.6`, `2.12.1-RC.2`)
/// takes atomic batches with `Nats-Msg-Id` in them: 2.12.1 and later (2.12.0 refuses the
/// header inside a batch). An unparsable version counts as too old.
pub fn server_supports_atomic_batches(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) => {
            (major, minor, patch) >= (2, 12, 1)
        }
        _ => false,
    }
}

/// JetStream error: the last sequence is not the one the batch's first message expects.
pub const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;

/// Header on a batch's first message (or a single publish): the stream's last sequence it
/// must follow.
pub const EXPECTED_LAST_SEQUENCE: HeaderName =
    HeaderName::from_static("Nats-Expected-Last-Sequence");

/// One message of a batch; its `Nats-Msg-Id` (if any) goes in `headers`.
pub struct BatchMessage {
    pub subject: Subject,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// A committed batch, as the commit's pub ack reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAck {
    pub stream: String,
    /// Stream sequence of the batch's last message.
    pub last_sequence: u64,
    /// Messages stored (all of the batch).
    pub count: u64,
}

impl BatchAck {
    /// This commit of `batch`, if it stored `count` messages right after
    /// `expected_last_sequence`; else [`BatchError::Misplaced`] (something else writes to the
    /// stream, or the server counted otherwise).
    pub fn placed(
        self,
        batch: &str,
        count: u64,
        expected_last_sequence: u64,
    ) -> Result<BatchAck, BatchError> {
        match self.count == count && self.last_sequence == expected_last_sequence + count {
            true => Ok(self),
            false => Err(BatchError::Misplaced {
                batch: batch.to_owned(),
                count: self.count,
                last_sequence: self.last_sequence,
                expected_count: count,
                expected_last_sequence: expected_last_sequence + count,
            }),
        }
    }
}

/// Why a batch was not confirmed. Only [`BatchError::Unconfirmed`] leaves its outcome
/// unknown; after any other, nothing of an atomic batch was stored, while a group of
/// singles ([`send_singles`]) may have stored the messages before the one that failed (a
/// restart's start-up skip finds them).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot subscribe for the answer to batch {batch}")]
    Subscribe {
        batch: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("cannot send batch {batch}")]
    Send {
        batch: String,
        #[source]
        source: async_nats::client::PublishError,
    },
    #[error("JetStream refused batch {batch}: {description} (JetStream error {code})")]
    Refused {
        batch: String,
        code: u64,
        description: String,
    },
    #[error("JetStream did not confirm batch {batch} within {timeout_ms} ms: outcome unknown")]
    Unconfirmed { batch: String, timeout_ms: u64 },
    #[error(
        "batch {batch} was stored as {count} messages ending at sequence {last_sequence}, where {expected_count} ending at {expected_last_sequence} were expected: something else writes to the stream"
    )]
    Misplaced {
        batch: String,
        count: u64,
        last_sequence: u64,
        expected_count: u64,
        expected_last_sequence: u64,
    },
    #[error(
        "the stream already holds the Nats-Msg-Id of message {position} of {batch} (an outbox id repeated within the stream's duplicate window): it was not stored"
    )]
    Duplicate { batch: String, position: usize },
    #[error("JetStream's answer to batch {batch} is not a pub ack: {reply:?}")]
    BadReply { batch: String, reply: String },
    #[error(
        "no stream answered batch {batch}: no JetStream stream takes its subject (deleted while the connector runs?)"
    )]
    NoResponders { batch: String },
}

impl BatchError {
    /// The JetStream error code of a refusal.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the batch (or a message of singles) was refused for an id the stream holds.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
            || matches!(
                self.code(),
                Some(ERR_BATCH_DUPLICATE | ERR_DUPLICATE_IN_PROPOSAL)
            )
    }
}

/// Sends `messages` (1 to [`MAX_BATCH_MESSAGES`], all for one stream) as the atomic batch
/// `batch` (at most [`MAX_BATCH_ID_LEN`] bytes, unique while it is in flight): all but the
/// last as plain publishes, the last with the commit header and a reply subject. The first
/// carries `Nats-Expected-Last-Sequence` = `expected_last_sequence` when given. With
/// `answer_each`, every message asks for an answer: the server answers a staged one with an
/// empty message and a refused one with its error, which is then the batch's answer (without
/// it, a refused message only makes the commit fail as incomplete, 10176). Returns once
/// everything is handed to the client (so the next batch can be sent behind it, in order);
/// the returned future resolves with the commit's answer, or [`BatchError::Unconfirmed`]
/// after `timeout`.
pub async fn send(
    client: &Client,
    batch: &str,
    expected_last_sequence: Option<u64>,
    messages: Vec<BatchMessage>,
    answer_each: bool,
    timeout: Duration,
) -> Result<BoxFuture<'static, Result<BatchAck, BatchError>>, BatchError> {
    debug_assert!((1..=MAX_BATCH_MESSAGES).contains(&messages.len()));
    debug_assert!(batch.len() <= MAX_BATCH_ID_LEN);
    let inbox = client.new_inbox();
    let mut answer =
        client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| BatchError::Subscribe {
                batch: batch.to_owned(),
                source,
            })?;
    let last = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        let BatchMessage {
            subject,
            mut headers,
            payload,
        } = message;
        let seq = i + 1;
        headers.insert(BATCH_ID, batch);
        headers.insert(BATCH_SEQUENCE, seq.to_string());
        if let (1, Some(expected)) = (seq, expected_last_sequence) {
            headers.insert(EXPECTED_LAST_SEQUENCE, expected.to_string());
        }
        if seq == last {
            headers.insert(BATCH_COMMIT, BATCH_COMMIT_STORE);
        }
        let sent = if seq == last || answer_each {
            client
                .publish_with_reply_and_headers(subject, inbox.clone(), headers, payload)
                .await
        } else {
            client.publish_with_headers(subject, headers, payload).await
        };
        sent.map_err(|source| BatchError::Send {
            batch: batch.to_owned(),
            source,
        })?;
    }
    let batch = batch.to_owned();
    Ok(async move {
        let unconfirmed = || BatchError::Unconfirmed {
            batch: batch.clone(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let first_answer = async {
            // With `answer_each`, an empty answer without a status says a message was
            // staged; any other (a no-responders status too) is the batch's answer.
            while let Some(reply) = answer.next().await {
                let staged = answer_each && reply.payload.is_empty() && reply.status.is_none();
                if !staged {
                    return Some(reply);
                }
            }
            None
        };
        let reply = tokio::time::timeout(timeout, first_answer)
            .await
            .map_err(|_| unconfirmed())?
            .ok_or_else(unconfirmed)?;
        if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(BatchError::NoResponders { batch });
        }
        parse_answer(&batch, &reply.payload)
    }
    .boxed())
}

/// Sends `messages` (1 to [`MAX_BATCH_MESSAGES`], all for `stream`, each the only event of
/// its transaction for that stream) as single publishes instead of an atomic batch: each is
/// atomic on its own, and the server stages nothing. The i-th (from 0) expects the stream's
/// last sequence `expected_last_sequence + i`, so a message that is not stored makes every
/// later one fail (10071) instead of being stored ahead of it, as in a batch. The pub acks
/// come back on one [`AckInbox`]. Returns once everything is handed to the client; the
/// returned future resolves like a batch's commit: a [`BatchAck`] for all of them, or the
/// first failure in order (a duplicate is [`BatchError::Duplicate`]), or
/// [`BatchError::Unconfirmed`] if an answer before it is missing after `timeout`. `label`
/// names the group in errors, as a batch id does.
pub async fn send_singles(
    client: &Client,
    label: &str,
    stream: &str,
    expected_last_sequence: u64,
    messages: Vec<BatchMessage>,
    timeout: Duration,
) -> Result<BoxFuture<'static, Result<BatchAck, BatchError>>, BatchError> {
    debug_assert!((1..=MAX_BATCH_MESSAGES).contains(&messages.len()));
    let mut inbox = AckInbox::open(client)
        .await
        .map_err(|source| BatchError::Subscribe {
            batch: label.to_owned(),
            source,
        })?;
    let count = messages.len();
    for (i, message) in messages.into_iter().enumerate() {
        let BatchMessage {
            subject,
            mut headers,
            payload,
        } = message;
        let expected = expected_last_sequence + i as u64;
        headers.insert(EXPECTED_LAST_SEQUENCE, expected.to_string());
        inbox
            .send(subject, headers, payload)
            .await
            .map_err(|source| BatchError::Send {
                batch: label.to_owned(),
                source,
            })?;
    }
    let (label, stream) = (label.to_owned(), stream.to_owned());
    Ok(async move {
        let mut answered: Vec<Option<Result<u64, BatchError>>> = (0..count).map(|_| None).collect();
        let gather = async {
            for _ in 0..count {
                // A number answered twice would make a later one look missing: the timeout
                // then says "outcome unknown", which is safe.
                let Some((number, ack)) = inbox.next().await else {
                    return;
                };
                let at = number as usize;
                answered[at] = Some(single_outcome(&label, at + 1, ack, timeout));
            }
        };
        // Answers missing after the timeout leave those messages' outcome unknown.
        let _ = tokio::time::timeout(timeout, gather).await;
        let mut last_sequence = expected_last_sequence;
        for answer in answered {
            match answer {
                Some(Ok(sequence)) => last_sequence = sequence,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(BatchError::Unconfirmed {
                        batch: label,
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
            }
        }
        Ok(BatchAck {
            stream,
            last_sequence,
            count: count as u64,
        })
    }
    .boxed())
}

/// What the pub ack of message `position` (from 1) of the singles `label` says: the
/// sequence it was stored at, or why it was not.
fn single_outcome(
    label: &str,
    position: usize,
    ack: Result<Ack, AckError>,
    timeout: Duration,
) -> Result<u64, BatchError> {
    match ack {
        Ok(Ack::Stored {
            sequence,
            duplicate: false,
        }) => Ok(sequence),
        Ok(Ack::Stored {
            duplicate: true, ..
        }) => Err(BatchError::Duplicate {
            batch: label.to_owned(),
            position,
        }),
        Ok(Ack::Refused(refusal)) => Err(BatchError::Refused {
            batch: label.to_owned(),
            code: refusal.code,
            description: refusal.description,
        }),
        Ok(Ack::NoResponders) | Err(AckError::NoResponders) => Err(BatchError::NoResponders {
            batch: label.to_owned(),
        }),
        Err(AckError::BadReply(reply)) => Err(BatchError::BadReply {
            batch: label.to_owned(),
            reply,
        }),
        Err(AckError::TimedOut { .. } | AckError::Closed) => Err(BatchError::Unconfirmed {
            batch: label.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}

/// The commit's answer: a pub ack naming the batch, or a JetStream error.
fn parse_answer(batch: &str, payload: &[u8]) -> Result<BatchAck, BatchError> {
    let bad = || BatchError::BadReply {
        batch: batch.to_owned(),
        reply: String::from_utf8_lossy(payload).into_owned(),
    };
    let reply: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad())?;
    if let Some(error) = reply.get("error") {
        return Err(BatchError::Refused {
            batch: batch.to_owned(),
            code: error["err_code"].as_u64().unwrap_or_default(),
            description: error["description"].as_str().unwrap_or("").to_owned(),
        });
    }
    match (
        reply["stream"].as_str(),
        reply["seq"].as_u64(),
        reply["batch"].as_str(),
        reply["count"].as_u64(),
    ) {
        (Some(stream), Some(last_sequence), Some(id), Some(count)) if id == batch => Ok(BatchAck {
            stream: stream.to_owned(),
            last_sequence,
            count,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_batches_with_message_ids_need_nats_server_2_12_1() {
        for (version, supported) in [
            ("2.9.25", false),
            ("2.11.4", false),
            ("2.12.0", false),
            ("2.12.1", true),
            ("2.12.1-RC.2", true),
            ("v2.14.6", true),
            ("3.0.0", true),
            ("", false),
            ("2.x", false),
        ] {
            assert_eq!(
                server_supports_atomic_batches(version),
                supported,
                "{version}"
            );
        }
    }

    #[test]
    fn a_commit_elsewhere_than_right_after_the_expected_sequence_is_misplaced() {
        let ack = |count, last_sequence| BatchAck {
            stream: "S".into(),
            last_sequence,
            count,
        };
        assert_eq!(ack(3, 10).placed("b", 3, 7).unwrap(), ack(3, 10));
        for (wrong, what) in [(ack(3, 11), "stored later"), (ack(2, 10), "fewer stored")] {
            let err = wrong.placed("b", 3, 7).unwrap_err();
            assert!(
                matches!(
                    err,
                    BatchError::Misplaced {
                        expected_count: 3,
                        expected_last_sequence: 10,
                        ..
                    }
                ),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains("something else writes"), "{err}");
        }
    }

    #[test]
    fn a_commit_answer_is_a_pub_ack_of_this_batch_or_a_refusal() {
        let ack = parse_answer("b1", br#"{"stream":"S","seq":7,"batch":"b1","count":3}"#).unwrap();
        assert_eq!(
            ack,
            BatchAck {
                stream: "S".into(),
                last_sequence: 7,
                count: 3
            }
        );
        let err = parse_answer(
            "b1",
            br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), Some(ERR_BATCH_DUPLICATE));
        assert!(err.to_string().contains("duplicate message id"), "{err}");
        let other = parse_answer("b1", br#"{"stream":"S","seq":7,"batch":"b2","count":3}"#);
        assert!(matches!(other, Err(BatchError::BadReply { .. })));
        assert!(matches!(
            parse_answer("b1", b""),
            Err(BatchError::BadReply { .. })
        ));
    }

    #[test]
    fn a_single_publishs_ack_is_its_sequence_a_duplicate_or_a_refusal() {
        let t = Duration::from_secs(1);
        let stored = |duplicate| {
            Ok(Ack::Stored {
                sequence: 9,
                duplicate,
            })
        };
        assert_eq!(single_outcome("g1", 3, stored(false), t).unwrap(), 9);
        let dup = single_outcome("g1", 3, stored(true), t).unwrap_err();
        assert!(
            matches!(dup, BatchError::Duplicate { position: 3, .. }),
            "{dup:?}"
        );
        assert!(dup.is_duplicate());
        assert!(dup.to_string().contains("message 3 of g1"), "{dup}");
        let refusal = super::super::acks::JetStreamRefusal {
            code: ERR_WRONG_LAST_SEQUENCE,
            description: "wrong last sequence: 8".into(),
        };
        let wrong = single_outcome("g1", 2, Ok(Ack::Refused(refusal)), t).unwrap_err();
        assert_eq!(wrong.code(), Some(ERR_WRONG_LAST_SEQUENCE));
        assert!(!wrong.is_duplicate());
        assert!(matches!(
            single_outcome("g1", 1, Ok(Ack::NoResponders), t),
            Err(BatchError::NoResponders { .. })
        ));
        assert!(matches!(
            single_outcome("g1", 1, Err(AckError::BadReply("{}".into())), t),
            Err(BatchError::BadReply { .. })
        ));
    }
}
