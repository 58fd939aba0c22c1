//! `[http]`: the metrics and health endpoint's address and its stall limit.

use serde::Deserialize;

use super::DEFAULT_STALL_TIMEOUT_MS;

/// `[http]`: Prometheus metrics, liveness and readiness.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:9187` (port 0: any free port).
    pub listen: String,
    /// A stage that has work and makes no progress for this long makes `/healthz` answer 503.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

impl HttpConfig {
    /// The listen address (validated at load).
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

fn default_stall_timeout_ms() -> u64 {
    DEFAULT_STALL_TIMEOUT_MS
}
