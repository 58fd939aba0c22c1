//! One test's environment: its private servers, database, connector user, config file,
//! checkpoint path and stream, and SQL helpers on them.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use mysql_async::prelude::Queryable;
use tempfile::TempDir;

use binlog_outbox::config::Config;

use super::connector::InProcess;
use super::events::{StoredMessage, read_stored_messages};
use super::servers::{MariaDb, Nats};
use super::waits::{stream_message_count, wait_for_file, wait_for_stream_count};

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

/// The environment variable naming the `nats.publish_mode` of every connector config a test
/// writes through [`TestEnv::write_config`] (`scripts/test` runs the suite in each mode).
pub const PUBLISH_MODE_ENV: &str = "BINLOG_OUTBOX_TEST_PUBLISH_MODE";

/// The publish mode this test run asked for, if any.
pub fn run_publish_mode() -> Option<String> {
    std::env::var(PUBLISH_MODE_ENV)
        .ok()
        .filter(|m| !m.is_empty())
}

/// `toml` with this run's publish mode as the first key of its `[nats]` section. A config
/// that chooses its own mode keeps it, and one that turns the order guard off
/// (`exclusive_streams = false`) stays per message: atomic batches need the guard.
pub fn with_run_publish_mode(toml: &str) -> String {
    let Some(mode) = run_publish_mode() else {
        return toml.to_owned();
    };
    if toml.contains("publish_mode") || toml.contains("exclusive_streams = false") {
        return toml.to_owned();
    }
    let mut out = String::with_capacity(toml.len() + 32);
    for line in toml.split_inclusive('\n') {
        out.push_str(line);
        if line.trim() == "[nats]" {
            out.push_str(&format!("publish_mode = \"{mode}\"\n"));
        }
    }
    out
}

/// One test's servers, database, stream and scratch directory.
pub struct TestEnv {
    pub db: MariaDb,
    pub nats: Nats,
    pub dir: TempDir,
    pub schema: String,
    pub stream: String,
    /// How the test itself reaches NATS (a server with authentication or TLS needs its own).
    pub nats_access: NatsAccess,
}

/// The test's own NATS credentials: user and password or token in the URL, TLS files.
#[derive(Default, Clone)]
pub struct NatsAccess {
    /// `user:password` or a token, put in the URL.
    pub userinfo: Option<String>,
    /// CA, client certificate and key.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// A `.creds` file (operator mode).
    pub creds: Option<PathBuf>,
}

impl TestEnv {
    /// Starts MariaDB and NATS, creates database `schema` with the default outbox table and
    /// a connector user with only the documented grants.
    pub async fn start(schema: &str) -> Self {
        Self::start_with(schema, &[]).await
    }

    /// Like [`TestEnv::start`] with extra mariadbd options (later options win).
    pub async fn start_with(schema: &str, mariadbd_args: &[&str]) -> Self {
        Self::start_servers(schema, mariadbd_args, "").await
    }

    /// Like [`TestEnv::start`] on a nats-server of at least 2.11; `None` (skipped, which
    /// fails under CI) when there is none.
    #[allow(dead_code)]
    pub async fn start_on_new_nats(schema: &str) -> Option<Self> {
        let binary = super::servers::new_nats_binary()?;
        Some(Self::start_on(schema, &[], Nats::start_binary(binary, "")).await)
    }

    /// Like [`TestEnv::start_with`], with `nats_conf` added to nats-server's config.
    pub async fn start_servers(schema: &str, mariadbd_args: &[&str], nats_conf: &str) -> Self {
        Self::start_on(schema, mariadbd_args, Nats::start_with(nats_conf)).await
    }

    /// Like [`TestEnv::start`] with the given nats-server (a cluster's node).
    pub async fn start_on(schema: &str, mariadbd_args: &[&str], nats: Nats) -> Self {
        let env = Self {
            db: MariaDb::start_with(1, mariadbd_args),
            nats,
            dir: tempfile::Builder::new()
                .prefix("bo-test")
                .tempdir()
                .unwrap(),
            schema: schema.to_owned(),
            stream: format!("OUTBOX_{}", schema.to_uppercase()),
            nats_access: NatsAccess::default(),
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

    /// Writes a config file, in this run's publish mode (see [`with_run_publish_mode`]), and
    /// returns its path.
    pub fn write_config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, with_run_publish_mode(toml)).unwrap();
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
        let access = &self.nats_access;
        let url = self.nats.url();
        let mut options = async_nats::ConnectOptions::new();
        match access.userinfo.as_deref().map(|u| u.split_once(':')) {
            Some(Some((user, password))) => {
                options = options.user_and_password(user.into(), password.into());
            }
            Some(None) => options = options.token(access.userinfo.clone().unwrap_or_default()),
            None => {}
        }
        if let Some(creds) = &access.creds {
            options = options
                .credentials_file(creds)
                .await
                .expect("test creds readable");
        }
        if let Some((ca, cert, key)) = &access.tls {
            options = options
                .require_tls(true)
                .add_root_certificates(ca.clone())
                .add_client_certificate(cert.clone(), key.clone());
        }
        let client = options.connect(url).await.expect("nats connects");
        jetstream::new(client)
    }

    /// Every message currently in the test stream, in stream order.
    pub async fn stored_messages(&self) -> Vec<StoredMessage> {
        self.stored_messages_in(&self.stream).await
    }

    /// Every message currently in `stream`, in stream order.
    pub async fn stored_messages_in(&self, stream: &str) -> Vec<StoredMessage> {
        read_stored_messages(&self.jetstream().await, stream).await
    }

    /// Number of messages in the stream (0 when it does not exist yet).
    pub async fn message_count(&self) -> u64 {
        stream_message_count(&self.jetstream().await, &self.stream).await
    }

    /// Waits until the stream holds at least `n` messages.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) {
        let js = self.jetstream().await;
        wait_for_stream_count(&js, &self.stream, n, timeout, Duration::from_millis(50)).await;
    }
}
