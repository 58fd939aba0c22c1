//! Failures around the connector: servers restarting, purged binlogs, schema changes,
//! oversized events. Transient ones are retried without loss; the others stop with a hint.

use std::time::Duration;

use binlog_outbox::error::{Error, Policy, PublishError, SourceError};
use mysql_async::prelude::Queryable;

use crate::support::*;

/// Commits `events` in transactions of 10, retrying each transaction until the server takes it
/// (the server may be restarting).
async fn insert_resiliently(url: String, events: Vec<TestEvent>) {
    for chunk in events.chunks(10) {
        loop {
            let attempt = async {
                let mut conn = mysql_async::Conn::from_url(url.clone()).await?;
                insert_tx_checked(&mut conn, chunk).await?;
                conn.disconnect().await
            };
            if attempt.await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn insert_tx_checked(
    conn: &mut mysql_async::Conn,
    events: &[TestEvent],
) -> mysql_async::Result<()> {
    let values: Vec<String> = events.iter().map(TestEvent::sql_values).collect();
    conn.query_drop(format!(
        "START TRANSACTION; INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}; COMMIT",
        values.join(",")
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_nats_restarts_mid_stream_lose_nothing_and_store_nothing_twice() {
    let mut env = TestEnv::start("server_restarts").await;
    let connector = env.start_connector(env.config(None)).await;
    let url = format!("{}/{}", env.db.root_url(), env.schema);
    let all = events(1, 1_500, 10);

    insert_resiliently(url.clone(), all[..500].to_vec()).await;
    env.wait_for_count(200, Duration::from_secs(30)).await;
    env.db.restart();
    insert_resiliently(url.clone(), all[500..1_000].to_vec()).await;
    env.wait_for_count(800, Duration::from_secs(60)).await;
    env.nats.restart();
    insert_resiliently(url, all[1_000..].to_vec()).await;

    env.wait_for_count(all.len() as u64, Duration::from_secs(90))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector
        .stop()
        .await
        .expect("clean shutdown after recovering");
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_in_purged_binlogs_is_fatal_with_a_hint_instead_of_a_silent_jump() {
    let env = TestEnv::start("purged").await;
    let connector = env.start_connector(env.config(None)).await;
    connector.stop().await.unwrap();
    let saved = checkpoint_position(&env.checkpoint_path());

    let mut conn = env.conn().await;
    insert_tx(&mut conn, &events(1, 5, 1), true).await;
    env.exec_root("FLUSH BINARY LOGS").await;
    let current = master_position(&env).await;
    purge_to(&env, &current.file).await;

    let err = InProcess::start(env.config(None)).failure().await;
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Source(ref e) if matches!(**e, SourceError::BinlogUnavailable { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&saved.to_string()),
        "names the position: {msg}"
    );
    assert!(matches!(err.policy(), Policy::Fatal { hint } if hint.contains("earliest")));
    assert_eq!(
        checkpoint_position(&env.checkpoint_path()),
        saved,
        "checkpoint untouched"
    );
    assert_eq!(env.message_count().await, 0);
}

/// Purges every binlog before `file`. The server keeps files that a replica still reads, and
/// a stopped connector's dump thread lingers until its next heartbeat: kill those first.
async fn purge_to(env: &TestEnv, file: &str) {
    let mut c = env.root_conn().await;
    let start = std::time::Instant::now();
    loop {
        let dumps: Vec<u64> = c
            .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
            .await
            .unwrap();
        for id in dumps {
            let _ = c.query_drop(format!("KILL {id}")).await;
        }
        c.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .unwrap();
        let logs: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        if logs.iter().all(|(name, _)| name.as_str() >= file) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "binlogs not purged: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_column_mid_stream_keeps_events_correct_and_dropping_a_mapped_one_stops() {
    let env = TestEnv::start("schema_change").await;
    let connector = env.start_connector(env.config(None)).await;
    let e = events(1, 30, 3);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    // New first column: every mapped column moves one position to the right.
    env.exec("ALTER TABLE outbox ADD COLUMN tenant INT NOT NULL DEFAULT 7 FIRST")
        .await;
    insert_tx(&mut conn, &e[10..20], true).await;
    env.exec("ALTER TABLE outbox MODIFY aggregateid VARCHAR(1000) NOT NULL")
        .await;
    insert_tx(&mut conn, &e[20..], false).await;
    env.wait_for_count(30, Duration::from_secs(30)).await;
    assert_exactly_once_in_order(&env.stored_messages().await, &e);

    let before = master_position(&env).await;
    env.exec("ALTER TABLE outbox DROP COLUMN type").await;
    let after_drop = master_position(&env).await;
    conn.query_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, payload) VALUES (UNHEX('e700000000000000000000000000ffff'), 'User', 'u', '{}')",
    )
    .await
    .unwrap();
    let msg = connector.failure().await.to_string();
    assert!(
        msg.contains("`type`") && msg.contains("schema_change.outbox"),
        "{msg}"
    );
    let saved = checkpoint_position(&env.checkpoint_path());
    assert!(
        saved >= before && saved <= after_drop,
        "checkpoint {saved} must not pass the failing row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_above_max_payload_stops_naming_it_before_checkpointing_past_it() {
    let env = TestEnv::start("too_large").await;
    let connector = env.start_connector(env.config(None)).await;
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &events(1, 3, 1), false).await;
    let before = master_position(&env).await;
    let huge = format!(
        "{{\"blob\": \"{}\"}}",
        "y".repeat(crate::support::servers::NATS_MAX_PAYLOAD + 1024)
    );
    conn.exec_drop(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (UNHEX('e70000000000000000000000000000aa'), 'User', 'u', 'Huge', ?)",
        (huge,),
    )
    .await
    .unwrap();
    let err = connector.failure().await;
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Publish(ref e) if matches!(**e, PublishError::TooLarge { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("e7000000-0000-0000-0000-0000000000aa") && msg.contains("max_payload"),
        "{msg}"
    );
    assert_eq!(env.message_count().await, 3);
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_connection_and_a_frozen_server_is_detected_and_reconnected() {
    let mut env = TestEnv::start("heartbeat").await;
    let toml = env.config_toml(None).replace(
        "server_id = 4201\n",
        "server_id = 4201\nheartbeat_ms = 500\nconnect_timeout_ms = 1000\n",
    );
    let config = env.write_config("c.toml", &toml);
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;
    let e = events(1, 20, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;

    // Idle for ten heartbeat periods: heartbeats must keep the connection (a connection silent
    // for two periods would be dropped and reconnected).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !idle_log.contains("presumed dead"),
        "idle connection was dropped:\n{idle_log}"
    );
    assert_eq!(idle_log.matches("reading binlog").count(), 1, "{idle_log}");

    // A frozen server sends no heartbeats: detected, then reconnected once it thaws.
    env.db.signal("-STOP");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("presumed dead")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "frozen server never detected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.db.signal("-CONT");
    drop(conn);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[10..], false).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_started_while_nats_is_down_waits_for_it_and_loses_nothing() {
    let mut env = TestEnv::start("nats_down").await;
    env.nats.stop();
    let connector = InProcess::start(env.config(None));
    // The start position is saved before NATS is needed, so what commits now is not skipped.
    wait_for_file(&env.checkpoint_path()).await;
    let e = events(1, 40, 4);
    let mut conn = env.conn().await;
    for chunk in e.chunks(8) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.nats.start_again();
    env.wait_for_count(40, Duration::from_secs(60)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_frozen_longer_than_the_ack_timeout_is_survived_in_order() {
    let mut env = TestEnv::start("nats_frozen").await;
    let connector = env.start_connector(env.config(None)).await;
    let e = events(1, 600, 6);
    let mut conn = env.conn().await;
    for chunk in e[..300].chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(100, Duration::from_secs(30)).await;
    // Longer than ack_timeout_ms (2 s): publishes in flight end with "outcome unknown".
    env.nats.signal("-STOP");
    for chunk in e[300..].chunks(10) {
        insert_tx(&mut conn, chunk, false).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.nats.signal("-CONT");
    env.wait_for_count(600, Duration::from_secs(90)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}
