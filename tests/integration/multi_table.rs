//! Several outbox tables in different schemas, each with its own column mapping, subject
//! template and stream.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_two_schemas_publish_with_their_own_mapping_subjects_and_streams() {
    let env = TestEnv::start("multi").await;
    env.exec_root(
        "CREATE DATABASE billing;
         CREATE TABLE billing.events (
            event_id CHAR(36) NOT NULL PRIMARY KEY,
            kind VARCHAR(32) NOT NULL,
            ref VARCHAR(64) NOT NULL,
            name VARCHAR(64) NOT NULL,
            body JSON NOT NULL);
         GRANT SELECT ON billing.* TO cdc@'%'",
    )
    .await;
    let billing_stream = "BILLING_MULTI";
    let outbox = format!(
        "[[outbox]]\ntable = \"multi.outbox\"\nsubject = \"shop.{{aggregatetype}}\"\n\n\
         [[outbox]]\ntable = \"billing.events\"\nstream = \"{billing_stream}\"\nsubject = \"billing.{{type}}\"\n\
         columns = {{ id = \"event_id\", aggregate_type = \"kind\", aggregate_id = \"ref\", event_type = \"name\", payload = \"body\" }}\n"
    );
    let connector = env.start_connector(env.config(Some(&outbox))).await;

    let shop = events(1, 20, 4);
    let mut conn = env.conn().await;
    for (i, chunk) in shop.chunks(5).enumerate() {
        // Each transaction writes to both outboxes.
        let values: Vec<String> = chunk.iter().map(TestEvent::sql_values).collect();
        conn.query_drop(format!(
            "START TRANSACTION;
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {};
             INSERT INTO billing.events VALUES ('inv-{i}', 'Invoice', 'order-{i}', 'InvoiceIssued', '{{\"n\": {i}}}');
             COMMIT",
            values.join(",")
        ))
        .await
        .unwrap();
    }
    env.wait_for_count(20, Duration::from_secs(30)).await;
    let start = std::time::Instant::now();
    while env.stored_messages_in(billing_stream).await.len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "billing events missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.stop().await.expect("clean shutdown");

    let shop_messages = env.stored_messages().await;
    assert_exactly_once_in_order(&shop_messages, &shop);
    assert!(
        shop_messages
            .iter()
            .all(|m| m.subject == format!("shop.{}", m.header("Outbox-Aggregate-Type")))
    );
    let billing = env.stored_messages_in(billing_stream).await;
    let ids: Vec<&str> = billing.iter().map(|m| m.header("Nats-Msg-Id")).collect();
    assert_eq!(ids, ["inv-0", "inv-1", "inv-2", "inv-3"]);
    for (i, m) in billing.iter().enumerate() {
        assert_eq!(m.subject, "billing.InvoiceIssued");
        assert_eq!(m.header("Outbox-Table"), "billing.events");
        assert_eq!(m.header("Outbox-Aggregate-Id"), format!("order-{i}"));
        assert_eq!(m.json(), serde_json::json!({ "n": i }));
    }
    // In atomic_batch mode (a pass of scripts/test) a transaction is atomic per stream: its
    // events in each stream are in one batch, and a batch goes to one stream.
    if run_publish_mode().as_deref() == Some("atomic_batch") {
        let batch = |m: &StoredMessage| m.header("Nats-Batch-Id").to_owned();
        for tx in shop_messages.chunks(5) {
            assert!(
                tx.iter().all(|m| batch(m) == batch(&tx[0])),
                "one batch per transaction"
            );
        }
        // Each billing event is its transaction's only one in that stream: atomic on its
        // own, it goes as a single message, in no batch (and so in none of shop's).
        assert!(
            billing
                .iter()
                .all(|m| !m.headers.contains_key("Nats-Batch-Id")),
            "billing events in a batch"
        );
    }
}
