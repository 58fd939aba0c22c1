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
