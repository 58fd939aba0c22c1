//! Handles on a running connector: in this process as a tokio task, or the built binary as
//! a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use binlog_outbox::config::Config;
use binlog_outbox::error::Error;

use super::waits::wait_for_log;

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
    /// Starts `binlog-outbox run --config CONFIG`, its log (debug level) written to `log`.
    pub fn start(config: &Path, log: &Path) -> Self {
        Self::start_with(config, log, "binlog_outbox=debug", &[])
    }

    /// Like [`Binary::start`] with a log filter and a command put in front of the binary
    /// (a profiler, e.g. `perf record -g --`).
    pub fn start_with(config: &Path, log: &Path, rust_log: &str, wrapper: &[String]) -> Self {
        let stderr = std::fs::File::create(log).unwrap();
        let binary = env!("CARGO_BIN_EXE_binlog-outbox").to_owned();
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((first, rest)) => (first.clone(), rest),
            None => (binary.clone(), &[][..]),
        };
        let mut command = Command::new(program);
        command.args(wrapper_args);
        if !wrapper.is_empty() {
            command.arg(&binary);
        }
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
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

    /// CPU seconds the process has used so far.
    #[allow(dead_code)]
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id()).expect("/proc/PID/stat is readable")
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let hwm = self.proc_status("VmHWM").expect("VmHWM in status");
        let kb: u64 = hwm.split_whitespace().next().unwrap().parse().unwrap();
        kb * 1024
    }

    /// A field of the process's `/proc/PID/status` (`THP_enabled`, …), when the kernel has it.
    pub fn proc_status(&self, field: &str) -> Option<String> {
        proc_status(&self.child.id().to_string(), field)
    }

    /// Resets the peak RSS counter (Linux `clear_refs` 5), so what follows has its own peak.
    #[allow(dead_code)] // the e2e bench measures each phase's own peak
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) without waiting for anything.
    #[allow(dead_code)]
    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
    }

    /// The process's log so far.
    #[allow(dead_code)]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

/// Runs the binary with `args` to completion; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_binlog-outbox"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("binary runs");
    // A command that never ends fails the test instead of hanging it.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_BINARY_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "binlog-outbox {args:?} still runs after {RUN_BINARY_LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// How long [`run_binary`] waits for the command to end.
const RUN_BINARY_LIMIT: Duration = Duration::from_secs(60);

impl Drop for Binary {
    /// A test that fails midway leaves no connector running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PROCESS/status` (`PROCESS`: a pid, or `self`), when the kernel has it.
/// CPU time (user + system, all threads) a process has used so far, in seconds, from
/// `/proc/PID/stat`.
#[allow(dead_code)] // the e2e bench reports each phase's CPU use
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

pub fn proc_status(process: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}
