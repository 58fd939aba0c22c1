//! Lag in bytes, polled from the server, and the catch-up progress log: while the connector
//! is behind it logs a line every `source.progress_interval_ms` (events/s, lag in bytes and
//! seconds, estimated time to catch up), and one line when it has caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Observer;
use crate::position::BinlogPosition;
use crate::source::Endpoint;
use crate::source::backlog::{binlog_files, bytes_behind};

/// Behind by more than this many bytes (or [`BEHIND_SECONDS`]) counts as catching up; it
/// counts as caught up again below a quarter of the bytes and half the seconds, so a lag
/// hovering at the threshold does not alternate the two lines.
pub const BEHIND_BYTES: u64 = 1024 * 1024;
pub const BEHIND_SECONDS: f64 = 10.0;
/// How long the poller's connection may take to close at shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Polls the server's binlog end every `interval` until `cancel` fires. `start` is the
/// position the run resumed from (the lag's base until a checkpoint is saved).
pub async fn run(
    endpoint: Endpoint,
    observer: Arc<Observer>,
    start: BinlogPosition,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut catch_up = CatchUp::default();
    let mut conn = None;
    loop {
        let position = observer.saved_position().unwrap_or_else(|| start.clone());
        // A server that does not answer must not hold up shutdown.
        let poll = poll_bytes_behind(&endpoint, &mut conn, &position);
        let behind = tokio::select! {
            _ = cancel.cancelled() => break,
            behind = poll => behind,
        };
        observer.set_lag_bytes(behind);
        if let Some(bytes) = behind {
            let sample = Sample {
                at: Instant::now(),
                acked_events: observer.acked_events(),
                lag_bytes: bytes,
                lag_seconds: observer.lag_seconds(),
            };
            catch_up.log(sample);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let Some(c) = conn {
        // Politely if the server answers at once; a frozen one is not waited for.
        let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.close(c)).await;
    }
}

/// Bytes from `position` to the server's binlog end, connecting when `conn` is `None`;
/// `None` when the server cannot tell (down, or the position is not in its binlogs).
async fn poll_bytes_behind(
    endpoint: &Endpoint,
    conn: &mut Option<mysql_async::Conn>,
    position: &BinlogPosition,
) -> Option<u64> {
    if conn.is_none() {
        *conn = endpoint.connect().await.ok();
    }
    match binlog_files(endpoint, conn.as_mut()?).await {
        Ok(files) => bytes_behind(&files, position),
        Err(e) => {
            debug!(error = %e, "polling the binlog end failed; trying again");
            *conn = None;
            None
        }
    }
}

/// One poll's view.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub acked_events: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
}

impl Sample {
    fn is_behind(&self) -> bool {
        self.lag_bytes > BEHIND_BYTES || self.lag_seconds > BEHIND_SECONDS
    }

    fn is_caught_up(&self) -> bool {
        self.lag_bytes <= BEHIND_BYTES / 4 && self.lag_seconds <= BEHIND_SECONDS / 2.0
    }
}

/// What a progress line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    CatchingUp {
        events_per_s: f64,
        /// Estimated seconds until caught up, once the lag shrinks.
        eta_s: Option<f64>,
    },
    CaughtUp,
}

/// Whether the connector is catching up, and the previous sample for rates.
#[derive(Debug, Default)]
pub struct CatchUp {
    behind: bool,
    previous: Option<Sample>,
}

impl CatchUp {
    /// What to log for `sample`, if anything.
    pub fn next(&mut self, sample: Sample) -> Option<Line> {
        let previous = self.previous.replace(sample);
        let was_behind = self.behind;
        self.behind = if was_behind {
            !sample.is_caught_up()
        } else {
            sample.is_behind()
        };
        if !self.behind {
            return was_behind.then_some(Line::CaughtUp);
        }
        let (events_per_s, bytes_per_s) = match previous {
            Some(p) if sample.at > p.at => {
                let dt = (sample.at - p.at).as_secs_f64();
                (
                    sample.acked_events.saturating_sub(p.acked_events) as f64 / dt,
                    (p.lag_bytes as f64 - sample.lag_bytes as f64) / dt,
                )
            }
            _ => (0.0, 0.0),
        };
        let eta_s = (bytes_per_s > 0.0).then(|| sample.lag_bytes as f64 / bytes_per_s);
        Some(Line::CatchingUp {
            events_per_s,
            eta_s,
        })
    }

    fn log(&mut self, sample: Sample) {
        match self.next(sample) {
            Some(Line::CatchingUp {
                events_per_s,
                eta_s,
            }) => info!(
                events_per_s = events_per_s.round() as u64,
                lag_bytes = sample.lag_bytes,
                lag_seconds = sample.lag_seconds.round() as u64,
                eta_seconds = eta_s.map(|s| s.round() as u64),
                "catching up"
            ),
            Some(Line::CaughtUp) => info!(
                lag_bytes = sample.lag_bytes,
                lag_seconds = sample.lag_seconds.round() as u64,
                "caught up"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_logs_rates_and_an_estimate_then_caught_up_once() {
        let t0 = Instant::now();
        let sample = |s: u64, acked, bytes| Sample {
            at: t0 + Duration::from_secs(s),
            acked_events: acked,
            lag_bytes: bytes,
            lag_seconds: 0.0,
        };
        let mut c = CatchUp::default();
        assert_eq!(c.next(sample(0, 0, 0)), None, "not behind: nothing to say");
        assert_eq!(
            c.next(sample(5, 0, 30_000_000)),
            Some(Line::CatchingUp {
                events_per_s: 0.0,
                eta_s: None
            })
        );
        assert_eq!(
            c.next(sample(10, 50_000, 20_000_000)),
            Some(Line::CatchingUp {
                events_per_s: 10_000.0,
                eta_s: Some(10.0)
            })
        );
        assert_eq!(c.next(sample(15, 100_000, 100)), Some(Line::CaughtUp));
        assert_eq!(c.next(sample(20, 100_000, 100)), None);
    }

    #[test]
    fn a_lag_hovering_at_the_threshold_does_not_alternate_the_lines() {
        let t0 = Instant::now();
        let sample = |s: u64, bytes| Sample {
            at: t0 + Duration::from_secs(s),
            acked_events: 0,
            lag_bytes: bytes,
            lag_seconds: 0.0,
        };
        let catching_up = |line: Option<Line>| matches!(line, Some(Line::CatchingUp { .. }));
        let mut c = CatchUp::default();
        assert!(catching_up(c.next(sample(0, BEHIND_BYTES + 1))));
        assert!(catching_up(c.next(sample(5, BEHIND_BYTES - 1))));
        assert!(catching_up(c.next(sample(10, BEHIND_BYTES + 1))));
        assert_eq!(c.next(sample(15, BEHIND_BYTES / 4)), Some(Line::CaughtUp));
        assert_eq!(c.next(sample(20, BEHIND_BYTES - 1)), None);
    }
}
