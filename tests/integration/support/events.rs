//! Test events and what the stream stored: the rows tests insert, how they are committed,
//! the messages read back, and the exactly-once-in-order assertion.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;
use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;

use super::env::TestEnv;

/// A test event. `seq` grows with commit order, so per aggregate it must grow in the stream.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub n: u64,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub event_type: &'static str,
    pub seq: u64,
}

impl TestEvent {
    /// 16 id bytes; every 256th id ends in a zero byte, which the binlog strips from BINARY.
    pub fn id_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = 0xe7;
        b[8..].copy_from_slice(&self.n.to_be_bytes());
        b
    }

    pub fn uuid(&self) -> String {
        binlog_outbox::cell::uuid_string(&self.id_bytes())
    }

    pub fn payload(&self) -> String {
        format!(
            "{{\"n\": {}, \"aggregate\": \"{}\", \"seq\": {}}}",
            self.n, self.aggregate_id, self.seq
        )
    }

    pub fn sql_values(&self) -> String {
        let hex: String = self.id_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "(UNHEX('{hex}'), '{}', '{}', '{}', '{}')",
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload()
        )
    }
}

/// Builds `count` events spread round-robin over `aggregates` aggregates of two types.
pub fn events(first_n: u64, count: u64, aggregates: u64) -> Vec<TestEvent> {
    (first_n..first_n + count)
        .map(|n| {
            let agg = n % aggregates;
            let (aggregate_type, event_type) = if agg.is_multiple_of(2) {
                ("User", "UserCreated")
            } else {
                ("Order", "OrderPlaced")
            };
            TestEvent {
                n,
                aggregate_type,
                aggregate_id: format!("{}-{agg}", aggregate_type.to_lowercase()),
                event_type,
                seq: n,
            }
        })
        .collect()
}

/// Inserts `events` in one transaction; `multi_row` uses one INSERT for all rows (one binlog
/// rows event with many rows), otherwise one INSERT per row.
pub async fn insert_tx(conn: &mut mysql_async::Conn, events: &[TestEvent], multi_row: bool) {
    let mut sql = String::from("START TRANSACTION;");
    const COLS: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ";
    if multi_row {
        sql.push_str(COLS);
        sql.push_str(
            &events
                .iter()
                .map(TestEvent::sql_values)
                .collect::<Vec<_>>()
                .join(","),
        );
        sql.push(';');
    } else {
        for e in events {
            sql.push_str(COLS);
            sql.push_str(&e.sql_values());
            sql.push(';');
        }
    }
    sql.push_str("COMMIT");
    conn.query_drop(sql)
        .await
        .expect("insert transaction commits");
}

/// Commits `events` in transactions of `tx_rows` from another task, alternating one multi-row
/// INSERT and one INSERT per row, pausing `pause` after each transaction.
pub fn spawn_writer(
    env: &TestEnv,
    events: &[TestEvent],
    tx_rows: usize,
    pause: Duration,
) -> JoinHandle<()> {
    let url = format!("{}/{}", env.db.root_url(), env.schema);
    let events = events.to_vec();
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        for (i, tx) in events.chunks(tx_rows).enumerate() {
            insert_tx(&mut conn, tx, i.is_multiple_of(2)).await;
            tokio::time::sleep(pause).await;
        }
    })
}

/// A message as stored in the stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: u64,
    pub subject: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "message {} lacks header {name}: {:?}",
                    self.seq, self.headers
                )
            })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("payload is JSON")
    }
}

/// Every message currently in `stream`, in stream order (none when it does not exist yet).
pub async fn read_stored_messages(js: &jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let info = stream.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let m = stream
            .get_raw_message(seq)
            .await
            .expect("stored message reads");
        let headers = m
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
            .collect();
        out.push(StoredMessage {
            seq: m.sequence,
            subject: m.subject.to_string(),
            headers,
            payload: m.payload.to_vec(),
        });
    }
    out
}

/// Asserts that `messages` hold exactly `expected`, once each, with per-aggregate order.
pub fn assert_exactly_once_in_order(messages: &[StoredMessage], expected: &[TestEvent]) {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for m in messages {
        *by_id.entry(m.header("Nats-Msg-Id")).or_default() += 1;
    }
    let dupes: Vec<_> = by_id.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dupes.is_empty(), "stored more than once: {dupes:?}");
    let expected_ids: HashSet<String> = expected.iter().map(TestEvent::uuid).collect();
    let missing: Vec<_> = expected_ids
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(messages.len(), expected.len(), "unexpected extra messages");
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for m in messages {
        let body = m.json();
        let agg = body["aggregate"].as_str().unwrap().to_owned();
        let seq = body["seq"].as_u64().unwrap();
        let prev = last_seq.insert(agg.clone(), seq).unwrap_or(0);
        assert!(
            seq > prev,
            "aggregate {agg}: event seq {seq} stored after seq {prev} (stream seq {})",
            m.seq
        );
    }
}
