//! gRPC on the agent's Unix sockets (the Workload API + SDS socket and the
//! admin socket): binding, the per-connection caller record, and the
//! HTTP/2 front ([`crate::h2_front`]) in front of tonic.
//!
//! Each accepted connection records the kernel's peer credentials and the
//! start time of the peer's process as /proc shows it at accept time
//! ([`CallerConn`]); every request on it carries that record as a request
//! extension. The start time closes the pid-reuse window between the
//! connection and its calls: a process at that pid with another start time
//! is not the one that connected ([`crate::attest`]). The record also holds
//! the connection's attestation slot, so that later calls on the same
//! connection re-check only what can change ([`crate::attest`], "The
//! per-connection fast path").

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

use crate::attest::{ConnSlot, PeerCred};
use crate::h2_front::AuthorityRewriter;
use crate::AgentError;

/// Largest request message on the agent's sockets: 64 KiB (Workload API,
/// SDS and delegated requests are a few hundred bytes; an SDS request with
/// its Envoy node metadata a few KiB). Larger ones get `ResourceExhausted`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Concurrent streams one connection may open (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// What the kernel said about the caller of one connection, and when the
/// agent accepted it. Available to handlers as a request extension (a
/// clone per request shares the connection's attestation slot).
#[derive(Debug, Clone, Default)]
pub struct CallerConn {
    /// `SO_PEERCRED` at `connect()`; `None` if the kernel would not say.
    pub peer: Option<PeerCred>,
    /// The peer process's start time (clock ticks since boot, `/proc/PID/stat`
    /// field 22) read when the connection was accepted; `None` when the
    /// kernel gave no pid or the process was already gone.
    pub peer_start_ticks: Option<u64>,
    /// The last attestation of this connection's caller.
    pub(crate) slot: ConnSlot,
}

impl CallerConn {
    /// The record of a connection from `peer`, its process started at
    /// `peer_start_ticks` (tests build these by hand).
    pub fn new(peer: Option<PeerCred>, peer_start_ticks: Option<u64>) -> Self {
        Self {
            peer,
            peer_start_ticks,
            slot: ConnSlot::default(),
        }
    }
}

/// A client connection with the HTTP/2 front on its read side.
pub struct FrontStream {
    inner: UnixStream,
    rewriter: AuthorityRewriter,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
    conn: CallerConn,
}

impl std::fmt::Debug for FrontStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontStream")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl FrontStream {
    /// Wraps an accepted connection, reading its peer credentials and the
    /// peer process's start time now.
    pub fn new(inner: UnixStream) -> Self {
        let peer = inner.peer_cred().ok().map(PeerCred::from);
        let peer_start_ticks = peer.and_then(|p| p.pid).and_then(process_start_ticks);
        Self {
            inner,
            rewriter: AuthorityRewriter::new(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            conn: CallerConn::new(peer, peer_start_ticks),
        }
    }
}

impl AsyncRead for FrontStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let pending = this.out.get(this.out_pos..).unwrap_or_default();
                let n = pending.len().min(buf.remaining());
                buf.put_slice(pending.get(..n).unwrap_or_default());
                this.out_pos += n;
                if this.out_pos >= this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            let got = scratch.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.rewriter.feed(got, &mut this.out) {
                tracing::debug!(error = %e, pid = ?this.conn.peer.and_then(|p| p.pid), "closing a connection the HTTP/2 front refused");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl AsyncWrite for FrontStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for FrontStream {
    type ConnectInfo = CallerConn;

    fn connect_info(&self) -> CallerConn {
        self.conn.clone()
    }
}

/// Binds a Unix socket at `path` (parent directories created, a stale
/// socket replaced) with permissions `mode`.
///
/// # Errors
/// [`AgentError::Io`] naming the step that failed.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::Io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AgentError::Io(
                format!("removing stale socket {}", path.display()),
                e,
            ))
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| AgentError::Io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::Io(format!("setting permissions on {}", path.display()), e))?;
    Ok(listener)
}

/// Serves `routes` on `listener`, every connection through the HTTP/2
/// front, until `shutdown` changes.
///
/// # Errors
/// [`AgentError::Io`] when the server fails.
pub async fn serve(
    listener: UnixListener,
    routes: tonic::service::Routes,
    what: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let next = match l.accept().await {
            Ok((s, _)) => Ok(FrontStream::new(s)),
            Err(e) => {
                // EMFILE and the like: do not spin; the next accept may work.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(e)
            }
        };
        Some((next, l))
    });
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(u32::try_from(crate::h2_front::MAX_HEADER_BLOCK).ok())
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.changed().await;
        })
        .await
        .map_err(|e| AgentError::Io(format!("serving {what}"), io::Error::other(e)))
}

/// The start time of `pid` (clock ticks since boot) from `/proc/PID/stat`.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    lanyard_attest::workload::parse_start_time(&stat)
}
