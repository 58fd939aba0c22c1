//! Bad config, unreachable servers, failed preflight checks and bad rows: clear errors, and
//! nothing checkpointed past a row that was not handled.

use binlog_outbox::error::{Error, SourceError};
use mysql_async::prelude::Queryable;

use crate::support::servers::free_port;
use crate::support::*;

const EXIT_CONFIG: i32 = 78;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_correct_setup_and_prints_each_check() {
    let env = TestEnv::start("check_ok").await;
    let config = env.write_config("c.toml", &env.config_toml(None));
    let (code, out, err) = run_binary(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for check in [
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "binlog_checksum",
        "log_bin_compress",
        "outbox table check_ok.outbox",
        "stream OUTBOX_CHECK_OK",
        "NATS connection",
        "publish mode",
    ] {
        assert!(
            out.contains(&format!("[PASS] {check}")),
            "{check} not passed in:\n{out}"
        );
    }
    assert!(
        !out.contains(CDC_PASSWORD) && !err.contains(CDC_PASSWORD),
        "password leaked"
    );
}

#[test]
fn unknown_key_missing_key_and_wrong_type_are_named_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[source]\nurl = \"mysql://u:p@127.0.0.1:1\"\nserver_id = 7\n\
        [[outbox]]\ntable = \"s.outbox\"\n[nats]\nurl = \"nats://127.0.0.1:1\"\nstream = \"S\"\n\
        [checkpoint]\npath = \"cp\"\n";
    let cases = [
        (
            good.replace("server_id = 7", "server_id = 7\nserverid = 8"),
            vec![],
            "serverid",
        ),
        (good.replace("server_id = 7\n", ""), vec![], "server_id"),
        (
            good.replace("server_id = 7", "server_id = \"seven\""),
            vec![],
            "source.server_id",
        ),
        (
            good.to_string(),
            vec![("BINLOG_OUTBOX__NATS__ACK_WINDOW", "lots")],
            "nats.ack_window",
        ),
        (
            good.to_string(),
            vec![("BINLOG_OUTBOX__NATS__STREEM", "X")],
            "streem",
        ),
    ];
    for (toml, env, named) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &toml).unwrap();
        let (code, _, err) = run_binary(&["check", "--config", path.to_str().unwrap()], &env);
        assert_eq!(code, EXIT_CONFIG, "{named}: {err}");
        assert!(err.contains(named), "error should name {named}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_fail_with_a_message_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db_port, nats_port) = (free_port(), free_port());
    let toml = format!(
        "[source]\nurl = \"mysql://cdc:hunter2@127.0.0.1:{db_port}\"\nserver_id = 7\nconnect_timeout_ms = 2000\n\
         [[outbox]]\ntable = \"s.outbox\"\n[nats]\nurl = \"nats://127.0.0.1:{nats_port}\"\nstream = \"S\"\nconnect_timeout_ms = 2000\n\
         [checkpoint]\npath = \"{}\"\n",
        dir.path().join("cp").display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();

    let (code, out, err) = run_binary(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, EXIT_CONFIG);
    assert!(out.contains("[FAIL] source connection"), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{db_port}")), "{out}");
    assert!(
        out.contains("[FAIL] NATS connection") && out.contains(&format!("127.0.0.1:{nats_port}")),
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "password leaked"
    );

    let (code, _, err) = run_binary(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{db_port}")), "{err}");
    assert!(
        !dir.path().join("cp").exists(),
        "no checkpoint may be written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_when_a_preflight_check_fails() {
    let env = TestEnv::start("preflight").await;
    env.exec_root("SET GLOBAL binlog_format = 'STATEMENT'")
        .await;
    let err = InProcess::start(env.config(None)).failure().await;
    let msg = err.to_string();
    assert!(matches!(err, Error::Preflight { .. }), "{msg}");
    assert!(
        msg.contains("binlog_format") && msg.contains("ROW"),
        "{msg}"
    );
    assert!(!env.checkpoint_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mapped_column_fails_preflight_naming_the_column() {
    let env = TestEnv::start("mapping").await;
    let outbox = format!(
        "[[outbox]]\ntable = \"{}.outbox\"\ncolumns = {{ event_type = \"event_kind\" }}\n",
        env.schema
    );
    let msg = InProcess::start(env.config(Some(&outbox)))
        .failure()
        .await
        .to_string();
    assert!(
        msg.contains("event_kind") && msg.contains("mapping.outbox"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_stream_that_does_not_cover_the_subjects_is_refused() {
    let env = TestEnv::start("stream_cover").await;
    env.jetstream()
        .await
        .create_stream(async_nats::jetstream::stream::Config {
            name: env.stream.clone(),
            subjects: vec!["elsewhere.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let msg = InProcess::start(env.config(None))
        .failure()
        .await
        .to_string();
    assert!(
        msg.contains("outbox.event.*") && msg.contains("do not cover"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_with_an_invalid_subject_value_stops_the_connector_before_checkpointing_past_it() {
    let env = TestEnv::start("bad_row").await;
    let connector = env.start_connector(env.config(None)).await;
    let good = events(1, 3, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &good, true).await;
    let before_bad = master_position(&env).await;
    let bad_id = "00000000-0000-4000-8000-0000000000bb";
    conn.query_drop(format!(
        "START TRANSACTION;
         INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
           (UNHEX('e7000000000000000000000000000063'), 'User', 'u-1', 'Ok', '{{}}');
         INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
           (UNHEX(REPLACE('{bad_id}', '-', '')), 'Order Line', 'o-1', 'Added', '{{}}');
         COMMIT"
    ))
    .await
    .unwrap();
    insert_tx(&mut conn, &events(10, 1, 1), false).await;

    let err = connector.failure().await;
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Source(ref e) if matches!(**e, SourceError::BadRow(_))),
        "{msg}"
    );
    assert!(
        msg.contains(bad_id) && msg.contains("mariadb-bin.000001:"),
        "names id and position: {msg}"
    );
    assert!(msg.contains("Order Line"), "{msg}");
    assert_eq!(
        checkpoint_position(&env.checkpoint_path()),
        before_bad,
        "checkpoint stays at the end of the last good transaction"
    );
    // A restart stops at the same row again: it was not skipped.
    let again = InProcess::start(env.config(None)).failure().await;
    assert!(again.to_string().contains(bad_id));
    assert_eq!(checkpoint_position(&env.checkpoint_path()), before_bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_checkpoints_stop_the_connector_instead_of_restarting_from_latest() {
    let env = TestEnv::start("bad_checkpoint").await;
    std::fs::create_dir_all(env.checkpoint_path().parent().unwrap()).unwrap();
    let cases = [
        ("{\"version\":1,\"position\":\"mariadb-bin.0000", "corrupt"),
        ("", "corrupt"),
        (
            "{\"version\":7,\"position\":\"mariadb-bin.000001:4\"}",
            "format version 7",
        ),
        (
            "{\"version\":1,\"position\":\"mariadb-bin.000001:4\",\"server\":\"another-server\"}",
            "was written for server another-server",
        ),
    ];
    for (content, expected) in cases {
        std::fs::write(env.checkpoint_path(), content).unwrap();
        let msg = InProcess::start(env.config(None))
            .failure()
            .await
            .to_string();
        assert!(msg.contains(expected), "{content:?}: {msg}");
        assert_eq!(
            std::fs::read_to_string(env.checkpoint_path()).unwrap(),
            content,
            "left as found"
        );
    }
    // The binary exits 1 on such a fatal runtime error (78 is for configuration).
    let config = env.write_config("connector.toml", &env.config_toml(None));
    let (code, _, err) = run_binary(&["run", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another-server"), "{err}");
}

/// With lower_case_table_names the server accepts `Lctn.Outbox` in queries, but its binlog
/// names the table `lctn.outbox`: a config in another case would match nothing and publish
/// nothing while the checkpoint moved on. Preflight refuses it, naming the stored name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_in_another_case_than_the_server_stores_it_is_refused() {
    let env = TestEnv::start_with("lctn", &["--lower-case-table-names=1"]).await;
    let toml = env.config_toml(Some("[[outbox]]\ntable = \"Lctn.Outbox\"\n"));
    let err = InProcess::start(env.config_from(&toml)).failure().await;
    let msg = err.to_string();
    assert!(matches!(err, Error::Preflight { .. }), "{msg}");
    assert!(
        msg.contains("stores it as lctn.outbox") && msg.contains("\"lctn.outbox\""),
        "{msg}"
    );
    // Written as stored, it runs.
    let connector = env.start_connector(env.config(None)).await;
    let e = events(1, 3, 1);
    insert_tx(&mut env.conn().await, &e, true).await;
    env.wait_for_count(3, std::time::Duration::from_secs(30))
        .await;
    connector.stop().await.expect("clean shutdown");
}
