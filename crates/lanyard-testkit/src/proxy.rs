//! A loopback TCP proxy whose link can be cut or frozen, to put a fault
//! between a server and its database in a test: [`Link::Up`] forwards,
//! [`Link::Down`] closes every connection and refuses new ones (a database
//! that went away), [`Link::Frozen`] keeps every socket open and forwards
//! nothing (a connection that hangs).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The state of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwarding.
    Up,
    /// Every connection closed, new ones closed at once.
    Down,
    /// Every connection open, nothing forwarded.
    Frozen,
}

/// A running proxy to one upstream address; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, rx) = watch::channel(Link::Up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    if *rx.borrow() == Link::Down {
                        return;
                    }
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, rx).await;
                    }
                });
            }
        });
        Ok(Self { addr, link, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the link.
    pub fn set(&self, link: Link) {
        let _ = self.link.send(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, mut link: watch::Receiver<Link>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        let state = *link.borrow_and_update();
        match state {
            Link::Down => return,
            Link::Frozen => {
                if link.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Link::Up => {}
        }
        tokio::select! {
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&a[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&b[..n]).await.is_err() { return },
            },
            changed = link.changed() => if changed.is_err() { return },
        }
    }
}
