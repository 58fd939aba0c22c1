//! A TCP proxy in front of a server that can lose data the way a network partition does:
//! [`LossyProxy::partition`] makes every open connection swallow what the client sends for a
//! while (the client's TCP stack believes it delivered) and then drops it. New connections
//! pass normally, so the client reconnects and carries on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a partitioned connection swallows client data before it breaks.
const BLACK_HOLE: Duration = Duration::from_millis(100);

pub struct LossyProxy {
    port: u16,
    partitions: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl LossyProxy {
    /// Listens on a free port and forwards each connection to 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (partitions, rx) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    tokio::spawn(relay(client, server, rx.clone()));
                }
            }
        });
        Self {
            port,
            partitions,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Partitions every open connection: data from clients is lost, then the connections break.
    pub fn partition(&self) {
        self.partitions.send_modify(|n| *n += 1);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, mut partitions: watch::Receiver<u64>) {
    partitions.borrow_and_update();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = partitions.changed() => break,
            n = client_rx.read(&mut up) => match n {
                Ok(n) if n > 0 => if server_tx.write_all(&up[..n]).await.is_err() { return },
                _ => return,
            },
            n = server_rx.read(&mut down) => match n {
                Ok(n) if n > 0 => if client_tx.write_all(&down[..n]).await.is_err() { return },
                _ => return,
            },
        }
    }
    let broken = tokio::time::sleep(BLACK_HOLE);
    tokio::pin!(broken);
    loop {
        tokio::select! {
            _ = &mut broken => return,
            n = client_rx.read(&mut up) => if !matches!(n, Ok(n) if n > 0) { return },
        }
    }
}

/// A TCP proxy whose upstream can be switched (a VIP or Kubernetes Service moving to another
/// server) and whose new connections can be made to stall once the client sends a given
/// statement (a server or network that accepts, authenticates, and then says nothing).
pub struct SwitchProxy {
    port: u16,
    upstream: watch::Sender<u16>,
    stall_on: watch::Sender<Option<Vec<u8>>>,
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl SwitchProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (upstream_tx, upstream_rx) = watch::channel(upstream);
        let (stall_tx, stall_rx) = watch::channel(None::<Vec<u8>>);
        let (generation_tx, generation_rx) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = *upstream_rx.borrow();
                let stall_on = stall_rx.borrow().clone();
                if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                    tokio::spawn(relay_until_broken(
                        client,
                        server,
                        stall_on,
                        generation_rx.clone(),
                    ));
                }
            }
        });
        Self {
            port,
            upstream: upstream_tx,
            stall_on: stall_tx,
            generation: generation_tx,
            accept,
        }
    }

    /// A MySQL URL through the proxy for `user`, with mysql_async's switch to the local
    /// server's Unix socket turned off (it would bypass the proxy).
    pub fn mysql_url(&self, user: &str, password: &str) -> String {
        format!(
            "mysql://{user}:{password}@127.0.0.1:{}?prefer_socket=false",
            self.port
        )
    }

    /// New connections go to `upstream`; open ones are broken.
    pub fn switch_to(&self, upstream: u16) {
        self.upstream.send_replace(upstream);
        self.break_connections();
    }

    /// Breaks every open connection.
    pub fn break_connections(&self) {
        self.generation.send_modify(|n| *n += 1);
    }

    /// From now on, a new connection goes quiet in both directions (sockets kept open) when
    /// the client sends bytes containing `needle`; `None` stops that.
    pub fn stall_when_client_sends(&self, needle: Option<&str>) {
        self.stall_on
            .send_replace(needle.map(|n| n.as_bytes().to_vec()));
    }
}

impl Drop for SwitchProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay_until_broken(
    client: TcpStream,
    server: TcpStream,
    stall_on: Option<Vec<u8>>,
    mut generation: watch::Receiver<u64>,
) {
    generation.borrow_and_update();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let mut quiet = false;
    loop {
        tokio::select! {
            _ = generation.changed() => return,
            n = client_rx.read(&mut up), if !quiet => match n {
                Ok(n) if n > 0 => {
                    let sent = &up[..n];
                    if stall_on.as_ref().is_some_and(|needle| sent.windows(needle.len()).any(|w| w == needle)) {
                        quiet = true;
                        continue;
                    }
                    if server_tx.write_all(sent).await.is_err() { return }
                }
                _ => return,
            },
            n = server_rx.read(&mut down), if !quiet => match n {
                Ok(n) if n > 0 => if client_tx.write_all(&down[..n]).await.is_err() { return },
                _ => return,
            },
            // Stalled: hold the sockets open and say nothing until broken.
            _ = std::future::pending::<()>(), if quiet => {}
        }
    }
}
