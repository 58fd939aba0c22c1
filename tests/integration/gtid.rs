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
    let connector = InProcess::start(env.config(None));
    wait_for_file(&env.checkpoint_path()).await;
    let mut primary = env.conn().await;
    for chunk in all[..100].chunks(10) {
        insert_tx(&mut primary, chunk, true).await;
    }
    env.wait_for_count(100, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    let checkpoint = binlog_outbox::checkpoint::CheckpointStore::load(
        &binlog_outbox::checkpoint::FileCheckpointStore::new(env.checkpoint_path()),
    )
    .unwrap()
    .unwrap();
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
