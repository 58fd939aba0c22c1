//! Bad rows under both policies: `fail` stops before checkpointing past the row, `dead_letter`
//! publishes the row to the dead-letter subject with the reason and continues.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

const LOOSE_TABLE: &str = "CREATE TABLE loose (
    n INT AUTO_INCREMENT PRIMARY KEY,
    id VARCHAR(64) NULL,
    aggregatetype VARCHAR(64) NULL,
    aggregateid VARCHAR(64) NULL,
    type VARCHAR(64) NULL,
    payload JSON NULL,
    created VARCHAR(64) NULL)";

/// (case, SQL values for id, aggregatetype, aggregateid, type, payload, created; reason
/// fragment)
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let huge = crate::support::servers::NATS_MAX_PAYLOAD + 1024;
    // The body fits the server's max_payload, the body and its headers do not.
    let nearly = crate::support::servers::NATS_MAX_PAYLOAD - 100;
    let mut cases = vec![
        (
            "null payload",
            "('b1', 'User', 'u', 'T', NULL)".into(),
            "is NULL",
        ),
        (
            "empty payload",
            "('b2', 'User', 'u', 'T', '')".into(),
            "is empty",
        ),
        (
            "invalid subject",
            "('b3', 'Order Line', 'u', 'T', '{}')".into(),
            "whitespace",
        ),
        (
            "null id",
            "(NULL, 'User', 'u', 'T', '{}')".into(),
            "id column `id` is NULL",
        ),
        (
            "oversized",
            format!("('b5', 'User', 'u', 'T', CONCAT('\"', REPEAT('x', {huge}), '\"'))"),
            "max_payload",
        ),
        (
            "invalid JSON",
            "('b6', 'User', 'u', 'T', '{\"total\": 1,')".into(),
            "declared JSON but holds invalid JSON",
        ),
        (
            "oversized with its headers",
            format!("('b7', 'User', 'u', 'T', CONCAT('\"', REPEAT('x', {nearly}), '\"'))"),
            "max_payload",
        ),
    ];
    for (_, values, _) in &mut cases {
        values.insert_str(values.len() - 1, ", '2026-01-02T03:04:05Z'");
    }
    cases.push((
        "line break in the timestamp",
        "('b8', 'User', 'u', 'T', '{}', CONCAT('2026-01-02', CHAR(10), 'Nats-Msg-Id: x'))".into(),
        "column `created` contains a line break",
    ));
    cases
}

fn outbox(schema: &str, policy: &str) -> String {
    format!(
        "[[outbox]]\ntable = \"{schema}.loose\"\non_bad_row = \"{policy}\"\ncolumns = {{ timestamp = \"created\" }}\n"
    )
}

/// Inserts rows into `loose`, bypassing the JSON column's CHECK as a careless producer can.
async fn insert(conn: &mut mysql_async::Conn, values: &str) {
    conn.query_drop(format!(
        "SET SESSION check_constraint_checks = 0; INSERT INTO loose (id, aggregatetype, aggregateid, type, payload, created) VALUES {values}"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_policy_stops_at_each_kind_of_bad_row_without_checkpointing_past_it() {
    for (case, values, reason) in cases() {
        let env = TestEnv::start("fail_policy").await;
        env.exec(LOOSE_TABLE).await;
        let connector = env
            .start_connector(env.config(Some(&outbox(&env.schema, "fail"))))
            .await;
        let mut conn = env.conn().await;
        insert(&mut conn, "('good-1', 'User', 'u', 'T', '{}', NULL)").await;
        env.wait_for_count(1, Duration::from_secs(30)).await;
        let before = master_position(&env).await;
        insert(&mut conn, &values).await;
        insert(&mut conn, "('good-2', 'User', 'u', 'T', '{}', NULL)").await;
        let msg = connector.failure().await.to_string();
        assert!(msg.contains(reason), "{case}: {msg}");
        assert!(
            msg.contains("fail_policy.loose") || msg.contains("max_payload"),
            "{case}: {msg}"
        );
        assert_eq!(
            checkpoint_position(&env.checkpoint_path()),
            before,
            "{case}"
        );
        assert_eq!(
            env.message_count().await,
            1,
            "{case}: nothing after the bad row"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_policy_publishes_each_kind_of_bad_row_with_its_reason_and_continues() {
    let env = TestEnv::start("dead_letter").await;
    env.exec(LOOSE_TABLE).await;
    let connector = env
        .start_connector(env.config(Some(&outbox(&env.schema, "dead_letter"))))
        .await;
    let mut conn = env.conn().await;
    insert(&mut conn, "('good-1', 'User', 'u', 'T', '{}', NULL)").await;
    for (_, values, _) in cases() {
        insert(&mut conn, &values).await;
    }
    insert(&mut conn, "('good-2', 'User', 'u', 'T', '{}', NULL)").await;
    let total = cases().len() + 2;
    env.wait_for_count(total as u64, Duration::from_secs(30))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector
        .stop()
        .await
        .expect("keeps running through bad rows");

    let messages = env.stored_messages().await;
    assert_eq!(messages.len(), total);
    assert_eq!(messages[0].header("Nats-Msg-Id"), "good-1");
    assert_eq!(messages[total - 1].header("Nats-Msg-Id"), "good-2");
    for (m, (case, _, reason)) in messages[1..total - 1].iter().zip(cases()) {
        assert_eq!(m.subject, "outbox.deadletter", "{case}");
        assert!(
            m.header("Outbox-Dead-Letter-Reason").contains(reason),
            "{case}: {:?}",
            m.headers
        );
        assert!(m.header("Nats-Msg-Id").ends_with(":dead-letter"), "{case}");
        assert_eq!(m.header("Outbox-Table"), "dead_letter.loose");
        assert!(
            m.header("Outbox-Source-Position")
                .starts_with("mariadb-bin.")
        );
    }
    assert_eq!(messages[1].header("Nats-Msg-Id"), "b1:dead-letter");
    assert_eq!(messages[3].payload, b"{}", "payload kept as stored");
    let invalid_json = messages
        .iter()
        .find(|m| m.header("Nats-Msg-Id") == "b6:dead-letter")
        .unwrap();
    assert_eq!(invalid_json.payload, br#"{"total": 1,"#);
}
