//! Restarts: abrupt (kill -9) and graceful (SIGTERM). Nothing lost, nothing stored twice.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connector_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let env = TestEnv::start("restart_kill").await;
    let config = env.write_config("connector.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let mut connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;

    // A writer commits transactions of 1..=20 rows continuously while we kill and restart.
    let all = events(1, 4_000, 25);
    let writer = {
        let url = format!("{}/{}", env.db.root_url(), env.schema);
        let all = all.clone();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
            let mut rest = &all[..];
            let mut i = 0usize;
            while !rest.is_empty() {
                let size = (1 + (i * 7) % 20).min(rest.len());
                let (tx, tail) = rest.split_at(size);
                insert_tx(&mut conn, tx, i.is_multiple_of(3)).await;
                rest = tail;
                i += 1;
                if i.is_multiple_of(25) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    for kill_at in [500u64, 1_500, 2_500] {
        env.wait_for_count(kill_at, Duration::from_secs(60)).await;
        connector.kill9();
        connector = Binary::start(&config, &log);
    }
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    // Give a wrongly republishing connector the chance to store duplicates before we look.
    wait_for_checkpoint_at_end(&env).await;
    connector.wait_until_reading().await;
    let status = connector.terminate();
    assert!(
        status.success(),
        "exit status {status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_acks_saves_the_checkpoint_and_exits_zero() {
    let env = TestEnv::start("restart_term").await;
    let config = env.write_config("connector.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;

    let first = events(1, 600, 10);
    let mut conn = env.conn().await;
    for chunk in first.chunks(50) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(first.len() as u64, Duration::from_secs(60))
        .await;
    let end = master_position(&env).await;
    let status = connector.terminate();
    assert!(
        status.success(),
        "exit status {status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        checkpoint_position(&env.checkpoint_path()),
        end,
        "after a clean shutdown the checkpoint is the last acknowledged transaction end"
    );

    // Events committed while the connector is down are published after it restarts.
    let second = events(601, 300, 10);
    for chunk in second.chunks(30) {
        insert_tx(&mut conn, chunk, false).await;
    }
    let connector = Binary::start(&config, &log);
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("resuming from checkpoint"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connector_on_the_same_checkpoint_refuses_to_start() {
    let env = TestEnv::start("second_instance").await;
    let first = env.start_connector(env.config(None)).await;
    let msg = InProcess::start(env.config(None))
        .failure()
        .await
        .to_string();
    assert!(msg.contains("in use by another binlog-outbox"), "{msg}");
    // The first one is unaffected.
    let e = events(1, 5, 1);
    insert_tx(&mut env.conn().await, &e, true).await;
    env.wait_for_count(5, Duration::from_secs(30)).await;
    first.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_a_lost_checkpoint_are_not_stored_again_after_the_dedup_window() {
    let env = TestEnv::start("beyond_dedup").await;
    let toml = env.config_toml(None).replace(
        "ack_timeout_ms = 2000\n",
        "ack_timeout_ms = 2000\nduplicate_window_ms = 1000\n",
    );
    let connector = env.start_connector(env.config_from(&toml)).await;
    // The checkpoint as a crash right after these acks would have left it: before them.
    let stale_checkpoint = std::fs::read(env.checkpoint_path()).unwrap();
    let e = events(1, 30, 3);
    let mut conn = env.conn().await;
    for chunk in e[..20].chunks(5) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(20, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();
    std::fs::write(env.checkpoint_path(), stale_checkpoint).unwrap();

    // Let JetStream forget the ids: dedup alone can no longer protect the stream.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let connector = InProcess::start(env.config_from(&toml));
    insert_tx(&mut conn, &e[20..], false).await;
    env.wait_for_count(30, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.unwrap();
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_publishing_into_an_old_stream_skips_nothing() {
    let env = TestEnv::start("recreated").await;
    let first = events(1, 30, 3);
    let connector = env.start_connector(env.config(None)).await;
    let mut conn = env.conn().await;
    for chunk in first.chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(30, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();

    // A fresh server (same server_id, lower binlog positions) and a fresh checkpoint, but the
    // stream keeps its messages: nothing of the new server may be taken as already stored.
    let fresh = MariaDb::start_with(1, &[]);
    let mut root = mysql_async::Conn::from_url(fresh.root_url()).await.unwrap();
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!(
            "CREATE DATABASE recreated; USE recreated; {}; CREATE USER cdc@'%' IDENTIFIED BY '{CDC_PASSWORD}';
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO cdc@'%'; GRANT SELECT ON recreated.* TO cdc@'%'",
            outbox_ddl()
        ),
    )
    .await
    .unwrap();
    std::fs::remove_file(env.checkpoint_path()).unwrap();
    let toml = env.config_toml(None).replace(
        &env.db.url_for("cdc", CDC_PASSWORD),
        &fresh.url_for("cdc", CDC_PASSWORD),
    );
    let connector = env.start_connector(env.config_from(&toml)).await;
    let second = events(31, 5, 1);
    let mut fresh_conn = mysql_async::Conn::from_url(format!("{}/recreated", fresh.root_url()))
        .await
        .unwrap();
    insert_tx(&mut fresh_conn, &second, true).await;
    env.wait_for_count(35, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();
    let all: Vec<TestEvent> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_at_the_start_of_a_rotated_binlog_is_found_again_and_resumed() {
    let env = TestEnv::start("rotated_checkpoint").await;
    let connector = env.start_connector(env.config(None)).await;
    let first = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &first, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    env.exec_root("FLUSH BINARY LOGS").await;
    let new_file = master_position(&env).await.file;
    // With nothing else written, the rotation itself moves the checkpoint, marked by the
    // new file's first event.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.checkpoint().position.file != new_file {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            env.checkpoint()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mark = env.checkpoint().last_event.expect("marked");
    assert_eq!(mark.position.file, new_file);
    connector.stop().await.expect("clean shutdown");

    let connector = env.start_connector(env.config(None)).await;
    let second = events(11, 10, 2);
    insert_tx(&mut conn, &second, false).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    let all: Vec<TestEvent> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}
