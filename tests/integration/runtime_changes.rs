//! Server settings changed while the connector runs. Compressed binlog events are decoded
//! (nothing skipped); statement-format inserts into an outbox table and settings that make
//! row events unreadable stop the connector at once, naming the position or the setting,
//! with nothing checkpointed past them.

use std::time::Duration;

use binlog_outbox::error::{Error, SourceError};
use mysql_async::prelude::Queryable;

use crate::support::*;

/// Every row event compressed: MariaDB compresses events above `log_bin_compress_min_len`
/// (10 is its minimum), so even small outbox rows take the compressed path.
const COMPRESS_ALL: &str =
    "SET GLOBAL log_bin_compress = ON; SET GLOBAL log_bin_compress_min_len = 10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_bin_compress_switched_on_while_running_loses_nothing() {
    let env = TestEnv::start("compress_live").await;
    let connector = env.start_connector(env.config(None)).await;
    let all = events(1, 300, 7);
    let mut conn = env.conn().await;
    for chunk in all[..50].chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(50, Duration::from_secs(30)).await;

    env.exec_root(COMPRESS_ALL).await;
    // log_bin_compress is read per statement: a new connection is not needed, but use one.
    let mut conn = env.conn().await;
    for (i, chunk) in all[50..250].chunks(20).enumerate() {
        insert_tx(&mut conn, chunk, i % 2 == 0).await;
    }
    // A long DDL statement is compressed too (QUERY_COMPRESSED): it must end its group.
    conn.query_drop(format!(
        "CREATE TABLE other (a INT) COMMENT '{}'",
        "x".repeat(300)
    ))
    .await
    .unwrap();
    env.exec_root("SET GLOBAL log_bin_compress = OFF").await;
    for chunk in all[250..].chunks(25) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_compressed_from_the_start_is_read_like_any_other() {
    let env = TestEnv::start_with(
        "compress_start",
        &["--log-bin-compress=ON", "--log-bin-compress-min-len=10"],
    )
    .await;
    let (code, out, _) = run_binary(
        &[
            "check",
            "--config",
            env.write_config("c.toml", &env.config_toml(None))
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("log_bin_compress: ON (compressed events are decoded)"),
        "{out}"
    );
    let connector = env.start_connector(env.config(None)).await;
    let all = events(1, 100, 5);
    let mut conn = env.conn().await;
    for chunk in all.chunks(10) {
        insert_tx(&mut conn, chunk, true).await;
    }
    env.wait_for_count(100, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_format_switched_to_statement_stops_at_the_first_outbox_insert_it_cannot_read() {
    let env = TestEnv::start("statement_live").await;
    let connector = env.start_connector(env.config(None)).await;
    let good = events(1, 10, 2);
    insert_tx(&mut env.conn().await, &good, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let before = wait_for_checkpoint_at_end(&env).await;

    env.exec_root("SET GLOBAL binlog_format = 'STATEMENT'")
        .await;
    // binlog_format is taken per session at connect: a new session writes statements.
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &events(11, 5, 2), true).await;
    let err = connector.failure().await;
    assert!(
        matches!(&err, Error::Source(e) if matches!(**e, SourceError::StatementFormat { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("statement-format write at mariadb-bin.") && msg.contains("binlog_format"),
        "{msg}"
    );
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before);
    assert_eq!(env.message_count().await, 10, "nothing after it");

    // With the setting fixed, a restart stops there again: the statement was not skipped.
    env.exec_root("SET GLOBAL binlog_format = 'ROW'").await;
    let again = InProcess::start(env.config(None))
        .failure()
        .await
        .to_string();
    assert!(again.contains("statement-format write"), "{again}");
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_again_on_every_reconnect() {
    let env = TestEnv::start("settings_reconnect").await;
    let connector = env.start_connector(env.config(None)).await;
    let good = events(1, 10, 2);
    insert_tx(&mut env.conn().await, &good, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let before = wait_for_checkpoint_at_end(&env).await;

    env.exec_root("SET GLOBAL binlog_row_image = 'MINIMAL'")
        .await;
    kill_binlog_dumps(&env).await;
    let msg = connector.failure().await.to_string();
    assert!(
        msg.contains("settings changed") && msg.contains("binlog_row_image"),
        "{msg}"
    );
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before);
}

/// Kills the server side of every binlog dump connection (as a network failure would).
async fn kill_binlog_dumps(env: &TestEnv) {
    let mut root = env.root_conn().await;
    let ids: Vec<u64> = root
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        .await
        .unwrap();
    assert!(!ids.is_empty(), "the connector is reading the binlog");
    for id in ids {
        let _ = root.query_drop(format!("KILL {id}")).await;
    }
}
