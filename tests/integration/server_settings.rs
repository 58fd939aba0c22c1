//! Server settings the source must cope with or refuse: row metadata, checksums; and the
//! start positions used when there is no checkpoint. (Settings changed while the connector
//! runs: `runtime_changes`.)

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_full_row_metadata_column_names_come_from_information_schema_with_a_warning() {
    let env = TestEnv::start_with("minimal_meta", &["--binlog-row-metadata=MINIMAL"]).await;
    let config = env.write_config("c.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;
    let e = events(1, 20, 4);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e, true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("binlog_row_metadata") && log.contains("preflight warning"),
        "{log}"
    );
    assert!(log.contains("using information_schema"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_without_checksums_is_followed_with_correct_positions() {
    let env = TestEnv::start_with("no_checksum", &["--binlog-checksum=NONE"]).await;
    let connector = env.start_connector(env.config(None)).await;
    let e = events(1, 50, 5);
    let mut conn = env.conn().await;
    for chunk in e.chunks(10) {
        insert_tx(&mut conn, chunk, false).await;
    }
    env.wait_for_count(50, Duration::from_secs(30)).await;
    let end = master_position(&env).await;
    connector.stop().await.expect("clean shutdown");
    assert_eq!(checkpoint_position(&env.checkpoint_path()), end);
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_earliest_publishes_events_committed_before_the_first_start() {
    let env = TestEnv::start("earliest").await;
    let e = events(1, 30, 3);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    env.exec_root("FLUSH BINARY LOGS").await;
    insert_tx(&mut conn, &e[10..], false).await;
    let toml = env
        .config_toml(None)
        .replace("start = \"latest\"", "start = \"earliest\"");
    let connector = InProcess::start(env.config_from(&toml));
    env.wait_for_count(30, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
    assert_eq!(
        checkpoint_position(&env.checkpoint_path()).file,
        "mariadb-bin.000002"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_an_explicit_position_skips_what_came_before_it() {
    let env = TestEnv::start("explicit").await;
    let e = events(1, 20, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    let from = master_position(&env).await;
    insert_tx(&mut conn, &e[10..], true).await;
    let toml = env
        .config_toml(None)
        .replace("start = \"latest\"", &format!("start = \"{from}\""));
    let connector = InProcess::start(env.config_from(&toml));
    env.wait_for_count(10, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e[10..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_when_binlogs_are_purged_sooner_than_a_day() {
    let env = TestEnv::start_with("retention", &["--binlog-expire-logs-seconds=3600"]).await;
    let config = env.write_config("c.toml", &env.config_toml(None));
    let (code, out, err) = run_binary(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "a warning does not fail the check: {out}{err}");
    assert!(
        out.contains("[WARN] binlog retention") && out.contains("3600 s"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_map_without_column_names_after_ones_with_names_is_an_error_not_a_guess() {
    let env = TestEnv::start("names_dropped").await;
    let connector = env.start_connector(env.config(None)).await;
    let e = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..5], true).await;
    env.wait_for_count(5, Duration::from_secs(30)).await;
    let before = master_position(&env).await;
    env.exec_root("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        .await;
    // A new session picks up the new setting.
    insert_tx(&mut env.conn().await, &e[5..], true).await;
    let msg = connector.failure().await.to_string();
    assert!(
        msg.contains("no column names") && msg.contains("names_dropped.outbox"),
        "{msg}"
    );
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before);
    assert_eq!(env.message_count().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_outbox_still_advances_the_checkpoint_past_other_tables_writes() {
    let env = TestEnv::start("idle_progress").await;
    env.exec("CREATE TABLE other (id INT PRIMARY KEY)").await;
    let connector = env.start_connector(env.config(None)).await;
    let start = checkpoint_position(&env.checkpoint_path());
    let mut conn = env.conn().await;
    let began = std::time::Instant::now();
    let mut i = 0;
    // Other tables keep the binlog busy; the outbox gets nothing.
    loop {
        mysql_async::prelude::Queryable::query_drop(
            &mut conn,
            format!("INSERT INTO other VALUES ({i})"),
        )
        .await
        .unwrap();
        i += 1;
        if checkpoint_position(&env.checkpoint_path()) > start {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "checkpoint stuck at {start}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.stop().await.expect("clean shutdown");
    assert_eq!(env.message_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_of_other_tables_writes_the_idle_checkpoint_reaches_the_binlog_end() {
    let env = TestEnv::start("idle_end").await;
    env.exec("CREATE TABLE other (id INT PRIMARY KEY)").await;
    let toml = env.config_toml(None).replace(
        "server_id = 4201\n",
        "server_id = 4201\nheartbeat_ms = 300\n",
    );
    let connector = env.start_connector(env.config_from(&toml)).await;
    // Past the idle interval, so that the burst's first transaction is reported and the
    // rest (within a second of it) are not: only a heartbeat can report them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut conn = env.conn().await;
    for i in 0..20 {
        mysql_async::prelude::Queryable::query_drop(
            &mut conn,
            format!("INSERT INTO other VALUES ({i})"),
        )
        .await
        .unwrap();
    }
    let end = wait_for_checkpoint_at_end(&env).await;
    assert_eq!(checkpoint_position(&env.checkpoint_path()), end);
    connector.stop().await.expect("clean shutdown");
    assert_eq!(env.message_count().await, 0);
}
