//! Finding events again: the checkpoint's last event at the start of a session, and the
//! streams' last messages before a restart skips what they hold.

use std::collections::HashMap;

use futures::StreamExt;
use mysql_async::BinlogStream;
use mysql_async::binlog::events::Event;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::request::{DumpRequest, request_stream};
use super::{Resume, SourceSettings};
use crate::checkpoint::Checkpoint;
use crate::error::{SourceError, mysql_codes};
use crate::position::{BinlogPosition, EventMark, event_checksum};
use crate::publish::{StoredThrough, StreamTip};
use crate::source::Endpoint;

/// FORMAT_DESCRIPTION, HEARTBEAT and TRANSACTION_PAYLOAD event types.
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const HEARTBEAT_EVENT: u8 = 27;
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;

/// The checkpoint's last event, found again.
pub struct Found {
    /// Events read before it that the source must still handle (the server's fake ROTATE and
    /// artificial FORMAT_DESCRIPTION), and the mark itself when it is a FORMAT_DESCRIPTION.
    pub before: Vec<Event>,
    /// The mark is a MySQL compressed transaction payload: mysql_async yields its inner
    /// events next (all handled already), which the source must skip.
    pub payload: bool,
}

/// Which streams' last messages come from this history: their events are not published
/// again. A message whose event cannot be found again (another history) skips nothing.
pub async fn stored_through(
    settings: &SourceSettings,
    identity: &Option<String>,
    start: &Checkpoint,
    resume: &Resume,
    tips: &[StreamTip],
) -> Result<StoredThrough, SourceError> {
    let mut stored = HashMap::new();
    for tip in tips {
        if tip.server.is_none() || tip.server != *identity {
            continue;
        }
        let Some(position) = &tip.position else {
            continue;
        };
        let event_start = BinlogPosition::new(&*position.file, position.pos);
        if resume.is_by_position() && event_start < start.position {
            // Everything read from here on lies after it: nothing to skip.
            continue;
        }
        let Some(checksum) = tip.checksum else {
            warn!(stream = %tip.stream, position = %position, "the stream's last message has no Outbox-Source-Checksum (written by an older binlog-outbox): its history cannot be checked, so nothing is skipped; the dedup window prevents duplicates");
            continue;
        };
        let mark = EventMark {
            position: event_start,
            checksum,
        };
        match probe(settings, &mark).await? {
            Probe::Found => {
                info!(stream = %tip.stream, stored_through = %position, "stream already holds events up to here; older ones are not republished");
                stored.insert(tip.stream.clone(), position.clone());
            }
            Probe::Differs(reason) => {
                warn!(stream = %tip.stream, position = %position, reason = %reason, "the stream's last message is not in this server's binlog history (reset, recreated or renamed binlogs): nothing is skipped");
            }
        }
    }
    Ok(stored)
}

/// What reading an event again found.
enum Probe {
    Found,
    Differs(String),
}

/// Reads the event at `mark` on a connection of its own (before the session's stream is
/// requested: both register with the same replica server id).
async fn probe(settings: &SourceSettings, mark: &EventMark) -> Result<Probe, SourceError> {
    let endpoint = &settings.endpoint;
    let mut conn = endpoint.connect().await?;
    for query in settings.flavor.replica_session(settings.heartbeat) {
        endpoint
            .run("SET replica session variables", conn.query_drop(query))
            .await?;
    }
    let request = DumpRequest::at(settings.server_id, &mark.position);
    let mut stream = request_stream(endpoint, conn, &request).await?;
    let found = find_mark_again(endpoint, &mut stream, mark, &mark.position).await;
    let _ = tokio::time::timeout(endpoint.io_timeout, stream.close()).await;
    match found {
        Ok(_) => Ok(Probe::Found),
        Err(SourceError::HistoryChanged { reason, .. }) => Ok(Probe::Differs(reason)),
        Err(SourceError::BinlogUnavailable { message, .. }) => Ok(Probe::Differs(message)),
        Err(e) => Err(e),
    }
}

/// Reads the stream's first real event and checks that it is `mark`, all within
/// `io_timeout` (heartbeats do not count as an answer).
pub async fn find_mark_again(
    endpoint: &Endpoint,
    stream: &mut BinlogStream,
    mark: &EventMark,
    checkpoint: &BinlogPosition,
) -> Result<Found, SourceError> {
    let timeout = SourceError::Timeout {
        what: "reading the binlog event at the checkpoint",
        address: endpoint.address(),
        timeout_ms: endpoint.io_timeout.as_millis() as u64,
    };
    tokio::time::timeout(endpoint.io_timeout, read_mark(stream, mark, checkpoint))
        .await
        .map_err(|_| timeout)?
}

async fn read_mark(
    stream: &mut BinlogStream,
    mark: &EventMark,
    checkpoint: &BinlogPosition,
) -> Result<Found, SourceError> {
    let changed = |reason: String| SourceError::HistoryChanged {
        position: checkpoint.to_string(),
        reason,
    };
    let mut before = Vec::new();
    loop {
        let event = match stream.next().await {
            None => return Err(changed(format!("no event at {}", mark.position))),
            Some(Err(e)) => return Err(classify_mark_error(e, mark, checkpoint)),
            Some(Ok(event)) => event,
        };
        let header = event.header();
        if header.event_type_raw() == HEARTBEAT_EVENT {
            continue;
        }
        if header.log_pos() == 0 {
            before.push(event);
            continue;
        }
        let start = u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size()));
        let checksum = event_checksum(
            header.timestamp(),
            header.event_type_raw(),
            header.server_id(),
            header.event_size(),
            event.data(),
        );
        if start != mark.position.pos {
            return Err(changed(format!(
                "the event read last before it started at {}, but the server's event there starts at {start}",
                mark.position
            )));
        }
        if checksum != mark.checksum {
            return Err(changed(format!(
                "the event at {} has checksum {checksum:08x}, not {:08x} as when it was read",
                mark.position, mark.checksum
            )));
        }
        let payload = header.event_type_raw() == TRANSACTION_PAYLOAD_EVENT;
        if header.event_type_raw() == FORMAT_DESCRIPTION_EVENT {
            before.push(event);
        }
        return Ok(Found { before, payload });
    }
}

/// A server error while looking for a mark: its file is gone (purged, or another history),
/// or the position is not an event of this history.
fn classify_mark_error(
    err: mysql_async::Error,
    mark: &EventMark,
    checkpoint: &BinlogPosition,
) -> SourceError {
    match &err {
        mysql_async::Error::Server(e) if e.code == mysql_codes::FATAL_ERROR_READING_BINLOG => {
            let refused = SourceError::dump_refused(checkpoint.to_string(), &e.message);
            if !matches!(refused, SourceError::DumpRefused { .. }) {
                refused
            } else {
                SourceError::HistoryChanged {
                    position: checkpoint.to_string(),
                    reason: format!(
                        "the server cannot read an event at {}: {}",
                        mark.position, e.message
                    ),
                }
            }
        }
        _ => SourceError::Stream { source: err },
    }
}
