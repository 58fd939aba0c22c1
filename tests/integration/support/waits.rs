//! Waiting for what a test expects (a log line, a file, a checkpoint position, a message
//! count), each with a deadline that fails the test saying what never happened.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use mysql_async::prelude::Queryable;

use super::env::TestEnv;

/// Waits until `needle` occurs at least `times` times in a connector's log.
pub async fn wait_for_log(log: &Path, needle: &str, times: usize) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "log never said {needle:?} {times} times:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` exists.
pub async fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The checkpoint file's position, as `file:pos`.
pub fn checkpoint_position(path: &Path) -> binlog_outbox::position::BinlogPosition {
    binlog_outbox::checkpoint::read_file(path)
        .expect("checkpoint readable")
        .expect("checkpoint exists")
        .position
}

/// Waits until the checkpoint reaches the server's current end of binlog (everything
/// committed so far is acknowledged), and returns that position.
pub async fn wait_for_checkpoint_at_end(env: &TestEnv) -> binlog_outbox::position::BinlogPosition {
    let end = master_position(env).await;
    let start = Instant::now();
    while !env.checkpoint_path().exists() || checkpoint_position(&env.checkpoint_path()) < end {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "checkpoint never reached {end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    end
}

/// The server's current end of binlog.
pub async fn master_position(env: &TestEnv) -> binlog_outbox::position::BinlogPosition {
    let mut c = env.root_conn().await;
    master_position_of(&mut c).await
}

/// The current end of binlog of the server behind `conn`.
pub async fn master_position_of(
    conn: &mut mysql_async::Conn,
) -> binlog_outbox::position::BinlogPosition {
    let row: mysql_async::Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    binlog_outbox::position::BinlogPosition::new(
        row.get::<String, _>(0).unwrap(),
        row.get::<u64, _>(1).unwrap(),
    )
}

/// Number of messages in `stream` (0 when it does not exist yet).
pub async fn stream_message_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until `stream` holds at least `n` messages, looking every `poll`; returns when it
/// saw them.
pub async fn wait_for_stream_count(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
    timeout: Duration,
    poll: Duration,
) -> Instant {
    match stream_reaches(js, stream, n, timeout, poll).await {
        Ok(at) => at,
        Err(missing) => panic!("{missing}"),
    }
}

/// [`wait_for_stream_count`] that returns what was missing instead of panicking (for a
/// test that adds the connector's log to the failure).
pub async fn stream_reaches(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<Instant, String> {
    let start = Instant::now();
    loop {
        let have = stream_message_count(js, stream).await;
        if have >= n {
            return Ok(Instant::now());
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "stream {stream} has {have} of {n} messages after {timeout:?}"
            ));
        }
        tokio::time::sleep(poll).await;
    }
}
