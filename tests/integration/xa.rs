//! XA transactions: binlogged at XA PREPARE, resolved by a later XA COMMIT or XA ROLLBACK.
//! Their rows are published at the commit, in commit order, never after a rollback, and a
//! restart in between loses and repeats nothing.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::*;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ";

/// Runs XA START … INSERT … XA END … XA PREPARE for `xid` with `events`.
async fn xa_prepare(conn: &mut mysql_async::Conn, xid: &str, events: &[TestEvent]) {
    let values: Vec<String> = events.iter().map(TestEvent::sql_values).collect();
    conn.query_drop(format!(
        "XA START '{xid}'; {INSERT}{}; XA END '{xid}'; XA PREPARE '{xid}'",
        values.join(",")
    ))
    .await
    .unwrap();
}

fn ids(messages: &[StoredMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.header("Nats-Msg-Id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_rows_are_published_at_their_commit_in_commit_order_and_never_after_a_rollback() {
    let env = TestEnv::start("xa_order").await;
    let connector = env.start_connector(env.config(None)).await;
    // Numbered in commit order.
    let normal = events(1, 2, 1);
    let committed = events(3, 3, 1);
    let one_phase = events(6, 1, 1);
    let rolled_back = events(100, 2, 1);
    let mut xa = env.conn().await;
    let mut other = env.conn().await;

    xa_prepare(&mut xa, "x1", &committed).await;
    insert_tx(&mut other, &normal, true).await;
    xa.query_drop("XA COMMIT 'x1'").await.unwrap();
    xa_prepare(&mut xa, "x2", &rolled_back).await;
    xa.query_drop("XA ROLLBACK 'x2'").await.unwrap();
    xa.query_drop(format!(
        "XA START 'x3'; {INSERT}{}; XA END 'x3'; XA COMMIT 'x3' ONE PHASE",
        one_phase[0].sql_values()
    ))
    .await
    .unwrap();

    env.wait_for_count(6, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    let expected: Vec<TestEvent> = normal
        .iter()
        .chain(&committed)
        .chain(&one_phase)
        .cloned()
        .collect();
    let messages = env.stored_messages().await;
    assert_exactly_once_in_order(&messages, &expected);
    assert!(
        !ids(&messages).contains(&rolled_back[0].uuid()),
        "a rolled-back XA transaction publishes nothing"
    );
    assert!(env.checkpoint().xa_prepared.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connector_between_xa_prepare_and_commit_loses_and_repeats_nothing() {
    let env = TestEnv::start("xa_crash").await;
    // Only the checkpoint may prevent repeats here: no start-up skip (shared streams) and a
    // dedup window that will have passed by the restart.
    let toml = env.config_toml(None).replace(
        "ack_timeout_ms = 2000\n",
        "ack_timeout_ms = 2000\nexclusive_streams = false\nduplicate_window_ms = 1000\n",
    );
    let config = env.write_config("c.toml", &toml);
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;

    let normal = events(1, 20, 2);
    let prepared = events(21, 5, 2);
    let later = events(26, 10, 2);
    let mut xa = env.conn().await;
    let mut other = env.conn().await;
    xa_prepare(&mut xa, "pending", &prepared).await;
    for chunk in normal.chunks(5) {
        insert_tx(&mut other, chunk, true).await;
    }
    env.wait_for_count(20, Duration::from_secs(30)).await;
    // The checkpoint waits before the prepare, and records how far it handled.
    let end = master_position(&env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cp = env.checkpoint();
        if cp.handled_through.as_ref() == Some(&end) {
            assert!(cp.position < end, "held before the prepare: {cp:?}");
            assert_eq!(cp.xa_prepared.len(), 1, "{cp:?}");
            break;
        }
        assert!(Instant::now() < deadline, "checkpoint {cp:?}, end {end}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.kill9();
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    xa.query_drop("XA COMMIT 'pending'").await.unwrap();
    for chunk in later.chunks(5) {
        insert_tx(&mut other, chunk, false).await;
    }
    env.wait_for_count(35, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    assert!(connector.terminate().success());
    let all: Vec<TestEvent> = normal
        .iter()
        .chain(&prepared)
        .chain(&later)
        .cloned()
        .collect();
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}
