//! The crash paths: a checkpoint that can no longer be saved, and a server that stops
//! answering between the handshake and the binlog stream. Each ends in a clear error or a
//! retry, never in a connector that runs on blind or hangs.

use std::time::{Duration, Instant};

use binlog_outbox::error::Error;

use crate::support::proxy::SwitchProxy;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_be_saved_stops_the_connector_naming_the_path_and_the_os_error() {
    let env = TestEnv::start("save_fails").await;
    let connector = env.start_connector(env.config(None)).await;
    let first = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &first, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let saved = wait_for_checkpoint_at_end(&env).await;

    // The save's temp file path taken by a directory: the write fails with EISDIR, for root
    // too (CI runs as root, where permissions would not stop it).
    let tmp = env
        .checkpoint_path()
        .with_file_name(".connector.checkpoint.tmp");
    std::fs::create_dir(&tmp).unwrap();
    insert_tx(&mut conn, &events(11, 10, 2), true).await;
    let err = connector.failure().await;
    assert!(matches!(err, Error::Checkpoint(_)), "{err}");
    let msg = binlog_outbox::error::error_chain(&err);
    assert!(
        msg.contains(&env.checkpoint_path().display().to_string())
            && msg.contains("Is a directory"),
        "{msg}"
    );
    assert_eq!(checkpoint_position(&env.checkpoint_path()), saved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_silent_after_the_handshake_is_retried_and_sigterm_still_ends_the_connector() {
    let env = TestEnv::start("stalled").await;
    let proxy = SwitchProxy::start(env.db.port).await;
    let toml = env
        .config_toml(None)
        .replace(
            &env.db.url_for("cdc", CDC_PASSWORD),
            &proxy.mysql_url("cdc", CDC_PASSWORD),
        )
        .replace(
            "start = \"latest\"\n",
            "start = \"latest\"\nheartbeat_ms = 500\nconnect_timeout_ms = 1000\n",
        )
        .replace(
            "[checkpoint]",
            "[shutdown]\ntimeout_ms = 3000\n\n[checkpoint]",
        );
    let config = env.write_config("c.toml", &toml);
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let first = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &first, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;

    // Reconnections now pass the handshake and the first queries, then hear nothing once
    // the connector sets up its replica session.
    proxy.stall_when_client_sends(Some("@master_heartbeat_period"));
    proxy.break_connections();
    // Each attempt gives up after two heartbeat periods and is retried.
    wait_for_log(&log, "got no answer within 1000 ms", 2).await;
    let second = events(11, 10, 2);
    insert_tx(&mut conn, &second, true).await;

    let asked = Instant::now();
    let status = connector.terminate();
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_millis(3000),
        "SIGTERM ends the connector within shutdown.timeout_ms, took {:?}",
        asked.elapsed()
    );

    // Once the server answers again, nothing is missing.
    proxy.stall_when_client_sends(None);
    let connector = Binary::start(&config, &log);
    env.wait_for_count(20, Duration::from_secs(30)).await;
    assert!(connector.terminate().success());
    let all: Vec<TestEvent> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}
