//! Column types round-trip: BINARY(16) ids, latin1 text, JSON, BLOB, BIGINT, TIMESTAMP(6),
//! and a 2 MB payload.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_ids_latin1_text_json_timestamps_and_a_2mb_payload_round_trip() {
    let env = TestEnv::start("types").await;
    env.exec(
        "ALTER TABLE outbox ADD COLUMN note VARCHAR(100) CHARACTER SET latin1 NULL,
         ADD COLUMN tenant INT NULL",
    )
    .await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.outbox\"\nsubject = \"ev.{{aggregatetype}}.{{type}}\"\n\
         columns = {{ timestamp = \"created_at\" }}\nheaders = {{ Note = \"note\", Tenant = \"tenant\" }}\n",
        env.schema
    );
    let connector = env.start_connector(env.config(Some(&outbox))).await;

    let mut conn = env.conn().await;
    // Id ends in two zero bytes, which the binlog strips from BINARY columns.
    let id = "4a6f1c2e-0000-4000-8000-abcdef120000";
    let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    conn.exec_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, created_at, note, tenant)
         VALUES (UNHEX(REPLACE(?, '-', '')), 'Customer', 'c-1', 'Renamed', ?, '2024-02-29 13:14:15.123456', ?, -7)",
        (id, r#"{"name": "Zoë", "n": [1, 2.5, null]}"#, "Müller € café".as_bytes()),
    )
    .await
    .unwrap();
    conn.exec_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (UNHEX(REPLACE(UUID(), '-', '')), 'Customer', 'c-2', 'Big', ?)",
        (big.as_str(),),
    )
    .await
    .unwrap();
    env.wait_for_count(2, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let messages = env.stored_messages().await;
    let m = &messages[0];
    assert_eq!(m.header("Nats-Msg-Id"), id);
    assert_eq!(m.subject, "ev.Customer.Renamed");
    assert_eq!(
        m.payload,
        r#"{"name": "Zoë", "n": [1, 2.5, null]}"#.as_bytes(),
        "JSON body as stored"
    );
    assert_eq!(m.header("Note"), "Müller € café");
    assert_eq!(m.header("Tenant"), "-7");
    // MariaDB's TIMESTAMP is UTC in the binlog; the test server runs with the system zone,
    // so compare the fractional part and the shape only.
    let ts = m.header("Outbox-Timestamp");
    assert!(
        ts.ends_with(".123456Z") && ts.len() == "2024-02-29T13:14:15.123456Z".len(),
        "{ts}"
    );
    let big_msg = &messages[1];
    assert_eq!(big_msg.payload.len(), big.len());
    assert_eq!(big_msg.payload, big.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigint_ids_and_binary_blob_payloads_round_trip_bytes_unchanged() {
    let env = TestEnv::start("types_blob").await;
    env.exec(
        "CREATE TABLE events_out (
            event_id BIGINT NOT NULL PRIMARY KEY,
            kind VARCHAR(32) NOT NULL,
            entity BIGINT NOT NULL,
            name VARCHAR(64) NOT NULL,
            body LONGBLOB NOT NULL)",
    )
    .await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.events_out\"\nsubject = \"bin.{{aggregatetype}}\"\n\
         columns = {{ id = \"event_id\", aggregate_type = \"kind\", aggregate_id = \"entity\", event_type = \"name\", payload = \"body\" }}\n",
        env.schema
    );
    let connector = env.start_connector(env.config(Some(&outbox))).await;
    let body: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00]).collect();
    let mut conn = env.conn().await;
    conn.exec_drop(
        "INSERT INTO events_out VALUES (9007199254740993, 'Proto', -42, 'Encoded', ?)",
        (body.clone(),),
    )
    .await
    .unwrap();
    env.wait_for_count(1, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    let m = &env.stored_messages().await[0];
    assert_eq!(m.header("Nats-Msg-Id"), "9007199254740993");
    assert_eq!(m.header("Outbox-Aggregate-Id"), "-42");
    assert_eq!(m.subject, "bin.Proto");
    assert_eq!(m.payload, body);
}
