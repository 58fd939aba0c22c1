//! A plain HTTP/1.1 GET against the connector's endpoint (no client library needed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `GET path` on `127.0.0.1:port`: (status, body), or `None` when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits (up to `timeout`) until `GET path` answers `status`; returns the body and how long
/// it took.
pub async fn wait_for_status(
    port: u16,
    path: &str,
    status: u16,
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let got = get(port, path);
        if let Some((s, body)) = &got
            && *s == status
        {
            return (body.clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "GET {path} never answered {status} within {timeout:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name{labels}` (labels as rendered, e.g. `stream="S"`) in a
/// Prometheus text exposition, or `None` when it is absent.
pub fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = if labels.is_empty() {
            rest.strip_prefix(' ')?
        } else {
            let inner = rest.strip_prefix('{')?;
            let (got, value) = inner.split_once("} ")?;
            let mut want: Vec<&str> = labels.split(',').collect();
            let mut have: Vec<&str> = got.split(',').collect();
            want.sort_unstable();
            have.sort_unstable();
            if want != have {
                return None;
            }
            value
        };
        value.trim().parse().ok()
    })
}
