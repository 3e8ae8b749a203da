//! TLS connections for both of ingest's listeners: one accept loop, shared by HTTP and gRPC.
//!
//! The loop accepts TCP connections and runs each TLS handshake in its own task (bounded by
//! [`MAX_PENDING_HANDSHAKES`] and [`HANDSHAKE_TIMEOUT`]), so a slow or silent client cannot hold
//! up the others. Finished handshakes are handed over through a channel: axum reads them as a
//! [`Listener`](axum::serve::Listener), tonic as a stream of connections. Both servers keep
//! their own graceful shutdown; the loop itself stops on the same `CancellationToken`.
//!
//! The rustls configuration comes from [`scimrelay_core::tls::ServerTls`] for both transports
//! (one parser, an explicit aws-lc provider, the same client-certificate rules). A failed
//! handshake (no client certificate, one from another CA, a client that does not trust the
//! server) is logged at debug with the peer address and never reaches a handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to finish the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Finished handshakes waiting for the server to pick them up.
const READY_QUEUE: usize = 64;
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// TLS connections accepted on one listener, ready to be served.
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsIncoming {
    /// Starts accepting on `listener` with `config` until `shutdown`.
    pub fn start(
        listener: TcpListener,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx,
            shutdown,
        ));
        Ok(TlsIncoming { ready, local_addr })
    }

    /// The connections as a stream, for tonic's `serve_with_incoming_shutdown`.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        futures::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(self.ready),
            |(io, _)| Ok(io),
        )
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped: shutdown was requested, and axum's graceful shutdown
            // (on the same token) stops asking for connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ready, shutdown) = (acceptor.clone(), ready.clone(), shutdown.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = handshake => r,
            };
            drop(permit);
            match tls {
                Ok(Ok(tls)) => {
                    // Only fails when the server stopped taking connections (shutdown).
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
