//! `nats.publish_mode = "atomic_batch"` / `"auto"` against a current nats-server: whole
//! transactions become visible together, and crashes, restarts and freezes still lose and
//! repeat nothing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::servers::{Nats, distribution_nats};
use crate::support::*;

/// The test's connector config with `publish_mode` (and `extra` lines) in `[nats]`.
fn config_with_mode(env: &TestEnv, mode: &str, extra: &str) -> String {
    env.config_toml(None).replace(
        "[nats]\n",
        &format!("[nats]\npublish_mode = \"{mode}\"\n{extra}"),
    )
}

fn write_mode_config(env: &TestEnv, mode: &str) -> PathBuf {
    env.write_config(&format!("{mode}.toml"), &config_with_mode(env, mode, ""))
}

/// Transactions of 1 to 17 events (a fixed mix), out of `count` events.
fn transactions(count: u64) -> Vec<Vec<TestEvent>> {
    let all = events(1, count, 20);
    let mut out = Vec::new();
    let mut rest = &all[..];
    let mut i = 0usize;
    while !rest.is_empty() {
        let size = (1 + (i * 7) % 17).min(rest.len());
        out.push(rest[..size].to_vec());
        rest = &rest[size..];
        i += 1;
    }
    out
}

/// Ids of the last event of each transaction.
fn last_ids(transactions: &[Vec<TestEvent>]) -> HashSet<String> {
    transactions
        .iter()
        .map(|tx| tx.last().expect("not empty").uuid())
        .collect()
}

async fn commit_all(env: &TestEnv, transactions: &[Vec<TestEvent>]) {
    let mut conn = env.conn().await;
    for (i, tx) in transactions.iter().enumerate() {
        insert_tx(&mut conn, tx, i % 2 == 0).await;
    }
}

/// Reads the stream's last message, the way a reader asks for it (a message get, which
/// nats-server isolates from batch commits), until the stream holds `total` messages;
/// returns how many samples found one and those that were not the last event of their
/// transaction. (Stream info is not isolated: it may count part of a batch being committed,
/// nats-server's locksordering.txt.)
async fn sample_tips(env: &TestEnv, total: u64, ends: &HashSet<String>) -> (usize, Vec<String>) {
    let js = env.jetstream().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut samples, mut torn) = (0, Vec::new());
    loop {
        assert!(Instant::now() < deadline, "the stream never held {total}");
        let Ok(stream) = js.get_stream_no_info(&env.stream).await else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        if let Ok(last) = stream.get_last_raw_message_by_subject("outbox.>").await {
            let id = last.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
            samples += 1;
            if !ends.contains(&id) {
                torn.push(format!("seq {} = {id}", last.sequence));
            }
            if last.sequence >= total {
                return (samples, torn);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sampling_the_stream_during_catch_up_never_finds_it_ending_inside_a_transaction() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_visible").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    // Start once for a checkpoint, stop, commit a backlog, then catch up while sampled.
    let first = Binary::start(&config, &log);
    first.wait_until_reading().await;
    assert!(first.terminate().success());
    let txs = transactions(20_000);
    commit_all(&env, &txs).await;
    let connector = Binary::start(&config, &log);
    let (samples, torn) = sample_tips(&env, 20_000, &last_ids(&txs)).await;
    assert!(
        torn.is_empty(),
        "{} of {samples} samples ended inside a transaction: {:?}",
        torn.len(),
        &torn[..torn.len().min(5)]
    );
    assert!(
        samples >= 20,
        "only {samples} samples: the check saw too little"
    );
    wait_for_checkpoint_at_end(&env).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    assert!(
        text.contains("publishing whole transactions as atomic batches"),
        "{text}"
    );
    let stored = env.stored_messages().await;
    let all: Vec<TestEvent> = txs.concat();
    assert_exactly_once_in_order(&stored, &all);
    // Group commit: a backlog fills batches with many transactions, up to the limit (a
    // group of one-event transactions alone goes as single messages, in no batch).
    let batches: HashSet<&str> = stored
        .iter()
        .filter_map(|m| m.headers.get("Nats-Batch-Id").map(String::as_str))
        .collect();
    assert!(
        batches.len() * 10 < txs.len(),
        "{} batches for {} transactions: not grouped",
        batches.len(),
        txs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_5000_rows_is_stored_once_in_order_in_consecutive_batches() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_5000").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let all = events(1, 5_002, 50);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &all[..1], true).await;
    insert_tx(&mut conn, &all[1..5_001], true).await;
    insert_tx(&mut conn, &all[5_001..], true).await;
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    assert!(connector.terminate().success());
    let stored = env.stored_messages().await;
    assert_exactly_once_in_order(&stored, &all);
    // The large transaction: five full batches, none shared with its neighbours.
    let batch_of = |i: usize| stored[i].header("Nats-Batch-Id").to_owned();
    let large: Vec<String> = (1..5_001).map(batch_of).collect();
    let distinct: HashSet<&String> = large.iter().collect();
    assert_eq!(distinct.len(), 5, "5000 rows in batches of 1000");
    // Its neighbours, one event each, went as single messages, in no batch.
    assert!(
        [&stored[0], &stored[5_001]]
            .iter()
            .all(|m| !m.headers.contains_key("Nats-Batch-Id"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_in_atomic_mode_loses_nothing_repeats_nothing_reorders_nothing() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_kill").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    let mut connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;
    let all = events(1, 6_000, 30);
    let writer = spawn_writer(&env, &all, 12, Duration::from_millis(2));
    for pause_ms in [150, 40, 300, 90, 220, 60, 400, 120] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        connector.kill9();
        connector = Binary::start(&config, &log);
    }
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(120))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector.wait_until_reading().await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_and_frozen_in_atomic_mode_loses_nothing_repeats_nothing() {
    let Some(mut env) = TestEnv::start_on_new_nats("atomic_nats").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let all = events(1, 3_000, 10);
    let writer = spawn_writer(&env, &all, 10, Duration::from_millis(2));
    env.wait_for_count(500, Duration::from_secs(30)).await;
    env.nats.restart();
    env.wait_for_count(1_200, Duration::from_secs(60)).await;
    // Longer than ack_timeout_ms (2 s): the batches in flight end with "outcome unknown".
    env.nats.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.nats.signal("-CONT");
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(90))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_id_repeated_within_the_duplicate_window_is_dropped_and_the_rest_batched_on() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_dup").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let all = events(1, 40, 4);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &all[..10], true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    // The producer deletes relayed rows and, wrongly, reuses an id: JetStream refuses the
    // whole batch holding it (error 10201); the events around it must still be stored.
    env.exec(&format!(
        "DELETE FROM outbox WHERE id = UNHEX('{}')",
        all[3].uuid().replace('-', "")
    ))
    .await;
    let mut again = all[10..20].to_vec();
    again.insert(5, all[3].clone());
    insert_tx(&mut conn, &again, true).await;
    insert_tx(&mut conn, &all[20..30], true).await;
    env.wait_for_count(30, Duration::from_secs(60)).await;
    // Past the refused range the connector batches again.
    insert_tx(&mut conn, &all[30..], true).await;
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    let stored = env.stored_messages().await;
    assert_exactly_once_in_order(&stored, &all);
    assert!(text.contains("duplicate message id"), "{text}");
    assert!(
        text.contains("the stream already holds an event with this id"),
        "{text}"
    );
    let batched = |id: String| {
        let m = stored
            .iter()
            .find(|m| m.header("Nats-Msg-Id") == id)
            .unwrap();
        m.headers.contains_key("Nats-Batch-Id")
    };
    assert!(
        all[10..20].iter().all(|e| !batched(e.uuid())),
        "the refused batch's events went one at a time"
    );
    assert!(
        all[..10]
            .iter()
            .chain(&all[30..])
            .all(|e| batched(e.uuid())),
        "before and after it, batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_transactions_go_as_single_messages_and_a_repeated_id_among_them_is_dropped() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_singles").await else {
        return;
    };
    let config = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let all = events(1, 60, 4);
    let mut conn = env.conn().await;
    let commit_each = async |conn: &mut mysql_async::Conn, events: &[TestEvent]| {
        for e in events {
            insert_tx(conn, std::slice::from_ref(e), true).await;
        }
    };
    // A quiet stream: each one-event transaction goes out at once, on its own.
    for (i, e) in all[..5].iter().enumerate() {
        insert_tx(&mut conn, std::slice::from_ref(e), true).await;
        env.wait_for_count(i as u64 + 1, Duration::from_secs(30))
            .await;
    }
    // Then one-event transactions with a transaction of five among them.
    commit_each(&mut conn, &all[5..25]).await;
    insert_tx(&mut conn, &all[25..30], true).await;
    commit_each(&mut conn, &all[30..40]).await;
    env.wait_for_count(40, Duration::from_secs(60)).await;
    // A reused id in a one-event transaction is not stored again; what follows it is.
    env.exec(&format!(
        "DELETE FROM outbox WHERE id = UNHEX('{}')",
        all[3].uuid().replace('-', "")
    ))
    .await;
    insert_tx(&mut conn, std::slice::from_ref(&all[3]), true).await;
    commit_each(&mut conn, &all[40..]).await;
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    let stored = env.stored_messages().await;
    assert_exactly_once_in_order(&stored, &all);
    let batch_of = |i: usize| stored[i].headers.get("Nats-Batch-Id");
    assert!(
        (0..5).all(|i| batch_of(i).is_none()),
        "one-event transactions went as single messages"
    );
    assert!(
        batch_of(25).is_some() && (25..30).all(|i| batch_of(i) == batch_of(25)),
        "the transaction of five is one batch"
    );
    assert!(
        text.contains("already holds the Nats-Msg-Id of message"),
        "{text}"
    );
    assert!(
        text.contains("the stream already holds an event with this id"),
        "{text}"
    );
}

/// The log line that says which mode a run chose.
fn mode_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("publishing "))
        .unwrap_or_else(|| panic!("no mode chosen in:\n{log}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_batches_where_the_stream_allows_it_and_atomic_batch_makes_the_stream_allow_it() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_auto").await else {
        return;
    };
    let js = env.jetstream().await;
    // A stream made beforehand, without allow_atomic: auto publishes per message.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: env.stream.clone(),
        subjects: vec!["outbox.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let auto = write_mode_config(&env, "auto");
    let (code, out, err) = run_binary(&["check", "--config", auto.to_str().unwrap()], &[]);
    assert!(
        out.contains("auto: each event its own publish") && out.contains("allow_atomic"),
        "{code}\n{out}\n{err}"
    );
    let log = env.dir.path().join("auto.log");
    let connector = Binary::start(&auto, &log);
    connector.wait_until_reading().await;
    let e = events(1, 20, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..10], true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let line = mode_line(&connector.log_text());
    assert!(connector.terminate().success());
    assert!(line.contains("each event on its own"), "{line}");
    // atomic_batch: the connector lets the stream take batches, and publishes them.
    let atomic = write_mode_config(&env, "atomic_batch");
    let log = env.dir.path().join("atomic.log");
    let connector = Binary::start(&atomic, &log);
    connector.wait_until_reading().await;
    insert_tx(&mut conn, &e[10..], true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    wait_for_checkpoint_at_end(&env).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    assert!(text.contains("stream now allows atomic batches"), "{text}");
    assert!(mode_line(&text).contains("atomic batches"), "{text}");
    let stored = env.stored_messages().await;
    assert_exactly_once_in_order(&stored, &e);
    assert!(
        stored[..10]
            .iter()
            .all(|m| !m.headers.contains_key("Nats-Batch-Id"))
    );
    assert!(
        stored[10..]
            .iter()
            .all(|m| m.headers.contains_key("Nats-Batch-Id"))
    );
    // Now auto batches too.
    let (_, out, _) = run_binary(&["check", "--config", auto.to_str().unwrap()], &[]);
    assert!(
        out.contains("auto: whole transactions as atomic batches"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_server_2_9_auto_publishes_per_message_and_atomic_batch_refuses_to_start() {
    let nats = Nats::start_binary(distribution_nats(), "");
    let env = TestEnv::start_on("atomic_old_server", &[], nats).await;
    let auto = write_mode_config(&env, "auto");
    let log = env.dir.path().join("auto.log");
    let connector = Binary::start(&auto, &log);
    connector.wait_until_reading().await;
    let e = events(1, 5, 1);
    insert_tx(&mut env.conn().await, &e, true).await;
    env.wait_for_count(5, Duration::from_secs(30)).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    assert!(
        mode_line(&text).contains("each event on its own") && mode_line(&text).contains("2.12.1"),
        "{text}"
    );
    let atomic = write_mode_config(&env, "atomic_batch");
    let (code, out, err) = run_binary(&["run", "--config", atomic.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("needs nats-server 2.12.1 or later"),
        "{out}\n{err}"
    );
    let (_, out, _) = run_binary(&["check", "--config", atomic.to_str().unwrap()], &[]);
    assert!(out.contains("has no atomic batches"), "{out}");
}

/// Sets the test stream's `allow_atomic` through JetStream's API (async-nats has no field
/// for it without a feature).
async fn set_allow_atomic(env: &TestEnv, allow: bool) {
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let request = |api: &str| format!("$JS.API.STREAM.{api}.{}", env.stream);
    let info = client.request(request("INFO"), "".into()).await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let mut config = info["config"].clone();
    config["allow_atomic"] = allow.into();
    let body = serde_json::to_vec(&config).unwrap();
    let reply = client
        .request(request("UPDATE"), body.into())
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        reply.get("error").is_none(),
        "stream update refused: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_auto_a_stream_that_stops_allowing_atomic_batches_gets_each_event_on_its_own() {
    let Some(env) = TestEnv::start_on_new_nats("atomic_turned_off").await else {
        return;
    };
    let config = write_mode_config(&env, "auto");
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let e = events(1, 40, 4);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..20], true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    // The operator turns atomic batches off while the connector runs: its next batch is
    // refused (10174), and the next attempt decides again.
    set_allow_atomic(&env, false).await;
    insert_tx(&mut conn, &e[20..30], true).await;
    insert_tx(&mut conn, &e[30..], true).await;
    env.wait_for_count(e.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    let text = connector.log_text();
    assert!(connector.terminate().success());
    let stored = env.stored_messages().await;
    assert_exactly_once_in_order(&stored, &e);
    assert!(
        stored[..20]
            .iter()
            .all(|m| m.headers.contains_key("Nats-Batch-Id")),
        "batches while allowed"
    );
    assert!(
        stored[20..]
            .iter()
            .all(|m| !m.headers.contains_key("Nats-Batch-Id")),
        "each event on its own after"
    );
    assert!(text.contains("auto mode decides again"), "{text}");
    assert!(
        text.contains("does not allow atomic batches (allow_atomic)"),
        "{text}"
    );
}
