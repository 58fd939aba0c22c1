//! `binlog-outbox replay`: outbox rows from binlog files on disk, written by the test MariaDB,
//! published with the ids and positions the live connector gives them; a second replay
//! stores nothing twice, also after the duplicate window (the start-up skip), and never skips
//! rows an earlier replay did not store. With `binlog_row_metadata = MINIMAL` the column
//! names come from the configured database. The files are read as one history: an XA
//! transaction prepared in one file and committed in the next is published once, one never
//! ended is reported.

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

/// Runs `binlog-outbox replay`; returns its stdout (it must exit 0).
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
    // The stream's last message is the replay's: the start-up skip leaves all of it out.
    let again = replay_binary(&config, &files);
    assert!(
        again.contains("0 stored, 0 already in the stream, 7 skipped"),
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

/// The test config with a 1 s duplicate window (the shortest the connector takes), into
/// `stream` on subjects `prefix.*`, with or without the order guard.
fn short_window_config(env: &TestEnv, stream: &str, prefix: &str, exclusive: bool) -> String {
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.outbox\"\nsubject = \"{prefix}.{{aggregatetype}}\"\ndead_letter_subject = \"{prefix}.deadletter\"\n",
        env.schema
    );
    env.config_toml(Some(&outbox))
        .replace(
            &format!("stream = \"{}\"", env.stream),
            &format!("stream = \"{stream}\""),
        )
        .replace(
            "ack_timeout_ms = 2000",
            &format!(
                "ack_timeout_ms = 2000\nduplicate_window_ms = 1000\nexclusive_streams = {exclusive}"
            ),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_duplicate_window_skips_what_an_earlier_replay_stored_and_publishes_the_rest()
 {
    let env = TestEnv::start("replay_skip").await;
    let expected = events(1, 9, 3);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &expected[..4], true).await;
    env.exec_root("FLUSH BINARY LOGS").await;
    insert_tx(&mut conn, &expected[4..7], false).await;
    let files = binlog_files(&env).await;

    let skipping = env.write_config(
        "skip.toml",
        &short_window_config(&env, &env.stream, "outbox.event", true),
    );
    let first = replay_binary(&skipping, &files);
    assert!(first.contains("7 stored"), "{first}");
    // The control: the same replay without the order guard (no start-up skip), into a
    // stream of its own, is run again until the dedup window has passed for it: then it
    // stores everything a second time. The guarded stream's ids are older still.
    let control_stream = format!("{}_CONTROL", env.stream);
    let control = env.write_config(
        "control.toml",
        &short_window_config(&env, &control_stream, "control", false),
    );
    let out = replay_binary(&control, &files);
    assert!(
        out.contains("7 stored") && out.contains("nats.exclusive_streams is off"),
        "{out}"
    );
    let start = std::time::Instant::now();
    while env.stored_messages_in(&control_stream).await.len() < 14 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the control's duplicate window never passed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        replay_binary(&control, &files);
    }

    let again = replay_binary(&skipping, &files);
    assert!(
        again.contains("0 stored, 0 already in the stream, 7 skipped"),
        "{again}"
    );
    assert!(
        again.contains("already stored by an earlier replay"),
        "{again}"
    );
    assert_exactly_once_in_order(&env.stored_messages().await, &expected[..7]);

    // Rows after the stream's last message are published; those before it still skipped.
    insert_tx(&mut conn, &expected[7..], true).await;
    let files = binlog_files(&env).await;
    let more = replay_binary(&skipping, &files);
    assert!(
        more.contains("replayed 9 events")
            && more.contains("2 stored, 0 already in the stream, 7 skipped"),
        "{more}"
    );
    assert_exactly_once_in_order(&env.stored_messages().await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_earlier_files_after_a_replay_of_later_ones_publishes_the_earlier_rows() {
    let env = TestEnv::start("replay_earlier").await;
    let expected = events(1, 6, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &expected[..3], true).await;
    // From the file the later rows go to on.
    let before = binlog_files(&env).await;
    insert_tx(&mut conn, &expected[3..], true).await;
    let files = binlog_files(&env).await;
    let later = &files[before.len() - 1..];

    let config = env.write_config("replay.toml", &env.config_toml(None));
    let out = replay_binary(&config, later);
    assert!(
        out.contains("replayed 3 events") && out.contains("3 stored"),
        "{out}"
    );
    // The stream's last message is row 6, its replay began at row 4: rows 1-3, in earlier
    // files, were never stored and are published; 4-6 are skipped.
    let all = replay_binary(&config, &files);
    assert!(
        all.contains("replayed 6 events")
            && all.contains("3 stored, 0 already in the stream, 3 skipped"),
        "{all}"
    );
    let stored = env.stored_messages().await;
    let mut ids: Vec<String> = stored
        .iter()
        .map(|m| m.header("Nats-Msg-Id").to_owned())
        .collect();
    ids.sort();
    let mut want: Vec<String> = expected.iter().map(TestEvent::uuid).collect();
    want.sort();
    assert_eq!(ids, want, "every row once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xa_transaction_prepared_in_one_file_and_committed_in_the_next_is_replayed_once() {
    let env = TestEnv::start("replay_xa").await;
    let committed = events(1, 3, 1);
    let dangling = events(10, 2, 1);
    let insert = |events: &[TestEvent]| {
        let values: Vec<String> = events.iter().map(TestEvent::sql_values).collect();
        format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
            values.join(",")
        )
    };
    let mut xa = env.conn().await;
    xa.query_drop(format!(
        "XA START 'across'; {}; XA END 'across'; XA PREPARE 'across'",
        insert(&committed)
    ))
    .await
    .unwrap();
    env.exec_root("FLUSH BINARY LOGS").await;
    xa.query_drop("XA COMMIT 'across'").await.unwrap();
    // Prepared in the last file, ended in none of them.
    xa.query_drop(format!(
        "XA START 'dangling'; {}; XA END 'dangling'; XA PREPARE 'dangling'",
        insert(&dangling)
    ))
    .await
    .unwrap();
    let files = binlog_files(&env).await;

    let config = env.write_config("replay.toml", &env.config_toml(None));
    let out = replay_binary(&config, &files);
    assert!(
        out.contains("replayed 3 events") && out.contains("3 stored"),
        "{out}"
    );
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: XA transaction"))
        .unwrap_or_else(|| panic!("the dangling XA transaction is reported: {out}"));
    assert!(
        warning.contains(&hex("dangling")) && warning.contains("2 outbox rows"),
        "{warning}"
    );
    assert!(!out.contains(&hex("across")), "{out}");
    assert_exactly_once_in_order(&env.stored_messages().await, &committed);
    xa.query_drop("XA ROLLBACK 'dangling'").await.unwrap();
}

/// How an XA id's gtrid appears in the connector's `X'…',X'…',N` form.
fn hex(gtrid: &str) -> String {
    let digits: String = gtrid.bytes().map(|b| format!("{b:02x}")).collect();
    format!("X'{digits}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_another_binlog_history_with_the_same_names_skip_nothing() {
    let mut env = TestEnv::start("replay_other_history").await;
    // The first history's rows in a later file than the second history's will be.
    env.exec_root("FLUSH BINARY LOGS").await;
    env.exec_root("FLUSH BINARY LOGS").await;
    let first = events(1, 3, 1);
    insert_tx(&mut env.conn().await, &first, true).await;
    let config = env.write_config("replay.toml", &env.config_toml(None));
    let out = replay_binary(&config, &binlog_files(&env).await);
    assert!(out.contains("3 stored"), "{out}");
    let tip = env
        .stored_messages()
        .await
        .last()
        .unwrap()
        .header("Outbox-Source-Position")
        .to_owned();
    let tip_file = tip.rsplit_once(':').unwrap().0.to_owned();

    // The same host and port, a new data directory: binlog files of the same names again.
    env.recreate_database().await;
    let second = events(10, 3, 1);
    insert_tx(&mut env.conn().await, &second, true).await;
    let mut files = binlog_files(&env).await;
    for _ in 0..10 {
        if files
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy() == tip_file)
        {
            break;
        }
        files = binlog_files(&env).await;
    }
    let out = replay_binary(&config, &files);
    assert!(
        out.contains("another binlog history") && out.contains("3 stored"),
        "{out}"
    );
    let stored = env.stored_messages().await;
    // Skipping up to the old last message by position alone would have dropped them.
    for m in &stored[3..] {
        let position = m.header("Outbox-Source-Position");
        let file = position.rsplit_once(':').unwrap().0;
        assert!(
            binlog_outbox::position::file_order(file, &tip_file).is_lt(),
            "the second history's rows lie before the stream's last message: {position} vs {tip}"
        );
    }
    let mut all = first.clone();
    all.extend(second);
    assert_exactly_once_in_order(&stored, &all);
}
