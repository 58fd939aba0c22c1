//! `binlog-outbox`: thin CLI over the library. Parses arguments, loads and validates the
//! config, starts logging, installs signal handlers, calls one function and maps the result
//! to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use binlog_outbox::config::Config;
use binlog_outbox::error::Policy;
use binlog_outbox::error::error_chain;
use binlog_outbox::pipeline;
use binlog_outbox::source::preflight::Status;
use binlog_outbox::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "Publishes transactional outbox rows from the MySQL/MariaDB binlog to NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level when RUST_LOG is not set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Start from source.start even though a checkpoint exists, replacing it. Events
        /// between the old checkpoint and the new start are skipped or published again.
        #[arg(long)]
        reset_checkpoint: bool,
    },
    /// Validate the config, connect to both servers and print each preflight check.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the checkpoint, the server's binlog end, the lag and each stream's last message;
    /// works while a connector runs (takes no lock, changes nothing).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish the outbox rows found in archived binlog files, with the ids and positions of
    /// the live path (JetStream's dedup drops what the stream already holds).
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// Binlog files, in binlog order.
        #[arg(long, required = true, num_args = 1..)]
        binlog: Vec<PathBuf>,
    },
    /// Print the TOML equivalent of a Debezium MySQL connector with the outbox event router
    /// (Debezium Server's application.properties or a Kafka Connect properties file); what
    /// is not needed or not supported is listed as comments and on stderr.
    FromDebezium {
        /// The Debezium properties file.
        file: PathBuf,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc marks its arenas `MADV_HUGEPAGE`, so where the kernel's transparent huge pages are
/// `madvise` or `always` (Debian's default is `madvise`) each 2 MiB region the heap touches
/// becomes resident whole. Measured with `bash scripts/bench`: peak RSS 25 → 19.5 MiB per
/// message and 31 → 21–23 MiB with atomic batches (see README, Performance). The kernel checks
/// the flag when a page faults in, so what the heap touches from here on is covered; a huge
/// page faulted in before `main` stays (`MIMALLOC_ALLOW_THP=0` in the environment avoids
/// that too: 16–19 MiB). Failing (an old kernel) only keeps the larger footprint.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("note: transparent huge pages stay on for this process: {e}");
    }
}

/// Exit code for a configuration or preflight problem (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    without_transparent_huge_pages();
    let cli = Cli::parse();
    telemetry::init(&cli.log_level, cli.log_format);
    let config = match &cli.command {
        Command::Run { config, .. }
        | Command::Check { config }
        | Command::Status { config, .. }
        | Command::Replay { config, .. } => config,
        // Converts a file; needs no config of its own.
        Command::FromDebezium { file } => return from_debezium(file),
    };
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    runtime.block_on(async move {
        match cli.command {
            Command::Check { .. } => check(&config).await,
            Command::Status { json, .. } => status(&config, json).await,
            Command::Run {
                reset_checkpoint, ..
            } => run(config, pipeline::RunOptions { reset_checkpoint }).await,
            Command::Replay { binlog, .. } => replay(&config, &binlog).await,
            Command::FromDebezium { .. } => unreachable!("handled before the config is loaded"),
        }
    })
}

/// `from-debezium`: the TOML on stdout, each property's verdict on stderr.
#[allow(clippy::print_stdout)]
fn from_debezium(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match binlog_outbox::debezium::convert(&text) {
        Ok(conversion) => {
            for note in &conversion.notes {
                eprintln!("{note}");
            }
            eprint!("{}", binlog_outbox::debezium::START_NOTE);
            print!("{}", conversion.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `replay`: a summary on stdout; errors as `run` reports them.
#[allow(clippy::print_stdout)]
async fn replay(config: &Config, files: &[PathBuf]) -> ExitCode {
    match binlog_outbox::replay::replay(config, files).await {
        Ok(s) => {
            for stream in &s.streams {
                println!("{stream}");
            }
            for file in &s.not_following {
                println!(
                    "warning: {file} does not continue the file given before it (a gap, another order or a renamed file)"
                );
            }
            for xa in &s.unresolved_xa {
                println!(
                    "warning: XA transaction {} ({} outbox rows, prepared after {}) is neither committed nor rolled back in the given files: its rows were not published; replay again with the file holding its XA COMMIT too",
                    xa.xid, xa.rows, xa.prepared_after
                );
            }
            println!(
                "replayed {} events from {} files: {} stored, {} already in the stream, {} skipped (stored by an earlier replay)",
                s.events, s.files, s.stored, s.duplicates, s.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            if e.is_configuration() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The `check` command's report goes to stdout, for the operator.
#[allow(clippy::print_stdout)]
async fn check(config: &Config) -> ExitCode {
    let checks = binlog_outbox::check::check(config).await;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{failed} check(s) failed");
        ExitCode::from(EXIT_CONFIG)
    }
}

/// The `status` command's report goes to stdout; exit code 1 when a part could not be read.
#[allow(clippy::print_stdout)]
async fn status(config: &Config, json: bool) -> ExitCode {
    let status = binlog_outbox::status::status(config).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
    } else {
        print!("{status}");
    }
    if status.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(config: Config, options: pipeline::RunOptions) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the pipeline starts, and awaited beside it in this task: no task
    // without an owner, and no signal is lost to a handler installed late.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let pipeline = pipeline::run_with(config, options, cancel.clone());
    tokio::pin!(pipeline);
    let result = tokio::select! {
        result = &mut pipeline => result,
        _ = async { tokio::select! { _ = interrupt.recv() => {}, _ = terminate.recv() => {} } } => {
            tracing::info!("signal received, shutting down");
            cancel.cancel();
            pipeline.await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            if let Policy::Fatal { hint } = e.policy() {
                eprintln!("hint: {hint}");
            }
            if e.is_configuration() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
