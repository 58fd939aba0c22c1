//! Outbox rows from binlog files on disk (`binlog-outbox replay`): each file is read with
//! mysql_common's binlog file reader and its events go through the same handling as the live
//! stream ([`BinlogSource::handle`]: table maps, row images, transactions, XA, MySQL's
//! compressed payloads), so every event gets the id and the position the live path gives it.
//!
//! Column names come from the table maps (`binlog_row_metadata = FULL`), else from the
//! configured server's `information_schema` (through `settings.endpoint`), as live; MariaDB
//! files also ask it whether the payload column is declared JSON (as live), so replaying
//! them needs the configured server reachable.
//!
//! The files of one replay are read by one [`FileSource`], as one history: what a ROTATE
//! carries over on the live stream (table maps, GTID state, prepared XA transactions) carries
//! over from one file to the next. XA transactions still prepared with outbox rows after the
//! last file are reported ([`FileSource::unresolved_xa`]), never published.
//!
//! Errors: the file cannot be read or parsed ([`SourceError::Parse`]), a transaction too large
//! to hold ([`SourceError::ReplayTooLarge`]: the live stream reads such a one twice), and
//! everything the live source stops on (a bad row under `fail`, a statement-format insert, an
//! `XA COMMIT` whose `XA PREPARE` is before the first file, …).

use std::io::{BufReader, Cursor};
use std::path::Path;

use mysql_common::binlog::BinlogFile;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, FormatDescriptionEvent, TransactionPayloadEvent};

use super::{BinlogSource, SourceMessage, SourceSettings};
use crate::checkpoint::Checkpoint;
use crate::error::SourceError;
use crate::outbox::OutboxEvent;
use crate::position::BinlogPosition;

/// The server version a binlog file's FORMAT_DESCRIPTION event names (`10.11.6-MariaDB-log`,
/// `8.0.36`), which decides the flavor its events are read with.
pub fn server_version(path: &Path) -> Result<String, SourceError> {
    let parse = |source| SourceError::Parse {
        position: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(parse)?;
    let binlog = BinlogFile::new(BinlogVersion::Version4, BufReader::new(file)).map_err(parse)?;
    for event in binlog {
        let event = event.map_err(parse)?;
        if event.header().event_type_raw() == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            let fde = event
                .read_event::<FormatDescriptionEvent<'_>>()
                .map_err(parse)?;
            return Ok(fde.server_version().trim_end_matches('\0').to_owned());
        }
    }
    Err(parse(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no FORMAT_DESCRIPTION event: not a binlog file",
    )))
}

/// A prepared XA transaction with outbox rows that no given file commits or rolls back: its
/// rows are not published (its outcome is not in the files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnresolvedXa {
    pub xid: String,
    /// Where the binlog stood before its prepare group (`file:pos`).
    pub prepared_after: String,
    pub rows: usize,
}

/// What reading one file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// Outbox events handed over (committed in this file).
    pub events: usize,
    /// The file continues the history of the one read before it: the ROTATE ending that
    /// file names this one, or (a file ended by a server stop, without ROTATE) this one has
    /// the next number of the same basename. `false` for the first file.
    pub follows_previous: bool,
}

/// Binlog files read in order as one history, as the live stream reads them across ROTATE:
/// table maps, the GTID state and prepared XA transactions carry over from one file to the
/// next, so an XA transaction prepared in one file and committed in a later one is
/// published at its commit.
pub struct FileSource {
    source: Option<BinlogSource>,
    settings: SourceSettings,
    names: Vec<(String, Vec<String>)>,
    /// The previous file's name and the file its ROTATE named (its own name when it had
    /// none).
    previous: Option<(String, String)>,
}

impl FileSource {
    /// `names` presets column names per `schema.table` (for files without them and no
    /// server to ask). `settings.flavor` is the first file's ([`server_version`]).
    pub fn new(settings: SourceSettings, names: &[(String, Vec<String>)]) -> Self {
        Self {
            source: None,
            settings,
            names: names.to_vec(),
            previous: None,
        }
    }

    /// Reads the next file, handing each outbox event to `each` in binlog order. Positions
    /// name the file by its name on disk.
    pub async fn read(
        &mut self,
        path: &Path,
        mut each: impl FnMut(OutboxEvent),
    ) -> Result<FileRead, SourceError> {
        let parse = |source| SourceError::Parse {
            position: path.display().to_string(),
            source,
        };
        let file_name = file_name(path);
        let follows_previous = self.follows(path);
        let source = match &mut self.source {
            Some(source) => {
                source.continue_in_file(&file_name);
                source
            }
            None => {
                let start = Checkpoint::new(BinlogPosition::new(file_name.clone(), 4), None);
                let mut source = BinlogSource::new(self.settings.clone(), &start);
                for (table, columns) in &self.names {
                    source.tables.names.preset(table, columns.clone());
                }
                self.source.insert(source)
            }
        };
        let file = std::fs::File::open(path).map_err(parse)?;
        let mut binlog =
            BinlogFile::new(BinlogVersion::Version4, BufReader::new(file)).map_err(parse)?;
        let mut count = 0;
        let mut pending: Vec<Event> = Vec::new();
        loop {
            let event = match pending.pop() {
                Some(e) => e,
                None => match binlog.next() {
                    Some(e) => e.map_err(parse)?,
                    None => break,
                },
            };
            for message in source.handle(&event).await? {
                if let SourceMessage::Event(e) = message {
                    count += 1;
                    each(*e);
                }
            }
            // The live stream reads a transaction too large to hold a second time, streaming
            // it; a file is not read twice here, so its rows would be missing.
            if source.needs_rewind() {
                return Err(SourceError::ReplayTooLarge {
                    position: format!("{file_name}:{}", event.header().log_pos()),
                });
            }
            // A MySQL compressed transaction: its inner events follow it, as the live stream
            // hands them over.
            if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
                let payload = event
                    .read_event::<TransactionPayloadEvent<'_>>()
                    .map_err(parse)?;
                let mut inner = Cursor::new(payload.danger_decompress());
                let mut inner_events = Vec::new();
                while let Some(e) = binlog
                    .reader_mut()
                    .read_decompressed(&mut inner)
                    .map_err(parse)?
                {
                    inner_events.push(e);
                }
                inner_events.reverse();
                pending = inner_events;
            }
        }
        self.previous = Some((file_name, source.current_file().to_owned()));
        Ok(FileRead {
            events: count,
            follows_previous,
        })
    }

    /// Whether `path` continues the history of the file read last (see
    /// [`FileRead::follows_previous`]).
    pub fn follows(&self, path: &Path) -> bool {
        let name = file_name(path);
        match &self.previous {
            None => false,
            Some((previous, rotated_to)) if previous == rotated_to => {
                next_number(previous).as_deref() == Some(name.as_str())
            }
            Some((_, rotated_to)) => *rotated_to == name,
        }
    }

    /// Prepared XA transactions with outbox rows that the files read so far never ended.
    pub fn unresolved_xa(&self) -> Vec<UnresolvedXa> {
        let Some(source) = &self.source else {
            return Vec::new();
        };
        source
            .unresolved_xa()
            .into_iter()
            .map(|(xid, before, rows)| UnresolvedXa {
                xid: xid.to_string(),
                prepared_after: before.to_string(),
                rows,
            })
            .collect()
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `binlog.000042` → `binlog.000043` (the same width), `None` without a numeric suffix.
fn next_number(file: &str) -> Option<String> {
    let (base, n) = file.rsplit_once('.')?;
    let next = n.parse::<u64>().ok()?.checked_add(1)?;
    Some(format!("{base}.{next:0width$}", width = n.len()))
}

/// The [`event_checksum`](crate::position::event_checksum) of the event that starts at `pos`
/// in the binlog file `path`, `None` when no event starts there. (A MySQL compressed
/// payload counts as one event, as its rows' positions name it.)
pub fn event_checksum_at(path: &Path, pos: u64) -> Result<Option<u32>, SourceError> {
    let parse = |source| SourceError::Parse {
        position: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(parse)?;
    let binlog = BinlogFile::new(BinlogVersion::Version4, BufReader::new(file)).map_err(parse)?;
    for event in binlog {
        let event = event.map_err(parse)?;
        let header = event.header();
        let end = u64::from(header.log_pos());
        let start = end.saturating_sub(u64::from(header.event_size()));
        if start == pos && end != 0 {
            return Ok(Some(crate::position::event_checksum(
                header.timestamp(),
                header.event_type_raw(),
                header.server_id(),
                header.event_size(),
                event.data(),
            )));
        }
        if start > pos {
            break;
        }
    }
    Ok(None)
}

/// Reads one binlog file on its own (see [`FileSource`]).
pub async fn read_file(
    settings: SourceSettings,
    path: &Path,
    names: &[(String, Vec<String>)],
    each: impl FnMut(OutboxEvent),
) -> Result<usize, SourceError> {
    let mut files = FileSource::new(settings, names);
    Ok(files.read(path, each).await?.events)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{ColumnMapping, OutboxTableConfig};
    use crate::outbox::OutboxTable;
    use crate::source::{Endpoint, flavor::Flavor};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mysql-binlogs");

    fn fixture(name: &str) -> Option<PathBuf> {
        let path = PathBuf::from(FIXTURES).join(name);
        if path.exists() {
            return Some(path);
        }
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false"),
            "CI must run every test, but fixture {} is absent",
            path.display()
        );
        None
    }

    fn settings(path: &Path, table: &str, columns: ColumnMapping) -> SourceSettings {
        let config = OutboxTableConfig {
            columns,
            ..OutboxTableConfig::new(table, "t.{aggregatetype}")
        };
        SourceSettings {
            endpoint: Endpoint {
                opts: mysql_async::Opts::from_url("mysql://nobody@127.0.0.1:9").unwrap(),
                connect_timeout: Duration::from_millis(100),
                io_timeout: Duration::from_millis(100),
            },
            server_id: 4201,
            tables: vec![Arc::new(
                OutboxTable::from_config(&config)
                    .unwrap()
                    .with_stream("OUTBOX"),
            )],
            flavor: Flavor::from_version(&server_version(path).unwrap()),
            heartbeat: Duration::from_secs(5),
            observer: crate::observe::Observer::unobserved(),
        }
    }

    fn all(column: &str) -> ColumnMapping {
        ColumnMapping {
            id: column.into(),
            aggregate_type: column.into(),
            aggregate_id: column.into(),
            event_type: column.into(),
            payload: column.into(),
            ..ColumnMapping::default()
        }
    }

    #[tokio::test]
    async fn mysql_fixture_files_replay_with_positions_in_the_named_file() {
        let Some(path) = fixture("transaction_compression.000001") else {
            return;
        };
        assert!(
            server_version(&path).unwrap().starts_with('8'),
            "a MySQL 8 file"
        );
        let names = [("test.tb1".to_owned(), vec!["a".to_owned()])];
        let mut events = Vec::new();
        let count = read_file(settings(&path, "test.tb1", all("a")), &path, &names, |e| {
            events.push(e)
        })
        .await
        .unwrap();
        assert!(
            count > 0 && count == events.len(),
            "rows of the compressed payload"
        );
        for e in &events {
            assert_eq!(&*e.position.file, "transaction_compression.000001");
            assert!(e.position.pos > 4);
        }
        let mut ids: Vec<_> = events.iter().map(|e| e.position.to_string()).collect();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "each row its own position");
    }

    #[test]
    fn the_next_file_keeps_the_basename_and_the_width_of_the_number() {
        assert_eq!(
            next_number("binlog.000042").as_deref(),
            Some("binlog.000043")
        );
        assert_eq!(
            next_number("mariadb-bin.999999").as_deref(),
            Some("mariadb-bin.1000000")
        );
        assert_eq!(next_number("binlog"), None);
        assert_eq!(next_number("binlog.index"), None);
    }

    #[test]
    fn a_file_that_is_no_binlog_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").unwrap();
        let err = server_version(&path).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
    }
}
