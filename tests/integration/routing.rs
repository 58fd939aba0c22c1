//! Routing by any column of the outbox row: `{NAME}` / `{column:NAME}` placeholders in the
//! subject template, checked against the table's real columns at start.

use std::time::Duration;

use binlog_outbox::error::Error;

use crate::support::*;

const TENANT_TABLE: &str = "CREATE TABLE tenanted (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    tenant VARCHAR(64) NULL,
    aggregatetype VARCHAR(64) NOT NULL,
    aggregateid VARCHAR(64) NOT NULL,
    type VARCHAR(64) NOT NULL,
    payload JSON NOT NULL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_column_routes_events_to_per_tenant_subjects_and_a_null_tenant_is_a_bad_row() {
    let env = TestEnv::start("routing").await;
    env.exec(TENANT_TABLE).await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.tenanted\"\nsubject = \"outbox.{{tenant}}.{{column:aggregatetype}}\"\n\
         on_bad_row = \"dead_letter\"\n",
        env.schema
    );
    let connector = env.start_connector(env.config(Some(&outbox))).await;
    env.exec(
        "INSERT INTO tenanted VALUES
            ('e1', 'acme', 'Order', 'o-1', 'OrderPlaced', '{}'),
            ('e2', 'globex', 'Order', 'o-2', 'OrderPlaced', '{}'),
            ('e3', NULL, 'Order', 'o-3', 'OrderPlaced', '{}'),
            ('e4', 'acme', 'User', 'u-1', 'UserCreated', '{}')",
    )
    .await;
    env.wait_for_count(4, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let messages = env.stored_messages().await;
    let routed: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.header("Nats-Msg-Id"), m.subject.as_str()))
        .collect();
    assert_eq!(
        routed,
        [
            ("e1", "outbox.acme.Order"),
            ("e2", "outbox.globex.Order"),
            ("e3:dead-letter", "outbox.deadletter"),
            ("e4", "outbox.acme.User"),
        ]
    );
    let reason = messages[2].header("Outbox-Dead-Letter-Reason");
    assert!(
        reason.contains("column `tenant`") && reason.contains("NULL"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_column_the_table_lacks_stops_the_start_naming_table_token_and_columns() {
    let env = TestEnv::start("routing_unknown").await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.outbox\"\nsubject = \"outbox.{{tenant}}.{{aggregatetype}}\"\n",
        env.schema
    );
    let err = InProcess::start(env.config(Some(&outbox))).failure().await;
    let msg = err.to_string();
    assert!(matches!(err, Error::Preflight { .. }), "{msg}");
    for part in [
        "routing_unknown.outbox",
        "{tenant}",
        "aggregateid",
        "payload",
    ] {
        assert!(msg.contains(part), "{part} missing in: {msg}");
    }
    assert!(!env.checkpoint_path().exists(), "nothing started");
}
