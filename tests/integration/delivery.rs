//! Every committed INSERT is published once, with the right subject, body and headers, in
//! commit order per aggregate.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_insert_is_published_once_with_subject_body_headers_in_commit_order() {
    let env = TestEnv::start("delivery").await;
    let connector = InProcess::start(env.config(None));
    // The connector starts at `latest`: wait until it has saved its start position.
    wait_for_file(&env.checkpoint_path()).await;

    let all = events(1, 3_000, 40);
    let mut conn = env.conn().await;
    let mut rest = &all[..];
    let mut round = 0;
    // Transactions of 1, 10 and 500 rows, single- and multi-row INSERTs.
    while !rest.is_empty() {
        let size = [1, 10, 500, 1, 1, 10][round % 6].min(rest.len());
        let (tx, tail) = rest.split_at(size);
        insert_tx(&mut conn, tx, round % 2 == 0).await;
        rest = tail;
        round += 1;
        // Rotate the binlog mid-stream now and then.
        if round.is_multiple_of(10) {
            env.exec_root("FLUSH BINARY LOGS").await;
        }
    }

    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    connector.stop().await.expect("clean shutdown");
    let messages = env.stored_messages().await;
    assert_exactly_once_in_order(&messages, &all);

    let by_id: std::collections::HashMap<String, &TestEvent> =
        all.iter().map(|e| (e.uuid(), e)).collect();
    for m in &messages {
        let e = by_id[m.header("Nats-Msg-Id")];
        assert_eq!(m.subject, format!("outbox.event.{}", e.aggregate_type));
        assert_eq!(m.header("Outbox-Aggregate-Type"), e.aggregate_type);
        assert_eq!(m.header("Outbox-Aggregate-Id"), e.aggregate_id);
        assert_eq!(m.header("Outbox-Event-Type"), e.event_type);
        assert_eq!(m.header("Outbox-Table"), "delivery.outbox");
        assert!(
            m.header("Outbox-Source-Position")
                .starts_with("mariadb-bin.0000")
        );
        assert_eq!(
            m.json(),
            serde_json::from_str::<serde_json::Value>(&e.payload()).unwrap()
        );
    }
}
