//! The HTTP endpoint (`[http] listen`): `/metrics` (Prometheus text format), `/healthz`
//! (liveness: 503 when a stage is wedged) and `/readyz` (readiness: 503 unless the binlog
//! stream and NATS are connected), each 503 with a one-line reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Observer;

#[derive(Clone)]
struct Shared {
    observer: Arc<Observer>,
    metrics: PrometheusHandle,
}

/// The endpoint, bound (so that a taken address fails the start, not later).
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    shared: Shared,
}

impl HttpServer {
    /// Binds `listen`; the error names the address.
    pub async fn bind(
        listen: SocketAddr,
        observer: Arc<Observer>,
        metrics: PrometheusHandle,
    ) -> Result<Self, std::io::Error> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        Ok(Self {
            listener,
            shared: Shared { observer, metrics },
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self.shared.clone());
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "serving /metrics, /healthz and /readyz");
        }
        let upkeep = upkeep(self.shared.metrics.clone(), cancel.clone());
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(cancel.clone().cancelled_owned());
        // Requests in progress get a moment to finish; a client that never completes its
        // request must not keep the process alive.
        let bounded = async {
            tokio::select! {
                _ = serve => {}
                _ = async {
                    cancel.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } => {}
            }
        };
        tokio::join!(bounded, upkeep);
    }
}

/// How long requests in progress may take once the connector stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Folds histogram samples into buckets every [`UPKEEP_INTERVAL`] (the recorder keeps every
/// sample until then: without this, memory would grow with every event while nobody scrapes).
async fn upkeep(metrics: PrometheusHandle, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_INTERVAL) => metrics.run_upkeep(),
        }
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    shared.observer.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

fn verdict(problem: Option<String>, ok: &'static str) -> Response {
    match problem {
        None => (StatusCode::OK, format!("{ok}\n")).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn healthz(State(shared): State<Shared>) -> Response {
    verdict(shared.observer.wedged(), "ok")
}

async fn readyz(State(shared): State<Shared>) -> Response {
    verdict(shared.observer.not_ready(), "ready")
}
