//! Binlog history identity. A position means something only within one binlog history, and
//! the history can change while `@@server_uid` (MAC address and port) stays: `RESET MASTER`, a
//! database recreated on the same host and port, another `log_bin` basename, another server
//! behind the same address. Whatever changed, nothing of the new history is skipped on
//! account of the old one's positions, and an old checkpoint is never resumed in a new
//! history.

use std::time::Duration;

use binlog_outbox::config::Config;
use binlog_outbox::pipeline::RunOptions;
use mysql_async::prelude::Queryable;

use crate::support::proxy::SwitchProxy;
use crate::support::*;

/// Publishes `events` in transactions of 10 and stops the connector cleanly.
async fn publish_and_stop(env: &TestEnv, config: Config, events: &[TestEvent]) {
    let connector = env.start_connector(config).await;
    let mut conn = env.conn().await;
    for chunk in events.chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(events.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(env).await;
    connector.stop().await.expect("clean shutdown");
}

/// Starts the connector on a fresh checkpoint, publishes `events`, and checks that the
/// stream then holds exactly `expected`.
async fn publish_from_a_fresh_start(env: &TestEnv, events: &[TestEvent], expected: &[TestEvent]) {
    std::fs::remove_file(env.checkpoint_path()).unwrap();
    publish_and_stop(env, env.config(None), events).await;
    assert_exactly_once_in_order(&env.stored_messages().await, expected);
}

fn joined(a: &[TestEvent], b: &[TestEvent]) -> Vec<TestEvent> {
    a.iter().chain(b).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_reset_master_are_published_although_the_stream_holds_the_old_history() {
    let env = TestEnv::start("reset_master").await;
    let old = events(1, 500, 10);
    publish_and_stop(&env, env.config(None), &old).await;
    env.exec_root("RESET MASTER").await;
    // The purge hint's advice: move the checkpoint away, start again (at `latest`).
    let new = events(501, 300, 10);
    publish_from_a_fresh_start(&env, &new, &joined(&old, &new)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_from_before_reset_master_stops_the_connector_instead_of_resuming() {
    let env = TestEnv::start("reset_checkpoint").await;
    let old = events(1, 100, 10);
    publish_and_stop(&env, env.config(None), &old).await;
    let checkpoint = std::fs::read_to_string(env.checkpoint_path()).unwrap();
    env.exec_root("RESET MASTER").await;
    // The new history grows past the checkpoint's offset.
    let new = events(101, 300, 10);
    let mut conn = env.conn().await;
    for chunk in new.chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    let msg = InProcess::start(env.config(None))
        .failure()
        .await
        .to_string();
    assert!(
        msg.contains("is not the history the checkpoint was written from"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(env.checkpoint_path()).unwrap(),
        checkpoint,
        "left as found"
    );
    assert_eq!(env.message_count().await, 100, "nothing of the new history");

    // What the hint says: start the new history from its beginning.
    let toml = env
        .config_toml(None)
        .replace("start = \"latest\"", "start = \"earliest\"");
    let connector = InProcess::start_with(
        env.config_from(&toml),
        RunOptions {
            reset_checkpoint: true,
        },
    );
    env.wait_for_count(400, Duration::from_secs(60)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &joined(&old, &new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_recreated_on_the_same_port_is_not_mistaken_for_the_old_one() {
    let mut env = TestEnv::start("recreated_in_place").await;
    let old = events(1, 200, 10);
    publish_and_stop(&env, env.config(None), &old).await;
    let uid = env.server_uid().await;
    env.recreate_database().await;
    assert_eq!(
        env.server_uid().await,
        uid,
        "same host and port: the identity alone cannot tell the servers apart"
    );

    let msg = InProcess::start(env.config(None))
        .failure()
        .await
        .to_string();
    assert!(
        msg.contains("is not the history the checkpoint was written from")
            || msg.contains("cannot serve the requested binlog position"),
        "{msg}"
    );
    let new = events(201, 60, 10);
    publish_from_a_fresh_start(&env, &new, &joined(&old, &new)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_log_bin_basename_skips_nothing_of_the_new_files() {
    let mut env = TestEnv::start("basename").await;
    let old = events(1, 200, 10);
    publish_and_stop(&env, env.config(None), &old).await;
    // "binlog.*" sorts before "mariadb-bin.*": compared with the old positions, every new
    // event would look older than the stream's last message.
    env.db.restart_with(&["--log-bin=binlog"]);
    let new = events(201, 60, 10);
    publish_from_a_fresh_start(&env, &new, &joined(&old, &new)).await;
    assert!(
        env.checkpoint().position.file.starts_with("binlog."),
        "{:?}",
        env.checkpoint()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_that_reaches_a_promoted_replica_fails_over_by_gtid() {
    let env = TestEnv::start("failover_vip").await;
    env.exec_root(
        "CREATE USER repl@'%' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO repl@'%';
         FLUSH BINARY LOGS; FLUSH BINARY LOGS",
    )
    .await;
    // The replica's binlog positions are lower than the primary's (no flushes there).
    let replica = MariaDb::start_with(2, &["--log-slave-updates=ON"]);
    let mut replica_root = mysql_async::Conn::from_url(replica.root_url())
        .await
        .unwrap();
    replica_root
        .query_drop(format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl',
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE",
            env.db.port
        ))
        .await
        .unwrap();

    // source.url is a stable address in front of the primary.
    let vip = SwitchProxy::start(env.db.port).await;
    let toml = env.config_toml(None).replace(
        &env.db.url_for("cdc", CDC_PASSWORD),
        &vip.mysql_url("cdc", CDC_PASSWORD),
    );
    let connector = env.start_connector(env.config_from(&toml)).await;
    let before = events(1, 100, 5);
    let mut primary = env.conn().await;
    for chunk in before.chunks(10) {
        insert_tx(&mut primary, chunk, true).await;
    }
    env.wait_for_count(100, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    let outbox = format!("{}.outbox", env.schema);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Until replication has created the table, the count fails (1146): wait on.
        let n: Option<u64> = replica_root
            .query_first(format!("SELECT COUNT(*) FROM {outbox}"))
            .await
            .unwrap_or(None);
        if n == Some(100) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never caught up: {n:?} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Promote the replica and move the address to it.
    replica_root
        .query_drop("STOP SLAVE; RESET SLAVE ALL")
        .await
        .unwrap();
    vip.switch_to(replica.port);
    let after = events(101, 50, 5);
    let mut promoted =
        mysql_async::Conn::from_url(format!("{}/{}", replica.root_url(), env.schema))
            .await
            .unwrap();
    for chunk in after.chunks(10) {
        insert_tx(&mut promoted, chunk, true).await;
    }
    env.wait_for_count(150, Duration::from_secs(60)).await;
    let replica_uid: Option<String> = replica_root
        .query_first("SELECT @@server_uid")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.checkpoint().server != replica_uid {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint stamped with the promoted server: {:?}",
            env.checkpoint()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &joined(&before, &after));
    let messages = env.stored_messages().await;
    assert_eq!(
        Some(messages[149].header("Outbox-Source-Server").to_owned()),
        replica_uid
    );
}
