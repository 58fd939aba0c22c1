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
    let end = master_position(&env).await;
    wait_until_checkpoint(&env, &end).await;
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

/// Waits until the checkpoint file reaches `target`.
async fn wait_until_checkpoint(env: &TestEnv, target: &binlog_outbox::position::BinlogPosition) {
    let start = std::time::Instant::now();
    loop {
        if env.checkpoint_path().exists() && checkpoint_position(&env.checkpoint_path()) >= *target
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "checkpoint never reached {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connector_on_the_same_checkpoint_refuses_to_start() {
    let env = TestEnv::start("second_instance").await;
    let first = InProcess::start(env.config(None));
    wait_for_file(&env.checkpoint_path()).await;
    let msg = InProcess::start(env.config(None))
        .join(Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("in use by another binlog-outbox"), "{msg}");
    // The first one is unaffected.
    let e = events(1, 5, 1);
    insert_tx(&mut env.conn().await, &e, true).await;
    env.wait_for_count(5, Duration::from_secs(30)).await;
    first.stop().await.expect("clean shutdown");
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}
