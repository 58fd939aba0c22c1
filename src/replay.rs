//! `binlog-outbox replay --config FILE --binlog PATH…`: publishes the outbox rows of archived
//! binlog files with the ids and positions the live path gives them, so that JetStream's
//! dedup drops what the stream already holds (within its duplicate window) and a replay can be
//! run again safely.
//!
//! Files are read in the order given (give them in binlog order); each message carries the
//! dedup id (`Nats-Msg-Id` = the row id), `Outbox-Source-Position` and
//! `Outbox-Source-Checksum` as live, but no `Outbox-Source-Server` (a file does not say which
//! server wrote it) and no order guard (`Nats-Expected-Last-Msg-Id`): so that a lost message
//! can never be overtaken, each publish waits for its ack before the next goes out. No
//! checkpoint is read or written, and there is no start-up skip: dedup covers a second run
//! only within the stream's duplicate window.
//!
//! Errors: the configuration, reading the files ([`crate::error::SourceError`]), NATS and
//! JetStream ([`crate::error::PublishError`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use tracing::info;

use crate::config::Config;
use crate::error::{Error, PublishError};
use crate::observe::Observer;
use crate::publish::{OutgoingMessage, Publisher};
use crate::source::{SourceSettings, flavor::Flavor, replay};

/// Publishes awaiting their ack at once: one, since without the order guard a message lost
/// while later ones are stored would land after them when the replay runs again.
const IN_FLIGHT: usize = 1;

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
    for path in files {
        let version = replay::server_version(path)?;
        let settings = SourceSettings {
            endpoint: prepared.endpoint.clone(),
            server_id: config.source.server_id,
            tables: prepared.tables.clone(),
            flavor: Flavor::from_version(&version),
            heartbeat: Duration::from_millis(config.source.heartbeat_ms),
            observer: observer.clone(),
        };
        let mut messages = Vec::new();
        let found = replay::read_file(settings, path, &[], |e| {
            messages.push(OutgoingMessage::new(e, None))
        })
        .await?;
        info!(file = %path.display(), events = found, server = %version, "binlog file read");
        summary.events += found as u64;
        publish_all(&publisher, messages, &mut summary).await?;
    }
    publisher.drain().await;
    Ok(summary)
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
                source,
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
                source,
            }
            .into());
        }
    }
    Ok(())
}
