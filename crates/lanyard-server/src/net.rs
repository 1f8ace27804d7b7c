//! Listeners that a slow or idle client cannot exhaust.
//!
//! Every listener the server runs has a connection limit (beyond it, new
//! connections wait in the kernel's backlog instead of taking descriptors),
//! a TLS handshake timeout, and, for HTTP, a header-read timeout (which in
//! hyper also bounds how long a keep-alive connection may sit idle between
//! requests) and a body-read timeout ([`read_body`]). HTTP/2 and gRPC
//! connections are pinged and dropped when the peer stops answering.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use futures_util::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for a request's headers, and longest keep-alive idle.
    pub header_timeout: Duration,
    /// Longest wait for a request's body.
    pub body_timeout: Duration,
    /// Longest time from a request's headers to its answer (HTTP; see
    /// [`request_deadline`]).
    pub request_timeout: Duration,
}

impl Default for ListenLimits {
    /// 4,096 connections (fewer when the process may not open that many
    /// files), 10 s for a handshake, 15 s for headers or idle, 15 s for a
    /// body. Lanyard's requests are a few KiB: a client slower than that is
    /// broken or hostile.
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(15),
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// 4,096, or three quarters of the soft open-files limit when that is lower,
/// so connections can never take every descriptor (the store, the node API
/// and key files need some).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    match soft {
        Some(n) => (n / 4 * 3).clamp(16, 4096),
        None => 4096,
    }
}

/// Serves `app` on `listener` (TLS when `tls` is set) until `shutdown`,
/// then gives in-flight requests `drain` to finish.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        // hyper's header timeout starts only once a first byte has come in
        // (it reads the HTTP/2 preface first); the idle wrapper covers a peer
        // that sends nothing at all, and keep-alive silence between requests.
        let tcp = Limited::new(tcp, permit, limits.header_timeout);
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain period");
    }
}

/// Middleware: the request body must arrive within `timeout` of the
/// headers. A body that trickles in fails the handler's extractor (its
/// caller gets a clear error) instead of holding the connection.
pub async fn body_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(timeout)),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// How long a request may take from its headers to its answer's headers
/// (`server.request_timeout`, default).
/// A store that hangs (a connection that stopped answering) then costs a
/// caller this long, and an honest 503, not forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Answers 503 when the handler has not answered within `timeout`. The
/// handler runs in its own task and is not cancelled (an issuance half-way
/// through finishes, or fails, with its audit event; nothing is left half
/// done), only no longer waited for.
pub async fn request_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse as _;
    let path: String = req.uri().path().chars().take(100).collect();
    let handler = tokio::spawn(next.run(req));
    match tokio::time::timeout(timeout, handler).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::error!(path, error = %e, "request handler failed");
            crate::error::ApiError::Internal.into_response()
        }
        Err(_) => {
            tracing::warn!(
                path,
                seconds = timeout.as_secs(),
                "request timed out (is the store hanging?); answered 503"
            );
            crate::error::ApiError::Unavailable.into_response()
        }
    }
}

/// The body did not arrive within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body-read timeout")]
pub struct BodyTimedOut;

struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection holding one of its listener's permits, closed when nothing
/// moves either way for `idle` (gRPC keepalive pings are answered, so a
/// live peer always sends something).
#[derive(Debug)]
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Limited<T> {
    fn new(inner: T, permit: OwnedSemaphorePermit, idle: Duration) -> Self {
        Self {
            inner,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Something moved: the idle period starts again.
    fn touch(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Bytes went out: the connection is busy answering (a long streamed
    /// answer such as `entry apply`'s progress), not idle. A peer that stops
    /// reading stalls the writes and still meets the deadline.
    fn wrote<E>(&mut self, r: Poll<Result<usize, E>>) -> Poll<Result<usize, E>> {
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer sent nothing within the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// TLS connections accepted from `listener` for a tonic server: at most
/// `limits.max_connections` at once, each handshake bounded by
/// `limits.handshake_timeout`, each connection closed after
/// `limits.header_timeout` without a byte from the peer, with the TLS
/// configuration `config` gives at each accept (so certificate rotation
/// needs no restart).
pub fn tls_incoming<F, Fut>(
    listener: TcpListener,
    limits: ListenLimits,
    config: F,
) -> impl Stream<Item = Result<Limited<TlsStream<TcpStream>>, io::Error>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Arc<rustls::ServerConfig>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "node API accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // gRPC writes small frames and waits for the answer: with Nagle's
            // algorithm on, each call stalls on the peer's delayed ACK (about
            // 90 ms per SignX509Svids call before this; issue 4 benchmark).
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config().await);
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send(Ok(Limited::new(stream, permit, limits.header_timeout)))
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "node API TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "node API TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) })
}

#[cfg(test)]
mod tests {
    use super::Limited;
    use std::io;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A long streamed answer (e.g. `entry apply` of 100,000 entries) while
    /// the peer sends nothing: the connection is busy, not idle (it was
    /// cut after the header timeout mid-answer, found by bench/scale).
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_is_answering_is_not_idle() -> TestResult {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await?;
        let mut conn = Limited::new(ours, permit, Duration::from_secs(10));
        let mut buf = [0u8; 16];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            conn.write_all(b"{\"applied\":1}\n").await?;
            let read = tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await;
            assert!(read.is_err(), "30 s of answering with 10 s idle: {read:?}");
        }
        // Nothing either way for the idle period: closed.
        let read = conn.read(&mut buf).await;
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::TimedOut)
        );
        Ok(())
    }

    /// A peer that sends nothing and reads nothing (so writes stall) is
    /// still closed after the idle period.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_neither_sends_nor_reads_is_closed() -> TestResult {
        let (ours, _theirs) = tokio::io::duplex(64);
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await?;
        let mut conn = Limited::new(ours, permit, Duration::from_secs(10));
        // Fill the peer's unread buffer: further writes wait.
        conn.write_all(&[b'x'; 64]).await?;
        let stalled = tokio::time::timeout(Duration::from_secs(1), conn.write_all(b"more")).await;
        assert!(stalled.is_err(), "the write should wait for the peer");
        let mut buf = [0u8; 16];
        let started = tokio::time::Instant::now();
        let read = conn.read(&mut buf).await;
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::TimedOut)
        );
        assert!(started.elapsed() <= Duration::from_secs(10));
        Ok(())
    }
}
