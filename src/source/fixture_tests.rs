//! Replays real MySQL and MariaDB binlog files (tests/fixtures/mysql-binlogs) through the
//! source's event handling: the MySQL-only paths (binary JSON, compressed transaction payloads,
//! GTID events) that cannot run live here. Skips, saying so, when the folder is absent.

use std::io::{BufReader, Cursor};
use std::path::PathBuf;
use std::time::Duration;

use mysql_common::binlog::BinlogFile;
use mysql_common::binlog::EventStreamReader;
use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};

use mysql_async::Opts;
use mysql_async::binlog::events::EventData;

use super::decode::ColumnDecoder;
use super::*;
use crate::cell::Cell;
use crate::checkpoint::Checkpoint;
use crate::config::{ColumnMapping, OutboxTableConfig};
use crate::error::SourceError;
use crate::position::{BinlogPosition, MysqlGtidSet};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mysql-binlogs");

/// A fixture that is absent skips the test, saying so; under CI (`CI` set) that is a failure,
/// so that a test that cannot run never passes there.
fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false"),
        "CI must run every test, but: {reason}"
    );
    eprintln!("skipped: {reason}");
}

fn fixture(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(FIXTURES).join(name);
    if path.exists() {
        Some(path)
    } else {
        skip(&format!("fixture {} is absent", path.display()));
        None
    }
}

/// Every event of a binlog file, with compressed transaction payloads expanded in place.
fn events_of(
    path: &PathBuf,
    mut each: impl FnMut(&EventStreamReader, &Event),
) -> std::io::Result<usize> {
    let file = std::fs::File::open(path)?;
    let mut binlog = BinlogFile::new(BinlogVersion::Version4, BufReader::new(file))?;
    let mut count = 0;
    while let Some(event) = binlog.next() {
        let event = event?;
        count += 1;
        each(binlog.reader(), &event);
        if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let payload = event.read_event::<TransactionPayloadEvent<'_>>()?;
            let mut inner = Cursor::new(payload.danger_decompress());
            while let Some(e) = binlog.reader_mut().read_decompressed(&mut inner)? {
                count += 1;
                each(binlog.reader(), &e);
            }
        }
    }
    Ok(count)
}

/// Replays a fixture through [`BinlogSource::handle`] with `tables` configured and `presets`
/// as column names. Returns the messages and the first error.
async fn replay(
    path: &PathBuf,
    tables: &[(&str, &str, ColumnMapping)],
    presets: &[(&str, &[&str])],
) -> (Vec<SourceMessage>, Option<SourceError>) {
    replay_from(path, tables, presets, None).await
}

/// [`replay`] from a start with a known MySQL GTID set (so the source tracks GTIDs).
async fn replay_from(
    path: &PathBuf,
    tables: &[(&str, &str, ColumnMapping)],
    presets: &[(&str, &[&str])],
    gtid_set: Option<MysqlGtidSet>,
) -> (Vec<SourceMessage>, Option<SourceError>) {
    let tables = tables
        .iter()
        .map(|(table, subject, columns)| {
            let config = OutboxTableConfig {
                columns: columns.clone(),
                ..OutboxTableConfig::new(table, subject)
            };
            Arc::new(OutboxTable::from_config(&config).unwrap())
        })
        .collect();
    let settings = offline_settings(tables);
    let start = Checkpoint {
        gtid_set,
        ..Checkpoint::new(BinlogPosition::new("fixture.000001", 4), None)
    };
    let mut source = BinlogSource::new(settings, &start);
    // Every transaction end is reported, not just those with events.
    source.last_progress = std::time::Instant::now() - IDLE_PROGRESS_INTERVAL * 2;
    for (table, names) in presets {
        source
            .tables
            .names
            .preset(table, names.iter().map(|n| n.to_string()).collect());
    }
    let mut events = Vec::new();
    events_of(path, |_, e| events.push(e.clone())).unwrap();
    // Re-read with the reader so that table maps are available while handling.
    let file = std::fs::File::open(path).unwrap();
    let mut binlog = BinlogFile::new(BinlogVersion::Version4, BufReader::new(file)).unwrap();
    let mut out = Vec::new();
    let mut pending: Vec<Event> = Vec::new();
    loop {
        let event = match pending.pop() {
            Some(e) => e,
            None => match binlog.next() {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    return (
                        out,
                        Some(SourceError::Parse {
                            position: "fixture".into(),
                            source: e,
                        }),
                    );
                }
                None => break,
            },
        };
        match source.handle(&event).await {
            Ok(msgs) => out.extend(msgs),
            Err(e) => return (out, Some(e)),
        }
        if event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let payload = event.read_event::<TransactionPayloadEvent<'_>>().unwrap();
            let mut inner = Cursor::new(payload.danger_decompress());
            let mut inner_events = Vec::new();
            while let Some(e) = binlog.reader_mut().read_decompressed(&mut inner).unwrap() {
                inner_events.push(e);
            }
            inner_events.reverse();
            pending = inner_events;
        }
        source.last_progress = std::time::Instant::now() - IDLE_PROGRESS_INTERVAL * 2;
    }
    (out, None)
}

/// Offsets of the transaction ends inside the replayed file (not the rotation to the next).
fn transaction_ends(messages: &[SourceMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SourceMessage::TransactionEnd(cp) if cp.position.file == "fixture.000001" => {
                Some(cp.position.pos)
            }
            _ => None,
        })
        .collect()
}

fn outbox_events(messages: &[SourceMessage]) -> Vec<&OutboxEvent> {
    messages
        .iter()
        .filter_map(|m| match m {
            SourceMessage::Event(e) => Some(&**e),
            SourceMessage::TransactionEnd(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn mariadb_outbox_rows_become_events_with_enum_names_and_transaction_ends() {
    let Some(path) = fixture("mariadb-bin.000001") else {
        return;
    };
    let mapping = ColumnMapping {
        id: "id".into(),
        aggregate_type: "topic".into(),
        aggregate_id: "id".into(),
        event_type: "event_type".into(),
        payload: "event".into(),
        timestamp: Some("created".into()),
        ..ColumnMapping::default()
    };
    let (messages, err) = replay(&path, &[("toddy_test.outbox", "t.{type}", mapping)], &[]).await;
    assert!(err.is_none(), "{err:?}");
    let events = outbox_events(&messages);
    assert!(!events.is_empty(), "the fixture holds outbox inserts");
    for e in &events {
        assert!(
            e.event_type.parse::<i64>().is_err(),
            "ENUM rendered by name: {}",
            e.event_type
        );
        assert!(
            e.timestamp.as_deref().is_some_and(|t| t.ends_with('Z')),
            "{:?}",
            e.timestamp
        );
    }
    let ends = transaction_ends(&messages);
    assert!(
        !ends.is_empty() && ends.iter().all(|&p| p > 4) && ends.windows(2).all(|w| w[0] < w[1]),
        "{ends:?}"
    );
}

#[tokio::test]
async fn compressed_transaction_payload_rows_are_read_and_end_at_the_payload_end() {
    let Some(path) = fixture("transaction_compression.000001") else {
        return;
    };
    let mapping = ColumnMapping {
        id: "a".into(),
        aggregate_type: "a".into(),
        aggregate_id: "a".into(),
        event_type: "a".into(),
        payload: "a".into(),
        timestamp: None,
        ..ColumnMapping::default()
    };
    let (messages, err) = replay(
        &path,
        &[("test.tb1", "t.{aggregatetype}", mapping)],
        &[("test.tb1", &["a"])],
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    let events = outbox_events(&messages);
    assert!(
        !events.is_empty(),
        "rows inside the compressed payload are read"
    );
    let ends = transaction_ends(&messages);
    assert!(!ends.is_empty());
    // Inner events carry no position: the transaction ends where the payload event ends, and
    // rows are numbered within the payload.
    assert_eq!(ends, [431], "the payload event ends at 431");
    // The transaction's last event is inside the payload: the checkpoint's mark is the
    // payload event, which a resume can ask the server for.
    let marks: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SourceMessage::TransactionEnd(cp) if cp.position.pos == 431 => cp.last_event.clone(),
            _ => None,
        })
        .collect();
    let payload_start = events[0].position.pos;
    assert!(
        marks.iter().all(|m| m.position.pos == payload_start) && !marks.is_empty(),
        "{marks:?}, payload starts at {payload_start}"
    );
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        assert!(e.position.pos > 4);
        assert!(
            seen.insert(e.position.to_string()),
            "duplicate row position {}",
            e.position
        );
    }
}

#[test]
fn mysql_binary_json_decodes_to_json_text() {
    let Some(path) = fixture("json.binlog.000001") else {
        return;
    };
    let mut json_cells = 0;
    events_of(&path, |reader, e| {
        let Ok(Some(EventData::RowsEvent(rows))) = e.read_data() else {
            return;
        };
        let Some(tme) = reader.get_tme(rows.table_id()) else {
            return;
        };
        let names: Vec<String> = (0..tme.columns_count()).map(|i| format!("c{i}")).collect();
        let decoders = ColumnDecoder::for_table(tme, &names);
        for row in rows.rows(tme) {
            let (before, after) = row.unwrap();
            for mut image in [before, after].into_iter().flatten() {
                let columns = image.columns();
                for i in 0..image.len() {
                    let Some(value) = image.take(i) else { continue };
                    if matches!(value, mysql_async::binlog::value::BinlogValue::JsonDiff(_)) {
                        continue;
                    }
                    if let Ok(Cell::Json(text)) =
                        decoders[i].decode(value, columns[i].character_set())
                    {
                        serde_json::from_str::<serde_json::Value>(&text)
                            .unwrap_or_else(|e| panic!("{text}: {e}"));
                        json_cells += 1;
                    }
                }
            }
        }
    })
    .unwrap();
    assert!(json_cells > 0, "the fixture holds JSON values");
}

#[test]
fn every_fixture_is_read_without_panicking() {
    let Ok(dir) = std::fs::read_dir(FIXTURES) else {
        skip(&format!("{FIXTURES} is absent"));
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for entry in dir {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("LICENSE") || name.ends_with(".md") {
            continue;
        }
        // No outbox tables: every event is parsed and classified; errors are fine, panics not.
        let (_, err) = runtime.block_on(replay(&path, &[], &[]));
        if let Some(err) = err {
            eprintln!("{name}: {err}");
        }
    }
}

/// The GTID set of the last transaction end of a replay.
async fn final_gtid_set(name: &str) -> Option<(MysqlGtidSet, Vec<(String, Option<String>, u64)>)> {
    let path = fixture(name)?;
    let mut seen = Vec::new();
    events_of(&path, |_, e| {
        if let Ok(Some(EventData::GtidEvent(g))) = e.read_data() {
            let uuid = crate::cell::uuid_string(&g.sid());
            seen.push((uuid, g.tag().map(|t| t.as_str().to_owned()), g.gno()));
        }
    })
    .unwrap();
    let (messages, err) = replay_from(&path, &[], &[], Some(MysqlGtidSet::default())).await;
    assert!(err.is_none(), "{err:?}");
    let last = messages.iter().rev().find_map(|m| match m {
        SourceMessage::TransactionEnd(cp) => cp.gtid_set.clone(),
        SourceMessage::Event(_) => None,
    })?;
    Some((last, seen))
}

#[tokio::test]
async fn mysql_gtid_events_build_the_executed_gtid_set() {
    let Some((set, seen)) = final_gtid_set("binlog_transaction_with_GTID.000001").await else {
        return;
    };
    assert!(!seen.is_empty(), "the fixture holds GTID events");
    let text = set.to_string();
    for (uuid, _, gno) in &seen {
        assert!(text.contains(uuid), "{text} lacks {uuid}");
        assert!(covers(&set, *gno), "{text} lacks {uuid}:{gno}");
    }
    assert_eq!(text.parse::<MysqlGtidSet>().unwrap(), set);
    for entry in set.entries() {
        let sid: mysql_async::Sid<'static> = entry.parse().expect("entries are valid Sids");
        assert!(!sid.intervals().is_empty());
    }
}

#[tokio::test]
async fn tagged_mysql_gtids_keep_their_tag() {
    let Some((set, seen)) = final_gtid_set("binlog_transaction_with_GTID_TAG.000001").await else {
        return;
    };
    let tagged: Vec<_> = seen.iter().filter(|(_, tag, _)| tag.is_some()).collect();
    assert!(
        !tagged.is_empty(),
        "the fixture holds tagged GTIDs: {seen:?}"
    );
    let text = set.to_string();
    for (uuid, tag, _) in tagged {
        let tag = tag.as_ref().unwrap().to_ascii_lowercase();
        assert!(
            text.contains(&format!("{uuid}:{tag}:")),
            "{text} lacks {uuid}:{tag}"
        );
    }
    for entry in set.entries() {
        entry
            .parse::<mysql_async::Sid<'static>>()
            .expect("tagged entries are valid Sids");
    }
}

fn covers(set: &MysqlGtidSet, gno: u64) -> bool {
    set.entries().iter().any(|e| {
        e.split(':').skip(1).any(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if a <= gno && gno <= b)
        })
    })
}

/// A session that resumes at a MySQL compressed payload's mark gets the payload's inner
/// events next (mysql_async decompressed it while the mark was checked): they were handled
/// before and are skipped, not handled again at offset 0.
#[tokio::test]
async fn a_resume_at_a_compressed_payload_mark_skips_its_inner_events() {
    let Some(path) = fixture("transaction_compression.000001") else {
        return;
    };
    let config = OutboxTableConfig {
        columns: ColumnMapping {
            id: "a".into(),
            aggregate_type: "a".into(),
            aggregate_id: "a".into(),
            event_type: "a".into(),
            payload: "a".into(),
            timestamp: None,
            ..ColumnMapping::default()
        },
        ..OutboxTableConfig::new("test.tb1", "t.{aggregatetype}")
    };
    let settings = offline_settings(vec![Arc::new(OutboxTable::from_config(&config).unwrap())]);
    let start = Checkpoint::new(BinlogPosition::new("fixture.000001", 431), None);
    let mut source = BinlogSource::new(settings, &start);
    source.last_progress = std::time::Instant::now() - IDLE_PROGRESS_INTERVAL * 2;
    source
        .tables
        .names
        .preset("test.tb1", vec!["a".to_string()]);
    source.skip_inner_events_of_the_mark();
    let file = std::fs::File::open(&path).unwrap();
    let mut binlog = BinlogFile::new(BinlogVersion::Version4, BufReader::new(file)).unwrap();
    let mut out = Vec::new();
    let mut inner_events = 0;
    while let Some(event) = binlog.next() {
        let event = event.unwrap();
        let t = event.header().event_type_raw();
        if t == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            continue;
        }
        if t == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            // The mark itself was consumed by the session; its inner events follow.
            let payload = event.read_event::<TransactionPayloadEvent<'_>>().unwrap();
            let mut inner = Cursor::new(payload.danger_decompress());
            while let Some(e) = binlog.reader_mut().read_decompressed(&mut inner).unwrap() {
                inner_events += 1;
                out.extend(source.handle(&e).await.unwrap());
            }
            break;
        }
    }
    assert!(inner_events > 0);
    assert!(out.is_empty(), "handled again: {out:?}");
}

/// Source settings for replaying files: a MySQL 8.0 flavor and an endpoint nothing listens
/// on (the replay never connects).
fn offline_settings(tables: Vec<Arc<OutboxTable>>) -> SourceSettings {
    SourceSettings {
        endpoint: Endpoint {
            opts: Opts::from_url("mysql://nobody@127.0.0.1:9").unwrap(),
            connect_timeout: Duration::from_millis(100),
            io_timeout: Duration::from_millis(100),
        },
        server_id: 4201,
        tables,
        flavor: flavor::Flavor::from_version("8.0.36"),
        heartbeat: Duration::from_secs(5),
        observer: crate::observe::Observer::unobserved(),
    }
}
