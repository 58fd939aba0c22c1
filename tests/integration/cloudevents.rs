//! `envelope = "cloudevents"`: CloudEvents 1.0 binary-mode headers, the body unchanged.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_tables_carry_the_binary_mode_attributes_and_the_payload_as_the_body() {
    let env = TestEnv::start("cloudevents").await;
    env.exec(
        "CREATE TABLE custom (
            id VARCHAR(64) NOT NULL PRIMARY KEY,
            aggregatetype VARCHAR(64) NOT NULL,
            aggregateid VARCHAR(64) NOT NULL,
            type VARCHAR(64) NOT NULL,
            payload BLOB NOT NULL,
            happened DATETIME(3) NOT NULL)",
    )
    .await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{s}.outbox\"\nenvelope = \"cloudevents\"\n\
         columns = {{ timestamp = \"created_at\" }}\n\n\
         [[outbox]]\ntable = \"{s}.custom\"\nsubject = \"custom.{{type}}\"\nenvelope = \"cloudevents\"\n\
         cloudevents_source = \"https://example.com/billing\"\ncontent_type = \"application/octet-stream\"\n\
         columns = {{ timestamp = \"happened\" }}\n\n\
         [[outbox]]\ntable = \"{s}.plain\"\nsubject = \"plain.{{type}}\"\n",
        s = env.schema
    );
    env.exec(
        "CREATE TABLE plain (id VARCHAR(64) PRIMARY KEY, aggregatetype VARCHAR(64),
            aggregateid VARCHAR(64), type VARCHAR(64), payload JSON)",
    )
    .await;
    let connector = env.start_connector(env.config(Some(&outbox))).await;
    let mut conn = env.conn().await;
    let event = &events(1, 1, 1)[0];
    insert_tx(&mut conn, std::slice::from_ref(event), false).await;
    env.exec(
        "INSERT INTO custom VALUES ('c1', 'Invoice', 'i-1', 'InvoiceIssued', 'raw', '2026-01-02 03:04:05.250');
         INSERT INTO plain VALUES ('p1', 'User', 'u-1', 'UserCreated', '{}')",
    )
    .await;
    env.wait_for_count(3, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let messages = env.stored_messages().await;
    let m = &messages[0];
    assert_eq!(m.header("ce-specversion"), "1.0");
    assert_eq!(m.header("ce-id"), event.uuid());
    assert_eq!(m.header("ce-id"), m.header("Nats-Msg-Id"));
    assert_eq!(
        m.header("ce-source"),
        format!("binlog-outbox/{}/outbox", env.schema)
    );
    assert_eq!(m.header("ce-type"), event.event_type);
    let time = m.header("ce-time");
    assert!(
        time.len() == "2026-01-02T03:04:05.123456Z".len()
            && time.ends_with('Z')
            && &time[10..11] == "T",
        "{time}"
    );
    assert_eq!(m.header("content-type"), "application/json");
    assert_eq!(
        m.payload,
        event.payload().as_bytes(),
        "the body stays the payload"
    );

    let c = &messages[1];
    assert_eq!(c.header("ce-source"), "https://example.com/billing");
    assert_eq!(c.header("ce-time"), "2026-01-02T03:04:05.250000Z");
    assert_eq!(c.header("content-type"), "application/octet-stream");
    assert_eq!(c.payload, b"raw");

    let p = &messages[2];
    assert!(
        p.headers.keys().all(|h| !h.starts_with("ce-")),
        "no envelope unless asked: {:?}",
        p.headers
    );
}
