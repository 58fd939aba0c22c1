//! JetStream atomic batch publishing: the protocol as nats-server implements it, for
//! `nats.publish_mode = "atomic_batch"` (not yet supported: the config refuses it at load).
//!
//! Every fact below was read in the nats-server source (github.com/nats-io/nats-server,
//! commit `1787eee0`, and the tags `v2.12.0` / `v2.12.1` where they differ), and those marked
//! (tested) are exercised against nats-server 2.14.6 by the integration test
//! `atomic_batch::the_server_speaks_the_atomic_batch_protocol_as_documented`.
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
//!   `BatchIncomplete`/`BatchTimeout`). Nothing of an abandoned batch is stored, so it is
//!   republished whole, under a new batch id.
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
//!   It must end the run (the supervisor then recomputes what is stored and resumes).
//! - nats-server 2.14 also has a non-atomic "fast ingest" batch (`allow_batched`,
//!   `stream.go` 126) with its own flow control; it was not evaluated here.

/// Header naming the batch a message belongs to (at most [`MAX_BATCH_ID_LEN`] bytes).
pub const BATCH_ID: &str = "Nats-Batch-Id";
/// Header giving a message's place in its batch, from 1.
pub const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
/// Header on the last message of a batch, with the value [`BATCH_COMMIT_STORE`].
pub const BATCH_COMMIT: &str = "Nats-Batch-Commit";
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
/// JetStream error: the batch was abandoned (gap, timeout) and nothing of it stored.
pub const ERR_BATCH_INCOMPLETE: u64 = 10176;
/// JetStream error: the stream does not allow atomic batches.
pub const ERR_BATCH_DISABLED: u64 = 10174;
