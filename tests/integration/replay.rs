//! `binlog-outbox replay`: outbox rows from binlog files on disk, written by the test MariaDB,
//! published with the ids and positions the live connector gives them; a second replay
//! stores nothing twice. With `binlog_row_metadata = MINIMAL` the column names come from the
//! configured database.

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

/// The server's binlog files, in order, after closing the current one.
async fn binlog_files(env: &TestEnv) -> Vec<PathBuf> {
    env.exec_root("FLUSH BINARY LOGS").await;
    let mut conn = env.root_conn().await;
    let datadir: String = conn.query_first("SELECT @@datadir").await.unwrap().unwrap();
    let logs: Vec<(String, u64)> = conn
        .query("SHOW BINARY LOGS")
        .await
        .unwrap()
        .into_iter()
        .map(|row: mysql_async::Row| (row.get(0).unwrap(), 0))
        .collect();
    conn.disconnect().await.unwrap();
    logs.into_iter()
        .map(|(name, _)| PathBuf::from(&datadir).join(name))
        .collect()
}

/// (id, position, checksum) of each message, in stream order.
fn identities(messages: &[StoredMessage]) -> Vec<(String, String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m.header("Nats-Msg-Id").to_owned(),
                m.header("Outbox-Source-Position").to_owned(),
                m.header("Outbox-Source-Checksum").to_owned(),
            )
        })
        .collect()
}

fn replay_binary(config: &std::path::Path, files: &[PathBuf]) -> String {
    let mut args = vec![
        "replay".to_owned(),
        "--config".into(),
        config.display().to_string(),
        "--binlog".into(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_binary(&args, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    out
}

async fn replays_like_the_live_path(env: TestEnv) {
    let expected = events(1, 7, 3);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &expected[..4], true).await;
    env.exec_root("FLUSH BINARY LOGS").await;
    insert_tx(&mut conn, &expected[4..], false).await;
    let files = binlog_files(&env).await;
    assert!(files.len() >= 2, "{files:?}");

    let config = env.write_config("replay.toml", &env.config_toml(None));
    let out = replay_binary(&config, &files);
    assert!(
        out.contains("replayed 7 events") && out.contains("7 stored"),
        "{out}"
    );
    let replayed = env.stored_messages().await;
    assert_exactly_once_in_order(&replayed, &expected);
    let again = replay_binary(&config, &files);
    assert!(
        again.contains("0 stored, 7 already in the stream"),
        "{again}"
    );
    assert_eq!(
        env.message_count().await,
        7,
        "a second replay stores nothing"
    );

    // The live connector, from the oldest binlog into another stream (other subjects: streams
    // cannot share them): the same messages.
    let live_stream = format!("{}_LIVE", env.stream);
    let live_outbox = format!(
        "[[outbox]]\ntable = \"{}.outbox\"\nsubject = \"live.{{aggregatetype}}\"\ndead_letter_subject = \"live.deadletter\"\n",
        env.schema
    );
    let toml = env
        .config_toml(Some(&live_outbox))
        .replace("start = \"latest\"", "start = \"earliest\"")
        .replace(
            &format!("stream = \"{}\"", env.stream),
            &format!("stream = \"{live_stream}\""),
        );
    let connector = env.start_connector(env.config_from(&toml)).await;
    let start = std::time::Instant::now();
    while env.stored_messages_in(&live_stream).await.len() < 7 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "live events missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connector.stop().await.expect("clean shutdown");
    let live = env.stored_messages_in(&live_stream).await;
    assert_eq!(identities(&replayed), identities(&live));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_binlog_files_publish_the_live_ids_and_positions_once() {
    replays_like_the_live_path(TestEnv::start("replay").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_without_column_names_replay_with_names_from_the_configured_database() {
    let env = TestEnv::start_with("replay_minimal", &["--binlog-row-metadata=MINIMAL"]).await;
    replays_like_the_live_path(env).await;
}
