//! High availability on a current nats-server: the checkpoint in NATS KV, two instances with a
//! leader lease, and what happens to the leader when it dies, freezes or is stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use binlog_outbox::checkpoint::{CheckpointError, CheckpointStore, NatsCheckpointStore};
use binlog_outbox::config::NatsCheckpointConfig;
use binlog_outbox::error::Error;

use crate::support::http::{get, sample};
use crate::support::servers::free_port;
use crate::support::*;

const LEASE_MS: u64 = 2_000;

/// The test's connector config with the checkpoint in NATS KV under `key`; `ha`: the `[ha]`
/// section's body (none when empty); `http_port`: an `[http]` endpoint.
fn kv_config(env: &TestEnv, key: &str, ha: &str, http_port: Option<u16>) -> String {
    let base = env.config_toml(None);
    let at = base.find("[checkpoint]").expect("a checkpoint section");
    let mut toml = format!(
        "{}[checkpoint]\nstore = \"nats\"\nkey = \"{key}\"\n",
        &base[..at]
    );
    if !ha.is_empty() {
        toml.push_str(&format!("\n[ha]\nenabled = true\n{ha}\n"));
    }
    if let Some(port) = http_port {
        toml.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    }
    toml
}

/// An instance's config: its name and HTTP port, the lease `key` and `lease_ms`.
fn instance_config(env: &TestEnv, name: &str, port: u16, key: &str, lease_ms: u64) -> PathBuf {
    let ha = format!("lease_ms = {lease_ms}\ninstance = \"{name}\"");
    env.write_config(
        &format!("{name}.toml"),
        &kv_config(env, key, &ha, Some(port)),
    )
}

/// Two instances of one connector: `a` leading, `b` standing by (checked).
struct Pair {
    a: Binary,
    b: Binary,
    port_a: u16,
    port_b: u16,
    log_a: PathBuf,
    log_b: PathBuf,
}

async fn leader_and_standby(env: &TestEnv, key: &str, lease_ms: u64) -> Pair {
    let (port_a, port_b) = (free_port(), free_port());
    let (log_a, log_b) = (env.dir.path().join("a.log"), env.dir.path().join("b.log"));
    let a = Binary::start(&instance_config(env, "a", port_a, key, lease_ms), &log_a);
    wait_ready(port_a, true).await;
    let b = Binary::start(&instance_config(env, "b", port_b, key, lease_ms), &log_b);
    let why = wait_ready(port_b, false).await;
    assert!(why.contains("standing by"), "{why}");
    Pair {
        a,
        b,
        port_a,
        port_b,
        log_a,
        log_b,
    }
}

async fn nats_store(env: &TestEnv, key: &str) -> NatsCheckpointStore {
    let config = NatsCheckpointConfig {
        bucket: binlog_outbox::config::DEFAULT_CHECKPOINT_BUCKET.into(),
        key: key.into(),
        replicas: 1,
    };
    NatsCheckpointStore::open(&env.jetstream().await, &config)
        .await
        .unwrap()
}

async fn wait_ready(port: u16, ready: bool) -> String {
    let start = Instant::now();
    loop {
        if let Some((status, body)) = get(port, "/readyz")
            && (status == 200) == ready
        {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz never became {}",
            if ready { "ready" } else { "not ready" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `binlog_outbox_leader` of an instance.
fn leader_gauge(port: u16) -> Option<f64> {
    let text = get(port, "/metrics").map(|(_, t)| t).unwrap_or_default();
    sample(&text, "binlog_outbox_leader", "")
}

/// Messages an instance sent that JetStream acknowledged: stored or dropped as duplicates.
fn published(port: u16) -> f64 {
    let text = get(port, "/metrics").map(|(_, t)| t).unwrap_or_default();
    let stream = "stream=\"OUTBOX_HA_FROZEN\"";
    [
        "binlog_outbox_messages_published_total",
        "binlog_outbox_publish_duplicates_total",
    ]
    .iter()
    .map(|name| sample(&text, name, stream).unwrap_or(0.0))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_store_resumes_exactly_and_fences_an_instance_that_was_overtaken() {
    let Some(env) = TestEnv::start_on_new_nats("ha_store").await else {
        return;
    };
    let config = env.config_from(&kv_config(&env, "ha_store", "", None));
    let first = InProcess::start(config.clone());
    let store = nats_store(&env, "ha_store").await;
    let start = Instant::now();
    while store.load().await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no checkpoint saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = events(1, 40, 4);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..20], true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    first.stop().await.unwrap();
    let saved = store
        .load()
        .await
        .unwrap()
        .expect("the checkpoint is in the bucket");
    assert_eq!(saved.position, master_position(&env).await);

    // A second instance on the same key takes over the checkpoint (its start writes it);
    // the first one's next write fails, and stops it.
    let overtaken = InProcess::start(config.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = InProcess::start(config);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    insert_tx(&mut conn, &e[20..], false).await;
    let err = overtaken.failure().await;
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Fenced { .. })),
        "{err}"
    );
    env.wait_for_count(40, Duration::from_secs(30)).await;
    let path = env.dir.path().join("connector.toml");
    let (code, out, err) = run_binary(&["status", "--config", path.to_str().unwrap()], &[]);
    assert!(
        code == 0 && out.contains("NATS KV bucket binlog_outbox_checkpoints"),
        "{code}\n{out}\n{err}"
    );
    second.stop().await.unwrap();
    assert_exactly_once_in_order(&env.stored_messages().await, &e);

    // A bucket that drops values (a lease bucket) is no place for a checkpoint.
    let js = env.jetstream().await;
    binlog_outbox::checkpoint::open_bucket(&js, "expiring", 1, Some(Duration::from_secs(5)), 1)
        .await
        .unwrap();
    let config = NatsCheckpointConfig {
        bucket: "expiring".into(),
        key: "k".into(),
        replicas: 1,
    };
    let err = NatsCheckpointStore::open(&js, &config).await.err().unwrap();
    assert!(
        err.to_string().contains("drops values after 5000 ms"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_while_nats_is_down_waits_for_it_then_leads() {
    let Some(mut env) = TestEnv::start_on_new_nats("ha_late").await else {
        return;
    };
    env.nats.stop();
    let port = free_port();
    let log = env.dir.path().join("a.log");
    let a = Binary::start(&instance_config(&env, "a", port, "late", LEASE_MS), &log);
    wait_for_log(&log, "cannot open the checkpoint store or the lease yet", 2).await;
    env.nats.start_again();
    wait_ready(port, true).await;
    let e = events(1, 20, 2);
    insert_tx(&mut env.conn().await, &e, true).await;
    env.wait_for_count(20, Duration::from_secs(30)).await;
    assert!(a.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_load_the_standby_takes_over_within_the_lease() {
    let Some(env) = TestEnv::start_on_new_nats("ha_kill").await else {
        return;
    };
    let Pair {
        a,
        b,
        port_a,
        port_b,
        log_a: _,
        log_b,
    } = leader_and_standby(&env, "shop", LEASE_MS).await;
    assert_eq!(leader_gauge(port_a), Some(1.0));
    assert_eq!(leader_gauge(port_b), Some(0.0));

    let all = events(1, 3_000, 20);
    let writer = spawn_writer(&env, &all, 10, Duration::from_millis(2));
    env.wait_for_count(600, Duration::from_secs(30)).await;
    assert!(
        !b.log_text().contains("acquired the leader lease"),
        "two leaders"
    );
    let killed = Instant::now();
    a.kill9();
    wait_for_log(&log_b, "acquired the leader lease", 1).await;
    let took_over = killed.elapsed();
    let before = env.message_count().await;
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    // Not before the dead leader's lease could have expired, and soon after.
    assert!(
        took_over >= Duration::from_millis(LEASE_MS / 2)
            && took_over < Duration::from_millis(LEASE_MS) + Duration::from_secs(5),
        "took over after {took_over:?}"
    );
    assert!(
        before < all.len() as u64,
        "the standby published part of it"
    );
    wait_ready(port_b, true).await;
    assert_eq!(leader_gauge(port_b), Some(1.0));
    assert!(b.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_thawed_after_the_takeover_publishes_nothing_and_stands_by() {
    let Some(env) = TestEnv::start_on_new_nats("ha_frozen").await else {
        return;
    };
    let Pair {
        a,
        b,
        port_a,
        port_b: _,
        log_a,
        log_b,
    } = leader_and_standby(&env, "shop", LEASE_MS).await;
    let e = events(1, 300, 10);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..100], true).await;
    env.wait_for_count(100, Duration::from_secs(30)).await;
    // The stream may hold them before the leader has taken in every ack.
    let start = Instant::now();
    while published(port_a) < 100.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "acks never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published_by_a = published(port_a);
    assert_eq!(published_by_a, 100.0);

    assert!(
        !b.log_text().contains("acquired the leader lease"),
        "two leaders"
    );
    let frozen = Instant::now();
    a.signal("-STOP");
    // Rows committed while the leader is frozen: the standby must publish them.
    insert_tx(&mut conn, &e[100..200], false).await;
    wait_for_log(&log_b, "acquired the leader lease", 1).await;
    assert!(
        frozen.elapsed() >= Duration::from_millis(LEASE_MS / 2),
        "took over after {:?}, before the frozen leader's lease could expire",
        frozen.elapsed()
    );
    env.wait_for_count(200, Duration::from_secs(30)).await;
    a.signal("-CONT");
    wait_for_log(&log_a, "lost the leader lease", 1).await;
    insert_tx(&mut conn, &e[200..], true).await;
    env.wait_for_count(300, Duration::from_secs(30)).await;
    // The thawed instance stands by: not ready, and it stored nothing after its freeze.
    let why = wait_ready(port_a, false).await;
    assert!(why.contains("standing by"), "{why}");
    assert_eq!(published(port_a), published_by_a, "{}", a.log_text());
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_at_once() {
    let Some(env) = TestEnv::start_on_new_nats("ha_handover").await else {
        return;
    };
    // A long lease: a handover faster than it proves the lease was released, not expired.
    let Pair {
        a,
        b,
        port_b: _,
        log_a,
        log_b,
        ..
    } = leader_and_standby(&env, "handover", 20_000).await;
    let e = events(1, 100, 5);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..50], true).await;
    env.wait_for_count(50, Duration::from_secs(30)).await;
    let stopped = Instant::now();
    assert!(a.terminate().success());
    wait_for_log(&log_b, "acquired the leader lease", 1).await;
    let handover = stopped.elapsed();
    insert_tx(&mut conn, &e[50..], false).await;
    env.wait_for_count(100, Duration::from_secs(30)).await;
    assert!(
        handover < Duration::from_secs(10),
        "handed over after {handover:?}"
    );
    assert!(
        std::fs::read_to_string(&log_a)
            .unwrap()
            .contains("released the leader lease")
    );
    let config_b = env.dir.path().join("b.toml");
    let (code, out, err) = run_binary(&["check", "--config", config_b.to_str().unwrap()], &[]);
    assert!(
        code == 0 && out.contains("leader lease") && out.contains("held by b"),
        "{code}\n{out}\n{err}"
    );
    assert!(b.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_two_processes_share_the_buckets_each_with_its_own_key_and_lease() {
    let Some(env) = TestEnv::start_on_new_nats("ha_one").await else {
        return;
    };
    env.exec_root(&format!(
        "CREATE DATABASE ha_two; USE ha_two; {}; GRANT SELECT ON ha_two.* TO cdc@'%'",
        outbox_ddl()
    ))
    .await;
    let config_one = kv_config(&env, "one", "lease_ms = 2000", None);
    let config_two = config_one
        // Each connector its own subjects: streams may not overlap.
        .replace(
            "table = \"ha_one.outbox\"",
            "table = \"ha_two.outbox\"\nsubject = \"two.event.{aggregatetype}\"",
        )
        .replace("OUTBOX_HA_ONE", "OUTBOX_HA_TWO")
        .replace("server_id = 4201", "server_id = 4202")
        .replace("key = \"one\"", "key = \"two\"");
    let (log_one, log_two) = (
        env.dir.path().join("one.log"),
        env.dir.path().join("two.log"),
    );
    let one = Binary::start(&env.write_config("one.toml", &config_one), &log_one);
    let two = Binary::start(&env.write_config("two.toml", &config_two), &log_two);
    wait_for_log(&log_one, "reading binlog", 1).await;
    wait_for_log(&log_two, "reading binlog", 1).await;
    let e = events(1, 200, 10);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e[..100], true).await;
    let url = format!("{}/ha_two", env.db.root_url());
    let mut conn_two = mysql_async::Conn::from_url(url).await.unwrap();
    insert_tx(&mut conn_two, &e[100..], false).await;
    let js = env.jetstream().await;
    wait_for_stream_count(
        &js,
        "OUTBOX_HA_ONE",
        100,
        Duration::from_secs(30),
        Duration::from_millis(50),
    )
    .await;
    wait_for_stream_count(
        &js,
        "OUTBOX_HA_TWO",
        100,
        Duration::from_secs(30),
        Duration::from_millis(50),
    )
    .await;
    eprintln!(
        "peak RSS after 100 events each: {} KiB and {} KiB",
        one.peak_rss_bytes() / 1024,
        two.peak_rss_bytes() / 1024
    );
    assert!(one.terminate().success());
    assert!(two.terminate().success());
    assert_exactly_once_in_order(&read_stored_messages(&js, "OUTBOX_HA_ONE").await, &e[..100]);
    assert_exactly_once_in_order(&read_stored_messages(&js, "OUTBOX_HA_TWO").await, &e[100..]);
    let store = nats_store(&env, "two").await;
    assert!(store.load().await.unwrap().is_some(), "each its own key");
}
