//! How the source reaches its server: connection options and the two limits every exchange
//! with it runs under.
//!
//! Every connection attempt ends within `connect_timeout` and every query or command within
//! `io_timeout`: a server that accepts TCP and then says nothing (frozen, black-holed, a proxy
//! that stalls) costs a transient [`SourceError::Timeout`] and a retry, never a stalled
//! pipeline. Callers stay cancellable because they only ever await these bounded futures.

use std::future::Future;
use std::time::Duration;

use mysql_async::{Conn, Opts};

use crate::error::{SourceError, is_access_denied};

/// How to reach the source server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub opts: Opts,
    /// Longest wait for a connection, TCP and handshake.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to one query or command.
    pub io_timeout: Duration,
}

impl Endpoint {
    /// `host:port`, for messages (never the password).
    pub fn address(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    /// Connects, turning failures into errors that name the server. A server that accepts
    /// the TCP connection but never answers (frozen) fails after `connect_timeout`.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        match tokio::time::timeout(self.connect_timeout, Conn::new(self.opts.clone())).await {
            Err(_) => Err(SourceError::ConnectTimeout {
                address: self.address(),
                timeout_ms: self.connect_timeout.as_millis() as u64,
            }),
            Ok(Err(e)) if is_access_denied(&e) => Err(SourceError::AccessDenied { source: e }),
            Ok(Err(e)) => Err(SourceError::Connect {
                url: self.address(),
                source: e,
            }),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    /// Runs one query or command (`what` names it in errors) within `io_timeout`.
    pub async fn run<T>(
        &self,
        what: &'static str,
        exchange: impl Future<Output = mysql_async::Result<T>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(self.io_timeout, exchange).await {
            Err(_) => Err(SourceError::Timeout {
                what,
                address: self.address(),
                timeout_ms: self.io_timeout.as_millis() as u64,
            }),
            Ok(result) => result.map_err(|e| SourceError::from_mysql(what, e)),
        }
    }

    /// Disconnects politely, giving up after `io_timeout` (the connection is dropped either
    /// way).
    pub async fn close(&self, conn: Conn) {
        let _ = tokio::time::timeout(self.io_timeout, conn.disconnect()).await;
    }
}
