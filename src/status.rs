//! `binlog-outbox status`: where the connector is, read from outside while it runs (it takes
//! no lock and changes nothing): the saved checkpoint and its age, the server's binlog end
//! and the distance to it, and each stream's size and last message's origin.
//!
//! Each part is read on its own: an unreachable server leaves its part with an error and
//! the others filled in. Nothing secret is shown (addresses only, never URLs with passwords).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::cell::format_unix_timestamp;
use crate::checkpoint::{self, Checkpoint};
use crate::config::Config;
use crate::error::error_chain;
use crate::observe::Observer;
use crate::position::BinlogPosition;
use crate::publish::Publisher;
use crate::source::backlog::{binlog_files, bytes_behind};
use crate::source::preflight;
use crate::start;

#[derive(Debug, Serialize)]
pub struct Status {
    pub checkpoint: CheckpointStatus,
    pub source: SourceStatus,
    pub streams: Vec<StreamStatus>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckpointStatus {
    /// What and where the store is.
    pub store: String,
    pub position: Option<String>,
    pub gtid: Option<String>,
    pub gtid_set: Option<String>,
    pub server: Option<String>,
    /// When it was saved (UTC, ISO 8601) and how long ago.
    pub saved_at: Option<String>,
    pub age_seconds: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceStatus {
    /// `host:port`.
    pub address: String,
    pub binlog_end: Option<String>,
    /// Binlog bytes from the checkpoint to the end (`None` when the checkpoint's file is not
    /// among the server's binlogs: purged, or another server's).
    pub lag_bytes: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct StreamStatus {
    pub stream: String,
    pub messages: Option<u64>,
    pub last_sequence: Option<u64>,
    /// `Outbox-Source-Position` and `Outbox-Source-Server` of the last message.
    pub last_position: Option<String>,
    pub last_server: Option<String>,
    pub error: Option<String>,
}

impl Status {
    /// Whether every part could be read.
    pub fn complete(&self) -> bool {
        self.checkpoint.error.is_none()
            && self.source.error.is_none()
            && self.streams.iter().all(|s| s.error.is_none())
    }
}

/// Reads every part (config already validated).
pub async fn status(config: &Config) -> Status {
    let prepared = match start::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            let error = Some(error_chain(&e));
            return Status {
                checkpoint: CheckpointStatus {
                    error: error.clone(),
                    ..Default::default()
                },
                source: SourceStatus {
                    error,
                    ..Default::default()
                },
                streams: Vec::new(),
            };
        }
    };
    let (checkpoint_status, saved) = checkpoint_status(config).await;
    let source = source_status(&prepared.endpoint, saved.as_ref().map(|c| &c.position)).await;
    let streams = streams_status(config, prepared.streams.keys()).await;
    Status {
        checkpoint: checkpoint_status,
        source,
        streams,
    }
}

async fn checkpoint_status(config: &Config) -> (CheckpointStatus, Option<Checkpoint>) {
    let store = match checkpoint::open_unlocked(config).await {
        Ok(store) => store,
        Err(e) => {
            let status = CheckpointStatus {
                error: Some(error_chain(&e)),
                ..Default::default()
            };
            return (status, None);
        }
    };
    let mut status = CheckpointStatus {
        store: store.describe(),
        ..Default::default()
    };
    let saved = match store.load().await {
        Ok(saved) => saved,
        Err(e) => {
            status.error = Some(error_chain(&e));
            return (status, None);
        }
    };
    let Some(cp) = saved else {
        status.error = Some("no checkpoint saved yet (the connector never started)".into());
        return (status, None);
    };
    status.position = Some(cp.position.to_string());
    status.gtid = cp.gtid.as_ref().map(ToString::to_string);
    status.gtid_set = cp.gtid_set.as_ref().map(ToString::to_string);
    status.server = cp.server.clone();
    if let Ok(Some(at)) = store.saved_at().await
        && let Ok(since_epoch) = at.duration_since(UNIX_EPOCH)
    {
        status.saved_at = Some(format_unix_timestamp(since_epoch.as_secs() as i64, 0));
        status.age_seconds = SystemTime::now()
            .duration_since(at)
            .ok()
            .map(|d| d.as_secs());
    }
    (status, Some(cp))
}

async fn source_status(
    endpoint: &crate::source::Endpoint,
    checkpoint: Option<&BinlogPosition>,
) -> SourceStatus {
    let mut status = SourceStatus {
        address: endpoint.address(),
        ..Default::default()
    };
    let read = async {
        let mut conn = endpoint.connect().await?;
        let end = preflight::binlog_status(endpoint, &mut conn).await?;
        let files = binlog_files(endpoint, &mut conn).await?;
        endpoint.close(conn).await;
        Ok::<_, crate::error::SourceError>((end, files))
    };
    match read.await {
        Ok((end, files)) => {
            status.binlog_end = end.map(|e| e.to_string());
            status.lag_bytes = checkpoint.and_then(|cp| bytes_behind(&files, cp));
        }
        Err(e) => status.error = Some(error_chain(&e)),
    }
    status
}

async fn streams_status<'a>(
    config: &Config,
    names: impl Iterator<Item = &'a String>,
) -> Vec<StreamStatus> {
    let names: Vec<&String> = names.collect();
    let publisher = match Publisher::connect(&config.nats, Observer::unobserved()).await {
        Ok(p) => p,
        Err(e) => {
            let error = error_chain(&e);
            return names
                .into_iter()
                .map(|n| StreamStatus {
                    stream: n.clone(),
                    error: Some(error.clone()),
                    ..Default::default()
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    for name in names {
        let mut status = StreamStatus {
            stream: name.clone(),
            ..Default::default()
        };
        match publisher.stream_state(name).await {
            Ok(Some(state)) => {
                status.messages = Some(state.messages);
                status.last_sequence = Some(state.last_sequence);
                if let Some(last) = state.last {
                    status.last_position = last.position.map(|p| p.to_string());
                    status.last_server = last.server;
                }
            }
            Ok(None) => status.error = Some("stream does not exist yet".into()),
            Err(e) => status.error = Some(error_chain(&e)),
        }
        out.push(status);
    }
    publisher.drain().await;
    out
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let c = &self.checkpoint;
        match &c.error {
            Some(e) => writeln!(f, "checkpoint  {}: {e}", c.store)?,
            None => {
                writeln!(f, "checkpoint  {} ({})", or(&c.position), c.store)?;
                if let Some(g) = c.gtid.as_ref().or(c.gtid_set.as_ref()) {
                    writeln!(f, "  gtid      {g}")?;
                }
                writeln!(f, "  server    {}", or(&c.server))?;
                match c.age_seconds {
                    Some(age) => writeln!(f, "  saved     {} ({age} s ago)", or(&c.saved_at))?,
                    None => writeln!(f, "  saved     -")?,
                }
            }
        }
        let s = &self.source;
        match &s.error {
            Some(e) => writeln!(f, "source      {}: {e}", s.address)?,
            None => {
                writeln!(f, "source      {}", s.address)?;
                writeln!(f, "  end       {}", or(&s.binlog_end))?;
                match s.lag_bytes {
                    Some(b) => writeln!(f, "  lag       {b} bytes")?,
                    None => writeln!(
                        f,
                        "  lag       unknown (checkpoint not in this server's binlogs)"
                    )?,
                }
            }
        }
        for st in &self.streams {
            match &st.error {
                Some(e) => writeln!(f, "stream      {}: {e}", st.stream)?,
                None => {
                    writeln!(
                        f,
                        "stream      {}: {} messages, last sequence {}",
                        st.stream,
                        st.messages.unwrap_or(0),
                        st.last_sequence.unwrap_or(0)
                    )?;
                    writeln!(
                        f,
                        "  last from {} (server {})",
                        or(&st.last_position),
                        or(&st.last_server)
                    )?;
                }
            }
        }
        Ok(())
    }
}
