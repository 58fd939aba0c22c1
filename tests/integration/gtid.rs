//! GTID positions: the checkpoint records MariaDB's GTID position and the connector resumes by
//! GTID, so it can be pointed at a promoted replica whose binlog files differ.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::*;

async fn query_one(url: &str, sql: &str) -> String {
    let mut c = mysql_async::Conn::from_url(url).await.unwrap();
    let v: Option<String> = c.query_first(sql).await.unwrap();
    c.disconnect().await.unwrap();
    v.unwrap_or_default()
}

async fn wait_for_rows(url: &str, table: &str, n: usize) {
    let start = Instant::now();
    loop {
        let count = query_one(url, &format!("SELECT COUNT(*) FROM {table}")).await;
        if count.parse::<usize>().unwrap_or(0) >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replica has {count} of {n} rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_resumes_by_gtid_on_a_replica_whose_binlog_files_differ() {
    let env = TestEnv::start("failover").await;
    env.exec_root(
        "CREATE USER repl@'%' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO repl@'%'",
    )
    .await;
    let replica = MariaDb::start_with(2, &["--log-slave-updates=ON"]);
    let replica_root = replica.root_url();
    {
        let mut c = mysql_async::Conn::from_url(replica_root.clone())
            .await
            .unwrap();
        // Different file names and positions than the primary's.
        c.query_drop("FLUSH BINARY LOGS; FLUSH BINARY LOGS; FLUSH BINARY LOGS")
            .await
            .unwrap();
        c.query_drop(format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl',
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE",
            env.db.port
        ))
        .await
        .unwrap();
    }

    let all = events(1, 300, 6);
    let connector = env.start_connector(env.config(None)).await;
    let mut primary = env.conn().await;
    for chunk in all[..100].chunks(10) {
        insert_tx(&mut primary, chunk, true).await;
    }
    env.wait_for_count(100, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    let checkpoint = env.checkpoint();
    let primary_gtid = query_one(&env.db.root_url(), "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        checkpoint.gtid.as_ref().map(ToString::to_string),
        Some(primary_gtid),
        "the checkpoint records the GTID position"
    );

    // Written while the connector is down; the replica receives it too.
    for chunk in all[100..200].chunks(10) {
        insert_tx(&mut primary, chunk, false).await;
    }
    let outbox = format!("{}.outbox", env.schema);
    wait_for_rows(&replica_root, &outbox, 200).await;
    let replica_file = query_one(&replica_root, "SELECT @@log_bin_basename").await;
    assert!(!replica_file.is_empty());

    // Fail over: the same checkpoint, the replica's URL.
    let toml = env.config_toml(None).replace(
        &env.db.url_for("cdc", CDC_PASSWORD),
        &replica.url_for("cdc", CDC_PASSWORD),
    );
    let connector = InProcess::start(env.config_from(&toml));
    env.wait_for_count(200, Duration::from_secs(30)).await;
    for chunk in all[200..].chunks(10) {
        insert_tx(&mut primary, chunk, true).await;
    }
    env.wait_for_count(300, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
    let after = checkpoint_position(&env.checkpoint_path());
    assert_eq!(
        after.file, "mariadb-bin.000004",
        "now follows the replica's own files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_a_mariadb_gtid_position_publishes_only_what_follows_it() {
    let env = TestEnv::start("gtid_start").await;
    let e = events(1, 20, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    let gtid = query_one(&env.db.root_url(), "SELECT @@gtid_binlog_pos").await;
    insert_tx(&mut conn, &e[10..], false).await;
    let toml = env
        .config_toml(None)
        .replace("start = \"latest\"", &format!("start = \"{gtid}\""));
    let connector = InProcess::start(env.config_from(&toml));
    env.wait_for_count(10, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e[10..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_wins_over_source_start_unless_reset_is_asked_for() {
    let env = TestEnv::start("reset").await;
    let e = events(1, 30, 3);
    let connector = env.start_connector(env.config(None)).await;
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();

    // Committed while stopped; then the operator points source.start past it.
    insert_tx(&mut conn, &e[10..20], true).await;
    let after_skipped =
        binlog_outbox::position::BinlogPosition::to_string(&master_position(&env).await);
    let toml = env.config_toml(None).replace(
        "start = \"latest\"",
        &format!("start = \"{after_skipped}\""),
    );
    let options = binlog_outbox::pipeline::RunOptions {
        reset_checkpoint: true,
    };
    let connector = InProcess::start_with(env.config_from(&toml), options);
    let start = Instant::now();
    while checkpoint_position(&env.checkpoint_path()).to_string() != after_skipped {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "checkpoint not reset"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    insert_tx(&mut conn, &e[20..], true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();
    let expected: Vec<TestEvent> = e[..10].iter().chain(&e[20..]).cloned().collect();
    assert_exactly_once_in_order(&env.stored_messages().await, &expected);
}
