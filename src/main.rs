//! `binlog-outbox`: thin CLI over the library. Parses arguments, loads and validates the
//! config, starts logging, installs signal handlers, calls one function and maps the result
//! to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use binlog_outbox::config::Config;
use binlog_outbox::pipeline;
use binlog_outbox::source::preflight::{Status, error_chain};
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
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration or preflight problem (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log_level, cli.log_format);
    let (Command::Run { config, .. } | Command::Check { config }) = &cli.command;
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
            Command::Run {
                reset_checkpoint, ..
            } => run(config, pipeline::RunOptions { reset_checkpoint }).await,
        }
    })
}

/// The `check` command's report goes to stdout, for the operator.
#[allow(clippy::print_stdout)]
async fn check(config: &Config) -> ExitCode {
    let checks = pipeline::check(config).await;
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

async fn run(config: Config, options: pipeline::RunOptions) -> ExitCode {
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    match pipeline::run_with(config, options, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            if let binlog_outbox::error::Policy::Fatal { hint } = e.policy() {
                eprintln!("hint: {hint}");
            }
            match e {
                binlog_outbox::error::Error::Config(_)
                | binlog_outbox::error::Error::Preflight(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received, shutting down");
    cancel.cancel();
}
