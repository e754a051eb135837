//! The HTTP server's connection loop (under axum's router): a cap on open connections below the process's
//! file-descriptor limit, a connection that sends nothing is closed after `first_byte_timeout`, request
//! headers must arrive within `header_timeout` (also between keep-alive requests), and HTTPS and plain HTTP
//! share the port (the first byte tells a TLS handshake apart). Each request carries a [`ConnInfo`] so the
//! router can tell loopback from remote and HTTPS from plain.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// What the router knows about the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Limits of the connection loop.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub first_byte_timeout: Duration,
    pub header_timeout: Duration,
}

impl Limits {
    /// The defaults, with the connection cap below the file-descriptor limit `nofile` (what the rest of
    /// the program needs: media sockets, the compositor, threads, is kept in reserve).
    pub fn for_fd_limit(nofile: u64) -> Limits {
        let reserve = (nofile / 4).clamp(64, 1024);
        let cap = nofile.saturating_sub(reserve).clamp(16, 65_536);
        Limits {
            max_connections: usize::try_from(cap).unwrap_or(65_536),
            first_byte_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (as far as 1 Mi) and return it: idle connections
/// then hit our cap, not `accept` failing for every client (and the status API with them).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let hard = l.maximum.unwrap_or(1 << 20).min(1 << 20);
    if l.current.is_some_and(|c| c < hard)
        && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: l.maximum }).is_ok()
    {
        return hard;
    }
    l.current.unwrap_or(hard)
}

/// Counters of the connection loop (for status).
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub open: AtomicUsize,
    pub refused_at_cap: AtomicU64,
    pub idle_closed: AtomicU64,
}

/// Listen backlog: a burst of connections beyond the kernel's accept queue would otherwise wait for SYN-ACK
/// retransmissions (1 s, 2 s, 4 s …) before we can even accept them (tokio's default is 1,024). The kernel caps
/// it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Bind the signaling listener (address reuse on, as tokio's `TcpListener::bind` does) with [`BACKLOG`].
/// Call inside the runtime.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting and let open requests finish
/// (at most `grace`). `tls`: speak HTTPS to clients that start a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    counters: Arc<ConnCounters>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if counters.open.load(Ordering::Relaxed) >= limits.max_connections {
            counters.refused_at_cap.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, cap = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let stream = Counted::new(stream, Arc::clone(&counters));
        let (router, acceptor, limits, counters, stop) =
            (router.clone(), acceptor.clone(), limits.clone(), Arc::clone(&counters), stop_rx.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.first_byte_timeout, stream.inner.peek(&mut first)).await {
                Ok(Ok(1..)) => {}
                Ok(_) => return,
                Err(_) => {
                    counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            match acceptor {
                // 0x16: a TLS handshake record.
                Some(acceptor) if first[0] == 0x16 => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, ConnInfo { peer, tls: true }, router, &limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => {
                            counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => connection(stream, ConnInfo { peer, tls: false }, router, &limits, stop).await,
            }
        });
    }
    let _ = stop_tx.send(true);
}

async fn connection<S>(
    io: S,
    info: ConnInfo,
    router: Router,
    limits: &Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        router.clone().oneshot(req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %info.peer, "connection ended: {e}");
            }
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// A TCP stream that counts itself open until dropped (also after a WebSocket upgrade took it over).
struct Counted {
    inner: TcpStream,
    counters: Arc<ConnCounters>,
}

impl Counted {
    fn new(inner: TcpStream, counters: Arc<ConnCounters>) -> Counted {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Counted { inner, counters }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_fd_limit() {
        let l = Limits::for_fd_limit(1024);
        assert!(l.max_connections < 1024 && l.max_connections >= 512, "{}", l.max_connections);
        assert_eq!(Limits::for_fd_limit(1 << 20).max_connections, 65_536);
        assert!(Limits::for_fd_limit(20).max_connections >= 16);
        assert!(Limits::for_fd_limit(20_000).max_connections >= 2_000 + 16_000);
    }
}
