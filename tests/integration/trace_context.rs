//! W3C trace context from outbox columns: `traceparent` / `tracestate` columns and Debezium's
//! `tracingspancontext` become message headers; an invalid traceparent is a bad row.

use std::time::Duration;

use crate::support::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rows_traceparent_arrives_as_the_header_and_an_invalid_one_is_a_bad_row() {
    let env = TestEnv::start("tracing").await;
    env.exec(
        "CREATE TABLE traced (
            id VARCHAR(64) NOT NULL PRIMARY KEY,
            aggregatetype VARCHAR(64) NOT NULL,
            aggregateid VARCHAR(64) NOT NULL,
            type VARCHAR(64) NOT NULL,
            payload JSON NOT NULL,
            traceparent VARCHAR(55) NULL,
            tracestate VARCHAR(512) NULL);
         CREATE TABLE dbz (
            id VARCHAR(64) NOT NULL PRIMARY KEY,
            aggregatetype VARCHAR(64) NOT NULL,
            aggregateid VARCHAR(64) NOT NULL,
            type VARCHAR(64) NOT NULL,
            payload JSON NOT NULL,
            tracingspancontext TEXT NULL)",
    )
    .await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{s}.traced\"\non_bad_row = \"dead_letter\"\n\
         columns = {{ traceparent = \"traceparent\", tracestate = \"tracestate\" }}\n\n\
         [[outbox]]\ntable = \"{s}.dbz\"\non_bad_row = \"dead_letter\"\n\
         columns = {{ tracing_span_context = \"tracingspancontext\" }}\n",
        s = env.schema
    );
    let connector = env.start_connector(env.config(Some(&outbox))).await;
    let upper = PARENT.to_uppercase();
    env.exec(&format!(
        "INSERT INTO traced VALUES
            ('t1', 'Order', 'o-1', 'OrderPlaced', '{{}}', '{PARENT}', 'rojo=00f067aa0ba902b7'),
            ('t2', 'Order', 'o-1', 'OrderPaid', '{{}}', NULL, NULL),
            ('t3', 'Order', 'o-1', 'OrderShipped', '{{}}', '{upper}', NULL);
         INSERT INTO dbz VALUES
            ('d1', 'User', 'u-1', 'UserCreated', '{{}}',
             CONCAT('#Mon Jan 01 00:00:00 UTC 2024', CHAR(10), 'traceparent={PARENT}', CHAR(10)))"
    ))
    .await;
    env.wait_for_count(4, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let messages = env.stored_messages().await;
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|m| m.header("Nats-Msg-Id") == id)
            .unwrap()
    };
    let t1 = by_id("t1");
    assert_eq!(t1.header("traceparent"), PARENT);
    assert_eq!(t1.header("tracestate"), "rojo=00f067aa0ba902b7");
    let t2 = by_id("t2");
    assert!(
        !t2.headers.contains_key("traceparent") && !t2.headers.contains_key("tracestate"),
        "NULL means no header: {:?}",
        t2.headers
    );
    let t3 = by_id("t3:dead-letter");
    assert_eq!(t3.subject, "outbox.deadletter");
    assert!(
        t3.header("Outbox-Dead-Letter-Reason")
            .contains("not a W3C traceparent"),
        "{:?}",
        t3.headers
    );
    assert_eq!(by_id("d1").header("traceparent"), PARENT);
}
