//! `binlog-outbox replay --config FILE --binlog PATH…`: publishes the outbox rows of archived
//! binlog files with the ids and positions the live path gives them, so that a replay can be
//! run again: JetStream's dedup drops what the stream holds within its duplicate window, and
//! the start-up skip what an earlier replay of these files stored, also after the window.
//!
//! Files are read in the order given (give them in binlog order) as one history
//! ([`FileSource`]): an XA transaction prepared in one file and committed in a later one is
//! published at its commit; one still prepared with outbox rows after the last file is
//! reported in [`Summary::unresolved_xa`], not published. Each message carries the dedup id
//! (`Nats-Msg-Id` = the row id), `Outbox-Source-Position` and `Outbox-Source-Checksum` as
//! live, but no `Outbox-Source-Server` (a file does not say which server wrote it) and no
//! order guard (`Nats-Expected-Last-Msg-Id`): so that a lost message can never be overtaken,
//! each publish waits for its ack before the next goes out. No checkpoint is read or written.
//!
//! # The start-up skip
//!
//! As live, only with `nats.exclusive_streams` (the stream then holds this connector's
//! messages without gaps). A replayed message also carries [`REPLAY_FROM`]: the position from
//! which on the stream holds every outbox event of this history, for its stream, up to that
//! message (the first event of the run's files for the stream, or the earlier replay's
//! `Outbox-Replay-From` that the run continued; a file that does not follow the one before
//! it starts again). Before publishing, each stream's last message is read
//! ([`Publisher::stream_tips`]) and events from its `Outbox-Replay-From` through its
//! `Outbox-Source-Position` are skipped — only when all of this holds, else nothing is skipped
//! for that stream (dedup only) and [`Summary::streams`] says why:
//! - the last message was written by a replay: one written live (it has an
//!   `Outbox-Source-Server`) says nothing about events before the connector's start, which may
//!   never have been published;
//! - its position's file is among the given files, and the event starting there has the
//!   message's `Outbox-Source-Checksum` (CRC32 of the whole event, its timestamp and server id
//!   included): a stream filled from another server's files of the same names is not skipped
//!   into. A mismatch is a warning, not an error: the stream holds another history, so
//!   publishing these files' events is right.
//!
//! Errors: the configuration, reading the files ([`crate::error::SourceError`]), NATS and
//! JetStream ([`crate::error::PublishError`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderName;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, PublishError, SourceError};
use crate::observe::Observer;
use crate::position::RowPosition;
use crate::publish::{OutgoingMessage, Publisher, StreamTip, headers};
use crate::source::replay::{self, FileSource, UnresolvedXa};
use crate::source::{SourceSettings, flavor::Flavor};

/// Publishes awaiting their ack at once: one, since without the order guard a message lost
/// while later ones are stored would land after them when the replay runs again.
const IN_FLIGHT: usize = 1;

/// On replayed messages: from this position (`file:pos#row`) through the message's own the
/// stream holds every outbox event of its stream from these binlog files.
pub const REPLAY_FROM: HeaderName = HeaderName::from_static("Outbox-Replay-From");

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub files: usize,
    /// Outbox events found in the files.
    pub events: u64,
    /// Stored by JetStream.
    pub stored: u64,
    /// Dropped by JetStream as duplicates (already in the stream).
    pub duplicates: u64,
    /// Not published: an earlier replay stored them (the start-up skip).
    pub skipped: u64,
    /// Per configured stream, what the start-up skip decided.
    pub streams: Vec<StreamSkip>,
    /// XA transactions prepared with outbox rows and neither committed nor rolled back in
    /// the files: their rows are not published.
    pub unresolved_xa: Vec<UnresolvedXa>,
    /// Files that do not continue the one given before them (a gap, another order, renamed).
    pub not_following: Vec<String>,
}

/// The start-up skip's decision for one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamSkip {
    pub stream: String,
    pub decision: Decision,
}

/// Whether a stream's events are skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Decision {
    /// Events of the stream at positions `from..=through` are already stored.
    Skip {
        #[serde(serialize_with = "as_text")]
        from: RowPosition,
        #[serde(serialize_with = "as_text")]
        through: RowPosition,
    },
    /// Nothing is skipped (dedup only), for this reason.
    Nothing(String),
}

fn as_text<S: serde::Serializer>(p: &RowPosition, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

impl Decision {
    fn skips(&self, position: &RowPosition) -> bool {
        matches!(self, Decision::Skip { from, through } if from <= position && position <= through)
    }
}

impl std::fmt::Display for StreamSkip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.decision {
            Decision::Skip { from, through } => write!(
                f,
                "stream {}: events from {from} through {through} already stored by an earlier replay, skipped",
                self.stream
            ),
            Decision::Nothing(reason) => write!(
                f,
                "stream {}: nothing skipped (duplicates dropped only within the duplicate window): {reason}",
                self.stream
            ),
        }
    }
}

/// Replays `files` into the configured streams.
pub async fn replay(config: &Config, files: &[PathBuf]) -> Result<Summary, Error> {
    let prepared = crate::start::prepare(config)?;
    let observer = Observer::unobserved();
    let publisher = Publisher::connect(&config.nats, observer.clone()).await?;
    for (stream, filters) in &prepared.streams {
        if config.nats.create_stream {
            publisher.ensure_stream(stream, filters).await?;
        }
    }
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let tips = publisher.stream_tips(prepared.streams.keys()).await?;
    let mut decisions: BTreeMap<String, Decision> = BTreeMap::new();
    for stream in prepared.streams.keys() {
        let decision = match tips.iter().find(|t| t.stream == *stream) {
            None if !config.nats.exclusive_streams => Decision::Nothing(
                "nats.exclusive_streams is off: without the order guard a stream's last message does not show what it holds".into(),
            ),
            None => Decision::Nothing("the stream holds no message".into()),
            Some(tip) => {
                let replay_from = last_replay_from(&publisher, tip).await?;
                decide(tip, replay_from, files, replay::event_checksum_at)?
            }
        };
        let skip = StreamSkip {
            stream: stream.clone(),
            decision: decision.clone(),
        };
        match tips.iter().any(|t| t.stream == *stream) {
            false => info!(%skip, "start-up skip"),
            true => match &decision {
                Decision::Skip { .. } => info!(%skip, "start-up skip"),
                Decision::Nothing(_) => warn!(%skip, "start-up skip"),
            },
        }
        summary.streams.push(skip);
        decisions.insert(stream.clone(), decision);
    }

    let Some(first) = files.first() else {
        return Ok(summary);
    };
    let version = replay::server_version(first)?;
    let settings = SourceSettings {
        endpoint: prepared.endpoint.clone(),
        server_id: config.source.server_id,
        tables: prepared.tables.clone(),
        flavor: Flavor::from_version(&version),
        heartbeat: Duration::from_millis(config.source.heartbeat_ms),
        observer: observer.clone(),
    };
    let mut source = FileSource::new(settings, &[]);
    // Per stream, the `Outbox-Replay-From` of the messages published from here on.
    let mut chain: BTreeMap<String, RowPosition> = BTreeMap::new();
    for (i, path) in files.iter().enumerate() {
        let mut messages = Vec::new();
        let mut skipped = 0;
        if i > 0 && !source.follows(path) {
            // The files between are missing (or the order is not the binlog's): what this
            // run stores from here on says nothing about what lies before.
            warn!(file = %path.display(), "the file does not continue the one given before it");
            summary.not_following.push(path.display().to_string());
            chain.clear();
        }
        let read = source
            .read(path, |e| {
                let stream = e.stream.to_string();
                let decision = decisions.get(&stream);
                let from = chain
                    .entry(stream)
                    .or_insert_with(|| match decision {
                        Some(Decision::Skip { from, through })
                            if *from <= e.position && e.position <= *through =>
                        {
                            from.clone()
                        }
                        _ => e.position.clone(),
                    })
                    .clone();
                if decision.is_some_and(|d| d.skips(&e.position)) {
                    skipped += 1;
                    return;
                }
                let mut m = OutgoingMessage::new(e, None);
                m.headers.insert(REPLAY_FROM, from.to_string());
                messages.push(m);
            })
            .await?;
        info!(file = %path.display(), events = read.events, skipped, "binlog file read");
        summary.events += read.events as u64;
        summary.skipped += skipped;
        publish_all(&publisher, messages, &mut summary).await?;
    }
    summary.unresolved_xa = source.unresolved_xa();
    for xa in &summary.unresolved_xa {
        warn!(xid = %xa.xid, rows = xa.rows, prepared_after = %xa.prepared_after, "XA transaction prepared but neither committed nor rolled back in the given files: its rows were not published");
    }
    publisher.drain().await;
    Ok(summary)
}

/// The start-up skip for the stream whose last message is `tip`, `replay_from` that
/// message's [`REPLAY_FROM`]; `checksum_at` finds an event's checksum in a file (see the
/// module docs for when events are skipped).
fn decide(
    tip: &StreamTip,
    replay_from: Option<RowPosition>,
    files: &[PathBuf],
    checksum_at: impl Fn(&Path, u64) -> Result<Option<u32>, SourceError>,
) -> Result<Decision, SourceError> {
    let nothing = |reason: String| Ok(Decision::Nothing(reason));
    let Some(position) = &tip.position else {
        return nothing(
            "its last message has no Outbox-Source-Position (not published by binlog-outbox)"
                .into(),
        );
    };
    if let Some(server) = &tip.server {
        return nothing(format!(
            "its last message ({position}) was published live (from server {server}): the stream need not hold the events before that connector's start"
        ));
    }
    let Some(from) = replay_from else {
        return nothing(format!(
            "its last message ({position}) has no {REPLAY_FROM} header (an older replay): where the events it holds begin is unknown"
        ));
    };
    let Some(checksum) = tip.checksum else {
        return nothing(format!(
            "its last message ({position}) has no Outbox-Source-Checksum: it cannot be checked against the files"
        ));
    };
    let Some(path) = files.iter().find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy() == *position.file)
    }) else {
        return nothing(format!(
            "its last message's file {} is not among the given files: the message cannot be checked against them",
            position.file
        ));
    };
    let at = format!("{}:{}", position.file, position.pos);
    match checksum_at(path, position.pos)? {
        Some(found) if found == checksum => Ok(Decision::Skip {
            from,
            through: position.clone(),
        }),
        Some(found) => nothing(format!(
            "the event at {at} in {} has checksum {found:08x}, the stream's last message {checksum:08x}: the stream holds another binlog history",
            path.display()
        )),
        None => nothing(format!(
            "no event starts at {at} in {}: the stream holds another binlog history",
            path.display()
        )),
    }
}

/// The [`REPLAY_FROM`] of the stream's last message, when that is still `tip`.
async fn last_replay_from(
    publisher: &Publisher,
    tip: &StreamTip,
) -> Result<Option<RowPosition>, PublishError> {
    use crate::publish::stream::unavailable;
    let name = tip.stream.as_str();
    let mut stream = publisher
        .jetstream()
        .get_stream(name)
        .await
        .map_err(|e| unavailable(name, "looking it up", e))?;
    let last = stream
        .info()
        .await
        .map_err(|e| unavailable(name, "reading its info", e))?
        .state
        .last_sequence;
    let message = stream
        .get_raw_message(last)
        .await
        .map_err(|e| unavailable(name, "reading its last message", e))?;
    let header = |h: HeaderName| message.headers.get(h).map(|v| v.as_str().to_owned());
    let position: Option<RowPosition> =
        header(headers::SOURCE_POSITION).and_then(|p| p.parse().ok());
    if position != tip.position {
        // Another message by now: nothing is known of it.
        return Ok(None);
    }
    Ok(header(REPLAY_FROM).and_then(|p| p.parse().ok()))
}

/// Publishes `messages` in order, at most [`IN_FLIGHT`] awaiting their ack.
async fn publish_all(
    publisher: &Publisher,
    messages: Vec<OutgoingMessage>,
    summary: &mut Summary,
) -> Result<(), Error> {
    let js = publisher.jetstream();
    let mut in_flight: VecDeque<(String, String, PublishAckFuture)> = VecDeque::new();
    for m in messages {
        if in_flight.len() >= IN_FLIGHT
            && let Some(pending) = in_flight.pop_front()
        {
            settle(pending, summary).await?;
        }
        let message = PublishMessage::build()
            .payload(m.payload.into())
            .headers(m.headers);
        let ack = js
            .send_publish(m.subject.clone(), message)
            .await
            .map_err(|source| PublishError::Send {
                id: m.id.clone(),
                subject: m.subject.clone(),
                source: source.into(),
            })?;
        in_flight.push_back((m.id, m.subject, ack));
    }
    while let Some(pending) = in_flight.pop_front() {
        settle(pending, summary).await?;
    }
    Ok(())
}

/// Awaits one ack: stored or a duplicate.
async fn settle(
    (id, subject, ack): (String, String, PublishAckFuture),
    summary: &mut Summary,
) -> Result<(), Error> {
    match ack.await {
        Ok(ack) if ack.duplicate => summary.duplicates += 1,
        Ok(_) => summary.stored += 1,
        Err(source) => {
            return Err(PublishError::Ack {
                id,
                subject,
                source: source.into(),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip(server: Option<&str>, position: &str, checksum: u32) -> StreamTip {
        StreamTip {
            stream: "OUTBOX".into(),
            server: server.map(Into::into),
            position: Some(position.parse().unwrap()),
            checksum: Some(checksum),
        }
    }

    fn pos(s: &str) -> RowPosition {
        s.parse().unwrap()
    }

    fn files() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/archive/binlog.000001"),
            PathBuf::from("/archive/binlog.000002"),
        ]
    }

    /// The checksum of the event at binlog.000002:400 is 0xabcd; no event starts elsewhere.
    fn checksum_at(path: &Path, at: u64) -> Result<Option<u32>, SourceError> {
        Ok((path.ends_with("binlog.000002") && at == 400).then_some(0xabcd))
    }

    fn reason(d: Decision) -> String {
        match d {
            Decision::Nothing(reason) => reason,
            skip => panic!("expected nothing skipped, got {skip:?}"),
        }
    }

    #[test]
    fn a_replayed_tip_found_in_the_files_skips_from_its_replay_from_through_itself() {
        let d = decide(
            &tip(None, "binlog.000002:400#1", 0xabcd),
            Some(pos("binlog.000001:300#0")),
            &files(),
            checksum_at,
        )
        .unwrap();
        assert_eq!(
            d,
            Decision::Skip {
                from: pos("binlog.000001:300#0"),
                through: pos("binlog.000002:400#1"),
            }
        );
        assert!(d.skips(&pos("binlog.000001:300#0")));
        assert!(d.skips(&pos("binlog.000002:400#1")));
        assert!(!d.skips(&pos("binlog.000002:400#2")), "after the tip");
        assert!(
            !d.skips(&pos("binlog.000001:200#5")),
            "before its replay's start"
        );
    }

    #[test]
    fn tips_that_prove_nothing_about_the_files_skip_nothing() {
        let from = Some(pos("binlog.000001:300#0"));
        let live = decide(
            &tip(Some("uid-1"), "binlog.000002:400#1", 0xabcd),
            from.clone(),
            &files(),
            checksum_at,
        );
        assert!(reason(live.unwrap()).contains("published live"));
        let old_replay = decide(
            &tip(None, "binlog.000002:400#1", 0xabcd),
            None,
            &files(),
            checksum_at,
        );
        assert!(reason(old_replay.unwrap()).contains("Outbox-Replay-From"));
        let elsewhere = decide(
            &tip(None, "binlog.000007:400#1", 0xabcd),
            from.clone(),
            &files(),
            checksum_at,
        );
        assert!(reason(elsewhere.unwrap()).contains("not among the given files"));
        let other_history = decide(
            &tip(None, "binlog.000002:400#1", 0x1234),
            from.clone(),
            &files(),
            checksum_at,
        );
        let other_history = reason(other_history.unwrap());
        assert!(
            other_history.contains("another binlog history") && other_history.contains("0000abcd"),
            "{other_history}"
        );
        let no_event = decide(
            &tip(None, "binlog.000002:401#0", 0xabcd),
            from,
            &files(),
            checksum_at,
        );
        assert!(reason(no_event.unwrap()).contains("no event starts at binlog.000002:401"));
    }
}
