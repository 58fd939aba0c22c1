//! Test harness: private servers, config files, connector runners and stream readers.

pub mod proxy;
pub mod servers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use mysql_async::prelude::Queryable;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use binlog_outbox::config::Config;
use binlog_outbox::error::Error;

pub use servers::{MariaDb, Nats};

/// Skips a test that cannot run here, saying why. Under CI (`CI` set) that is a failure: a
/// test that cannot run must never pass there.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false"),
        "CI must run every test, but: {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// Password of the least-privilege connector user created in every test database.
pub const CDC_PASSWORD: &str = "cdc-secret";

/// The shipped MariaDB outbox DDL (schemas/mariadb-outbox.sql), so tests prove it works.
const SHIPPED_SCHEMA: &str = include_str!("../../../schemas/mariadb-outbox.sql");

/// The `CREATE TABLE` statement of the shipped schema, for the test's own database.
pub fn outbox_ddl() -> String {
    let start = SHIPPED_SCHEMA
        .find("CREATE TABLE")
        .expect("schema has CREATE TABLE");
    const END: &str = "ENGINE = InnoDB";
    let len = SHIPPED_SCHEMA[start..].find(END).expect("statement ends") + END.len();
    SHIPPED_SCHEMA[start..start + len].replace("shop.outbox", "outbox")
}

/// One test's servers, database, stream and scratch directory.
pub struct TestEnv {
    pub db: MariaDb,
    pub nats: Nats,
    pub dir: TempDir,
    pub schema: String,
    pub stream: String,
}

impl TestEnv {
    /// Starts MariaDB and NATS, creates database `schema` with the default outbox table and
    /// a connector user with only the documented grants.
    pub async fn start(schema: &str) -> Self {
        Self::start_with(schema, &[]).await
    }

    /// Like [`TestEnv::start`] with extra mariadbd options (later options win).
    pub async fn start_with(schema: &str, mariadbd_args: &[&str]) -> Self {
        let env = Self {
            db: MariaDb::start_with(1, mariadbd_args),
            nats: Nats::start(),
            dir: tempfile::Builder::new()
                .prefix("bo-test")
                .tempdir()
                .unwrap(),
            schema: schema.to_owned(),
            stream: format!("OUTBOX_{}", schema.to_uppercase()),
        };
        env.create_database().await;
        env
    }

    /// Creates the test database with the default outbox table and a connector user with
    /// only the documented grants.
    async fn create_database(&self) {
        let schema = &self.schema;
        self.exec_root(&format!("CREATE DATABASE {schema}")).await;
        self.exec(&outbox_ddl()).await;
        self.exec_root(&format!(
            "CREATE USER cdc@'%' IDENTIFIED BY '{CDC_PASSWORD}';
             GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO cdc@'%';
             GRANT SELECT ON {schema}.* TO cdc@'%'"
        ))
        .await;
    }

    /// Replaces the database server by a new one (new data directory, a new binlog history)
    /// on the same host and port, with the same database, table and user: a database
    /// recreated in place.
    pub async fn recreate_database(&mut self) {
        let port = self.db.port;
        self.db.stop();
        self.db = MariaDb::start_on_port(port, self.db.server_id, &[]);
        self.create_database().await;
    }

    /// The server's `@@server_uid`.
    pub async fn server_uid(&self) -> String {
        let mut c = self.root_conn().await;
        let uid: Option<String> = c.query_first("SELECT @@server_uid").await.unwrap();
        c.disconnect().await.unwrap();
        uid.unwrap()
    }

    /// The checkpoint as saved.
    pub fn checkpoint(&self) -> binlog_outbox::checkpoint::Checkpoint {
        binlog_outbox::checkpoint::read_file(&self.checkpoint_path())
            .expect("checkpoint readable")
            .expect("checkpoint exists")
    }

    pub async fn root_conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(self.db.root_url())
            .await
            .expect("root connects")
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        let url = format!("{}/{}", self.db.root_url(), self.schema);
        mysql_async::Conn::from_url(url)
            .await
            .expect("root connects to the test schema")
    }

    pub async fn exec_root(&self, sql: &str) {
        let mut c = self.root_conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.disconnect().await.unwrap();
    }

    /// Runs SQL in the test schema.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.disconnect().await.unwrap();
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.path().join("state/connector.checkpoint")
    }

    /// The connector config as TOML. `outbox` replaces the default `[[outbox]]` section.
    pub fn config_toml(&self, outbox: Option<&str>) -> String {
        let default_outbox = format!("[[outbox]]\ntable = \"{}.outbox\"\n", self.schema);
        format!(
            "[source]\nurl = \"{url}\"\nserver_id = 4201\nstart = \"latest\"\n\n{outbox}\n\
             [nats]\nurl = \"{nats}\"\nstream = \"{stream}\"\nack_timeout_ms = 2000\n\n\
             [checkpoint]\npath = \"{cp}\"\n",
            url = self.db.url_for("cdc", CDC_PASSWORD),
            outbox = outbox.unwrap_or(&default_outbox),
            nats = self.nats.url(),
            stream = self.stream,
            cp = self.checkpoint_path().display(),
        )
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).unwrap();
        path
    }

    pub fn config(&self, outbox: Option<&str>) -> Config {
        self.config_from(&self.config_toml(outbox))
    }

    /// Writes `toml` as the connector config and loads it.
    pub fn config_from(&self, toml: &str) -> Config {
        let path = self.write_config("connector.toml", toml);
        Config::load_with_env(&path, std::iter::empty()).expect("test config is valid")
    }

    /// Starts the connector in this process and waits until it has saved its start position.
    pub async fn start_connector(&self, config: Config) -> InProcess {
        let connector = InProcess::start(config);
        wait_for_file(&self.checkpoint_path()).await;
        connector
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("nats connects");
        jetstream::new(client)
    }

    /// Every message currently in the test stream, in stream order.
    pub async fn stored_messages(&self) -> Vec<StoredMessage> {
        self.stored_messages_in(&self.stream).await
    }

    /// Every message currently in `stream`, in stream order.
    pub async fn stored_messages_in(&self, stream: &str) -> Vec<StoredMessage> {
        let js = self.jetstream().await;
        let Ok(mut stream) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let info = stream.info().await.unwrap().clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let m = stream
                .get_raw_message(seq)
                .await
                .expect("stored message reads");
            let headers = m
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect();
            out.push(StoredMessage {
                seq: m.sequence,
                subject: m.subject.to_string(),
                headers,
                payload: m.payload.to_vec(),
            });
        }
        out
    }

    /// Number of messages in the stream (0 when it does not exist yet).
    pub async fn message_count(&self) -> u64 {
        let js = self.jetstream().await;
        match js.get_stream(&self.stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until the stream holds at least `n` messages.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let have = self.message_count().await;
            if have >= n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "stream has {have} of {n} messages after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A message as stored in the stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: u64,
    pub subject: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "message {} lacks header {name}: {:?}",
                    self.seq, self.headers
                )
            })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("payload is JSON")
    }
}

/// The connector running in this process, as a tokio task.
pub struct InProcess {
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), Error>>,
}

impl InProcess {
    pub fn start(config: Config) -> Self {
        Self::start_with(config, Default::default())
    }

    pub fn start_with(config: Config, options: binlog_outbox::pipeline::RunOptions) -> Self {
        // Logs of in-process connectors show with `RUST_LOG=binlog_outbox=debug cargo test`.
        binlog_outbox::telemetry::init("off", binlog_outbox::telemetry::LogFormat::Text);
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(binlog_outbox::pipeline::run_with(
            config,
            options,
            cancel.clone(),
        ));
        Self { cancel, handle }
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(self) -> Result<(), Error> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("connector stops within 30 s")
            .expect("connector task does not panic")
    }

    /// Waits for the connector to end on its own (with an error, normally).
    /// Waits (up to 30 s) for the connector to stop with the error it is expected to stop with.
    pub async fn failure(self) -> Error {
        self.join(Duration::from_secs(30))
            .await
            .expect_err("the connector stops with an error")
    }

    pub async fn join(self, timeout: Duration) -> Result<(), Error> {
        tokio::time::timeout(timeout, self.handle)
            .await
            .expect("connector ends within the timeout")
            .expect("connector task does not panic")
    }
}

/// The `binlog-outbox` binary running as a child process.
pub struct Binary {
    child: Child,
    log: PathBuf,
}

impl Binary {
    pub fn start(config: &Path, log: &Path) -> Self {
        let stderr = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_binlog-outbox"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "binlog_outbox=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("binary starts");
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// Waits until this process reads the binlog (its log says so). A SIGTERM before the
    /// signal handler is installed would kill it with the default action.
    pub async fn wait_until_reading(&self) {
        wait_for_log(&self.log, "reading binlog", 1).await;
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in status");
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// kill -9: no shutdown sequence at all.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for exit.
    pub fn terminate(mut self) -> ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "binary ignores SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

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

/// Commits `events` in transactions of `tx_rows` from another task, alternating one multi-row
/// INSERT and one INSERT per row, pausing `pause` after each transaction.
pub fn spawn_writer(
    env: &TestEnv,
    events: &[TestEvent],
    tx_rows: usize,
    pause: Duration,
) -> JoinHandle<()> {
    let url = format!("{}/{}", env.db.root_url(), env.schema);
    let events = events.to_vec();
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
        for (i, tx) in events.chunks(tx_rows).enumerate() {
            insert_tx(&mut conn, tx, i.is_multiple_of(2)).await;
            tokio::time::sleep(pause).await;
        }
    })
}

/// Runs the binary with `args` to completion; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binlog-outbox"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A test event. `seq` grows with commit order, so per aggregate it must grow in the stream.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub n: u64,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub event_type: &'static str,
    pub seq: u64,
}

impl TestEvent {
    /// 16 id bytes; every 256th id ends in a zero byte, which the binlog strips from BINARY.
    pub fn id_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = 0xe7;
        b[8..].copy_from_slice(&self.n.to_be_bytes());
        b
    }

    pub fn uuid(&self) -> String {
        binlog_outbox::cell::uuid_string(&self.id_bytes())
    }

    pub fn payload(&self) -> String {
        format!(
            "{{\"n\": {}, \"aggregate\": \"{}\", \"seq\": {}}}",
            self.n, self.aggregate_id, self.seq
        )
    }

    pub fn sql_values(&self) -> String {
        let hex: String = self.id_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "(UNHEX('{hex}'), '{}', '{}', '{}', '{}')",
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload()
        )
    }
}

/// Builds `count` events spread round-robin over `aggregates` aggregates of two types.
pub fn events(first_n: u64, count: u64, aggregates: u64) -> Vec<TestEvent> {
    (first_n..first_n + count)
        .map(|n| {
            let agg = n % aggregates;
            let (aggregate_type, event_type) = if agg.is_multiple_of(2) {
                ("User", "UserCreated")
            } else {
                ("Order", "OrderPlaced")
            };
            TestEvent {
                n,
                aggregate_type,
                aggregate_id: format!("{}-{agg}", aggregate_type.to_lowercase()),
                event_type,
                seq: n,
            }
        })
        .collect()
}

/// Inserts `events` in one transaction; `multi_row` uses one INSERT for all rows (one binlog
/// rows event with many rows), otherwise one INSERT per row.
pub async fn insert_tx(conn: &mut mysql_async::Conn, events: &[TestEvent], multi_row: bool) {
    let mut sql = String::from("START TRANSACTION;");
    const COLS: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ";
    if multi_row {
        sql.push_str(COLS);
        sql.push_str(
            &events
                .iter()
                .map(TestEvent::sql_values)
                .collect::<Vec<_>>()
                .join(","),
        );
        sql.push(';');
    } else {
        for e in events {
            sql.push_str(COLS);
            sql.push_str(&e.sql_values());
            sql.push(';');
        }
    }
    sql.push_str("COMMIT");
    conn.query_drop(sql)
        .await
        .expect("insert transaction commits");
}

/// Asserts that `messages` hold exactly `expected`, once each, with per-aggregate order.
pub fn assert_exactly_once_in_order(messages: &[StoredMessage], expected: &[TestEvent]) {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for m in messages {
        *by_id.entry(m.header("Nats-Msg-Id")).or_default() += 1;
    }
    let dupes: Vec<_> = by_id.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dupes.is_empty(), "stored more than once: {dupes:?}");
    let expected_ids: std::collections::HashSet<String> =
        expected.iter().map(TestEvent::uuid).collect();
    let missing: Vec<_> = expected_ids
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(messages.len(), expected.len(), "unexpected extra messages");
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for m in messages {
        let body = m.json();
        let agg = body["aggregate"].as_str().unwrap().to_owned();
        let seq = body["seq"].as_u64().unwrap();
        let prev = last_seq.insert(agg.clone(), seq).unwrap_or(0);
        assert!(
            seq > prev,
            "aggregate {agg}: event seq {seq} stored after seq {prev} (stream seq {})",
            m.seq
        );
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
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    binlog_outbox::position::BinlogPosition::new(
        row.get::<String, _>(0).unwrap(),
        row.get::<u64, _>(1).unwrap(),
    )
}
