//! Wiring: source → publisher → checkpoint writer, under one supervisor.
//!
//! ```text
//! BinlogSource --mpsc(SourceMessage)--> AckWindow --watch(Checkpoint)--> CheckpointWriter
//! ```
//!
//! [`run_with`] prepares the run ([`crate::start`]), then hands it to the [`Supervisor`]: the
//! one place that retries. Each attempt connects to NATS when needed and runs the three
//! stages from the last acknowledged transaction end; an error goes through
//! [`Error::policy`]: a retryable one starts the next attempt after a backoff, a fatal one
//! ends the run.
//!
//! Shutdown sequence (on cancel): the source stops reading; the publisher stops taking input
//! and waits for acks in flight (bounded by `shutdown.timeout_ms`); the checkpoint writer saves
//! the last acknowledged position; the NATS connection is drained.
//!
//! Submodules: [`stages`] (one run of the three stages), [`shared`] (the checkpoint store and
//! the lease, opened with backoff), [`standby`] (under `[ha]`: stand by, lead, stand by).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::config::{Config, ConfigError, NatsConfig};
use crate::error::{Error, Policy, error_chain};
use crate::ha::LeaseClock;
use crate::observe::{self, Limits, Observer, http::HttpServer};
use crate::publish::Publisher;
use crate::source::{SourceSettings, flavor::Flavor};
use crate::start::{self, Prepared};

pub use crate::start::RunOptions;

mod shared;
mod stages;
mod standby;

use shared::Shared;
use stages::Stages;

/// Events buffered between the source and the publisher.
const SOURCE_CHANNEL_CAPACITY: usize = 1024;
/// First and last delay between retries of a transient failure.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs the connector until `cancel` fires (returns `Ok`) or a fatal error occurs.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    run_with(config, RunOptions::default(), cancel).await
}

/// [`run`] with options.
pub async fn run_with(
    config: Config,
    options: RunOptions,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let prepared = start::prepare(&config)?;
    let ha = config.ha.as_ref().filter(|ha| ha.enabled);
    if ha.is_some() && options.reset_checkpoint {
        return Err(Error::Config(Box::new(ConfigError::Invalid(vec![
            "--reset-checkpoint with [ha] enabled: stop every instance, then run one with BINLOG_OUTBOX__HA__ENABLED=false and --reset-checkpoint".into(),
        ]))));
    }
    // The checkpoint store (and under `[ha]` the lease), retried while NATS is unreachable.
    // A file store holds its lock until `run` returns: a second connector on the same
    // checkpoint fails right here.
    let Some(shared) = until_cancelled(&cancel, Shared::open(&config)).await else {
        return Ok(());
    };
    let Shared {
        control,
        store,
        lease,
    } = shared?;
    let observer = Arc::new(observe_run(&config, &prepared));
    let tracker = TaskTracker::new();
    let side_tasks = cancel.child_token();
    // Also when this future is dropped instead of run to its end (an embedding caller).
    let _stop_side_tasks = side_tasks.clone().drop_guard();
    if let Some(http) = &config.http {
        let server = serve_http(http, &observer).await?;
        tracker.spawn(server.run(side_tasks.clone()));
    }
    tracker.close();
    let run = Run {
        config: &config,
        prepared: &prepared,
        observer: &observer,
        options,
    };
    let result = match lease {
        Some(lease) => run.stand_by_and_lead(lease, store, &cancel).await,
        None => run.lead(store, None, &cancel).await,
    };
    side_tasks.cancel();
    tracker.wait().await;
    if let Some(control) = control {
        control.close().await;
    }
    result
}

/// One connector run: its settings, shared by every term as leader.
pub(crate) struct Run<'a> {
    config: &'a Config,
    prepared: &'a Prepared,
    observer: &'a Arc<Observer>,
    options: RunOptions,
}

impl Run<'_> {
    /// Reads and publishes until `cancel` fires or a fatal error: preflight, the resume
    /// point, the progress poller, the supervisor. `lease`: the deadline of this term as
    /// leader, under `[ha]`.
    pub(crate) async fn lead(
        &self,
        store: Arc<dyn CheckpointStore>,
        lease: Option<Arc<LeaseClock>>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let (config, prepared) = (self.config, self.prepared);
        // Start-up waits on the server; a signal must still end it at once.
        let started = until_cancelled(cancel, async {
            let facts = start::preflight(prepared).await?;
            let acked = start::resume_point(config, prepared, &store, &facts, self.options).await?;
            Ok::<_, Error>((acked, Flavor::from_version(&facts.version)))
        })
        .await;
        let Some(started) = started else {
            info!("stopped during start-up");
            return Ok(());
        };
        let (acked, flavor) = started?;
        self.observer.info(flavor.label());
        let tracker = TaskTracker::new();
        let side_tasks = cancel.child_token();
        let _stop_side_tasks = side_tasks.clone().drop_guard();
        tracker.spawn(observe::progress::run(
            prepared.endpoint.clone(),
            Arc::clone(self.observer),
            acked.position.clone(),
            Duration::from_millis(config.source.progress_interval_ms),
            side_tasks.clone(),
        ));
        tracker.close();
        let context = Context::new(config, prepared, store, flavor, self.observer, lease);
        let result = Supervisor::new(context).run(acked, cancel.clone()).await;
        side_tasks.cancel();
        tracker.wait().await;
        result
    }
}

/// The run's observer: its limits from the config, a counter per table and stream.
fn observe_run(config: &Config, prepared: &Prepared) -> Observer {
    let heartbeat = Duration::from_millis(config.source.heartbeat_ms);
    let limits = Limits {
        stall_after: Duration::from_millis(
            config
                .http
                .as_ref()
                .map_or(crate::config::DEFAULT_STALL_TIMEOUT_MS, |h| {
                    h.stall_timeout_ms
                }),
        ),
        // A heartbeat is due every period; a little more (half a period, at most a second)
        // allows for the server's timing.
        source_silence: heartbeat + (heartbeat / 2).min(Duration::from_secs(1)),
    };
    if config.http.is_some() {
        // Before the first metric handle is made: handles made without a recorder stay no-ops.
        observe::install_recorder();
    }
    let tables: Vec<_> = prepared.tables.iter().map(|t| &t.qualified).collect();
    Observer::new(limits, tables, prepared.streams.keys())
}

/// Binds the HTTP endpoint: a taken or unusable address stops the start, naming it.
async fn serve_http(
    http: &crate::config::HttpConfig,
    observer: &Arc<Observer>,
) -> Result<HttpServer, Error> {
    let address = http.address().expect("validated at load");
    HttpServer::bind(address, Arc::clone(observer), observe::install_recorder())
        .await
        .map_err(|source| {
            Error::Config(Box::new(crate::config::ConfigError::Listen {
                address: http.listen.clone(),
                source,
            }))
        })
}

/// What every attempt runs with.
struct Context {
    source: SourceSettings,
    nats: NatsConfig,
    /// Each stream with the subject filters of the tables that publish to it.
    streams: BTreeMap<String, Vec<String>>,
    store: Arc<dyn CheckpointStore>,
    shutdown_timeout: Duration,
    observer: Arc<Observer>,
    /// Under `[ha]`: nothing is published after this term's deadline.
    lease: Option<Arc<LeaseClock>>,
}

impl Context {
    fn new(
        config: &Config,
        prepared: &Prepared,
        store: Arc<dyn CheckpointStore>,
        flavor: Flavor,
        observer: &Arc<Observer>,
        lease: Option<Arc<LeaseClock>>,
    ) -> Self {
        Self {
            source: SourceSettings {
                endpoint: prepared.endpoint.clone(),
                server_id: config.source.server_id,
                tables: prepared.tables.clone(),
                flavor,
                heartbeat: Duration::from_millis(config.source.heartbeat_ms),
                observer: Arc::clone(observer),
            },
            nats: config.nats.clone(),
            streams: prepared.streams.clone(),
            store,
            shutdown_timeout: Duration::from_millis(config.shutdown.timeout_ms),
            observer: Arc::clone(observer),
            lease,
        }
    }
}

/// The one retry loop: attempts, each from the last acknowledged position, until cancelled
/// or a fatal error.
struct Supervisor {
    context: Context,
    /// Kept across attempts once connected (it remembers the ids JetStream reported as
    /// duplicates); dropped when connecting or provisioning failed.
    publisher: Option<Publisher>,
}

impl Supervisor {
    fn new(context: Context) -> Self {
        Self {
            context,
            publisher: None,
        }
    }

    async fn run(mut self, mut acked: Checkpoint, cancel: CancellationToken) -> Result<(), Error> {
        let mut backoff = BACKOFF_MIN;
        let result = loop {
            self.context.observer.source_attempt();
            let (outcome, last) = self.attempt(acked.clone(), &cancel).await;
            if last != acked {
                backoff = BACKOFF_MIN;
            }
            acked = last;
            let err = match outcome {
                Ok(()) => break Ok(()),
                Err(err) => err,
            };
            if let Error::Publish(e) = &err {
                self.context.observer.publish_failed(e.kind());
            }
            if let Some(end) = retry_after(err, &acked, &mut backoff, &cancel).await {
                break end;
            }
        };
        if let Some(publisher) = &self.publisher {
            publisher.drain().await;
        }
        info!(position = %acked.position, "stopped");
        result
    }

    /// One attempt: NATS (when not connected), then the stages. Returns how it ended and
    /// the last checkpoint saved.
    async fn attempt(
        &mut self,
        acked: Checkpoint,
        cancel: &CancellationToken,
    ) -> (Result<(), Error>, Checkpoint) {
        if self.publisher.is_none() {
            let connect =
                Publisher::connect(&self.context.nats, Arc::clone(&self.context.observer));
            match until_cancelled(cancel, connect).await {
                None => return (Ok(()), acked),
                Some(Err(e)) => return (Err(e.into()), acked),
                Some(Ok(publisher)) => self.publisher = Some(publisher),
            }
        }
        let publisher = self.publisher.as_ref().expect("connected above");
        // Every attempt: a stream deleted meanwhile is created again (or reported).
        let streams = publisher.prepare_streams(&self.context.streams);
        match until_cancelled(cancel, streams).await {
            None => return (Ok(()), acked),
            Some(Err(e)) => return (Err(e.into()), acked),
            Some(Ok(())) => {}
        }
        let stages = Stages {
            context: &self.context,
            publisher,
        };
        stages.run(acked, cancel).await
    }
}

/// After a failed attempt: a fatal error ends the run (returned), a transient one waits out
/// the backoff (doubling it) and returns `None` to retry; a cancel during the wait ends the
/// run cleanly.
async fn retry_after(
    err: Error,
    acked: &Checkpoint,
    backoff: &mut Duration,
    cancel: &CancellationToken,
) -> Option<Result<(), Error>> {
    match err.policy() {
        Policy::Fatal { .. } if err.is_deposed() => {
            warn!(error = %error_chain(&err), position = %acked.position, "this instance is no longer the leader");
            Some(Err(err))
        }
        Policy::Fatal { hint } => {
            error!(error = %error_chain(&err), kind = err.kind(), position = %acked.position, hint, "stopping");
            Some(Err(err))
        }
        Policy::Retry => {
            warn!(error = %error_chain(&err), kind = err.kind(), position = %acked.position, retry_in_ms = backoff.as_millis() as u64, "pipeline failed, resuming from the acknowledged position");
            if until_cancelled(cancel, tokio::time::sleep(*backoff))
                .await
                .is_none()
            {
                return Some(Ok(()));
            }
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            None
        }
    }
}

/// `work`, unless `cancel` fires first (`None`).
pub(crate) async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        done = work => Some(done),
    }
}
